package storagetest

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/relaystation/relay/usage"
)

// TestUsageStore runs the usage.Store conformance suite. newStore must
// return a new, empty store each time it is called.
func TestUsageStore(t *testing.T, newStore func(t *testing.T) usage.Store) {
	t.Run("RoundTrip", func(t *testing.T) { t.Parallel(); testRecordRoundTrip(t, newStore(t)) })
	t.Run("NoAliasing", func(t *testing.T) { t.Parallel(); testRecordNoAliasing(t, newStore(t)) })
	t.Run("Empty", func(t *testing.T) { t.Parallel(); testUsageEmpty(t, newStore(t)) })
	t.Run("Idempotent", func(t *testing.T) { t.Parallel(); testInsertIdempotent(t, newStore) })
	t.Run("Totals", func(t *testing.T) { t.Parallel(); testTotals(t, newStore(t)) })
	t.Run("ListRecords", func(t *testing.T) { t.Parallel(); testListRecords(t, newStore(t)) })
	t.Run("ListTies", func(t *testing.T) { t.Parallel(); testListTies(t, newStore(t)) })
	t.Run("ListDefaultLimit", func(t *testing.T) { t.Parallel(); testListDefaultLimit(t, newStore(t)) })
	t.Run("ListCursorSurvivesInserts", func(t *testing.T) { t.Parallel(); testCursorSurvivesInserts(t, newStore(t)) })
	t.Run("ListBadCursor", func(t *testing.T) { t.Parallel(); testListBadCursor(t, newStore(t)) })
	t.Run("Concurrent", func(t *testing.T) { t.Parallel(); testUsageConcurrent(t, newStore(t)) })
	t.Run("Report", func(t *testing.T) { t.Parallel(); testReport(t, newStore(t)) })
	t.Run("ReportZones", func(t *testing.T) { t.Parallel(); testReportZones(t, newStore(t)) })
	t.Run("ReportPathsAgree", func(t *testing.T) { t.Parallel(); testReportPathsAgree(t, newStore(t)) })
	t.Run("ReportEmpty", func(t *testing.T) { t.Parallel(); testReportEmpty(t, newStore(t)) })
	t.Run("ReportInvalid", func(t *testing.T) { t.Parallel(); testReportInvalid(t, newStore(t)) })
	t.Run("Prune", func(t *testing.T) { t.Parallel(); testPrune(t, newStore(t)) })
	t.Run("PruneChunks", func(t *testing.T) { t.Parallel(); testPruneChunks(t, newStore(t)) })
}

// fullRecord sets every field of usage.Record.
func fullRecord(id string, at time.Time) usage.Record {
	return usage.Record{
		RequestID:     id,
		Time:          at,
		KeyID:         "key000000001",
		Upstream:      "primary-1",
		Method:        "POST",
		Path:          "/v1/messages?beta=true",
		Model:         "claude-sonnet-4-5",
		ResponseModel: "claude-sonnet-4-5-20250929",
		Stream:        true,
		Status:        529,
		ErrorType:     "overloaded_error",
		Usage: usage.Usage{
			InputTokens:              1_234_567_890_123,
			OutputTokens:             2,
			CacheCreationInputTokens: 3,
			CacheReadInputTokens:     4,
			CacheCreation5m:          5,
			CacheCreation1h:          6,
			WebSearchRequests:        7,
			WebFetchRequests:         8,
			ServiceTier:              "priority",
		},
		Estimated: true,
		CostUSD:   0.1 + 0.2, // not exactly representable: the store must keep every bit
		Latency:   12*time.Second + 345*time.Nanosecond,
		TTFT:      678 * time.Millisecond,
		ClientIP:  "2001:db8::1",
		UserAgent: "claude-cli/2.0.14 (external, cli) \"quoted\" ünïcode",
		SessionID: "0b7f6f9e-4c1e-4a57-9d3e-3a4c2d1e0f00",
	}
}

