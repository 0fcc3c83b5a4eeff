package redis_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redisstore "github.com/relaystation/relay/storage/redis"
)

// subscriber is one relay instance's side of the invalidation: what its
// Run delivered.
type subscriber struct {
	ids     chan string
	resyncs chan struct{}
	done    chan error
}

// runInvalidator runs inv until the test ends.
func runInvalidator(t *testing.T, inv *redisstore.Invalidator) *subscriber {
	t.Helper()
	s := &subscriber{ids: make(chan string, 100), resyncs: make(chan struct{}, 100), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		s.done <- inv.Run(ctx,
			func(id string) { s.ids <- id },
			func() { s.resyncs <- struct{}{} })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-s.done:
			assert.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	return s
}

// expectID waits up to d for id.
func (s *subscriber) expectID(t *testing.T, id string, d time.Duration) {
	t.Helper()
	select {
	case got := <-s.ids:
		assert.Equal(t, id, got)
	case <-time.After(d):
		t.Fatalf("invalidation of %s not received within %v", id, d)
	}
}

func (s *subscriber) expectResync(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-s.resyncs:
	case <-time.After(d):
		t.Fatalf("no resync within %v", d)
	}
}

func (s *subscriber) expectQuiet(t *testing.T) {
	t.Helper()
	select {
	case id := <-s.ids:
		t.Fatalf("unexpected invalidation %s", id)
	case <-s.resyncs:
		t.Fatal("unexpected resync")
	default:
	}
}

// waitSubscribers waits until channel has n subscribers.
func waitSubscribers(t *testing.T, client goredis.UniversalClient, channel string, n int64) {
	t.Helper()
	require.Eventually(t, func() bool {
		m, err := client.PubSubNumSub(t.Context(), channel).Result()
		return err == nil && m[channel] >= n
	}, 5*time.Second, 5*time.Millisecond, "waiting for %d subscribers of %s", n, channel)
}

// newInstanceClient is a client of its own, as another relay instance
// would have.
func newInstanceClient(t *testing.T, url string) goredis.UniversalClient {
	t.Helper()
	c, err := redisstore.NewClient(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestInvalidatorAcrossInstances(t *testing.T) {
	ctx := t.Context()
	clientA, prefix := connectTestRedis(t)
	clientB, _ := connectTestRedis(t) // another connection pool: another instance

	a := redisstore.NewInvalidator(clientA, prefix, nil)
	b := redisstore.NewInvalidator(clientB, prefix, nil)
	other := redisstore.NewInvalidator(clientB, prefix+"other:", nil) // another deployment
	assert.Equal(t, prefix+"keys:invalidate", a.Channel())

	subA, subB, subOther := runInvalidator(t, a), runInvalidator(t, b), runInvalidator(t, other)
	waitSubscribers(t, clientA, a.Channel(), 2)
	waitSubscribers(t, clientA, other.Channel(), 1)

	start := time.Now()
	require.NoError(t, a.Publish(ctx, "key_1"))
	subB.expectID(t, "key_1", time.Second)
	t.Logf("delivered in %v", time.Since(start))
	subA.expectID(t, "key_1", time.Second) // its own, too

	// OnChange returns at once and publishes in the background.
	a.OnChange("key_2")
	subB.expectID(t, "key_2", time.Second)
	subA.expectID(t, "key_2", time.Second)
	require.NoError(t, a.Close(ctx))
	a.OnChange("key_3") // closed: dropped

	require.NoError(t, b.Publish(ctx, "key_4"))
	subA.expectID(t, "key_4", time.Second)
	subB.expectID(t, "key_4", time.Second)

	subA.expectQuiet(t)
	subB.expectQuiet(t)
	subOther.expectQuiet(t)
}

func TestInvalidatorReconnects(t *testing.T) {
	ctx := t.Context()
	client, prefix := connectTestRedis(t)
	p, viaProxy := newProxy(t)
	inv := redisstore.NewInvalidator(newInstanceClient(t, viaProxy), prefix, nil)
	sub := runInvalidator(t, inv)
	waitSubscribers(t, client, inv.Channel(), 1)
	sub.expectQuiet(t) // the first subscription is no resync

	// The connection breaks and stays down for a moment: whatever is
	// published meanwhile is lost, so the subscriber resyncs once back.
	p.block(true)
	p.breakAll()
	require.Eventually(t, func() bool {
		m, err := client.PubSubNumSub(ctx, inv.Channel()).Result()
		return err == nil && m[inv.Channel()] == 0
	}, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, client.Publish(ctx, inv.Channel(), "missed").Err())
	p.block(false)
	sub.expectResync(t, 5*time.Second)
	waitSubscribers(t, client, inv.Channel(), 1)

	require.NoError(t, client.Publish(ctx, inv.Channel(), "key_after").Err())
	sub.expectID(t, "key_after", time.Second)
	sub.expectQuiet(t)
}

func TestInvalidatorStartsWhileRedisIsDown(t *testing.T) {
	client, prefix := connectTestRedis(t)
	p, viaProxy := newProxy(t)
	p.block(true)
	var logs syncBuffer
	inv := redisstore.NewInvalidator(newInstanceClient(t, viaProxy), prefix, slog.New(slog.NewTextHandler(&logs, nil)))
	sub := runInvalidator(t, inv)
	require.Eventually(t, func() bool { return bytes.Contains(logs.Bytes(), []byte("unreachable")) },
		5*time.Second, 5*time.Millisecond)

	// Keys cached while Redis was away may be stale: the first
	// subscription is a resync too.
	p.block(false)
	sub.expectResync(t, 5*time.Second)
	waitSubscribers(t, client, inv.Channel(), 1)
	require.NoError(t, client.Publish(t.Context(), inv.Channel(), "key_1").Err())
	sub.expectID(t, "key_1", time.Second)
}

func TestInvalidatorOnChangeDoesNotBlock(t *testing.T) {
	var logs syncBuffer
	inv := redisstore.NewInvalidator(newInstanceClient(t, refusedURL(t)), "", slog.New(slog.NewTextHandler(&logs, nil)))
	assert.Equal(t, redisstore.DefaultPrefix+"keys:invalidate", inv.Channel())
	start := time.Now()
	for range 10 {
		inv.OnChange("key_1")
	}
	assert.Less(t, time.Since(start), 100*time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), redisstore.PublishTimeout+5*time.Second)
	defer cancel()
	require.NoError(t, inv.Close(ctx))
	assert.Contains(t, logs.String(), "not published")
	assert.Contains(t, logs.String(), "key_1")
}

func TestInvalidatorRunStops(t *testing.T) {
	inv := redisstore.NewInvalidator(newInstanceClient(t, refusedURL(t)), "", nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- inv.Run(ctx, func(string) {}, nil) }()
	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	assert.Error(t, inv.Run(ctx, nil, nil), "onInvalidate is required")
}

// syncBuffer is a bytes.Buffer for a logger written from other goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

func (s *syncBuffer) String() string { return string(s.Bytes()) }
