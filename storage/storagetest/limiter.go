package storagetest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	_ "time/tzdata" // the suite's calendar zone must exist on every machine

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/relaystation/relay/quota"
)

// TestLimiter runs the quota.Limiter conformance suite. newLimiter must
// return a limiter with cfg (its Now, Seed, OutputCap… honoured) and its
// own empty state (for a shared store: its own key prefix). Subtests run
// in parallel, each on its own limiter, with a fake clock: backends must
// take the time from cfg.Now only.
//
// The overshoot subtests log what they measured ("overshoot: …"); run
// with -v to see the numbers.
func TestLimiter(t *testing.T, newLimiter func(t *testing.T, cfg quota.Config) quota.Limiter) {
	tests := []struct {
		name string
		fn   func(t *testing.T, nl newLimiterFunc)
	}{
		{"Admit", testLimiterAdmit},
		{"Invalid", testLimiterInvalid},
		{"ClaudeCodeMaxTokens", testLimiterClaudeCode},
		{"SettleLowerReturnsDifference", testLimiterSettleLower},
		{"SettleHigherChargesOverLimit", testLimiterSettleHigher},
		{"ReleaseReturnsEverything", testLimiterRelease},
		{"RPMSlidingWindow", testLimiterRPM},
		{"TPMWindow", testLimiterTPM},
		{"TPMOversizedRequest", testLimiterTPMOversized},
		{"Concurrency", testLimiterConcurrency},
		{"LeaseExpiryAndRenew", testLimiterExpiry},
		{"SettleAfterExpiry", testLimiterSettleAfterExpiry},
		{"DailyRollover", testLimiterDaily},
		{"WeeklyRollover", testLimiterWeekly},
		{"WeekStartSunday", testLimiterWeekStartSunday},
		{"MonthlyRollover", testLimiterMonthly},
		{"UsageChargedToReservationWindow", testLimiterReservationWindow},
		{"LifetimeSeeded", testLimiterSeeded},
		{"SeedErrorRetried", testLimiterSeedError},
		{"InFlightRefusal", testLimiterInFlight},
		{"BudgetPrecedence", testLimiterPrecedence},
		{"CostBudget", testLimiterCost},
		{"CountedKinds", testLimiterCounted},
		{"Standing", testLimiterStanding},
		{"ConcurrentKeys", testLimiterConcurrentKeys},
		{"OvershootTokens", testLimiterOvershootTokens},
		{"OvershootCost", testLimiterOvershootCost},
		{"NoOvershootWhenWithinReservation", testLimiterChurn},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newLimiter)
		})
	}
}

type newLimiterFunc = func(t *testing.T, cfg quota.Config) quota.Limiter

