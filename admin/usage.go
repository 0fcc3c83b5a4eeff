package admin

import (
	"cmp"
	"context"
	"encoding/csv"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/middleware"
	"github.com/relaystation/relay/usage"
)

// UsageReports is what the usage routes need from the usage store; every
// usage.Store implements it.
type UsageReports interface {
	// Report sums records, grouped; usage.ErrInvalidQuery for a grouping
	// it does not know.
	Report(ctx context.Context, q usage.ReportQuery) (usage.Report, error)
	// ListRecords pages through records newest first;
	// usage.ErrInvalidCursor for a cursor it did not issue.
	ListRecords(ctx context.Context, f usage.Filter, cursor string, limit int) ([]usage.Record, string, error)
}

var _ UsageReports = usage.Store(nil)

// UsageOptions configures MountUsage. The zero value is usable.
type UsageOptions struct {
	// Now returns the current time, for the windows of /admin/stats and
	// the default range of hour reports. Nil means the Handler's clock
	// (Config.Now).
	Now func() time.Time
	// Location is the zone of day and hour buckets, of YYYY-MM-DD dates in
	// from and to, and of "today" in /admin/stats, unless a request names
	// another with tz. Nil means UTC, which is also the only zone whose
	// day reports read the daily rollup (see usage.ReportQuery); reports
	// by day in another zone read records, so they cover the retention
	// window only.
	Location *time.Location
}

// Bounds of the usage routes' parameters.
const (
	maxHourSpan      = 31 * 24 * time.Hour
	defaultHourSpan  = 24 * time.Hour
	defaultTop       = 10
	maxTop           = 100
	maxFilterTextLen = 200
)

// UsageTotals is a sum of usage records as the admin API shows it.
// ErrorRate is Errors / Requests (0 without requests); TotalTokens counts
// input, output, cache creation and cache read tokens.
type UsageTotals struct {
	Requests                 int64   `json:"requests"`
	Errors                   int64   `json:"errors"`
	ErrorRate                float64 `json:"error_rate"`
	InputTokens              int64   `json:"input_tokens"`
	OutputTokens             int64   `json:"output_tokens"`
	CacheCreationInputTokens int64   `json:"cache_creation_input_tokens"`
	CacheCreation5m          int64   `json:"cache_creation_5m_input_tokens"`
	CacheCreation1h          int64   `json:"cache_creation_1h_input_tokens"`
	CacheReadInputTokens     int64   `json:"cache_read_input_tokens"`
	WebSearchRequests        int64   `json:"web_search_requests"`
	WebFetchRequests         int64   `json:"web_fetch_requests"`
	TotalTokens              int64   `json:"total_tokens"`
	CostUSD                  float64 `json:"cost_usd"`
}

func totalsOf(t usage.Totals) UsageTotals {
	v := UsageTotals{
		Requests:                 t.Requests,
		Errors:                   t.Errors,
		InputTokens:              t.Usage.InputTokens,
		OutputTokens:             t.Usage.OutputTokens,
		CacheCreationInputTokens: t.Usage.CacheCreationInputTokens,
		CacheCreation5m:          t.Usage.CacheCreation5m,
		CacheCreation1h:          t.Usage.CacheCreation1h,
		CacheReadInputTokens:     t.Usage.CacheReadInputTokens,
		WebSearchRequests:        t.Usage.WebSearchRequests,
		WebFetchRequests:         t.Usage.WebFetchRequests,
		TotalTokens:              t.Usage.Total(),
		CostUSD:                  t.CostUSD,
	}
	if t.Requests > 0 {
		v.ErrorRate = float64(t.Errors) / float64(t.Requests)
	}
	return v
}

// UsageRow is one group of a usage report: the start of an hour or day
// (RFC 3339, in the report's zone), a model, or a key id.
type UsageRow struct {
	Group string `json:"group"`
	UsageTotals
}

