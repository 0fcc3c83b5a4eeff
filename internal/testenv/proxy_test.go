package testenv_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/relaystation/relay/internal/testenv"
)

// echoServer answers every line with itself, until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// echo sends msg on c and reads it back, within a deadline.
func echo(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echoed %q, want %q", buf, msg)
	}
	return nil
}

// dialEcho dials addr and echoes msg: the whole round trip a client of a
// refusing proxy may fail at any step of (the reset can arrive during
// connect on loopback).
func dialEcho(addr, msg string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	return echo(c, msg)
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitLive polls until n connections are open through p.
func waitLive(t *testing.T, p *testenv.Proxy, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Live() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections through the proxy, want %d", p.Live(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestProxyCutAndRestore(t *testing.T) {
	target := echoServer(t)
	p := testenv.NewProxy(t, target)
	assert.Equal(t, target, p.Target())
	assert.True(t, strings.HasPrefix(p.Addr(), "127.0.0.1:"), p.Addr())

	before := dial(t, p.Addr())
	require.NoError(t, echo(before, "hello\n"))
	waitLive(t, p, 1)

	p.Cut()
	// The live connection is closed under the client's feet…
	_ = before.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := before.Read(make([]byte, 1))
	require.Error(t, err)
	assert.False(t, isTimeout(err), "a cut connection must end, not hang: %v", err)
	assert.Zero(t, p.Live())
	// …and a new one is refused (accepted, then reset), not forwarded.
	err = dialEcho(p.Addr(), "anyone?\n")
	require.Error(t, err)
	assert.False(t, isTimeout(err), "a refused connection must fail at once: %v", err)
	p.Cut() // twice is harmless

	p.Restore()
	after := dial(t, p.Addr())
	require.NoError(t, echo(after, "back\n"))
	waitLive(t, p, 1)

	require.NoError(t, p.Close())
	require.NoError(t, p.Close(), "Close twice")
	assert.Error(t, echo(after, "gone\n"), "Close ends the connections")
	if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c.Close()
		t.Error("a closed proxy still accepts connections")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestProxyTargetDown: a client of a proxy whose target is not there fails
// at once, as it would without the proxy.
func TestProxyTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	target := ln.Addr().String()
	require.NoError(t, ln.Close())
	p := testenv.NewProxy(t, target)
	err = dialEcho(p.Addr(), "x")
	require.Error(t, err)
	assert.False(t, isTimeout(err), "%v", err)
}

// TestProxyConcurrent cuts and restores while clients come and go; run with
// -race. Afterwards the proxy works and Close returns.
func TestProxyConcurrent(t *testing.T) {
	p := testenv.NewProxy(t, echoServer(t))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var okMu sync.Mutex
	ok := 0
	for i := range 8 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				err := dialEcho(p.Addr(), fmt.Sprintf("%d-%d\n", i, n))
				if isTimeout(err) {
					t.Error("a cut or refused connection hung:", err)
					return
				}
				if err == nil {
					okMu.Lock()
					ok++
					okMu.Unlock()
				}
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			p.Cut()
			_ = p.Live()
			time.Sleep(time.Millisecond)
			p.Restore()
			time.Sleep(time.Millisecond)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		okMu.Lock()
		n := ok
		okMu.Unlock()
		if n >= 100 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	p.Restore()
	require.NoError(t, echo(dial(t, p.Addr()), "still works\n"))
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
}

func TestHostPort(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "127.0.0.1:5432"},
		{"postgresql://u:p%40ss@db.example:6543/x", "db.example:6543"},
		{"postgres://u@db.example/x", "db.example:5432"},
		{"postgres://u@[::1]:5433/x", "[::1]:5433"},
		{"host=db.example port=6000 user=u dbname=x sslmode=disable", "db.example:6000"},
		{"host=db.example user=u dbname=x", "db.example:5432"}, // sslmode=prefer: a fallback to the same host
		{"redis://:secret@127.0.0.1:6379/0", "127.0.0.1:6379"},
		{"redis://cache.example/2", "cache.example:6379"},
		{"rediss://u:p@cache.example:7000", "cache.example:7000"},
	}
	for _, tt := range tests {
		got, err := testenv.HostPort(tt.in)
		if assert.NoError(t, err, tt.in) {
			assert.Equal(t, tt.want, got, tt.in)
		}
	}
	for _, bad := range []string{
		"postgres://u:hunter2@h1:5432,h2:5432/x",
		"postgres://u:hunter2@/x?host=/var/run/postgresql",
		"host=/var/run/postgresql user=u password=hunter2",
		"host=h1,h2 user=u password=hunter2",
		"host=h hostaddr=10.0.0.1 password=hunter2",
		"redis://:hunter2@/0",
		"redis://:hunter2@h:6379/0?addr=other:6379",
		"postgres://u:hunter2@h:port/x",
	} {
		_, err := testenv.HostPort(bad)
		if assert.Error(t, err, bad) {
			assert.NotContains(t, err.Error(), "hunter2", "an error quoted the password")
		}
	}
}

