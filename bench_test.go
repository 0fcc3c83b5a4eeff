package relay_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/relaystation/relay"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/quota"
	"github.com/relaystation/relay/storage/memory"
	"github.com/relaystation/relay/upstream/upstreamtest"
)

// BenchmarkRelay measures one whole request through the relay's handler
// (key check, quota reserve and settle, forwarding, usage extraction and
// recording on storage/memory) against the fake upstream, beside the same
// request sent to the fake directly and through a bare reverse proxy: the
// difference from bare is what the relay's work costs, in time and in
// allocations. Client, relay and fake share the
// process, so the absolute numbers include the fake's own work; the load
// tool (internal/cmd/loadtest) measures them in separate processes.
func BenchmarkRelay(b *testing.B) {
	fake := upstreamtest.New(upstreamtest.Config{APIKey: upstreamKey})
	b.Cleanup(fake.Close)
	store := memory.New()
	rl, err := relay.New(relay.Config{
		UpstreamURL: fake.URL, UpstreamCredential: upstreamKey,
		Keys: store, Usage: store, BcryptCost: 4,
		Logger: slog.New(slog.DiscardHandler),
		Quota:  quota.Config{},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = rl.Close(ctx)
	})
	srv := httptest.NewServer(rl.Handler())
	b.Cleanup(srv.Close)
	_, key, err := rl.Keys().Create(context.Background(), keys.CreateParams{Name: "bench", TokenLimit: 1 << 50})
	if err != nil {
		b.Fatal(err)
	}
	// The calibration point of the load tool: a reverse proxy that only
	// swaps the key.
	target, _ := url.Parse(fake.URL)
	bare := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Header.Set("x-api-key", upstreamKey)
		},
		Transport:     &http.Transport{MaxIdleConnsPerHost: 64},
		FlushInterval: -1,
	})
	b.Cleanup(bare.Close)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for _, bm := range []struct {
		name, base, key, body string
	}{
		{"message/direct", fake.URL, upstreamKey, jsonBody},
		{"message/bare", bare.URL, key, jsonBody},
		{"message/relay", srv.URL, key, jsonBody},
		{"stream/direct", fake.URL, upstreamKey, streamBody},
		{"stream/bare", bare.URL, key, streamBody},
		{"stream/relay", srv.URL, key, streamBody},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest("POST", bm.base+"/v1/messages", strings.NewReader(bm.body))
				req.Header.Set("x-api-key", bm.key)
				req.Header.Set("content-type", "application/json")
				req.Header.Set("anthropic-version", "2023-06-01")
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}
