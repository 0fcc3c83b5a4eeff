package admin_test

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Asia/Kolkata on hosts without a zone database

	"github.com/relaystation/relay/admin"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/usage"
)

// usageEnv is testEnv with the usage routes mounted on its memory store
// and records in it. The clock stands at 2030-01-02 03:04:05 UTC.
type usageEnv struct {
	*testEnv
	token string
	alice string // key ids
	bob   string
	recs  []usage.Record
}

func newUsageEnv(t *testing.T, opts admin.UsageOptions) *usageEnv {
	t.Helper()
	e := &usageEnv{testEnv: newEnv(t, nil)}
	admin.MountUsage(e.h, e.store, opts)
	e.token = e.login()
	ctx := context.Background()
	a, _, err := e.svc.Create(ctx, keys.CreateParams{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := e.svc.Create(ctx, keys.CreateParams{Name: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	e.alice, e.bob = a.ID, b.ID
	now := e.clock.Now()
	at := func(d time.Duration) time.Time { return now.Add(-d) }
	rec := func(id, key, model string, t time.Time, status int, in int64, cost float64) usage.Record {
		return usage.Record{RequestID: id, Time: t, KeyID: key, Model: model, Status: status,
			Usage: usage.Usage{InputTokens: in, OutputTokens: in / 10, CacheReadInputTokens: 1}, CostUSD: cost}
	}
	e.recs = []usage.Record{
		rec("r01", e.alice, "claude-sonnet-4-5", at(time.Hour), 200, 1000, 1.5),                // today 02:04
		rec("r02", e.alice, "claude-opus-4-1", at(2*time.Hour), 529, 2000, 0),                  // today 01:04
		rec("r03", e.bob, "claude-sonnet-4-5", at(3*time.Hour+30*time.Minute), 200, 500, 0.25), // yesterday 23:34
		rec("r04", e.bob, "claude-haiku-4-5", at(3*24*time.Hour), 200, 100, 0.125),             // 3 days ago
		rec("r05", e.alice, "claude-sonnet-4-5", at(20*24*time.Hour), 400, 300, 0.5),           // 20 days ago
		rec("r06", e.bob, "claude-opus-4-1", at(40*24*time.Hour), 200, 9000, 9),                // 40 days ago
		rec("r07", "unknown00001", "=HYPERLINK(\"x\")", at(5*time.Minute), 200, 10, 0.01),      // today, a key not in the store
	}
	if err := e.store.InsertRecords(ctx, e.recs); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *usageEnv) get(target string, hdr ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}

func (e *usageEnv) report(query string) admin.UsageReport {
	e.t.Helper()
	rec := e.get("/admin/usage?" + query)
	if rec.Code != http.StatusOK {
		e.t.Fatalf("%s: %d %s", query, rec.Code, rec.Body)
	}
	var r admin.UsageReport
	decode(e.t, rec, &r)
	return r
}

func groups(r admin.UsageReport) map[string]int64 {
	out := map[string]int64{}
	for _, row := range r.Data {
		out[row.Group] = row.Requests
	}
	return out
}

func TestUsageReport(t *testing.T) {
	e := newUsageEnv(t, admin.UsageOptions{})

	all := e.report("")
	if all.Totals.Requests != 7 || all.Totals.Errors != 2 || all.GroupBy != "none" || len(all.Data) != 0 ||
		all.From != nil || all.To != nil || all.Timezone != "UTC" {
		t.Errorf("everything: %+v", all)
	}
	if all.Totals.InputTokens != 12910 || all.Totals.TotalTokens != 12910+1291+7 || math.Abs(all.Totals.CostUSD-11.385) > 1e-9 ||
		all.Totals.ErrorRate != 2.0/7 {
		t.Errorf("sums: %+v", all.Totals)
	}

	tests := []struct {
		query string
		total int64
		want  map[string]int64
	}{
		{"group_by=day", 7, map[string]int64{
			"2030-01-02T00:00:00Z": 3, "2030-01-01T00:00:00Z": 1, "2029-12-30T00:00:00Z": 1,
			"2029-12-13T00:00:00Z": 1, "2029-11-23T00:00:00Z": 1}},
		{"group_by=model", 7, map[string]int64{"claude-sonnet-4-5": 3, "claude-opus-4-1": 2, "claude-haiku-4-5": 1, `=HYPERLINK("x")`: 1}},
		{"group_by=key&model=claude-sonnet-4-5", 3, map[string]int64{e.alice: 2, e.bob: 1}},
		{"group_by=key&key_id=" + e.bob, 3, map[string]int64{e.bob: 3}},
		{"group_by=day&from=2030-01-01&to=2030-01-02", 1, map[string]int64{"2030-01-01T00:00:00Z": 1}},
		{"group_by=day&from=2030-01-01T23:00:00Z", 4, map[string]int64{"2030-01-01T00:00:00Z": 1, "2030-01-02T00:00:00Z": 3}},
		// Hours default to the last 24.
		{"group_by=hour", 4, map[string]int64{"2030-01-01T23:00:00Z": 1, "2030-01-02T01:00:00Z": 1, "2030-01-02T02:00:00Z": 2}},
		{"group_by=hour&from=2030-01-02T01:30:00%2B00:00&to=2030-01-02T03:00:00Z", 2, map[string]int64{"2030-01-02T02:00:00Z": 2}},
		// In India the 23:34 UTC record is already on the 2nd.
		{"group_by=day&tz=Asia/Kolkata&from=2030-01-01", 4, map[string]int64{"2030-01-02T00:00:00+05:30": 4}},
		{"group_by=none&key_id=nobody", 0, map[string]int64{}},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			r := e.report(tc.query)
			if r.Totals.Requests != tc.total {
				t.Errorf("totals %+v", r.Totals)
			}
			want := map[string]int64{}
			for g, n := range tc.want {
				if n > 0 {
					want[g] = n
				}
			}
			if got := groups(r); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("groups %v\nwant %v", got, want)
			}
		})
	}

	// Rows are in time order.
	days := e.report("group_by=day").Data
	for i := 1; i < len(days); i++ {
		if days[i-1].Group >= days[i].Group {
			t.Errorf("days out of order: %q, %q", days[i-1].Group, days[i].Group)
		}
	}
	r := e.report("from=2030-01-01&to=2030-01-02T00:00:00.5Z&key_id=" + e.bob + "&model=claude-sonnet-4-5")
	if r.From.Format(time.RFC3339Nano) != "2030-01-01T00:00:00Z" || r.To.Format(time.RFC3339Nano) != "2030-01-02T00:00:00.5Z" ||
		r.KeyID != e.bob || r.Model != "claude-sonnet-4-5" || r.Totals.Requests != 1 {
		t.Errorf("echo of the query: %+v", r)
	}
}

func TestUsageReportLocationOption(t *testing.T) {
	kolkata, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Fatal(err)
	}
	e := newUsageEnv(t, admin.UsageOptions{Location: kolkata})
	// A date means the zone's midnight: 2030-01-02 00:00 IST is 18:30 UTC
	// on the 1st.
	r := e.report("group_by=day&from=2030-01-02")
	if r.Timezone != "Asia/Kolkata" || fmt.Sprint(groups(r)) != fmt.Sprint(map[string]int64{"2030-01-02T00:00:00+05:30": 4}) {
		t.Errorf("%+v", r)
	}
	if r := e.report("group_by=day&tz=UTC&from=2030-01-02"); fmt.Sprint(groups(r)) != fmt.Sprint(map[string]int64{"2030-01-02T00:00:00Z": 3}) {
		t.Errorf("tz=UTC: %+v", r)
	}
}

