package quota

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// This file is the arithmetic every Limiter backend shares: amounts,
// calendar windows, sliding minutes, the admission check, standings and
// refusals. A backend keeps a State per key and applies the same rules
// atomically (the Redis limiter mirrors them in Lua); the relay itself
// never needs anything here.

// RateInterval is the width of the RPM and TPM windows.
const RateInterval = time.Minute

const rateWindowMs = int64(RateInterval / time.Millisecond)

// State is one key's counters, as a Limiter backend keeps them.
type State struct {
	// Lifetime is the key's counted tokens, ever.
	Lifetime int64
	// Day, Week and Month are the current calendar windows' usage.
	Day, Week, Month Window
	// ReservedTokens and ReservedCostMicros are held by reservations in
	// flight; they count against every token (cost) budget at once.
	ReservedTokens, ReservedCostMicros int64
	// Requests and Tokens are the RPM and TPM sliding windows. Tokens
	// counts requests in flight at their reserved size.
	Requests, Tokens RateWindow
	// InFlight is the number of live reservations (concurrency leases).
	InFlight int64
}

// Window is the usage of one calendar window.
type Window struct {
	// Start is the window's first instant, in Unix seconds; it identifies
	// the window.
	Start      int64
	Tokens     int64
	CostMicros int64
}

// RateWindow is a sliding-window counter: the count of the current minute
// and of the one before. The count at an instant e milliseconds into the
// current minute is Previous·(60000−e)/60000 (rounded down) + Current,
// which approximates a true sliding minute without keeping every event.
type RateWindow struct {
	// Minute is the current minute, as Unix milliseconds / 60000.
	Minute            int64
	Current, Previous int64
}

// Count is the sliding count at nowMs (Unix milliseconds).
func (w RateWindow) Count(nowMs int64) int64 {
	el := min(max(nowMs-w.Minute*rateWindowMs, 0), rateWindowMs-1)
	return w.Previous*(rateWindowMs-el)/rateWindowMs + w.Current
}

// MinuteOf returns the minute index of t: Unix milliseconds / 60000,
// rounded down.
func MinuteOf(t time.Time) int64 { return floorDiv(t.UnixMilli(), rateWindowMs) }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// Period is a calendar window: [Start, End).
type Period struct{ Start, End time.Time }

// Periods are the calendar windows that contain an instant.
type Periods struct{ Day, Week, Month Period }

// Amounts are what one request holds or is charged, in each unit.
type Amounts struct {
	Tokens         int64 // counted against the token budgets
	CostMicros     int64 // counted against the cost budgets
	RateTokens     int64 // counted against TPM
	OutputReserved int64 // the output part of a reservation
}

// Rules applies one Config: what a request reserves and is charged, the
// calendar windows, the admission check, standings and refusals. Limiter
// backends (Memory, storage/redis) share it so that they answer alike;
// the relay itself needs none of it. It is safe for concurrent use.
type Rules struct {
	cfg   Config
	cache atomic.Pointer[Periods]
}

// NewRules returns the rules of cfg, its zero fields set to their defaults.
func NewRules(cfg Config) *Rules { return &Rules{cfg: cfg.withDefaults()} }

// Config returns the configuration with defaults applied.
func (r *Rules) Config() Config { return r.cfg }

// Now is Config.Now.
func (r *Rules) Now() time.Time { return r.cfg.Now() }

// Periods returns the day, week and month that contain t in
// Config.Location. Days start at local midnight, weeks at midnight of
// Config.WeekStart, months at midnight of the 1st; on days with a DST
// change a day is 23 or 25 hours long.
func (r *Rules) Periods(t time.Time) Periods {
	if p := r.cache.Load(); p != nil && !t.Before(p.Day.Start) && t.Before(p.Day.End) {
		return *p
	}
	p := periods(t, r.cfg.Location, *r.cfg.WeekStart)
	r.cache.Store(&p)
	return p
}

func periods(t time.Time, loc *time.Location, weekStart time.Weekday) Periods {
	lt := t.In(loc)
	y, m, d := lt.Date()
	at := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, loc) }
	back := (int(lt.Weekday()) - int(weekStart) + 7) % 7
	return Periods{
		Day:   Period{at(y, m, d), at(y, m, d+1)},
		Week:  Period{at(y, m, d-back), at(y, m, d-back+7)},
		Month: Period{at(y, m, 1), at(y, m+1, 1)},
	}
}

