package quota

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// errDown is what an unreachable Redis answers.
var errDown = errors.New("dial tcp 10.0.0.7:6379: connect: connection refused")

// flaky wraps a Memory: down, every call fails with errDown. It counts
// the calls that reached it, and gate (if set) holds Reserve until
// closed.
type flaky struct {
	*Memory
	down                            atomic.Bool
	reserves, standings, settles    atomic.Int64
	gate                            chan struct{}
	releases, renews, reserveErrors atomic.Int64
}

func newFlaky(cfg Config) *flaky { return &flaky{Memory: NewMemory(cfg)} }

func (l *flaky) err() error {
	if l.down.Load() {
		return errDown
	}
	return nil
}

func (l *flaky) Reserve(ctx context.Context, req Request) (Reservation, error) {
	l.reserves.Add(1)
	if l.gate != nil {
		<-l.gate
	}
	if err := l.err(); err != nil {
		l.reserveErrors.Add(1)
		return Reservation{}, err
	}
	return l.Memory.Reserve(ctx, req)
}

func (l *flaky) Settle(ctx context.Context, r Reservation, a Actual) error {
	l.settles.Add(1)
	if err := l.err(); err != nil {
		return err
	}
	return l.Memory.Settle(ctx, r, a)
}

func (l *flaky) Release(ctx context.Context, r Reservation) error {
	l.releases.Add(1)
	if err := l.err(); err != nil {
		return err
	}
	return l.Memory.Release(ctx, r)
}

func (l *flaky) Renew(ctx context.Context, r Reservation) error {
	l.renews.Add(1)
	if err := l.err(); err != nil {
		return err
	}
	return l.Memory.Renew(ctx, r)
}

func (l *flaky) Standing(ctx context.Context, keyID string, lim Limits) (Standing, error) {
	l.standings.Add(1)
	if err := l.err(); err != nil {
		return Standing{}, err
	}
	return l.Memory.Standing(ctx, keyID, lim)
}

// clock is a settable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logBuffer collects log lines from any goroutine.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// failoverEnv is a Failover over a flaky primary and a Memory fallback
// with one fake clock, recording its transitions and log.
type failoverEnv struct {
	f           *Failover
	primary     *flaky
	fallback    *Memory
	clock       *clock
	logs        *logBuffer
	mu          sync.Mutex
	transitions []bool
}

func newFailoverEnv(t *testing.T, mod func(*FailoverConfig)) *failoverEnv {
	t.Helper()
	e := &failoverEnv{clock: &clock{t: time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)}, logs: &logBuffer{}}
	qcfg := Config{Now: e.clock.Now}
	e.primary = newFlaky(qcfg)
	e.fallback = NewMemory(qcfg)
	cfg := FailoverConfig{
		Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnTransition: func(degraded bool) {
			e.mu.Lock()
			e.transitions = append(e.transitions, degraded)
			e.mu.Unlock()
		},
		Now: e.clock.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	var fb Limiter = e.fallback
	if cfg.FailClosed {
		fb = nil
	}
	e.f = NewFailover(e.primary, fb, cfg)
	t.Cleanup(e.f.probes.Wait)
	return e
}

func (e *failoverEnv) seen() []bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]bool(nil), e.transitions...)
}

var (
	testReq   = Request{KeyID: "key_a", Limits: Limits{DailyTokens: 1_000_000}, InputEstimate: 100, MaxTokens: 50}
	testUsage = Actual{Input: 80, Output: 20}
)

// used is the daily tokens l has charged to key_a.
func used(t *testing.T, l Limiter) int64 {
	t.Helper()
	s, err := l.Standing(t.Context(), testReq.KeyID, testReq.Limits)
	require.NoError(t, err)
	return s.DailyTokens.Used
}