func TestUsageReportCSV(t *testing.T) {
	e := newUsageEnv(t, admin.UsageOptions{})
	for _, tc := range []struct {
		name   string
		target string
		accept string
		csv    bool
	}{
		{"format=csv", "/admin/usage?group_by=model&format=csv", "", true},
		{"Accept", "/admin/usage?group_by=model", "text/csv", true},
		{"Accept with parameters", "/admin/usage?group_by=model", "application/json;q=0.5, text/csv; charset=utf-8", true},
		{"JSON preferred", "/admin/usage?group_by=model", "text/csv;q=0.1, application/json", false},
		{"format wins over Accept", "/admin/usage?group_by=model&format=json", "text/csv", false},
		{"no Accept", "/admin/usage?group_by=model", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.accept != "" {
				hdr = []string{"Accept", tc.accept}
			}
			rec := e.get(tc.target, hdr...)
			if rec.Code != http.StatusOK {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			if got := strings.HasPrefix(rec.Header().Get("Content-Type"), "text/csv"); got != tc.csv {
				t.Fatalf("Content-Type %q", rec.Header().Get("Content-Type"))
			}
			if !tc.csv {
				return
			}
			rows, err := csv.NewReader(rec.Body).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 5 || strings.Join(rows[0], ",") != "group,requests,errors,error_rate,input_tokens,output_tokens,"+
				"cache_creation_input_tokens,cache_creation_5m_input_tokens,cache_creation_1h_input_tokens,cache_read_input_tokens,"+
				"web_search_requests,web_fetch_requests,total_tokens,cost_usd" {
				t.Fatalf("rows %q", rows)
			}
			want := map[string]string{
				`'=HYPERLINK("x")`:  "1,0,0,10,1,0,0,0,1,0,0,12,0.01", // a formula is defused
				"claude-sonnet-4-5": "3,1,0.3333333333333333,1800,180,0,0,0,3,0,0,1983,2.25",
			}
			for _, row := range rows[1:] {
				if w, ok := want[row[0]]; ok && strings.Join(row[1:], ",") != w {
					t.Errorf("row %q, want %s", row, w)
				}
				delete(want, row[0])
			}
			if len(want) != 0 {
				t.Errorf("missing rows %v", want)
			}
			if cd := rec.Header().Get("Content-Disposition"); !strings.Contains(cd, "usage.csv") {
				t.Errorf("Content-Disposition %q", cd)
			}
		})
	}
	rec := e.get("/admin/usage?format=csv&key_id=" + e.alice)
	rows, err := csv.NewReader(rec.Body).ReadAll()
	if err != nil || len(rows) != 2 || rows[1][0] != "total" || rows[1][1] != "3" {
		t.Errorf("ungrouped CSV: %q %v", rows, err)
	}
}

