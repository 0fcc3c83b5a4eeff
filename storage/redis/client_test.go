package redis_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/relaystation/relay/internal/testenv"
	redisstore "github.com/relaystation/relay/storage/redis"
)

// connectTestRedis returns a client made by NewClient from the test
// Redis's URL, and a key prefix private to tb.
func connectTestRedis(tb testing.TB) (goredis.UniversalClient, string) {
	tb.Helper()
	url, prefix := testenv.Redis(tb)
	client, err := redisstore.NewClient(url)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = client.Close() })
	return client, prefix
}

func TestNewClient(t *testing.T) {
	ctx := t.Context()
	client, prefix := connectTestRedis(t)
	require.NoError(t, client.Ping(ctx).Err())
	require.NoError(t, client.Set(ctx, prefix+"k", "v", time.Minute).Err())
	assert.Equal(t, "v", client.Get(ctx, prefix+"k").Val())

	t.Run("password is sent, never shown", func(t *testing.T) {
		// A fake server that takes the login and refuses it.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		first := make(chan string, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			buf := make([]byte, 4096)
			n, _ := c.Read(buf)
			first <- string(buf[:n])
			_, _ = c.Write([]byte("-WRONGPASS invalid username-password pair\r\n"))
		}()
		const secret = "wr0ng-Pa55word"
		client, err := redisstore.NewClient("redis://:" + secret + "@" + ln.Addr().String() + "/0?max_retries=-1")
		require.NoError(t, err)
		defer client.Close()
		err = client.Ping(ctx).Err()
		require.Error(t, err)
		assert.NotContains(t, err.Error(), secret)
		select {
		case cmd := <-first:
			assert.Contains(t, cmd, secret, "the first command logs in")
		case <-time.After(5 * time.Second):
			t.Fatal("no connection")
		}
	})
}

// ExampleNewClient connects with the URL form of the original design: a
// password-only login to database 0.
func ExampleNewClient() {
	client, err := redisstore.NewClient("redis://:123456@localhost:16379/0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	fmt.Println(redisstore.RedactURL("redis://:123456@localhost:16379/0"))

	_, err = redisstore.NewClient("redis://:123456@localhost:port/0")
	fmt.Println(err)
	// Output:
	// redis://:xxxxx@localhost:16379/0
	// redis: URL redis://:xxxxx@localhost:port/0: host "localhost:port": invalid port
}

// proxy is a TCP proxy to the test Redis that a test can break (close
// every connection) and block (refuse new ones): a Redis outage without
// touching the shared server.
type proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	blocked bool
	conns   map[net.Conn]bool
	wg      sync.WaitGroup
}

// newProxy starts a proxy to the test Redis and returns it with the URL
// of the Redis through it.
func newProxy(t *testing.T) (*proxy, string) {
	t.Helper()
	redisURL, _ := testenv.Redis(t)
	opts, err := goredis.ParseURL(redisURL)
	require.NoError(t, err)
	if opts.Network != "tcp" || opts.TLSConfig != nil {
		t.Skip("the test Redis is not on plain TCP")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: opts.Addr, conns: make(map[net.Conn]bool)}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		_ = ln.Close()
		p.breakAll()
		p.wg.Wait()
	})
	// The same URL, with the proxy's address: the login, database and
	// options stay.
	u, err := url.Parse(redisURL)
	require.NoError(t, err)
	u.Host = ln.Addr().String()
	return p, u.String()
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.blocked {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.mu.Unlock()
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
		}
		p.wg.Go(func() { pipe(up, c) })
		p.wg.Go(func() { pipe(c, up) })
	}
}

// breakAll closes every connection through the proxy.
func (p *proxy) breakAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// block makes the proxy refuse (accept and close) new connections, or
// serve them again.
func (p *proxy) block(on bool) {
	p.mu.Lock()
	p.blocked = on
	p.mu.Unlock()
}

// refusedURL is the URL of a Redis that is never there.
func refusedURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return "redis://" + addr + "/0?dial_timeout=200ms&max_retries=-1"
}

func TestProxy(t *testing.T) {
	p, url := newProxy(t)
	client, err := redisstore.NewClient(url)
	require.NoError(t, err)
	defer client.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	require.NoError(t, client.Ping(ctx).Err())
	p.block(true)
	p.breakAll()
	require.Error(t, client.Ping(ctx).Err())
	p.block(false)
	require.NoError(t, client.Ping(ctx).Err())
}
