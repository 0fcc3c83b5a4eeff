package storagetest

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/relaystation/relay/usage"
)

// day0 is a UTC midnight; the report data set spans the days around it.
var day0 = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)

// dayN is the UTC midnight n days after day0.
func dayN(n int) time.Time { return day0.AddDate(0, 0, n) }

// reportDataset returns records over five UTC days (day -1 to day 3) with
// records at, just before and just after midnights, times with
// nanoseconds, several keys and models (one of them ""), and statuses on
// both sides of the error rule; and a few in 1969.
func reportDataset() []usage.Record {
	statuses := [...]int{200, 200, 400, 429, usage.StatusClientClosed, 529, 399, 201}
	models := [...]string{"claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5", ""}
	var times []time.Time
	// Every 37 minutes and a few nanoseconds from day -1 to day 3.
	for i := range 190 {
		times = append(times, dayN(-1).Add(time.Duration(i)*37*time.Minute+time.Duration(i%4)*333*time.Nanosecond))
	}
	// The edges of each day, to the microsecond: a store that buckets a
	// record into the wrong day, or rounds instead of truncating, shows.
	for d := -1; d <= 3; d++ {
		times = append(times, dayN(d), dayN(d).Add(time.Microsecond), dayN(d).Add(-time.Microsecond),
			dayN(d).Add(-time.Nanosecond), dayN(d).Add(999*time.Nanosecond), dayN(d).Add(30*time.Minute))
	}
	// Before 1970, where integer division truncates the wrong way.
	times = append(times, time.Date(1969, 12, 31, 23, 30, 0, 1000, time.UTC), time.Date(1969, 7, 20, 20, 17, 40, 999_999_999, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 999_999_000, time.UTC))
	recs := make([]usage.Record, len(times))
	for i, at := range times {
		recs[i] = usage.Record{
			RequestID: fmt.Sprintf("rep_%05d", (i*7919)%100000),
			// Given in a zone other than UTC: the store keeps the instant.
			Time:          at.In(time.FixedZone("W", -7*3600)),
			KeyID:         fmt.Sprintf("key%09d", i%3),
			Upstream:      "up",
			Method:        "POST",
			Path:          "/v1/messages",
			Model:         models[i%len(models)],
			ResponseModel: models[i%len(models)] + "-x",
			Stream:        i%2 == 0,
			Status:        statuses[i%len(statuses)],
			Usage: usage.Usage{
				InputTokens:              int64(i*100 + 1),
				OutputTokens:             int64(i * 10),
				CacheCreationInputTokens: int64(i%5) * 1000,
				CacheReadInputTokens:     int64(i%7) * 333,
				CacheCreation5m:          int64(i%5) * 600,
				CacheCreation1h:          int64(i%5) * 400,
				WebSearchRequests:        int64(i % 3),
				WebFetchRequests:         int64(i % 2),
				ServiceTier:              "standard",
			},
			Estimated: i%5 == 0,
			CostUSD:   float64(i)*0.0123 + 1e-7,
			Latency:   time.Duration(i) * time.Millisecond,
			TTFT:      time.Duration(i) * time.Microsecond,
		}
	}
	return recs
}

// refReport computes what Report must answer, straight from the records.
func refReport(recs []usage.Record, q usage.ReportQuery) usage.Report {
	loc := q.Location
	if loc == nil {
		loc = time.UTC
	}
	type group struct {
		at   time.Time
		name string
		recs []usage.Record
	}
	groups := map[string]*group{}
	var all []usage.Record
	for _, r := range recs {
		if !refMatch(r, q.Filter) {
			continue
		}
		all = append(all, r)
		g := group{}
		t := stored(r.Time).In(loc)
		switch q.GroupBy {
		case usage.GroupHour:
			// The test zones are fixed, so wall-clock hours are unambiguous.
			g.at = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), 0, 0, 0, loc)
			g.name = g.at.Format(time.RFC3339)
		case usage.GroupDay:
			g.at = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, loc)
			g.name = g.at.Format(time.RFC3339)
		case usage.GroupModel:
			g.name = r.Model
		case usage.GroupKey:
			g.name = r.KeyID
		default:
			continue
		}
		if groups[g.name] == nil {
			groups[g.name] = &g
		}
		groups[g.name].recs = append(groups[g.name].recs, r)
	}
	rep := usage.Report{Totals: refTotals(all, usage.Filter{})}
	var gs []*group
	for _, g := range groups {
		gs = append(gs, g)
	}
	slices.SortFunc(gs, func(a, b *group) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return cmp.Compare(a.name, b.name)
	})
	for _, g := range gs {
		rep.Rows = append(rep.Rows, usage.ReportRow{Group: g.name, Totals: refTotals(g.recs, usage.Filter{})})
	}
	return rep
}