// UsageReport is the answer of GET /admin/usage.
type UsageReport struct {
	// From and To are the range asked for; null when unbounded.
	From     *time.Time  `json:"from"`
	To       *time.Time  `json:"to"`
	KeyID    string      `json:"key_id,omitempty"`
	Model    string      `json:"model,omitempty"`
	GroupBy  string      `json:"group_by"`
	Timezone string      `json:"timezone"`
	Totals   UsageTotals `json:"totals"`
	// Data holds one row per group with records; empty for group_by=none.
	Data []UsageRow `json:"data"`
}

// UsageLogPage is one page of GET /admin/usage/logs, newest first.
type UsageLogPage struct {
	Data []usage.Record `json:"data"`
	// NextCursor is the cursor parameter of the next page; null on the last.
	NextCursor *string `json:"next_cursor"`
	HasMore    bool    `json:"has_more"`
}

// UsageWindow is the usage of one period of GET /admin/stats, from From
// until now.
type UsageWindow struct {
	From time.Time `json:"from"`
	UsageTotals
}

// TopKey is a key among the most costly of the last 30 days.
type TopKey struct {
	KeyID string `json:"key_id"`
	// Name is the key's name ("" if the key is unknown).
	Name string `json:"name"`
	UsageTotals
}

// TopModel is a model among the most costly of the last 30 days.
type TopModel struct {
	Model string `json:"model"`
	UsageTotals
}

// Stats is the answer of GET /admin/stats. Windows are calendar days in
// Timezone and end now: Today since midnight, Last7Days since the midnight
// six days before, Last30Days since the midnight 29 days before. TopKeys
// and TopModels rank the last 30 days by cost, then requests.
type Stats struct {
	At         time.Time   `json:"at"`
	Timezone   string      `json:"timezone"`
	Today      UsageWindow `json:"today"`
	Last7Days  UsageWindow `json:"last_7_days"`
	Last30Days UsageWindow `json:"last_30_days"`
	TopKeys    []TopKey    `json:"top_keys"`
	TopModels  []TopModel  `json:"top_models"`
}

// MountUsage adds the usage report routes to h, behind its token check:
//
//	GET /admin/usage        totals and groups (JSON, or CSV)
//	GET /admin/usage/logs   the request log, newest first, paginated
//	GET /admin/stats        today, 7 and 30 days, top keys and models
//
// /admin/usage takes key_id, model, from, to (RFC 3339 or YYYY-MM-DD in
// the zone; from inclusive, to exclusive), group_by (none, hour, day,
// model, key), tz (an IANA zone name) and format (json or csv; without it,
// Accept: text/csv selects CSV). An hour report defaults to the 24 hours
// before to (or now) and spans at most 31 days. /admin/usage/logs takes
// the same filters, cursor and limit (1 to 1000, default 100).
// /admin/stats takes tz and top (1 to 100, default 10).
//
// An invalid or unknown parameter is a 400 whose message starts with its
// name. Like Handle, MountUsage panics when called twice on one Handler or
// with a nil store.
func MountUsage(h *Handler, store UsageReports, opts UsageOptions) {
	if store == nil {
		panic("admin: MountUsage with a nil UsageReports")
	}
	u := &usageRoutes{h: h, store: store, now: opts.Now, loc: opts.Location}
	if u.now == nil {
		u.now = h.now
	}
	if u.loc == nil {
		u.loc = time.UTC
	}
	h.Handle("GET /admin/usage", http.HandlerFunc(u.report))
	h.Handle("GET /admin/usage/logs", http.HandlerFunc(u.logs))
	h.Handle("GET /admin/stats", http.HandlerFunc(u.stats))
}

type usageRoutes struct {
	h     *Handler
	store UsageReports
	now   func() time.Time
	loc   *time.Location
}

var (
	reportParams = []string{"key_id", "model", "from", "to", "group_by", "tz", "format"}
	logParams    = []string{"key_id", "model", "from", "to", "tz", "cursor", "limit"}
	statsParams  = []string{"tz", "top"}
)