// Amounts returns what req reserves: the input estimate (when any prompt
// kind counts) plus min(max_tokens, OutputCap) (when output counts), for
// token budgets and TPM alike, and its cost estimate. Invalid requests
// are ErrInvalid.
func (r *Rules) Amounts(req Request) (Amounts, error) {
	if req.KeyID == "" {
		return Amounts{}, fmt.Errorf("%w: KeyID is required", ErrInvalid)
	}
	if req.InputEstimate < 0 || req.CostEstimateMicros < 0 {
		return Amounts{}, fmt.Errorf("%w: negative estimate", ErrInvalid)
	}
	out := r.cfg.OutputReservation(req.MaxTokens)
	return Amounts{
		Tokens:         reserveCount(r.cfg.Counted, req.InputEstimate, out),
		CostMicros:     req.CostEstimateMicros,
		RateTokens:     reserveCount(r.cfg.RateCounted, req.InputEstimate, out),
		OutputReserved: out,
	}, nil
}

func reserveCount(k Kinds, in, out int64) int64 {
	var n int64
	if k&promptKinds != 0 {
		n += in
	}
	if k&Output != 0 {
		n += out
	}
	return n
}

// Charge returns what real usage counts. Negative counts are ErrInvalid.
func (r *Rules) Charge(a Actual) (Amounts, error) {
	if a.Input < 0 || a.Output < 0 || a.CacheCreation < 0 || a.CacheRead < 0 || a.CostMicros < 0 {
		return Amounts{}, fmt.Errorf("%w: negative usage", ErrInvalid)
	}
	return Amounts{
		Tokens:     r.cfg.Counted.Count(a.Input, a.Output, a.CacheCreation, a.CacheRead),
		CostMicros: a.CostMicros,
		RateTokens: r.cfg.RateCounted.Count(a.Input, a.Output, a.CacheCreation, a.CacheRead),
	}, nil
}

// Seed returns the State of a key seen for the first time at now, from
// Config.Seed (all zero without one).
func (r *Rules) Seed(ctx context.Context, keyID string, now time.Time) (State, error) {
	p := r.Periods(now)
	var s State
	s.Day.Start, s.Week.Start, s.Month.Start = p.Day.Start.Unix(), p.Week.Start.Unix(), p.Month.Start.Unix()
	s.Requests.Minute = MinuteOf(now)
	s.Tokens.Minute = s.Requests.Minute
	if r.cfg.Seed == nil {
		return s, nil
	}
	var err error
	if s.Lifetime, _, err = r.cfg.Seed(ctx, keyID, time.Time{}); err != nil {
		return State{}, fmt.Errorf("%w: key %s: %w", ErrSeed, keyID, err)
	}
	for _, w := range [...]struct {
		w     *Window
		since time.Time
	}{{&s.Month, p.Month.Start}, {&s.Week, p.Week.Start}, {&s.Day, p.Day.Start}} {
		if w.w.Tokens, w.w.CostMicros, err = r.cfg.Seed(ctx, keyID, w.since); err != nil {
			return State{}, fmt.Errorf("%w: key %s: %w", ErrSeed, keyID, err)
		}
	}
	return s, nil
}

// Roll moves s's windows forward to now: a calendar window that ended
// starts again from zero, the minute windows slide. Windows never move
// backwards, so an instance whose clock lags cannot undo another's
// rollover.
func (r *Rules) Roll(s *State, now time.Time) {
	p := r.Periods(now)
	rollWindow(&s.Day, p.Day.Start.Unix())
	rollWindow(&s.Week, p.Week.Start.Unix())
	rollWindow(&s.Month, p.Month.Start.Unix())
	m := MinuteOf(now)
	rollRate(&s.Requests, m)
	rollRate(&s.Tokens, m)
}

func rollWindow(w *Window, start int64) {
	if start > w.Start {
		*w = Window{Start: start}
	}
}

func rollRate(w *RateWindow, m int64) {
	if m <= w.Minute {
		return
	}
	if m == w.Minute+1 {
		w.Previous = w.Current
	} else {
		w.Previous = 0
	}
	w.Current, w.Minute = 0, m
}

// budgetRow is one budget as the check sees it.
type budgetRow struct {
	name                        string
	limit, used, reserved, need int64
	reset                       time.Time
}

func (r *Rules) budgets(l Limits, s *State, a Amounts, p Periods) [7]budgetRow {
	return [7]budgetRow{
		{BudgetTokenLimit, l.TokenLimit, s.Lifetime, s.ReservedTokens, a.Tokens, time.Time{}},
		{BudgetMonthlyTokens, l.MonthlyTokens, s.Month.Tokens, s.ReservedTokens, a.Tokens, p.Month.End},
		{BudgetMonthlyCost, l.MonthlyCostMicros, s.Month.CostMicros, s.ReservedCostMicros, a.CostMicros, p.Month.End},
		{BudgetWeeklyTokens, l.WeeklyTokens, s.Week.Tokens, s.ReservedTokens, a.Tokens, p.Week.End},
		{BudgetWeeklyCost, l.WeeklyCostMicros, s.Week.CostMicros, s.ReservedCostMicros, a.CostMicros, p.Week.End},
		{BudgetDailyTokens, l.DailyTokens, s.Day.Tokens, s.ReservedTokens, a.Tokens, p.Day.End},
		{BudgetDailyCost, l.DailyCostMicros, s.Day.CostMicros, s.ReservedCostMicros, a.CostMicros, p.Day.End},
	}
}

