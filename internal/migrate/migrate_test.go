package migrate_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"github.com/relaystation/relay/internal/migrate"
)

// openDB opens a fresh SQLite file the way storage/sqlite's write pool does:
// BEGIN IMMEDIATE, so concurrent migrators serialise without a Lock hook.
func openDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "m.db")
	}
	db, err := sql.Open("sqlite", path+"?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	require.NoError(t, err)
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func testFS() fstest.MapFS {
	return fstest.MapFS{
		"m/0001_init.up.sql":       {Data: []byte("CREATE TABLE a (id INTEGER PRIMARY KEY);\nCREATE TABLE b (id INTEGER PRIMARY KEY);")},
		"m/0001_init.down.sql":     {Data: []byte("DROP TABLE b; DROP TABLE a;")},
		"m/0002_add_c.up.sql":      {Data: []byte("CREATE TABLE c (id INTEGER PRIMARY KEY);")},
		"m/0002_add_c.down.sql":    {Data: []byte("DROP TABLE c;")},
		"m/0003_a_name.up.sql":     {Data: []byte("ALTER TABLE a ADD COLUMN name TEXT;")},
		"m/0003_a_name.down.sql":   {Data: []byte("ALTER TABLE a DROP COLUMN name;")},
		"m/README.md":              {Data: []byte("ignored")},
		"m/subdir/0009_x.up.sql":   {Data: []byte("ignored: not in dir")},
		"other/0001_x.up.sql":      {Data: []byte("ignored: other dir")},
		"other/0001_x.down.sql":    {Data: []byte("")},
		"m/subdir/0009_x.down.sql": {Data: []byte("")},
	}
}

func tables(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
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

func versions(ms []migrate.Migration) []int64 {
	var out []int64
	for _, m := range ms {
		out = append(out, m.Version)
	}
	return out
}

func TestLoad(t *testing.T) {
	ms, err := migrate.Load(testFS(), "m")
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2, 3}, versions(ms))
	assert.Equal(t, "init", ms[0].Name)
	assert.Equal(t, "0001_init", ms[0].ID())
	assert.Contains(t, ms[0].Up, "CREATE TABLE b")
	assert.Contains(t, ms[0].Down, "DROP TABLE a")

	bad := []struct {
		name string
		fs   fstest.MapFS
	}{
		{"missing down", fstest.MapFS{"m/0001_x.up.sql": {}}},
		{"missing up", fstest.MapFS{"m/0001_x.down.sql": {}}},
		{"bad name", fstest.MapFS{"m/init.sql": {}}},
		{"no direction", fstest.MapFS{"m/0001_init.sql": {}}},
		{"dash in name", fstest.MapFS{"m/0001_bad-name.up.sql": {}, "m/0001_bad-name.down.sql": {}}},
		{"empty name", fstest.MapFS{"m/0001_.up.sql": {}, "m/0001_.down.sql": {}}},
		{"no version", fstest.MapFS{"m/x_init.up.sql": {}, "m/x_init.down.sql": {}}},
		{"version zero", fstest.MapFS{"m/0000_x.up.sql": {}, "m/0000_x.down.sql": {}}},
		{"two names", fstest.MapFS{"m/0001_x.up.sql": {}, "m/0001_y.down.sql": {}}},
		{"no dir", fstest.MapFS{}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := migrate.Load(tc.fs, "m")
			require.Error(t, err)
		})
	}
}

func TestNewValidates(t *testing.T) {
	db := openDB(t, "")
	_, err := migrate.New(db, []migrate.Migration{{Version: 1, Name: "a"}, {Version: 1, Name: "b"}}, migrate.Options{})
	require.Error(t, err, "duplicate version")
	_, err = migrate.New(db, []migrate.Migration{{Version: 0, Name: "a"}}, migrate.Options{})
	require.Error(t, err, "zero version")
	for _, name := range []string{"x; DROP TABLE y", "1abc", "a.b.c", "a.", `"quoted"`} {
		_, err = migrate.New(db, nil, migrate.Options{Table: name})
		require.Error(t, err, "table name %q is spliced into SQL", name)
	}
	_, err = migrate.New(db, nil, migrate.Options{Table: "relay.schema_migrations_2"})
	require.NoError(t, err)
}