// limiterZone is the suite's calendar zone: not UTC, with DST.
func limiterZone(t *testing.T) *time.Location {
	loc, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	return loc
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type seedCall struct {
	keyID string
	since time.Time
}

// fakeSeeds answers Config.Seed from a function and records the calls.
type fakeSeeds struct {
	mu    sync.Mutex
	calls []seedCall
	fn    func(keyID string, since time.Time) (int64, int64, error)
}

func (s *fakeSeeds) seed(ctx context.Context, keyID string, since time.Time) (int64, int64, error) {
	s.mu.Lock()
	s.calls = append(s.calls, seedCall{keyID, since})
	fn := s.fn
	s.mu.Unlock()
	if fn == nil {
		return 0, 0, nil
	}
	return fn(keyID, since)
}

func (s *fakeSeeds) count(keyID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.calls {
		if c.keyID == keyID {
			n++
		}
	}
	return n
}

type limEnv struct {
	t     *testing.T
	lim   quota.Limiter
	clk   *fakeClock
	seeds *fakeSeeds
	loc   *time.Location
}

// newLimEnv returns a limiter on a fake clock set to at, in the suite's
// zone, with a recording Seed; mod may change the config.
func newLimEnv(t *testing.T, nl newLimiterFunc, at time.Time, mod func(*quota.Config)) *limEnv {
	e := &limEnv{t: t, clk: &fakeClock{t: at}, seeds: &fakeSeeds{}, loc: limiterZone(t)}
	cfg := quota.Config{Location: e.loc, Now: e.clk.Now, Seed: e.seeds.seed}
	if mod != nil {
		mod(&cfg)
	}
	e.lim = nl(t, cfg)
	return e
}

// local returns a time in the suite's zone.
func (e *limEnv) local(y int, m time.Month, d, h, min int) time.Time {
	return time.Date(y, m, d, h, min, 0, 0, e.loc)
}

func (e *limEnv) reserve(key string, l quota.Limits, in, maxTokens, cost int64) (quota.Reservation, error) {
	return e.lim.Reserve(e.t.Context(), quota.Request{KeyID: key, Limits: l, InputEstimate: in, MaxTokens: maxTokens, CostEstimateMicros: cost})
}

func (e *limEnv) admit(key string, l quota.Limits, in, maxTokens, cost int64) quota.Reservation {
	e.t.Helper()
	r, err := e.reserve(key, l, in, maxTokens, cost)
	require.NoError(e.t, err)
	return r
}

func (e *limEnv) refuse(key string, l quota.Limits, in, maxTokens, cost int64) *quota.Refusal {
	e.t.Helper()
	_, err := e.reserve(key, l, in, maxTokens, cost)
	require.Error(e.t, err)
	var ref *quota.Refusal
	require.ErrorAs(e.t, err, &ref)
	return ref
}

func (e *limEnv) settle(r quota.Reservation, a quota.Actual) {
	e.t.Helper()
	require.NoError(e.t, e.lim.Settle(e.t.Context(), r, a))
}

func (e *limEnv) standing(key string, l quota.Limits) quota.Standing {
	e.t.Helper()
	s, err := e.lim.Standing(e.t.Context(), key, l)
	require.NoError(e.t, err)
	return s
}

// spend reserves and settles a request that used tokens input tokens.
func (e *limEnv) spend(key string, l quota.Limits, tokens, cost int64) {
	e.t.Helper()
	r := e.admit(key, l, 0, 1, 0)
	e.settle(r, quota.Actual{Input: tokens, CostMicros: cost})
}

// suiteStart is a Wednesday afternoon, 10 seconds into a minute.
func suiteStart(t *testing.T) time.Time {
	return time.Date(2026, 4, 1, 14, 0, 10, 0, limiterZone(t))
}

func testLimiterAdmit(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	r := e.admit("k1", quota.Limits{}, 1000, 2000, 7000)
	assert.NotEmpty(t, r.ID)
	assert.Equal(t, "k1", r.KeyID)
	assert.True(t, r.At.Equal(e.clk.Now()), "At is the reservation time")
	assert.Equal(t, int64(3000), r.Tokens, "input estimate + max_tokens under the cap")
	assert.Equal(t, int64(3000), r.RateTokens)
	assert.Equal(t, int64(2000), r.OutputReserved)
	assert.Equal(t, int64(7000), r.CostMicros)
	assert.Equal(t, int64(1), r.Standing.Concurrency.Used)
	assert.Equal(t, int64(3000), r.Standing.TokenLimit.Reserved)

	r2 := e.admit("k1", quota.Limits{}, 0, 0, 0)
	assert.NotEqual(t, r.ID, r2.ID, "reservation ids are unique")
	assert.Equal(t, int64(quota.DefaultOutputCap), r2.OutputReserved, "no max_tokens reserves the cap")
	assert.Equal(t, int64(2), r2.Standing.Concurrency.Used)
}

func testLimiterInvalid(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	_, err := e.reserve("", quota.Limits{}, 1, 1, 0)
	assert.ErrorIs(t, err, quota.ErrInvalid)
	_, err = e.reserve("k", quota.Limits{}, -1, 1, 0)
	assert.ErrorIs(t, err, quota.ErrInvalid)
	r := e.admit("k", quota.Limits{}, 1, 1, 0)
	assert.ErrorIs(t, e.lim.Settle(t.Context(), r, quota.Actual{Output: -1}), quota.ErrInvalid)
	_, err = e.lim.Standing(t.Context(), "", quota.Limits{})
	assert.ErrorIs(t, err, quota.ErrInvalid)
	var ref *quota.Refusal
	assert.False(t, errors.As(err, &ref), "an invalid request is not a refusal")
}

func testLimiterClaudeCode(t *testing.T, nl newLimiterFunc) {
	// Claude Code sends max_tokens: 64000. With plenty left, that alone
	// must not refuse: the reservation is capped.
	e := newLimEnv(t, nl, suiteStart(t), nil)
	l := quota.Limits{TokenLimit: 1_000_000, DailyTokens: 200_000, TPM: 200_000}
	var held int64
	for range 5 {
		r := e.admit("agent", l, 30_000, 64_000, 0)
		assert.Equal(t, int64(quota.DefaultOutputCap), r.OutputReserved)
		assert.Equal(t, int64(30_000+quota.DefaultOutputCap), r.Tokens)
		held += r.Tokens
	}
	s := e.standing("agent", l)
	assert.Equal(t, held, s.DailyTokens.Reserved)
	assert.Equal(t, 200_000-held, s.DailyTokens.Remaining)

	e2 := newLimEnv(t, nl, suiteStart(t), func(c *quota.Config) { c.OutputCap = 8192 })
	r := e2.admit("agent", l, 30_000, 64_000, 0)
	assert.Equal(t, int64(8192), r.OutputReserved, "the cap is configurable")
	r = e2.admit("agent", l, 30_000, 1000, 0)
	assert.Equal(t, int64(1000), r.OutputReserved, "max_tokens under the cap reserves max_tokens")
}

func testLimiterSettleLower(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	l := quota.Limits{DailyTokens: 100_000, TokenLimit: 1_000_000, MonthlyCostMicros: 10_000_000}
	r := e.admit("k", l, 1000, 4000, 50_000)
	s := e.standing("k", l)
	assert.Equal(t, int64(5000), s.DailyTokens.Reserved)
	assert.Equal(t, int64(0), s.DailyTokens.Used)
	assert.Equal(t, int64(95_000), s.DailyTokens.Remaining)
	assert.Equal(t, int64(50_000), s.MonthlyCost.Reserved)

	e.settle(r, quota.Actual{Input: 700, Output: 300, CacheCreation: 100, CacheRead: 100, CostMicros: 12_345})
	s = e.standing("k", l)
	assert.Equal(t, quota.Entry{Limit: 100_000, Used: 1200, Remaining: 98_800, ResetAt: e.local(2026, 4, 2, 0, 0)}, s.DailyTokens)
	assert.Equal(t, int64(1200), s.TokenLimit.Used)
	assert.Equal(t, int64(0), s.TokenLimit.Reserved)
	assert.Equal(t, int64(12_345), s.MonthlyCost.Used)
	assert.Equal(t, int64(0), s.MonthlyCost.Reserved)
	assert.Equal(t, int64(10_000_000-12_345), s.MonthlyCost.Remaining)
	assert.Equal(t, int64(0), s.Concurrency.Used, "settle ends the lease")
}

func testLimiterSettleHigher(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	l := quota.Limits{DailyTokens: 100_000}
	r := e.admit("k", l, 1000, 4000, 0)
	e.settle(r, quota.Actual{Input: 90_000, Output: 60_000})
	s := e.standing("k", l)
	assert.Equal(t, int64(150_000), s.DailyTokens.Used, "usage over the reservation is charged in full, past the limit")
	assert.Equal(t, int64(0), s.DailyTokens.Remaining)

	ref := e.refuse("k", l, 10, 10, 0)
	assert.Equal(t, quota.Budget, ref.Reason)
	assert.Equal(t, quota.BudgetDailyTokens, ref.Budget)
	assert.Equal(t, int64(0), ref.Remaining)
	assert.ErrorIs(t, ref, quota.ErrBudgetExceeded)
	assert.NotErrorIs(t, ref, quota.ErrRateLimited)
	assert.Equal(t, http.StatusPaymentRequired, ref.Status())
}

func testLimiterRelease(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	l := quota.Limits{DailyTokens: 100_000, MonthlyCostMicros: 1_000_000, RPM: 10, TPM: 100_000, MaxConcurrent: 1}
	e.spend("k", l, 500, 1000)
	before := e.standing("k", l)
	r := e.admit("k", l, 1000, 4000, 20_000)
	mid := e.standing("k", l)
	assert.Equal(t, before.RPM.Used+1, mid.RPM.Used)
	assert.Equal(t, before.TPM.Used+5000, mid.TPM.Used)
	assert.Equal(t, int64(1), mid.Concurrency.Used)

	require.NoError(t, e.lim.Release(t.Context(), r))
	after := e.standing("k", l)
	assert.Equal(t, before, after, "release returns budgets, RPM, TPM and the lease")
	require.NoError(t, e.lim.Release(t.Context(), r), "a second release is a no-op")
	assert.Equal(t, before, e.standing("k", l))
	e.admit("k", l, 1000, 4000, 20_000) // the lease is free again
}

func testLimiterRPM(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil) // 10 s into a minute
	l := quota.Limits{RPM: 3}
	for range 3 {
		e.spend("k", l, 1, 0)
	}
	ref := e.refuse("k", l, 1, 1, 0)
	assert.Equal(t, quota.RateLimit, ref.Reason)
	assert.Equal(t, quota.BudgetRPM, ref.Budget)
	assert.Equal(t, int64(3), ref.Limit)
	assert.Equal(t, int64(0), ref.Remaining)
	assert.Equal(t, int64(1), ref.Requested)
	assert.ErrorIs(t, ref, quota.ErrRateLimited)
	assert.NotErrorIs(t, ref, quota.ErrBudgetExceeded)
	assert.Equal(t, http.StatusTooManyRequests, ref.Status())
	// Sliding window: the 3 requests of this minute weigh 3·(60−t)/60 in
	// the next one, so the 4th fits 1 ms into the next minute.
	assert.Equal(t, 50_001*time.Millisecond, ref.RetryAfter)
	assert.True(t, ref.ResetAt.Equal(e.clk.Now().Add(ref.RetryAfter)))
	assert.Equal(t, int64(3), ref.Standing.RPM.Used)
	h := http.Header{}
	ref.Headers(h)
	assert.Equal(t, "51", h.Get("retry-after"))
	assert.Equal(t, "50001", h.Get("retry-after-ms"))
	assert.Equal(t, "3", h.Get(quota.HeaderRequestsLimit))
	assert.Equal(t, "0", h.Get(quota.HeaderRequestsRemaining))

	// RetryAfter is exact: a millisecond earlier is still refused.
	for round := range 3 {
		e.clk.Advance(ref.RetryAfter - time.Millisecond)
		again := e.refuse("k", l, 1, 1, 0)
		assert.Equal(t, time.Millisecond, again.RetryAfter, "round %d", round)
		e.clk.Advance(time.Millisecond)
		e.spend("k", l, 1, 0)
		ref = e.refuse("k", l, 1, 1, 0)
		assert.Positive(t, ref.RetryAfter)
	}
	// Two idle minutes forget everything.
	e.clk.Advance(2 * time.Minute)
	assert.Equal(t, int64(3), e.standing("k", l).RPM.Remaining)
}

