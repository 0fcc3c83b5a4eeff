// Package migrate applies versioned SQL migrations to a database/sql
// database, one transaction per migration, and records each applied version
// in a table (schema_migrations by default).
//
// It is deliberately small and dialect-neutral so that every SQL backend of
// the relay shares one runner: a backend supplies its migrations (usually an
// embedded directory read with Load) and a Dialect that says how bind
// parameters are written and how concurrent migrators are kept apart.
//
// Migration files are named NNNN_name.up.sql and NNNN_name.down.sql; NNNN is
// a positive decimal version, and migrations run in ascending version order.
// Create writes the next numbered pair.
package migrate

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// All, passed to Down, rolls back every applied migration.
const All = -1

// DefaultTable is the bookkeeping table used when Options.Table is empty.
const DefaultTable = "schema_migrations"

// Migration is one versioned schema change.
type Migration struct {
	Version int64
	Name    string
	// Up applies the change and Down reverts it. Each may hold several
	// statements; the driver must accept them in one Exec (modernc.org/sqlite
	// does, and so does pgx's simple protocol used for argument-less Exec).
	Up   string
	Down string
}

// ID is the migration's file stem, such as "0001_init".
func (m Migration) ID() string { return fmt.Sprintf("%04d_%s", m.Version, m.Name) }

// MigrationStatus describes one migration as Status sees it.
type MigrationStatus struct {
	Version   int64
	Name      string
	Applied   bool
	AppliedAt time.Time // zero unless Applied
	// Missing is set for a version recorded as applied in the database but
	// unknown to this binary: typically a newer release migrated the
	// database. Up leaves it alone; Down refuses to go past it.
	Missing bool
}

// DB is what the Migrator needs from a database: every operation runs in
// its own transaction. *sql.DB and *sql.Conn satisfy it; a pgx pool can be
// wrapped with pgx's stdlib.OpenDBFromPool.
type DB interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// Dialect adapts the runner to a SQL engine. The zero value suits SQLite.
type Dialect struct {
	// Placeholder renders the n-th (1-based) bind parameter of the runner's
	// own bookkeeping queries. nil means "?" (SQLite, MySQL); Postgres
	// needs Dollar.
	Placeholder func(n int) string
	// Lock runs first in every transaction the Migrator opens, before it
	// reads which versions are applied, so that several processes starting
	// at once (several relay instances behind a load balancer) apply each
	// migration exactly once. A transaction-scoped lock fits, because the
	// Migrator re-reads the applied versions under the lock in every
	// transaction: Postgres uses "SELECT pg_advisory_xact_lock($1)".
	//
	// nil means no lock. That is right for SQLite when the database handle
	// begins transactions with BEGIN IMMEDIATE (modernc.org/sqlite's
	// _txlock=immediate DSN parameter): the write lock is then taken at
	// BEGIN, which already serialises migrators.
	Lock func(ctx context.Context, tx *sql.Tx) error
}

// Dollar is the Postgres placeholder style: $1, $2, ...
func Dollar(n int) string { return "$" + strconv.Itoa(n) }

func question(int) string { return "?" }

// Options configures a Migrator. The zero value is usable.
type Options struct {
	Dialect Dialect
	// Table names the bookkeeping table; "" means DefaultTable. It may be
	// schema-qualified ("relay.schema_migrations").
	Table string
	// Now stamps applied_at; nil means time.Now.
	Now func() time.Time
}

// Migrator applies and reverts one ordered set of migrations on one
// database. It holds no connection state, so it is safe for concurrent use;
// concurrent migrators are serialised by the database (see Dialect.Lock).
type Migrator struct {
	db         DB
	migrations []Migration
	dialect    Dialect
	table      string
	now        func() time.Time
}

