package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/relaystation/relay"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/quota"
	"github.com/relaystation/relay/storage/memory"
	"github.com/relaystation/relay/upstream"
	"github.com/relaystation/relay/upstream/upstreamtest"
	"github.com/relaystation/relay/usage"
)

const upstreamKey = "sk-ant-upstream-secret-0123456789"

// regexpKey matches a whole relay key, whichever test minted it.
var regexpKey = regexp.MustCompile(`sk-proxy-[0-9A-Za-z]{52}`)

type env struct {
	t     *testing.T
	fake  *upstreamtest.Server
	store *memory.Store
	relay *relay.Relay
	srv   *httptest.Server
	key   string
	keyID string
	logs  *syncBuffer
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newEnv(t *testing.T, fcfg upstreamtest.Config, mod ...func(*relay.Config)) *env {
	t.Helper()
	fcfg.APIKey = upstreamKey
	e := &env{t: t, fake: upstreamtest.New(fcfg), store: memory.New(), logs: &syncBuffer{}}
	t.Cleanup(e.fake.Close)
	cfg := relay.Config{
		UpstreamURL:        e.fake.URL,
		UpstreamCredential: upstreamKey,
		Keys:               e.store,
		Usage:              e.store,
		BcryptCost:         4,
		AdminPassword:      "admin-password-for-tests",
		Logger:             slogTo(e.logs),
	}
	for _, m := range mod {
		m(&cfg)
	}
	rl, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.relay = rl
	e.srv = httptest.NewServer(rl.Handler())
	t.Cleanup(func() {
		e.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := rl.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		logs := e.logs.String()
		for _, secret := range []string{e.key, upstreamKey, "admin-password-for-tests", "eyJhbGciOi"} {
			if secret != "" && strings.Contains(logs, secret) {
				t.Errorf("a secret reached the log: %.12s…", secret)
			}
		}
		if strings.Contains(logs, keys.Prefix) && strings.Contains(logs, "sk-proxy-") && regexpKey.MatchString(logs) {
			t.Errorf("a relay key reached the log")
		}
	})
	e.key, e.keyID = e.mint(keys.CreateParams{Name: "test"})
	return e
}

func (e *env) mint(p keys.CreateParams) (string, string) {
	e.t.Helper()
	k, plain, err := e.relay.Keys().Create(context.Background(), p)
	if err != nil {
		e.t.Fatal(err)
	}
	return plain, k.ID
}

func (e *env) client(opts ...option.RequestOption) *anthropic.Client {
	c := anthropic.NewClient(append([]option.RequestOption{
		option.WithBaseURL(e.srv.URL), option.WithAPIKey(e.key), option.WithMaxRetries(0),
		option.WithRequestTimeout(20 * time.Second),
	}, opts...)...)
	return &c
}

// waitTotals polls the store until the key's totals have n requests; the
// recorder writes asynchronously.
func (e *env) waitTotals(keyID string, n int64) usage.Totals {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		tot, err := e.store.Totals(context.Background(), usage.Filter{KeyID: keyID})
		if err != nil {
			e.t.Fatal(err)
		}
		if tot.Requests >= n || time.Now().After(deadline) {
			if tot.Requests != n {
				e.t.Fatalf("recorded %d requests, want %d", tot.Requests, n)
			}
			return tot
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) records(keyID string) []usage.Record {
	e.t.Helper()
	recs, _, err := e.store.ListRecords(context.Background(), usage.Filter{KeyID: keyID}, "", 100)
	if err != nil {
		e.t.Fatal(err)
	}
	return recs
}

func wantUsage(u upstreamtest.Usage) usage.Usage {
	return usage.Usage{
		InputTokens: u.InputTokens, OutputTokens: u.OutputTokens,
		CacheCreationInputTokens: u.CacheCreationInputTokens, CacheReadInputTokens: u.CacheReadInputTokens,
		CacheCreation5m: u.CacheCreation5m, CacheCreation1h: u.CacheCreation1h,
		WebSearchRequests: u.WebSearchRequests, WebFetchRequests: u.WebFetchRequests,
	}
}

func params() anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     "claude-sonnet-4-5",
		MaxTokens: 64000,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hello, Claude"))},
	}
}

