package upstream

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"
)

// Config is one upstream of a Pool: an account (credential) at a base URL.
// The yaml tags are the names a configuration file uses; durations are
// written as Go durations ("30s", "5m").
//
// Config holds a secret: its String, GoString and LogValue methods redact
// the credential, so printing or logging a Config is safe.
type Config struct {
	// Name identifies the upstream in logs, metrics, usage records and the
	// admin API (/admin/upstreams/{name}/…). Letters, digits, '.', '_',
	// '-' and ':' only. Empty means the base URL's host, which is fine for
	// one upstream per host; two accounts on one host need names.
	Name string `yaml:"name"`
	// BaseURL is the API root; empty means https://api.anthropic.com. A
	// path prefix is kept (https://gw.example/anthropic).
	BaseURL string `yaml:"base_url"`
	// Credential is the real API key or token. Required; never logged.
	Credential string `yaml:"credential"`
	// Auth says how Credential is sent: "x-api-key" (default) or "bearer".
	Auth AuthScheme `yaml:"auth"`
	// Weight is this upstream's share of new traffic within its priority
	// group. Zero means 1.
	Weight int `yaml:"weight"`
	// Priority: the pool sends to the highest-priority group that has a
	// healthy upstream, and falls back to lower ones only when none has.
	// Zero is a priority like any other; higher wins.
	Priority int `yaml:"priority"`
	// Models lists the models this upstream serves, as path.Match globs
	// ("claude-sonnet-*"). Empty means every model. Requests without a
	// model (models list, files, batches) go to any upstream.
	Models []string `yaml:"models"`
	// ModelMap rewrites a requested model id (exact match) to the id this
	// upstream knows, e.g. "claude-sonnet-4-5" → a gateway's alias. A
	// mapped model counts as served even when Models does not list it.
	// The rewrite replaces only the bytes of the body's top-level "model"
	// string; the body is never decoded and re-encoded, so field order and
	// unknown fields survive. The answer still names the upstream's model.
	ModelMap map[string]string `yaml:"model_map"`
	// MaxConcurrent bounds the requests (streams included, until they end)
	// in flight to this upstream. Zero means no bound.
	MaxConcurrent int `yaml:"max_concurrent"`
	// DialTimeout and TLSHandshakeTimeout bound connection set-up; zero
	// means 10 s. Ignored when PoolConfig.Transport is set.
	DialTimeout         time.Duration `yaml:"dial_timeout"`
	TLSHandshakeTimeout time.Duration `yaml:"tls_handshake_timeout"`
	// ResponseHeaderTimeout bounds the wait for the response headers of one
	// attempt (a timed-out attempt is retried). A non-streaming Messages
	// request gets its headers only when the whole answer is written, so
	// this must be generous. Zero leaves it to the transport: 10 minutes,
	// the SDKs' own timeout, with NewTransport. There is never a timeout on
	// the body: a stream lasts as long as the model writes.
	ResponseHeaderTimeout time.Duration `yaml:"response_header_timeout"`
	// H2C speaks HTTP/2 without TLS to an http:// base URL (prior
	// knowledge, no upgrade): for an upstream on a private network, such
	// as a sidecar or an internal gateway, that serves h2c. Streams then
	// share a few connections instead of holding one each, as they do
	// with https:// upstreams, which negotiate HTTP/2 by themselves. The
	// upstream must speak HTTP/2: there is no fallback to HTTP/1.1, and no
	// HTTP proxy from the environment (HTTP_PROXY) is used for it. It needs
	// an http:// base URL, and is ignored when PoolConfig.Transport is set.
	H2C bool `yaml:"h2c"`
	// ExtraHeaders are set on every request to this upstream, replacing a
	// client header of the same name — except anthropic-beta, whose values
	// are added to the client's list (a dropped client beta makes the
	// upstream refuse a body that uses it). In YAML each header is a list:
	// `headers: {anthropic-beta: [oauth-2025-04-20]}`. The credential
	// headers cannot be set here.
	ExtraHeaders http.Header `yaml:"headers"`
	// Disabled starts the upstream out of rotation; an admin enables it.
	Disabled bool `yaml:"disabled"`
}

