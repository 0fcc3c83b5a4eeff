package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	goredis "github.com/redis/go-redis/v9"

	"github.com/relaystation/relay/internal/migrate"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/storage/postgres"
	redisstore "github.com/relaystation/relay/storage/redis"
	"github.com/relaystation/relay/storage/sqlite"
	"github.com/relaystation/relay/usage"
)

// store is what the server keeps keys and usage in: SQLite by default,
// Postgres when DATABASE_URL names one.
type store interface {
	keys.Store
	usage.Store
	Migrator() *migrate.Migrator
	Close() error
}

// backend says which store DATABASE_URL names, and where.
func (c *config) backend() (kind, location string, err error) {
	u := c.DatabaseURL
	switch {
	case u == "":
		return "sqlite", filepath.Join(c.DataDir, "relay.db"), nil
	case strings.HasPrefix(u, "postgres://"), strings.HasPrefix(u, "postgresql://"):
		return "postgres", u, nil
	case strings.HasPrefix(u, "sqlite://"):
		return "sqlite", strings.TrimPrefix(u, "sqlite://"), nil
	case strings.HasPrefix(u, "sqlite:"):
		return "sqlite", strings.TrimPrefix(u, "sqlite:"), nil
	}
	return "", "", fmt.Errorf("DATABASE_URL: unrecognised scheme in %q (want postgres://… or sqlite:PATH)", redisstore.RedactURL(u))
}

// migrationsDir is where `migrate create` writes for the configured store.
func (c *config) migrationsDir() (string, error) {
	kind, _, err := c.backend()
	if err != nil {
		return "", err
	}
	if kind == "postgres" {
		return filepath.FromSlash(postgres.MigrationsDir), nil
	}
	return filepath.FromSlash(sqlite.MigrationsDir), nil
}

// openStore opens the configured store, applying pending migrations when
// migrate is true. With migrate false it refuses a schema with pending
// migrations, naming the command that applies them.
func openStore(ctx context.Context, c *config, migrateNow bool) (store, error) {
	kind, loc, err := c.backend()
	if err != nil {
		return nil, err
	}
	var st store
	switch kind {
	case "postgres":
		var pool *pgxpool.Pool
		if pool, err = pgxpool.New(ctx, loc); err != nil {
			return nil, fmt.Errorf("DATABASE_URL: %w", err) // pgx redacts the password
		}
		var pg *postgres.Store
		if pg, err = postgres.New(ctx, pool, postgres.Options{NoMigrate: !migrateNow}); err != nil {
			pool.Close()
			break
		}
		st = &ownedPool{Store: pg, pool: pool}
	default:
		if err := ensureDir(filepath.Dir(loc)); err != nil {
			return nil, err
		}
		st, err = sqlite.OpenWith(ctx, loc, sqlite.Options{NoMigrate: !migrateNow})
	}
	if err != nil {
		return nil, fmt.Errorf("%s store: %w", kind, err)
	}
	return st, nil
}

// requireMigrated refuses to serve on a schema with pending migrations.
func requireMigrated(ctx context.Context, st store) error {
	status, err := st.Migrator().Status(ctx)
	if err != nil {
		return err
	}
	for _, s := range status {
		if !s.Applied {
			return fmt.Errorf("the database has pending migrations (%04d_%s and maybe more) and RELAY_AUTO_MIGRATE=false: run `standalone migrate up` first", s.Version, s.Name)
		}
	}
	return nil
}

// openRedis connects to REDIS_URL and checks it answers; the URL's
// password never appears in errors or logs.
func openRedis(ctx context.Context, c *config, log *slog.Logger) (goredis.UniversalClient, error) {
	goredis.SetLogger(newRedisLog(log))
	rc, err := redisstore.NewClient(c.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := rc.Ping(pctx).Err(); err != nil {
		// Not fatal: the limiter falls back to in-process limits until
		// Redis answers (or refuses requests, with QUOTA_FAIL_CLOSED).
		log.Warn("Redis does not answer yet; limits are enforced in process until it does", "redis", redisstore.RedactURL(c.RedisURL), "error", err)
	}
	return rc, nil
}

// ownedPool is a Postgres store whose pool the server made, and closes.
type ownedPool struct {
	*postgres.Store
	pool *pgxpool.Pool
}

func (o *ownedPool) Close() error {
	err := o.Store.Close()
	o.pool.Close()
	return err
}
