package upstream

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

// benchPool is a pool over n upstreams in two priority groups that are
// never called: selection only.
func benchPool(b *testing.B, n int) *Pool {
	cfg := PoolConfig{}
	for i := range n {
		cfg.Upstreams = append(cfg.Upstreams, Config{
			Name: "u" + strconv.Itoa(i), BaseURL: "https://example.invalid", Credential: "k",
			Weight: 1 + i%3, Priority: i % 2, Models: []string{"claude-*"},
		})
	}
	p, err := NewPool(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close)
	return p
}

// BenchmarkSelect measures one selection as Do makes it: eligibility under
// the lock, priority, then affinity or weighted round robin, and the
// reservation of the in-flight slot.
func BenchmarkSelect(b *testing.B) {
	for _, n := range []int{1, 4, 16, 64} {
		for _, affinity := range []bool{false, true} {
			b.Run(fmt.Sprintf("upstreams=%d/affinity=%v", n, affinity), func(b *testing.B) {
				p := benchPool(b, n)
				c := &Call{Model: "claude-sonnet-4-5", AffinityKey: "session-0123456789abcdef"}
				key := hashString(c.AffinityKey)
				now := time.Now()
				b.ReportAllocs()
				for b.Loop() {
					var buf [8]candidate
					p.mu.Lock()
					cands, _ := p.eligible(c, nil, now, buf[:0])
					pick := p.choose(cands, nil, key, affinity)
					p.reserve(pick, c.Model)
					pick.m.inflight--
					p.mu.Unlock()
				}
			})
		}
	}
}

func BenchmarkHashString(b *testing.B) {
	for b.Loop() {
		_ = hashString("2f1c9a3e-5b7d-4e2a-9c1f-0a8b7c6d5e4f")
	}
}

func BenchmarkRewriteModel(b *testing.B) {
	body := []byte(`{"model":"claude-sonnet-4-5","max_tokens":1024,"system":[{"type":"text","text":"You are Claude Code."}],"messages":[` +
		`{"role":"user","content":"` + string(make([]byte, 0)) + `hello"}],"stream":true}`)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, ok := rewriteModel(body, "alias"); !ok {
			b.Fatal("not rewritten")
		}
	}
}

// BenchmarkDo is one call through the pool to an in-process server,
// against the same request sent straight through the same client.
func BenchmarkDo(b *testing.B) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"type":"message"}`))
	}))
	defer s.Close()
	p, err := NewPool(PoolConfig{Upstreams: []Config{{Name: "a", BaseURL: s.URL, Credential: "k"}, {Name: "b", BaseURL: s.URL, Credential: "k"}}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	body := []byte(`{"model":"claude-sonnet-4-5","max_tokens":1}`)
	client := httptest.NewRequest(http.MethodPost, "/v1/messages", nil)
	b.Run("pool", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			res, err := p.Do(b.Context(), Call{Client: client, Body: body, Model: "claude-sonnet-4-5", AffinityKey: "s"})
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Response.Body)
			res.Release(Outcome{})
		}
	})
	b.Run("direct", func(b *testing.B) {
		m := p.members[0]
		b.ReportAllocs()
		for b.Loop() {
			req, _ := m.up.NewRequest(b.Context(), client, "/v1/messages", body)
			res, err := m.rt.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
}
