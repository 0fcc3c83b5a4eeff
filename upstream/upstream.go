// Package upstream sends relayed requests to Anthropic (or anything that
// speaks its API): which credential goes with them, which headers cross in
// each direction, and a transport tuned for many long-lived streams.
//
// A Pool spreads requests over several upstreams (accounts, base URLs):
// the highest-priority group with a healthy upstream first, weighted
// within it, with session affinity so that prompt caches stay warm. It
// retries what failed before the answer was handed over — on another
// upstream when there is one, else after a jittered backoff or the
// upstream's retry-after — and takes failing upstreams out of rotation for
// a capped cooldown, after which one live request probes them. Failover
// is careful not to misfire: a 429 takes out only the rate-limited model,
// for at most CooldownPolicy.Max; answers to requests sent before a
// cooldown began do not stretch it; only repeated 401/403 disable an
// account.
package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// AuthScheme says how the upstream credential is sent.
type AuthScheme int

const (
	// AuthAPIKey sends the credential as x-api-key (Anthropic API keys).
	AuthAPIKey AuthScheme = iota
	// AuthBearer sends it as Authorization: Bearer (OAuth tokens, gateways).
	AuthBearer
)

// DefaultBaseURL is Anthropic's API.
const DefaultBaseURL = "https://api.anthropic.com"

// Upstream is one place requests can go, with its credential.
type Upstream struct {
	// Name identifies the upstream in records, logs and metrics. Never the
	// credential.
	Name string
	// BaseURL is the API root, e.g. https://api.anthropic.com; a path
	// prefix is kept (https://gw.example/anthropic).
	BaseURL *url.URL
	// Credential is the real API key or token. It never reaches a user.
	Credential string
	Auth       AuthScheme
}

// New parses baseURL and returns an Upstream.
func New(name, baseURL, credential string, auth AuthScheme) (*Upstream, error) {
	if baseURL == "" {
		baseURL = DefaultBaseURL
	}
	u, err := url.Parse(baseURL)
	if err == nil && u.User != nil {
		// It would be dropped (URL builds from scheme, host and path), and
		// a password in it would show in this very error message.
		return nil, errors.New("upstream: base URL must not hold user info; set the credential instead")
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream: base URL %q must be an absolute http(s) URL", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("upstream: base URL %q must not have a query or fragment", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	if credential == "" {
		return nil, errors.New("upstream: a credential is required")
	}
	if name == "" {
		name = u.Host
	}
	return &Upstream{Name: name, BaseURL: u, Credential: credential, Auth: auth}, nil
}

// URL returns the upstream URL for a relay path and raw query.
func (u *Upstream) URL(path, rawQuery string) string {
	var b strings.Builder
	b.Grow(len(u.BaseURL.Scheme) + 3 + len(u.BaseURL.Host) + len(u.BaseURL.Path) + len(path) + 1 + len(rawQuery))
	b.WriteString(u.BaseURL.Scheme)
	b.WriteString("://")
	b.WriteString(u.BaseURL.Host)
	b.WriteString(u.BaseURL.Path)
	b.WriteString(path)
	if rawQuery != "" {
		b.WriteByte('?')
		b.WriteString(rawQuery)
	}
	return b.String()
}

// NewRequest builds the upstream request for a client request: same method,
// path and query, the client's headers through CopyRequestHeaders, the
// upstream credential, and body replayable through GetBody (retries send
// the relay's copy again).
func (u *Upstream) NewRequest(ctx context.Context, client *http.Request, path string, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, client.Method, u.URL(path, client.URL.RawQuery), rd)
	if err != nil {
		return nil, err
	}
	if body == nil {
		req.Body = http.NoBody
	}
	CopyRequestHeaders(req.Header, client.Header)
	switch u.Auth {
	case AuthBearer:
		req.Header.Set("Authorization", "Bearer "+u.Credential)
	default:
		req.Header["X-Api-Key"] = []string{u.Credential}
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""} // do not announce Go-http-client
	}
	return req, nil
}

// TransportConfig tunes NewTransport. Zero values are the defaults noted.
type TransportConfig struct {
	// MaxIdleConnsPerHost: idle keep-alive connections kept per upstream
	// host. Zero means 1024: Go's default of 2 forces a new TLS handshake
	// for nearly every request under concurrency.
	MaxIdleConnsPerHost int
	// DialTimeout: zero means 10 s.
	DialTimeout time.Duration
	// TLSHandshakeTimeout: zero means 10 s.
	TLSHandshakeTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for response headers (Anthropic
	// sends them only when the model starts answering a non-streaming
	// request, so it must be generous). Zero means 10 minutes, the SDKs'
	// own default timeout.
	ResponseHeaderTimeout time.Duration
	// IdleConnTimeout: zero means 90 s.
	IdleConnTimeout time.Duration
	// UnencryptedHTTP2 sends http:// requests as HTTP/2 without TLS (h2c
	// with prior knowledge) and https:// ones as HTTP/2 only. Every
	// server the transport reaches must speak HTTP/2, and the transport
	// goes direct, never through HTTP_PROXY (prior knowledge cannot pass
	// an HTTP/1.1 proxy).
	UnencryptedHTTP2 bool
}

// NewTransport returns an http.Transport for upstream traffic: large
// keep-alive pools, HTTP/2 when the server offers it, proxy settings from
// the environment, dial/TLS/header timeouts, and no overall timeout (a
// stream may last as long as the model writes).
func NewTransport(cfg TransportConfig) *http.Transport {
	if cfg.MaxIdleConnsPerHost <= 0 {
		cfg.MaxIdleConnsPerHost = 1024
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.TLSHandshakeTimeout <= 0 {
		cfg.TLSHandshakeTimeout = 10 * time.Second
	}
	if cfg.ResponseHeaderTimeout <= 0 {
		cfg.ResponseHeaderTimeout = 10 * time.Minute
	}
	if cfg.IdleConnTimeout <= 0 {
		cfg.IdleConnTimeout = 90 * time.Second
	}
	d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          0, // no global cap; per-host cap below
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:       cfg.IdleConnTimeout,
		TLSHandshakeTimeout:   cfg.TLSHandshakeTimeout,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
		// HTTP/2 multiplexes many streams on one connection, so one dead
		// connection stalls them all: ping a connection that has been
		// silent for 30 s and drop it when the ping goes unanswered.
		// (Anthropic's streams send ping events well within that.)
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
	if cfg.UnencryptedHTTP2 {
		// Without HTTP1 in the set, http:// URLs get HTTP/2 with prior
		// knowledge (net/http's rule).
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetHTTP2(true)
		tr.Protocols.SetUnencryptedHTTP2(true)
		tr.Proxy = nil
	}
	return tr
}
