package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
)

// Images of the containers, pinned to the major versions the relay is
// developed against (and CI's installed servers run).
const (
	postgresImage = "postgres:15-alpine"
	redisImage    = "redis:7-alpine"
)

// dockerProbeTimeout bounds the look for a Docker engine. Without one the
// look fails at once (no socket); the bound is for a DOCKER_HOST that does
// not answer, which must cost a test run seconds, not minutes.
const dockerProbeTimeout = 3 * time.Second

// containerTimeout bounds starting a container, image pull included.
const containerTimeout = 5 * time.Minute

// The package-level state of this package, all of it: which servers this
// test binary uses, each resolved once (sync.Once) and then only read. It is
// a cache, not configuration: starting a container per test would cost
// seconds each, and the containers live exactly as long as the binary. This
// is test plumbing under internal/, outside the "no globals" rule for
// importable packages.
var (
	postgresServer = &server{name: "Postgres", env: EnvPostgresURL, container: startPostgres}
	redisServer    = &server{name: "Redis", env: EnvRedisURL, container: startRedis}

	dockerOnce sync.Once
	dockerErr  error // why there is no usable Docker engine; nil if there is
)

// server finds one kind of server for the tests of this binary.
type server struct {
	name      string                                    // for messages: "Postgres"
	env       string                                    // the variable naming a server to use without Docker
	container func(ctx context.Context) (string, error) // starts a container, returns its URL

	once sync.Once
	url  string // the container's URL; "" when there is none
	why  string // why there is no container
}

// get returns the URL of the server to use, or skips or fails t (see
// unavailable) when there is none. The container, if any, is started by
// the first caller; the others wait for it.
func (s *server) get(t testing.TB) string {
	t.Helper()
	s.once.Do(s.start)
	if s.url != "" {
		return s.url
	}
	if u := os.Getenv(s.env); u != "" {
		return u
	}
	unavailable(t, s.name, s.why+"; "+s.env+" is not set")
	return "" // not reached: unavailable ends the test
}

func (s *server) start() {
	if err := dockerEngine(); err != nil {
		s.why = "no Docker engine: " + err.Error()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), containerTimeout)
	defer cancel()
	u, err := s.container(ctx)
	if err != nil {
		s.why = "a Docker engine is reachable, but the " + s.name + " container did not start: " + err.Error()
		return
	}
	s.url = u
}

// dockerEngine reports why testcontainers cannot use a Docker engine, or
// nil if it can; the answer is looked for once per binary.
func dockerEngine() error {
	dockerOnce.Do(func() { dockerErr = probeDocker(dockerProbeTimeout) })
	return dockerErr
}

// probeDocker asks testcontainers for its provider and checks the engine
// answers, within timeout. testcontainers finds the engine the way every
// testcontainers user expects (DOCKER_HOST, ~/.testcontainers.properties,
// the default and rootless sockets, Docker Desktop), and fails fast when
// there is no socket at all. Some of its discovery uses no context and it
// panics on some failures, hence the goroutine, the recover and the select:
// a stuck probe is abandoned (once per binary) rather than waited for.
func probeDocker(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("testcontainers: %v", r)
			}
		}()
		p, err := testcontainers.NewDockerProvider()
		if err != nil {
			done <- err
			return
		}
		done <- p.Health(ctx) // Health closes p
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return errors.New("the Docker engine did not answer within " + timeout.String())
	}
}

// startPostgres and startRedis remove a container that started but cannot
// be used; TerminateContainer accepts the nil a failed Run may return.

func startPostgres(ctx context.Context) (string, error) {
	c, err := tcpostgres.Run(ctx, postgresImage,
		tcpostgres.WithDatabase("relay"),
		tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"),
		tcpostgres.BasicWaitStrategies(),
	)
	if err != nil {
		return "", errors.Join(err, testcontainers.TerminateContainer(c))
	}
	dsn, err := c.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		return "", errors.Join(err, testcontainers.TerminateContainer(c))
	}
	return dsn, nil
}

func startRedis(ctx context.Context) (string, error) {
	c, err := tcredis.Run(ctx, redisImage)
	if err != nil {
		return "", errors.Join(err, testcontainers.TerminateContainer(c))
	}
	u, err := c.ConnectionString(ctx)
	if err != nil {
		return "", errors.Join(err, testcontainers.TerminateContainer(c))
	}
	return u, nil
}
