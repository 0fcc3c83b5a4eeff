package relay_test

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/relaystation/relay"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/upstream/upstreamtest"
	"github.com/relaystation/relay/usage"
)

// usageAnswer is GET /v1/usage as a client reads it.
type usageAnswer struct {
	KeyID       string     `json:"key_id"`
	From        *time.Time `json:"from"`
	To          *time.Time `json:"to"`
	Requests    int64      `json:"requests"`
	Errors      int64      `json:"errors"`
	InputTokens int64      `json:"input_tokens"`
	TotalTokens int64      `json:"total_tokens"`
	CostUSD     float64    `json:"cost_usd"`
	Breakdown   struct {
		From  time.Time `json:"from"`
		To    time.Time `json:"to"`
		Daily []struct {
			Date     string  `json:"date"`
			Requests int64   `json:"requests"`
			Errors   int64   `json:"errors"`
			CostUSD  float64 `json:"cost_usd"`
		} `json:"daily"`
		Models []struct {
			Model       string `json:"model"`
			Requests    int64  `json:"requests"`
			InputTokens int64  `json:"input_tokens"`
		} `json:"models"`
	} `json:"breakdown"`
}

// usageFixture is a relay whose clock stands at now, with records of two
// keys over 40 days written straight into its store.
func usageFixture(t *testing.T) (e *env, now time.Time, otherKey, otherID string) {
	now = time.Date(2030, 6, 15, 12, 0, 0, 0, time.UTC)
	e = newEnv(t, upstreamtest.Config{}, func(c *relay.Config) { c.Now = func() time.Time { return now } })
	otherKey, otherID = e.mint(keys.CreateParams{Name: "other"})
	rec := func(id, key, model string, ago time.Duration, status int, in int64) usage.Record {
		return usage.Record{RequestID: id, Time: now.Add(-ago), KeyID: key, Model: model, Status: status,
			Usage: usage.Usage{InputTokens: in, OutputTokens: 1}, CostUSD: float64(in) / 1000}
	}
	day := 24 * time.Hour
	recs := []usage.Record{
		rec("a1", e.keyID, "claude-sonnet-4-5", time.Hour, 200, 100),          // today
		rec("a2", e.keyID, "claude-opus-4-1", 2*time.Hour, 500, 200),          // today
		rec("a3", e.keyID, "claude-sonnet-4-5", 13*time.Hour, 200, 300),       // yesterday 23:00
		rec("a4", e.keyID, "claude-sonnet-4-5", 10*day, 429, 400),             // 10 days ago
		rec("a5", e.keyID, "claude-haiku-4-5", 29*day+11*time.Hour, 200, 500), // 29 days ago, 01:00: in the 30 days
		rec("a6", e.keyID, "claude-haiku-4-5", 29*day+13*time.Hour, 200, 600), // 30 days ago, 23:00: before them
		rec("b1", otherID, "secret-model-of-other", time.Hour, 200, 7000),
		rec("b2", otherID, "claude-sonnet-4-5", 3*day, 200, 8000),
	}
	if err := e.store.InsertRecords(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	return e, now, otherKey, otherID
}

func (e *env) usage(query, key string) usageAnswer {
	e.t.Helper()
	a := e.get("/v1/usage"+query, key)
	if a.status != 200 {
		e.t.Fatalf("GET /v1/usage%s: %d %s", query, a.status, a.body)
	}
	var v usageAnswer
	if err := json.Unmarshal([]byte(a.body), &v); err != nil {
		e.t.Fatalf("%v: %s", err, a.body)
	}
	return v
}

func dates(v usageAnswer) string {
	var out []string
	for _, d := range v.Breakdown.Daily {
		out = append(out, d.Date)
	}
	return strings.Join(out, ",")
}

func TestUsageAPIBreakdown(t *testing.T) {
	e, now, _, _ := usageFixture(t)

	// Without from and to: all-time totals, a breakdown of the last 30 days.
	v := e.usage("", e.key)
	if v.KeyID != e.keyID || v.Requests != 6 || v.Errors != 2 || v.InputTokens != 2100 || v.From != nil || v.To != nil {
		t.Errorf("all time: %+v", v)
	}
	bd := v.Breakdown
	if !bd.From.Equal(time.Date(2030, 5, 17, 0, 0, 0, 0, time.UTC)) || !bd.To.Equal(now) {
		t.Errorf("breakdown range %v – %v", bd.From, bd.To)
	}
	if got := dates(v); got != "2030-05-17,2030-06-05,2030-06-14,2030-06-15" {
		t.Errorf("days %s", got)
	}
	if d := bd.Daily[3]; d.Requests != 2 || d.Errors != 1 || math.Abs(d.CostUSD-0.3) > 1e-12 {
		t.Errorf("today %+v", d)
	}
	if len(bd.Models) != 3 || bd.Models[0].Model != "claude-haiku-4-5" || bd.Models[0].Requests != 1 ||
		bd.Models[2].Model != "claude-sonnet-4-5" || bd.Models[2].Requests != 3 || bd.Models[2].InputTokens != 800 {
		t.Errorf("models %+v", bd.Models)
	}

	// from and to bound the totals and the breakdown alike.
	v = e.usage("?from=2030-06-05&to=2030-06-15T00:30:00Z", e.key)
	if v.Requests != 2 || v.InputTokens != 700 || dates(v) != "2030-06-05,2030-06-14" ||
		!v.Breakdown.From.Equal(*v.From) || !v.Breakdown.To.Equal(*v.To) {
		t.Errorf("from/to: %+v", v)
	}
	// from alone runs to now.
	v = e.usage("?from=2030-06-14T23:00:00Z", e.key)
	if v.Requests != 3 || dates(v) != "2030-06-14,2030-06-15" || !v.Breakdown.To.Equal(now) {
		t.Errorf("from: %+v", v)
	}
	// to alone: all-time totals before it, 30 days of breakdown.
	v = e.usage("?to=2030-06-06", e.key)
	if v.Requests != 3 || dates(v) != "2030-05-16,2030-05-17,2030-06-05" || !v.Breakdown.From.Equal(time.Date(2030, 5, 8, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("to: %+v", v)
	}
	// model narrows everything to one model.
	v = e.usage("?model=claude-sonnet-4-5", e.key)
	if v.Requests != 3 || len(v.Breakdown.Models) != 1 || dates(v) != "2030-06-05,2030-06-14,2030-06-15" {
		t.Errorf("model: %+v", v)
	}
	// No usage at all still answers empty lists, not null.
	fresh, _ := e.mint(keys.CreateParams{Name: "fresh"})
	a := e.get("/v1/usage", fresh)
	if a.status != 200 || !strings.Contains(a.body, `"daily":[]`) || !strings.Contains(a.body, `"models":[]`) {
		t.Errorf("fresh key: %d %s", a.status, a.body)
	}
}

// TestUsageAPIOwnKeyOnly: a key sees its own usage and nothing of another
// key's, whatever it asks.
func TestUsageAPIOwnKeyOnly(t *testing.T) {
	e, _, otherKey, otherID := usageFixture(t)
	for _, query := range []string{"", "?model=secret-model-of-other", "?from=2020-01-01"} {
		a := e.get("/v1/usage"+query, e.key)
		if a.status != 200 || strings.Contains(a.body, "secret-model-of-other\",\"requests\":1") || strings.Contains(a.body, otherID) ||
			strings.Contains(a.body, "7000") || strings.Contains(a.body, "8000") {
			t.Errorf("%s: %d %s", query, a.status, a.body)
		}
	}
	if v := e.usage("?model=secret-model-of-other", e.key); v.Requests != 0 || len(v.Breakdown.Models) != 0 {
		t.Errorf("another key's model: %+v", v)
	}
	errorShape(t, e.get("/v1/usage?key_id="+otherID, e.key), 400, "invalid_request_error")
	v := e.usage("", otherKey)
	if v.KeyID != otherID || v.Requests != 2 || v.InputTokens != 15000 || len(v.Breakdown.Models) != 2 {
		t.Errorf("the other key's own view: %+v", v)
	}
}

func TestUsageAPIBadParams(t *testing.T) {
	e := newEnv(t, upstreamtest.Config{})
	for _, tc := range []struct{ query, msg string }{
		{"?from=yesterday", "from: "},
		{"?to=2030-02-30", "to: "},
		{"?from=2030-01-02&to=2030-01-01", "to: must be after from"},
		{"?from=2030-01-02&to=2030-01-02", "to: must be after from"},
		{"?key_id=abc", "key_id: "},
		{"?group_by=day", `unknown query parameter \"group_by\"`},
	} {
		t.Run(tc.query, func(t *testing.T) {
			a := e.get("/v1/usage"+tc.query, e.key)
			errorShape(t, a, 400, "invalid_request_error")
			if !strings.Contains(a.body, tc.msg) {
				t.Errorf("message %s, want %q", a.body, tc.msg)
			}
		})
	}
	errorShape(t, e.get("/v1/usage", ""), 401, "authentication_error")
}
