// Package sqlite is the relay's embedded, durable, single-node store: keys
// and usage records in one SQLite file, through modernc.org/sqlite (pure
// Go, so the relay still builds with CGO_ENABLED=0 and cross-compiles).
//
// The schema is created and evolved by the versioned SQL files in
// migrations/, embedded in the binary and applied by Open.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/relaystation/relay/internal/migrate"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/usage"
)

var (
	_ keys.Store  = (*Store)(nil)
	_ usage.Store = (*Store)(nil)
)

// migrationFiles holds migrations/NNNN_name.{up,down}.sql. An embed.FS is
// read-only, so this is the package's only package-level variable and
// holds no state.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// MigrationsDir is where the migration files live in this package's source
// tree, for `migrate create` (see migrate.Create).
const MigrationsDir = "storage/sqlite/migrations"

// Options configures OpenWith. The zero value is what Open uses.
type Options struct {
	// NoMigrate skips applying pending migrations at open, for a CLI that
	// runs them itself (Migrator) or a deployment that migrates in a
	// separate step.
	NoMigrate bool
	// BusyTimeout is how long a statement waits for a lock held by another
	// process (a `migrate` command, a backup) before failing with
	// SQLITE_BUSY. 0 means 10 seconds.
	BusyTimeout time.Duration
	// MaxReadConns bounds the read pool; 0 means max(4, GOMAXPROCS).
	MaxReadConns int
}

// Store implements keys.Store and usage.Store on one SQLite database. It is
// safe for concurrent use.
//
// It keeps two connection pools on the same file. SQLite allows one writer
// at a time; with several write connections they would contend on the file
// lock, where the loser sleeps in busy_timeout polling or, when a read
// transaction tries to upgrade, fails at once with SQLITE_BUSY. A write pool
// of exactly one connection turns that into an orderly queue inside
// database/sql, and its transactions begin IMMEDIATE so that even another
// process cannot make them fail halfway. In WAL mode readers never block the
// writer nor each other, so reads get their own pool of several
// connections, opened query_only so a write can never slip into it.
type Store struct {
	write    *sql.DB // exactly one connection; every write goes here
	read     *sql.DB // several query_only connections; may be write itself for :memory:
	migrator *migrate.Migrator
}

// Open opens (creating if needed) the database at path and applies pending
// migrations. path ":memory:" (or "") gives a private in-memory database for
// tests: it lives on one connection, so reads queue behind writes, and a
// test is more realistic with a file in t.TempDir().
func Open(ctx context.Context, path string) (*Store, error) {
	return OpenWith(ctx, path, Options{})
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, path string, opts Options) (_ *Store, err error) {
	busy := opts.BusyTimeout
	if busy <= 0 {
		busy = 10 * time.Second
	}
	readConns := opts.MaxReadConns
	if readConns <= 0 {
		readConns = max(4, runtime.GOMAXPROCS(0))
	}
	memory := path == "" || path == ":memory:"

	pragmas := url.Values{}
	pragmas.Add("_pragma", "busy_timeout("+strconv.FormatInt(busy.Milliseconds(), 10)+")")
	pragmas.Add("_pragma", "foreign_keys(1)")
	// NORMAL is durable in WAL mode except for the last transactions
	// before a power loss (never corruption); FULL would fsync every commit,
	// which usage batches do not need.
	pragmas.Add("_pragma", "synchronous(NORMAL)")

	wq := url.Values{}
	for k, v := range pragmas {
		wq[k] = append([]string(nil), v...)
	}
	if !memory {
		// WAL is a property of the file; setting it from the writer is
		// enough, and it is what lets readers run beside the writer.
		wq.Add("_pragma", "journal_mode(WAL)")
	}
	wq.Set("_txlock", "immediate")

	s := &Store{}
	defer func() {
		if err != nil {
			s.closePools()
		}
	}()
	s.write, err = sql.Open("sqlite", dsn(path, memory, wq))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s.write.SetMaxOpenConns(1)
	s.write.SetMaxIdleConns(1)
	s.write.SetConnMaxLifetime(0) // an in-memory database dies with its connection
	s.write.SetConnMaxIdleTime(0)
	if err := pingBusy(ctx, s.write, busy); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}

	if memory {
		s.read = s.write
	} else {
		rq := url.Values{}
		for k, v := range pragmas {
			rq[k] = append([]string(nil), v...)
		}
		rq.Set("_query_only", "1")
		s.read, err = sql.Open("sqlite", dsn(path, memory, rq))
		if err != nil {
			return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
		}
		s.read.SetMaxOpenConns(readConns)
		s.read.SetMaxIdleConns(readConns)
		if err := s.read.PingContext(ctx); err != nil {
			return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
		}
	}

	ms, err := migrate.Load(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	// No Dialect.Lock: the write pool begins IMMEDIATE, which takes
	// SQLite's write lock at BEGIN and so already serialises migrators in
	// other processes.
	s.migrator, err = migrate.New(s.write, ms, migrate.Options{})
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	if !opts.NoMigrate {
		if _, err := s.migrator.Up(ctx); err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
	}
	return s, nil
}

