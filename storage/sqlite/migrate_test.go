package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/relaystation/relay/internal/migrate"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/storage/sqlite"
	"github.com/relaystation/relay/usage"
)

func TestMigrations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "relay.db")
	s, err := sqlite.OpenWith(ctx, path, sqlite.Options{NoMigrate: true})
	require.NoError(t, err)
	defer s.Close()
	m := s.Migrator()

	st, err := m.Status(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, st)
	for _, x := range st {
		assert.False(t, x.Applied, "NoMigrate must leave %d pending", x.Version)
	}
	_, err = s.GetKey(ctx, "x")
	require.Error(t, err, "no schema yet")

	up, err := m.Up(ctx)
	require.NoError(t, err)
	require.Len(t, up, len(st))
	assert.Equal(t, "init", up[0].Name)
	st, err = m.Status(ctx)
	require.NoError(t, err)
	for _, x := range st {
		assert.True(t, x.Applied)
		assert.WithinDuration(t, time.Now(), x.AppliedAt, time.Minute)
	}
	useStore(t, s)

	down, err := m.Down(ctx, migrate.All)
	require.NoError(t, err)
	require.Len(t, down, len(st))
	_, err = s.GetKey(ctx, "x")
	require.Error(t, err, "down all drops the tables")
	_, err = s.Totals(ctx, usage.Filter{})
	require.Error(t, err)

	up, err = m.Up(ctx)
	require.NoError(t, err)
	require.Len(t, up, len(st))
	useStore(t, s)
}

// useStore checks that the schema serves both stores.
func useStore(t *testing.T, s *sqlite.Store) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, s.CreateKey(ctx, &keys.Key{ID: "key000000001", Metadata: map[string]string{"a": "b"}}))
	k, err := s.GetKey(ctx, "key000000001")
	require.NoError(t, err)
	assert.Equal(t, "b", k.Metadata["a"])
	require.NoError(t, s.InsertRecords(ctx, []usage.Record{{RequestID: "r", KeyID: k.ID, Status: 500}}))
	tot, err := s.Totals(ctx, usage.Filter{KeyID: k.ID})
	require.NoError(t, err)
	assert.Equal(t, usage.Totals{Requests: 1, Errors: 1}, tot)
}

// TestReopen: data survives Close, and a second Open finds nothing to
// migrate.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "relay.db")
	s, err := sqlite.Open(ctx, path)
	require.NoError(t, err)
	useStore(t, s)
	require.NoError(t, s.Close())

	s, err = sqlite.Open(ctx, path)
	require.NoError(t, err)
	defer s.Close()
	up, err := s.Migrator().Up(ctx)
	require.NoError(t, err)
	assert.Empty(t, up)
	_, err = s.GetKey(ctx, "key000000001")
	require.NoError(t, err)
}

// TestOpenConcurrently: several processes (here, stores) opening one new
// file at once must each succeed, with each migration applied once.
func TestOpenConcurrently(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "relay.db")
	errs := make(chan error, 4)
	stores := make(chan *sqlite.Store, 4)
	for range 4 {
		go func() {
			s, err := sqlite.Open(ctx, path)
			errs <- err
			stores <- s
		}()
	}
	for range 4 {
		require.NoError(t, <-errs)
		if s := <-stores; s != nil {
			defer s.Close()
		}
	}
}

func TestPathNeedsEscaping(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "we?ird#name%20 x.db")
	s, err := sqlite.Open(ctx, path)
	require.NoError(t, err)
	useStore(t, s)
	require.NoError(t, s.Close())
	_, err = os.Stat(path)
	require.NoError(t, err, "the file must have exactly the name asked for")
}

// TestMigrationsDir keeps MigrationsDir, which `migrate create` writes to,
// pointing at the directory that is embedded.
func TestMigrationsDir(t *testing.T) {
	fi, err := os.Stat(filepath.Join("..", "..", filepath.FromSlash(sqlite.MigrationsDir)))
	require.NoError(t, err)
	require.True(t, fi.IsDir())
	ms, err := migrate.Load(os.DirFS("migrations"), ".")
	require.NoError(t, err)
	require.NotEmpty(t, ms)
}

// TestDailyRollupBackfill: 0003 builds usage_daily from the records a
// database already holds, with the same days and sums InsertRecords keeps.
func TestDailyRollupBackfill(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	recs := backfillRecords()
	require.NoError(t, s.InsertRecords(ctx, recs))
	before := reports(t, s)

	down, err := s.Migrator().Down(ctx, 1)
	require.NoError(t, err)
	require.Len(t, down, 1)
	require.Equal(t, "usage_daily", down[0].Name, "the newest migration is the rollup's")
	_, err = s.Report(ctx, usage.ReportQuery{})
	require.Error(t, err, "no rollup table")
	_, err = s.Migrator().Up(ctx)
	require.NoError(t, err)
	assert.Equal(t, before, reports(t, s))
}

// backfillRecords spans midnights, keys, models, errors and 1969.
func backfillRecords() []usage.Record {
	d := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	times := []time.Time{
		d, d.Add(-time.Microsecond), d.Add(time.Microsecond), d.Add(13 * time.Hour), d.Add(24 * time.Hour),
		d.Add(47 * time.Hour), time.Date(1969, 12, 31, 23, 59, 59, 999_999_000, time.UTC), time.Date(1969, 7, 20, 20, 17, 40, 0, time.UTC),
	}
	var recs []usage.Record
	for i, at := range times {
		recs = append(recs, usage.Record{
			RequestID: fmt.Sprintf("r%02d", i), Time: at, KeyID: fmt.Sprintf("k%d", i%2), Model: []string{"a", "b", ""}[i%3],
			Status: []int{200, 500, 399}[i%3], CostUSD: 0.25 * float64(i),
			Usage: usage.Usage{InputTokens: int64(i), OutputTokens: 2, CacheCreationInputTokens: 3, CacheReadInputTokens: 4,
				CacheCreation5m: 5, CacheCreation1h: 6, WebSearchRequests: 7, WebFetchRequests: 8},
		})
	}
	return recs
}

// reports is every grouping of whole-day reports, which read the rollup.
func reports(t *testing.T, s usage.Store) []usage.Report {
	t.Helper()
	var out []usage.Report
	for _, g := range []usage.GroupBy{usage.GroupNone, usage.GroupDay, usage.GroupModel, usage.GroupKey} {
		r, err := s.Report(context.Background(), usage.ReportQuery{GroupBy: g})
		require.NoError(t, err)
		require.Equal(t, int64(8), r.Totals.Requests)
		out = append(out, r)
	}
	return out
}
