package upstream_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaystation/relay/upstream"
	"github.com/relaystation/relay/upstream/upstreamtest"
)

const model = "claude-sonnet-4-5"

// env is a pool over fake upstreams named a, b, c… on a clock the test
// moves, with every event and log line kept.
type env struct {
	t      *testing.T
	fakes  []*upstreamtest.Server
	pool   *upstream.Pool
	clock  *fakeClock
	events *eventLog
	logs   *syncBuffer
}

// newEnv starts n fakes and a pool over them. mod may change the pool's
// configuration (its Upstreams are filled in already).
func newEnv(t *testing.T, n int, mod func(*upstream.PoolConfig)) *env {
	t.Helper()
	e := &env{t: t, clock: newFakeClock(), events: &eventLog{}, logs: &syncBuffer{}}
	cfg := upstream.PoolConfig{
		Retry:    upstream.RetryPolicy{Attempts: 3, Base: time.Millisecond, Cap: 2 * time.Millisecond, Deadline: 5 * time.Second},
		Cooldown: upstream.CooldownPolicy{Failures: 3, Base: 10 * time.Second, Max: 5 * time.Minute},
		Logger:   slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:      e.clock.Now,
		OnEvent:  e.events.add,
	}
	for i := range n {
		name := string(rune('a' + i))
		s := upstreamtest.New(upstreamtest.Config{APIKey: "sk-ant-" + name})
		t.Cleanup(s.Close)
		e.fakes = append(e.fakes, s)
		cfg.Upstreams = append(cfg.Upstreams, upstream.Config{Name: name, BaseURL: s.URL, Credential: "sk-ant-" + name})
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := upstream.NewPool(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	e.pool = p
	return e
}

// msgBody is a Messages request body.
func msgBody(model string, stream bool) []byte {
	s := "false"
	if stream {
		s = "true"
	}
	return []byte(`{"model":"` + model + `","max_tokens":64,"stream":` + s + `,"messages":[{"role":"user","content":"Hi"}]}`)
}

// call builds a Call as the relay would for POST /v1/messages?beta=true.
func call(model, session string, stream bool) upstream.Call {
	r := httptest.NewRequest(http.MethodPost, "/v1/messages?beta=true", nil)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Anthropic-Version", "2023-06-01")
	r.Header.Set("X-Api-Key", "relay-key-of-the-client")
	if session != "" {
		r.Header.Set("X-Claude-Code-Session-Id", session)
	}
	return upstream.Call{Client: r, Body: msgBody(model, stream), Model: model, AffinityKey: upstream.AffinityKey(r.Header, "", "")}
}

// do runs c and reads the whole answer, releasing it.
func (e *env) do(c upstream.Call) (*upstream.Result, []byte) {
	e.t.Helper()
	res, err := e.pool.Do(context.Background(), c)
	if err != nil {
		e.t.Fatalf("Do: %v", err)
	}
	b, err := io.ReadAll(res.Response.Body)
	if err != nil {
		e.t.Fatalf("reading the body: %v", err)
	}
	res.Release(upstream.Outcome{InputTokens: 25, OutputTokens: 15})
	return res, b
}

// counts returns each fake's request count.
func (e *env) counts() []int64 {
	out := make([]int64, len(e.fakes))
	for i, s := range e.fakes {
		out[i] = s.Count()
	}
	return out
}

func (e *env) status(name string) upstream.Status {
	e.t.Helper()
	for _, s := range e.pool.Status() {
		if s.Name == name {
			return s
		}
	}
	e.t.Fatalf("no upstream %q", name)
	return upstream.Status{}
}

type eventLog struct {
	mu  sync.Mutex
	evs []upstream.Event
}

func (l *eventLog) add(e upstream.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, e)
}

// kinds lists the events seen, as "kind:upstream[:model]".
func (l *eventLog) kinds() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.evs {
		s := e.Kind.String() + ":" + e.Upstream
		if e.Model != "" && e.Kind != upstream.EventRetry {
			s += ":" + e.Model
		}
		out = append(out, s)
	}
	return out
}

func (l *eventLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = nil
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

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

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func joined(s []string) string { return strings.Join(s, " ") }