// New returns a Migrator for migrations, which must have distinct positive
// versions (Load guarantees that); they are applied in ascending order
// whatever their order in the slice.
func New(db DB, migrations []Migration, opts Options) (*Migrator, error) {
	m := &Migrator{
		db:         db,
		migrations: slices.Clone(migrations),
		dialect:    opts.Dialect,
		table:      opts.Table,
		now:        opts.Now,
	}
	if m.dialect.Placeholder == nil {
		m.dialect.Placeholder = question
	}
	if m.table == "" {
		m.table = DefaultTable
	}
	if !validTable(m.table) {
		// The name is spliced into SQL, so it must be a plain identifier.
		return nil, fmt.Errorf("migrate: invalid table name %q", m.table)
	}
	if m.now == nil {
		m.now = time.Now
	}
	slices.SortFunc(m.migrations, func(a, b Migration) int { return cmp.Compare(a.Version, b.Version) })
	for i, mg := range m.migrations {
		if mg.Version <= 0 {
			return nil, fmt.Errorf("migrate: %s: version must be positive", mg.ID())
		}
		if i > 0 && m.migrations[i-1].Version == mg.Version {
			return nil, fmt.Errorf("migrate: duplicate version %d (%s, %s)", mg.Version, m.migrations[i-1].ID(), mg.ID())
		}
	}
	return m, nil
}

// Migrations returns the known migrations in version order.
func (m *Migrator) Migrations() []Migration { return slices.Clone(m.migrations) }

// Up applies every pending migration in ascending version order, each in
// its own transaction together with its schema_migrations row, so a failure
// leaves the database at the last migration that succeeded. It returns the
// migrations it applied (none when the database is current).
//
// A pending migration older than the newest applied one (two branches
// merged) is applied too: every known version not yet recorded is pending.
func (m *Migrator) Up(ctx context.Context) ([]Migration, error) {
	var done []Migration
	for {
		mg, ok, err := m.step(ctx, true)
		if err != nil {
			return done, err
		}
		if !ok {
			return done, nil
		}
		done = append(done, mg)
	}
}

// Down reverts the n most recently applied migrations, newest first, each in
// its own transaction. n == All (any negative n) reverts all of them; n == 0
// does nothing. It stops with an error at a version it has no migration for
// (Missing in Status), since it cannot know how to revert it.
func (m *Migrator) Down(ctx context.Context, n int) ([]Migration, error) {
	var done []Migration
	for n < 0 || len(done) < n {
		mg, ok, err := m.step(ctx, false)
		if err != nil {
			return done, err
		}
		if !ok {
			break
		}
		done = append(done, mg)
	}
	return done, nil
}

// Status lists every known migration and every applied version, in
// ascending version order.
func (m *Migrator) Status(ctx context.Context) ([]MigrationStatus, error) {
	var out []MigrationStatus
	err := m.inTx(ctx, func(tx *sql.Tx) error {
		applied, err := m.applied(ctx, tx)
		if err != nil {
			return err
		}
		for _, mg := range m.migrations {
			st := MigrationStatus{Version: mg.Version, Name: mg.Name}
			if a, ok := applied[mg.Version]; ok {
				st.Applied, st.AppliedAt = true, a.at
				delete(applied, mg.Version)
			}
			out = append(out, st)
		}
		for v, a := range applied {
			out = append(out, MigrationStatus{Version: v, Name: a.name, Applied: true, AppliedAt: a.at, Missing: true})
		}
		return nil
	})
	slices.SortFunc(out, func(a, b MigrationStatus) int { return cmp.Compare(a.Version, b.Version) })
	return out, err
}

