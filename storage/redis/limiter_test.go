package redis_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/relaystation/relay/internal/testenv"
	"github.com/relaystation/relay/quota"
	redisstore "github.com/relaystation/relay/storage/redis"
	"github.com/relaystation/relay/storage/storagetest"
)

// testClient returns a client of the test Redis and a key prefix private
// to tb (deleted when tb ends).
func testClient(tb testing.TB) (*goredis.Client, string) {
	tb.Helper()
	url, prefix := testenv.Redis(tb)
	opts, err := goredis.ParseURL(url)
	require.NoError(tb, err)
	client := goredis.NewClient(opts)
	tb.Cleanup(func() { _ = client.Close() })
	return client, prefix
}

func TestLimiterConformance(t *testing.T) {
	storagetest.TestLimiter(t, func(t *testing.T, cfg quota.Config) quota.Limiter {
		client, prefix := testClient(t)
		return redisstore.NewLimiter(client, cfg, redisstore.LimiterOptions{Prefix: prefix})
	})
}

// countHook counts the round trips a client makes (a command or a whole
// pipeline is one), leaving out a new connection's handshake.
type countHook struct {
	n  atomic.Int64
	mu sync.Mutex
	ns []string
}

func handshake(cmd goredis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "client", "auth", "select":
		return true
	}
	return false
}

func (h *countHook) names() []string { h.mu.Lock(); defer h.mu.Unlock(); return h.ns }