func assertReport(t *testing.T, want, got usage.Report) {
	t.Helper()
	assertTotals(t, want.Totals, got.Totals)
	groups := func(r usage.Report) []string {
		var out []string
		for _, row := range r.Rows {
			out = append(out, row.Group)
		}
		return out
	}
	if !assert.Equal(t, groups(want), groups(got), "groups") {
		return
	}
	for i := range want.Rows {
		assertTotals(t, want.Rows[i].Totals, got.Rows[i].Totals)
	}
}

// reportFilters are the filters the report tests run every grouping with.
// Ranges are chosen against the UTC days of reportDataset: whole days
// (rollup only), partial days at either end (rollup and records), within
// one day or across one midnight without a whole day (records only).
func reportFilters() []struct {
	name string
	f    usage.Filter
} {
	k, m := "key000000001", "claude-opus-4-1"
	return []struct {
		name string
		f    usage.Filter
	}{
		{"everything", usage.Filter{}},
		{"key", usage.Filter{KeyID: k}},
		{"model", usage.Filter{Model: m}},
		{"empty model", usage.Filter{Model: ""}},
		{"key and model", usage.Filter{KeyID: "key000000002", Model: "claude-haiku-4-5"}},
		{"unknown key", usage.Filter{KeyID: "nope"}},
		{"whole days", usage.Filter{From: dayN(0), To: dayN(2)}},
		{"whole days, key", usage.Filter{KeyID: k, From: dayN(-1), To: dayN(3)}},
		{"partial days at both ends", usage.Filter{From: dayN(-1).Add(5 * time.Hour), To: dayN(2).Add(7*time.Hour + 30*time.Minute)}},
		{"partial days, key and model", usage.Filter{KeyID: k, Model: m, From: dayN(-1).Add(17 * time.Hour), To: dayN(3).Add(time.Hour)}},
		{"partial first day", usage.Filter{From: dayN(0).Add(time.Microsecond), To: dayN(2)}},
		{"partial last day", usage.Filter{From: dayN(0), To: dayN(2).Add(time.Microsecond)}},
		{"within one day", usage.Filter{From: dayN(1).Add(time.Hour), To: dayN(1).Add(20 * time.Hour)}},
		{"across one midnight", usage.Filter{From: dayN(1).Add(-time.Hour), To: dayN(1).Add(time.Hour)}},
		{"one day less a microsecond", usage.Filter{From: dayN(1), To: dayN(2).Add(-time.Microsecond)}},
		{"from only, unaligned", usage.Filter{From: dayN(1).Add(3 * time.Hour)}},
		{"from only, midnight", usage.Filter{From: dayN(1)}},
		{"to only, unaligned", usage.Filter{To: dayN(1).Add(3 * time.Hour)}},
		{"to only, midnight", usage.Filter{To: dayN(1)}},
		{"sub-microsecond from rounds up to a midnight", usage.Filter{From: dayN(0).Add(-time.Nanosecond), To: dayN(2)}},
		{"sub-microsecond to includes the midnight's microsecond", usage.Filter{From: dayN(0), To: dayN(2).Add(time.Nanosecond)}},
		{"bounds in other zones", usage.Filter{From: dayN(0).In(time.FixedZone("E", 9*3600)), To: dayN(2).Add(time.Hour).In(time.Local)}},
		{"from equals to", usage.Filter{From: dayN(1), To: dayN(1)}},
		{"from after to", usage.Filter{From: dayN(2), To: dayN(0)}},
		{"before every record", usage.Filter{To: dayN(-3)}},
	}
}

var reportGroups = []usage.GroupBy{"", usage.GroupNone, usage.GroupHour, usage.GroupDay, usage.GroupModel, usage.GroupKey}

// insertReplaying inserts recs in chunks, each replayed with the next, so
// that a store whose rollup counts skipped duplicates is caught.
func insertReplaying(t *testing.T, s usage.Store, recs []usage.Record) {
	t.Helper()
	ctx := context.Background()
	var prev []usage.Record
	for chunk := range slices.Chunk(recs, 47) {
		require.NoError(t, s.InsertRecords(ctx, append(slices.Clone(prev), chunk...)))
		prev = chunk
	}
	require.NoError(t, s.InsertRecords(ctx, recs[:10]))
}