// checkForwarded asserts what the upstream saw: its own key, never the
// relay key, anywhere.
func (e *env) checkForwarded() upstreamtest.ReceivedRequest {
	e.t.Helper()
	r, ok := e.fake.LastRequest()
	if !ok {
		e.t.Fatal("the upstream saw no request")
	}
	if got := r.Header.Get("X-Api-Key"); got != upstreamKey {
		e.t.Errorf("upstream x-api-key = %q, want the upstream key", got)
	}
	for name, vv := range r.Header {
		for _, v := range vv {
			if strings.Contains(v, e.key) {
				e.t.Errorf("relay key reached the upstream in header %s", name)
			}
		}
	}
	if bytes.Contains(r.Body, []byte(e.key)) {
		e.t.Error("relay key reached the upstream in the body")
	}
	return r
}

func TestSDKMessage(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{})
	m, err := e.client().Messages.New(context.Background(), params())
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Content) != 1 || m.Content[0].Text != e.fake.Text() {
		t.Fatalf("content = %+v", m.Content)
	}
	want := wantUsage(e.fake.ExpectedUsage())
	if m.Usage.InputTokens != want.InputTokens || m.Usage.CacheReadInputTokens != want.CacheReadInputTokens {
		t.Errorf("client saw usage %s", m.Usage.RawJSON())
	}
	r := e.checkForwarded()
	if r.Path != "/v1/messages" || r.Header.Get("Anthropic-Version") == "" {
		t.Errorf("forwarded %s with headers %v", r.Path, r.Header)
	}
	tot := e.waitTotals(e.keyID, 1)
	if tot.Usage != want {
		t.Errorf("recorded usage %+v\nwant %+v", tot.Usage, want)
	}
	rec := e.records(e.keyID)[0]
	if rec.Usage.ServiceTier != e.fake.ExpectedUsage().ServiceTier {
		t.Errorf("service tier %q", rec.Usage.ServiceTier)
	}
	if rec.Stream || rec.Status != 200 || rec.Estimated || rec.Model != "claude-sonnet-4-5" || rec.ResponseModel != "claude-sonnet-4-5" || rec.CostUSD <= 0 {
		t.Errorf("record = %+v", rec)
	}
	price, _ := usage.DefaultPricing().Lookup("claude-sonnet-4-5")
	if d := rec.CostUSD - price.Cost(want); d > 1e-12 || d < -1e-12 {
		t.Errorf("cost %v, want %v", rec.CostUSD, price.Cost(want))
	}
}