// String describes c without its credential.
func (c Config) String() string {
	return fmt.Sprintf("upstream %q at %s (credential %s)", c.Name, c.BaseURL, redact(c.Credential))
}

// GoString is String, so that %#v does not print the credential either.
func (c Config) GoString() string { return c.String() }

// LogValue logs c without its credential.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", c.Name), slog.String("base_url", c.BaseURL), slog.String("credential", redact(c.Credential)))
}

func redact(s string) string {
	if s == "" {
		return "unset"
	}
	return "redacted"
}

// RetryPolicy says how Pool.Do retries an attempt that failed before its
// response was handed to the caller. Zero values are the defaults noted.
type RetryPolicy struct {
	// Attempts is the most attempts one call makes, the first included,
	// over all upstreams. Zero means 3; 1 turns retries off.
	Attempts int `yaml:"attempts"`
	// Base and Cap shape the backoff before retrying an upstream already
	// tried: a uniformly random wait in [0, min(Cap, Base·2^n)) ("full
	// jitter"). Zero means 250 ms and 8 s. Moving to an upstream not yet
	// tried in the call does not wait.
	Base time.Duration `yaml:"base"`
	Cap  time.Duration `yaml:"cap"`
	// Deadline bounds the time a call spends retrying: no wait is started
	// that would end after Deadline since the call began (a retry-after
	// that does not fit is not honoured; the last answer goes back to the
	// client instead, retry-after included, so the client waits). It never
	// cuts an attempt in flight. Zero means 30 s.
	Deadline time.Duration `yaml:"deadline"`
}

// CooldownPolicy says when an upstream (or an upstream for one model)
// leaves rotation and for how long. Zero values are the defaults noted.
type CooldownPolicy struct {
	// Failures is how many failures in a row (5xx, 529, 408, timeouts,
	// connection errors; no success in between) take an upstream out.
	// Zero means 3. A refused connection takes it out at once.
	Failures int `yaml:"failures"`
	// Base is the first cooldown after failures; each further cooldown
	// without a success in between doubles it, up to Max. Zero means 5 s.
	Base time.Duration `yaml:"base"`
	// Max caps every cooldown, a 429's retry-after included, so that one
	// long retry-after cannot lock an account for hours: after at most Max
	// one live request probes the upstream. Zero means 5 minutes.
	Max time.Duration `yaml:"max"`
	// AuthFailures is how many 401 or 403 answers in a row (no success in
	// between) take an upstream out until an admin enables it. Zero means
	// 3. A revoked credential fails every request and is out after a few;
	// a lone 403 that one client provoked (a beta or model its account may
	// not use) must not take a whole account out. Every 401/403 fails the
	// call over to another upstream regardless.
	AuthFailures int `yaml:"auth_failures"`
}

// PoolConfig configures a Pool. Every zero value is usable except
// Upstreams, which needs at least one entry.
type PoolConfig struct {
	// Upstreams are the places requests may go. Required. The single
	// upstream of the UPSTREAM_API_KEY / UPSTREAM_BASE_URL case is a list
	// of one.
	Upstreams []Config       `yaml:"upstreams"`
	Retry     RetryPolicy    `yaml:"retry"`
	Cooldown  CooldownPolicy `yaml:"cooldown"`

	// Transport carries every upstream request. Nil means transports from
	// NewTransport (shared by upstreams with the same timeouts), which the
	// pool's Close closes the idle connections of.
	Transport http.RoundTripper `yaml:"-"`
	// Logger receives cooldowns (warn), recoveries (info), retries (debug)
	// and rejected credentials (error). Nil discards. Credentials are never
	// logged.
	Logger *slog.Logger `yaml:"-"`
	// Now tells time for cooldowns, deadlines and statistics; nil means
	// time.Now. Waits themselves are real timers.
	Now func() time.Time `yaml:"-"`
	// Rand returns a uniform number in [0, 1) for backoff jitter; nil
	// means math/rand/v2. It is called concurrently.
	Rand func() float64 `yaml:"-"`
	// OnEvent, when set, is told about retries, failovers, cooldowns and
	// disabled upstreams (for metrics). It is called synchronously, outside
	// the pool's lock, and must be quick.
	OnEvent func(Event) `yaml:"-"`
}

