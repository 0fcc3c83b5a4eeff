package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relaystation/relay"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/quota"
	"github.com/relaystation/relay/storage/memory"
	"github.com/relaystation/relay/storage/postgres"
	redisstore "github.com/relaystation/relay/storage/redis"
	"github.com/relaystation/relay/storage/sqlite"
	"github.com/relaystation/relay/upstream"
	"github.com/relaystation/relay/upstream/upstreamtest"
	"github.com/relaystation/relay/usage"
)

// upstreamKey is the "real" Anthropic key: the fake demands it, so a
// proxy that fails to swap the client's key shows up as 401 errors.
const upstreamKey = "sk-ant-api03-loadtest-upstream-credential"

// delayPath is the upstream child's control endpoint: POST ?d=5ms sets
// the fake's event delay for every following stream (0 clears it). Only
// the load generator calls it, directly; the proxies never forward it.
const delayPath = "/loadtest/event-delay"

// envPostgres and envRedis pass -postgres-url and -redis-url to the relay
// child: in its environment rather than its command line, where anyone
// could read a password.
const (
	envPostgres = "RELAY_LOADTEST_POSTGRES_URL"
	envRedis    = "RELAY_LOADTEST_REDIS_URL"
)

// serve runs one server child: `loadtest serve-upstream|serve-bare|
// serve-relay ADDR [flags]`. It prints "ready ADDR [KEY]" on stdout once it
// listens and runs until its stdin closes (the parent ended or said stop).
func serve(kind string, args []string) error {
	fs := flag.NewFlagSet(kind, flag.ContinueOnError)
	upURL := fs.String("upstream", "", "upstream base URL (bare, relay)")
	deltas := fs.Int("deltas", 16, "text_delta events per stream (upstream)")
	mode := fs.String("mode", "embedded", "relay storage: embedded, postgres ($"+envPostgres+", $"+envRedis+") or memory")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of this server to `file`")
	h2c := fs.Bool("h2c", false, "speak HTTP/2 without TLS to the upstream (bare, relay)")
	if len(args) < 1 {
		return errors.New("usage: loadtest " + kind + " ADDR [flags]")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}

	ready := "ready " + ln.Addr().String()
	var h http.Handler
	var stop func(context.Context) error
	switch kind {
	case "serve-upstream":
		h = fakeUpstream(*deltas)
	case "serve-bare":
		if h, err = bareProxy(*upURL, *h2c); err != nil {
			return err
		}
	case "serve-relay":
		var key string
		if h, key, stop, err = relayServer(*upURL, *mode, *h2c); err != nil {
			return err
		}
		ready += " " + key
	default:
		return fmt.Errorf("unknown server %q", kind)
	}

	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: discardLog()}
	// Every server also takes h2c (-upstream-h2c); clients of HTTP/1.1
	// see no difference.
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	shut := make(chan struct{})
	go func() {
		defer close(shut)
		_, _ = io.Copy(io.Discard, os.Stdin) // EOF: the parent is done or gone
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		srv.Close() // streams still open after the grace period
	}()
	fmt.Println(ready)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	<-shut // Serve returns at once; Shutdown is still waiting for handlers
	if stop != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return stop(ctx)
	}
	return nil
}

// fakeUpstream is the fake Anthropic API plus the event-delay control.
func fakeUpstream(deltas int) http.Handler {
	deltas = max(deltas, 1)
	fake := upstreamtest.NewUnstarted(upstreamtest.Config{
		APIKey:     upstreamKey,
		DontRecord: true,
		Deltas:     deltas,
		Text:       strings.Repeat("word ", deltas),
	})
	api := fake.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != delayPath {
			api.ServeHTTP(w, r)
			return
		}
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil || d < 0 {
			http.Error(w, "bad d", http.StatusBadRequest)
			return
		}
		if d == 0 {
			fake.ClearFaults()
		} else {
			fake.SetDefault(upstreamtest.Fault{EventDelay: d})
		}
	})
}

// bareProxy is the calibration point: a reverse proxy that only swaps the
// client's key for the upstream one, on a transport tuned as a careful
// operator would (large keep-alive pool, pooled copy buffers, every write
// flushed at once).
func bareProxy(upstreamURL string, h2c bool) (http.Handler, error) {
	target, err := url.Parse(upstreamURL)
	if err != nil || target.Host == "" {
		return nil, fmt.Errorf("bare proxy: bad upstream URL %q", upstreamURL)
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	if h2c {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Del("Authorization")
			pr.Out.Header["X-Api-Key"] = []string{upstreamKey}
		},
		Transport:     tr,
		FlushInterval: -1,
		BufferPool:    newBufferPool(32 << 10),
		ErrorLog:      log.New(os.Stderr, "bare: ", 0),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Without full duplex, writing the response headers makes the
		// server drain and close the request body, and a transport still
		// checking that body for EOF then fails and closes the upstream
		// connection mid-stream: a fast upstream answers before the
		// request is quite done. (The relay reads the body first.)
		_ = http.NewResponseController(w).EnableFullDuplex()
		rp.ServeHTTP(w, r)
	}), nil
}

