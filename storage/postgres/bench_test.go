package postgres_test

import (
	"testing"

	"github.com/relaystation/relay/storage/storagetest"
)

// BenchmarkInsertRecords measures one Recorder flush of 256 records: one
// pgx.Batch, one round trip, one commit.
func BenchmarkInsertRecords(b *testing.B) {
	storagetest.BenchInsertRecords(b, newStore(b), 256)
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