func TestSDKStreaming(t *testing.T) {
	for _, full := range []bool{false, true} {
		e := newEnv(t, upstreamtest.Config{FullDeltaUsage: full, Deltas: 7, PingEvery: 2})
		c := anthropic.NewClient(option.WithBaseURL(e.srv.URL), option.WithAuthToken(e.key), option.WithMaxRetries(0))
		stream := c.Messages.NewStreaming(context.Background(), params())
		var m anthropic.Message
		for stream.Next() {
			if err := m.Accumulate(stream.Current()); err != nil {
				t.Fatal(err)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if len(m.Content) != 1 || m.Content[0].Text != e.fake.Text() {
			t.Fatalf("content = %+v", m.Content)
		}
		r := e.checkForwarded()
		if r.Header.Get("Authorization") != "" {
			t.Error("the client's Authorization header reached the upstream")
		}
		want := wantUsage(e.fake.ExpectedUsage())
		tot := e.waitTotals(e.keyID, 1)
		if tot.Usage != want {
			t.Errorf("full=%v: recorded usage %+v\nwant %+v", full, tot.Usage, want)
		}
		if rec := e.records(e.keyID)[0]; !rec.Stream || rec.Estimated || rec.TTFT <= 0 {
			t.Errorf("record = %+v", rec)
		}
	}
}

// TestStreamBytes checks the stream reaches the client byte for byte, with
// the stream headers, the upstream request-id, our X-Request-Id, and
// without the upstream account's headers.
func TestStreamBytes(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{})
	body := `{"model":"claude-sonnet-4-5","max_tokens":64000,"stream":true,"messages":[{"role":"user","content":"hi"}],"zz_unknown":{"b":1,"a":2}}`
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/messages?beta=true", strings.NewReader(body))
	req.Header.Set("x-api-key", e.key)
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("anthropic-beta", "interleaved-thinking-2025-05-14,context-1m-2025-08-07")
	req.Header.Set("accept-encoding", "gzip, deflate, br, zstd")
	req.Header.Set("x-claude-code-session-id", "sess-1")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := e.fake.StreamBody("claude-sonnet-4-5"); !bytes.Equal(got, want) {
		t.Fatalf("stream differs:\n got %q\nwant %q", got, want)
	}
	h := resp.Header
	if !strings.HasPrefix(h.Get("Content-Type"), "text/event-stream") || h.Get("Cache-Control") != "no-cache" || h.Get("Content-Encoding") != "" {
		t.Errorf("stream headers %v", h)
	}
	if h.Get("Request-Id") == "" || !strings.HasPrefix(h.Get("X-Request-Id"), "req_relay_") || h.Get("Anthropic-Organization-Id") != "" {
		t.Errorf("id headers %v", h)
	}
	r := e.checkForwarded()
	if r.RawQuery != "beta=true" || string(r.Body) != body || r.Header.Get("Anthropic-Beta") != "interleaved-thinking-2025-05-14,context-1m-2025-08-07" {
		t.Errorf("forwarded query %q body %q beta %q", r.RawQuery, r.Body, r.Header.Get("Anthropic-Beta"))
	}
	if rec := e.records(e.keyID); len(rec) == 0 {
		e.waitTotals(e.keyID, 1)
	}
	if rec := e.records(e.keyID)[0]; rec.SessionID != "sess-1" {
		t.Errorf("session id %q", rec.SessionID)
	}
}

func TestCountTokensAndModels(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{CountTokens: 1234})
	c := e.client()
	n, err := c.Messages.CountTokens(context.Background(), anthropic.MessageCountTokensParams{
		Model:    "claude-sonnet-4-5",
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
	if err != nil {
		t.Fatal(err)
	}
	if n.InputTokens != 1234 {
		t.Errorf("input_tokens = %d", n.InputTokens)
	}
	page, err := c.Models.List(context.Background(), anthropic.ModelListParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != len(upstreamtest.DefaultModels()) {
		t.Errorf("models = %d", len(page.Data))
	}
	m, err := c.Models.Get(context.Background(), upstreamtest.DefaultModels()[1], anthropic.ModelGetParams{})
	if err != nil || m.ID != upstreamtest.DefaultModels()[1] {
		t.Fatalf("model %+v, %v", m, err)
	}

	// A key limited to Haiku sees only Haiku.
	key, _ := e.mint(keys.CreateParams{Name: "haiku", AllowedModels: []string{"claude-haiku-*"}})
	c = e.client(option.WithAPIKey(key))
	page, err = c.Models.List(context.Background(), anthropic.ModelListParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 1 || !strings.HasPrefix(page.Data[0].ID, "claude-haiku") {
		t.Errorf("filtered models = %+v", page.Data)
	}
	if _, err := c.Models.Get(context.Background(), upstreamtest.DefaultModels()[1], anthropic.ModelGetParams{}); !isStatus(err, 404) {
		t.Errorf("get of a forbidden model: %v", err)
	}
	if _, err := c.Messages.New(context.Background(), params()); !isStatus(err, 403) {
		t.Errorf("message to a forbidden model: %v", err)
	}
	// count_tokens and models are not billed.
	time.Sleep(50 * time.Millisecond)
	if tot, _ := e.store.Totals(context.Background(), usage.Filter{}); tot.Requests != 0 {
		t.Errorf("recorded %d requests for unbilled routes", tot.Requests)
	}
}

func isStatus(err error, status int) bool {
	var apiErr *anthropic.Error
	return errors.As(err, &apiErr) && apiErr.StatusCode == status
}

// TestUpstreamErrorPassesThrough: the upstream's error body reaches the
// client unmodified (Claude Code matches on its wording) and is recorded.
func TestUpstreamErrorPassesThrough(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{}, func(c *relay.Config) { c.Retry.Attempts = 1 })
	e.fake.Enqueue(upstreamtest.Fault{Status: 400, Message: "prompt is too long: 210000 tokens > 200000 maximum"})
	_, err := e.client().Messages.New(context.Background(), params())
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || !strings.Contains(apiErr.RawJSON(), "prompt is too long: 210000 tokens > 200000 maximum") {
		t.Fatalf("err = %v", err)
	}
	e.fake.Enqueue(upstreamtest.Fault{Status: 529, RetryAfter: 2 * time.Second})
	resp := e.post("/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]}`, e.key)
	if resp.status != 529 || resp.header.Get("Retry-After") != "2" || !strings.Contains(resp.body, `"overloaded_error"`) {
		t.Errorf("529 answer: %d %v %s", resp.status, resp.header, resp.body)
	}
	e.waitTotals(e.keyID, 2)
	for _, rec := range e.records(e.keyID) {
		if rec.Status < 400 || rec.ErrorType == "" || !rec.Usage.IsZero() {
			t.Errorf("error record = %+v", rec)
		}
	}
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (e *env) post(path, body, key string, hdr ...string) answer {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("x-api-key", key)
	}
	req.Header.Set("content-type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b)}
}

// errorShape checks an Anthropic-shaped error body of the given type that
// carries the relay's request id.
func errorShape(t *testing.T, a answer, status int, typ string) {
	t.Helper()
	var body struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal([]byte(a.body), &body); err != nil {
		t.Fatalf("status %d, body %q is not JSON", a.status, a.body)
	}
	if a.status != status || body.Type != "error" || body.Error.Type != typ || body.Error.Message == "" || body.RequestID == "" || body.RequestID != a.header.Get("X-Request-Id") {
		t.Errorf("got %d %s, want %d %s", a.status, a.body, status, typ)
	}
}

// TestRetryTransparent: an overloaded upstream answer is retried before
// anything reaches the client; the client sees only the success, and one
// request is recorded.
func TestRetryTransparent(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{}, func(c *relay.Config) {
		c.Retry = upstream.RetryPolicy{Attempts: 3, Base: time.Millisecond, Cap: 5 * time.Millisecond, Deadline: 5 * time.Second}
	})
	e.fake.Enqueue(upstreamtest.Fault{Status: 529})
	if _, err := e.client().Messages.New(context.Background(), params()); err != nil {
		t.Fatal(err)
	}
	if st := e.fake.Stats(); st.Requests != 2 || st.Messages != 1 {
		t.Errorf("upstream stats %+v", st)
	}
	if tot := e.waitTotals(e.keyID, 1); tot.Errors != 0 || tot.Usage != wantUsage(e.fake.ExpectedUsage()) {
		t.Errorf("totals %+v", tot)
	}
}

// TestUpstreamCredentialRefused: a 401 from the upstream is the relay's
// problem, not the user's: 502, logged.
func TestUpstreamCredentialRefused(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{}, func(c *relay.Config) { c.UpstreamCredential = "sk-ant-wrong"; c.Retry.Attempts = 1 })
	errorShape(t, e.post("/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":1}`, e.key), 502, "api_error")
	if !strings.Contains(e.logs.String(), "refused the relay's credential") {
		t.Error("not logged")
	}
}

func TestRelayErrors(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{}, func(c *relay.Config) { c.MaxBodyBytes = 1 << 10 })
	disabled, disabledID := e.mint(keys.CreateParams{Name: "off", Disabled: true})
	past := time.Now().Add(-time.Hour)
	expired, _ := e.mint(keys.CreateParams{Name: "old", ExpiresAt: &past})
	limited, _ := e.mint(keys.CreateParams{Name: "opus only", AllowedModels: []string{"claude-opus-*"}})
	deleted, deletedID := e.mint(keys.CreateParams{Name: "gone"})
	if err := e.relay.Keys().Delete(context.Background(), deletedID); err != nil {
		t.Fatal(err)
	}
	ok := `{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]}`
	madeUp := keys.Prefix + strings.Repeat("A", keys.KeyLen-len(keys.Prefix))
	tests := []struct {
		name, path, body, key string
		status                int
		typ                   string
	}{
		{"no key", "/v1/messages", ok, "", 401, "authentication_error"},
		{"unknown key", "/v1/messages", ok, madeUp, 401, "authentication_error"},
		{"wrong prefix", "/v1/messages", ok, "sk-ant-" + e.key[len(keys.Prefix):], 401, "authentication_error"},
		{"wrong secret", "/v1/messages", ok, wrongSecret(e.key), 401, "authentication_error"},
		{"disabled key", "/v1/messages", ok, disabled, 403, "permission_error"},
		{"expired key", "/v1/messages", ok, expired, 403, "permission_error"},
		{"model not allowed", "/v1/messages", ok, limited, 403, "permission_error"},
		{"model not allowed, escaped key", "/v1/messages", `{"mod\u0065l":"claude-sonnet-4-5","max_tokens":10}`, limited, 403, "permission_error"},
		{"two models", "/v1/messages", `{"model":"claude-opus-4-5","model":"claude-sonnet-4-5","max_tokens":10}`, limited, 400, "invalid_request_error"},
		{"not json", "/v1/messages", `hello`, e.key, 400, "invalid_request_error"},
		{"not an object", "/v1/messages", `[1]`, e.key, 400, "invalid_request_error"},
		{"no model", "/v1/messages", `{"max_tokens":10}`, e.key, 400, "invalid_request_error"},
		{"empty model", "/v1/messages", `{"model":""}`, e.key, 400, "invalid_request_error"},
		{"invalid utf-8", "/v1/messages", "{\"model\":\"claude-sonnet-4-5\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", e.key, 400, "invalid_request_error"},
		{"deleted key", "/v1/messages", ok, deleted, 401, "authentication_error"},
		{"too large", "/v1/messages", `{"model":"m","x":"` + strings.Repeat("a", 2000) + `"}`, e.key, 413, "request_too_large"},
		{"unknown route", "/v1/complete", ok, e.key, 404, "not_found_error"},
		{"escaping path", "/v1/../admin/api-keys", ok, e.key, 404, "not_found_error"},
		{"encoded slash", "/v1%2Fmessages", ok, e.key, 404, "not_found_error"},
		{"double slash", "//v1/messages", ok, e.key, 404, "not_found_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errorShape(t, e.post(tt.path, tt.body, tt.key), tt.status, tt.typ)
		})
	}
	a := e.get("/v1/messages", e.key)
	errorShape(t, a, 405, "invalid_request_error")
	if a.header.Get("Allow") != "POST" {
		t.Errorf("Allow = %q", a.header.Get("Allow"))
	}
	if n := e.fake.Count(); n != 0 {
		t.Errorf("the upstream saw %d requests; refused requests must not reach it", n)
	}
	time.Sleep(50 * time.Millisecond)
	if tot, _ := e.store.Totals(context.Background(), usage.Filter{}); tot.Requests != 0 {
		t.Errorf("refused requests made %d usage records", tot.Requests)
	}
	if k, _ := e.store.GetKey(context.Background(), disabledID); k.LastUsedAt != nil {
		t.Error("a refused key was marked used")
	}
}

// wrongSecret changes a key's last character (to another one: a fixed
// replacement would be the right key one time in 62).
func wrongSecret(key string) string {
	last := "x"
	if key[len(key)-1] == 'x' {
		last = "y"
	}
	return key[:len(key)-1] + last
}

func (e *env) get(path, key string) answer {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b)}
}

func TestHeadRootAndHealth(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{})
	req, _ := http.NewRequest("HEAD", e.srv.URL+"/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HEAD / = %v %v", resp, err)
	}
	resp.Body.Close()
	if a := e.get("/health", ""); a.status != 200 {
		t.Errorf("/health = %d", a.status)
	}
}

func TestUpstreamUnreachableAndTimeout(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{}, func(c *relay.Config) { c.UpstreamURL = "http://127.0.0.1:1"; c.Retry.Attempts = 1 })
	errorShape(t, e.post("/v1/messages", `{"model":"m","max_tokens":1}`, e.key), 502, "api_error")

	tr := &http.Transport{ResponseHeaderTimeout: 100 * time.Millisecond}
	e = newEnv(t, upstreamtest.Config{Latency: 2 * time.Second}, func(c *relay.Config) { c.Transport = tr; c.Retry.Attempts = 1 })
	errorShape(t, e.post("/v1/messages", `{"model":"m","max_tokens":1}`, e.key), 504, "timeout_error")
	tot := e.waitTotals(e.keyID, 1)
	if tot.Errors != 1 {
		t.Errorf("timeout not recorded as an error: %+v", tot)
	}
}

// TestClientGoneMidStream: the client disconnects after the first events;
// the relay cancels the upstream call and records what was used, 499.
func TestClientGoneMidStream(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{Deltas: 20, EventDelay: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/messages", strings.NewReader(`{"model":"claude-sonnet-4-5","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("x-api-key", e.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 4096)
	for !bytes.Contains(buf, []byte("text_delta")) {
		chunk := make([]byte, 512)
		n, err := resp.Body.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	resp.Body.Close()
	e.waitTotals(e.keyID, 1)
	rec := e.records(e.keyID)[0]
	want := e.fake.ExpectedUsage()
	if rec.Status != usage.StatusClientClosed || rec.Usage.InputTokens != want.InputTokens || rec.Usage.CacheReadInputTokens != want.CacheReadInputTokens || !rec.Estimated || rec.Usage.OutputTokens < 1 {
		t.Errorf("record = %+v", rec)
	}
}

// TestMissingUsageEstimated: no usage from upstream → offline estimate,
// marked as such.
func TestMissingUsageEstimated(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{})
	e.fake.Enqueue(upstreamtest.Fault{OmitUsage: true}, upstreamtest.Fault{OmitUsage: true})
	if _, err := e.client().Messages.New(context.Background(), params()); err != nil {
		t.Fatal(err)
	}
	stream := e.client().Messages.NewStreaming(context.Background(), params())
	for stream.Next() {
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	e.waitTotals(e.keyID, 2)
	for _, rec := range e.records(e.keyID) {
		if !rec.Estimated || rec.Usage.InputTokens <= 0 || rec.Usage.OutputTokens <= 0 {
			t.Errorf("record = %+v", rec)
		}
	}
}

func TestMidStreamErrorRecorded(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{})
	e.fake.Enqueue(upstreamtest.Fault{ErrorAfter: 3})
	stream := e.client().Messages.NewStreaming(context.Background(), params())
	for stream.Next() {
	}
	if stream.Err() == nil {
		t.Fatal("the SDK saw no mid-stream error")
	}
	e.waitTotals(e.keyID, 1)
	if rec := e.records(e.keyID)[0]; rec.ErrorType != "overloaded_error" || rec.Usage.InputTokens == 0 {
		t.Errorf("record = %+v", rec)
	}
}

func TestTokenLimitAndUsageAPI(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{})
	// 4200 tokens: room for one request's reservation (its input estimate
	// plus the 4096-token output cap), not for a second one.
	key, id := e.mint(keys.CreateParams{Name: "small", TokenLimit: 4200})
	c := e.client(option.WithAPIKey(key))
	if _, err := c.Messages.New(context.Background(), params()); err != nil {
		t.Fatal(err)
	}
	e.waitTotals(id, 1)
	a := e.get("/v1/usage", key)
	var v map[string]any
	if err := json.Unmarshal([]byte(a.body), &v); err != nil || a.status != 200 {
		t.Fatalf("usage: %d %s", a.status, a.body)
	}
	u := e.fake.ExpectedUsage()
	total := u.InputTokens + u.OutputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
	if v["requests"] != 1.0 || v["input_tokens"] != float64(u.InputTokens) || v["output_tokens"] != float64(u.OutputTokens) ||
		v["cache_creation_input_tokens"] != float64(u.CacheCreationInputTokens) || v["cache_read_input_tokens"] != float64(u.CacheReadInputTokens) ||
		v["token_limit"] != 4200.0 || v["remaining"] != float64(4200-total) || v["key_id"] != id {
		t.Errorf("usage = %s", a.body)
	}
	// 110 tokens used of 4200: the next reservation does not fit: 402.
	_, err := c.Messages.New(context.Background(), params())
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 402 || !strings.Contains(apiErr.RawJSON(), "token_limit") {
		t.Errorf("over-quota request: %v", err)
	}
	// A smaller max_tokens still fits.
	small := params()
	small.MaxTokens = 100
	if _, err := c.Messages.New(context.Background(), small); err != nil {
		t.Errorf("a request that fits was refused: %v", err)
	}
	// Another key's usage stays its own.
	a = e.get("/v1/usage", e.key)
	v = nil
	if err := json.Unmarshal([]byte(a.body), &v); err != nil || v["requests"] != 0.0 || v["remaining"] != nil {
		t.Errorf("other key's usage = %s", a.body)
	}
	errorShape(t, e.get("/v1/usage", ""), 401, "authentication_error")
}

func TestCloseDrainsStreams(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{Deltas: 10, EventDelay: 30 * time.Millisecond})
	done := make(chan error, 1)
	go func() {
		stream := e.client().Messages.NewStreaming(context.Background(), params())
		for stream.Next() {
		}
		done <- stream.Err()
	}()
	for e.fake.Count() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.relay.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("stream during Close: %v", err)
	}
	// Close wrote the record before returning.
	tot, _ := e.store.Totals(context.Background(), usage.Filter{KeyID: e.keyID})
	if tot.Requests != 1 || tot.Usage != wantUsage(e.fake.ExpectedUsage()) {
		t.Errorf("after Close: %+v", tot)
	}
	errorShape(t, e.post("/v1/messages", `{"model":"m"}`, e.key), 503, "overloaded_error")
}

// TestGarbageUpstream: a 200 that is not a message is recorded as an
// upstream error and billed nothing.
func TestGarbageUpstream(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{})
	e.fake.Enqueue(upstreamtest.HTMLFault(), upstreamtest.GarbageFault())
	a := e.post("/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]}`, e.key)
	if a.status != 200 || !strings.Contains(a.body, "<html>") {
		t.Errorf("the HTML page did not pass through: %d %q", a.status, a.body)
	}
	e.post("/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":10,"stream":true,"messages":[]}`, e.key)
	e.waitTotals(e.keyID, 2)
	for _, rec := range e.records(e.keyID) {
		if rec.ErrorType != "invalid_upstream_response" || !rec.Usage.IsZero() {
			t.Errorf("record = %+v", rec)
		}
	}
}

// TestSlowBody: a client that stops sending its body gets 408 and the
// connection is freed; nothing reaches the upstream.
func TestSlowBody(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{}, func(c *relay.Config) { c.BodyReadTimeout = 100 * time.Millisecond })
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Api-Key: %s\r\nContent-Length: 100\r\n\r\n{\"model\":", e.key)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || e.fake.Count() != 0 {
		t.Errorf("status %d, upstream saw %d", resp.StatusCode, e.fake.Count())
	}
}

// TestRateLimitsAndHeaders: a tier's RPM answers 429 with retry-after and
// the key's own anthropic-ratelimit headers; successes carry them too.
func TestRateLimitsAndHeaders(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{Header: http.Header{"Anthropic-Ratelimit-Requests-Limit": {"4000"}}}, func(c *relay.Config) {
		c.Tiers = quota.Tiers{Default: "free", Tiers: map[string]quota.Limits{"free": {RPM: 2}, "pro": {RPM: 100}}}
	})
	body := `{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`
	for i := range 2 {
		a := e.post("/v1/messages", body, e.key)
		if a.status != 200 || a.header.Get("Anthropic-Ratelimit-Requests-Limit") != "2" || a.header.Get("Anthropic-Ratelimit-Requests-Remaining") != strconv.Itoa(1-i) {
			t.Fatalf("request %d: %d %v", i, a.status, a.header)
		}
	}
	a := e.post("/v1/messages", body, e.key)
	errorShape(t, a, 429, "rate_limit_error")
	if a.header.Get("Retry-After") == "" {
		t.Errorf("429 without retry-after: %v", a.header)
	}
	// A pro key with an override of its own.
	pro, _ := e.mint(keys.CreateParams{Name: "pro", Tier: "pro", Limits: map[string]int64{"max_concurrent": 1}})
	if a := e.post("/v1/messages", body, pro); a.status != 200 || a.header.Get("Anthropic-Ratelimit-Requests-Limit") != "100" {
		t.Errorf("pro: %d %v", a.status, a.header)
	}
	// Refused requests reached neither the upstream nor the usage store.
	if n := e.fake.Count(); n != 3 {
		t.Errorf("upstream saw %d requests, want 3", n)
	}
	e.waitTotals(e.keyID, 2)
}

// TestConcurrencyLimit: the second concurrent stream of a key limited to
// one is refused with 429 while the first runs.
func TestConcurrencyLimit(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{Deltas: 10, EventDelay: 20 * time.Millisecond})
	key, _ := e.mint(keys.CreateParams{Name: "one at a time", Limits: map[string]int64{"max_concurrent": 1}})
	started := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequest("POST", e.srv.URL+"/v1/messages", strings.NewReader(`{"model":"m","max_tokens":10,"stream":true}`))
		req.Header.Set("x-api-key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			close(started)
			return
		}
		close(started)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
	<-started
	errorShape(t, e.post("/v1/messages", `{"model":"m","max_tokens":10}`, key), 429, "rate_limit_error")
	<-done
	if a := e.post("/v1/messages", `{"model":"m","max_tokens":10}`, key); a.status != 200 {
		t.Errorf("after the stream ended: %d %s", a.status, a.body)
	}
}

// TestUpstreamFaultsMidStream: the upstream cuts the connection, or goes
// silent, after the first events; the client's stream ends, the relay
// records what was used and marks it, and nothing is retried.
func TestUpstreamFaultsMidStream(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{Deltas: 8}, func(c *relay.Config) { c.StreamIdleTimeout = 150 * time.Millisecond })
	body := `{"model":"claude-sonnet-4-5","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	e.fake.Enqueue(upstreamtest.Fault{CutAfter: 4})
	a := e.post("/v1/messages", body, e.key)
	if a.status != 200 || !strings.Contains(a.body, "message_start") || strings.Contains(a.body, "message_stop") {
		t.Errorf("cut stream reached the client as %d %q", a.status, a.body)
	}
	e.fake.Enqueue(upstreamtest.Fault{EventDelay: time.Second})
	start := time.Now()
	a = e.post("/v1/messages", body, e.key)
	if d := time.Since(start); d > 900*time.Millisecond || strings.Contains(a.body, "message_stop") {
		t.Errorf("a silent upstream held the client %v: %q", d, a.body)
	}
	e.waitTotals(e.keyID, 2)
	types := map[string]bool{}
	for _, rec := range e.records(e.keyID) {
		types[rec.ErrorType] = true
		if rec.Usage.InputTokens != e.fake.ExpectedUsage().InputTokens {
			t.Errorf("partial stream usage %+v", rec.Usage)
		}
	}
	if !types["stream_interrupted"] || !types["upstream_idle_timeout"] {
		t.Errorf("error types %v", types)
	}
	if n := e.fake.Stats().Requests; n != 2 {
		t.Errorf("upstream saw %d requests: a stream cut after its first byte must not be retried", n)
	}
}

func TestContentTypeAndCORS(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{})
	body := `{"model":"claude-sonnet-4-5","max_tokens":1}`
	errorShape(t, e.post("/v1/messages", body, e.key, "content-type", "text/plain"), 400, "invalid_request_error")
	errorShape(t, e.post("/v1/messages", body, e.key, "content-type", "multipart/form-data; boundary=x"), 400, "invalid_request_error")
	if a := e.post("/v1/messages", body, e.key, "content-type", "application/json; charset=utf-8"); a.status != 200 {
		t.Errorf("json with charset: %d", a.status)
	}
	// CORS is off: no browser origin is ever allowed.
	a := e.post("/v1/messages", body, e.key, "origin", "https://evil.example")
	if a.header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("CORS header sent")
	}
	req, _ := http.NewRequest("OPTIONS", e.srv.URL+"/v1/messages", nil)
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.StatusCode < 400 {
		t.Errorf("preflight answered %d %v", resp.StatusCode, resp.Header)
	}
	// The upstream key never reaches a user, in headers or bodies.
	for _, a := range []answer{e.post("/v1/messages", body, e.key), e.get("/v1/models", e.key), e.get("/v1/usage", e.key)} {
		if strings.Contains(a.body, upstreamKey) || strings.Contains(fmt.Sprint(a.header), upstreamKey) {
			t.Error("the upstream key reached a user")
		}
	}
}