func testLimiterTPM(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	l := quota.Limits{TPM: 10_000}
	r1 := e.admit("k", l, 3000, 1000, 0)
	assert.Equal(t, int64(4000), r1.RateTokens)
	e.admit("k", l, 3000, 1000, 0)
	ref := e.refuse("k", l, 3000, 1000, 0)
	assert.Equal(t, quota.RateLimit, ref.Reason)
	assert.Equal(t, quota.BudgetTPM, ref.Budget)
	assert.Equal(t, int64(10_000), ref.Limit)
	assert.Equal(t, int64(2000), ref.Remaining)
	assert.Equal(t, int64(4000), ref.Requested)
	assert.Positive(t, ref.RetryAfter)

	// Settling below the reservation gives the difference back at once.
	// Cache reads do not count toward TPM by default.
	e.settle(r1, quota.Actual{Input: 500, Output: 400, CacheCreation: 100, CacheRead: 50_000})
	assert.Equal(t, int64(5000), e.standing("k", l).TPM.Used)
	e.admit("k", l, 3000, 1000, 0)
	assert.Equal(t, int64(9000), e.standing("k", l).TPM.Used)

	// RetryAfter is exact for TPM too.
	ref = e.refuse("k", l, 3000, 1000, 0)
	e.clk.Advance(ref.RetryAfter - time.Millisecond)
	e.refuse("k", l, 3000, 1000, 0)
	e.clk.Advance(time.Millisecond)
	e.admit("k", l, 3000, 1000, 0)

	s := e.standing("k", l)
	h := http.Header{}
	s.Headers(h)
	assert.Equal(t, "10000", h.Get(quota.HeaderTokensLimit))
	assert.Equal(t, fmt.Sprint(s.TPM.Remaining), h.Get(quota.HeaderTokensRemaining))
	assert.NotEmpty(t, h.Get(quota.HeaderTokensReset))
	assert.Empty(t, h.Get(quota.HeaderRequestsLimit), "no RPM, no requests headers")
}

