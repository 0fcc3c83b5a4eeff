package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/relaystation/relay/admin"
	"github.com/relaystation/relay/upstream"
	"github.com/relaystation/relay/upstream/upstreamtest"
)

// newUpstreamEnv is an admin Handler with the upstream routes over a pool
// of two fake upstreams, a and b.
func newUpstreamEnv(t *testing.T) (*testEnv, *upstream.Pool, string) {
	t.Helper()
	e := newEnv(t, nil)
	var ups []upstream.Config
	for _, name := range []string{"a", "b"} {
		s := upstreamtest.New(upstreamtest.Config{})
		t.Cleanup(s.Close)
		ups = append(ups, upstream.Config{Name: name, BaseURL: s.URL, Credential: "sk-ant-secret-" + name, MaxConcurrent: 8})
	}
	p, err := upstream.NewPool(upstream.PoolConfig{Upstreams: ups, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	admin.MountUpstreams(e.h, p)
	return e, p, e.login()
}

func TestUpstreamRoutes(t *testing.T) {
	e, p, tok := newUpstreamEnv(t)

	// One call through the pool, so that there is something to count.
	client := httptest.NewRequest(http.MethodPost, "/v1/messages", nil)
	res, err := p.Do(context.Background(), upstream.Call{Client: client, Body: []byte(`{"model":"claude-haiku-4-5","max_tokens":5}`), Model: "claude-haiku-4-5", Upstream: "a"})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Response.Body)
	res.Release(upstream.Outcome{InputTokens: 120, OutputTokens: 30})

	rec := e.do(http.MethodGet, "/admin/upstreams", "", tok)
	if rec.Code != http.StatusOK {
		t.Fatalf("list: %d %s", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), "sk-ant-secret") {
		t.Fatalf("a credential in the answer: %s", rec.Body)
	}
	var list admin.UpstreamList
	decode(t, rec, &list)
	if len(list.Data) != 2 || list.Data[0].Name != "a" || list.Data[1].Name != "b" {
		t.Fatalf("list %+v", list)
	}
	a := list.Data[0]
	if a.State != "healthy" || !a.Healthy || !a.Enabled || a.Requests != 1 || a.Errors != 0 || a.RecentRequests != 1 ||
		a.InputTokens != 120 || a.OutputTokens != 30 || a.MaxConcurrent != 8 || a.Weight != 1 || a.Auth != "x-api-key" ||
		a.CooldownUntil != nil || a.LastErrorAt != nil || a.InFlight != 0 {
		t.Fatalf("a: %+v", a)
	}
	// One shape for every upstream: every field present, absent times null.
	var raw struct {
		Data []map[string]json.RawMessage `json:"data"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &raw)
	var keys []string
	for k := range raw.Data[1] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"auth", "base_url", "consecutive_failures", "cooldown_until", "disabled_reason", "enabled", "errors", "healthy",
		"in_flight", "input_tokens", "last_error", "last_error_at", "max_concurrent", "model_cooldowns", "name", "output_tokens",
		"priority", "recent_error_rate", "recent_errors", "recent_requests", "requests", "state", "weight"}
	if !slices.Equal(keys, want) {
		t.Fatalf("fields %v\nwant   %v", keys, want)
	}
	if string(raw.Data[1]["cooldown_until"]) != "null" || string(raw.Data[1]["model_cooldowns"]) != "[]" {
		t.Fatalf("b: %v", raw.Data[1])
	}

	tests := []struct {
		method, path string
		status       int
		state        string
		reason       string
	}{
		{http.MethodPost, "/admin/upstreams/a/disable", 200, "disabled", "admin"},
		{http.MethodPost, "/admin/upstreams/a/disable", 200, "disabled", "admin"}, // idempotent
		{http.MethodGet, "/admin/upstreams/a", 200, "disabled", "admin"},
		{http.MethodGet, "/admin/upstreams/b", 200, "healthy", ""},
		{http.MethodPost, "/admin/upstreams/a/enable", 200, "healthy", ""},
		{http.MethodPost, "/admin/upstreams/a/enable", 200, "healthy", ""},
	}
	for _, tt := range tests {
		rec := e.do(tt.method, tt.path, "", tok)
		if rec.Code != tt.status {
			t.Fatalf("%s %s: %d %s", tt.method, tt.path, rec.Code, rec.Body)
		}
		var v admin.UpstreamView
		decode(t, rec, &v)
		if v.State != tt.state || v.DisabledReason != tt.reason || v.Enabled != (tt.state != "disabled") {
			t.Fatalf("%s %s: %+v", tt.method, tt.path, v)
		}
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"msg":"upstream disabled by admin"`) || !strings.Contains(logs, `"msg":"upstream enabled by admin"`) ||
		!strings.Contains(logs, `"admin":"admin"`) {
		t.Fatalf("changes not logged with the admin's name:\n%s", logs)
	}
}

func TestUpstreamRouteErrors(t *testing.T) {
	e, _, tok := newUpstreamEnv(t)
	tests := []struct {
		method, path, token string
		status              int
		typ                 string
		msg                 string
		allow               string
	}{
		{http.MethodGet, "/admin/upstreams", "", 401, "authentication_error", "", ""},
		{http.MethodPost, "/admin/upstreams/a/disable", "", 401, "authentication_error", "", ""},
		{http.MethodPost, "/admin/upstreams/zzz/enable", tok, 404, "not_found_error", `no upstream named "zzz"`, ""},
		{http.MethodPost, "/admin/upstreams/zzz/disable", tok, 404, "not_found_error", `no upstream named "zzz"`, ""},
		{http.MethodGet, "/admin/upstreams/zzz", tok, 404, "not_found_error", `"zzz"`, ""},
		{http.MethodGet, "/admin/upstreams/" + strings.Repeat("x", 300), tok, 404, "not_found_error", "…", ""},
		{http.MethodDelete, "/admin/upstreams", tok, 405, "invalid_request_error", "", "GET"},
		{http.MethodGet, "/admin/upstreams/a/enable", tok, 405, "invalid_request_error", "", "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path[:min(len(tt.path), 40)], func(t *testing.T) {
			rec := e.do(tt.method, tt.path, "", tt.token)
			wantError(t, rec, tt.status, tt.typ, tt.msg)
			if tt.allow != "" && !strings.Contains(rec.Header().Get("Allow"), tt.allow) {
				t.Fatalf("Allow %q", rec.Header().Get("Allow"))
			}
		})
	}
}

// brokenPool fails every change with an error the admin API does not know.
type brokenPool struct{}

func (brokenPool) Status() []upstream.Status { return []upstream.Status{{Name: "a"}} }
func (brokenPool) Enable(string) error       { return errors.New("storage on fire") }
func (brokenPool) Disable(string) error      { return errors.New("storage on fire") }

func TestUpstreamRouteInternalError(t *testing.T) {
	e := newEnv(t, nil)
	admin.MountUpstreams(e.h, brokenPool{})
	rec := e.do(http.MethodPost, "/admin/upstreams/a/enable", "", e.login())
	wantError(t, rec, 500, "api_error", "internal error")
	if strings.Contains(rec.Body.String(), "fire") || !strings.Contains(e.logs.String(), "storage on fire") {
		t.Fatalf("the cause must be logged, not shown: %s", rec.Body)
	}
}

func TestMountUpstreamsNil(t *testing.T) {
	e := newEnv(t, nil)
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	admin.MountUpstreams(e.h, nil)
}