// query reads the parameters the report and log routes share: only the
// allowed ones, the time zone, and the record filter.
func (u *usageRoutes) query(r *http.Request, allowed []string) (url.Values, *time.Location, usage.Filter, *apierror.Error) {
	q := r.URL.Query()
	if e := onlyParams(q, allowed...); e != nil {
		return nil, nil, usage.Filter{}, e
	}
	loc, e := u.zone(q)
	if e != nil {
		return nil, nil, usage.Filter{}, e
	}
	f, e := filterParams(q, loc)
	if e != nil {
		return nil, nil, usage.Filter{}, e
	}
	return q, loc, f, nil
}

func (u *usageRoutes) report(w http.ResponseWriter, r *http.Request) {
	q, loc, f, e := u.query(r, reportParams)
	if e != nil {
		u.h.writeError(w, r, e)
		return
	}
	g := usage.GroupBy(q.Get("group_by"))
	if g == "" {
		g = usage.GroupNone
	}
	if !g.Valid() {
		u.h.writeError(w, r, fieldError("group_by", "must be none, hour, day, model or key"))
		return
	}
	csvOut, e := wantCSV(r)
	if e != nil {
		u.h.writeError(w, r, e)
		return
	}
	if g == usage.GroupHour {
		// Hours read records, not the rollup: bound the scan.
		end := f.To
		if end.IsZero() {
			end = u.now()
		}
		if f.From.IsZero() {
			f.From = end.Add(-defaultHourSpan)
		}
		if end.Sub(f.From) > maxHourSpan {
			u.h.writeError(w, r, fieldError("group_by", "hour reports span at most 31 days; narrow from and to"))
			return
		}
	}
	rep, err := u.store.Report(r.Context(), usage.ReportQuery{Filter: f, GroupBy: g, Location: loc})
	if err != nil {
		u.fail(w, r, err)
		return
	}
	out := UsageReport{
		From: timeParam(f.From), To: timeParam(f.To), KeyID: f.KeyID, Model: f.Model,
		GroupBy: string(g), Timezone: loc.String(), Totals: totalsOf(rep.Totals), Data: make([]UsageRow, 0, len(rep.Rows)),
	}
	for _, row := range rep.Rows {
		out.Data = append(out.Data, UsageRow{Group: row.Group, UsageTotals: totalsOf(row.Totals)})
	}
	if csvOut {
		writeUsageCSV(w, out)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (u *usageRoutes) logs(w http.ResponseWriter, r *http.Request) {
	q, _, f, e := u.query(r, logParams)
	if e != nil {
		u.h.writeError(w, r, e)
		return
	}
	limit := 100
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > maxListLimit {
			u.h.writeError(w, r, fieldError("limit", "must be an integer from 1 to %d", maxListLimit))
			return
		}
		limit = n
	}
	recs, next, err := u.store.ListRecords(r.Context(), f, q.Get("cursor"), limit)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	page := UsageLogPage{Data: recs, HasMore: next != ""}
	if page.Data == nil {
		page.Data = []usage.Record{}
	}
	if next != "" {
		page.NextCursor = &next
	}
	writeJSON(w, http.StatusOK, page)
}

func (u *usageRoutes) stats(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if e := onlyParams(q, statsParams...); e != nil {
		u.h.writeError(w, r, e)
		return
	}
	loc, e := u.zone(q)
	if e != nil {
		u.h.writeError(w, r, e)
		return
	}
	top := defaultTop
	if q.Has("top") {
		n, err := strconv.Atoi(q.Get("top"))
		if err != nil || n < 1 || n > maxTop {
			u.h.writeError(w, r, fieldError("top", "must be an integer from 1 to %d", maxTop))
			return
		}
		top = n
	}
	now := u.now()
	y, m, d := now.In(loc).Date()
	midnight := func(daysBack int) time.Time { return time.Date(y, m, d-daysBack, 0, 0, 0, 0, loc) }
	out := Stats{At: now.UTC(), Timezone: loc.String(), TopKeys: []TopKey{}, TopModels: []TopModel{}}
	// The windows run to the end of time rather than to now: a record
	// stamped a moment ahead by another instance's clock still counts, and
	// with no upper bound a UTC window is read from the rollup alone.
	ctx := r.Context()
	for _, win := range []struct {
		dst  *UsageWindow
		from time.Time
	}{{&out.Today, midnight(0)}, {&out.Last7Days, midnight(6)}, {&out.Last30Days, midnight(29)}} {
		rep, err := u.store.Report(ctx, usage.ReportQuery{Filter: usage.Filter{From: win.from}})
		if err != nil {
			u.fail(w, r, err)
			return
		}
		*win.dst = UsageWindow{From: win.from.UTC(), UsageTotals: totalsOf(rep.Totals)}
	}
	month := usage.Filter{From: midnight(29)}
	byKey, err := u.store.Report(ctx, usage.ReportQuery{Filter: month, GroupBy: usage.GroupKey})
	if err != nil {
		u.fail(w, r, err)
		return
	}
	for _, row := range topRows(byKey.Rows, top) {
		k := TopKey{KeyID: row.Group, UsageTotals: totalsOf(row.Totals)}
		if key, err := u.h.keys.Get(ctx, row.Group); err == nil {
			k.Name = key.Name
		}
		out.TopKeys = append(out.TopKeys, k)
	}
	byModel, err := u.store.Report(ctx, usage.ReportQuery{Filter: month, GroupBy: usage.GroupModel})
	if err != nil {
		u.fail(w, r, err)
		return
	}
	for _, row := range topRows(byModel.Rows, top) {
		out.TopModels = append(out.TopModels, TopModel{Model: row.Group, UsageTotals: totalsOf(row.Totals)})
	}
	writeJSON(w, http.StatusOK, out)
}

// topRows returns the n most costly rows, then by requests, then by group.
func topRows(rows []usage.ReportRow, n int) []usage.ReportRow {
	rows = slices.Clone(rows)
	slices.SortFunc(rows, func(a, b usage.ReportRow) int {
		if c := cmp.Compare(b.CostUSD, a.CostUSD); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Requests, a.Requests); c != 0 {
			return c
		}
		return cmp.Compare(a.Group, b.Group)
	})
	return rows[:min(n, len(rows))]
}

