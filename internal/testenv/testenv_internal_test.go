package testenv

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeTB records a skip or a failure instead of reporting it, so the tests
// below can check which one unavailable chose. Like the real ones, Skip and
// Fatal end the calling goroutine; run gives them one to end.
type fakeTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

func (f *fakeTB) Skipf(format string, args ...any) { f.Skip(fmt.Sprintf(format, args...)) }

func (f *fakeTB) Fatal(args ...any) {
	f.failed, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

func (f *fakeTB) Fatalf(format string, args ...any) { f.Fatal(fmt.Sprintf(format, args...)) }

// run calls fn with a fakeTB on a goroutine of its own and waits for it to
// return or to stop at a Skip or Fatal.
func run(t *testing.T, fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

func TestRequireServices(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want bool
	}{
		{"", false}, {"0", false}, {"false", false}, {"FALSE", false},
		{"1", true}, {"true", true}, {"T", true},
		{"yes", true}, // not a bool: a typo must not turn CI's failures into skips
	} {
		t.Setenv(EnvRequireServices, tc.v)
		assert.Equal(t, tc.want, requireServices(), "%s=%q", EnvRequireServices, tc.v)
	}
}

func TestUnavailable(t *testing.T) {
	t.Run("skips by default", func(t *testing.T) {
		t.Setenv(EnvRequireServices, "")
		f := run(t, func(tb testing.TB) { unavailable(tb, "Postgres", "no Docker engine") })
		assert.True(t, f.skipped)
		assert.False(t, f.failed)
		// The message says why and how to run the test.
		assert.Contains(t, f.msg, "no Docker engine")
		assert.Contains(t, f.msg, EnvPostgresURL+"=postgres://")
		assert.Contains(t, f.msg, EnvRedisURL+"=redis://")
	})
	t.Run("fails when services are required", func(t *testing.T) {
		t.Setenv(EnvRequireServices, "1")
		f := run(t, func(tb testing.TB) { unavailable(tb, "Redis", "no Docker engine") })
		assert.False(t, f.skipped)
		assert.True(t, f.failed)
		assert.Contains(t, f.msg, EnvRequireServices)
		assert.Contains(t, f.msg, EnvRedisURL)
	})
}

func TestServerGet(t *testing.T) {
	const env = "RELAY_TEST_FAKE_URL"
	// Each server's once is spent up front with a chosen outcome, standing
	// in for the container start.
	noContainer := func() *server {
		s := &server{name: "Fake", env: env}
		s.once.Do(func() { s.why = "no Docker engine: fake" })
		return s
	}
	withContainer := func() *server {
		s := &server{name: "Fake", env: env}
		s.once.Do(func() { s.url = "fake://container" })
		return s
	}

	t.Run("container first", func(t *testing.T) {
		t.Setenv(env, "fake://env")
		var got string
		f := run(t, func(tb testing.TB) { got = withContainer().get(tb) })
		require.False(t, f.skipped || f.failed, f.msg)
		assert.Equal(t, "fake://container", got)
	})
	t.Run("then the environment", func(t *testing.T) {
		t.Setenv(env, "fake://env")
		t.Setenv(EnvRequireServices, "1")
		var got string
		f := run(t, func(tb testing.TB) { got = noContainer().get(tb) })
		require.False(t, f.skipped || f.failed, f.msg)
		assert.Equal(t, "fake://env", got)
	})
	t.Run("else skip", func(t *testing.T) {
		t.Setenv(env, "")
		t.Setenv(EnvRequireServices, "")
		f := run(t, func(tb testing.TB) { noContainer().get(tb) })
		assert.True(t, f.skipped)
		assert.Contains(t, f.msg, "no Docker engine: fake")
		assert.Contains(t, f.msg, env+" is not set")
	})
	t.Run("or fail when required", func(t *testing.T) {
		t.Setenv(env, "")
		t.Setenv(EnvRequireServices, "1")
		f := run(t, func(tb testing.TB) { noContainer().get(tb) })
		assert.True(t, f.failed)
	})
}

// TestDockerProbeIsQuick: looking for a Docker engine, found or not, must
// not slow down a test run (it happens once per test binary).
func TestDockerProbeIsQuick(t *testing.T) {
	start := time.Now()
	err := dockerEngine()
	took := time.Since(start)
	t.Logf("Docker engine: %v (looked for %v)", err, took)
	assert.Less(t, took, dockerProbeTimeout+2*time.Second)
}

func TestWithDatabase(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "postgres://postgres@127.0.0.1:5432/relay_test_x?sslmode=disable"},
		{"postgresql://u:p%40ss@db.example:6543?sslmode=require", "postgresql://u:p%40ss@db.example:6543/relay_test_x?sslmode=require"},
		{"postgres://u@h/test?dbname=other&sslmode=disable", "postgres://u@h/relay_test_x?sslmode=disable"},
		{"postgres:///test?host=/var/run/postgresql", "postgres:///relay_test_x?host=/var/run/postgresql"},
		{"host=127.0.0.1 user=postgres dbname=test sslmode=disable", "host=127.0.0.1 user=postgres dbname=test sslmode=disable dbname=relay_test_x"},
		{" host=h ", "host=h dbname=relay_test_x"},
	} {
		got, err := withDatabase(tc.in, "relay_test_x")
		require.NoError(t, err)
		assert.Equal(t, tc.want, got, "from %q", tc.in)
	}
	_, err := withDatabase("postgres://u:secret@h:port/x", "relay_test_x")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "secret")
}