// fits is the admission rule of a budget: something must be left, and
// the request's reservation must fit in it.
func fits(limit, used, reserved, need int64) bool {
	if limit <= 0 {
		return true
	}
	rem := limit - used - reserved
	return rem > 0 && need <= rem
}

// Check decides whether a request reserving a fits s (rolled to now)
// under l; nil admits it. Refusals, in order of precedence:
//
//  1. Budget (402): a budget whose limit the request's reservation would
//     pass even if every request in flight used nothing. Of several, the
//     one that resets last is named.
//  2. InFlight (429): a budget with room that requests in flight hold.
//  3. Concurrency (429): MaxConcurrent requests in flight.
//  4. RateLimit (429), RPM: the sliding count + 1 passes RPM.
//  5. RateLimit (429), TPM: the sliding count + the reserved tokens pass
//     TPM. A request larger than TPM is admitted when the window is empty,
//     so an oversized request waits rather than being refused forever.
func (r *Rules) Check(keyID string, l Limits, s *State, a Amounts, now time.Time) *Refusal {
	p := r.Periods(now)
	var hard, soft *budgetRow
	rows := r.budgets(l, s, a, p)
	for i := range rows {
		b := &rows[i]
		if fits(b.limit, b.used, b.reserved, b.need) {
			continue
		}
		if b.used >= b.limit || b.used+b.need > b.limit {
			if hard == nil || later(b.reset, hard.reset) {
				hard = b
			}
		} else if soft == nil {
			soft = b
		}
	}
	mk := func(reason Reason, name string, limit, remaining, requested int64, reset time.Time, after time.Duration) *Refusal {
		return &Refusal{Reason: reason, Budget: name, Limit: limit, Remaining: remaining, Requested: requested,
			ResetAt: reset, RetryAfter: after, Standing: r.Standing(keyID, l, *s, now), loc: r.cfg.Location}
	}
	switch {
	case hard != nil:
		var after time.Duration
		if !hard.reset.IsZero() {
			after = hard.reset.Sub(now)
		}
		return mk(Budget, hard.name, hard.limit, max(0, hard.limit-hard.used-hard.reserved), hard.need, hard.reset, after)
	case soft != nil:
		return mk(InFlight, soft.name, soft.limit, max(0, soft.limit-soft.used-soft.reserved), soft.need, soft.reset, r.cfg.BusyRetryAfter)
	case l.MaxConcurrent > 0 && s.InFlight >= l.MaxConcurrent:
		return mk(Concurrency, BudgetConcurrency, l.MaxConcurrent, 0, 1, time.Time{}, r.cfg.BusyRetryAfter)
	}
	nowMs := now.UnixMilli()
	if c := s.Requests.Count(nowMs); l.RPM > 0 && c+1 > l.RPM {
		wait := rateWait(s.Requests, l.RPM, 1, nowMs)
		return mk(RateLimit, BudgetRPM, l.RPM, max(0, l.RPM-c), 1, now.Add(wait), wait)
	}
	if c := s.Tokens.Count(nowMs); l.TPM > 0 && c > 0 && c+a.RateTokens > l.TPM {
		wait := rateWait(s.Tokens, l.TPM, a.RateTokens, nowMs)
		return mk(RateLimit, BudgetTPM, l.TPM, max(0, l.TPM-c), a.RateTokens, now.Add(wait), wait)
	}
	return nil
}

// later reports whether a is after b, the zero time meaning never.
func later(a, b time.Time) bool {
	switch {
	case b.IsZero():
		return false
	case a.IsZero():
		return true
	}
	return a.After(b)
}