func TestUsageLogs(t *testing.T) {
	e := newUsageEnv(t, admin.UsageOptions{})
	var ids []string
	target := "/admin/usage/logs?limit=2"
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
		rec := e.get(target)
		if rec.Code != http.StatusOK {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		var p admin.UsageLogPage
		decode(t, rec, &p)
		for _, r := range p.Data {
			ids = append(ids, r.RequestID)
		}
		if !p.HasMore {
			if p.NextCursor != nil {
				t.Errorf("next_cursor %q on the last page", *p.NextCursor)
			}
			break
		}
		if p.NextCursor == nil || len(p.Data) != 2 {
			t.Fatalf("page %+v", p)
		}
		target = "/admin/usage/logs?limit=2&cursor=" + url.QueryEscape(*p.NextCursor)
	}
	if strings.Join(ids, ",") != "r07,r01,r02,r03,r04,r05,r06" {
		t.Errorf("newest first: %v", ids)
	}

	rec := e.get("/admin/usage/logs?key_id=" + e.alice + "&model=claude-sonnet-4-5&from=2029-12-01")
	var p admin.UsageLogPage
	decode(t, rec, &p)
	if len(p.Data) != 2 || p.Data[0].RequestID != "r01" || p.Data[1].RequestID != "r05" || p.HasMore || p.Data[0].CostUSD != 1.5 {
		t.Errorf("filtered: %+v", p)
	}
	if !strings.Contains(rec.Body.String(), `"next_cursor":null`) {
		t.Errorf("body %s", rec.Body)
	}
	rec = e.get("/admin/usage/logs?key_id=nobody")
	if !strings.Contains(rec.Body.String(), `"data":[]`) {
		t.Errorf("empty page: %s", rec.Body)
	}
}

func TestUsageStats(t *testing.T) {
	e := newUsageEnv(t, admin.UsageOptions{})
	rec := e.get("/admin/stats")
	if rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var s admin.Stats
	decode(t, rec, &s)
	if s.Today.Requests != 3 || s.Today.Errors != 1 || s.Today.From.Format(time.RFC3339) != "2030-01-02T00:00:00Z" {
		t.Errorf("today %+v", s.Today)
	}
	if s.Last7Days.Requests != 5 || s.Last7Days.From.Format(time.RFC3339) != "2029-12-27T00:00:00Z" {
		t.Errorf("7 days %+v", s.Last7Days)
	}
	if s.Last30Days.Requests != 6 || s.Last30Days.Errors != 2 || s.Last30Days.ErrorRate != 2.0/6 {
		t.Errorf("30 days %+v", s.Last30Days)
	}
	if !s.At.Equal(e.clock.Now()) || s.Timezone != "UTC" {
		t.Errorf("at %v %s", s.At, s.Timezone)
	}
	// By cost: alice 2.0, bob 0.375, the unknown key 0.01.
	if len(s.TopKeys) != 3 || s.TopKeys[0].KeyID != e.alice || s.TopKeys[0].Name != "alice" || s.TopKeys[0].CostUSD != 2 ||
		s.TopKeys[0].ErrorRate != 2.0/3 || s.TopKeys[1].Name != "bob" || s.TopKeys[2].KeyID != "unknown00001" || s.TopKeys[2].Name != "" {
		t.Errorf("top keys %+v", s.TopKeys)
	}
	if len(s.TopModels) != 4 || s.TopModels[0].Model != "claude-sonnet-4-5" || s.TopModels[0].Requests != 3 ||
		s.TopModels[1].Model != "claude-haiku-4-5" {
		t.Errorf("top models %+v", s.TopModels)
	}

	decode(t, e.get("/admin/stats?top=1&tz=Asia/Kolkata"), &s)
	// Midnight in India was 18:30 UTC: the 23:34 record is today there.
	if len(s.TopKeys) != 1 || len(s.TopModels) != 1 || s.Today.Requests != 4 || s.Timezone != "Asia/Kolkata" ||
		s.Today.From.Format(time.RFC3339) != "2030-01-01T18:30:00Z" {
		t.Errorf("top=1, tz: %+v", s)
	}
}

