package upstream_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"time"

	"github.com/relaystation/relay/upstream"
	"github.com/relaystation/relay/upstream/upstreamtest"
)

// A pool of two accounts: the primary is rate-limited, so the call moves
// to the backup before anything reached the client, and the primary sits
// out the retry-after for that model only.
func Example() {
	primary := upstreamtest.New(upstreamtest.Config{})
	defer primary.Close()
	backup := upstreamtest.New(upstreamtest.Config{})
	defer backup.Close()

	pool, err := upstream.NewPool(upstream.PoolConfig{
		Upstreams: []upstream.Config{
			{Name: "primary", BaseURL: primary.URL, Credential: "sk-ant-primary", Priority: 1},
			{Name: "backup", BaseURL: backup.URL, Credential: "sk-ant-backup"},
		},
		Retry: upstream.RetryPolicy{Base: 10 * time.Millisecond},
	})
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	primary.Enqueue(upstreamtest.Fault{Status: 429, RetryAfter: 30 * time.Second})

	// The relay passes the client's request (method, query, headers), its
	// copy of the body, and what it sniffed from the body.
	client := httptest.NewRequest("POST", "/v1/messages?beta=true", nil)
	client.Header.Set("anthropic-version", "2023-06-01")
	client.Header.Set("x-claude-code-session-id", "7f9e0c1a")
	body := []byte(`{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hi"}]}`)
	res, err := pool.Do(context.Background(), upstream.Call{
		Client:      client,
		Body:        body,
		Model:       "claude-sonnet-4-5",
		AffinityKey: upstream.AffinityKey(client.Header, "", "key_123"),
	})
	if err != nil {
		panic(err) // the relay answers upstream.MapError(err)
	}
	n, _ := io.Copy(io.Discard, res.Response.Body) // the relay streams it to the client
	res.Release(upstream.Outcome{InputTokens: 25, OutputTokens: 15})
	fmt.Println(res.Response.StatusCode, res.Upstream, res.Attempts, n > 0)

	for _, s := range pool.Status() {
		fmt.Println(s.Name, s.State, s.Requests, s.Errors, len(s.ModelCooldowns), s.OutputTokens)
	}
	// Output:
	// 200 backup 2 true
	// primary healthy 1 1 1 0
	// backup healthy 1 0 0 15
}
