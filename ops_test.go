package relay_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaystation/relay"
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