func testRecordRoundTrip(t *testing.T, s usage.Store) {
	ctx := context.Background()
	t0 := baseTime()
	tests := []struct {
		name string
		rec  usage.Record
	}{
		{"every field", fullRecord("req_full", t0)},
		{"zero values", usage.Record{RequestID: "req_zero"}},
		{"negative and tiny values", usage.Record{
			RequestID: "req_neg", Time: time.Date(1969, 7, 20, 20, 17, 40, 999_999_999, time.UTC), KeyID: "k",
			Status: -1, Usage: usage.Usage{InputTokens: -5}, CostUSD: math.SmallestNonzeroFloat64,
			Latency: -time.Nanosecond, TTFT: math.MaxInt64,
		}},
		{"client closed", usage.Record{
			RequestID: "req_499", Time: t0.Add(time.Nanosecond), KeyID: "k", Status: usage.StatusClientClosed,
			CostUSD: 1e300,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, s.InsertRecords(ctx, []usage.Record{tc.rec}))
			at := stored(tc.rec.Time)
			got, next, err := s.ListRecords(ctx, usage.Filter{KeyID: tc.rec.KeyID, From: at, To: at.Add(time.Microsecond)}, "", 10)
			require.NoError(t, err)
			require.Empty(t, next)
			var match []usage.Record
			for _, r := range got {
				if r.RequestID == tc.rec.RequestID {
					match = append(match, r)
				}
			}
			assertRecords(t, []usage.Record{tc.rec}, match)
		})
	}
}

func testRecordNoAliasing(t *testing.T, s usage.Store) {
	ctx := context.Background()
	in := []usage.Record{fullRecord("req_a", baseTime()), fullRecord("req_b", baseTime().Add(time.Second))}
	want := slices.Clone(in)
	require.NoError(t, s.InsertRecords(ctx, in))
	in[0].Usage.InputTokens = 99
	in[1].KeyID = "changed"

	got, _, err := s.ListRecords(ctx, usage.Filter{}, "", 10)
	require.NoError(t, err)
	got[0].Usage.OutputTokens = 99
	got, _, err = s.ListRecords(ctx, usage.Filter{}, "", 10)
	require.NoError(t, err)
	assertRecords(t, []usage.Record{want[1], want[0]}, got)
}

func testUsageEmpty(t *testing.T, s usage.Store) {
	ctx := context.Background()
	require.NoError(t, s.InsertRecords(ctx, nil))
	require.NoError(t, s.InsertRecords(ctx, []usage.Record{}))
	tot, err := s.Totals(ctx, usage.Filter{})
	require.NoError(t, err)
	require.Equal(t, usage.Totals{}, tot)
	got, next, err := s.ListRecords(ctx, usage.Filter{}, "", 10)
	require.NoError(t, err)
	require.Empty(t, got)
	require.Empty(t, next)
}

func testInsertIdempotent(t *testing.T, newStore func(t *testing.T) usage.Store) {
	ctx := context.Background()
	t0 := baseTime()
	a := fullRecord("req_a", t0)
	a2 := a // same RequestID, different content: must be ignored
	a2.Usage.InputTokens, a2.CostUSD, a2.Status, a2.Time = 1, 99, 200, t0.Add(time.Hour)
	b := fullRecord("req_b", t0.Add(time.Minute))
	c := fullRecord("req_c", t0.Add(2*time.Minute))

	tests := []struct {
		name    string
		batches [][]usage.Record
		want    []usage.Record // newest first
	}{
		{"same record twice", [][]usage.Record{{a}, {a}}, []usage.Record{a}},
		{"changed record is skipped, not merged", [][]usage.Record{{a}, {a2}}, []usage.Record{a}},
		{"duplicate within one batch keeps the first", [][]usage.Record{{a, a2, a}}, []usage.Record{a}},
		{"replayed batch with new records", [][]usage.Record{{a, b}, {b, c, a2}}, []usage.Record{c, b, a}},
		{"whole batch replayed", [][]usage.Record{{a, b, c}, {a, b, c}, {c, b, a}}, []usage.Record{c, b, a}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			for _, batch := range tc.batches {
				require.NoError(t, s.InsertRecords(ctx, batch))
			}
			got, _, err := s.ListRecords(ctx, usage.Filter{}, "", 100)
			require.NoError(t, err)
			assertRecords(t, tc.want, got)
			tot, err := s.Totals(ctx, usage.Filter{})
			require.NoError(t, err)
			assertTotals(t, refTotals(tc.want, usage.Filter{}), tot)
		})
	}
}

