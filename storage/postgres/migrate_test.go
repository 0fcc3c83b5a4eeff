package postgres_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/relaystation/relay/internal/migrate"
	"github.com/relaystation/relay/internal/testenv"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/storage/postgres"
	"github.com/relaystation/relay/usage"
)

// newPool opens a pool of its own on dsn, as one relay instance would.
func newPool(t *testing.T, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// tables lists the tables of the public schema.
func tables(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(),
		`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name`)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		out = append(out, n)
	}
	require.NoError(t, rows.Err())
	return out
}

func TestMigrations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, testenv.Postgres(t))
	s, err := postgres.New(ctx, pool, postgres.Options{NoMigrate: true})
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
	require.NotErrorIs(t, err, keys.ErrNotFound)

	up, err := m.Up(ctx)
	require.NoError(t, err)
	require.Len(t, up, len(st))
	assert.Equal(t, "init", up[0].Name)
	st, err = m.Status(ctx)
	require.NoError(t, err)
	for _, x := range st {
		assert.True(t, x.Applied)
		assert.False(t, x.Missing)
		assert.WithinDuration(t, time.Now(), x.AppliedAt, time.Minute)
	}
	useStore(t, s)
	up, err = m.Up(ctx)
	require.NoError(t, err)
	assert.Empty(t, up, "a current database has nothing to apply")

	down, err := m.Down(ctx, migrate.All)
	require.NoError(t, err)
	require.Len(t, down, len(st))
	// Down must undo Up completely: only the migrator's own table is left.
	assert.Equal(t, []string{migrate.DefaultTable}, tables(t, pool))
	_, err = s.GetKey(ctx, "x")
	require.Error(t, err, "down all drops the tables")
	_, err = s.Totals(ctx, usage.Filter{})
	require.Error(t, err)
	st, err = m.Status(ctx)
	require.NoError(t, err)
	for _, x := range st {
		assert.False(t, x.Applied)
	}

	up, err = m.Up(ctx)
	require.NoError(t, err)
	require.Len(t, up, len(st))
	useStore(t, s)
}

// useStore checks that the schema serves both stores.
func useStore(t *testing.T, s *postgres.Store) {
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

// TestUpConcurrently: relay instances starting together on a new database
// each run Up. The advisory lock must make exactly one of them apply each
// migration, and none fail.
func TestUpConcurrently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := testenv.Postgres(t)
	const instances = 4
	migrators := make([]*migrate.Migrator, instances)
	for i := range migrators {
		// A pool each: separate sessions, as separate processes would have.
		s, err := postgres.New(ctx, newPool(t, dsn), postgres.Options{NoMigrate: true})
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		migrators[i] = s.Migrator()
	}

	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		applied = make([][]migrate.Migration, instances)
		errs    = make([]error, instances)
	)
	for i, m := range migrators {
		wg.Go(func() {
			<-start
			applied[i], errs[i] = m.Up(ctx)
		})
	}
	close(start)
	wg.Wait()

	count := map[int64]int{}
	for i := range instances {
		require.NoError(t, errs[i], "instance %d", i)
		for _, mg := range applied[i] {
			count[mg.Version]++
		}
	}
	all := migrators[0].Migrations()
	require.Len(t, count, len(all))
	for _, mg := range all {
		assert.Equal(t, 1, count[mg.Version], "migration %s applied by %d instances", mg.ID(), count[mg.Version])
	}
	st, err := migrators[0].Status(ctx)
	require.NoError(t, err)
	require.Len(t, st, len(all))
	for _, x := range st {
		assert.True(t, x.Applied)
	}
}

// TestOpenConcurrently: the same through Open, which migrates while it
// opens; every instance must come up usable.
func TestOpenConcurrently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := testenv.Postgres(t)
	const instances = 4
	stores := make([]*postgres.Store, instances)
	errs := make([]error, instances)
	var wg sync.WaitGroup
	for i := range instances {
		wg.Go(func() { stores[i], errs[i] = postgres.Open(ctx, dsn) })
	}
	wg.Wait()
	for i := range instances {
		require.NoError(t, errs[i])
		t.Cleanup(func() { stores[i].Close() })
	}
	useStore(t, stores[0])
	_, err := stores[instances-1].GetKey(ctx, "key000000001")
	require.NoError(t, err, "every instance sees the same database")
}

// TestNewLeavesPoolOpen: a pool handed to New belongs to the caller.
func TestNewLeavesPoolOpen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, testenv.Postgres(t))
	s, err := postgres.New(ctx, pool, postgres.Options{})
	require.NoError(t, err)
	useStore(t, s)
	require.NoError(t, s.Close())
	require.NoError(t, pool.Ping(ctx), "Close must not close the caller's pool")
	var n int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM api_keys").Scan(&n))
	assert.Equal(t, 1, n)
}

// TestOpenErrorHidesPassword: a failed Open says why without the
// password, since the error ends up in logs. It needs no server.
func TestOpenErrorHidesPassword(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, dsn := range []string{
		"postgres://relay:s3cretPassw0rd@127.0.0.1:1/relay?sslmode=disable&connect_timeout=5", // nothing listens on port 1
		"host=127.0.0.1 port=1 user=relay password=s3cretPassw0rd dbname=relay sslmode=disable connect_timeout=5",
		"postgres://relay:s3cretPassw0rd@127.0.0.1:1/relay?sslmode=bogus", // a parse error
	} {
		_, err := postgres.Open(ctx, dsn)
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "s3cretPassw0rd")
	}
	_, err := postgres.New(ctx, nil, postgres.Options{})
	require.Error(t, err)
}

// TestMigrationsDir keeps MigrationsDir, which `migrate create` writes to,
// pointing at the directory that is embedded.
func TestMigrationsDir(t *testing.T) {
	t.Parallel()
	fi, err := os.Stat(filepath.Join("..", "..", filepath.FromSlash(postgres.MigrationsDir)))
	require.NoError(t, err)
	require.True(t, fi.IsDir())
	ms, err := migrate.Load(os.DirFS("migrations"), ".")
	require.NoError(t, err)
	require.NotEmpty(t, ms)
	for _, m := range ms {
		assert.NotEmpty(t, strings.TrimSpace(m.Down), "%s: every migration so far can be undone", m.ID())
	}
}

// TestDailyRollupBackfill: 0003 builds usage_daily from the records a
// database already holds, with the same days and sums InsertRecords keeps.
func TestDailyRollupBackfill(t *testing.T) {
	t.Parallel()
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
