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

// gated is a limiter with its scripts loaded and its key seeded, and a
// closed gate hook on its client.
type gated struct {
	lim    *Limiter
	client *goredis.Client
	hook   *gateHook
	req    quota.Request
}

func newGated(t *testing.T) *gated {
	lim, client := combinerLimiter(t)
	g := &gated{lim: lim, client: client, hook: newGateHook(),
		req: quota.Request{KeyID: "k", Limits: quota.Limits{MaxConcurrent: 1000}, InputEstimate: 10, MaxTokens: 10}}
	_, err := lim.Reserve(t.Context(), g.req) // loads the scripts and seeds the key
	require.NoError(t, err)
	client.AddHook(g.hook)
	g.hook.closed.Store(true)
	return g
}

// fill starts n Reserve calls, reporting each to out: the first ones hold
// both pipeline slots in the hook, the others queue. It returns once they
// are all in place.
func (g *gated) fill(t *testing.T, wg *sync.WaitGroup, n int, out func(quota.Reservation, error)) {
	t.Helper()
	reserve := func() { out(g.lim.Reserve(t.Context(), g.req)) }
	for range maxPipelines {
		wg.Go(reserve)
	}
	waitFor(t, "both slots held", func() bool { return g.hook.held.Load() == maxPipelines })
	g.hook.closed.Store(false)
	for range n - maxPipelines {
		wg.Go(reserve)
	}
	waitFor(t, "the other calls to queue", func() bool { return g.lim.comb.queued() == n-maxPipelines })
}

func (g *gated) inFlight(t *testing.T) int64 {
	t.Helper()
	s, err := g.lim.Standing(t.Context(), "k", g.req.Limits)
	require.NoError(t, err)
	return s.Concurrency.Used
}

// Calls made while both pipeline slots are busy wait, then share one
// round trip, and each gets its own answer.
func TestCombinerSharesRoundTrips(t *testing.T) {
	g := newGated(t)
	const n = 40
	ids := make(chan string, n)
	var wg sync.WaitGroup
	g.fill(t, &wg, n, func(r quota.Reservation, err error) {
		if assert.NoError(t, err) {
			ids <- r.ID
		}
	})
	g.hook.release()
	wg.Wait()
	close(ids)

	seen := map[string]bool{}
	for id := range ids {
		assert.False(t, seen[id], "each call gets its own reservation")
		seen[id] = true
	}
	assert.Len(t, seen, n)
	assert.Equal(t, int64(maxPipelines+1), g.hook.trips.Load(), "the queued calls shared one round trip")
	assert.Equal(t, int64(n-maxPipelines), g.hook.piped.Load())
	assert.Equal(t, int64(n+1), g.inFlight(t), "every reservation is held on the server")
	assert.Zero(t, g.lim.comb.queued())
	waitFor(t, "both slots to be freed", func() bool { return g.lim.comb.busy() == 0 })
}

// When the calls in flight fail for want of Redis, the queued calls fail
// with them at once, instead of each waiting for a pipeline of its own to
// time out.
func TestCombinerFailsQueueWhenRedisIsGone(t *testing.T) {
	g := newGated(t)
	const n = 30
	errs := make(chan error, n)
	var wg sync.WaitGroup
	g.fill(t, &wg, n, func(_ quota.Reservation, err error) { errs <- err })
	gone := dialTimeout(t) // a real one: it also matches context.DeadlineExceeded
	g.hook.failWith = gone
	g.hook.release()
	wg.Wait()
	close(errs)
	for err := range errs {
		require.Error(t, err)
		var oe *net.OpError
		assert.ErrorAs(t, err, &oe, "every call fails with the error of the round trip that found Redis gone")
	}
	assert.Zero(t, g.hook.pipes.Load(), "no queued call was sent")
	waitFor(t, "both slots to be freed", func() bool { return g.lim.comb.busy() == 0 })

}

// dialTimeout returns the error of a dial that timed out, as the net
// package makes it.
func dialTimeout(t *testing.T) error {
	t.Helper()
	_, err := (&net.Dialer{Timeout: time.Nanosecond}).Dial("tcp", "192.0.2.1:6379") // TEST-NET-1: never answers
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout())
	return err
}

// What fails the queue: errors that say Redis is not there, made with a
// context that is still alive; not Redis's own replies, not the end of
// the caller's own context.
func TestCombinerUnreachable(t *testing.T) {
	bg := context.Background()
	dead, cancel := context.WithCancel(bg)
	cancel()
	a, b := net.Pipe()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	require.NoError(t, a.SetReadDeadline(time.Now()))
	_, readTimeout := a.Read(make([]byte, 1))
	require.Error(t, readTimeout)
	dial := dialTimeout(t)
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	for _, tt := range []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"dial timeout", bg, dial, true},
		{"read timeout", bg, readTimeout, true},
		{"refused", bg, refused, true},
		{"client closed", bg, goredis.ErrClosed, true},
		{"no error", bg, nil, false},
		{"a reply of Redis's", bg, goredis.ErrNoScript, false},
		{"the caller's context ended", dead, dial, false},
		{"the caller's context ended, its error", dead, context.Canceled, false},
	} {
		assert.Equal(t, tt.want, unreachable(tt.ctx, tt.err), tt.name)
	}
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
	g := newGated(t)
	var wg sync.WaitGroup
	g.fill(t, &wg, maxPipelines, func(_ quota.Reservation, err error) { assert.NoError(t, err) })
	cctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := g.lim.Reserve(cctx, g.req)
		done <- err
	}()
	waitFor(t, "the call to queue", func() bool { return g.lim.comb.queued() == 1 })
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	assert.Zero(t, g.lim.comb.queued())
	g.hook.release()
	wg.Wait()
	assert.Equal(t, int64(1+maxPipelines), g.inFlight(t), "the canceled call reserved nothing")
	assert.Zero(t, g.hook.pipes.Load())
}

// A pipeline that meets a Redis that lost its scripts loads them again:
// every queued call still gets its answer.
func TestCombinerScriptsLost(t *testing.T) {
	g := newGated(t)
	var wg sync.WaitGroup
	g.fill(t, &wg, maxPipelines+5, func(_ quota.Reservation, err error) { assert.NoError(t, err) })
	require.NoError(t, g.client.ScriptFlush(t.Context()).Err())
	g.hook.release()
	wg.Wait()
	assert.Equal(t, int64(1+maxPipelines+5), g.inFlight(t))
}

// A caller that finds the queue full runs its call alone, and a Cluster
// client's calls never queue.
func TestCombinerOverflowRunsAlone(t *testing.T) {
	_, client := combinerLimiter(t)
	script := goredis.NewScript("return 7")
	c := newCombiner(client)
	c.inflight = maxPipelines
	c.queue = make([]*scriptCall, maxQueue)
	n, err := c.run(t.Context(), script, nil).Int64()
	require.NoError(t, err)
	assert.Equal(t, int64(7), n)
	assert.Len(t, c.queue, maxQueue, "the full queue was left alone")
	assert.Equal(t, maxPipelines, c.inflight)

	d := combiner{client: client, direct: true, inflight: maxPipelines}
	n, err = d.run(t.Context(), script, nil).Int64()
	require.NoError(t, err)
	assert.Equal(t, int64(7), n)
	assert.Empty(t, d.queue)
}