func testReport(t *testing.T, s usage.Store) {
	ctx := context.Background()
	recs := reportDataset()
	insertReplaying(t, s, recs)
	for _, tc := range reportFilters() {
		for _, g := range reportGroups {
			t.Run(fmt.Sprintf("%s/group_by=%s", tc.name, g), func(t *testing.T) {
				q := usage.ReportQuery{Filter: tc.f, GroupBy: g}
				got, err := s.Report(ctx, q)
				require.NoError(t, err)
				assertReport(t, refReport(recs, q), got)
				if g == "" || g == usage.GroupNone {
					assert.Empty(t, got.Rows)
					tot, err := s.Totals(ctx, tc.f)
					require.NoError(t, err)
					assertTotals(t, got.Totals, tot)
				}
			})
		}
	}
	if tot, err := s.Totals(ctx, usage.Filter{}); assert.NoError(t, err) {
		// Guard the data set: it must exercise the error rule.
		assert.Equal(t, int64(len(recs)), tot.Requests)
		assert.Positive(t, tot.Errors)
		assert.Less(t, tot.Errors, tot.Requests)
	}
}

// testReportZones buckets days and hours in zones other than UTC, which
// RunReport reads from the records.
func testReportZones(t *testing.T, s usage.Store) {
	ctx := context.Background()
	recs := reportDataset()
	require.NoError(t, s.InsertRecords(ctx, recs))
	zones := []*time.Location{
		time.UTC,
		time.FixedZone("IST", 5*3600+1800),
		time.FixedZone("NPT", 5*3600+45*60),
		time.FixedZone("PST", -8*3600),
		time.FixedZone("Z", 0), // UTC by offset, not by pointer: the records path
	}
	filters := []usage.Filter{
		{},
		{KeyID: "key000000000", From: dayN(0).Add(-3 * time.Hour), To: dayN(2).Add(5 * time.Hour)},
		{From: dayN(0), To: dayN(2)},
	}
	for _, loc := range zones {
		for i, f := range filters {
			for _, g := range []usage.GroupBy{usage.GroupDay, usage.GroupHour} {
				t.Run(fmt.Sprintf("%s/%d/%s", loc, i, g), func(t *testing.T) {
					q := usage.ReportQuery{Filter: f, GroupBy: g, Location: loc}
					got, err := s.Report(ctx, q)
					require.NoError(t, err)
					assertReport(t, refReport(recs, q), got)
				})
			}
		}
	}
}

// testReportPathsAgree checks the daily rollup against the records
// directly: days read from the rollup (UTC) must equal the same days read
// from the records (a zero-offset zone that is not time.UTC), and the sum
// of a day's hours (always records).
func testReportPathsAgree(t *testing.T, s usage.Store) {
	ctx := context.Background()
	insertReplaying(t, s, reportDataset())
	for _, f := range []usage.Filter{{}, {KeyID: "key000000002"}, {Model: "claude-sonnet-4-5", From: dayN(0), To: dayN(3)}} {
		rollup, err := s.Report(ctx, usage.ReportQuery{Filter: f, GroupBy: usage.GroupDay})
		require.NoError(t, err)
		raw, err := s.Report(ctx, usage.ReportQuery{Filter: f, GroupBy: usage.GroupDay, Location: time.FixedZone("Z", 0)})
		require.NoError(t, err)
		assertReport(t, raw, rollup)
		require.NotEmpty(t, rollup.Rows)

		hours, err := s.Report(ctx, usage.ReportQuery{Filter: f, GroupBy: usage.GroupHour})
		require.NoError(t, err)
		byDay := map[string]usage.Totals{}
		for _, h := range hours.Rows {
			at, err := time.Parse(time.RFC3339, h.Group)
			require.NoError(t, err)
			d := at.UTC().Truncate(24 * time.Hour).Format(time.RFC3339)
			byDay[d] = addTotals(byDay[d], h.Totals)
		}
		require.Len(t, byDay, len(rollup.Rows))
		for _, row := range rollup.Rows {
			assertTotals(t, byDay[row.Group], row.Totals)
		}
	}
}

func addTotals(a, b usage.Totals) usage.Totals {
	a.Requests += b.Requests
	a.Errors += b.Errors
	a.Usage = a.Usage.Add(b.Usage)
	a.CostUSD += b.CostUSD
	return a
}

func testReportEmpty(t *testing.T, s usage.Store) {
	ctx := context.Background()
	for _, g := range reportGroups {
		got, err := s.Report(ctx, usage.ReportQuery{GroupBy: g})
		require.NoError(t, err)
		assert.Equal(t, usage.Totals{}, got.Totals)
		assert.Empty(t, got.Rows)
	}
}

func testReportInvalid(t *testing.T, s usage.Store) {
	ctx := context.Background()
	require.NoError(t, s.InsertRecords(ctx, reportDataset()[:5]))
	for _, g := range []usage.GroupBy{"week", "Day", "model,key"} {
		_, err := s.Report(ctx, usage.ReportQuery{GroupBy: g})
		require.ErrorIs(t, err, usage.ErrInvalidQuery, "group_by %q", g)
	}
}

