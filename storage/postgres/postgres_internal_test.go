package postgres

import (
	"context"
	"encoding/base64"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/relaystation/relay/internal/migrate"
	"github.com/relaystation/relay/internal/testenv"
)

// TestLockSerialisesMigrators widens the race TestUpConcurrently covers:
// each migration sleeps inside its transaction, so without the advisory
// lock every migrator would read "nothing applied" and then collide on the
// CREATE TABLE or the schema_migrations row.
func TestLockSerialisesMigrators(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := testenv.Postgres(t)
	ms := []migrate.Migration{
		{Version: 1, Name: "a", Up: "CREATE TABLE a (id int); SELECT pg_sleep(0.2);", Down: "DROP TABLE a;"},
		{Version: 2, Name: "b", Up: "CREATE TABLE b (id int); SELECT pg_sleep(0.2);", Down: "DROP TABLE b;"},
	}
	const n = 4
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		mu      sync.Mutex
		applied = map[int64]int{}
	)
	for range n {
		pool, err := pgxpool.New(ctx, dsn)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		db := stdlib.OpenDBFromPool(pool)
		t.Cleanup(func() { db.Close() })
		m, err := migrate.New(db, ms, migrate.Options{Dialect: migrate.Dialect{Placeholder: migrate.Dollar, Lock: lockMigrations}})
		require.NoError(t, err)
		wg.Go(func() {
			<-start
			done, err := m.Up(ctx)
			assert.NoError(t, err)
			mu.Lock()
			defer mu.Unlock()
			for _, mg := range done {
				applied[mg.Version]++
			}
		})
	}
	close(start)
	wg.Wait()
	assert.Equal(t, map[int64]int{1: 1, 2: 1}, applied)
}

func TestTimes(t *testing.T) {
	zone := time.FixedZone("X", -3*3600)
	tests := []struct {
		in          time.Time
		floor, ceil time.Time
	}{
		{time.Date(2025, 1, 2, 3, 4, 5, 123_456_000, zone), time.Date(2025, 1, 2, 6, 4, 5, 123_456_000, time.UTC), time.Date(2025, 1, 2, 6, 4, 5, 123_456_000, time.UTC)},
		{time.Date(2025, 1, 2, 3, 4, 5, 123_456_001, zone), time.Date(2025, 1, 2, 6, 4, 5, 123_456_000, time.UTC), time.Date(2025, 1, 2, 6, 4, 5, 123_457_000, time.UTC)},
		{time.Date(2025, 1, 2, 3, 4, 5, 123_456_999, time.UTC), time.Date(2025, 1, 2, 3, 4, 5, 123_456_000, time.UTC), time.Date(2025, 1, 2, 3, 4, 5, 123_457_000, time.UTC)},
		// Before 1970 the floor is still towards the past, not towards zero.
		{time.Date(1969, 12, 31, 23, 59, 59, 999_999_999, time.UTC), time.Date(1969, 12, 31, 23, 59, 59, 999_999_000, time.UTC), time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.floor, dbTime(tc.in), "floor of %v", tc.in)
		assert.Equal(t, tc.ceil, ceilMicros(tc.in), "ceil of %v", tc.in)
	}
}

func TestCursor(t *testing.T) {
	at := time.Date(1969, 7, 20, 20, 17, 40, 999_999_000, time.UTC)
	for _, id := range []string{"req_1", "", "with:colon", "ünï"} {
		gotAt, gotID, err := decodeCursor(encodeCursor(at, id))
		require.NoError(t, err)
		assert.Equal(t, at, gotAt)
		assert.Equal(t, id, gotID)
	}
	for _, c := range []string{"not a cursor", "!!!", "key000000001", encodeCursorRaw("x:req"), encodeCursorRaw("noseparator")} {
		_, _, err := decodeCursor(c)
		assert.ErrorIs(t, err, errBadCursor, "cursor %q", c)
	}
}

func encodeCursorRaw(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