// zone is the tz parameter, or the configured Location.
func (u *usageRoutes) zone(q map[string][]string) (*time.Location, *apierror.Error) {
	vs := q["tz"]
	if len(vs) == 0 {
		return u.loc, nil
	}
	// "Local" would be the server's zone, which a client cannot know.
	if vs[0] == "" || vs[0] == "Local" || len(vs[0]) > 64 {
		return nil, fieldError("tz", "must be an IANA time zone name such as UTC or Europe/Berlin")
	}
	loc, err := time.LoadLocation(vs[0])
	if err != nil {
		return nil, fieldError("tz", "unknown time zone %q", vs[0])
	}
	return loc, nil
}

// filterParams reads key_id, model, from and to.
func filterParams(q map[string][]string, loc *time.Location) (usage.Filter, *apierror.Error) {
	get := func(name string) string {
		if vs := q[name]; len(vs) > 0 {
			return vs[0]
		}
		return ""
	}
	f := usage.Filter{KeyID: get("key_id"), Model: get("model")}
	for _, p := range []struct {
		name string
		v    string
	}{{"key_id", f.KeyID}, {"model", f.Model}} {
		if len(p.v) > maxFilterTextLen {
			return f, fieldError(p.name, "must be at most %d bytes", maxFilterTextLen)
		}
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		s := get(p.name)
		if s == "" {
			continue
		}
		t, err := parseBound(s, loc)
		if err != nil {
			return f, fieldError(p.name, "must be an RFC 3339 time (2025-03-01T00:00:00Z) or a date (2025-03-01)")
		}
		*p.dst = t
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return f, fieldError("to", "must be after from")
	}
	return f, nil
}