// step applies the first pending migration (up) or reverts the newest
// applied one (down) in one transaction. ok is false when there was nothing
// to do. Deciding inside the locked transaction, rather than planning the
// whole run up front, is what makes concurrent migrators safe.
func (m *Migrator) step(ctx context.Context, up bool) (mg Migration, ok bool, err error) {
	err = m.inTx(ctx, func(tx *sql.Tx) error {
		applied, err := m.applied(ctx, tx)
		if err != nil {
			return err
		}
		if up {
			for _, c := range m.migrations {
				if _, done := applied[c.Version]; !done {
					mg, ok = c, true
					break
				}
			}
			if !ok {
				return nil
			}
			if _, err := tx.ExecContext(ctx, mg.Up); err != nil {
				return fmt.Errorf("migrate: up %s: %w", mg.ID(), err)
			}
			q := fmt.Sprintf("INSERT INTO %s (version, name, applied_at) VALUES (%s, %s, %s)",
				m.table, m.ph(1), m.ph(2), m.ph(3))
			if _, err := tx.ExecContext(ctx, q, mg.Version, mg.Name, formatTime(m.now())); err != nil {
				return fmt.Errorf("migrate: record %s: %w", mg.ID(), err)
			}
			return nil
		}

		if len(applied) == 0 {
			return nil
		}
		latest := int64(-1)
		for v := range applied {
			latest = max(latest, v)
		}
		i, found := slices.BinarySearchFunc(m.migrations, latest, func(c Migration, v int64) int { return cmp.Compare(c.Version, v) })
		if !found {
			return fmt.Errorf("migrate: down: applied version %d (%s) is unknown to this binary", latest, applied[latest].name)
		}
		mg, ok = m.migrations[i], true
		if _, err := tx.ExecContext(ctx, mg.Down); err != nil {
			return fmt.Errorf("migrate: down %s: %w", mg.ID(), err)
		}
		q := fmt.Sprintf("DELETE FROM %s WHERE version = %s", m.table, m.ph(1))
		if _, err := tx.ExecContext(ctx, q, mg.Version); err != nil {
			return fmt.Errorf("migrate: unrecord %s: %w", mg.ID(), err)
		}
		return nil
	})
	if err != nil {
		return Migration{}, false, err
	}
	return mg, ok, nil
}

// inTx runs fn in a transaction that first takes the dialect's lock and
// makes sure the bookkeeping table exists. Creating the table under the
// lock avoids the race of two processes creating it at once (Postgres can
// fail CREATE TABLE IF NOT EXISTS with a unique violation in that case).
func (m *Migrator) inTx(ctx context.Context, fn func(*sql.Tx) error) (err error) {
	tx, err := m.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the error that made us roll back is the one to report
		}
	}()
	if m.dialect.Lock != nil {
		if err := m.dialect.Lock(ctx, tx); err != nil {
			return fmt.Errorf("migrate: lock: %w", err)
		}
	}
	// applied_at is RFC 3339 text rather than a native timestamp so that the
	// same statement works on every engine and stays readable in any SQL
	// shell; BIGINT is an integer in SQLite and Postgres alike.
	ddl := fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	version    BIGINT PRIMARY KEY,
	name       TEXT NOT NULL,
	applied_at TEXT NOT NULL
)`, m.table)
	if _, err := tx.ExecContext(ctx, ddl); err != nil {
		return fmt.Errorf("migrate: create %s: %w", m.table, err)
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	return nil
}

type appliedRow struct {
	name string
	at   time.Time
}

func (m *Migrator) applied(ctx context.Context, tx *sql.Tx) (map[int64]appliedRow, error) {
	rows, err := tx.QueryContext(ctx, fmt.Sprintf("SELECT version, name, applied_at FROM %s", m.table))
	if err != nil {
		return nil, fmt.Errorf("migrate: read %s: %w", m.table, err)
	}
	defer rows.Close()
	out := make(map[int64]appliedRow)
	for rows.Next() {
		var (
			v       int64
			name, a string
		)
		if err := rows.Scan(&v, &name, &a); err != nil {
			return nil, fmt.Errorf("migrate: read %s: %w", m.table, err)
		}
		at, err := time.Parse(time.RFC3339Nano, a)
		if err != nil {
			return nil, fmt.Errorf("migrate: version %d: bad applied_at %q: %w", v, a, err)
		}
		out[v] = appliedRow{name: name, at: at}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("migrate: read %s: %w", m.table, err)
	}
	return out, nil
}

func (m *Migrator) ph(n int) string { return m.dialect.Placeholder(n) }

// formatTime writes fixed-width UTC microseconds, so the text sorts in time
// order.
func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
}

// validTable accepts an identifier, optionally schema-qualified.
func validTable(s string) bool {
	schema, name, qualified := strings.Cut(s, ".")
	if !qualified {
		return validIdent(s)
	}
	return validIdent(schema) && validIdent(name)
}

func validIdent(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
