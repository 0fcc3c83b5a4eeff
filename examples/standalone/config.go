package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// config is the server's configuration, read from the environment with
// the names the original relay design used.
type config struct {
	UpstreamAPIKey  string // UPSTREAM_API_KEY (required)
	UpstreamBaseURL string // UPSTREAM_BASE_URL
	UpstreamBearer  bool   // UPSTREAM_AUTH=bearer
	AdminUsername   string // ADMIN_USERNAME
	AdminPassword   string // ADMIN_PASSWORD
	SecretKey       string // SECRET_KEY
	DatabaseURL     string // DATABASE_URL
	RedisURL        string // REDIS_URL
	ListenAddr      string // LISTEN_ADDR
	DataDir         string // RELAY_DATA_DIR
	PublicURL       string // RELAY_PUBLIC_URL
	LogFormat       string // LOG_FORMAT: text or json
	LogLevel        slog.Level
}

func loadConfig(getenv func(string) string) (config, error) {
	c := config{
		UpstreamAPIKey:  strings.TrimSpace(getenv("UPSTREAM_API_KEY")),
		UpstreamBaseURL: getenv("UPSTREAM_BASE_URL"),
		AdminUsername:   getenv("ADMIN_USERNAME"),
		AdminPassword:   getenv("ADMIN_PASSWORD"),
		SecretKey:       getenv("SECRET_KEY"),
		DatabaseURL:     getenv("DATABASE_URL"),
		RedisURL:        getenv("REDIS_URL"),
		ListenAddr:      getenv("LISTEN_ADDR"),
		DataDir:         getenv("RELAY_DATA_DIR"),
		PublicURL:       getenv("RELAY_PUBLIC_URL"),
		LogFormat:       strings.ToLower(getenv("LOG_FORMAT")),
	}
	if c.UpstreamAPIKey == "" {
		return c, errors.New("UPSTREAM_API_KEY is not set: set it to your Anthropic API key (the relay sends it upstream in place of your users' relay keys)")
	}
	if c.UpstreamBaseURL == "" {
		c.UpstreamBaseURL = "https://api.anthropic.com"
	}
	switch a := strings.ToLower(getenv("UPSTREAM_AUTH")); a {
	case "", "x-api-key", "api-key":
	case "bearer":
		c.UpstreamBearer = true
	default:
		return c, fmt.Errorf("UPSTREAM_AUTH: %q is not x-api-key or bearer", a)
	}
	if c.AdminUsername == "" {
		c.AdminUsername = "admin"
	}
	if c.ListenAddr == "" {
		c.ListenAddr = ":8000"
	}
	if c.DataDir == "" {
		c.DataDir = "./data"
	}
	switch c.LogFormat {
	case "", "text":
		c.LogFormat = "text"
	case "json":
	default:
		return c, fmt.Errorf("LOG_FORMAT: %q is not text or json", c.LogFormat)
	}
	if lv := getenv("LOG_LEVEL"); lv != "" {
		if err := c.LogLevel.UnmarshalText([]byte(lv)); err != nil {
			return c, fmt.Errorf("LOG_LEVEL: %q is not debug, info, warn or error", lv)
		}
	}
	if c.SecretKey != "" && len(c.SecretKey) < 32 {
		return c, errors.New("SECRET_KEY must be at least 32 characters (generate one with: openssl rand -hex 32)")
	}
	return c, nil
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

// adminPassword returns ADMIN_PASSWORD, or the bcrypt hash of a password
// generated on first run (kept in the data directory; the password itself
// is shown once and never stored).
func (c config) adminPassword(hash func(string) ([]byte, error)) (plain string, stored []byte, generated string, err error) {
	if c.AdminPassword != "" {
		return c.AdminPassword, nil, "", nil
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