// parseBound reads an RFC 3339 time or a YYYY-MM-DD date, which means the
// midnight starting that day in loc.
func parseBound(s string, loc *time.Location) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.ParseInLocation(time.DateOnly, s, loc)
}

func timeParam(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// wantCSV decides the format: the format parameter, else the Accept
// header (text/csv preferred over application/json).
func wantCSV(r *http.Request) (bool, *apierror.Error) {
	if vs, ok := r.URL.Query()["format"]; ok {
		switch vs[0] {
		case "csv":
			return true, nil
		case "json":
			return false, nil
		}
		return false, fieldError("format", "must be json or csv")
	}
	csvQ, jsonQ := -1.0, -1.0
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if s, ok := params["q"]; ok {
			if v, err := strconv.ParseFloat(s, 64); err == nil {
				q = v
			}
		}
		switch mt {
		case "text/csv":
			csvQ = max(csvQ, q)
		case "application/json":
			jsonQ = max(jsonQ, q)
		}
	}
	return csvQ > 0 && csvQ >= jsonQ, nil
}

// csvHeader names the columns of a CSV usage report.
var csvHeader = []string{"group", "requests", "errors", "error_rate", "input_tokens", "output_tokens",
	"cache_creation_input_tokens", "cache_creation_5m_input_tokens", "cache_creation_1h_input_tokens",
	"cache_read_input_tokens", "web_search_requests", "web_fetch_requests", "total_tokens", "cost_usd"}

// writeUsageCSV writes the report's rows under a header row; a report
// without groups is one row, "total".
func writeUsageCSV(w http.ResponseWriter, rep UsageReport) {
	rows := rep.Data
	if rep.GroupBy == string(usage.GroupNone) {
		rows = []UsageRow{{Group: "total", UsageTotals: rep.Totals}}
	}
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Disposition", `attachment; filename="usage.csv"`)
	w.WriteHeader(http.StatusOK)
	cw := csv.NewWriter(w)
	_ = cw.Write(csvHeader)
	i := strconv.FormatInt
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	for _, row := range rows {
		t := row.UsageTotals
		_ = cw.Write([]string{csvText(row.Group), i(t.Requests, 10), i(t.Errors, 10), f(t.ErrorRate),
			i(t.InputTokens, 10), i(t.OutputTokens, 10), i(t.CacheCreationInputTokens, 10),
			i(t.CacheCreation5m, 10), i(t.CacheCreation1h, 10), i(t.CacheReadInputTokens, 10),
			i(t.WebSearchRequests, 10), i(t.WebFetchRequests, 10), i(t.TotalTokens, 10), f(t.CostUSD)})
	}
	cw.Flush()
}

// csvText defuses a cell a spreadsheet would run as a formula: model names
// come from clients, and a report is opened by an administrator.
func csvText(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// fail answers a store error, logging the ones that are the relay's fault.
func (u *usageRoutes) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := apierror.From(err, func(err error) *apierror.Error {
		switch {
		case errors.Is(err, usage.ErrInvalidCursor):
			return fieldError("cursor", "not a cursor this API returned")
		case errors.Is(err, usage.ErrInvalidQuery):
			return apierror.New(http.StatusBadRequest, "invalid report query")
		case errors.Is(err, context.Canceled):
			return apierror.New(http.StatusServiceUnavailable, "request canceled")
		}
		return nil
	})
	if e.Status >= 500 {
		u.h.log.LogAttrs(r.Context(), slog.LevelError, "admin usage report failed",
			slog.String("request_id", middleware.RequestIDFrom(r.Context())),
			slog.String("path", r.URL.Path), slog.String("error", err.Error()))
		if e.Status == http.StatusInternalServerError {
			e = apierror.New(http.StatusServiceUnavailable, "the usage store is unavailable; try again shortly")
		}
	}
	u.h.writeError(w, r, e)
}
