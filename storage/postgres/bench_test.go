package postgres_test

import (
	"fmt"
	"testing"

	"github.com/relaystation/relay/storage/storagetest"
)

// BenchmarkInsertRecords measures Recorder flushes, each one statement,
// one round trip, one commit: a small one (a quiet relay) and a full one
// of the default usage.RecorderConfig.BatchSize (a busy relay).
func BenchmarkInsertRecords(b *testing.B) {
	for _, n := range []int{100, 1024} {
		b.Run(fmt.Sprint("batch=", n), func(b *testing.B) { storagetest.BenchInsertRecords(b, newStore(b), n) })
	}
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
