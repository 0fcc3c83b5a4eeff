package redis

import (
	"context"
	"errors"
	"strings"
	"sync"

	goredis "github.com/redis/go-redis/v9"
)

// maxPipelines is how many round trips a combiner keeps in flight at
// once. Callers that find them all busy queue, and the next round trip
// takes every queued call in one pipeline.
//
// Why two: one would make a caller that arrives just after a pipeline left
// wait almost two round trips; many would leave few callers to share each
// one. Two keeps a Reserve at one round trip when the relay is quiet, and
// under load lets the calls that arrive during a round trip share the
// next: on two cores with 32 connections the Redis server's CPU per
// request fell by about half (BENCHMARKS.md).
const maxPipelines = 2

// maxBatch bounds one pipeline, so that one round trip's reply stays small.
const maxBatch = 128

// maxQueue bounds the calls waiting for a pipeline; a caller that finds
// the queue full runs its call alone, with the client's own pool limits.
const maxQueue = 1024

// combiner runs script calls, and runs the calls that wait at the same
// time in one pipeline: one write and one read for many calls, on both the
// relay's side and Redis's. Each round trip on loopback costs tens of
// microseconds of system time on each side, more than the scripts
// themselves, so under load this is where a Redis limiter's cost goes.
//
// There is no goroutine of its own and nothing to close: the first caller
// that finds a pipeline slot free runs its own call at once (one EVALSHA,
// as without the combiner); callers that find both slots busy queue, and
// whoever finishes a round trip while calls are queued takes them all
// into the next one.
//
// When Redis stops answering, the round trip in flight fails after the
// client's timeouts, and every call queued behind it fails with it at
// once, rather than each batch of the queue waiting out the timeouts in
// turn: callers learn that Redis is down as fast as without the combiner
// (and quota.Failover takes over).
//
// A Cluster client runs every call alone: a pipeline spanning shards waits
// for the slowest, and one failing shard would hold up keys on the others.
type combiner struct {
	client goredis.UniversalClient
	direct bool // run every call alone (Cluster)

	mu       sync.Mutex
	inflight int
	queue    []*scriptCall
}

// scriptCall is one script to run and, once done is closed, its reply.
type scriptCall struct {
	ctx    context.Context
	script *goredis.Script
	keys   []string
	args   []any
	done   chan struct{}
	cmd    *goredis.Cmd
}

// run runs script with keys and args, alone or in a pipeline with other
// callers' calls. Redis's NOSCRIPT (a server that lost its scripts) is
// answered by loading the script, as goredis.Script.Run does.
//
// A caller whose ctx ends while it waits in the queue leaves at once with
// ctx's error; one whose call is already on the wire waits for the reply
// (one round trip, bounded by the client's read timeout), because what
// the script did on the server must reach the caller: a reservation made
// for a caller that left would otherwise be held until it expires.
func (c *combiner) run(ctx context.Context, script *goredis.Script, keys []string, args ...any) (cmd *goredis.Cmd) {
	if c.direct {
		return script.Run(ctx, c.client, keys, args...)
	}
	c.mu.Lock()
	if c.inflight < maxPipelines {
		c.inflight++
		c.mu.Unlock()
		defer func() { c.next(ctx, cmd) }() // deferred: a panic in a hook here must not keep the slot
		return script.Run(ctx, c.client, keys, args...)
	}
	if len(c.queue) >= maxQueue {
		c.mu.Unlock()
		return script.Run(ctx, c.client, keys, args...)
	}
	call := &scriptCall{ctx: ctx, script: script, keys: keys, args: args, done: make(chan struct{})}
	c.queue = append(c.queue, call)
	c.mu.Unlock()
	select {
	case <-call.done:
		return call.cmd
	case <-ctx.Done():
	}
	c.mu.Lock()
	for i, q := range c.queue {
		if q == call {
			n := len(c.queue)
			copy(c.queue[i:], c.queue[i+1:])
			c.queue[n-1] = nil
			c.queue = c.queue[:n-1]
			c.mu.Unlock()
			cmd := goredis.NewCmd(ctx)
			cmd.SetErr(ctx.Err())
			return cmd
		}
	}
	c.mu.Unlock()
	<-call.done
	return call.cmd
}

