package sqlite_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/relaystation/relay/storage/storagetest"
	"github.com/relaystation/relay/usage"
)

// BenchmarkInsertRecords measures one Recorder flush: a batch of 100
// records in one transaction.
func BenchmarkInsertRecords(b *testing.B) {
	const batch = 100
	ctx := context.Background()
	s := newStore(b)
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

// BenchmarkReport1M loads a million records (31 days, 200 keys) through
// InsertRecords, then measures the reports behind GET /admin/usage and
// GET /v1/usage. Loading takes a while; -short skips it.
func BenchmarkReport1M(b *testing.B) {
	if testing.Short() {
		b.Skip("loads a million records")
	}
	s := newStore(b)
	storagetest.LoadBenchRecords(b, s, 1_000_000, 10_000)
	storagetest.BenchReports(b, s)
}
