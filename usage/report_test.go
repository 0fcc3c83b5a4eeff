package usage_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // America/New_York on hosts without a zone database

	"github.com/relaystation/relay/usage"
)

// fakeAgg records the aggregates RunReport asks for and answers each with
// the buckets of answer.
type fakeAgg struct {
	daily, raw []usage.Aggregate
	answer     func(daily bool, a usage.Aggregate) []usage.Bucket
	err        error
}

func (f *fakeAgg) SumDaily(_ context.Context, a usage.Aggregate) ([]usage.Bucket, error) {
	f.daily = append(f.daily, a)
	return f.reply(true, a)
}

func (f *fakeAgg) SumRecords(_ context.Context, a usage.Aggregate) ([]usage.Bucket, error) {
	f.raw = append(f.raw, a)
	return f.reply(false, a)
}

func (f *fakeAgg) reply(daily bool, a usage.Aggregate) ([]usage.Bucket, error) {
	if f.err != nil {
		return nil, f.err
	}
	if f.answer == nil {
		return nil, nil
	}
	return f.answer(daily, a), nil
}

type span struct{ from, to time.Time }

func spans(as []usage.Aggregate) []span {
	var out []span
	for _, a := range as {
		out = append(out, span{a.From, a.To})
	}
	return out
}

func equalSpans(a, b []span) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].from.Equal(b[i].from) || !a[i].to.Equal(b[i].to) || a[i].from.IsZero() != b[i].from.IsZero() {
			return false
		}
	}
	return true
}

// TestRunReportPlan pins down which ranges come from the rollup and which
// from the records.
func TestRunReportPlan(t *testing.T) {
	d := func(n int) time.Time { return time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, n) }
	var zero time.Time
	ist := time.FixedZone("IST", 5*3600+1800)
	tests := []struct {
		name       string
		q          usage.ReportQuery
		daily, raw []span
		slot       time.Duration
	}{
		{"unbounded", usage.ReportQuery{}, []span{{zero, zero}}, nil, 0},
		{"whole days", usage.ReportQuery{Filter: usage.Filter{From: d(0), To: d(30)}}, []span{{d(0), d(30)}}, nil, 0},
		{"partial days at both ends",
			usage.ReportQuery{Filter: usage.Filter{From: d(0).Add(time.Hour), To: d(30).Add(2 * time.Hour)}},
			[]span{{d(1), d(30)}}, []span{{d(0).Add(time.Hour), d(1)}, {d(30), d(30).Add(2 * time.Hour)}}, 0},
		{"from only", usage.ReportQuery{Filter: usage.Filter{From: d(0).Add(time.Hour)}},
			[]span{{d(1), zero}}, []span{{d(0).Add(time.Hour), d(1)}}, 0},
		{"to only", usage.ReportQuery{Filter: usage.Filter{To: d(3).Add(time.Hour)}},
			[]span{{zero, d(3)}}, []span{{d(3), d(3).Add(time.Hour)}}, 0},
		{"nanoseconds round up", usage.ReportQuery{Filter: usage.Filter{From: d(0).Add(-time.Nanosecond), To: d(1).Add(time.Nanosecond)}},
			[]span{{d(0), d(1)}}, []span{{d(1), d(1).Add(time.Microsecond)}}, 0},
		{"within a day", usage.ReportQuery{Filter: usage.Filter{From: d(0).Add(time.Hour), To: d(0).Add(2 * time.Hour)}},
			nil, []span{{d(0).Add(time.Hour), d(0).Add(2 * time.Hour)}}, 0},
		{"across a midnight", usage.ReportQuery{Filter: usage.Filter{From: d(0).Add(time.Hour), To: d(1).Add(time.Hour)}},
			nil, []span{{d(0).Add(time.Hour), d(1).Add(time.Hour)}}, 0},
		{"bounds in a zone", usage.ReportQuery{Filter: usage.Filter{From: d(1).In(ist), To: d(2).In(ist)}},
			[]span{{d(1), d(2)}}, nil, 0},
		{"day in UTC", usage.ReportQuery{Filter: usage.Filter{From: d(0).Add(time.Hour), To: d(5)}, GroupBy: usage.GroupDay},
			[]span{{d(1), d(5)}}, []span{{d(0).Add(time.Hour), d(1)}}, 24 * time.Hour},
		{"day elsewhere reads records", usage.ReportQuery{Filter: usage.Filter{From: d(0), To: d(5)}, GroupBy: usage.GroupDay, Location: ist},
			nil, []span{{d(0), d(5)}}, 15 * time.Minute},
		{"hour reads records", usage.ReportQuery{Filter: usage.Filter{From: d(0), To: d(5)}, GroupBy: usage.GroupHour},
			nil, []span{{d(0), d(5)}}, time.Hour},
		{"hour elsewhere", usage.ReportQuery{GroupBy: usage.GroupHour, Location: ist},
			nil, []span{{zero, zero}}, 15 * time.Minute},
		{"model", usage.ReportQuery{Filter: usage.Filter{To: d(1)}, GroupBy: usage.GroupModel}, []span{{zero, d(1)}}, nil, 0},
		{"from equals to", usage.ReportQuery{Filter: usage.Filter{From: d(1), To: d(1)}}, nil, nil, 0},
		{"from after to", usage.ReportQuery{Filter: usage.Filter{From: d(2), To: d(1)}}, nil, nil, 0},
		{"same microsecond", usage.ReportQuery{Filter: usage.Filter{From: d(1).Add(1), To: d(1).Add(999)}}, nil, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeAgg{}
			rep, err := usage.RunReport(context.Background(), f, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if !equalSpans(spans(f.daily), tc.daily) || !equalSpans(spans(f.raw), tc.raw) {
				t.Errorf("daily %v, records %v\nwant daily %v, records %v", spans(f.daily), spans(f.raw), tc.daily, tc.raw)
			}
			for _, a := range append(f.daily, f.raw...) {
				if a.Slot != tc.slot {
					t.Errorf("slot %v, want %v", a.Slot, tc.slot)
				}
			}
			if len(rep.Rows) != 0 || rep.Totals != (usage.Totals{}) {
				t.Errorf("report from nothing: %+v", rep)
			}
		})
	}
}