func TestUpStatusDownUp(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, "")
	ms, err := migrate.Load(testFS(), "m")
	require.NoError(t, err)
	now := time.Date(2025, 1, 2, 3, 4, 5, 6789123, time.FixedZone("X", 3600))
	m, err := migrate.New(db, ms, migrate.Options{Now: func() time.Time { return now }})
	require.NoError(t, err)

	st, err := m.Status(ctx)
	require.NoError(t, err)
	require.Len(t, st, 3)
	for _, s := range st {
		assert.False(t, s.Applied, s.Version)
	}

	done, err := m.Up(ctx)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2, 3}, versions(done))
	require.Equal(t, []string{"a", "b", "c", "schema_migrations"}, tables(t, db))

	st, err = m.Status(ctx)
	require.NoError(t, err)
	want := now.Truncate(time.Microsecond)
	for i, s := range st {
		assert.Equal(t, int64(i+1), s.Version)
		assert.True(t, s.Applied)
		assert.False(t, s.Missing)
		assert.True(t, s.AppliedAt.Equal(want), "applied_at %v, want %v", s.AppliedAt, want)
	}
	assert.Equal(t, "add_c", st[1].Name)

	done, err = m.Up(ctx)
	require.NoError(t, err)
	require.Empty(t, done, "second Up is a no-op")

	done, err = m.Down(ctx, 0)
	require.NoError(t, err)
	require.Empty(t, done)

	done, err = m.Down(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, []int64{3}, versions(done))

	done, err = m.Down(ctx, migrate.All)
	require.NoError(t, err)
	require.Equal(t, []int64{2, 1}, versions(done))
	require.Equal(t, []string{"schema_migrations"}, tables(t, db))

	done, err = m.Down(ctx, 5)
	require.NoError(t, err)
	require.Empty(t, done, "nothing left to revert")

	done, err = m.Up(ctx)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2, 3}, versions(done))
	require.Equal(t, []string{"a", "b", "c", "schema_migrations"}, tables(t, db))
}

func TestFailedMigrationRollsBack(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, "")
	ms := []migrate.Migration{
		{Version: 1, Name: "ok", Up: "CREATE TABLE a (id INTEGER);", Down: "DROP TABLE a;"},
		// The first statement succeeds, the second fails: the transaction
		// must take the first one back with it.
		{Version: 2, Name: "broken", Up: "CREATE TABLE b (id INTEGER); SELECT * FROM nope;", Down: "DROP TABLE b;"},
		{Version: 3, Name: "after", Up: "CREATE TABLE c (id INTEGER);", Down: "DROP TABLE c;"},
	}
	m, err := migrate.New(db, ms, migrate.Options{})
	require.NoError(t, err)
	done, err := m.Up(ctx)
	require.ErrorContains(t, err, "0002_broken")
	require.Equal(t, []int64{1}, versions(done))
	require.Equal(t, []string{"a", "schema_migrations"}, tables(t, db))

	st, err := m.Status(ctx)
	require.NoError(t, err)
	require.True(t, st[0].Applied)
	require.False(t, st[1].Applied)
	require.False(t, st[2].Applied)
}

func TestMissingVersion(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, "")
	ms, err := migrate.Load(testFS(), "m")
	require.NoError(t, err)
	m, err := migrate.New(db, ms, migrate.Options{})
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	// A newer release applied version 4, which this binary does not know.
	_, err = db.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (4, 'future', '2030-01-01T00:00:00.000000Z')")
	require.NoError(t, err)

	st, err := m.Status(ctx)
	require.NoError(t, err)
	require.Len(t, st, 4)
	assert.Equal(t, migrate.MigrationStatus{Version: 4, Name: "future", Applied: true, AppliedAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), Missing: true}, st[3])

	done, err := m.Up(ctx)
	require.NoError(t, err, "an unknown newer version does not stop Up")
	require.Empty(t, done)

	_, err = m.Down(ctx, 1)
	require.ErrorContains(t, err, "unknown")
}

