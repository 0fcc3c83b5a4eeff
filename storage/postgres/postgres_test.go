package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
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

// TestTextPostgresCannotHold: Postgres text takes neither NUL nor invalid
// UTF-8, which Go strings (and so client-supplied headers and model names)
// may carry. A usage batch must still land whole, with U+FFFD in their
// place; lookups by such a value find nothing rather than failing.
func TestTextPostgresCannotHold(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	bad := usage.Record{
		RequestID: "req_\x00bad", Time: at, KeyID: "key000000001", Model: "claude\xff", Status: 200,
		UserAgent: "ua\x00\xfe\xff", SessionID: "s\xc3", Usage: usage.Usage{InputTokens: 5},
	}
	good := usage.Record{RequestID: "req_good", Time: at.Add(time.Second), KeyID: "key000000001", Status: 200}
	require.NoError(t, s.InsertRecords(ctx, []usage.Record{bad, good}))
	require.NoError(t, s.InsertRecords(ctx, []usage.Record{bad}), "a replay is still deduplicated")

	got, _, err := s.ListRecords(ctx, usage.Filter{}, "", 10)
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, "req_good", got[0].RequestID)
	assert.Equal(t, "req_\uFFFDbad", got[1].RequestID)
	assert.Equal(t, "claude\uFFFD", got[1].Model)
	assert.Equal(t, "ua\uFFFD\uFFFD", got[1].UserAgent) // NUL, then one for the run of invalid bytes
	assert.Equal(t, "s\uFFFD", got[1].SessionID)

	tot, err := s.Totals(ctx, usage.Filter{Model: "claude\xff"})
	require.NoError(t, err, "a filter value is mapped the same way")
	assert.Equal(t, int64(1), tot.Requests)

	for _, id := range []string{"bad\x00id0000", "bad\xffid0000"} {
		_, err = s.GetKey(ctx, id)
		require.ErrorIs(t, err, keys.ErrNotFound)
		require.ErrorIs(t, s.UpdateKey(ctx, &keys.Key{ID: id}), keys.ErrNotFound)
		require.NoError(t, s.TouchKeys(ctx, map[string]time.Time{id: at}))
	}
	_, _, err = s.ListKeys(ctx, keys.ListFilter{Name: "\x00", Tier: "\xff", After: "\xfe"})
	require.NoError(t, err)
}

// TestInsertRecordsIsAtomic: a batch lands whole or not at all, so the
// Recorder can retry it without knowing which part was stored.
func TestInsertRecordsIsAtomic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	recs := []usage.Record{
		{RequestID: "req_a", Time: at, KeyID: "k", Status: 200},
		// Past timestamptz's range (year 294276): the server rejects it,
		// after req_a was sent.
		{RequestID: "req_b", Time: time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC), KeyID: "k", Status: 200},
	}
	err := s.InsertRecords(ctx, recs)
	require.Error(t, err)
	t.Log(err)
	tot, err := s.Totals(ctx, usage.Filter{})
	require.NoError(t, err)
	assert.Zero(t, tot.Requests, "nothing of a failed batch is stored")

	recs[1].Time = at
	require.NoError(t, s.InsertRecords(ctx, recs), "the retry stores it all")
	tot, err = s.Totals(ctx, usage.Filter{})
	require.NoError(t, err)
	assert.Equal(t, int64(2), tot.Requests)
}
