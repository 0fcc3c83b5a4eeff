package relay_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaystation/relay"
	"github.com/relaystation/relay/quota"
	"github.com/relaystation/relay/upstream/upstreamtest"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, upstreamtest.Config{}, func(c *relay.Config) { c.Registerer = reg })
	if _, err := e.client().Messages.New(context.Background(), params()); err != nil {
		t.Fatal(err)
	}
	stream := e.client().Messages.NewStreaming(context.Background(), params())
	for stream.Next() {
	}
	e.post("/v1/messages", `{"model":"made-up-model-`+strings.Repeat("x", 10)+`","max_tokens":1}`, e.key)
	e.post("/v1/messages", `{}`, "sk-proxy-wrong")
	e.waitTotals(e.keyID, 3)

	want := map[string]string{
		"relay_http_requests_total":         `model="claude-sonnet-4-5",route="/v1/messages",status="200"`,
		"relay_tokens_total":                `kind="cache_read",model="claude-sonnet-4-5"`,
		"relay_model_requests_total":        `model="other"`,
		"relay_time_to_first_token_seconds": `stream="true"`,
		"relay_key_cache_hits_total":        "",
		"relay_key_cache_misses_total":      "",
		"relay_usage_queue_depth":           "",
		"relay_active_streams":              "",
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	text := ""
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := []string{}
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			text += f.GetName() + "{" + strings.Join(labels, ",") + "}\n"
		}
	}
	for name, labels := range want {
		found := false
		for _, line := range strings.Split(text, "\n") {
			if strings.HasPrefix(line, name+"{") && strings.Contains(line, labels) {
				found = true
			}
		}
		if !found {
			t.Errorf("no %s{%s} in\n%s", name, labels, text)
		}
	}
	if strings.Contains(text, "made-up-model") {
		t.Error("a client's made-up model became a label")
	}
	for _, f := range families {
		if f.GetName() == "relay_active_streams" && f.GetMetric()[0].GetGauge().GetValue() != 0 {
			t.Errorf("active streams %v after all ended", f.GetMetric()[0].GetGauge().GetValue())
		}
	}
}

func TestTwoRelaysOneRegistryFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	newEnv(t, upstreamtest.Config{}, func(c *relay.Config) { c.Registerer = reg })
	fake := upstreamtest.New(upstreamtest.Config{})
	defer fake.Close()
	e := newEnv(t, upstreamtest.Config{})
	_, err := relay.New(relay.Config{UpstreamURL: fake.URL, UpstreamCredential: "k", Keys: e.store, Usage: e.store, Registerer: reg})
	if err == nil {
		t.Fatal("a second relay registered the same metrics on one registry")
	}
	// Two relays with their own registries (or none) coexist: no globals.
	for range 2 {
		rl, err := relay.New(relay.Config{UpstreamURL: fake.URL, UpstreamCredential: "k", Keys: e.store, Usage: e.store, Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		_ = rl.Close(context.Background())
	}
}

func TestReady(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{})
	a := e.get("/ready", "")
	var r relay.Readiness
	if err := json.Unmarshal([]byte(a.body), &r); err != nil || a.status != 200 || r.Status != "ready" || r.Checks["key_store"] != "ok" {
		t.Fatalf("ready: %d %s", a.status, a.body)
	}
	// With its only upstream disabled by an admin, the relay is not ready.
	token := e.adminToken()
	req, _ := http.NewRequest("POST", e.srv.URL+"/admin/upstreams/anthropic/disable", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("disable: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	a = e.get("/ready", "")
	if a.status != 503 || !strings.Contains(a.body, "no upstream is enabled") {
		t.Errorf("not ready: %d %s", a.status, a.body)
	}
	if a := e.get("/health", ""); a.status != 200 {
		t.Errorf("health must not depend on upstreams: %d", a.status)
	}
}

func (e *env) adminToken() string {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+"/admin/login", nil)
	req.SetBasicAuth("admin", "admin-password-for-tests")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.AccessToken == "" {
		e.t.Fatalf("login: %d", resp.StatusCode)
	}
	return v.AccessToken
}

// TestAdminLimits: tiers and per-key limits through the admin API, and a
// key's standing in GET /admin/api-keys/{id}.
func TestAdminLimits(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{}, func(c *relay.Config) {
		c.Tiers = quota.Tiers{Default: "free", Tiers: map[string]quota.Limits{"free": {RPM: 5, DailyTokens: 100000}, "pro": {RPM: 50}}}
	})
	token := e.adminToken()
	adm := func(method, path, body string) answer {
		req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return answer{resp.StatusCode, resp.Header, string(b)}
	}
	if a := adm("GET", "/admin/tiers", ""); a.status != 200 || !strings.Contains(a.body, `"default":"free"`) || !strings.Contains(a.body, `"rpm":50`) {
		t.Errorf("tiers: %d %s", a.status, a.body)
	}
	errorShape(t, adm("POST", "/admin/api-keys", `{"name":"x","tier":"gold"}`), 400, "invalid_request_error")
	errorShape(t, adm("POST", "/admin/api-keys", `{"name":"x","limits":{"rpn":1}}`), 400, "invalid_request_error")
	a := adm("POST", "/admin/api-keys", `{"name":"x","tier":"pro","limits":{"max_concurrent":2,"daily_tokens":500}}`)
	var created struct {
		ID, Key string
		Limits  map[string]int64
	}
	if err := json.Unmarshal([]byte(a.body), &created); err != nil || a.status != 201 || created.Limits["max_concurrent"] != 2 {
		t.Fatalf("create: %d %s", a.status, a.body)
	}
	if r := e.post("/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":10}`, created.Key); r.status != 200 || r.header.Get("Anthropic-Ratelimit-Requests-Limit") != "50" {
		t.Errorf("pro key: %d %v", r.status, r.header)
	}
	e.waitTotals(created.ID, 1)
	a = adm("GET", "/admin/api-keys/"+created.ID, "")
	var got struct {
		Standing quota.Standing
	}
	if err := json.Unmarshal([]byte(a.body), &got); err != nil || got.Standing.DailyTokens.Limit != 500 || got.Standing.RPM.Limit != 50 || got.Standing.DailyTokens.Used != 110 {
		t.Errorf("standing: %s", a.body)
	}
	if a := adm("PATCH", "/admin/api-keys/"+created.ID, `{"limits":null,"tier":"free"}`); a.status != 200 || !strings.Contains(a.body, `"limits":{}`) {
		t.Errorf("patch: %d %s", a.status, a.body)
	}
	if r := e.post("/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":10}`, created.Key); r.header.Get("Anthropic-Ratelimit-Requests-Limit") != "5" {
		t.Errorf("after the patch the key is free-tier: %v", r.header)
	}
	if a := adm("GET", "/admin/usage?group_by=model", ""); a.status != 200 || !strings.Contains(a.body, "claude-sonnet-4-5") {
		t.Errorf("admin usage: %d %s", a.status, a.body)
	}
}

func TestClientIPHeader(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{}, func(c *relay.Config) { c.ClientIPHeader = "X-Forwarded-For" })
	e.post("/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":1}`, e.key, "x-forwarded-for", "198.51.100.1, 203.0.113.9")
	e.waitTotals(e.keyID, 1)
	if rec := e.records(e.keyID)[0]; rec.ClientIP != "203.0.113.9" {
		t.Errorf("client ip %q", rec.ClientIP)
	}
}