func TestRunReportMerges(t *testing.T) {
	d0 := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	tot := func(n int64) usage.Totals {
		return usage.Totals{Requests: n, Errors: 1, CostUSD: float64(n), Usage: usage.Usage{InputTokens: n, ServiceTier: "standard"}}
	}
	f := &fakeAgg{answer: func(daily bool, a usage.Aggregate) []usage.Bucket {
		if daily {
			return []usage.Bucket{{Start: d0.AddDate(0, 0, 1), Totals: tot(10)}, {Start: d0.AddDate(0, 0, 2), Totals: tot(20)}}
		}
		// The partial days at both ends, and a bucket without requests.
		return []usage.Bucket{{Start: a.From.Truncate(24 * time.Hour), Totals: tot(1)}, {Start: d0.AddDate(0, 0, 9)}}
	}}
	rep, err := usage.RunReport(context.Background(), f, usage.ReportQuery{
		Filter: usage.Filter{From: d0.Add(time.Hour), To: d0.AddDate(0, 0, 2).Add(time.Hour)}, GroupBy: usage.GroupDay,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []usage.ReportRow{
		{Group: "2025-03-01T00:00:00Z", Totals: usage.Totals{Requests: 1, Errors: 1, CostUSD: 1, Usage: usage.Usage{InputTokens: 1}}},
		{Group: "2025-03-02T00:00:00Z", Totals: usage.Totals{Requests: 10, Errors: 1, CostUSD: 10, Usage: usage.Usage{InputTokens: 10}}},
		{Group: "2025-03-03T00:00:00Z", Totals: usage.Totals{Requests: 21, Errors: 2, CostUSD: 21, Usage: usage.Usage{InputTokens: 21}}},
	}
	if len(rep.Rows) != len(want) {
		t.Fatalf("rows %+v", rep.Rows)
	}
	for i := range want {
		if rep.Rows[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, rep.Rows[i], want[i])
		}
	}
	if rep.Totals != (usage.Totals{Requests: 32, Errors: 4, CostUSD: 32, Usage: usage.Usage{InputTokens: 32}}) {
		t.Errorf("totals %+v", rep.Totals)
	}
}

// TestRunReportHoursAcrossDST: the hour repeated when clocks go back is
// two rows, each with its own offset; days follow the zone's midnights.
func TestRunReportHoursAcrossDST(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	// 2025-11-02 01:00 EDT is 05:00Z; 01:00 EST is 06:00Z.
	slots := []time.Time{
		time.Date(2025, 11, 2, 5, 0, 0, 0, time.UTC), time.Date(2025, 11, 2, 5, 45, 0, 0, time.UTC),
		time.Date(2025, 11, 2, 6, 15, 0, 0, time.UTC), time.Date(2025, 11, 3, 4, 45, 0, 0, time.UTC),
		time.Date(2025, 11, 3, 5, 0, 0, 0, time.UTC),
	}
	f := &fakeAgg{answer: func(_ bool, a usage.Aggregate) []usage.Bucket {
		var bs []usage.Bucket
		for _, s := range slots {
			bs = append(bs, usage.Bucket{Start: s, Totals: usage.Totals{Requests: 1}})
		}
		return bs
	}}
	groups := func(g usage.GroupBy) []string {
		rep, err := usage.RunReport(context.Background(), f, usage.ReportQuery{GroupBy: g, Location: ny})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rep.Rows {
			out = append(out, r.Group)
		}
		return out
	}
	want := []string{"2025-11-02T01:00:00-04:00", "2025-11-02T01:00:00-05:00", "2025-11-02T23:00:00-05:00", "2025-11-03T00:00:00-05:00"}
	if got := groups(usage.GroupHour); !equal(got, want) {
		t.Errorf("hours %q\nwant %q", got, want)
	}
	want = []string{"2025-11-02T00:00:00-04:00", "2025-11-03T00:00:00-05:00"}
	if got := groups(usage.GroupDay); !equal(got, want) {
		t.Errorf("days %q\nwant %q", got, want)
	}
}

func equal(a, b []string) bool {
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

func TestRunReportErrors(t *testing.T) {
	f := &fakeAgg{}
	_, err := usage.RunReport(context.Background(), f, usage.ReportQuery{GroupBy: "week"})
	if !errors.Is(err, usage.ErrInvalidQuery) || len(f.daily)+len(f.raw) != 0 {
		t.Errorf("unknown group: %v, %d queries", err, len(f.daily)+len(f.raw))
	}
	boom := errors.New("boom")
	f = &fakeAgg{err: boom}
	if _, err := usage.RunReport(context.Background(), f, usage.ReportQuery{}); !errors.Is(err, boom) {
		t.Errorf("store error: %v", err)
	}
	for _, g := range []usage.GroupBy{"", "none", "hour", "day", "model", "key"} {
		if !g.Valid() {
			t.Errorf("%q not valid", g)
		}
	}
}

// fakePruner records Prune calls.
type fakePruner struct {
	mu    sync.Mutex
	calls []time.Time
	err   error
	n     int64
	after func(calls int)
}

func (p *fakePruner) Prune(_ context.Context, before time.Time) (int64, error) {
	p.mu.Lock()
	p.calls = append(p.calls, before)
	n := len(p.calls)
	p.mu.Unlock()
	if p.after != nil {
		p.after(n)
	}
	return p.n, p.err
}

func TestRunRetention(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return now }

	t.Run("keep forever", func(t *testing.T) {
		p := &fakePruner{}
		usage.RunRetention(context.Background(), p, 0, time.Millisecond, clock, nil)
		if len(p.calls) != 0 {
			t.Errorf("pruned with keep 0: %v", p.calls)
		}
	})
	t.Run("prunes at once and on every tick until ctx ends", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var logs bytes.Buffer
		var mu sync.Mutex
		log := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))
		p := &fakePruner{n: 3, after: func(n int) {
			if n == 3 {
				cancel()
			}
		}}
		done := make(chan struct{})
		go func() { usage.RunRetention(ctx, p, 30*24*time.Hour, time.Millisecond, clock, log); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("RunRetention did not return after ctx ended")
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.calls) != 3 {
			t.Fatalf("%d prunes", len(p.calls))
		}
		for _, c := range p.calls {
			if !c.Equal(now.Add(-30 * 24 * time.Hour)) {
				t.Errorf("pruned before %v", c)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if !bytes.Contains(logs.Bytes(), []byte("records=3")) {
			t.Errorf("log: %s", logs.String())
		}
	})
	t.Run("a failure is logged and retried", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var logs bytes.Buffer
		var mu sync.Mutex
		log := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))
		p := &fakePruner{err: errors.New("database is locked"), after: func(n int) {
			if n == 2 {
				cancel()
			}
		}}
		usage.RunRetention(ctx, p, time.Hour, time.Millisecond, clock, log)
		mu.Lock()
		defer mu.Unlock()
		if !bytes.Contains(logs.Bytes(), []byte("database is locked")) || len(p.calls) != 2 {
			t.Errorf("%d calls, log: %s", len(p.calls), logs.String())
		}
	})
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
