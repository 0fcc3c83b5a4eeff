package redis

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/relaystation/relay/internal/testenv"
	"github.com/relaystation/relay/quota"
)

// gateHook counts the round trips that run scripts (a command or a whole
// pipeline is one; the connection's own handshake is not counted) and,
// while closed, holds single commands before they are sent, so a test can
// keep both pipeline slots busy and watch calls queue behind them.
type gateHook struct {
	trips    atomic.Int64
	pipes    atomic.Int64
	piped    atomic.Int64 // commands sent in pipelines
	closed   atomic.Bool
	held     atomic.Int64
	open     chan struct{}
	openOnce sync.Once
	failWith error // set before release: the held commands fail with it
}

func newGateHook() *gateHook { return &gateHook{open: make(chan struct{})} }

func (h *gateHook) release() { h.openOnce.Do(func() { close(h.open) }) }

func (h *gateHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h *gateHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if !isScript(cmd) {
			return next(ctx, cmd)
		}
		h.trips.Add(1)
		if h.closed.Load() {
			h.held.Add(1)
			<-h.open
			if h.failWith != nil {
				cmd.SetErr(h.failWith)
				return h.failWith
			}
		}
		return next(ctx, cmd)
	}
}
func (h *gateHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		if len(cmds) == 0 || !isScript(cmds[0]) {
			return next(ctx, cmds)
		}
		h.trips.Add(1)
		h.pipes.Add(1)
		h.piped.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func isScript(cmd goredis.Cmder) bool {
	return cmd.Name() == "evalsha" || cmd.Name() == "eval"
}

func combinerLimiter(t *testing.T) (*Limiter, *goredis.Client) {
	t.Helper()
	url, prefix := testenv.Redis(t)
	opts, err := goredis.ParseURL(url)
	require.NoError(t, err)
	client := goredis.NewClient(opts)
	t.Cleanup(func() { _ = client.Close() })
	return NewLimiter(client, quota.Config{}, LimiterOptions{Prefix: prefix}), client
}

func (c *combiner) queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

func (c *combiner) busy() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inflight
}

// waitFor polls cond; the conditions here depend only on goroutines of
// the test reaching a point, not on timing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Calls made while both pipeline slots are busy wait, then share one
// round trip, and each gets its own answer.
func TestCombinerSharesRoundTrips(t *testing.T) {
	lim, client := combinerLimiter(t)
	ctx := t.Context()
	req := quota.Request{KeyID: "k", Limits: quota.Limits{MaxConcurrent: 1000}, InputEstimate: 10, MaxTokens: 10}
	_, err := lim.Reserve(ctx, req) // loads the scripts and seeds the key
	require.NoError(t, err)

	hook := newGateHook()
	client.AddHook(hook)
	hook.closed.Store(true)
	const n = 40
	ids := make(chan string, n)
	var wg sync.WaitGroup
	reserve := func() {
		r, err := lim.Reserve(ctx, req)
		if assert.NoError(t, err) {
			ids <- r.ID
		}
	}
	for range maxPipelines {
		wg.Go(reserve)
	}
	waitFor(t, "both slots held", func() bool { return hook.held.Load() == maxPipelines })
	hook.closed.Store(false)
	for range n - maxPipelines {
		wg.Go(reserve)
	}
	waitFor(t, "the other calls to queue", func() bool { return lim.comb.queued() == n-maxPipelines })
	hook.release()
	wg.Wait()
	close(ids)

	seen := map[string]bool{}
	for id := range ids {
		assert.False(t, seen[id], "each call gets its own reservation")
		seen[id] = true
	}
	assert.Len(t, seen, n)
	assert.Equal(t, int64(maxPipelines+1), hook.trips.Load(), "the queued calls shared one round trip")
	assert.Equal(t, int64(n-maxPipelines), hook.piped.Load())
	s, err := lim.Standing(ctx, "k", req.Limits)
	require.NoError(t, err)
	assert.Equal(t, int64(n+1), s.Concurrency.Used, "every reservation is held on the server")
	assert.Zero(t, lim.comb.queued())
	waitFor(t, "both slots to be freed", func() bool { return lim.comb.busy() == 0 })
}

