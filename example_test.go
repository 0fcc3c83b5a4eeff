package relay_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/relaystation/relay"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/storage/memory"
	"github.com/relaystation/relay/upstream/upstreamtest"
	"github.com/relaystation/relay/usage"
)

// A relay in front of a (fake) Anthropic API: issue a key, send a message
// with it, read the usage back.
func ExampleNew() {
	anthropicAPI := upstreamtest.New(upstreamtest.Config{APIKey: "sk-ant-real"})
	defer anthropicAPI.Close()

	store := memory.New()
	rl, err := relay.New(relay.Config{
		UpstreamURL:        anthropicAPI.URL,
		UpstreamCredential: "sk-ant-real",
		Keys:               store,
		Usage:              store,
	})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(rl.Handler())
	defer srv.Close()

	k, plaintext, _ := rl.Keys().Create(context.Background(), keys.CreateParams{Name: "alice", TokenLimit: 1_000_000})

	req, _ := http.NewRequest("POST", srv.URL+"/v1/messages", strings.NewReader(
		`{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hello"}]}`))
	req.Header.Set("x-api-key", plaintext)
	req.Header.Set("anthropic-version", "2023-06-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fmt.Println("status:", resp.StatusCode)

	// Close waits for running requests and writes pending usage records.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = rl.Close(ctx)
	t, _ := store.Totals(context.Background(), usage.Filter{KeyID: k.ID})
	fmt.Println("requests:", t.Requests)
	fmt.Println("input:", t.Usage.InputTokens, "output:", t.Usage.OutputTokens,
		"cache write:", t.Usage.CacheCreationInputTokens, "cache read:", t.Usage.CacheReadInputTokens)
	// Output:
	// status: 200
	// requests: 1
	// input: 25 output: 15 cache write: 30 cache read: 40
}

// The proxy mounted under a prefix of a host's own mux; clients use the
// prefix as their ANTHROPIC_BASE_URL.
func ExampleRelay_ProxyHandler() {
	anthropicAPI := upstreamtest.New(upstreamtest.Config{})
	defer anthropicAPI.Close()
	store := memory.New()
	rl, _ := relay.New(relay.Config{UpstreamURL: anthropicAPI.URL, UpstreamCredential: "sk-ant-real", Keys: store, Usage: store})
	defer rl.Close(context.Background())

	mux := http.NewServeMux()
	mux.Handle("/claude/", http.StripPrefix("/claude", rl.ProxyHandler()))
	mux.Handle("/claude/v1/usage", http.StripPrefix("/claude", rl.UsageHandler()))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "the host's own page") })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	_, key, _ := rl.Keys().Create(context.Background(), keys.CreateParams{Name: "bob"})
	req, _ := http.NewRequest("GET", srv.URL+"/claude/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, _ := http.DefaultClient.Do(req)
	resp.Body.Close()
	fmt.Println("GET /claude/v1/models:", resp.StatusCode)

	resp, _ = http.Get(srv.URL + "/claude/v1/models")
	resp.Body.Close()
	fmt.Println("without a key:", resp.StatusCode)
	// Output:
	// GET /claude/v1/models: 200
	// without a key: 401
}