func (h *countHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h *countHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if !handshake(cmd) {
			h.n.Add(1)
			h.mu.Lock()
			h.ns = append(h.ns, cmd.Name())
			h.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}
func (h *countHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		if len(cmds) > 0 && handshake(cmds[0]) {
			return next(ctx, cmds)
		}
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// The hot path is one round trip before forwarding and one after; a key's
// first sight adds the seed.
func TestLimiterRoundTrips(t *testing.T) {
	client, prefix := testClient(t)
	var seeds atomic.Int64
	lim := redisstore.NewLimiter(client, quota.Config{Seed: func(context.Context, string, time.Time) (int64, int64, error) {
		seeds.Add(1)
		return 0, 0, nil
	}}, redisstore.LimiterOptions{Prefix: prefix})
	ctx := t.Context()
	l := quota.Limits{TokenLimit: 1e9, DailyCostMicros: 1e9, RPM: 1000, TPM: 1e9, MaxConcurrent: 10}
	// Warm up: the scripts get loaded on the server.
	r, err := lim.Reserve(ctx, quota.Request{KeyID: "warm", Limits: l, InputEstimate: 10, MaxTokens: 10})
	require.NoError(t, err)
	require.NoError(t, lim.Settle(ctx, r, quota.Actual{Input: 1}))

	hook := &countHook{}
	client.AddHook(hook)
	r, err = lim.Reserve(ctx, quota.Request{KeyID: "new", Limits: l, InputEstimate: 10, MaxTokens: 10})
	require.NoError(t, err)
	assert.Equal(t, int64(4), hook.n.Load(), "first sight: reserve, exists, seed, reserve")
	assert.Equal(t, int64(4), seeds.Load()-4, "seeded once: lifetime, month, week, day")

	for _, step := range []struct {
		name string
		fn   func() error
	}{
		{"settle", func() error { return lim.Settle(ctx, r, quota.Actual{Input: 5, Output: 5}) }},
		{"reserve", func() (err error) {
			r, err = lim.Reserve(ctx, quota.Request{KeyID: "new", Limits: l, InputEstimate: 10})
			return err
		}},
		{"renew", func() error { return lim.Renew(ctx, r) }},
		{"release", func() error { return lim.Release(ctx, r) }},
	} {
		before := hook.n.Load()
		require.NoError(t, step.fn(), step.name)
		assert.Equal(t, int64(1), hook.n.Load()-before, "%s is one round trip", step.name)
	}
}

// All of a key's counters live under one hash tag, so they share a
// cluster slot, and a key id with braces cannot break the tag.
func TestLimiterKeysShareHashTag(t *testing.T) {
	client, prefix := testClient(t)
	lim := redisstore.NewLimiter(client, quota.Config{}, redisstore.LimiterOptions{Prefix: prefix})
	ctx := t.Context()
	for _, id := range []string{"abc123", "we}ird{id"} {
		_, err := lim.Reserve(ctx, quota.Request{KeyID: id, InputEstimate: 1, MaxTokens: 1})
		require.NoError(t, err)
	}
	keys, err := client.Keys(ctx, prefix+"*").Result()
	require.NoError(t, err)
	assert.Len(t, keys, 4)
	tags := map[string]int{}
	for _, k := range keys {
		rest := strings.TrimPrefix(k, prefix)
		require.True(t, strings.HasPrefix(rest, "{"), k)
		end := strings.IndexByte(rest, '}')
		require.Positive(t, end, k)
		tag := rest[1:end]
		assert.NotContains(t, tag, "{", "the tag is the whole key id")
		tags[tag]++
	}
	assert.Len(t, tags, 2)
	for tag, n := range tags {
		assert.Equal(t, 2, n, "counters and reservations of %s share the tag", tag)
	}
	assert.Contains(t, tags, "abc123")
}

// Redis that lost a key's counters (eviction, flush, failover without
// persistence) seeds them again from the usage store, and reservations
// that survived are still held.
func TestLimiterLostCounters(t *testing.T) {
	client, prefix := testClient(t)
	var lifetime atomic.Int64
	lifetime.Store(1000)
	lim := redisstore.NewLimiter(client, quota.Config{Seed: func(_ context.Context, _ string, since time.Time) (int64, int64, error) {
		if since.IsZero() {
			return lifetime.Load(), 0, nil
		}
		return 0, 0, nil
	}}, redisstore.LimiterOptions{Prefix: prefix})
	ctx := t.Context()
	l := quota.Limits{TokenLimit: 100_000}
	held, err := lim.Reserve(ctx, quota.Request{KeyID: "k", Limits: l, InputEstimate: 100, MaxTokens: 900})
	require.NoError(t, err)
	require.NoError(t, client.Del(ctx, prefix+"{k}:q").Err())

	lifetime.Store(7000) // what the usage store knows by now
	s, err := lim.Standing(ctx, "k", l)
	require.NoError(t, err)
	assert.Equal(t, int64(7000), s.TokenLimit.Used, "seeded again")
	assert.Equal(t, int64(1000), s.TokenLimit.Reserved, "the surviving reservation is held again")
	assert.Equal(t, int64(1), s.Concurrency.Used)
	require.NoError(t, lim.Settle(ctx, held, quota.Actual{Input: 100, Output: 200}))
	s, err = lim.Standing(ctx, "k", l)
	require.NoError(t, err)
	assert.Equal(t, int64(7300), s.TokenLimit.Used)
	assert.Zero(t, s.TokenLimit.Reserved)

	// Settling against counters that are gone changes nothing: the next
	// seed reads that usage from the store.
	r, err := lim.Reserve(ctx, quota.Request{KeyID: "k", Limits: l, InputEstimate: 1, MaxTokens: 1})
	require.NoError(t, err)
	require.NoError(t, client.Del(ctx, prefix+"{k}:q").Err())
	require.NoError(t, lim.Settle(ctx, r, quota.Actual{Input: 5}))
	n, err := client.Exists(ctx, prefix+"{k}:q").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "a settle does not create unseeded counters")
}

// A script cache flushed under the limiter (restart, failover) costs one
// EVAL, not an error.
func TestLimiterScriptFlushed(t *testing.T) {
	client, prefix := testClient(t)
	lim := redisstore.NewLimiter(client, quota.Config{}, redisstore.LimiterOptions{Prefix: prefix})
	ctx := t.Context()
	r, err := lim.Reserve(ctx, quota.Request{KeyID: "k", InputEstimate: 1, MaxTokens: 1})
	require.NoError(t, err)
	require.NoError(t, client.ScriptFlush(ctx).Err())
	require.NoError(t, lim.Settle(ctx, r, quota.Actual{Input: 1}))
	_, err = lim.Reserve(ctx, quota.Request{KeyID: "k", InputEstimate: 1, MaxTokens: 1})
	require.NoError(t, err)
}

// Several relay instances share one key's limits through Redis.
func TestLimiterInstancesShareLimits(t *testing.T) {
	client, prefix := testClient(t)
	var seeds atomic.Int64
	cfg := quota.Config{Seed: func(context.Context, string, time.Time) (int64, int64, error) {
		seeds.Add(1)
		return 0, 0, nil
	}}
	a := redisstore.NewLimiter(client, cfg, redisstore.LimiterOptions{Prefix: prefix})
	b := redisstore.NewLimiter(client, cfg, redisstore.LimiterOptions{Prefix: prefix})
	ctx := t.Context()
	l := quota.Limits{MaxConcurrent: 2}
	var wg sync.WaitGroup
	var admitted atomic.Int64
	for i := range 20 {
		wg.Go(func() {
			lim := a
			if i%2 == 1 {
				lim = b
			}
			if _, err := lim.Reserve(ctx, quota.Request{KeyID: "shared", Limits: l, InputEstimate: 1, MaxTokens: 1}); err == nil {
				admitted.Add(1)
			} else {
				assert.ErrorIs(t, err, quota.ErrRateLimited)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int64(2), admitted.Load())
	assert.LessOrEqual(t, seeds.Load(), int64(8), "each instance seeds a key once (4 calls), however many requests find it unseeded")
}

func TestLimiterOptions(t *testing.T) {
	client, prefix := testClient(t)
	now := time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	lim := redisstore.NewLimiter(client, quota.Config{Now: clock, ReservationTTL: time.Hour},
		redisstore.LimiterOptions{Prefix: prefix, ReservationTTL: time.Minute, StateTTL: time.Hour})
	ctx := t.Context()
	l := quota.Limits{MaxConcurrent: 1}
	_, err := lim.Reserve(ctx, quota.Request{KeyID: "k", Limits: l})
	require.NoError(t, err)
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	_, err = lim.Reserve(ctx, quota.Request{KeyID: "k", Limits: l})
	require.NoError(t, err, "LimiterOptions.ReservationTTL overrides the config's")
	for _, suffix := range []string{"q", "l"} {
		ttl, err := client.PTTL(ctx, prefix+"{k}:"+suffix).Result()
		require.NoError(t, err)
		assert.InDelta(t, float64(time.Hour), float64(ttl), float64(time.Minute), "StateTTL applies to :%s: a key's counters and reservations expire together", suffix)
	}
}

// An unreachable Redis is an error, never a refusal and never an
// admission.
func TestLimiterUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	client := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = client.Close() })
	lim := redisstore.NewLimiter(client, quota.Config{}, redisstore.LimiterOptions{})
	_, err = lim.Reserve(t.Context(), quota.Request{KeyID: "k"})
	require.Error(t, err)
	var ref *quota.Refusal
	assert.NotErrorAs(t, err, &ref)
}

func BenchmarkReserveSettle(b *testing.B) {
	client, prefix := testClient(b)
	lim := redisstore.NewLimiter(client, quota.Config{}, redisstore.LimiterOptions{Prefix: prefix})
	ctx := b.Context()
	l := quota.Limits{TokenLimit: 1 << 50, DailyTokens: 1 << 50, MonthlyCostMicros: 1 << 50, RPM: 1 << 40, TPM: 1 << 50, MaxConcurrent: 1 << 20}
	req := quota.Request{KeyID: "bench-key", Limits: l, InputEstimate: 2000, MaxTokens: 64000, CostEstimateMicros: 70_000}
	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, err := lim.Reserve(ctx, req)
			if err != nil {
				b.Fatal(err)
			}
			if err := lim.Settle(ctx, r, quota.Actual{Input: 1800, Output: 900, CostMicros: 20_000}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r, err := lim.Reserve(ctx, req)
				if err != nil {
					b.Error(err)
					return
				}
				if err := lim.Settle(ctx, r, quota.Actual{Input: 1800, Output: 900, CostMicros: 20_000}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// The Lua scripts and quota.Memory implement one set of rules: a long
// random sequence of operations, across minutes, days, weeks and a month
// end, gets the same answers and standings from both.
func TestLimiterMatchesMemory(t *testing.T) {
	client, prefix := testClient(t)
	loc, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	var mu sync.Mutex
	now := time.Date(2026, 4, 26, 22, 0, 7, 0, loc) // a Sunday night, four days before a month end
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	cfg := quota.Config{
		Location: loc, Now: clock, ReservationTTL: 5 * time.Minute,
		Seed: func(_ context.Context, key string, since time.Time) (int64, int64, error) {
			if since.IsZero() {
				return int64(len(key)) * 50_000, 0, nil
			}
			return int64(since.Day()) * 100, int64(since.Day()) * 1000, nil
		},
	}
	mem := quota.NewMemory(cfg)
	red := redisstore.NewLimiter(client, cfg, redisstore.LimiterOptions{Prefix: prefix})
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(7, 11))
	limits := map[string]quota.Limits{
		"a":  {TokenLimit: 900_000, DailyTokens: 120_000, WeeklyTokens: 300_000, MonthlyTokens: 500_000, DailyCostMicros: 1_500_000, RPM: 12, TPM: 60_000, MaxConcurrent: 6},
		"bb": {MonthlyCostMicros: 12_000_000, WeeklyCostMicros: 6_000_000, RPM: 4, TPM: 30_000, MaxConcurrent: 3},
	}
	names := []string{"a", "bb"}
	type pair struct{ m, r quota.Reservation }
	var live []pair
	refusal := func(err error) *quota.Refusal {
		var ref *quota.Refusal
		if errors.As(err, &ref) {
			return ref
		}
		return nil
	}
	take := func() (pair, bool) {
		if len(live) == 0 {
			return pair{}, false
		}
		i := rng.IntN(len(live))
		p := live[i]
		live = append(live[:i], live[i+1:]...)
		return p, true
	}
	var admitted, refused int
	reasons := map[string]int{}
	for step := range 3000 {
		key := names[rng.IntN(len(names))]
		switch op := rng.IntN(20); {
		case op < 7:
			req := quota.Request{KeyID: key, Limits: limits[key], InputEstimate: rng.Int64N(8000), MaxTokens: rng.Int64N(12_000), CostEstimateMicros: rng.Int64N(60_000)}
			rm, errM := mem.Reserve(ctx, req)
			rr, errR := red.Reserve(ctx, req)
			if errM == nil {
				require.NoError(t, errR, "step %d: memory admitted, redis did not", step)
				admitted++
				assert.Equal(t, rm.Standing, rr.Standing, "step %d", step)
				assert.Equal(t, [4]int64{rm.Tokens, rm.CostMicros, rm.RateTokens, rm.OutputReserved}, [4]int64{rr.Tokens, rr.CostMicros, rr.RateTokens, rr.OutputReserved})
				live = append(live, pair{rm, rr})
				continue
			}
			fm, fr := refusal(errM), refusal(errR)
			require.NotNil(t, fm, "step %d: %v", step, errM)
			require.NotNil(t, fr, "step %d: memory refused (%v), redis said %v", step, errM, errR)
			refused++
			reasons[fm.Reason.String()+"/"+fm.Budget]++
			assert.Equal(t, *fm, *fr, "step %d", step)
		case op < 12:
			if p, ok := take(); ok {
				a := quota.Actual{Input: rng.Int64N(6000), Output: rng.Int64N(9000), CacheCreation: rng.Int64N(2000), CacheRead: rng.Int64N(6000), CostMicros: rng.Int64N(60_000)}
				require.NoError(t, mem.Settle(ctx, p.m, a))
				require.NoError(t, red.Settle(ctx, p.r, a))
			}
		case op < 14:
			if p, ok := take(); ok {
				require.NoError(t, mem.Release(ctx, p.m))
				require.NoError(t, red.Release(ctx, p.r))
			}
		case op < 15:
			if len(live) > 0 {
				p := live[rng.IntN(len(live))]
				assert.Equal(t, mem.Renew(ctx, p.m), red.Renew(ctx, p.r), "step %d: renew", step)
			}
		case op < 19:
			advance(time.Duration(rng.Int64N(int64(40 * time.Second))))
		default:
			advance(time.Duration(rng.Int64N(int64(3 * time.Hour))))
		}
		for _, k := range names {
			sm, err := mem.Standing(ctx, k, limits[k])
			require.NoError(t, err)
			sr, err := red.Standing(ctx, k, limits[k])
			require.NoError(t, err)
			require.Equal(t, sm, sr, "step %d: standing of %s", step, k)
		}
	}
	t.Logf("%d admitted, %d refused %v, ended at %v", admitted, refused, reasons, clock())
	assert.Positive(t, refused)
}

// SettleMany settles as Settle does, reservations of one key by one
// script call and all keys in one round trip, across a minute boundary,
// and survives a script flush.
func TestLimiterSettleMany(t *testing.T) {
	client, prefix := testClient(t)
	now := time.Date(2026, 4, 1, 12, 0, 50, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	tick := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	lim := redisstore.NewLimiter(client, quota.Config{Now: clock}, redisstore.LimiterOptions{Prefix: prefix})
	ctx := t.Context()
	l := quota.Limits{DailyTokens: 1_000_000, DailyCostMicros: 1_000_000, RPM: 10_000, TPM: 10_000_000, MaxConcurrent: 100}
	hook := &countHook{}
	client.AddHook(hook)
	for _, flush := range []bool{false, true} {
		// "one" is settled one at a time; "a" and "b" together, interleaved.
		res := map[string][]quota.Reservation{}
		var acts []quota.Actual
		for i := range 70 { // more than one script call's worth for "a" and "b"
			for _, k := range []string{"one", "a", "b"} {
				r, err := lim.Reserve(ctx, quota.Request{KeyID: k, Limits: l, InputEstimate: 100, MaxTokens: 1000, CostEstimateMicros: 50})
				require.NoError(t, err)
				res[k] = append(res[k], r)
			}
			acts = append(acts, quota.Actual{Input: int64(10 + i), Output: 5, CacheRead: 3, CostMicros: 7})
			if i == 35 {
				tick(20 * time.Second) // the later half in the next minute
			}
		}
		tick(5 * time.Second)
		for i, r := range res["one"] {
			require.NoError(t, lim.Settle(ctx, r, acts[i]))
		}
		if flush {
			require.NoError(t, client.ScriptFlush(ctx).Err())
		}
		var many []quota.Reservation
		var manyActs []quota.Actual
		for i := range res["a"] {
			many = append(many, res["a"][i], res["b"][i])
			manyActs = append(manyActs, acts[i], acts[i])
		}
		before := hook.n.Load()
		for _, err := range lim.SettleMany(ctx, many, manyActs) {
			require.NoError(t, err)
		}
		if !flush {
			assert.Equal(t, int64(1), hook.n.Load()-before, "one round trip: %v", hook.names())
		}
		want, err := lim.Standing(ctx, "one", l)
		require.NoError(t, err)
		for _, k := range []string{"a", "b"} {
			got, err := lim.Standing(ctx, k, l)
			require.NoError(t, err)
			got.KeyID = want.KeyID
			assert.Equal(t, want, got, "key %s settled together, flush %v", k, flush)
			assert.Zero(t, got.Concurrency.Used, "every lease ended")
		}
	}
	errs := lim.SettleMany(ctx, []quota.Reservation{{}}, []quota.Actual{{}})
	assert.ErrorIs(t, errs[0], quota.ErrInvalid)
}

// twiceHook sends every script to Redis twice, as go-redis does when a
// reply times out or the connection breaks after the command was written
// (the first run may have happened): the caller sees the second reply.
type twiceHook struct{}

func (twiceHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (twiceHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if cmd.Name() == "evalsha" || cmd.Name() == "eval" {
			_ = next(ctx, cmd)
		}
		return next(ctx, cmd)
	}
}
func (twiceHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		if len(cmds) > 0 && !handshake(cmds[0]) {
			_ = next(ctx, cmds)
		}
		return next(ctx, cmds)
	}
}

// Every script is safe to run twice: a reserve sent again holds once, a
// settle or a release sent again charges or gives back once.
func TestLimiterScriptsRunTwice(t *testing.T) {
	ctx := t.Context()
	l := quota.Limits{DailyTokens: 1_000_000, RPM: 1000, TPM: 10_000_000, MaxConcurrent: 10}
	run := func(hook goredis.Hook) quota.Standing {
		client, prefix := testClient(t)
		lim := redisstore.NewLimiter(client, quota.Config{}, redisstore.LimiterOptions{Prefix: prefix})
		r0, err := lim.Reserve(ctx, quota.Request{KeyID: "k", Limits: l, InputEstimate: 1, MaxTokens: 1}) // seeds
		require.NoError(t, err)
		if hook != nil {
			client.AddHook(hook)
		}
		var rs []quota.Reservation
		for range 6 {
			r, err := lim.Reserve(ctx, quota.Request{KeyID: "k", Limits: l, InputEstimate: 100, MaxTokens: 900})
			require.NoError(t, err)
			rs = append(rs, r)
		}
		require.NoError(t, lim.Settle(ctx, rs[0], quota.Actual{Input: 50, Output: 70}))
		require.NoError(t, lim.Release(ctx, rs[1]))
		require.NoError(t, lim.Renew(ctx, rs[2]))
		for _, err := range lim.SettleMany(ctx, rs[2:4], []quota.Actual{{Input: 1, Output: 2}, {Input: 3, Output: 4}}) {
			require.NoError(t, err)
		}
		require.NoError(t, lim.Release(ctx, r0))
		s, err := lim.Standing(ctx, "k", l)
		require.NoError(t, err)
		s.KeyID, s.At = "", time.Time{}
		return s
	}
	once, twice := run(nil), run(twiceHook{})
	assert.Equal(t, once, twice)
	assert.Equal(t, int64(2), twice.Concurrency.Used, "two reservations still held, none twice")
	assert.Equal(t, int64(130), twice.DailyTokens.Used, "each settle charged once")
}

// The marks finished reservations leave are dropped after two minutes by
// any call that purges, and a finish that finds no counters still leaves
// its set with a TTL.
func TestLimiterFinishedMarks(t *testing.T) {
	client, prefix := testClient(t)
	now := time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	tick := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	lim := redisstore.NewLimiter(client, quota.Config{Now: clock}, redisstore.LimiterOptions{Prefix: prefix})
	ctx := t.Context()
	l := quota.Limits{MaxConcurrent: 100}
	leases := prefix + "{k}:l"
	for range 5 {
		r, err := lim.Reserve(ctx, quota.Request{KeyID: "k", Limits: l, InputEstimate: 1, MaxTokens: 1})
		require.NoError(t, err)
		require.NoError(t, lim.Settle(ctx, r, quota.Actual{Input: 1}))
	}
	marks, err := client.ZCount(ctx, leases, "-inf", "(0").Result()
	require.NoError(t, err)
	assert.Equal(t, int64(5), marks, "each finished reservation leaves a mark")

	tick(119 * time.Second)
	_, err = lim.Standing(ctx, "k", l)
	require.NoError(t, err)
	marks, _ = client.ZCount(ctx, leases, "-inf", "(0").Result()
	assert.Equal(t, int64(5), marks, "kept for two minutes")
	tick(2 * time.Second)
	_, err = lim.Standing(ctx, "k", l)
	require.NoError(t, err)
	marks, _ = client.ZCount(ctx, leases, "-inf", "(0").Result()
	assert.Zero(t, marks, "then dropped by any call that purges")

	// Counters and set lost (a Redis restart without persistence) while
	// a reservation was out: its settle leaves a mark, in a set that still
	// expires.
	r, err := lim.Reserve(ctx, quota.Request{KeyID: "k", Limits: l, InputEstimate: 1, MaxTokens: 1})
	require.NoError(t, err)
	require.NoError(t, client.Del(ctx, prefix+"{k}:q", leases).Err())
	require.NoError(t, lim.Settle(ctx, r, quota.Actual{Input: 1}))
	ttl, err := client.PTTL(ctx, leases).Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, time.Duration(0), "the set has a TTL")
}