func TestFailoverHealthyPassesThrough(t *testing.T) {
	ctx := t.Context()
	e := newFailoverEnv(t, nil)
	r, err := e.f.Reserve(ctx, testReq)
	require.NoError(t, err)
	assert.False(t, strings.HasPrefix(r.ID, FallbackPrefix))
	require.NoError(t, e.f.Renew(ctx, r))
	require.NoError(t, e.f.Settle(ctx, r, testUsage))
	assert.EqualValues(t, 100, used(t, e.primary.Memory))
	assert.EqualValues(t, 100, used(t, e.f))
	assert.Zero(t, used(t, e.fallback))

	r, err = e.f.Reserve(ctx, testReq)
	require.NoError(t, err)
	require.NoError(t, e.f.Release(ctx, r))
	assert.False(t, e.f.Degraded())
	assert.Empty(t, e.seen())
}

// TestFailoverErrorsThatAreNotOutages: refusals, invalid requests, unknown
// reservations, seeding errors and callers that gave up say nothing about
// the primary's health.
func TestFailoverErrorsThatAreNotOutages(t *testing.T) {
	ctx := t.Context()
	e := newFailoverEnv(t, nil)

	rpm1 := Request{KeyID: "key_rpm", Limits: Limits{RPM: 1}, InputEstimate: 1, MaxTokens: 1}
	_, err := e.f.Reserve(ctx, rpm1)
	require.NoError(t, err)
	_, err = e.f.Reserve(ctx, rpm1)
	var ref *Refusal
	require.ErrorAs(t, err, &ref, "the primary's refusal is passed on")
	assert.ErrorIs(t, err, ErrRateLimited)

	_, err = e.f.Reserve(ctx, Request{})
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = e.f.Standing(ctx, "", Limits{})
	assert.ErrorIs(t, err, ErrInvalid)

	r, err := e.f.Reserve(ctx, testReq)
	require.NoError(t, err)
	require.NoError(t, e.f.Release(ctx, r))
	assert.ErrorIs(t, e.f.Renew(ctx, r), ErrUnknownReservation)

	// A caller that gave up.
	e.primary.down.Store(true)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = e.f.Reserve(cctx, testReq)
	assert.ErrorIs(t, err, errDown)
	e.primary.down.Store(false)

	// Seeding failed (the usage store, marked ErrSeed).
	seedErr := NewFailover(&erring{err: errors.Join(ErrSeed, errDown)}, NewMemory(Config{}), FailoverConfig{})
	_, err = seedErr.Reserve(ctx, testReq)
	assert.ErrorIs(t, err, ErrSeed)
	assert.False(t, seedErr.Degraded())

	assert.False(t, e.f.Degraded())
	assert.Empty(t, e.seen())
	assert.Zero(t, e.logs.count("unavailable"))
}

// erring fails every call with err.
type erring struct{ err error }

func (l *erring) Reserve(context.Context, Request) (Reservation, error) { return Reservation{}, l.err }
func (l *erring) Settle(context.Context, Reservation, Actual) error     { return l.err }
func (l *erring) Release(context.Context, Reservation) error            { return l.err }
func (l *erring) Renew(context.Context, Reservation) error              { return l.err }
func (l *erring) Standing(context.Context, string, Limits) (Standing, error) {
	return Standing{}, l.err
}

func TestFailoverSwitchesToFallback(t *testing.T) {
	ctx := t.Context()
	e := newFailoverEnv(t, nil)
	before, err := e.f.Reserve(ctx, testReq) // the primary's, in flight during the outage
	require.NoError(t, err)

	e.primary.down.Store(true)
	r, err := e.f.Reserve(ctx, testReq)
	require.NoError(t, err, "the request that met the outage is admitted by the fallback")
	assert.True(t, strings.HasPrefix(r.ID, FallbackPrefix), r.ID)
	assert.True(t, e.f.Degraded())
	assert.Equal(t, []bool{true}, e.seen())
	assert.EqualValues(t, 1, e.primary.reserveErrors.Load())

	// Degraded, Reserve and Standing skip the primary (no probe is due).
	for range 10 {
		r2, err := e.f.Reserve(ctx, testReq)
		require.NoError(t, err)
		require.NoError(t, e.f.Release(ctx, r2))
	}
	_, err = e.f.Standing(ctx, testReq.KeyID, testReq.Limits)
	require.NoError(t, err)
	assert.EqualValues(t, 2, e.primary.reserves.Load())
	assert.Zero(t, e.primary.standings.Load())

	// Each reservation goes back to the limiter that made it.
	require.NoError(t, e.f.Renew(ctx, r))
	require.NoError(t, e.f.Settle(ctx, r, testUsage))
	assert.EqualValues(t, 100, used(t, e.fallback))
	assert.ErrorIs(t, e.f.Settle(ctx, before, testUsage), errDown, "the primary's reservation is the primary's")
	assert.EqualValues(t, 1, e.primary.settles.Load())

	assert.Equal(t, []bool{true}, e.seen(), "one transition")
	assert.Equal(t, 1, e.logs.count("primary limiter unavailable"), "logged once")
	assert.Equal(t, 1, e.logs.count("connection refused"), "with its cause")
}

func TestFailoverStandingFailureSwitches(t *testing.T) {
	e := newFailoverEnv(t, nil)
	e.primary.down.Store(true)
	s, err := e.f.Standing(t.Context(), testReq.KeyID, testReq.Limits)
	require.NoError(t, err)
	assert.Equal(t, testReq.KeyID, s.KeyID)
	assert.True(t, e.f.Degraded())
	assert.Equal(t, []bool{true}, e.seen())
}

func TestFailoverSettleFailureSwitches(t *testing.T) {
	ctx := t.Context()
	e := newFailoverEnv(t, nil)
	r, err := e.f.Reserve(ctx, testReq)
	require.NoError(t, err)
	e.primary.down.Store(true)
	assert.ErrorIs(t, e.f.Settle(ctx, r, testUsage), errDown)
	assert.True(t, e.f.Degraded())
	r, err = e.f.Reserve(ctx, testReq)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(r.ID, FallbackPrefix))
	assert.EqualValues(t, 1, e.primary.reserves.Load(), "degraded: the primary is not asked")
}

func TestFailoverFailClosed(t *testing.T) {
	ctx := t.Context()
	e := newFailoverEnv(t, func(c *FailoverConfig) { c.FailClosed = true })
	before, err := e.f.Reserve(ctx, testReq)
	require.NoError(t, err)

	e.primary.down.Store(true)
	_, err = e.f.Reserve(ctx, testReq)
	assert.ErrorIs(t, err, ErrUnavailable)
	assert.ErrorIs(t, err, errDown, "the outage's cause is kept")
	assert.True(t, e.f.Degraded())
	_, err = e.f.Reserve(ctx, testReq)
	assert.ErrorIs(t, err, ErrUnavailable)
	_, err = e.f.Standing(ctx, testReq.KeyID, testReq.Limits)
	assert.ErrorIs(t, err, ErrUnavailable)
	assert.ErrorIs(t, e.f.Release(ctx, before), errDown)
	assert.Equal(t, []bool{true}, e.seen())
	assert.Equal(t, 1, e.logs.count("refusing requests"))

	// Recovery works the same way.
	e.primary.down.Store(false)
	e.clock.Advance(DefaultProbeEvery)
	_, err = e.f.Reserve(ctx, testReq)
	assert.ErrorIs(t, err, ErrUnavailable, "the probe runs in the background")
	e.f.probes.Wait()
	r, err := e.f.Reserve(ctx, testReq)
	require.NoError(t, err)
	assert.False(t, strings.HasPrefix(r.ID, FallbackPrefix))
	assert.Equal(t, []bool{true, false}, e.seen())

	// The primary's error on the call that finds it down is kept as well.
	e2 := newFailoverEnv(t, func(c *FailoverConfig) { c.FailClosed = true })
	e2.primary.down.Store(true)
	_, err = e2.f.Standing(ctx, testReq.KeyID, testReq.Limits)
	assert.ErrorIs(t, err, ErrUnavailable)
	assert.ErrorIs(t, err, errDown)
}