// next hands the pipeline slot its caller held to the queued calls, if
// any, in a goroutine of their own (the caller has its reply and goes on),
// or frees it. done is the caller's reply: when it failed for want of
// Redis, the queued calls fail with it.
func (c *combiner) next(ctx context.Context, done *goredis.Cmd) {
	c.mu.Lock()
	if done != nil && unreachable(ctx, done.Err()) {
		c.failQueued(done.Err())
	}
	if len(c.queue) == 0 {
		c.inflight--
		c.mu.Unlock()
		return
	}
	batch := c.take()
	c.mu.Unlock()
	go c.drain(batch)
}

// unreachable reports whether err, the error of a call made with ctx,
// says Redis could not be reached or did not answer in time: not a reply
// of Redis's (a script error, MOVED), and not the end of the caller's own
// context, which says nothing of the others. The context is asked, not
// the error: a dial timeout also matches context.DeadlineExceeded. A pool
// that found no free connection in time counts as unreachable too: Redis
// is too slow for the callers behind it.
func unreachable(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	var re goredis.Error
	return !errors.As(err, &re) || errors.Is(err, goredis.ErrClosed)
}

// failQueued ends every queued call with err. c.mu is held.
func (c *combiner) failQueued(err error) {
	for i, q := range c.queue {
		q.cmd = goredis.NewCmd(q.ctx)
		q.cmd.SetErr(err)
		close(q.done)
		c.queue[i] = nil
	}
	c.queue = c.queue[:0]
}

// take removes up to maxBatch calls from the queue. c.mu is held.
func (c *combiner) take() []*scriptCall {
	n := min(len(c.queue), maxBatch)
	batch := make([]*scriptCall, n)
	copy(batch, c.queue)
	rest := copy(c.queue, c.queue[n:])
	clear(c.queue[rest:])
	c.queue = c.queue[:rest]
	return batch
}

// drain runs batches while calls are queued, then frees its slot.
func (c *combiner) drain(batch []*scriptCall) {
	for {
		err := c.exec(batch)
		c.mu.Lock()
		if err != nil {
			c.failQueued(err)
		}
		if len(c.queue) == 0 {
			c.inflight--
			c.mu.Unlock()
			return
		}
		batch = c.take()
		c.mu.Unlock()
	}
}

// exec runs a batch in one pipeline and hands each call its reply; it
// returns the error of a call that failed for want of Redis, if any. The
// pipeline runs on a context without the callers' cancellation (see run),
// and with the first call's values (what hooks see of it); the client's
// timeouts bound it.
func (c *combiner) exec(batch []*scriptCall) (failed error) {
	if len(batch) == 1 {
		b := batch[0]
		b.cmd = b.script.Run(context.WithoutCancel(b.ctx), c.client, b.keys, b.args...)
		close(b.done)
		if unreachable(context.Background(), b.cmd.Err()) { // its context cannot end: see above
			return b.cmd.Err()
		}
		return nil
	}
	ctx := context.WithoutCancel(batch[0].ctx)
	pipe := c.client.Pipeline()
	for _, b := range batch {
		b.cmd = b.script.EvalSha(ctx, pipe, b.keys, b.args...)
	}
	_, _ = pipe.Exec(ctx) // errors are read per command
	for _, b := range batch {
		if err := b.cmd.Err(); err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			b.cmd = b.script.Run(ctx, c.client, b.keys, b.args...)
		}
		if err := b.cmd.Err(); failed == nil && unreachable(ctx, err) {
			failed = err
		}
		close(b.done)
	}
	return failed
}

func newCombiner(client goredis.UniversalClient) combiner {
	_, cluster := client.(*goredis.ClusterClient)
	return combiner{client: client, direct: cluster}
}
