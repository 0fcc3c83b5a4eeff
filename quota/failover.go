package quota

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// ErrUnavailable: the limiter cannot decide and the relay was told to fail
// closed (FailoverConfig.FailClosed); answer 503 overloaded_error.
// Retrying later can succeed.
var ErrUnavailable = errors.New("quota: limiter unavailable")

// ErrSeed marks an error of Config.Seed (the usage store, not the
// limiter's own store). A Failover does not take it for an outage of its
// primary: the fallback would need the same Seed. Wrap a SeedFunc's errors
// with it (fmt.Errorf("%w: %w", quota.ErrSeed, err)) where the usage store
// is separate from the limiter's.
var ErrSeed = errors.New("quota: seeding failed")

// FallbackPrefix starts the ID of every Reservation a Failover's fallback
// made, so that Settle, Release and Renew find their way back to it, even
// after the primary recovered. The primary's IDs must not start with it
// (Memory's and storage/redis's do not).
const FallbackPrefix = "fb:"

// Defaults of FailoverConfig.
const (
	DefaultProbeEvery   = time.Second
	DefaultProbeTimeout = 2 * time.Second
)

// FailoverConfig configures a Failover. The zero value fails open with the
// defaults below.
type FailoverConfig struct {
	// FailClosed makes a degraded Failover refuse to decide: Reserve and
	// Standing return an error matching ErrUnavailable (503) instead of
	// asking the fallback. Right when overspending during an outage costs
	// more than refusing traffic. The fallback may then be nil.
	FailClosed bool
	// ProbeEvery is how often, at most, a degraded Failover tries the
	// primary again. Zero means DefaultProbeEvery.
	ProbeEvery time.Duration
	// ProbeTimeout bounds one probe. Zero means DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// IsFailure reports whether an error of the primary means it is down.
	// Nil means any error except a *Refusal, ErrInvalid,
	// ErrUnknownReservation and ErrSeed. Errors of a call whose context
	// ended are never failures: the caller gave up, not the primary.
	IsFailure func(err error) bool
	// Logger receives one line per transition; nil discards.
	Logger *slog.Logger
	// OnTransition, if set, is called once per transition, with true when
	// the Failover becomes degraded and false when it recovers (for a
	// metric or a health check). It is called with the Failover's state
	// lock held, so that calls arrive in order: it must return quickly and
	// must not call the Failover.
	OnTransition func(degraded bool)
	// Now returns the current time, for the probe schedule; nil means
	// time.Now.
	Now func() time.Time
}

// Failover is a Limiter that decides what happens when its primary (the
// Redis limiter shared by every instance) cannot be reached.
//
// Healthy, it passes every call to the primary. The first call whose error
// is a failure (see FailoverConfig.IsFailure; a refusal never is) makes it
// degraded: that call and every Reserve and Standing after it go to the
// fallback (an in-process Memory: each instance then enforces the limits
// alone, so rate limits are per instance, and usage charged during the
// outage never reaches the primary's counters) or, with FailClosed, fail
// with ErrUnavailable. Degraded, it probes the primary at most once per
// ProbeEvery, in the background, with a Standing of the key at hand (no
// request waits for a probe), and is healthy again after the first probe
// that succeeds.
//
// A reservation is always finished (Settle, Release, Renew) by the limiter
// that made it: the fallback's IDs carry FallbackPrefix. Finishing one of
// the primary's while the primary is down fails; its hold ends with its
// TTL and its usage is not charged to the primary's counters (the usage
// records still hold it).
//
// A Failover is safe for concurrent use.
type Failover struct {
	primary, fallback Limiter
	cfg               FailoverConfig
	isFailure         func(error) bool
	now               func() time.Time
	log               *slog.Logger

	mu        sync.Mutex
	degraded  bool
	epoch     uint64 // counts transitions, so a failure seen late cannot undo a recovery
	nextProbe time.Time
	probing   bool
	probes    sync.WaitGroup
}

var _ Limiter = (*Failover)(nil)

