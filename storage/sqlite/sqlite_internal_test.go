package sqlite

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConnectionSettings checks what each pool's connections run with:
// DSN pragmas fail silently when misspelled.
func TestConnectionSettings(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "relay.db"))
	require.NoError(t, err)
	defer s.Close()

	pragma := func(t *testing.T, pool, name string) string {
		t.Helper()
		db := s.write
		if pool == "read" {
			db = s.read
		}
		var v string
		require.NoError(t, db.QueryRowContext(ctx, "PRAGMA "+name).Scan(&v))
		return v
	}
	for _, pool := range []string{"write", "read"} {
		t.Run(pool, func(t *testing.T) {
			assert.Equal(t, "wal", pragma(t, pool, "journal_mode"))
			assert.Equal(t, "1", pragma(t, pool, "foreign_keys"))
			assert.Equal(t, "1", pragma(t, pool, "synchronous"), "NORMAL")
			assert.Equal(t, "10000", pragma(t, pool, "busy_timeout"))
		})
	}
	assert.Equal(t, "0", pragma(t, "write", "query_only"))
	assert.Equal(t, "1", pragma(t, "read", "query_only"))
	assert.Equal(t, 1, s.write.Stats().MaxOpenConnections)
	assert.GreaterOrEqual(t, s.read.Stats().MaxOpenConnections, 4)

	_, err = s.read.ExecContext(ctx, "DELETE FROM api_keys")
	require.Error(t, err, "the read pool must refuse writes")
}

func TestCeilMicros(t *testing.T) {
	base := fromMicros(1_700_000_000_123_456)
	tests := []struct {
		name string
		in   int64 // nanoseconds after base
		want int64 // microseconds after base
	}{
		{"whole", 0, 0},
		{"one ns", 1, 1},
		{"999 ns", 999, 1},
		{"1000 ns", 1000, 1},
		{"1001 ns", 1001, 2},
		{"minus one ns", -1, 0},
		{"minus 1001 ns", -1001, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ceilMicros(base.Add(time.Duration(tc.in)))
			assert.Equal(t, base.UnixMicro()+tc.want, got)
		})
	}
	// Before 1970 too, where integer division truncates toward zero.
	pre := fromMicros(-5)
	assert.Equal(t, int64(-4), ceilMicros(pre.Add(1)))
	assert.Equal(t, int64(-5), ceilMicros(pre))
}