// rateWait is how long until a request of n fits the window w under
// limit, if nothing else arrives: until Count+n <= limit, or, for n >
// limit, until Count == 0.
func rateWait(w RateWindow, limit, n, nowMs int64) time.Duration {
	const W = rateWindowMs
	target := max(limit-n, 0)
	start := w.Minute * W
	el := min(max(nowMs-start, 0), W-1)
	var at int64 // milliseconds after start
	// firstBelow is the first offset t in a minute at which
	// floor(p·(W−t)/W) <= k: p·(W−t) < (k+1)·W.
	firstBelow := func(p, k int64) int64 {
		if p <= k {
			return 0
		}
		return max(W-ceilDiv((k+1)*W, p)+1, 0)
	}
	if w.Current <= target {
		at = min(max(firstBelow(w.Previous, target-w.Current), el+1), W)
	} else {
		at = W + firstBelow(w.Current, target)
	}
	return time.Duration(at-el) * time.Millisecond
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// Standing builds the key's standing from s at now (s is rolled to now
// first, on a copy).
func (r *Rules) Standing(keyID string, l Limits, s State, now time.Time) Standing {
	r.Roll(&s, now)
	p := r.Periods(now)
	nowMs := now.UnixMilli()
	return Standing{
		KeyID:         keyID,
		At:            now,
		TokenLimit:    entry(l.TokenLimit, s.Lifetime, s.ReservedTokens, time.Time{}),
		DailyTokens:   entry(l.DailyTokens, s.Day.Tokens, s.ReservedTokens, p.Day.End),
		WeeklyTokens:  entry(l.WeeklyTokens, s.Week.Tokens, s.ReservedTokens, p.Week.End),
		MonthlyTokens: entry(l.MonthlyTokens, s.Month.Tokens, s.ReservedTokens, p.Month.End),
		DailyCost:     entry(l.DailyCostMicros, s.Day.CostMicros, s.ReservedCostMicros, p.Day.End),
		WeeklyCost:    entry(l.WeeklyCostMicros, s.Week.CostMicros, s.ReservedCostMicros, p.Week.End),
		MonthlyCost:   entry(l.MonthlyCostMicros, s.Month.CostMicros, s.ReservedCostMicros, p.Month.End),
		RPM:           entry(l.RPM, s.Requests.Count(nowMs), 0, replenished(s.Requests, now)),
		TPM:           entry(l.TPM, s.Tokens.Count(nowMs), 0, replenished(s.Tokens, now)),
		Concurrency:   entry(l.MaxConcurrent, s.InFlight, 0, time.Time{}),
	}
}

// replenished is when w will count nothing, if nothing else arrives.
func replenished(w RateWindow, now time.Time) time.Time {
	switch {
	case w.Current > 0:
		return time.UnixMilli((w.Minute + 2) * rateWindowMs)
	case w.Previous > 0:
		return time.UnixMilli((w.Minute + 1) * rateWindowMs)
	}
	return now
}

// Reserve applies an admitted reservation of a to s.
func (s *State) Reserve(a Amounts) {
	s.ReservedTokens += a.Tokens
	s.ReservedCostMicros += a.CostMicros
	s.Requests.Current++
	s.Tokens.Current += a.RateTokens
	s.InFlight++
}

// Return gives back a live reservation's budget holds and lease (as its
// expiry does; RPM and TPM keep what was counted).
func (s *State) Return(res Reservation) {
	s.ReservedTokens = max(0, s.ReservedTokens-res.Tokens)
	s.ReservedCostMicros = max(0, s.ReservedCostMicros-res.CostMicros)
	s.InFlight = max(0, s.InFlight-1)
}

// Settle charges a request's real usage (as Rules.Charge counts it) for
// reservation res, whose window starts are resWin (Unix seconds of the
// reservation's day, week and month): live says whether res still held
// its amounts (see Return). Usage lands in the windows of the
// reservation; TPM is corrected by the difference to what was reserved, in
// the reservation's minute while it is in the window, else (a positive
// difference only) in the current minute.
func (s *State) Settle(res Reservation, resWin [3]int64, live bool, act Amounts) {
	if live {
		s.Return(res)
	}
	s.Lifetime += act.Tokens
	for i, w := range [...]*Window{&s.Day, &s.Week, &s.Month} {
		if resWin[i] >= w.Start {
			w.Tokens += act.Tokens
			w.CostMicros += act.CostMicros
		}
	}
	adjustRate(&s.Tokens, MinuteOf(res.At), act.RateTokens-res.RateTokens, true)
}

// Release returns everything a live reservation holds, its request in
// RPM and tokens in TPM included.
func (s *State) Release(res Reservation) {
	s.Return(res)
	m := MinuteOf(res.At)
	adjustRate(&s.Requests, m, -1, false)
	adjustRate(&s.Tokens, m, -res.RateTokens, false)
}

func adjustRate(w *RateWindow, minute, delta int64, late bool) {
	switch {
	case minute >= w.Minute:
		w.Current = max(0, w.Current+delta)
	case minute == w.Minute-1:
		w.Previous = max(0, w.Previous+delta)
	case late && delta > 0:
		w.Current += delta
	}
}

// Windows returns the starts (Unix seconds) of the day, week and month of
// t, as State.Settle wants them.
func (r *Rules) Windows(t time.Time) [3]int64 {
	p := r.Periods(t)
	return [3]int64{p.Day.Start.Unix(), p.Week.Start.Unix(), p.Month.Start.Unix()}
}