// relayServer is the relay under test with auth, a token limit on the key
// and usage recording. stop closes the relay (flushing usage records) and
// reports on stdout how many records were written.
func relayServer(upstreamURL, mode string, h2c bool) (h http.Handler, key string, stop func(context.Context) error, err error) {
	ctx := context.Background()
	st, cleanup, err := openStore(ctx, mode, os.Getenv(envPostgres))
	if err != nil {
		return nil, "", nil, err
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	cfg := relay.Config{
		Upstreams:  []upstream.Config{{Name: "fake", BaseURL: upstreamURL, Credential: upstreamKey, H2C: h2c}},
		Keys:       st,
		Usage:      st,
		BcryptCost: 4,
	}
	if u := os.Getenv(envRedis); mode == "postgres" && u != "" {
		closeRedis, err := useRedis(ctx, &cfg, st, u)
		if err != nil {
			return nil, "", nil, err
		}
		storeCleanup := cleanup
		cleanup = func() { closeRedis(); storeCleanup() }
	}
	rl, err := relay.New(cfg)
	if err != nil {
		return nil, "", nil, err
	}
	// A limit far from reach, so the quota check runs on every request.
	if _, key, err = rl.Keys().Create(ctx, keys.CreateParams{Name: "loadtest", TokenLimit: 1 << 60}); err != nil {
		return nil, "", nil, err
	}
	stop = func(ctx context.Context) error {
		defer cleanup()
		if err := rl.Close(ctx); err != nil {
			return err
		}
		t, err := st.Totals(ctx, usage.Filter{})
		if err != nil {
			return err
		}
		fmt.Printf("records %d %d\n", t.Requests, t.Errors)
		return nil
	}
	return rl.Handler(), key, stop, nil
}

// useRedis puts the relay's limiter and key-change events on Redis, as
// several instances run, under a key prefix of this run's own; the
// returned cleanup deletes the keys under it and closes the client.
func useRedis(ctx context.Context, cfg *relay.Config, st store, redisURL string) (func(), error) {
	rc, err := redisstore.NewClient(redisURL)
	if err != nil {
		return nil, err
	}
	if err := rc.Ping(ctx).Err(); err != nil {
		rc.Close()
		return nil, fmt.Errorf("redis: %w", err)
	}
	prefix := "relay_loadtest:" + randomHex(6) + ":"
	q := quota.Config{Seed: relay.SeedFromUsage(st, 0)}
	cfg.Quota = q
	cfg.Limiter = redisstore.NewLimiter(rc, q, redisstore.LimiterOptions{Prefix: prefix + "quota:"})
	inv := redisstore.NewInvalidator(rc, prefix, nil)
	cfg.KeyEvents = inv
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = inv.Close(ctx)
		var cursor uint64
		for range 10000 { // bounded: 10,000 pages of 1,000 keys
			keys, next, err := rc.Scan(ctx, cursor, prefix+"*", 1000).Result()
			if err != nil {
				break
			}
			if len(keys) > 0 {
				rc.Unlink(ctx, keys...)
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
		rc.Close()
	}, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// store is what the relay needs from a backend.
type store interface {
	keys.Store
	usage.Store
}

// openStore opens the relay's stores for a mode, in a place of their own
// that cleanup removes: a temporary directory for SQLite, a temporary
// database on the server for Postgres.
func openStore(ctx context.Context, mode, pgURL string) (store, func(), error) {
	switch mode {
	case "embedded":
		dir, err := os.MkdirTemp("", "relay-loadtest-")
		if err != nil {
			return nil, nil, err
		}
		st, err := sqlite.Open(ctx, filepath.Join(dir, "relay.db"))
		if err != nil {
			os.RemoveAll(dir)
			return nil, nil, err
		}
		return st, func() { st.Close(); os.RemoveAll(dir) }, nil
	case "postgres":
		return openPostgres(ctx, pgURL)
	case "memory":
		// Not a deployment: it tells the request path's cost from the
		// store's.
		return memory.New(), func() {}, nil
	}
	return nil, nil, fmt.Errorf("unknown -mode %q (embedded, postgres or memory)", mode)
}

// openPostgres creates relay_loadtest_<random> on the server at base (a
// postgres:// URL whose user may create databases) and opens the store on
// it; cleanup drops it.
func openPostgres(ctx context.Context, base string) (store, func(), error) {
	if base == "" {
		return nil, nil, errors.New("-mode postgres needs -postgres-url or $RELAY_TEST_POSTGRES_URL")
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, nil, errors.New("-postgres-url must be a postgres:// URL")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: %w", err)
	}
	defer admin.Close(context.Background())
	name := "relay_loadtest_" + randomHex(6)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE template0"); err != nil {
		return nil, nil, fmt.Errorf("postgres: %w", err)
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, base); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	}
	q := u.Query()
	q.Del("dbname")
	u.Path, u.RawPath, u.RawQuery = "/"+name, "", q.Encode()
	st, err := postgres.Open(ctx, u.String())
	if err != nil {
		drop()
		return nil, nil, err
	}
	return st, func() { st.Close(); drop() }, nil
}

// bufferPool hands out copy buffers to httputil.ReverseProxy.
type bufferPool struct{ p sync.Pool }

func newBufferPool(size int) *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, size); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *b.p.Get().(*[]byte) }
func (b *bufferPool) Put(p []byte) { b.p.Put(&p) }

// readyLine waits for a child's "ready ADDR [KEY]" line.
func readyLine(sc *bufio.Scanner, timeout time.Duration) ([]string, error) {
	got := make(chan []string, 1)
	go func() {
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "ready" {
				got <- f[1:]
				return
			}
		}
		close(got)
	}()
	select {
	case f, ok := <-got:
		if !ok {
			return nil, errors.New("exited before it was ready")
		}
		return f, nil
	case <-time.After(timeout):
		return nil, errors.New("not ready in time")
	}
}

// discardLog silences net/http's own logging (a client hanging up on a
// stream is expected here, not news).
func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }
