package quota_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/relaystation/relay/quota"
)

func TestTiersResolve(t *testing.T) {
	tiers := quota.Tiers{Default: "free", Tiers: map[string]quota.Limits{
		"free": {DailyTokens: 100_000, RPM: 10, MaxConcurrent: 2},
		"pro":  {MonthlyCostMicros: 50_000_000, RPM: 60, TPM: 400_000},
	}}
	require.NoError(t, tiers.Validate())
	tests := []struct {
		name string
		tier string
		o    quota.Override
		want quota.Limits
	}{
		{"named tier", "pro", quota.Override{}, quota.Limits{MonthlyCostMicros: 50_000_000, RPM: 60, TPM: 400_000}},
		{"no tier is the default", "", quota.Override{}, quota.Limits{DailyTokens: 100_000, RPM: 10, MaxConcurrent: 2}},
		{"unknown tier is the default", "prro", quota.Override{}, quota.Limits{DailyTokens: 100_000, RPM: 10, MaxConcurrent: 2}},
		{"override sets and lifts", "free", quota.Override{TokenLimit: new(int64(5_000_000)), RPM: new(int64(0))},
			quota.Limits{TokenLimit: 5_000_000, DailyTokens: 100_000, MaxConcurrent: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tiers.Resolve(tt.tier, tt.o))
		})
	}
	assert.True(t, tiers.Has("pro"))
	assert.False(t, tiers.Has("team"))
	assert.Equal(t, quota.Limits{RPM: 5}, quota.Tiers{}.Resolve("any", quota.Override{RPM: new(int64(5))}), "no tiers: unlimited but for overrides")
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"limits", quota.Limits{TPM: -1}.Validate(), "tpm: must not be negative"},
		{"cost field name", quota.Limits{WeeklyCostMicros: -5}.Validate(), "weekly_cost_micros: must not be negative"},
		{"override", quota.Override{MaxConcurrent: new(int64(-2))}.Validate(), "max_concurrent: must not be negative"},
		{"tier path", quota.Tiers{Default: "a", Tiers: map[string]quota.Limits{"a": {}, "pro": {DailyTokens: -1}}}.Validate(), "tiers.pro.daily_tokens: must not be negative"},
		{"missing default", quota.Tiers{Default: "x", Tiers: map[string]quota.Limits{"a": {}}}.Validate(), `default: tier "x" is not defined`},
		{"no default", quota.Tiers{Tiers: map[string]quota.Limits{"a": {}}}.Validate(), "default: must name"},
		{"default without tiers", quota.Tiers{Default: "x"}.Validate(), `default: tier "x" is not defined`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Error(t, tt.err)
			assert.Contains(t, tt.err.Error(), tt.want)
		})
	}
	assert.NoError(t, quota.Limits{RPM: 1}.Validate())
	assert.NoError(t, quota.Override{}.Validate())
	assert.NoError(t, quota.Tiers{}.Validate())
}

func TestKinds(t *testing.T) {
	k, err := quota.ParseKinds(" input, output ")
	require.NoError(t, err)
	assert.Equal(t, quota.Input|quota.Output, k)
	assert.Equal(t, "input,output", k.String())
	assert.Equal(t, int64(3), k.Count(1, 2, 4, 8))
	assert.Equal(t, int64(15), quota.AllKinds.Count(1, 2, 4, 8))
	assert.Equal(t, int64(7), quota.RateKinds.Count(1, 2, 4, 8), "cache reads do not count toward TPM by default")
	all, err := quota.ParseKinds("all")
	require.NoError(t, err)
	assert.Equal(t, quota.AllKinds, all)
	_, err = quota.ParseKinds("input,cache_miss")
	assert.ErrorContains(t, err, "cache_miss")
	_, err = quota.ParseKinds("")
	assert.Error(t, err)
	var u quota.Kinds
	require.NoError(t, u.UnmarshalText([]byte("cache_creation,cache_read")))
	assert.Equal(t, quota.CacheCreation|quota.CacheRead, u)
	b, _ := u.MarshalText()
	assert.Equal(t, "cache_creation,cache_read", string(b))
}

func TestPeriods(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	at := func(y int, m time.Month, d, h int) time.Time { return time.Date(y, m, d, h, 0, 0, 0, ny) }
	r := quota.NewRules(quota.Config{Location: ny})
	p := r.Periods(at(2026, 3, 8, 12)) // DST starts: a 23-hour Sunday
	assert.Equal(t, 23*time.Hour, p.Day.End.Sub(p.Day.Start))
	assert.True(t, p.Week.Start.Equal(at(2026, 3, 2, 0)), "weeks start on Monday")
	assert.True(t, p.Week.End.Equal(at(2026, 3, 9, 0)))
	assert.True(t, p.Month.Start.Equal(at(2026, 3, 1, 0)))
	assert.True(t, p.Month.End.Equal(at(2026, 4, 1, 0)))
	p = r.Periods(at(2026, 11, 1, 12)) // DST ends: a 25-hour Sunday
	assert.Equal(t, 25*time.Hour, p.Day.End.Sub(p.Day.Start))
	p = r.Periods(at(2026, 12, 31, 23))
	assert.True(t, p.Month.End.Equal(at(2027, 1, 1, 0)), "December rolls into the next year")
	p = r.Periods(at(2026, 3, 2, 0)) // Monday 00:00 exactly belongs to the new week
	assert.True(t, p.Week.Start.Equal(at(2026, 3, 2, 0)))
	assert.True(t, p.Day.Start.Equal(at(2026, 3, 2, 0)))

	sun := quota.NewRules(quota.Config{Location: ny, WeekStart: new(time.Sunday)})
	p = sun.Periods(at(2026, 3, 7, 12)) // Saturday
	assert.True(t, p.Week.Start.Equal(at(2026, 3, 1, 0)))
	utc := quota.NewRules(quota.Config{})
	p = utc.Periods(time.Date(2026, 3, 8, 3, 0, 0, 0, ny)) // 07:00 UTC
	assert.True(t, p.Day.Start.Equal(time.Date(2026, 3, 8, 0, 0, 0, 0, time.UTC)), "nil Location is UTC")
}

// Check's RetryAfter for RPM and TPM is the first millisecond at which the
// request fits, found here by brute force over random windows.
func TestRetryAfterExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	r := quota.NewRules(quota.Config{})
	base := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	m := quota.MinuteOf(base)
	fitsAt := func(s quota.State, l quota.Limits, a quota.Amounts, now time.Time) bool {
		r.Roll(&s, now)
		return r.Check("k", l, &s, a, now) == nil
	}
	checked := 0
	for range 400 {
		limit := 1 + rng.Int64N(50)
		need := 1 + rng.Int64N(limit+limit/2) // sometimes larger than the limit
		rpm := rng.IntN(2) == 0
		w := quota.RateWindow{Minute: m, Current: rng.Int64N(2 * limit), Previous: rng.Int64N(2 * limit)}
		var s quota.State
		l := quota.Limits{TPM: limit}
		a := quota.Amounts{RateTokens: need}
		if rpm {
			s.Requests, l, a = w, quota.Limits{RPM: limit}, quota.Amounts{}
		} else {
			s.Tokens = w
		}
		now := base.Add(time.Duration(rng.Int64N(60_000)) * time.Millisecond)
		ref := r.Check("k", l, &s, a, now)
		if ref == nil {
			continue
		}
		checked++
		require.Equal(t, quota.RateLimit, ref.Reason)
		require.Positive(t, ref.RetryAfter)
		assert.True(t, fitsAt(s, l, a, now.Add(ref.RetryAfter)), "fits after RetryAfter %v (%+v, limit %d, need %d)", ref.RetryAfter, w, limit, need)
		assert.False(t, fitsAt(s, l, a, now.Add(ref.RetryAfter-time.Millisecond)), "not a millisecond earlier (%+v, limit %d, need %d)", w, limit, need)
	}
	assert.Greater(t, checked, 100)
}

func TestRefusalAnswers(t *testing.T) {
	loc := time.FixedZone("UTC+5:30", 5*3600+1800)
	now := time.Date(2026, 4, 1, 20, 0, 0, 0, loc)
	m := quota.NewMemory(quota.Config{Location: loc, Now: func() time.Time { return now }})
	ctx := context.Background()
	l := quota.Limits{DailyCostMicros: 2_000_000, RPM: 100, TPM: 50_000}
	r, err := m.Reserve(ctx, quota.Request{KeyID: "k", Limits: l, InputEstimate: 10, MaxTokens: 10, CostEstimateMicros: 1})
	require.NoError(t, err)
	require.NoError(t, m.Settle(ctx, r, quota.Actual{Input: 10, CostMicros: 1_999_500}))

	_, err = m.Reserve(ctx, quota.Request{KeyID: "k", Limits: l, InputEstimate: 10, MaxTokens: 10, CostEstimateMicros: 1234})
	require.ErrorIs(t, err, quota.ErrBudgetExceeded)
	e := quota.APIError(fmt.Errorf("wrapped: %w", err))
	require.NotNil(t, e)
	assert.Equal(t, http.StatusPaymentRequired, e.Status)
	assert.Equal(t, "billing_error", e.Type)
	assert.Equal(t, "daily_cost budget exhausted: $0.0005 of $2.00 left and this request reserves up to $0.001234; it resets at 2026-04-02T00:00:00+05:30", e.Message)
	assert.Empty(t, e.Header.Get("retry-after"), "402 is not retried")
	assert.Equal(t, "100", e.Header.Get(quota.HeaderRequestsLimit))
	assert.Equal(t, "99", e.Header.Get(quota.HeaderRequestsRemaining))

	l = quota.Limits{RPM: 1}
	_, err = m.Reserve(ctx, quota.Request{KeyID: "k2", Limits: l})
	require.NoError(t, err)
	_, err = m.Reserve(ctx, quota.Request{KeyID: "k2", Limits: l})
	e = quota.APIError(err)
	require.NotNil(t, e)
	assert.Equal(t, http.StatusTooManyRequests, e.Status)
	assert.Equal(t, "rate_limit_error", e.Type)
	assert.Equal(t, "rate limit reached: this key may use 1 requests per minute; retry after 61s", e.Message)
	assert.Equal(t, "61", e.Header.Get("Retry-After"))
	assert.Equal(t, "60001", e.Header.Get("Retry-After-Ms"))
	assert.Equal(t, "2026-04-01T14:32:00Z", e.Header.Get(quota.HeaderRequestsReset))

	assert.Nil(t, quota.APIError(errors.New("redis down")))
	assert.Nil(t, quota.APIError(nil))
}