// Defaults for zero values in RetryPolicy and CooldownPolicy.
const (
	DefaultAttempts      = 3
	DefaultRetryBase     = 250 * time.Millisecond
	DefaultRetryCap      = 8 * time.Second
	DefaultRetryDeadline = 30 * time.Second
	DefaultFailures      = 3
	DefaultCooldownBase  = 5 * time.Second
	DefaultCooldownMax   = 5 * time.Minute
	DefaultAuthFailures  = 3
)

func (r RetryPolicy) withDefaults() RetryPolicy {
	if r.Attempts <= 0 {
		r.Attempts = DefaultAttempts
	}
	if r.Base <= 0 {
		r.Base = DefaultRetryBase
	}
	if r.Cap <= 0 {
		r.Cap = DefaultRetryCap
	}
	if r.Cap < r.Base {
		r.Cap = r.Base
	}
	if r.Deadline <= 0 {
		r.Deadline = DefaultRetryDeadline
	}
	return r
}

func (c CooldownPolicy) withDefaults() CooldownPolicy {
	if c.Failures <= 0 {
		c.Failures = DefaultFailures
	}
	if c.Base <= 0 {
		c.Base = DefaultCooldownBase
	}
	if c.Max <= 0 {
		c.Max = DefaultCooldownMax
	}
	if c.Max < c.Base {
		c.Base = c.Max
	}
	if c.AuthFailures <= 0 {
		c.AuthFailures = DefaultAuthFailures
	}
	return c
}

// validName reports whether a name is safe in logs, metrics labels and
// the admin API's URL paths.
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == ':') {
			return false
		}
	}
	return true
}

// check validates the fields New does not.
func (c *Config) check() error {
	if c.Weight < 0 {
		return errors.New("weight must not be negative")
	}
	if c.MaxConcurrent < 0 {
		return errors.New("max_concurrent must not be negative")
	}
	if c.DialTimeout < 0 || c.TLSHandshakeTimeout < 0 || c.ResponseHeaderTimeout < 0 {
		return errors.New("timeouts must not be negative")
	}
	if c.Auth != AuthAPIKey && c.Auth != AuthBearer {
		return fmt.Errorf("unknown auth scheme %d", int(c.Auth))
	}
	if c.H2C && !strings.HasPrefix(strings.ToLower(c.BaseURL), "http://") {
		return errors.New("h2c needs an http:// base_url (https:// upstreams negotiate HTTP/2 by themselves)")
	}
	for _, m := range c.Models {
		if _, err := path.Match(m, ""); err != nil || m == "" {
			return fmt.Errorf("models: %q is not a valid glob", m)
		}
	}
	for from, to := range c.ModelMap {
		if from == "" || to == "" {
			return errors.New("model_map: model ids must not be empty")
		}
	}
	for k := range c.ExtraHeaders {
		switch http.CanonicalHeaderKey(k) {
		case "X-Api-Key", "Authorization", "Host", "Content-Length", "Transfer-Encoding", "Connection":
			return fmt.Errorf("headers: %s cannot be set through headers", k)
		}
	}
	return nil
}

// String returns "x-api-key" or "bearer".
func (a AuthScheme) String() string {
	switch a {
	case AuthAPIKey:
		return "x-api-key"
	case AuthBearer:
		return "bearer"
	}
	return fmt.Sprintf("AuthScheme(%d)", int(a))
}

// MarshalText writes the scheme's configuration name.
func (a AuthScheme) MarshalText() ([]byte, error) {
	if a != AuthAPIKey && a != AuthBearer {
		return nil, fmt.Errorf("upstream: unknown auth scheme %d", int(a))
	}
	return []byte(a.String()), nil
}

// UnmarshalText reads "x-api-key" (also "api-key", or empty) or "bearer",
// in any case, so configuration files can name the scheme.
func (a *AuthScheme) UnmarshalText(b []byte) error {
	switch strings.ToLower(strings.TrimSpace(string(b))) {
	case "", "x-api-key", "api-key", "apikey":
		*a = AuthAPIKey
	case "bearer":
		*a = AuthBearer
	default:
		return fmt.Errorf("upstream: auth %q is not x-api-key or bearer", b)
	}
	return nil
}
