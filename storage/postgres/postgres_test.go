package postgres_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/relaystation/relay/internal/testenv"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/storage/postgres"
	"github.com/relaystation/relay/storage/storagetest"
	"github.com/relaystation/relay/usage"
)

// newStore opens a migrated store on a database of its own, closed when t
// ends (before testenv drops the database: cleanups run last-in first-out).
func newStore(t testing.TB) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), testenv.Postgres(t))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// The suites call the constructor once per subtest and run the subtests in
// parallel; every call gets a database of its own.

func TestKeysStore(t *testing.T) {
	storagetest.TestKeysStore(t, func(t *testing.T) keys.Store { return newStore(t) })
}

func TestUsageStore(t *testing.T) {
	storagetest.TestUsageStore(t, func(t *testing.T) usage.Store { return newStore(t) })
}

// TestSimpleProtocol runs the suites through the simple query protocol,
// which is what a pool behind PgBouncer in transaction mode must use: no
// prepared statements, every argument sent as text. It catches argument
// types that only the extended protocol knows how to send.
func TestSimpleProtocol(t *testing.T) {
	open := func(t *testing.T) *postgres.Store {
		cfg, err := pgxpool.ParseConfig(testenv.Postgres(t))
		require.NoError(t, err)
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		s, err := postgres.New(context.Background(), pool, postgres.Options{})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		return s
	}
	t.Run("Keys", func(t *testing.T) {
		storagetest.TestKeysStore(t, func(t *testing.T) keys.Store { return open(t) })
	})
	t.Run("Usage", func(t *testing.T) {
		storagetest.TestUsageStore(t, func(t *testing.T) usage.Store { return open(t) })
	})
}