// When the calls in flight fail for want of Redis, the queued calls fail
// with them at once, instead of each waiting for a pipeline of its own to
// time out.
func TestCombinerFailsQueueWhenRedisIsGone(t *testing.T) {
	lim, client := combinerLimiter(t)
	ctx := t.Context()
	req := quota.Request{KeyID: "k", Limits: quota.Limits{MaxConcurrent: 1000}, InputEstimate: 10, MaxTokens: 10}
	_, err := lim.Reserve(ctx, req)
	require.NoError(t, err)

	hook := newGateHook()
	client.AddHook(hook)
	hook.closed.Store(true)
	const n = 30
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range maxPipelines {
		wg.Go(func() { _, err := lim.Reserve(ctx, req); errs <- err })
	}
	waitFor(t, "both slots held", func() bool { return hook.held.Load() == maxPipelines })
	for range n - maxPipelines {
		wg.Go(func() { _, err := lim.Reserve(ctx, req); errs <- err })
	}
	waitFor(t, "the other calls to queue", func() bool { return lim.comb.queued() == n-maxPipelines })
	gone := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("i/o timeout")}
	hook.failWith = gone
	hook.release()
	wg.Wait()
	close(errs)
	for err := range errs {
		require.Error(t, err)
		var oe *net.OpError
		assert.ErrorAs(t, err, &oe, "every call fails with the error of the round trip that found Redis gone")
	}
	assert.Zero(t, hook.pipes.Load(), "no queued call was sent")
	waitFor(t, "both slots to be freed", func() bool { return lim.comb.busy() == 0 })

	// A refusal by Redis itself (a script error) is not a reason to fail
	// the others: only the caller's own call failed.
	assert.False(t, unreachable(goredis.ErrNoScript))
	assert.False(t, unreachable(context.Canceled))
	assert.True(t, unreachable(gone))
}

// A Cluster client runs every call alone.
func TestCombinerClusterRunsAlone(t *testing.T) {
	c := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	t.Cleanup(func() { _ = c.Close() })
	assert.True(t, newCombiner(c).direct)
	s := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = s.Close() })
	assert.False(t, newCombiner(s).direct)
}

// A caller whose context ends while it waits in the queue leaves with the
// context's error, and its call never reaches Redis.
func TestCombinerCanceledWhileQueued(t *testing.T) {
	lim, client := combinerLimiter(t)
	ctx := t.Context()
	req := quota.Request{KeyID: "k", Limits: quota.Limits{MaxConcurrent: 1000}, InputEstimate: 10, MaxTokens: 10}
	_, err := lim.Reserve(ctx, req)
	require.NoError(t, err)

	hook := newGateHook()
	client.AddHook(hook)
	hook.closed.Store(true)
	var wg sync.WaitGroup
	for range maxPipelines {
		wg.Go(func() {
			_, err := lim.Reserve(ctx, req)
			assert.NoError(t, err)
		})
	}
	waitFor(t, "both slots held", func() bool { return hook.held.Load() == maxPipelines })
	hook.closed.Store(false)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := lim.Reserve(cctx, req)
		done <- err
	}()
	waitFor(t, "the call to queue", func() bool { return lim.comb.queued() == 1 })
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	assert.Zero(t, lim.comb.queued())
	hook.release()
	wg.Wait()

	s, err := lim.Standing(ctx, "k", req.Limits)
	require.NoError(t, err)
	assert.Equal(t, int64(1+maxPipelines), s.Concurrency.Used, "the canceled call reserved nothing")
	assert.Zero(t, hook.pipes.Load())
}

// A pipeline that meets a Redis that lost its scripts loads them again:
// every queued call still gets its answer.
func TestCombinerScriptsLost(t *testing.T) {
	lim, client := combinerLimiter(t)
	ctx := t.Context()
	req := quota.Request{KeyID: "k", Limits: quota.Limits{MaxConcurrent: 1000}, InputEstimate: 10, MaxTokens: 10}
	_, err := lim.Reserve(ctx, req)
	require.NoError(t, err)

	hook := newGateHook()
	client.AddHook(hook)
	hook.closed.Store(true)
	var wg sync.WaitGroup
	for range maxPipelines + 5 {
		wg.Go(func() {
			_, err := lim.Reserve(ctx, req)
			assert.NoError(t, err)
		})
	}
	waitFor(t, "both slots held", func() bool { return hook.held.Load() == maxPipelines })
	waitFor(t, "the other calls to queue", func() bool { return lim.comb.queued() == 5 })
	hook.closed.Store(false)
	require.NoError(t, client.ScriptFlush(ctx).Err())
	hook.release()
	wg.Wait()
	s, err := lim.Standing(ctx, "k", req.Limits)
	require.NoError(t, err)
	assert.Equal(t, int64(1+maxPipelines+5), s.Concurrency.Used)
}