func TestFailoverRecovers(t *testing.T) {
	ctx := t.Context()
	e := newFailoverEnv(t, func(c *FailoverConfig) { c.ProbeEvery = 5 * time.Second })
	e.primary.down.Store(true)
	fbRes, err := e.f.Reserve(ctx, testReq)
	require.NoError(t, err)
	require.True(t, e.f.Degraded())

	// No probe before ProbeEvery, however many requests.
	e.clock.Advance(4 * time.Second)
	for range 5 {
		_, err := e.f.Standing(ctx, testReq.KeyID, testReq.Limits)
		require.NoError(t, err)
	}
	e.f.probes.Wait()
	assert.Zero(t, e.primary.standings.Load())

	// A probe that fails: one per ProbeEvery, counted from its end.
	e.clock.Advance(time.Second)
	for range 5 {
		_, err := e.f.Reserve(ctx, testReq)
		require.NoError(t, err)
	}
	e.f.probes.Wait()
	assert.EqualValues(t, 1, e.primary.standings.Load(), "one probe")
	assert.EqualValues(t, 1, e.primary.reserves.Load(), "probes do not reserve")
	assert.True(t, e.f.Degraded())
	e.clock.Advance(4 * time.Second)
	_, _ = e.f.Reserve(ctx, testReq)
	e.f.probes.Wait()
	assert.EqualValues(t, 1, e.primary.standings.Load())

	// The primary heals; the next due probe finds it.
	e.primary.down.Store(false)
	e.clock.Advance(time.Second)
	r, err := e.f.Reserve(ctx, testReq)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(r.ID, FallbackPrefix), "this request does not wait for the probe")
	e.f.probes.Wait()
	assert.EqualValues(t, 2, e.primary.standings.Load())
	assert.False(t, e.f.Degraded())
	assert.Equal(t, []bool{true, false}, e.seen())
	assert.Equal(t, 1, e.logs.count("recovered"))

	r, err = e.f.Reserve(ctx, testReq)
	require.NoError(t, err)
	assert.False(t, strings.HasPrefix(r.ID, FallbackPrefix), "back on the primary")
	require.NoError(t, e.f.Settle(ctx, r, testUsage))
	assert.EqualValues(t, 100, used(t, e.primary.Memory))

	// A reservation of the outage still goes to the fallback.
	require.NoError(t, e.f.Settle(ctx, fbRes, testUsage))
	assert.EqualValues(t, 100, used(t, e.fallback))
	assert.EqualValues(t, 100, used(t, e.primary.Memory))

	// A second outage is a second pair of transitions.
	e.primary.down.Store(true)
	_, err = e.f.Reserve(ctx, testReq)
	require.NoError(t, err)
	e.primary.down.Store(false)
	e.clock.Advance(5 * time.Second)
	_, err = e.f.Standing(ctx, testReq.KeyID, testReq.Limits)
	require.NoError(t, err)
	e.f.probes.Wait()
	assert.Equal(t, []bool{true, false, true, false}, e.seen())
	assert.Equal(t, 2, e.logs.count("primary limiter unavailable"))
	assert.Equal(t, 2, e.logs.count("recovered"))
}

