package storagetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/relaystation/relay/usage"
)

// BenchEnd is the end of the data set GenerateRecords makes: a time in the
// middle of a UTC day, so that reports over "the last 30 days" have
// partial days at both ends, as real ones do.
var BenchEnd = time.Date(2025, 6, 30, 13, 37, 0, 0, time.UTC)

// Bench data set shape: keys and models as a busy relay might have.
const (
	benchKeys = 200
	benchDays = 31
)

var benchModels = [...]string{
	"claude-sonnet-4-5", "claude-sonnet-4-5", "claude-sonnet-4-5", "claude-haiku-4-5",
	"claude-haiku-4-5", "claude-opus-4-1", "claude-sonnet-4", "claude-3-5-haiku-latest",
}

// splitmix is a tiny deterministic hash, so the data set is the same on
// every run and every backend.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// GenerateRecords makes n realistic records spread evenly over the 31 days
// before BenchEnd (200 keys, a few models, 2% rate limits, 0.5% overloads,
// random request ids), and passes them to insert in batches of batch.
func GenerateRecords(n, batch int, insert func([]usage.Record) error) error {
	start := BenchEnd.Add(-benchDays * 24 * time.Hour)
	step := benchDays * 24 * time.Hour / time.Duration(n)
	recs := make([]usage.Record, 0, batch)
	for i := range n {
		h := splitmix(uint64(i))
		// Keys by a skewed distribution: a few keys do most requests.
		k := int(h%benchKeys) * int(h>>8%benchKeys) / benchKeys
		status, errType := 200, ""
		switch h >> 20 % 1000 {
		case 0, 1, 2, 3, 4:
			status, errType = 529, "overloaded_error"
		case 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24:
			status, errType = 429, "rate_limit_error"
		}
		in := int64(h>>30%4000) + 10
		out := int64(h>>40%2000) + 1
		cr := int64(h>>50%30000) * int64(h>>7%2)
		model := benchModels[h>>12%uint64(len(benchModels))]
		recs = append(recs, usage.Record{
			RequestID:     fmt.Sprintf("req_%016x", h),
			Time:          start.Add(time.Duration(i)*step + time.Duration(h%uint64(step))),
			KeyID:         fmt.Sprintf("key%09d", k),
			Upstream:      "primary",
			Method:        "POST",
			Path:          "/v1/messages",
			Model:         model,
			ResponseModel: model + "-20250929",
			Stream:        h&1 == 0,
			Status:        status,
			ErrorType:     errType,
			Usage: usage.Usage{
				InputTokens: in, OutputTokens: out, CacheReadInputTokens: cr,
				CacheCreationInputTokens: cr / 10, CacheCreation5m: cr / 10, ServiceTier: "standard",
			},
			CostUSD:   float64(in)*3e-6 + float64(out)*15e-6 + float64(cr)*0.3e-6,
			Latency:   time.Duration(h%20000) * time.Millisecond,
			TTFT:      time.Duration(h%2000) * time.Millisecond,
			ClientIP:  fmt.Sprintf("203.0.113.%d", h%250),
			UserAgent: "claude-cli/2.0.14 (external, cli)",
			SessionID: fmt.Sprintf("%08x-4c1e-4a57-9d3e-%012x", h>>32, h&0xffffffffffff),
		})
		if len(recs) == batch || i == n-1 {
			if err := insert(recs); err != nil {
				return err
			}
			recs = recs[:0]
		}
	}
	return nil
}

// BenchReports measures the reports the admin and usage APIs run, over a
// store holding the GenerateRecords data set: the last 30 days (partial
// days at both ends) by day, model and key, one key's 30 days by day (GET
// /v1/usage), the last 24 hours by hour (records only), and the first
// page of the request log; and, for comparison, 30 days by day without the
// rollup.
func BenchReports(b *testing.B, s usage.Store) {
	ctx := context.Background()
	month := usage.Filter{From: BenchEnd.Add(-30 * 24 * time.Hour), To: BenchEnd}
	oneKey := month
	oneKey.KeyID = "key000000001"
	for _, bc := range []struct {
		name string
		q    usage.ReportQuery
	}{
		{"30d/day", usage.ReportQuery{Filter: month, GroupBy: usage.GroupDay}},
		{"30d/model", usage.ReportQuery{Filter: month, GroupBy: usage.GroupModel}},
		{"30d/key", usage.ReportQuery{Filter: month, GroupBy: usage.GroupKey}},
		{"30d/none", usage.ReportQuery{Filter: month}},
		{"30d/one-key/day", usage.ReportQuery{Filter: oneKey, GroupBy: usage.GroupDay}},
		{"24h/hour", usage.ReportQuery{Filter: usage.Filter{From: BenchEnd.Add(-24 * time.Hour), To: BenchEnd}, GroupBy: usage.GroupHour}},
		// The same days read from the records alone (a zero-offset zone
		// that is not time.UTC), for comparison with 30d/day.
		{"30d/day/records-only", usage.ReportQuery{Filter: month, GroupBy: usage.GroupDay, Location: time.FixedZone("Z", 0)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var rows int
			for b.Loop() {
				r, err := s.Report(ctx, bc.q)
				if err != nil {
					b.Fatal(err)
				}
				rows = len(r.Rows)
			}
			b.ReportMetric(float64(rows), "rows")
		})
	}
	b.Run("logs/first-page", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := s.ListRecords(ctx, month, "", 100); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// LoadBenchRecords fills s with n GenerateRecords records through
// InsertRecords, in batches of batch, and reports the time it took.
func LoadBenchRecords(b *testing.B, s usage.Store, n, batch int) {
	b.Helper()
	ctx := context.Background()
	t0 := time.Now()
	if err := GenerateRecords(n, batch, func(recs []usage.Record) error { return s.InsertRecords(ctx, recs) }); err != nil {
		b.Fatal(err)
	}
	b.Logf("loaded %d records in %s (%.1f µs/record)", n, time.Since(t0).Round(time.Millisecond),
		float64(time.Since(t0).Microseconds())/float64(n))
}

// BenchInsertRecords measures one Recorder flush of batch records into s:
// what every request costs the usage store, reported per record.
func BenchInsertRecords(b *testing.B, s usage.Store, batch int) {
	ctx := context.Background()
	t0 := time.Now()
	recs := make([]usage.Record, batch)
	n := 0
	for b.Loop() {
		for i := range recs {
			n++
			recs[i] = usage.Record{
				RequestID: fmt.Sprintf("req_%012d", n), Time: t0.Add(time.Duration(n) * time.Millisecond),
				KeyID: fmt.Sprintf("key%09d", n%50), Method: "POST", Path: "/v1/messages",
				Model: "claude-sonnet-4-5", ResponseModel: "claude-sonnet-4-5-20250929", Stream: true, Status: 200,
				Usage:   usage.Usage{InputTokens: 1200, OutputTokens: 350, CacheReadInputTokens: 9000, ServiceTier: "standard"},
				CostUSD: 0.0123, Latency: 2 * time.Second, TTFT: 400 * time.Millisecond,
				ClientIP: "203.0.113.7", UserAgent: "claude-cli/2.0.14 (external, cli)", SessionID: "3f1c2e",
			}
		}
		if err := s.InsertRecords(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/record")
}