// pingBusy opens the first connection, retrying while another process
// holds the lock: switching a new file to WAL takes an exclusive lock for
// which SQLite does not always call the busy handler, so two processes
// opening one new database at once can see SQLITE_BUSY straight away.
func pingBusy(ctx context.Context, db *sql.DB, busy time.Duration) error {
	deadline := time.Now().Add(busy) // as long as busy_timeout would wait
	var err error
	for wait := 5 * time.Millisecond; ; wait = min(wait*2, 200*time.Millisecond) {
		if err = db.PingContext(ctx); err == nil || !strings.Contains(err.Error(), "SQLITE_BUSY") || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// dsn builds a modernc.org/sqlite data source name. A file path becomes a
// file: URI with '%', '?' and '#' escaped, so any file name works.
func dsn(path string, memory bool, q url.Values) string {
	if memory {
		return ":memory:?" + q.Encode()
	}
	r := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")
	return "file:" + r.Replace(path) + "?" + q.Encode()
}

// Migrator runs this database's migrations (up, down, status) for a
// `migrate` command. Open already ran Up unless Options.NoMigrate was set.
func (s *Store) Migrator() *migrate.Migrator { return s.migrator }

// Close closes the database. It runs PRAGMA optimize first, as SQLite
// recommends for long-lived connections, so the query planner's statistics
// follow the data.
func (s *Store) Close() error {
	var err error
	if s.write != nil {
		if _, e := s.write.Exec("PRAGMA optimize"); e != nil {
			err = fmt.Errorf("sqlite: optimize: %w", e)
		}
	}
	return errors.Join(err, s.closePools())
}

// closePools closes the read pool first: the last connection to close
// checkpoints the WAL into the main file, and that should be the writer.
func (s *Store) closePools() error {
	var errs []error
	if s.read != nil && s.read != s.write {
		errs = append(errs, s.read.Close())
	}
	if s.write != nil {
		errs = append(errs, s.write.Close())
	}
	return errors.Join(errs...)
}

// inTx runs fn in a write transaction and commits it if fn succeeds.
func (s *Store) inTx(ctx context.Context, fn func(*sql.Tx) error) (err error) {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // fn's error is the one worth reporting
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// Times are stored as unix microseconds, UTC.

func toMicros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func toNullMicros(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

func fromNullMicros(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromMicros(n.Int64)
	return &t
}

// ceilMicros is the first whole microsecond at or after t. A stored time
// (whole microseconds) is >= t exactly when it is >= ceilMicros(t), and
// < t exactly when it is < ceilMicros(t); so filter bounds with nanoseconds
// mean what they say.
func ceilMicros(t time.Time) int64 {
	us := t.UnixMicro()
	if t.Sub(time.UnixMicro(us)) > 0 {
		us++
	}
	return us
}