func TestUsageStatsEmpty(t *testing.T) {
	e := newEnv(t, nil)
	admin.MountUsage(e.h, e.store, admin.UsageOptions{})
	rec := e.do(http.MethodGet, "/admin/stats", "", e.login())
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"top_keys":[]`) || !strings.Contains(rec.Body.String(), `"top_models":[]`) {
		t.Errorf("%d %s", rec.Code, rec.Body)
	}
}

func TestUsageBadParams(t *testing.T) {
	e := newUsageEnv(t, admin.UsageOptions{})
	tests := []struct {
		target string
		param  string
	}{
		{"/admin/usage?bogus=1", "unknown query parameter \"bogus\""},
		{"/admin/usage?from=yesterday", "from: "},
		{"/admin/usage?to=2030-13-01", "to: "},
		{"/admin/usage?from=2030-01-02&to=2030-01-01", "to: must be after from"},
		{"/admin/usage?from=2030-01-02&to=2030-01-02", "to: must be after from"},
		{"/admin/usage?group_by=week", "group_by: "},
		{"/admin/usage?group_by=hour&from=2029-01-01", "group_by: hour reports span at most 31 days"},
		{"/admin/usage?tz=Mars/Olympus", "tz: "},
		{"/admin/usage?tz=Local", "tz: "},
		{"/admin/usage?tz=../../etc/passwd", "tz: "},
		{"/admin/usage?format=xml", "format: "},
		{"/admin/usage?model=" + strings.Repeat("m", 201), "model: "},
		{"/admin/usage/logs?limit=0", "limit: "},
		{"/admin/usage/logs?limit=1001", "limit: "},
		{"/admin/usage/logs?limit=x", "limit: "},
		{"/admin/usage/logs?cursor=bogus", "cursor: "},
		{"/admin/usage/logs?group_by=day", "unknown query parameter \"group_by\""},
		{"/admin/usage/logs?from=2030", "from: "},
		{"/admin/stats?top=0", "top: "},
		{"/admin/stats?top=101", "top: "},
		{"/admin/stats?key_id=x", "unknown query parameter \"key_id\""},
		{"/admin/stats?tz=", "tz: "},
	}
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			wantError(t, e.get(tc.target), http.StatusBadRequest, "invalid_request_error", tc.param)
		})
	}
	for _, target := range []string{"/admin/usage", "/admin/usage/logs", "/admin/stats"} {
		wantError(t, e.do(http.MethodGet, target, "", ""), http.StatusUnauthorized, "authentication_error")
		wantError(t, e.do(http.MethodPost, target, "", e.token), http.StatusMethodNotAllowed, "invalid_request_error")
	}
}

// failingStore fails every call.
type failingStore struct{ err error }

func (f failingStore) Report(context.Context, usage.ReportQuery) (usage.Report, error) {
	return usage.Report{}, f.err
}

func (f failingStore) ListRecords(context.Context, usage.Filter, string, int) ([]usage.Record, string, error) {
	return nil, "", f.err
}

func TestUsageStoreFailure(t *testing.T) {
	e := newEnv(t, nil)
	admin.MountUsage(e.h, failingStore{errors.New("connection refused: secret-dsn")}, admin.UsageOptions{})
	token := e.login()
	for _, target := range []string{"/admin/usage", "/admin/usage/logs", "/admin/stats"} {
		rec := e.do(http.MethodGet, target, "", token)
		wantError(t, rec, http.StatusServiceUnavailable, "overloaded_error")
		if strings.Contains(rec.Body.String(), "secret-dsn") {
			t.Errorf("the store's error reached the client: %s", rec.Body)
		}
	}
	if !strings.Contains(e.logs.String(), "admin usage report failed") {
		t.Errorf("not logged: %s", e.logs)
	}
}

func TestMountUsagePanics(t *testing.T) {
	e := newEnv(t, nil)
	defer func() {
		if recover() == nil {
			t.Error("no panic for a nil store")
		}
	}()
	admin.MountUsage(e.h, nil, admin.UsageOptions{})
}
