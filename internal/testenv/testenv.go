// Package testenv gives integration tests a real Postgres database and a
// real Redis, each private to the test, so that tests run in parallel and
// leave nothing behind.
//
// A server is found in this order:
//
//  1. A container started with testcontainers-go, when a Docker engine is
//     reachable. It is started at most once per test binary and shared by
//     every test in it; testcontainers' reaper (Ryuk) removes it when the
//     binary exits.
//  2. The server named by RELAY_TEST_POSTGRES_URL or RELAY_TEST_REDIS_URL.
//  3. None: the test is skipped, with a message saying how to run it. With
//     RELAY_TEST_REQUIRE_SERVICES=1 (as CI sets it) the test fails instead,
//     so a CI run can never pass by skipping everything.
//
// On that server each test gets its own database (Postgres) or key prefix
// (Redis), removed by t.Cleanup.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"
)

// Environment variables read by this package.
const (
	// EnvPostgresURL names a Postgres server (a postgres:// URL or a
	// keyword/value DSN) whose user may CREATE DATABASE.
	EnvPostgresURL = "RELAY_TEST_POSTGRES_URL"
	// EnvRedisURL names a Redis server as a redis:// URL (go-redis's
	// ParseURL syntax).
	EnvRedisURL = "RELAY_TEST_REDIS_URL"
	// EnvRequireServices turns "skip: no server" into a test failure. Any
	// value but "", "0" or "false" (strconv.ParseBool) counts as set, so a
	// typo in CI fails loudly rather than skipping quietly.
	EnvRequireServices = "RELAY_TEST_REQUIRE_SERVICES"
)

// howToRun ends every skip message: the one-line recipe a developer without
// Docker needs.
const howToRun = "set " + EnvPostgresURL + " and " + EnvRedisURL + ", e.g.\n\t" +
	EnvPostgresURL + "=postgres://postgres@127.0.0.1:5432/test?sslmode=disable " +
	EnvRedisURL + "=redis://127.0.0.1:6379/0 go test ./...\n" +
	"or make a Docker engine reachable (testcontainers starts the servers); " +
	"set " + EnvRequireServices + "=1 to make this skip a failure"

// setupTimeout bounds each per-test setup or cleanup step against a server
// that accepts connections but does not answer.
const setupTimeout = 30 * time.Second

// Postgres returns the DSN of a new, empty database that only this test
// uses: relay_test_<random> on the server found as the package doc says,
// dropped (with any connections still open to it) when the test and its
// subtests are done. The DSN has the form of the server's DSN, with only
// the database changed.
//
// A database rather than a schema, because what the relay runs per
// database (migrations, their advisory lock, its bookkeeping table) is then
// exactly as in production, and tests cannot see each other at all.
func Postgres(t testing.TB) string {
	t.Helper()
	base := postgresServer.get(t)

	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("testenv: connect to the Postgres test server: %v", err)
	}
	defer conn.Close(context.Background())

	name := "relay_test_" + randomHex(t, 8)
	ident := pgx.Identifier{name}.Sanitize()
	// template0 rather than the default template1: it is guaranteed empty
	// (nothing a developer installed into template1 leaks into the tests),
	// and nobody can be connected to it, which would make CREATE DATABASE
	// fail with "source database is being accessed by other users".
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident+" TEMPLATE template0"); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := dropDatabase(base, name); err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
		}
	})
	dsn, err := withDatabase(base, name)
	if err != nil {
		t.Fatalf("testenv: %s: %v", EnvPostgresURL, err)
	}
	return dsn
}

// dropDatabase drops database name, disconnecting whatever the test left connected
// (a pool closed by a later cleanup, a leaked connection): a leak must not
// turn into a database left behind.
func dropDatabase(base, name string) error {
	ident := pgx.Identifier{name}.Sanitize()
	// Cleanup runs after the test's context is cancelled, so it gets its
	// own.
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)")
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42601" {
		// Syntax error: a server older than Postgres 13, without FORCE.
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = $1 AND pid <> pg_backend_pid()`, name); err != nil {
			return err
		}
		_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident)
	}
	return err
}

// withDatabase returns base with its database replaced by name. base is a
// postgres:// URL or a keyword/value DSN, as pgx accepts both.
func withDatabase(base, name string) (string, error) {
	if strings.HasPrefix(base, "postgres://") || strings.HasPrefix(base, "postgresql://") {
		u, err := url.Parse(base)
		if err != nil {
			return "", errors.New("not a valid URL") // url's error would quote the password
		}
		u.Path, u.RawPath = "/"+name, ""
		q := u.Query()
		if q.Has("dbname") {
			q.Del("dbname") // it would override the path
			u.RawQuery = q.Encode()
		}
		return u.String(), nil
	}
	// In a keyword/value DSN the last occurrence of a keyword wins.
	return strings.TrimSpace(base) + " dbname=" + name, nil
}

// Redis returns the URL of the Redis server found as the package doc says
// and a key prefix that only this test uses ("relay_test:<random>:"). The
// test must put every key it creates under the prefix: when the test and
// its subtests are done, the keys matching prefix* are deleted (SCAN, then
// UNLINK), and nothing else is touched, so tests share the server's
// database safely.
func Redis(t testing.TB) (redisURL, prefix string) {
	t.Helper()
	base := redisServer.get(t)
	opts, err := redis.ParseURL(base)
	if err != nil {
		t.Fatalf("testenv: %s: %v", EnvRedisURL, err)
	}
	client := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		t.Fatalf("testenv: ping the Redis test server: %v", err)
	}
	prefix = "relay_test:" + randomHex(t, 8) + ":"
	t.Cleanup(func() {
		defer client.Close()
		if err := deletePrefix(client, prefix); err != nil {
			t.Errorf("testenv: delete Redis keys %s*: %v", prefix, err)
		}
	})
	return base, prefix
}

// deletePrefix removes every key starting with prefix. The prefix is
// letters, digits, '_' and ':' only, so it is its own glob pattern.
func deletePrefix(client *redis.Client, prefix string) error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	var cursor uint64
	for {
		keys, next, err := client.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			// UNLINK frees the memory in the background: cleanup
			// should not stall the server for big keys.
			if err := client.Unlink(ctx, keys...).Err(); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// randomHex is 2n random hex digits: unique names for parallel tests and
// for test binaries running at once against one server.
func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("testenv: random name: %v", err)
	}
	return hex.EncodeToString(b)
}

// requireServices reports whether EnvRequireServices is set.
func requireServices() bool {
	v := os.Getenv(EnvRequireServices)
	if v == "" {
		return false
	}
	on, err := strconv.ParseBool(v)
	return on || err != nil
}

// unavailable skips t, or fails it when EnvRequireServices is set, saying
// why service has no server and how to give it one.
func unavailable(t testing.TB, service, why string) {
	t.Helper()
	msg := fmt.Sprintf("testenv: no %s server for this integration test (%s).\nTo run it, %s", service, why, howToRun)
	if requireServices() {
		t.Fatalf("%s\n%s is set, so a missing server is a failure", msg, EnvRequireServices)
	}
	t.Skip(msg)
}