func TestOutOfOrderPendingIsApplied(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, "")
	ms, err := migrate.Load(testFS(), "m")
	require.NoError(t, err)
	first, err := migrate.New(db, []migrate.Migration{ms[0], ms[2]}, migrate.Options{})
	require.NoError(t, err)
	_, err = first.Up(ctx)
	require.NoError(t, err)

	all, err := migrate.New(db, ms, migrate.Options{})
	require.NoError(t, err)
	done, err := all.Up(ctx)
	require.NoError(t, err)
	require.Equal(t, []int64{2}, versions(done))
}

func TestDialectHooks(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, "")
	ms, err := migrate.Load(testFS(), "m")
	require.NoError(t, err)
	var locks, placeholders atomic.Int64
	m, err := migrate.New(db, ms, migrate.Options{
		Table: "main.my_migrations",
		Dialect: migrate.Dialect{
			// SQLite accepts ?NNN, which stands in for Postgres' $N here.
			Placeholder: func(n int) string { placeholders.Add(1); return "?" + strconv.Itoa(n) },
			Lock: func(ctx context.Context, tx *sql.Tx) error {
				locks.Add(1)
				_, err := tx.ExecContext(ctx, "SELECT 1")
				return err
			},
		},
	})
	require.NoError(t, err)
	_, err = m.Up(ctx)
	require.NoError(t, err)
	// One transaction per migration plus the final "nothing pending" one.
	assert.Equal(t, int64(4), locks.Load())
	assert.Positive(t, placeholders.Load())
	assert.Contains(t, tables(t, db), "my_migrations")
	assert.Equal(t, "$3", migrate.Dollar(3))
}

// TestConcurrentUp starts several migrators on separate handles to one
// file, as several relay processes would: each migration runs once.
func TestConcurrentUp(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	ms, err := migrate.Load(testFS(), "m")
	require.NoError(t, err)
	var (
		wg    sync.WaitGroup
		total atomic.Int64
	)
	errs := make(chan error, 8)
	for range 8 {
		db := openDB(t, path)
		m, err := migrate.New(db, ms, migrate.Options{})
		require.NoError(t, err)
		wg.Go(func() {
			done, err := m.Up(ctx)
			total.Add(int64(len(done)))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, int64(3), total.Load())
}

func TestCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "migrations")
	up, down, err := migrate.Create(dir, "Init")
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "0001_init.up.sql"), up)
	assert.Equal(t, filepath.Join(dir, "0001_init.down.sql"), down)

	up, down, err = migrate.Create(dir, "  Add key owner!! ")
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "0002_add_key_owner.up.sql"), up)
	assert.Equal(t, filepath.Join(dir, "0002_add_key_owner.down.sql"), down)
	for _, p := range []string{up, down} {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		assert.Contains(t, string(b), "0002_add_key_owner")
	}

	// The next version follows the highest, not the count.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "0010_jump.up.sql"), nil, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "0010_jump.down.sql"), nil, 0o644))
	up, _, err = migrate.Create(dir, "next")
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "0011_next.up.sql"), up)

	_, _, err = migrate.Create(dir, "!!!")
	require.Error(t, err)

	// What Create writes loads and runs: comment-only SQL is a no-op.
	ms, err := migrate.Load(os.DirFS(dir), ".")
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2, 10, 11}, versions(ms))
	m, err := migrate.New(openDB(t, ""), ms, migrate.Options{})
	require.NoError(t, err)
	ctx := context.Background()
	done, err := m.Up(ctx)
	require.NoError(t, err)
	require.Len(t, done, 4)
	done, err = m.Down(ctx, migrate.All)
	require.NoError(t, err)
	require.Len(t, done, 4)
}