func testLimiterTPMOversized(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	l := quota.Limits{TPM: 1000}
	r := e.admit("k", l, 5000, 100, 0) // larger than TPM: admitted into an empty window
	ref := e.refuse("k", l, 10, 10, 0)
	assert.Equal(t, quota.RateLimit, ref.Reason)
	assert.Equal(t, quota.BudgetTPM, ref.Budget)
	e.settle(r, quota.Actual{Input: 5000, Output: 100})
	big := e.refuse("k", l, 5000, 100, 0)
	assert.Contains(t, big.Error(), "empty window")
	// It fits again once the window has forgotten everything.
	e.clk.Advance(big.RetryAfter - time.Millisecond)
	e.refuse("k", l, 5000, 100, 0)
	e.clk.Advance(time.Millisecond)
	e.admit("k", l, 5000, 100, 0)
}

func testLimiterConcurrency(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	l := quota.Limits{MaxConcurrent: 2}
	r1 := e.admit("k", l, 1, 1, 0)
	r2 := e.admit("k", l, 1, 1, 0)
	ref := e.refuse("k", l, 1, 1, 0)
	assert.Equal(t, quota.Concurrency, ref.Reason)
	assert.Equal(t, quota.BudgetConcurrency, ref.Budget)
	assert.Equal(t, int64(2), ref.Limit)
	assert.Equal(t, quota.DefaultBusyRetryAfter, ref.RetryAfter)
	assert.ErrorIs(t, ref, quota.ErrRateLimited)
	assert.Equal(t, http.StatusTooManyRequests, ref.Status())
	assert.Equal(t, int64(2), ref.Standing.Concurrency.Used)

	e.settle(r1, quota.Actual{Input: 1})
	r3 := e.admit("k", l, 1, 1, 0)
	e.refuse("k", l, 1, 1, 0)
	require.NoError(t, e.lim.Release(t.Context(), r2))
	e.admit("k", l, 1, 1, 0)
	e.refuse("k", l, 1, 1, 0)
	e.settle(r3, quota.Actual{})
	assert.Equal(t, int64(1), e.standing("k", l).Concurrency.Used)
	e.admit("other", l, 1, 1, 0) // leases are per key
}

func testLimiterExpiry(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), func(c *quota.Config) { c.ReservationTTL = 10 * time.Minute })
	l := quota.Limits{MaxConcurrent: 1, DailyTokens: 100_000}
	e.admit("k", l, 1000, 1000, 0)
	e.clk.Advance(10*time.Minute - time.Millisecond)
	e.refuse("k", l, 1, 1, 0)
	e.clk.Advance(time.Millisecond)
	s := e.standing("k", l)
	assert.Equal(t, int64(0), s.Concurrency.Used, "an expired lease is free")
	assert.Equal(t, int64(0), s.DailyTokens.Reserved, "an expired reservation returns what it held")
	assert.Equal(t, int64(0), s.DailyTokens.Used)

	r := e.admit("k", l, 1000, 1000, 0)
	e.clk.Advance(9 * time.Minute)
	require.NoError(t, e.lim.Renew(t.Context(), r))
	e.clk.Advance(9 * time.Minute)
	e.refuse("k", l, 1, 1, 0) // renewed: still held 18 minutes in
	e.clk.Advance(time.Minute)
	assert.ErrorIs(t, e.lim.Renew(t.Context(), r), quota.ErrUnknownReservation)
	e.admit("k", l, 1, 1, 0)
	assert.ErrorIs(t, e.lim.Renew(t.Context(), quota.Reservation{ID: "nope", KeyID: "k"}), quota.ErrUnknownReservation)
}

func testLimiterSettleAfterExpiry(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	l := quota.Limits{DailyTokens: 100_000}
	old := e.admit("k", l, 1000, 1000, 0)
	e.clk.Advance(quota.DefaultReservationTTL)
	live := e.admit("k", l, 3000, 1000, 0)
	e.settle(old, quota.Actual{Input: 1500, Output: 700})
	s := e.standing("k", l)
	assert.Equal(t, int64(2200), s.DailyTokens.Used, "an expired reservation's usage is charged in full")
	assert.Equal(t, live.Tokens, s.DailyTokens.Reserved, "and nothing is returned twice")
	e.settle(live, quota.Actual{Input: 10})
	s = e.standing("k", l)
	assert.Equal(t, int64(2210), s.DailyTokens.Used)
	assert.Equal(t, int64(0), s.DailyTokens.Reserved)
}

func testLimiterDaily(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	l := quota.Limits{DailyTokens: 10_000, WeeklyTokens: 100_000, MonthlyTokens: 1_000_000}
	e.clk.Set(e.local(2026, 4, 1, 18, 0)) // Wednesday, 22:00 UTC
	e.spend("k", l, 9_000, 0)
	ref := e.refuse("k", l, 1000, 4096, 0)
	assert.Equal(t, quota.Budget, ref.Reason)
	assert.Equal(t, quota.BudgetDailyTokens, ref.Budget)
	assert.Equal(t, int64(10_000), ref.Limit)
	assert.Equal(t, int64(1000), ref.Remaining)
	assert.Equal(t, int64(5096), ref.Requested)
	assert.True(t, ref.ResetAt.Equal(e.local(2026, 4, 2, 0, 0)), "resets at local midnight, got %v", ref.ResetAt)
	assert.Equal(t, 6*time.Hour, ref.RetryAfter)
	assert.Contains(t, ref.Error(), "daily_tokens")
	assert.Contains(t, ref.Error(), "2026-04-02T00:00:00-04:00")

	e.clk.Set(e.local(2026, 4, 1, 20, 30)) // 00:30 UTC Thursday: UTC midnight resets nothing
	e.refuse("k", l, 1000, 4096, 0)
	e.clk.Set(e.local(2026, 4, 1, 23, 59))
	e.refuse("k", l, 1000, 4096, 0)
	e.clk.Set(e.local(2026, 4, 2, 0, 0))
	e.admit("k", l, 1000, 4096, 0)
	s := e.standing("k", l)
	assert.Equal(t, int64(0), s.DailyTokens.Used)
	assert.Equal(t, int64(9_000), s.WeeklyTokens.Used, "the week goes on")
	assert.Equal(t, int64(9_000), s.MonthlyTokens.Used, "the month goes on")
	assert.True(t, s.DailyTokens.ResetAt.Equal(e.local(2026, 4, 3, 0, 0)))
}

