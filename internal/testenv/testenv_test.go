package testenv_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/relaystation/relay/internal/testenv"
)

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// databaseExists asks the server of dsn (through its own database) whether
// name still exists.
func databaseExists(t *testing.T, dsn, name string) bool {
	t.Helper()
	var n int
	require.NoError(t, connect(t, dsn).QueryRow(context.Background(),
		"SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n))
	return n == 1
}

func TestPostgres(t *testing.T) {
	ctx := context.Background()
	var (
		name  string
		outer = testenv.Postgres(t) // outlives the subtest, to look from
	)
	t.Run("fresh database", func(t *testing.T) {
		dsn := testenv.Postgres(t)
		conn := connect(t, dsn)
		require.NoError(t, conn.QueryRow(ctx, "SELECT current_database()").Scan(&name))
		assert.True(t, strings.HasPrefix(name, "relay_test_"), name)
		var tables int
		require.NoError(t, conn.QueryRow(ctx,
			"SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')").Scan(&tables))
		assert.Zero(t, tables, "a new database is empty")
		_, err := conn.Exec(ctx, "CREATE TABLE leftover (id int)")
		require.NoError(t, err)

		other := testenv.Postgres(t)
		assert.NotEqual(t, dsn, other, "every call gets a database of its own")

		// A connection the test forgets to close must not keep the
		// database alive: cleanup drops it anyway.
		leaked, err := pgx.Connect(ctx, dsn)
		require.NoError(t, err)
		_ = leaked
	})
	require.NotEmpty(t, name)
	assert.False(t, databaseExists(t, outer, name), "database %s must be dropped when its test ends", name)
}

// TestPostgresParallel: parallel tests each see their own database, so the
// same table name never collides.
func TestPostgresParallel(t *testing.T) {
	for i := range 4 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			conn := connect(t, testenv.Postgres(t))
			_, err := conn.Exec(context.Background(), "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
			require.NoError(t, err)
		})
	}
}

func TestRedis(t *testing.T) {
	ctx := context.Background()
	var (
		prefix string
		client *redis.Client
	)
	url, _ := testenv.Redis(t)
	opts, err := redis.ParseURL(url)
	require.NoError(t, err)
	client = redis.NewClient(opts)
	t.Cleanup(func() { client.Close() })

	// A key of another test (another prefix) must survive this test's
	// cleanup.
	_, otherPrefix := testenv.Redis(t)
	require.NoError(t, client.Set(ctx, otherPrefix+"keep", "1", 0).Err())

	t.Run("prefix", func(t *testing.T) {
		var u string
		u, prefix = testenv.Redis(t)
		assert.Equal(t, url, u)
		assert.True(t, strings.HasPrefix(prefix, "relay_test:"), prefix)
		assert.NotEqual(t, otherPrefix, prefix)
		// More keys than one SCAN page, of several types.
		pipe := client.Pipeline()
		for i := range 2500 {
			pipe.Set(ctx, fmt.Sprintf("%skey:%d", prefix, i), i, 0)
		}
		pipe.HSet(ctx, prefix+"hash", "f", "v")
		pipe.ZAdd(ctx, prefix+"zset", redis.Z{Score: 1, Member: "m"})
		_, err := pipe.Exec(ctx)
		require.NoError(t, err)
	})
	keys, _, err := client.Scan(ctx, 0, prefix+"*", 10000).Result()
	require.NoError(t, err)
	assert.Empty(t, keys, "the keys under %s must be deleted when its test ends", prefix)
	n, err := client.Exists(ctx, otherPrefix+"keep").Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "keys under another prefix are left alone")
}