func TestWithHostPort(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "postgres://postgres@127.0.0.1:40001/test?sslmode=disable"},
		{"postgres://u:p%40ss@db.example/x", "postgres://u:p%40ss@127.0.0.1:40001/x"},
		{"host=db.example port=6000 dbname=x", "host=db.example port=6000 dbname=x host=127.0.0.1 port=40001"},
		{"redis://:secret@10.0.0.7:6379/3?dial_timeout=1s", "redis://:secret@127.0.0.1:40001/3?dial_timeout=1s"},
	}
	for _, tt := range tests {
		got, err := testenv.WithHostPort(tt.in, "127.0.0.1:40001")
		if assert.NoError(t, err, tt.in) {
			assert.Equal(t, tt.want, got)
			hp, err := testenv.HostPort(got)
			assert.NoError(t, err)
			assert.Equal(t, "127.0.0.1:40001", hp, "the rewritten DSN connects to the new address")
		}
	}
	_, err := testenv.WithHostPort("postgres://u@h/x", "no port")
	assert.Error(t, err)
	_, err = testenv.WithHostPort("postgres://u:hunter2@h1,h2/x", "127.0.0.1:1")
	assert.Error(t, err)
}

// TestPostgresProxy: a connection through the proxy works, dies on Cut, and
// a new one works after Restore; the database is still dropped at the end.
func TestPostgresProxy(t *testing.T) {
	dsn, p := testenv.PostgresProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var one int
	require.NoError(t, conn.QueryRow(ctx, "SELECT 1").Scan(&one))
	assert.Equal(t, 1, p.Live())

	p.Cut()
	assert.Error(t, conn.QueryRow(ctx, "SELECT 1").Scan(&one), "a query on a cut connection")
	_, err = pgx.Connect(ctx, dsn)
	assert.Error(t, err, "a new connection while cut")

	p.Restore()
	again, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer again.Close(context.Background())
	require.NoError(t, again.QueryRow(ctx, "SELECT 1").Scan(&one))
}

func TestRedisProxy(t *testing.T) {
	url, prefix, p := testenv.RedisProxy(t)
	opts, err := redis.ParseURL(url)
	require.NoError(t, err)
	opts.MaxRetries = -1
	client := redis.NewClient(opts)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, client.Set(ctx, prefix+"k", "v", time.Minute).Err())

	p.Cut()
	assert.Error(t, client.Get(ctx, prefix+"k").Err(), "a command while cut")
	assert.Error(t, client.Get(ctx, prefix+"k").Err(), "a command on a new connection while cut")

	p.Restore()
	v, err := client.Get(ctx, prefix+"k").Result()
	require.NoError(t, err)
	assert.Equal(t, "v", v)
}