func testLimiterWeekly(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	l := quota.Limits{DailyTokens: 100_000, WeeklyTokens: 10_000, MonthlyTokens: 1_000_000}
	e.clk.Set(e.local(2026, 4, 5, 22, 0)) // Sunday
	e.spend("k", l, 9_000, 0)
	ref := e.refuse("k", l, 1000, 4096, 0)
	assert.Equal(t, quota.BudgetWeeklyTokens, ref.Budget)
	assert.True(t, ref.ResetAt.Equal(e.local(2026, 4, 6, 0, 0)), "resets Monday at local midnight, got %v", ref.ResetAt)
	e.clk.Set(e.local(2026, 4, 6, 0, 0).Add(-time.Millisecond))
	e.refuse("k", l, 1000, 4096, 0)
	e.clk.Set(e.local(2026, 4, 6, 0, 0))
	e.admit("k", l, 1000, 4096, 0)
	s := e.standing("k", l)
	assert.Equal(t, int64(0), s.WeeklyTokens.Used)
	assert.Equal(t, int64(9_000), s.MonthlyTokens.Used)
	assert.True(t, s.WeeklyTokens.ResetAt.Equal(e.local(2026, 4, 13, 0, 0)))
}

func testLimiterWeekStartSunday(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), func(c *quota.Config) { c.WeekStart = new(time.Sunday) })
	l := quota.Limits{WeeklyTokens: 10_000}
	e.clk.Set(e.local(2026, 4, 4, 22, 0)) // Saturday
	e.spend("k", l, 9_000, 0)
	ref := e.refuse("k", l, 1000, 4096, 0)
	assert.True(t, ref.ResetAt.Equal(e.local(2026, 4, 5, 0, 0)), "got %v", ref.ResetAt)
	e.clk.Set(e.local(2026, 4, 5, 0, 0))
	e.admit("k", l, 1000, 4096, 0)
}

func testLimiterMonthly(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	l := quota.Limits{DailyTokens: 100_000, WeeklyTokens: 100_000, MonthlyTokens: 10_000}
	e.clk.Set(e.local(2026, 4, 30, 23, 0)) // Thursday
	e.spend("k", l, 9_000, 0)
	ref := e.refuse("k", l, 1000, 4096, 0)
	assert.Equal(t, quota.BudgetMonthlyTokens, ref.Budget)
	assert.True(t, ref.ResetAt.Equal(e.local(2026, 5, 1, 0, 0)), "resets on the 1st at local midnight, got %v", ref.ResetAt)
	e.clk.Set(e.local(2026, 5, 1, 0, 0))
	e.admit("k", l, 1000, 4096, 0)
	s := e.standing("k", l)
	assert.Equal(t, int64(0), s.MonthlyTokens.Used)
	assert.Equal(t, int64(9_000), s.WeeklyTokens.Used, "the week goes on")
	assert.True(t, s.MonthlyTokens.ResetAt.Equal(e.local(2026, 6, 1, 0, 0)))
}

func testLimiterReservationWindow(t *testing.T, nl newLimiterFunc) {
	// Usage records are dated at the request's start, so a request that
	// started before midnight is charged to the day it started in.
	e := newLimEnv(t, nl, suiteStart(t), nil)
	l := quota.Limits{DailyTokens: 100_000, TokenLimit: 1_000_000}
	e.clk.Set(e.local(2026, 4, 1, 23, 59))
	r := e.admit("k", l, 1000, 1000, 0)
	e.clk.Set(e.local(2026, 4, 2, 0, 1))
	e.settle(r, quota.Actual{Input: 3000, Output: 2000})
	s := e.standing("k", l)
	assert.Equal(t, int64(0), s.DailyTokens.Used, "not charged to the new day")
	assert.Equal(t, int64(0), s.DailyTokens.Reserved)
	assert.Equal(t, int64(5000), s.TokenLimit.Used, "but to the lifetime")
}