func TestStandingHeaders(t *testing.T) {
	reset := time.Date(2026, 4, 2, 0, 0, 0, 0, time.UTC)
	s := quota.Standing{
		RPM:         quota.Entry{Limit: 60, Used: 1, Remaining: 59, ResetAt: reset},
		TPM:         quota.Entry{Limit: 100_000, Used: 10_000, Remaining: 90_000, ResetAt: reset},
		DailyTokens: quota.Entry{Limit: 50_000, Used: 45_000, Remaining: 5_000, ResetAt: reset.Add(time.Hour)},
		TokenLimit:  quota.Entry{Limit: 1_000_000, Used: 999_000, Remaining: 1_000},
	}
	h := http.Header{}
	h.Set("anthropic-ratelimit-input-tokens-limit", "2000000") // the upstream's, not the key's
	h.Set("anthropic-ratelimit-tokens-remaining", "1999000")
	h.Set("request-id", "req_1")
	s.Headers(h)
	assert.Equal(t, http.Header{
		"Anthropic-Ratelimit-Requests-Limit":     {"60"},
		"Anthropic-Ratelimit-Requests-Remaining": {"59"},
		"Anthropic-Ratelimit-Requests-Reset":     {"2026-04-02T00:00:00Z"},
		"Anthropic-Ratelimit-Tokens-Limit":       {"1000000"},
		"Anthropic-Ratelimit-Tokens-Remaining":   {"1000"},
		"Request-Id":                             {"req_1"},
	}, h, "the most restrictive token limit; token_limit has no reset; upstream's headers gone")

	h = http.Header{"Anthropic-Ratelimit-Tokens-Limit": {"9"}}
	quota.Standing{}.Headers(h)
	assert.Empty(t, h, "a key without limits shows none")
}

func TestOutputReservation(t *testing.T) {
	c := quota.Config{}
	assert.Equal(t, int64(4096), c.OutputReservation(64_000))
	assert.Equal(t, int64(1000), c.OutputReservation(1000))
	assert.Equal(t, int64(4096), c.OutputReservation(0))
	c.OutputCap = 32_000
	assert.Equal(t, int64(32_000), c.OutputReservation(64_000))
	assert.Equal(t, int64(1_234_568), quota.Micros(1.2345675))
	assert.InDelta(t, 1.5, quota.USD(1_500_000), 0)
}

func TestSeedOncePerKey(t *testing.T) {
	calls := 0
	m := quota.NewMemory(quota.Config{Seed: func(context.Context, string, time.Time) (int64, int64, error) {
		calls++ // Seed calls for one key never overlap
		time.Sleep(time.Millisecond)
		return 0, 0, nil
	}})
	done := make(chan error)
	for range 20 {
		go func() {
			_, err := m.Reserve(context.Background(), quota.Request{KeyID: "k"})
			done <- err
		}()
	}
	for range 20 {
		require.NoError(t, <-done)
	}
	assert.Equal(t, 4, calls)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	blocked := quota.NewMemory(quota.Config{Seed: func(ctx context.Context, _ string, _ time.Time) (int64, int64, error) {
		return 0, 0, ctx.Err()
	}})
	_, err := blocked.Reserve(ctx, quota.Request{KeyID: "k"})
	assert.ErrorIs(t, err, context.Canceled)
	assert.True(t, strings.Contains(err.Error(), "key k"))
	assert.ErrorIs(t, err, quota.ErrSeed)
}
