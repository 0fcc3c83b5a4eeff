package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Proxy is a TCP proxy that a test can cut: an outage of Postgres or Redis
// without stopping the server, which other tests (in other packages, in
// parallel) share. Point the code under test at Addr (see WithHostPort),
// then Cut and Restore while it runs.
//
// Cut closes every connection through the proxy, as a server that stops
// does, and refuses new ones until Restore: they are accepted and reset at
// once, so clients fail fast (as on "connection refused") rather than
// waiting for a timeout. A connection whose dial to the target was in
// progress at the Cut is dropped too, so nothing opened before a Cut
// survives it.
//
// A Proxy is safe for concurrent use. Close stops it and waits for every
// goroutine it started.
type Proxy struct {
	target string
	ln     net.Listener
	dialer net.Dialer
	ctx    context.Context // ends with Close: aborts dials in progress
	cancel context.CancelFunc

	mu     sync.Mutex
	cut    bool
	closed bool
	gen    uint64 // counts Cuts: a dial that began before one is dropped
	links  map[*link]struct{}
	wg     sync.WaitGroup // the accept loop, dials and pipes
}

// link is one client connection and its connection to the target.
type link struct {
	client, server net.Conn
}

func (l *link) close() {
	_ = l.client.Close()
	_ = l.server.Close()
}

// proxyDialTimeout bounds a dial to the target, so that Close never waits
// long on a target that does not answer.
const proxyDialTimeout = 5 * time.Second

// StartProxy starts a proxy on 127.0.0.1 (a free port) to target, a
// host:port. The target is dialled per connection, so it need not be up
// yet.
func StartProxy(target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("testenv: proxy target %q: %w", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("testenv: proxy: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		target: target, ln: ln, ctx: ctx, cancel: cancel,
		dialer: net.Dialer{Timeout: proxyDialTimeout},
		links:  make(map[*link]struct{}),
	}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// NewProxy is StartProxy for a test: it fails t if the proxy cannot start
// and closes the proxy when the test and its subtests are done.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := StartProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// Addr is the proxy's address, 127.0.0.1:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Cut closes every connection through the proxy and refuses new ones until
// Restore. Cutting a cut proxy closes nothing more.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	p.gen++
	links := p.links
	p.links = make(map[*link]struct{})
	p.mu.Unlock()
	for l := range links {
		l.close()
	}
}

// Restore makes the proxy forward new connections again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// Live reports how many connections are open through the proxy.
func (p *Proxy) Live() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Close stops the proxy: it closes the listener and every connection, and
// returns once every goroutine of the proxy has ended. It may be called
// more than once.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	links := p.links
	p.links = nil
	p.mu.Unlock()
	p.cancel()
	err := p.ln.Close()
	for l := range links {
		l.close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A temporary failure (out of file descriptors): try again
			// shortly, unless the proxy is closing.
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		p.mu.Lock()
		if p.closed || p.cut {
			p.mu.Unlock()
			reset(c)
			continue
		}
		gen := p.gen
		p.wg.Add(1)
		p.mu.Unlock()
		go p.connect(c, gen)
	}
}

// connect dials the target for client c, accepted in generation gen, and
// pipes the two together.
func (p *Proxy) connect(c net.Conn, gen uint64) {
	defer p.wg.Done()
	s, err := p.dialer.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		reset(c)
		return
	}
	l := &link{client: c, server: s}
	p.mu.Lock()
	if p.closed || p.cut || p.gen != gen {
		p.mu.Unlock()
		reset(c)
		_ = s.Close()
		return
	}
	p.links[l] = struct{}{}
	p.wg.Add(2)
	p.mu.Unlock()
	go p.pipe(l, s, c)
	go p.pipe(l, c, s)
}

// pipe copies src to dst until either side ends, then closes the link
// (both directions: the servers proxied here never half-close).
func (p *Proxy) pipe(l *link, dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	l.close()
	p.mu.Lock()
	delete(p.links, l) // a no-op once Cut or Close took the map
	p.mu.Unlock()
}

// reset closes c with a TCP reset, so its client fails at once.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// Default ports of the servers whose URLs HostPort and WithHostPort know.
var defaultPorts = map[string]string{
	"postgres": "5432", "postgresql": "5432",
	"redis": "6379", "rediss": "6379",
}

