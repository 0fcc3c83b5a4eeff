package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/relaystation/relay/quota"
	"github.com/relaystation/relay/upstream"
	"github.com/relaystation/relay/usage"
)

// config is the server's whole configuration: an optional YAML file
// (RELAY_CONFIG) for what lists and tables need (upstreams, tiers,
// pricing), and environment variables, with the names the original relay
// design used, for everything else. An environment variable that is set
// wins over the file.
type config struct {
	// Upstream: the simple single-upstream case (UPSTREAM_*), or a list.
	UpstreamAPIKey  string                  `yaml:"upstream_api_key"`  // UPSTREAM_API_KEY
	UpstreamBaseURL string                  `yaml:"upstream_base_url"` // UPSTREAM_BASE_URL
	UpstreamAuth    upstream.AuthScheme     `yaml:"upstream_auth"`     // UPSTREAM_AUTH: x-api-key or bearer
	Upstreams       []upstream.Config       `yaml:"upstreams"`
	Retry           upstream.RetryPolicy    `yaml:"retry"`
	Cooldown        upstream.CooldownPolicy `yaml:"cooldown"`

	AdminUsername     string        `yaml:"admin_username"`       // ADMIN_USERNAME
	AdminPassword     string        `yaml:"-"`                    // ADMIN_PASSWORD: environment only
	AdminPasswordHash string        `yaml:"-"`                    // ADMIN_PASSWORD_HASH (bcrypt): environment only
	AdminTokenTTL     time.Duration `yaml:"admin_token_ttl"`      // ADMIN_TOKEN_TTL
	SecretKey         string        `yaml:"-"`                    // SECRET_KEY: environment only
	BcryptCost        int           `yaml:"bcrypt_cost"`          // BCRYPT_COST
	DatabaseURL       string        `yaml:"database_url"`         // DATABASE_URL
	RedisURL          string        `yaml:"redis_url"`            // REDIS_URL
	RedisPrefix       string        `yaml:"redis_prefix"`         // REDIS_PREFIX
	AutoMigrate       bool          `yaml:"auto_migrate"`         // RELAY_AUTO_MIGRATE
	ListenAddr        string        `yaml:"listen_addr"`          // LISTEN_ADDR
	DataDir           string        `yaml:"data_dir"`             // RELAY_DATA_DIR
	PublicURL         string        `yaml:"public_url"`           // RELAY_PUBLIC_URL
	ClientIPHeader    string        `yaml:"client_ip_header"`     // CLIENT_IP_HEADER
	MaxBodyBytes      int64         `yaml:"max_body_bytes"`       // MAX_BODY_BYTES
	ShutdownGrace     time.Duration `yaml:"shutdown_grace"`       // SHUTDOWN_GRACE
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`  // READ_HEADER_TIMEOUT
	RetentionDays     int           `yaml:"usage_retention_days"` // USAGE_RETENTION_DAYS
	LogFormat         string        `yaml:"log_format"`           // LOG_FORMAT
	LogLevel          slog.Level    `yaml:"log_level"`            // LOG_LEVEL

	Tiers quota.Tiers `yaml:"tiers"`
	Quota quotaConfig `yaml:"quota"`
	// Pricing overrides or adds model prices (USD per million tokens) over
	// the built-in table.
	Pricing pricingConfig `yaml:"pricing"`
	// NoLimitHeaders leaves out the key's anthropic-ratelimit-* headers.
	NoLimitHeaders bool `yaml:"no_limit_headers"` // RATE_LIMIT_HEADERS=false

	// file is the YAML file read, if any.
	file string
}

type quotaConfig struct {
	Timezone    string      `yaml:"timezone"`     // RELAY_TIMEZONE
	OutputCap   int64       `yaml:"output_cap"`   // QUOTA_OUTPUT_CAP
	Counted     quota.Kinds `yaml:"counted"`      // QUOTA_COUNTED, e.g. input,output
	RateCounted quota.Kinds `yaml:"rate_counted"` // QUOTA_RATE_COUNTED
	FailClosed  bool        `yaml:"fail_closed"`  // QUOTA_FAIL_CLOSED
}

type pricingConfig struct {
	Default *usage.Price           `yaml:"default"`
	Models  map[string]usage.Price `yaml:"models"`
}

// defaults are the values of settings nobody set.
func defaults() config {
	return config{
		UpstreamBaseURL:   upstream.DefaultBaseURL,
		AdminUsername:     "admin",
		AutoMigrate:       true,
		ListenAddr:        ":8000",
		DataDir:           "./data",
		ShutdownGrace:     30 * time.Second,
		ReadHeaderTimeout: 10 * time.Second,
		RetentionDays:     90,
		LogFormat:         "text",
		LogLevel:          slog.LevelInfo,
		RedisPrefix:       "relay:",
	}
}

// envVars lists every environment variable, for .env.example and tests.
var envVars = []string{
	"RELAY_CONFIG", "UPSTREAM_API_KEY", "UPSTREAM_BASE_URL", "UPSTREAM_AUTH",
	"ADMIN_USERNAME", "ADMIN_PASSWORD", "ADMIN_PASSWORD_HASH", "ADMIN_TOKEN_TTL", "SECRET_KEY", "BCRYPT_COST",
	"DATABASE_URL", "REDIS_URL", "REDIS_PREFIX", "RELAY_AUTO_MIGRATE",
	"LISTEN_ADDR", "RELAY_DATA_DIR", "RELAY_PUBLIC_URL", "CLIENT_IP_HEADER", "MAX_BODY_BYTES", "SHUTDOWN_GRACE", "READ_HEADER_TIMEOUT", "USAGE_RETENTION_DAYS",
	"LOG_FORMAT", "LOG_LEVEL",
	"RELAY_TIMEZONE", "QUOTA_OUTPUT_CAP", "QUOTA_COUNTED", "QUOTA_RATE_COUNTED", "QUOTA_FAIL_CLOSED", "RATE_LIMIT_HEADERS",
}

// loadConfig reads RELAY_CONFIG (when set), then the environment over it,
// and validates the result. Every error names the setting at fault and
// never contains a secret.
func loadConfig(getenv func(string) string) (config, error) {
	c, err := readConfigFile(getenv)
	if err != nil {
		return c, err
	}
	if err := c.applyEnv(getenv); err != nil {
		return c, err
	}
	return c, c.validate()
}

// readConfigFile returns the defaults with RELAY_CONFIG's settings over
// them.
func readConfigFile(getenv func(string) string) (config, error) {
	c := defaults()
	path := getenv("RELAY_CONFIG")
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("RELAY_CONFIG: %w", err)
	}
	if err := c.parseYAML(b); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	c.file = path
	return c, nil
}

// parseYAML sets the file's settings over c.
func (c *config) parseYAML(b []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)                                            // a misspelt field is an error, not a silent default
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		return errors.New(withLines(err.Error(), b))
	}
	return nil
}

// withLines follows each "line N:" of a YAML error with the setting on that
// line, so the error names the field and not only its line. Values are
// never quoted: they may be secrets.
func withLines(msg string, file []byte) string {
	lines := strings.Split(string(file), "\n")
	out := strings.Split(msg, "\n")
	for i, l := range out {
		var n int
		idx := strings.Index(l, "line ")
		if idx < 0 {
			continue
		}
		if _, err := fmt.Sscanf(l[idx:], "line %d:", &n); err != nil || n < 1 || n > len(lines) {
			continue
		}
		// Only the setting's name: its value (inline, on the same line)
		// may be a credential.
		src, _, found := strings.Cut(strings.TrimSpace(lines[n-1]), ":")
		src = strings.TrimLeft(src, "- {[")
		if !found || strings.ContainsAny(src, "{}[],\"'") {
			continue
		}
		out[i] = l + " (setting `" + src + "`)"
	}
	return strings.Join(out, "\n")
}

func (c *config) applyEnv(getenv func(string) string) error {
	str := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	str("UPSTREAM_API_KEY", &c.UpstreamAPIKey)
	c.UpstreamAPIKey = strings.TrimSpace(c.UpstreamAPIKey)
	str("UPSTREAM_BASE_URL", &c.UpstreamBaseURL)
	str("ADMIN_USERNAME", &c.AdminUsername)
	str("ADMIN_PASSWORD", &c.AdminPassword)
	str("ADMIN_PASSWORD_HASH", &c.AdminPasswordHash)
	str("SECRET_KEY", &c.SecretKey)
	str("DATABASE_URL", &c.DatabaseURL)
	str("REDIS_URL", &c.RedisURL)
	str("REDIS_PREFIX", &c.RedisPrefix)
	str("LISTEN_ADDR", &c.ListenAddr)
	str("RELAY_DATA_DIR", &c.DataDir)
	str("RELAY_PUBLIC_URL", &c.PublicURL)
	str("CLIENT_IP_HEADER", &c.ClientIPHeader)
	str("RELAY_TIMEZONE", &c.Quota.Timezone)

	type parser struct {
		name string
		set  func(string) error
	}
	for _, p := range []parser{
		{"UPSTREAM_AUTH", func(v string) error { return c.UpstreamAuth.UnmarshalText([]byte(v)) }},
		{"LOG_FORMAT", func(v string) error { c.LogFormat = strings.ToLower(v); return nil }},
		{"LOG_LEVEL", func(v string) error { return c.LogLevel.UnmarshalText([]byte(v)) }},
		{"ADMIN_TOKEN_TTL", durationInto(&c.AdminTokenTTL)},
		{"SHUTDOWN_GRACE", durationInto(&c.ShutdownGrace)},
		{"READ_HEADER_TIMEOUT", durationInto(&c.ReadHeaderTimeout)},
		{"BCRYPT_COST", intInto(&c.BcryptCost)},
		{"USAGE_RETENTION_DAYS", intInto(&c.RetentionDays)},
		{"MAX_BODY_BYTES", int64Into(&c.MaxBodyBytes)},
		{"QUOTA_OUTPUT_CAP", int64Into(&c.Quota.OutputCap)},
		{"QUOTA_COUNTED", func(v string) error { return c.Quota.Counted.UnmarshalText([]byte(v)) }},
		{"QUOTA_RATE_COUNTED", func(v string) error { return c.Quota.RateCounted.UnmarshalText([]byte(v)) }},
		{"RELAY_AUTO_MIGRATE", boolInto(&c.AutoMigrate)},
		{"QUOTA_FAIL_CLOSED", boolInto(&c.Quota.FailClosed)},
		{"RATE_LIMIT_HEADERS", func(v string) error {
			on, err := strconv.ParseBool(v)
			c.NoLimitHeaders = !on
			return err
		}},
	} {
		if v := getenv(p.name); v != "" {
			if err := p.set(v); err != nil {
				return fmt.Errorf("%s: %q is not valid: %v", p.name, v, err)
			}
		}
	}
	return nil
}

func durationInto(d *time.Duration) func(string) error {
	return func(v string) (err error) { *d, err = time.ParseDuration(v); return err }
}

func intInto(n *int) func(string) error {
	return func(v string) (err error) { *n, err = strconv.Atoi(v); return err }
}

func int64Into(n *int64) func(string) error {
	return func(v string) (err error) { *n, err = strconv.ParseInt(v, 10, 64); return err }
}

func boolInto(b *bool) func(string) error {
	return func(v string) (err error) { *b, err = strconv.ParseBool(v); return err }
}

func (c *config) validate() error {
	if len(c.Upstreams) == 0 && c.UpstreamAPIKey == "" {
		return errors.New("UPSTREAM_API_KEY is not set: set it to your Anthropic API key (the relay sends it upstream in place of your users' relay keys), or list upstreams in the RELAY_CONFIG file")
	}
	for i, u := range c.Upstreams {
		if u.Credential == "" {
			return fmt.Errorf("upstreams[%d] (%s): credential is required", i, u.Name)
		}
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("LOG_FORMAT: %q is not text or json", c.LogFormat)
	}
	if c.SecretKey != "" && len(c.SecretKey) < 32 {
		return errors.New("SECRET_KEY must be at least 32 characters (generate one with: openssl rand -hex 32)")
	}
	if c.AdminPassword != "" && c.AdminPasswordHash != "" {
		return errors.New("ADMIN_PASSWORD and ADMIN_PASSWORD_HASH are both set; set one")
	}
	if c.AdminPasswordHash != "" && !strings.HasPrefix(c.AdminPasswordHash, "$2") {
		return errors.New("ADMIN_PASSWORD_HASH: not a bcrypt hash (make one with: htpasswd -bnBC 10 '' PASSWORD | tr -d ':\\n')")
	}
	if c.BcryptCost != 0 && (c.BcryptCost < 4 || c.BcryptCost > 31) {
		return fmt.Errorf("BCRYPT_COST: %d is outside 4..31", c.BcryptCost)
	}
	if c.AdminTokenTTL < 0 || c.ShutdownGrace < 0 || c.MaxBodyBytes < 0 || c.RetentionDays < 0 {
		return errors.New("ADMIN_TOKEN_TTL, SHUTDOWN_GRACE, MAX_BODY_BYTES and USAGE_RETENTION_DAYS must not be negative")
	}
	if c.ReadHeaderTimeout <= 0 {
		return errors.New("READ_HEADER_TIMEOUT must be positive (it stops slow-loris clients)")
	}
	if c.Quota.OutputCap < 0 {
		return errors.New("QUOTA_OUTPUT_CAP (quota.output_cap) must not be negative")
	}
	if _, err := c.location(); err != nil {
		return err
	}
	if err := c.Tiers.Validate(); err != nil {
		return fmt.Errorf("tiers: %w", err)
	}
	for name, p := range c.Pricing.Models {
		if p.Input < 0 || p.Output < 0 || p.CacheRead < 0 || p.CacheWrite5m < 0 || p.CacheWrite1h < 0 {
			return fmt.Errorf("pricing.models.%s: prices must not be negative", name)
		}
	}
	if strings.ContainsAny(c.RedisPrefix, "{}") {
		return errors.New("REDIS_PREFIX must not contain braces (they are Redis Cluster hash tags)")
	}
	return nil
}

func (c *config) location() (*time.Location, error) {
	if c.Quota.Timezone == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(c.Quota.Timezone)
	if err != nil {
		return nil, fmt.Errorf("RELAY_TIMEZONE (quota.timezone): %q is not a known time zone", c.Quota.Timezone)
	}
	return loc, nil
}

// upstreams is the list the pool gets: the file's, or the env pair.
func (c *config) upstreams() []upstream.Config {
	if len(c.Upstreams) > 0 {
		return c.Upstreams
	}
	return []upstream.Config{{Name: "anthropic", BaseURL: c.UpstreamBaseURL, Credential: c.UpstreamAPIKey, Auth: c.UpstreamAuth}}
}

// pricing is the built-in table with the file's prices over it.
func (c *config) pricing() *usage.Pricing {
	prices := usage.DefaultPrices()
	for name, p := range c.Pricing.Models {
		prices[strings.ToLower(name)] = p
	}
	def := usage.DefaultPricing().Default
	if c.Pricing.Default != nil {
		def = *c.Pricing.Default
	}
	return usage.NewPricing(prices, def)
}

// secretKey returns SECRET_KEY, or the one kept in the data directory,
// generating and keeping it on first run so admin sessions and the key
// cache survive restarts.
func (c config) secretKey() ([]byte, bool, error) {
	if c.SecretKey != "" {
		return []byte(c.SecretKey), false, nil
	}
	path := filepath.Join(c.DataDir, "secret_key")
	if b, err := os.ReadFile(path); err == nil {
		s := strings.TrimSpace(string(b))
		if len(s) < 32 {
			return nil, false, fmt.Errorf("%s is shorter than 32 characters; delete it to generate a new one", path)
		}
		return []byte(s), false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	s := randomHex(32)
	if err := writeSecretFile(path, s+"\n"); err != nil {
		return nil, false, err
	}
	return []byte(s), true, nil
}

// adminPassword returns ADMIN_PASSWORD or ADMIN_PASSWORD_HASH, or the
// bcrypt hash of a password generated on first run (kept in the data
// directory; the password itself is shown once and never stored).
func (c config) adminPassword(hash func(string) ([]byte, error)) (plain string, stored []byte, generated string, err error) {
	if c.AdminPassword != "" {
		return c.AdminPassword, nil, "", nil
	}
	if c.AdminPasswordHash != "" {
		return "", []byte(c.AdminPasswordHash), "", nil
	}
	path := filepath.Join(c.DataDir, "admin_password.bcrypt")
	if b, err := os.ReadFile(path); err == nil {
		return "", []byte(strings.TrimSpace(string(b))), "", nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", nil, "", err
	}
	pw := randomHex(16)
	h, err := hash(pw)
	if err != nil {
		return "", nil, "", err
	}
	if err := writeSecretFile(path, string(h)+"\n"); err != nil {
		return "", nil, "", err
	}
	return "", h, pw, nil
}

func writeSecretFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