func testLimiterSeeded(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	p := struct{ day, week, month time.Time }{e.local(2026, 4, 1, 0, 0), e.local(2026, 3, 30, 0, 0), e.local(2026, 4, 1, 0, 0)}
	e.seeds.fn = func(key string, since time.Time) (int64, int64, error) {
		switch {
		case since.IsZero():
			return 95_000, 999_999_999, nil
		case since.Equal(p.week):
			return 30_000, 300_000, nil
		case since.Equal(p.day): // also the month's start
			return 20_000, 200_000, nil
		}
		return 0, 0, fmt.Errorf("unexpected since %v", since)
	}
	l := quota.Limits{TokenLimit: 100_000, DailyTokens: 1_000_000, WeeklyCostMicros: 10_000_000}
	s := e.standing("k", l)
	assert.Equal(t, int64(95_000), s.TokenLimit.Used)
	assert.Equal(t, int64(5_000), s.TokenLimit.Remaining)
	assert.Equal(t, int64(20_000), s.DailyTokens.Used)
	assert.Equal(t, int64(20_000), s.MonthlyTokens.Used)
	assert.Equal(t, int64(30_000), s.WeeklyTokens.Used)
	assert.Equal(t, int64(300_000), s.WeeklyCost.Used)
	assert.Equal(t, int64(200_000), s.DailyCost.Used)

	e.seeds.mu.Lock()
	calls := append([]seedCall(nil), e.seeds.calls...)
	e.seeds.mu.Unlock()
	require.Len(t, calls, 4, "lifetime, month, week, day")
	var sinces []time.Time
	for _, c := range calls {
		assert.Equal(t, "k", c.keyID)
		sinces = append(sinces, c.since)
	}
	assert.ElementsMatch(t, []time.Time{{}, p.month, p.week, p.day}, sinces)

	ref := e.refuse("k", l, 1000, 4096, 0)
	assert.Equal(t, quota.Budget, ref.Reason)
	assert.Equal(t, quota.BudgetTokenLimit, ref.Budget)
	assert.Equal(t, int64(100_000), ref.Limit)
	assert.Equal(t, int64(5_000), ref.Remaining)
	assert.Equal(t, int64(5_096), ref.Requested)
	assert.True(t, ref.ResetAt.IsZero(), "token_limit never resets")
	assert.Zero(t, ref.RetryAfter)
	assert.Contains(t, ref.Error(), "does not reset")
	assert.Contains(t, ref.Error(), "max_tokens", "the message says how to need less")

	r := e.admit("k", l, 1000, 2000, 0) // 3000 fits in the 5000 left
	e.settle(r, quota.Actual{Input: 1000, Output: 1000})
	assert.Equal(t, int64(97_000), e.standing("k", l).TokenLimit.Used)
	assert.Equal(t, 4, e.seeds.count("k"), "a key is seeded once")
}

func testLimiterSeedError(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	boom := errors.New("usage store down")
	var fail atomic.Bool
	fail.Store(true)
	e.seeds.fn = func(string, time.Time) (int64, int64, error) {
		if fail.Load() {
			return 0, 0, boom
		}
		return 10, 0, nil
	}
	_, err := e.reserve("k", quota.Limits{}, 1, 1, 0)
	require.ErrorIs(t, err, boom)
	var ref *quota.Refusal
	assert.False(t, errors.As(err, &ref), "a seed failure is not a refusal")
	fail.Store(false)
	r := e.admit("k", quota.Limits{}, 1, 1, 0)
	assert.Equal(t, int64(10), r.Standing.TokenLimit.Used)
}

func testLimiterInFlight(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	l := quota.Limits{DailyTokens: 10_000}
	r := e.admit("k", l, 1000, 4096, 0)
	ref := e.refuse("k", l, 1000, 4096, 0)
	assert.Equal(t, quota.InFlight, ref.Reason, "the budget has room; a request in flight holds it")
	assert.Equal(t, quota.BudgetDailyTokens, ref.Budget)
	assert.Equal(t, int64(10_000-5096), ref.Remaining)
	assert.Equal(t, int64(5096), ref.Requested)
	assert.Equal(t, quota.DefaultBusyRetryAfter, ref.RetryAfter)
	assert.ErrorIs(t, ref, quota.ErrRateLimited)
	assert.Equal(t, http.StatusTooManyRequests, ref.Status())
	e.settle(r, quota.Actual{Input: 1000, Output: 500})
	e.admit("k", l, 1000, 4096, 0)
}

func testLimiterPrecedence(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	l := quota.Limits{DailyTokens: 1000, MonthlyTokens: 1000, RPM: 1, MaxConcurrent: 1}
	e.spend("k", l, 2000, 0)
	ref := e.refuse("k", l, 10, 10, 0)
	assert.Equal(t, quota.BudgetMonthlyTokens, ref.Budget, "of two used-up budgets, the one that resets last")
	l.TokenLimit = 1500
	ref = e.refuse("k", l, 10, 10, 0)
	assert.Equal(t, quota.BudgetTokenLimit, ref.Budget, "token_limit never resets")
	l = quota.Limits{RPM: 1, MaxConcurrent: 1}
	e.admit("k2", l, 1, 1, 0)
	ref = e.refuse("k2", l, 1, 1, 0)
	assert.Equal(t, quota.Concurrency, ref.Reason, "concurrency before RPM")
	l.DailyTokens = 1000
	ref = e.refuse("k", l, 10, 10, 0)
	assert.Equal(t, quota.Budget, ref.Reason, "a used-up budget (402) before a rate limit (429)")
}

func testLimiterCost(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	e.seeds.fn = func(_ string, since time.Time) (int64, int64, error) {
		if since.IsZero() {
			return 0, 0, nil
		}
		return 0, 4_950_000, nil // $4.95 spent this month (and day, week)
	}
	l := quota.Limits{MonthlyCostMicros: 5_000_000}
	ref := e.refuse("k", l, 1000, 1000, 60_000)
	assert.Equal(t, quota.Budget, ref.Reason)
	assert.Equal(t, quota.BudgetMonthlyCost, ref.Budget)
	assert.Equal(t, int64(50_000), ref.Remaining)
	assert.Equal(t, int64(60_000), ref.Requested)
	assert.Contains(t, ref.Error(), "$0.05 of $5.00 left")
	assert.True(t, ref.ResetAt.Equal(e.local(2026, 5, 1, 0, 0)))

	r := e.admit("k", l, 1000, 1000, 40_000)
	e.settle(r, quota.Actual{Input: 1000, Output: 10, CostMicros: 3_100})
	s := e.standing("k", l)
	assert.Equal(t, int64(4_953_100), s.MonthlyCost.Used)
	assert.Equal(t, int64(46_900), s.MonthlyCost.Remaining)
}

