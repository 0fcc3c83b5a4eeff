// Package postgres is the relay's store for several instances behind a load
// balancer: keys and usage records in PostgreSQL, through pgx/v5 and its
// pool, so that every instance sees the same keys and sums the same usage.
//
// The schema is created and evolved by the versioned SQL files in
// migrations/, embedded in the binary and applied by Open (or New). Instances
// that start together serialise their migrations on a Postgres advisory
// lock, so each migration is applied exactly once.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/relaystation/relay/internal/migrate"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/usage"
)

var (
	_ keys.Store  = (*Store)(nil)
	_ usage.Store = (*Store)(nil)
)

// migrationFiles holds migrations/NNNN_name.{up,down}.sql. An embed.FS is
// read-only, so this package-level variable holds no state.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// MigrationsDir is where the migration files live in this package's source
// tree, for `migrate create` (see migrate.Create).
const MigrationsDir = "storage/postgres/migrations"

// migrationLock is the pg_advisory_xact_lock key every relay instance takes
// before it reads or changes the schema version, so that instances starting
// together apply each migration once. It is "relaymig" in ASCII: any fixed
// number works, as long as it never changes between releases and nothing
// else in the database uses it. Advisory locks are per database, so relays
// on different databases of one server do not wait for each other.
const migrationLock int64 = 0x72656c61796d6967

// Options configures New. The zero value is what Open uses.
type Options struct {
	// NoMigrate skips applying pending migrations, for a CLI that runs them
	// itself (Migrator) or a deployment that migrates in a separate step
	// with a more privileged role.
	NoMigrate bool
}

// Store implements keys.Store and usage.Store on one Postgres database. It
// is safe for concurrent use, and several Stores (in one process or in
// several relay instances) may share one database.
type Store struct {
	pool     *pgxpool.Pool
	ownPool  bool    // Open made the pool, so Close closes it
	sqlDB    *sql.DB // database/sql view of pool, for the migrator only
	migrator *migrate.Migrator
}

// Open connects to the database at dsn (a postgres:// URL or a keyword/value
// string, as pgxpool.ParseConfig takes, pool_* parameters included) and
// applies pending migrations. The Store owns the pool: Close closes it.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password in its parse errors.
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	// The pool connects lazily; ping so a wrong address or password fails
	// here, at start-up, rather than on the first request.
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	s, err := New(ctx, pool, Options{})
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.ownPool = true
	return s, nil
}

// New returns a Store on an existing pool, for a host that configures the
// pool itself (TLS, tracing, sizes) or shares it with its own tables. The
// caller keeps ownership of pool: Close leaves it open. Unless
// opts.NoMigrate is set, pending migrations are applied first.
func New(ctx context.Context, pool *pgxpool.Pool, opts Options) (*Store, error) {
	if pool == nil {
		return nil, errors.New("postgres: New: nil pool")
	}
	ms, err := migrate.Load(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	// The migrator speaks database/sql so that every SQL backend shares it;
	// this view of the pool borrows the pool's connections and keeps none
	// idle of its own.
	db := stdlib.OpenDBFromPool(pool)
	m, err := migrate.New(db, ms, migrate.Options{Dialect: migrate.Dialect{
		Placeholder: migrate.Dollar,
		Lock:        lockMigrations,
	}})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{pool: pool, sqlDB: db, migrator: m}
	if !opts.NoMigrate {
		if _, err := m.Up(ctx); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("postgres: %w", err)
		}
	}
	return s, nil
}

// lockMigrations is the migrator's Dialect.Lock. The lock is
// transaction-scoped: it is released by the commit or rollback of the
// migration's own transaction, so a migrator that dies cannot leave it held.
func lockMigrations(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLock)
	return err
}

// Migrator runs this database's migrations (up, down, status) for a
// `migrate` command. Open already ran Up unless Options.NoMigrate was set.
func (s *Store) Migrator() *migrate.Migrator { return s.migrator }

// Close releases the Store; it closes the pool only if Open created it, so
// a pool handed to New stays usable by its owner. The Store must not be used
// afterwards.
func (s *Store) Close() error {
	err := s.sqlDB.Close()
	if s.ownPool {
		s.pool.Close()
	}
	if err != nil {
		return fmt.Errorf("postgres: close: %w", err)
	}
	return nil
}

// Times are stored as timestamptz, which keeps microseconds. They are
// truncated (floor) here rather than left to the driver, so that the stored
// instant is exactly what the storagetest contract says whatever the
// driver's query mode, and read back in UTC because pgx returns them in the
// process's local zone.

func dbTime(t time.Time) time.Time { return t.Truncate(time.Microsecond).UTC() }

// dbTimePtr is t for a nullable column: an untyped nil (NULL) when unset.
func dbTimePtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return dbTime(*t)
}

func fromDBPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := t.UTC()
	return &v
}

// ceilMicros is the first whole microsecond at or after t. A stored time
// (whole microseconds) is >= t exactly when it is >= ceilMicros(t), and
// < t exactly when it is < ceilMicros(t); so filter bounds with nanoseconds
// mean what they say.
func ceilMicros(t time.Time) time.Time {
	c := t.Truncate(time.Microsecond)
	if c.Before(t) {
		c = c.Add(time.Microsecond)
	}
	return c.UTC()
}