// dataset returns n records spread over keys, models, statuses and times,
// several sharing one stored time (they differ below a microsecond) so that
// ties are ordered by RequestID, which is deliberately not in time order.
func dataset(n int) []usage.Record {
	t0 := stored(baseTime()).In(baseTime().Location())
	statuses := [...]int{200, 200, 400, 429, usage.StatusClientClosed, 529, 399}
	models := [...]string{"claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5", ""}
	recs := make([]usage.Record, n)
	for i := range recs {
		recs[i] = usage.Record{
			RequestID:     fmt.Sprintf("req_%04d", (i*7919)%10000),
			Time:          t0.Add(time.Duration(i%20)*13*time.Minute + time.Duration((i*37)%1000)),
			KeyID:         fmt.Sprintf("key%09d", i%3),
			Upstream:      "up",
			Method:        "POST",
			Path:          "/v1/messages",
			Model:         models[i%4],
			ResponseModel: models[i%4] + "-x",
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

func refMatch(r usage.Record, f usage.Filter) bool {
	at := stored(r.Time)
	return (f.KeyID == "" || r.KeyID == f.KeyID) &&
		(f.Model == "" || r.Model == f.Model) &&
		(f.From.IsZero() || !at.Before(f.From)) &&
		(f.To.IsZero() || at.Before(f.To))
}

func refTotals(recs []usage.Record, f usage.Filter) usage.Totals {
	var t usage.Totals
	for _, r := range recs {
		if !refMatch(r, f) {
			continue
		}
		t.Requests++
		if r.Status >= 400 {
			t.Errors++
		}
		t.Usage = t.Usage.Add(r.Usage)
		t.CostUSD += r.CostUSD
	}
	return t
}

// refList is the matching records newest first, ties by RequestID
// descending.
func refList(recs []usage.Record, f usage.Filter) []usage.Record {
	var out []usage.Record
	for _, r := range recs {
		if refMatch(r, f) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b usage.Record) int {
		if c := stored(b.Time).Compare(stored(a.Time)); c != 0 {
			return c
		}
		return cmp.Compare(b.RequestID, a.RequestID)
	})
	return out
}

func assertTotals(t *testing.T, want, got usage.Totals) {
	t.Helper()
	// Sums of floats depend on the order of addition, which a database
	// chooses; everything else is exact.
	assert.InDelta(t, want.CostUSD, got.CostUSD, 1e-9*math.Max(1, math.Abs(want.CostUSD)), "CostUSD")
	want.CostUSD, got.CostUSD = 0, 0
	assert.Equal(t, want, got)
}

// filterCases are shared by the Totals and ListRecords tests.
func filterCases() []struct {
	name string
	f    usage.Filter
} {
	t0 := stored(baseTime())
	g := func(n int) time.Time { return t0.Add(time.Duration(n) * 13 * time.Minute) } // time of group n
	return []struct {
		name string
		f    usage.Filter
	}{
		{"everything", usage.Filter{}},
		{"key", usage.Filter{KeyID: "key000000001"}},
		{"model", usage.Filter{Model: "claude-opus-4-1"}},
		{"key and model", usage.Filter{KeyID: "key000000002", Model: "claude-haiku-4-5"}},
		{"unknown key", usage.Filter{KeyID: "nope"}},
		{"unknown model", usage.Filter{Model: "gpt"}},
		{"from is inclusive", usage.Filter{From: g(5)}},
		{"to is exclusive", usage.Filter{To: g(10)}},
		{"from and to", usage.Filter{From: g(5), To: g(10)}},
		{"bounds in another zone", usage.Filter{From: g(5).In(time.FixedZone("W", -7*3600)), To: g(10).In(time.Local)}},
		{"sub-microsecond from excludes its microsecond", usage.Filter{From: g(5).Add(time.Nanosecond)}},
		{"sub-microsecond to includes its microsecond", usage.Filter{To: g(10).Add(time.Nanosecond)}},
		{"from just below a microsecond", usage.Filter{From: g(5).Add(-time.Nanosecond), To: g(6).Add(-time.Nanosecond)}},
		{"one microsecond wide", usage.Filter{From: g(7), To: g(7).Add(time.Microsecond)}},
		{"from equals to", usage.Filter{From: g(7), To: g(7)}},
		{"from after to", usage.Filter{From: g(9), To: g(3)}},
		{"all filters", usage.Filter{KeyID: "key000000000", Model: "claude-sonnet-4-5", From: g(2), To: g(17)}},
	}
}

func testTotals(t *testing.T, s usage.Store) {
	ctx := context.Background()
	recs := dataset(140)
	// Several batches, to catch a store that only aggregates per batch.
	for chunk := range slices.Chunk(recs, 33) {
		require.NoError(t, s.InsertRecords(ctx, chunk))
	}
	for _, tc := range filterCases() {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Totals(ctx, tc.f)
			require.NoError(t, err)
			want := refTotals(recs, tc.f)
			assertTotals(t, want, got)
			if tc.name == "everything" {
				// Guard the reference itself: the data set must exercise the
				// error rule (399 is not an error; 400, 429, 499, 529 are).
				require.Equal(t, int64(140), got.Requests)
				require.Equal(t, int64(80), got.Errors)
			}
		})
	}
}