func testLimiterCounted(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), func(c *quota.Config) {
		c.Counted = quota.Input | quota.Output
		c.RateCounted = quota.Output
	})
	l := quota.Limits{DailyTokens: 100_000, TPM: 100_000}
	r := e.admit("k", l, 1000, 2000, 0)
	assert.Equal(t, int64(3000), r.Tokens)
	assert.Equal(t, int64(2000), r.RateTokens, "only output counts toward TPM here")
	e.settle(r, quota.Actual{Input: 100, Output: 200, CacheCreation: 4000, CacheRead: 8000})
	s := e.standing("k", l)
	assert.Equal(t, int64(300), s.DailyTokens.Used)
	assert.Equal(t, int64(200), s.TPM.Used)
}

func testLimiterStanding(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	l := quota.Limits{TokenLimit: 9, DailyTokens: 1, WeeklyTokens: 2, MonthlyTokens: 3, DailyCostMicros: 4,
		WeeklyCostMicros: 5, MonthlyCostMicros: 6, RPM: 7, TPM: 8, MaxConcurrent: 10}
	s := e.standing("fresh", l)
	now := e.clk.Now()
	assert.Equal(t, "fresh", s.KeyID)
	assert.True(t, s.At.Equal(now))
	day, week, month := e.local(2026, 4, 2, 0, 0), e.local(2026, 4, 6, 0, 0), e.local(2026, 5, 1, 0, 0)
	for _, c := range []struct {
		name  string
		limit int64
		reset time.Time
	}{
		{quota.BudgetTokenLimit, 9, time.Time{}},
		{quota.BudgetDailyTokens, 1, day}, {quota.BudgetWeeklyTokens, 2, week}, {quota.BudgetMonthlyTokens, 3, month},
		{quota.BudgetDailyCost, 4, day}, {quota.BudgetWeeklyCost, 5, week}, {quota.BudgetMonthlyCost, 6, month},
		{quota.BudgetRPM, 7, now}, {quota.BudgetTPM, 8, now}, {quota.BudgetConcurrency, 10, time.Time{}},
	} {
		got, ok := s.Entry(c.name)
		require.True(t, ok, c.name)
		assert.Equal(t, c.limit, got.Limit, c.name)
		assert.Equal(t, c.limit, got.Remaining, c.name)
		assert.Zero(t, got.Used, c.name)
		assert.True(t, got.ResetAt.Equal(c.reset), "%s resets at %v, want %v", c.name, got.ResetAt, c.reset)
	}
	r := e.admit("fresh", quota.Limits{}, 0, 1, 0)
	e.settle(r, quota.Actual{Output: 1})
	s = e.standing("fresh", l)
	assert.Equal(t, int64(1), s.RPM.Used)
	assert.True(t, s.RPM.ResetAt.Equal(now.Truncate(time.Minute).Add(2*time.Minute)), "RPM is replenished when its minute has slid out")
	assert.Equal(t, int64(0), s.DailyTokens.Remaining)
	assert.Equal(t, int64(1), s.TokenLimit.Used)
}

func testLimiterConcurrentKeys(t *testing.T, nl newLimiterFunc) {
	e := newLimEnv(t, nl, suiteStart(t), nil)
	const workers, perWorker, keys = 32, 20, 8
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				key := fmt.Sprintf("key-%d", (w+i)%keys)
				r, err := e.reserve(key, quota.Limits{}, 10, 10, 1)
				if !assert.NoError(t, err) {
					return
				}
				if i%4 == 0 {
					assert.NoError(t, e.lim.Release(t.Context(), r))
					continue
				}
				assert.NoError(t, e.lim.Settle(t.Context(), r, quota.Actual{Input: 3, Output: 4, CostMicros: 5}))
			}
		})
	}
	wg.Wait()
	var total, cost int64
	for k := range keys {
		s := e.standing(fmt.Sprintf("key-%d", k), quota.Limits{})
		total += s.TokenLimit.Used
		cost += s.DailyCost.Used
		assert.Zero(t, s.TokenLimit.Reserved)
		assert.Zero(t, s.Concurrency.Used)
	}
	settled := int64(workers * perWorker * 3 / 4)
	assert.Equal(t, settled*7, total, "no update lost")
	assert.Equal(t, settled*5, cost)
}

// overshootRun reserves from 100 goroutines at once against a key with
// little left, then settles every admitted request with the worst usage
// the documented bound allows for (output = max_tokens, input 30 % over
// the estimate, the offline tokenizer's typical undercount, cost likewise
// over). It returns how many were admitted and the final standing.
type overshootCase struct {
	limits     quota.Limits
	seedTokens int64 // lifetime and window usage before the run
	seedCost   int64
	in, maxTok int64
	cost       int64 // estimate per request
	actualIn   int64
	actualCost int64
}

func runOvershoot(t *testing.T, nl newLimiterFunc, c overshootCase) (admitted int, refusals []*quota.Refusal, final quota.Standing, e *limEnv) {
	e = newLimEnv(t, nl, suiteStart(t), nil)
	e.seeds.fn = func(_ string, since time.Time) (int64, int64, error) {
		if since.IsZero() {
			return c.seedTokens, 0, nil
		}
		return c.seedTokens, c.seedCost, nil
	}
	const workers = 100
	start := make(chan struct{})
	var reserved sync.WaitGroup
	var mu sync.Mutex
	var held []quota.Reservation
	for range workers {
		reserved.Go(func() {
			<-start
			r, err := e.reserve("k", c.limits, c.in, c.maxTok, c.cost)
			mu.Lock()
			defer mu.Unlock()
			var ref *quota.Refusal
			switch {
			case err == nil:
				held = append(held, r)
			case errors.As(err, &ref):
				refusals = append(refusals, ref)
			default:
				t.Errorf("reserve: %v", err)
			}
		})
	}
	close(start)
	reserved.Wait()
	// Every admitted request was in flight when the last one was admitted:
	// the documented bound's worst case.
	var settled sync.WaitGroup
	for _, r := range held {
		settled.Go(func() {
			assert.NoError(t, e.lim.Settle(t.Context(), r, quota.Actual{Input: c.actualIn, Output: c.maxTok, CostMicros: c.actualCost}))
		})
	}
	settled.Wait()
	return len(held), refusals, e.standing("k", c.limits), e
}