// HostPort returns the host:port that a Postgres DSN (a postgres:// URL or
// a keyword/value string) or a redis:// URL connects to, with the default
// port (5432, 6379) when it names none: the target of a Proxy in front of
// that server. A URL with several hosts or a Unix socket is an error, as is
// a keyword/value DSN with hostaddr. Errors never quote the URL, which may
// hold a password.
func HostPort(rawURL string) (string, error) {
	if scheme, ok := urlScheme(rawURL); ok {
		u, err := parseServerURL(rawURL, scheme)
		if err != nil {
			return "", err
		}
		port := u.Port()
		if port == "" {
			port = defaultPorts[scheme]
		}
		return net.JoinHostPort(u.Hostname(), port), nil
	}
	if strings.Contains(rawURL, "hostaddr") {
		return "", errors.New("testenv: a DSN with hostaddr cannot be proxied")
	}
	cfg, err := pgconn.ParseConfig(rawURL) // pgconn redacts passwords in its errors
	if err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	// sslmode=prefer (the default) adds a fallback to the same host
	// without TLS; only other hosts are a problem.
	for _, fb := range cfg.Fallbacks {
		if fb.Host != cfg.Host || fb.Port != cfg.Port {
			return "", errors.New("testenv: the DSN names several hosts; a proxy needs one")
		}
	}
	if strings.HasPrefix(cfg.Host, "/") {
		return "", errors.New("testenv: the DSN names a Unix socket; a proxy needs a TCP host")
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), nil
}

// WithHostPort returns rawURL (as HostPort takes it) connecting to
// hostport instead, everything else (user, password, database, options)
// kept: the DSN or URL through a Proxy is WithHostPort(dsn, p.Addr()).
// TLS server-name checks (sslmode=verify-full, rediss://) then see the
// proxy's host; the test servers use plain TCP.
func WithHostPort(rawURL, hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", fmt.Errorf("testenv: %q is not host:port", hostport)
	}
	if scheme, ok := urlScheme(rawURL); ok {
		u, err := parseServerURL(rawURL, scheme)
		if err != nil {
			return "", err
		}
		u.Host = hostport
		return u.String(), nil
	}
	if _, err := HostPort(rawURL); err != nil {
		return "", err
	}
	// In a keyword/value DSN the last occurrence of a keyword wins.
	return strings.TrimSpace(rawURL) + " host=" + host + " port=" + port, nil
}

// urlScheme returns the lower-cased scheme of a URL HostPort knows.
func urlScheme(rawURL string) (string, bool) {
	scheme, _, ok := strings.Cut(rawURL, "://")
	if !ok {
		return "", false
	}
	scheme = strings.ToLower(scheme)
	_, known := defaultPorts[scheme]
	return scheme, known
}

// parseServerURL parses a URL of one TCP server.
func parseServerURL(rawURL, scheme string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("testenv: a %s URL that does not parse", scheme) // url's error would quote the password
	}
	if u.Hostname() == "" || strings.Contains(u.Host, ",") {
		return nil, fmt.Errorf("testenv: the %s URL must name one TCP host", scheme)
	}
	if q := u.Query(); q.Has("host") || q.Has("hostaddr") || q.Has("port") || q.Has("addr") {
		return nil, fmt.Errorf("testenv: the %s URL names its host in an option; a proxy needs it in the authority", scheme)
	}
	return u, nil
}

// PostgresProxy is Postgres behind a Proxy: a new database private to the
// test, the DSN that reaches it through the proxy, and the proxy (closed
// when the test is done). testenv's own setup and cleanup go straight to
// the server, so a cut proxy cannot keep the database from being dropped.
func PostgresProxy(t testing.TB) (dsn string, p *Proxy) {
	t.Helper()
	direct := Postgres(t)
	return proxied(t, direct)
}

// RedisProxy is Redis behind a Proxy: the URL of the server through a new
// proxy, the key prefix only this test uses (see Redis), and the proxy
// (closed when the test is done).
func RedisProxy(t testing.TB) (redisURL, prefix string, p *Proxy) {
	t.Helper()
	direct, prefix := Redis(t)
	redisURL, p = proxied(t, direct)
	return redisURL, prefix, p
}

func proxied(t testing.TB, direct string) (string, *Proxy) {
	t.Helper()
	target, err := HostPort(direct)
	if err != nil {
		t.Fatal(err)
	}
	p := NewProxy(t, target)
	via, err := WithHostPort(direct, p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	return via, p
}