// listAllRecords follows cursors to the end and checks the page rules.
func listAllRecords(t *testing.T, s usage.Store, f usage.Filter, limit int) []usage.Record {
	t.Helper()
	ctx := context.Background()
	pageMax := limit
	if pageMax <= 0 {
		pageMax = 100
	}
	var out []usage.Record
	cursor := ""
	for page := 0; ; page++ {
		require.Less(t, page, 10000, "pagination does not end")
		got, next, err := s.ListRecords(ctx, f, cursor, limit)
		require.NoError(t, err)
		require.LessOrEqual(t, len(got), pageMax)
		out = append(out, got...)
		if next == "" {
			return out
		}
		require.Len(t, got, pageMax, "only the last page may be short, and never empty")
		cursor = next
	}
}

func testListRecords(t *testing.T, s usage.Store) {
	ctx := context.Background()
	recs := dataset(80)
	for chunk := range slices.Chunk(recs, 30) {
		require.NoError(t, s.InsertRecords(ctx, chunk))
	}
	for _, tc := range filterCases() {
		want := refList(recs, tc.f)
		for _, limit := range []int{1, 7, len(want), 1000} {
			switch {
			case limit == 0:
				continue // covered by ListDefaultLimit
			case limit == 1 && len(want) > 20:
				continue // one query per record: slow under -race, and limit 7 covers it
			}
			t.Run(fmt.Sprintf("%s/limit=%d", tc.name, limit), func(t *testing.T) {
				assertRecords(t, want, listAllRecords(t, s, tc.f, limit))
			})
		}
	}
}

func testListTies(t *testing.T, s usage.Store) {
	ctx := context.Background()
	t0 := stored(baseTime())
	var recs []usage.Record
	// Inserted in an order that is neither time nor id order; the ones at
	// t0 differ only in nanoseconds, which the store drops.
	for i, id := range []string{"m", "b", "z", "a", "B", "y", "c"} {
		at := t0.Add(time.Duration(i*100) * time.Nanosecond)
		if id == "y" {
			at = t0.Add(time.Microsecond)
		}
		if id == "B" {
			at = t0.Add(-time.Microsecond)
		}
		recs = append(recs, usage.Record{RequestID: id, Time: at, KeyID: "k"})
	}
	require.NoError(t, s.InsertRecords(ctx, recs))
	var ids []string
	for _, r := range listAllRecords(t, s, usage.Filter{}, 2) {
		ids = append(ids, r.RequestID)
	}
	require.Equal(t, []string{"y", "z", "m", "c", "b", "a", "B"}, ids)
}