func testLimiterOvershootTokens(t *testing.T, nl newLimiterFunc) {
	const limit, left, est = 1_000_000, 20_000, 1_000
	for _, maxTok := range []int64{64_000, 8_192, 4_096, 1_024} {
		t.Run(fmt.Sprint("max_tokens_", maxTok), func(t *testing.T) {
			c := overshootCase{limits: quota.Limits{TokenLimit: limit}, seedTokens: limit - left,
				in: est, maxTok: maxTok, actualIn: est * 13 / 10}
			admitted, refusals, final, e := runOvershoot(t, nl, c)
			outRes := min(maxTok, quota.DefaultOutputCap)
			reservation := est + outRes
			// Atomic admission: exactly as many as fit, no more, no fewer.
			assert.Equal(t, int(left/reservation), admitted, "admitted")
			for _, ref := range refusals {
				assert.Equal(t, quota.InFlight, ref.Reason, "room is left if in-flight requests use less: 429, not 402")
				assert.Equal(t, quota.BudgetTokenLimit, ref.Budget)
			}
			// Documented bound: Σ over requests in flight at the last
			// admission of (max_tokens − reserved output) + (input − estimate).
			bound := int64(admitted) * ((maxTok - outRes) + (c.actualIn - est))
			overshoot := final.TokenLimit.Used - limit
			t.Logf("overshoot: tokens, 100 goroutines, %d left of %d, max_tokens %d, cap %d: admitted %d (reservation %d each), final used %d, overshoot %d, bound %d",
				left, limit, maxTok, quota.DefaultOutputCap, admitted, reservation, final.TokenLimit.Used, overshoot, bound)
			assert.LessOrEqual(t, overshoot, bound)
			assert.Zero(t, final.TokenLimit.Reserved)
			assert.Zero(t, final.Concurrency.Used)
			if overshoot >= 0 {
				ref := e.refuse("k", c.limits, est, maxTok, 0)
				assert.Equal(t, quota.Budget, ref.Reason, "used up now: 402")
			}
		})
	}
}

func testLimiterOvershootCost(t *testing.T, nl newLimiterFunc) {
	const limit, left, est, actual = 10_000_000, 500_000, 45_000, 70_000 // $10 a month, $0.50 left
	c := overshootCase{limits: quota.Limits{MonthlyCostMicros: limit}, seedCost: limit - left,
		in: 1000, maxTok: 64_000, cost: est, actualIn: 1000, actualCost: actual}
	admitted, _, final, _ := runOvershoot(t, nl, c)
	assert.Equal(t, int(left/est), admitted)
	bound := int64(admitted) * (actual - est)
	overshoot := final.MonthlyCost.Used - limit
	t.Logf("overshoot: cost, 100 goroutines, $%.2f left of $%.2f, estimate $%.3f, actual $%.3f: admitted %d, final $%.6f, overshoot $%.6f, bound $%.6f",
		quota.USD(left), quota.USD(limit), quota.USD(est), quota.USD(actual), admitted, quota.USD(final.MonthlyCost.Used), quota.USD(overshoot), quota.USD(bound))
	assert.LessOrEqual(t, overshoot, bound)
}

func testLimiterChurn(t *testing.T, nl newLimiterFunc) {
	// 100 goroutines reserve and settle until the budget refuses them for
	// good. Every request uses at most its reservation, so the key must
	// end at or under its limit exactly, and no closer than one
	// reservation short of it.
	const limit, left, est, maxTok = 1_000_000, 150_000, 800, 2000
	e := newLimEnv(t, nl, suiteStart(t), nil)
	e.seeds.fn = func(_ string, since time.Time) (int64, int64, error) { return limit - left, 0, nil }
	l := quota.Limits{TokenLimit: limit, DailyTokens: limit}
	var wg sync.WaitGroup
	var requests, inFlightRefusals atomic.Int64
	for w := range 100 {
		wg.Go(func() {
			for i := 0; ; i++ {
				r, err := e.reserve("k", l, est, maxTok, 0)
				var ref *quota.Refusal
				switch {
				case err == nil:
					requests.Add(1)
					used := (est+maxTok)*int64(50+(w*7+i*13)%51)/100 - 1 // 50–100 % of the reservation
					assert.NoError(t, e.lim.Settle(t.Context(), r, quota.Actual{Input: used / 2, Output: used - used/2}))
				case errors.As(err, &ref) && ref.Reason == quota.InFlight:
					inFlightRefusals.Add(1)
					time.Sleep(time.Millisecond)
				case errors.As(err, &ref) && ref.Reason == quota.Budget:
					return
				default:
					t.Errorf("reserve: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	s := e.standing("k", l)
	t.Logf("overshoot: churn, 100 goroutines, %d left, %d requests, %d in-flight refusals retried, final used %d of %d (overshoot %d)",
		left, requests.Load(), inFlightRefusals.Load(), s.TokenLimit.Used, int64(limit), s.TokenLimit.Used-limit)
	assert.LessOrEqual(t, s.TokenLimit.Used, int64(limit), "never over when usage stays within reservations")
	assert.Greater(t, s.TokenLimit.Used, int64(limit-(est+maxTok)), "refused for good only when a reservation no longer fits")
	assert.Zero(t, s.TokenLimit.Reserved)
	assert.Equal(t, s.TokenLimit.Used-(limit-left), s.DailyTokens.Used-(limit-left))
}
