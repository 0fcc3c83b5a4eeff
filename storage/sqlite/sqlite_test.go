package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/storage/sqlite"
	"github.com/relaystation/relay/storage/storagetest"
	"github.com/relaystation/relay/usage"
)

// newStore opens a migrated database in a fresh file, closed when t ends.
func newStore(t testing.TB) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "relay.db"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestKeysStore(t *testing.T) {
	storagetest.TestKeysStore(t, func(t *testing.T) keys.Store { return newStore(t) })
}

func TestUsageStore(t *testing.T) {
	storagetest.TestUsageStore(t, func(t *testing.T) usage.Store { return newStore(t) })
}

// TestInMemory runs the suites on ":memory:", whose single shared
// connection is a different configuration from the file's two pools.
func TestInMemory(t *testing.T) {
	open := func(t *testing.T) *sqlite.Store {
		s, err := sqlite.Open(context.Background(), ":memory:")
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