func testListDefaultLimit(t *testing.T, s usage.Store) {
	ctx := context.Background()
	recs := dataset(150)
	require.NoError(t, s.InsertRecords(ctx, recs))
	want := refList(recs, usage.Filter{})
	for _, limit := range []int{0, -5} {
		got, next, err := s.ListRecords(ctx, usage.Filter{}, "", limit)
		require.NoError(t, err)
		require.Len(t, got, 100, "limit %d means 100", limit)
		require.NotEmpty(t, next)
		assertRecords(t, want[:100], got)
	}
}

// testCursorSurvivesInserts: cursors are positions in the ordering, not
// offsets, so records written between two page requests neither repeat nor
// hide older records.
func testCursorSurvivesInserts(t *testing.T, s usage.Store) {
	ctx := context.Background()
	recs := dataset(30)
	require.NoError(t, s.InsertRecords(ctx, recs))
	want := refList(recs, usage.Filter{})

	first, cursor, err := s.ListRecords(ctx, usage.Filter{}, "", 10)
	require.NoError(t, err)
	require.NotEmpty(t, cursor)
	assertRecords(t, want[:10], first)

	newer := fullRecord("req_newer", baseTime().Add(1000*time.Hour))
	older := fullRecord("req_older", baseTime().Add(-1000*time.Hour))
	require.NoError(t, s.InsertRecords(ctx, []usage.Record{newer, older}))

	var rest []usage.Record
	for cursor != "" {
		var page []usage.Record
		page, cursor, err = s.ListRecords(ctx, usage.Filter{}, cursor, 10)
		require.NoError(t, err)
		rest = append(rest, page...)
	}
	assertRecords(t, append(slices.Clone(want[10:]), older), rest)
}

func testListBadCursor(t *testing.T, s usage.Store) {
	ctx := context.Background()
	require.NoError(t, s.InsertRecords(ctx, dataset(3)))
	for _, c := range []string{"not a cursor", "!!!", "key000000001"} {
		_, _, err := s.ListRecords(ctx, usage.Filter{}, c, 10)
		require.ErrorIs(t, err, usage.ErrInvalidCursor, "cursor %q", c)
	}
}

// testUsageConcurrent inserts from several goroutines, with overlapping
// batches, while others read. Run under -race it checks the store's locking;
// the totals check that no insert was lost and none counted twice.
func testUsageConcurrent(t *testing.T, s usage.Store) {
	ctx := context.Background()
	const workers = 8
	recs := dataset(400)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }
	for w := range workers {
		wg.Go(func() {
			// Each worker inserts its share, then replays a neighbour's share
			// as a recorder retrying after a timeout would.
			mine := recs[w*len(recs)/workers : (w+1)*len(recs)/workers]
			next := (w + 1) % workers
			theirs := recs[next*len(recs)/workers : (next+1)*len(recs)/workers]
			for batch := range slices.Chunk(mine, 10) {
				if err := s.InsertRecords(ctx, batch); err != nil {
					fail(err)
				}
				if _, err := s.Totals(ctx, usage.Filter{KeyID: "key000000001"}); err != nil {
					fail(err)
				}
				if _, _, err := s.ListRecords(ctx, usage.Filter{}, "", 5); err != nil {
					fail(err)
				}
			}
			for batch := range slices.Chunk(theirs, 25) {
				if err := s.InsertRecords(ctx, batch); err != nil {
					fail(err)
				}
			}
		})
	}
	wg.Wait()
	require.Empty(t, errs)
	for _, f := range []usage.Filter{{}, {KeyID: "key000000002"}, {Model: "claude-haiku-4-5"}} {
		got, err := s.Totals(ctx, f)
		require.NoError(t, err)
		assertTotals(t, refTotals(recs, f), got)
	}
	assertRecords(t, refList(recs, usage.Filter{}), listAllRecords(t, s, usage.Filter{}, 64))
}