// testPrune: records before the cut go, whole-day reports over them stay
// exact from the rollup, hours (records only) over them are empty.
func testPrune(t *testing.T, s usage.Store) {
	ctx := context.Background()
	recs := reportDataset()
	insertReplaying(t, s, recs)

	var kept []usage.Record
	for _, r := range recs {
		if !stored(r.Time).Before(dayN(1)) {
			kept = append(kept, r)
		}
	}
	// before is rounded down to its UTC midnight: day 1.
	n, err := s.Prune(ctx, dayN(1).Add(5*time.Hour).In(time.FixedZone("E", 9*3600)))
	require.NoError(t, err)
	require.Equal(t, int64(len(recs)-len(kept)), n)
	require.NotZero(t, n)
	assertRecords(t, refList(kept, usage.Filter{}), listAllRecords(t, s, usage.Filter{}, 100))

	for _, tc := range []struct {
		name string
		q    usage.ReportQuery
	}{
		{"everything", usage.ReportQuery{}},
		{"by day", usage.ReportQuery{GroupBy: usage.GroupDay}},
		{"by model", usage.ReportQuery{GroupBy: usage.GroupModel}},
		{"by key", usage.ReportQuery{GroupBy: usage.GroupKey}},
		{"pruned whole days", usage.ReportQuery{Filter: usage.Filter{From: dayN(-1), To: dayN(1)}, GroupBy: usage.GroupDay}},
		{"pruned and kept, key", usage.ReportQuery{Filter: usage.Filter{KeyID: "key000000001", From: dayN(-1), To: dayN(2).Add(3 * time.Hour)}}},
		{"to the cut", usage.ReportQuery{Filter: usage.Filter{To: dayN(1)}, GroupBy: usage.GroupModel}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Report(ctx, tc.q)
			require.NoError(t, err)
			assertReport(t, refReport(recs, tc.q), got)
		})
	}
	t.Run("hours read records", func(t *testing.T) {
		q := usage.ReportQuery{Filter: usage.Filter{From: dayN(-1), To: dayN(3)}, GroupBy: usage.GroupHour}
		got, err := s.Report(ctx, q)
		require.NoError(t, err)
		assertReport(t, refReport(kept, q), got)
	})

	// Pruning again, or to an earlier time, finds nothing left to prune.
	for _, before := range []time.Time{dayN(1), dayN(1).Add(23 * time.Hour), dayN(0), {}} {
		n, err = s.Prune(ctx, before)
		require.NoError(t, err)
		require.Zero(t, n, "prune %v", before)
	}
	// A record arriving late for a pruned day is counted in its day.
	late := fullRecord("req_late", dayN(0).Add(time.Hour))
	require.NoError(t, s.InsertRecords(ctx, []usage.Record{late}))
	got, err := s.Report(ctx, usage.ReportQuery{GroupBy: usage.GroupDay})
	require.NoError(t, err)
	assertReport(t, refReport(append(slices.Clone(recs), late), usage.ReportQuery{GroupBy: usage.GroupDay}), got)

	// Pruning everything leaves totals intact.
	n, err = s.Prune(ctx, dayN(10))
	require.NoError(t, err)
	require.Equal(t, int64(len(kept)+1), n)
	tot, err := s.Totals(ctx, usage.Filter{})
	require.NoError(t, err)
	assertTotals(t, refTotals(append(slices.Clone(recs), late), usage.Filter{}), tot)
	page, next, err := s.ListRecords(ctx, usage.Filter{}, "", 10)
	require.NoError(t, err)
	require.Empty(t, page)
	require.Empty(t, next)
}

// testPruneChunks prunes more records than a backend deletes per
// statement, and with the cut inside a run of equal times.
func testPruneChunks(t *testing.T, s usage.Store) {
	ctx := context.Background()
	const n = 12345
	recs := make([]usage.Record, n)
	for i := range recs {
		recs[i] = usage.Record{
			RequestID: fmt.Sprintf("chunk_%06d", i), Time: dayN(-1).Add(time.Duration(i) * 10 * time.Second),
			KeyID: "k", Status: 200, Usage: usage.Usage{InputTokens: 1},
		}
	}
	for chunk := range slices.Chunk(recs, 2000) {
		require.NoError(t, s.InsertRecords(ctx, chunk))
	}
	want := 0
	for _, r := range recs {
		if r.Time.Before(dayN(0)) {
			want++
		}
	}
	got, err := s.Prune(ctx, dayN(0).Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, int64(want), got)
	tot, err := s.Totals(ctx, usage.Filter{From: dayN(-1)})
	require.NoError(t, err)
	require.Equal(t, int64(n), tot.Requests)
	tot, err = s.Totals(ctx, usage.Filter{From: dayN(-1).Add(time.Second)})
	require.NoError(t, err)
	require.Equal(t, int64(n-want), tot.Requests, "a partial pruned day reads only its records")
}