// NewFailover returns a healthy Failover. It panics if primary is nil, or
// fallback is nil without FailClosed.
func NewFailover(primary, fallback Limiter, cfg FailoverConfig) *Failover {
	if primary == nil {
		panic("quota: NewFailover: nil primary")
	}
	if fallback == nil && !cfg.FailClosed {
		panic("quota: NewFailover: nil fallback needs FailClosed")
	}
	if cfg.ProbeEvery <= 0 {
		cfg.ProbeEvery = DefaultProbeEvery
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	f := &Failover{primary: primary, fallback: fallback, cfg: cfg,
		isFailure: cfg.IsFailure, now: cfg.Now, log: cfg.Logger}
	if f.isFailure == nil {
		f.isFailure = isOutage
	}
	if f.now == nil {
		f.now = time.Now
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	return f
}

// isOutage is the default FailoverConfig.IsFailure.
func isOutage(err error) bool {
	var r *Refusal
	return !errors.As(err, &r) &&
		!errors.Is(err, ErrInvalid) &&
		!errors.Is(err, ErrUnknownReservation) &&
		!errors.Is(err, ErrSeed)
}

// Degraded reports whether the primary is considered down.
func (f *Failover) Degraded() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.degraded
}

// Reserve implements Limiter.
func (f *Failover) Reserve(ctx context.Context, req Request) (Reservation, error) {
	healthy, epoch := f.state(ctx, req.KeyID, req.Limits)
	if healthy {
		r, err := f.primary.Reserve(ctx, req)
		if !f.failed(ctx, epoch, err) {
			return r, err
		}
		if f.cfg.FailClosed {
			return Reservation{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	} else if f.cfg.FailClosed {
		return Reservation{}, ErrUnavailable
	}
	r, err := f.fallback.Reserve(ctx, req)
	if err != nil {
		return Reservation{}, err
	}
	r.ID = FallbackPrefix + r.ID
	return r, nil
}

// Settle implements Limiter.
func (f *Failover) Settle(ctx context.Context, r Reservation, actual Actual) error {
	return f.finish(ctx, r, func(l Limiter, r Reservation) error { return l.Settle(ctx, r, actual) })
}

// BatchSettler is implemented by limiters that can settle several
// reservations in one round trip (storage/redis.Limiter).
type BatchSettler interface {
	SettleMany(ctx context.Context, rs []Reservation, actuals []Actual) []error
}

// SettleMany settles rs, each with the limiter that made it: the
// fallback's one by one (they are in process), the primary's in one batch
// when it can batch.
func (f *Failover) SettleMany(ctx context.Context, rs []Reservation, actuals []Actual) []error {
	errs := make([]error, len(rs))
	var pr []Reservation
	var pa []Actual
	var at []int
	for i, r := range rs {
		if _, fb := strings.CutPrefix(r.ID, FallbackPrefix); fb && f.fallback != nil {
			errs[i] = f.Settle(ctx, r, actuals[i])
			continue
		}
		pr, pa, at = append(pr, r), append(pa, actuals[i]), append(at, i)
	}
	if len(pr) == 0 {
		return errs
	}
	b, ok := f.primary.(BatchSettler)
	if !ok {
		for j, r := range pr {
			errs[at[j]] = f.Settle(ctx, r, pa[j])
		}
		return errs
	}
	f.mu.Lock()
	epoch := f.epoch
	f.mu.Unlock()
	for j, err := range b.SettleMany(ctx, pr, pa) {
		errs[at[j]] = err
		f.failed(ctx, epoch, err)
	}
	return errs
}

// Release implements Limiter.
func (f *Failover) Release(ctx context.Context, r Reservation) error {
	return f.finish(ctx, r, func(l Limiter, r Reservation) error { return l.Release(ctx, r) })
}

// Renew implements Limiter.
func (f *Failover) Renew(ctx context.Context, r Reservation) error {
	return f.finish(ctx, r, func(l Limiter, r Reservation) error { return l.Renew(ctx, r) })
}

// finish runs op on the limiter that made r, whatever the current state.
func (f *Failover) finish(ctx context.Context, r Reservation, op func(Limiter, Reservation) error) error {
	if id, ok := strings.CutPrefix(r.ID, FallbackPrefix); ok && f.fallback != nil {
		r.ID = id
		return op(f.fallback, r)
	}
	f.mu.Lock()
	epoch := f.epoch
	f.mu.Unlock()
	err := op(f.primary, r)
	f.failed(ctx, epoch, err)
	return err
}

// Standing implements Limiter.
func (f *Failover) Standing(ctx context.Context, keyID string, l Limits) (Standing, error) {
	healthy, epoch := f.state(ctx, keyID, l)
	if healthy {
		s, err := f.primary.Standing(ctx, keyID, l)
		if !f.failed(ctx, epoch, err) {
			return s, err
		}
		if f.cfg.FailClosed {
			return Standing{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	} else if f.cfg.FailClosed {
		return Standing{}, ErrUnavailable
	}
	return f.fallback.Standing(ctx, keyID, l)
}

// state reports whether the primary is to be asked, and the epoch to
// report its failure against. Degraded, it starts a probe when one is due.
func (f *Failover) state(ctx context.Context, keyID string, l Limits) (healthy bool, epoch uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.degraded {
		return true, f.epoch
	}
	if !f.probing && keyID != "" && !f.now().Before(f.nextProbe) {
		f.probing = true
		f.probes.Add(1)
		go f.probe(context.WithoutCancel(ctx), f.epoch, keyID, l)
	}
	return false, f.epoch
}

// probe asks the primary for a key's standing, which changes nothing, and
// ends the degraded epoch if it answers.
func (f *Failover) probe(ctx context.Context, epoch uint64, keyID string, l Limits) {
	defer f.probes.Done()
	ctx, cancel := context.WithTimeout(ctx, f.cfg.ProbeTimeout)
	defer cancel()
	_, err := f.primary.Standing(ctx, keyID, l)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probing = false
	if err != nil && f.isFailure(err) {
		f.nextProbe = f.now().Add(f.cfg.ProbeEvery)
		f.log.Debug("quota: primary limiter still unavailable", "error", err)
		return
	}
	if !f.degraded || f.epoch != epoch {
		return
	}
	f.degraded = false
	f.epoch++
	f.log.Info("quota: primary limiter recovered; limits are shared again")
	if f.cfg.OnTransition != nil {
		f.cfg.OnTransition(false)
	}
}

// failed reports whether err, of a call to the primary made in epoch, is
// a failure, and if so makes the Failover degraded (once per epoch).
func (f *Failover) failed(ctx context.Context, epoch uint64, err error) bool {
	if err == nil || ctx.Err() != nil || !f.isFailure(err) {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.degraded || f.epoch != epoch {
		// Already degraded, or the call began before a recovery that
		// a later probe saw: it says nothing about the primary now.
		return true
	}
	f.degraded = true
	f.epoch++
	f.nextProbe = f.now().Add(f.cfg.ProbeEvery)
	if f.cfg.FailClosed {
		f.log.Error("quota: primary limiter unavailable; refusing requests (503) until it recovers", "error", err)
	} else {
		f.log.Warn("quota: primary limiter unavailable; limits are enforced per instance until it recovers", "error", err)
	}
	if f.cfg.OnTransition != nil {
		f.cfg.OnTransition(true)
	}
	return true
}