// TestFailoverTransitionsOnce: many requests meeting one outage at once
// make one transition, and a failure of a call that began before a
// recovery does not undo it.
func TestFailoverTransitionsOnce(t *testing.T) {
	ctx := t.Context()
	e := newFailoverEnv(t, nil)
	e.primary.gate = make(chan struct{})
	e.primary.down.Store(true)

	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			r, err := e.f.Reserve(ctx, testReq)
			if err == nil && !strings.HasPrefix(r.ID, FallbackPrefix) {
				err = errors.New("not the fallback's: " + r.ID)
			}
			errs <- err
		})
	}
	require.Eventually(t, func() bool { return e.primary.reserves.Load() == n }, 5*time.Second, time.Millisecond)
	close(e.primary.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, []bool{true}, e.seen())
	assert.Equal(t, 1, e.logs.count("primary limiter unavailable"))

	// A call begun while healthy, failing only after a recovery.
	e2 := newFailoverEnv(t, nil)
	e2.primary.gate = make(chan struct{})
	e2.primary.down.Store(true)
	slow := make(chan error, 1)
	go func() {
		_, err := e2.f.Reserve(ctx, testReq)
		slow <- err
	}()
	require.Eventually(t, func() bool { return e2.primary.reserves.Load() == 1 }, 5*time.Second, time.Millisecond)
	// Meanwhile another call finds the primary down, and a probe finds it
	// back.
	require.Error(t, e2.f.Settle(ctx, Reservation{ID: "x", KeyID: "key_a"}, testUsage))
	require.True(t, e2.f.Degraded())
	e2.primary.down.Store(false)
	e2.clock.Advance(DefaultProbeEvery)
	_, err := e2.f.Standing(ctx, testReq.KeyID, testReq.Limits)
	require.NoError(t, err)
	e2.f.probes.Wait()
	require.False(t, e2.f.Degraded())
	// Now the slow call fails.
	e2.primary.down.Store(true)
	close(e2.primary.gate)
	require.NoError(t, <-slow, "served by the fallback")
	assert.False(t, e2.f.Degraded(), "a stale failure does not undo the recovery")
	assert.Equal(t, []bool{true, false}, e2.seen())
}

func TestFailoverIsFailure(t *testing.T) {
	e := newFailoverEnv(t, func(c *FailoverConfig) {
		c.IsFailure = func(err error) bool { return !errors.Is(err, errDown) }
	})
	e.primary.down.Store(true)
	_, err := e.f.Reserve(t.Context(), testReq)
	assert.ErrorIs(t, err, errDown)
	assert.False(t, e.f.Degraded())
}

func TestNewFailoverPanics(t *testing.T) {
	assert.Panics(t, func() { NewFailover(nil, NewMemory(Config{}), FailoverConfig{}) })
	assert.Panics(t, func() { NewFailover(NewMemory(Config{}), nil, FailoverConfig{}) })
	assert.NotPanics(t, func() { NewFailover(NewMemory(Config{}), nil, FailoverConfig{FailClosed: true}) })
}

// batchMemory is a Memory that also settles in batches, counting them.
type batchMemory struct {
	*Memory
	batches int
}

func (b *batchMemory) SettleMany(ctx context.Context, rs []Reservation, as []Actual) []error {
	b.batches++
	errs := make([]error, len(rs))
	for i, r := range rs {
		errs[i] = b.Settle(ctx, r, as[i])
	}
	return errs
}

func TestFailoverSettleManyRoutes(t *testing.T) {
	ctx := context.Background()
	primary := &batchMemory{Memory: NewMemory(Config{})}
	fallback := NewMemory(Config{})
	f := NewFailover(primary, fallback, FailoverConfig{})
	l := Limits{MaxConcurrent: 10}
	rp, err := f.Reserve(ctx, Request{KeyID: "k", Limits: l, InputEstimate: 1, MaxTokens: 1})
	if err != nil {
		t.Fatal(err)
	}
	rf, err := fallback.Reserve(ctx, Request{KeyID: "k", Limits: l, InputEstimate: 1, MaxTokens: 1})
	if err != nil {
		t.Fatal(err)
	}
	rf.ID = FallbackPrefix + rf.ID
	errs := f.SettleMany(ctx, []Reservation{rp, rf}, []Actual{{Input: 1}, {Input: 2}})
	if errs[0] != nil || errs[1] != nil || primary.batches != 1 {
		t.Fatalf("errs %v, batches %d", errs, primary.batches)
	}
	for _, lim := range []Limiter{primary, fallback} {
		st, err := lim.Standing(ctx, "k", l)
		if err != nil || st.Concurrency.Used != 0 {
			t.Errorf("a lease was left: %+v %v", st.Concurrency, err)
		}
	}
}
