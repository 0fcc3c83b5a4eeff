package upstream_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/relaystation/relay/upstream"
)

// An upstream marked h2c gets HTTP/2 without TLS, and concurrent
// requests share one connection instead of opening one each.
func TestH2CUpstream(t *testing.T) {
	var conns atomic.Int64
	release := make(chan struct{})
	var mu sync.Mutex
	gate := func() chan struct{} { mu.Lock(); defer mu.Unlock(); return release }
	var arrived sync.WaitGroup
	const n = 20
	arrived.Add(n + 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			http.Error(w, "want HTTP/2, got "+r.Proto, http.StatusHTTPVersionNotSupported)
			return
		}
		arrived.Done()
		<-gate() // all n requests are open at once
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	p, err := upstream.NewPool(upstream.PoolConfig{Upstreams: []upstream.Config{{Name: "h2c", BaseURL: srv.URL, Credential: "k", H2C: true}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	var wg sync.WaitGroup
	send := func() {
		req, _ := http.NewRequest("POST", "http://relay/v1/messages", nil)
		res, err := p.Do(t.Context(), upstream.Call{Client: req, Body: []byte(`{}`)})
		if err != nil {
			t.Error(err)
			return
		}
		defer res.Release(upstream.Outcome{})
		b, _ := io.ReadAll(res.Response.Body)
		if res.Response.StatusCode != 200 || !strings.Contains(string(b), "ok") {
			t.Errorf("status %d: %s", res.Response.StatusCode, b)
		}
	}
	// One request first: requests that all find no connection yet may
	// each dial one.
	close(gate())
	send()
	mu.Lock()
	release = make(chan struct{})
	mu.Unlock()
	for range n {
		wg.Go(send)
	}
	arrived.Wait()
	close(gate())
	wg.Wait()
	if c := conns.Load(); c != 1 {
		t.Errorf("%d requests open at once used %d connections, want 1", n, c)
	}
}
