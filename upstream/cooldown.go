package upstream

import "time"

// breaker decides whether an upstream (or an upstream for one model) is in
// rotation. Closed, it counts failures in a row; at the threshold, or at
// once for a refused connection or a 429, it opens for a cooldown. When
// the cooldown is over it is half-open: exactly one live request (the
// probe) goes through, and its verdict closes the breaker or opens it again
// for twice as long, up to the cap.
//
// Answers to requests that were already in flight when the breaker opened
// change nothing while it is open: a burst of failures from streams started
// earlier must not stretch one cooldown into many, and a success that
// started before the trouble proves nothing about now.
//
// A breaker is guarded by the Pool's mutex.
type breaker struct {
	fails   int       // failures in a row while closed
	trips   int       // cooldowns in a row without a success in between
	until   time.Time // zero: closed; else open, and half-open from then on
	probing bool      // the half-open probe is in flight
}

// isOpen reports whether the breaker is open or half-open.
func (b *breaker) isOpen() bool { return !b.until.IsZero() }

// admits reports whether a request may go through at now, and whether it
// would be the half-open probe. When it may not, wait is how long until the
// cooldown ends (zero while a probe is in flight: unknown).
func (b *breaker) admits(now time.Time) (ok, probe bool, wait time.Duration) {
	switch {
	case b.until.IsZero():
		return true, false, 0
	case now.Before(b.until):
		return false, false, b.until.Sub(now)
	case b.probing:
		return false, false, 0
	}
	return true, true, 0
}

// success records a healthy answer; it reports whether the breaker closed
// (the probe succeeded).
func (b *breaker) success(probe bool) (closed bool) {
	if b.isOpen() {
		if !probe {
			return false
		}
		*b = breaker{}
		return true
	}
	b.fails, b.trips = 0, 0
	return false
}

// failure records a failure. With immediate the breaker opens at once;
// retryAfter, when positive, is the cooldown the upstream asked for
// (capped at pol.Max), else the cooldown grows exponentially. It reports
// the cooldown when the breaker opened.
func (b *breaker) failure(now time.Time, pol *CooldownPolicy, probe, immediate bool, retryAfter time.Duration) (opened bool, d time.Duration) {
	if b.isOpen() {
		if !probe {
			return false, 0
		}
	} else {
		b.fails++
		if !immediate && b.fails < pol.Failures {
			return false, 0
		}
	}
	d = retryAfter
	if d <= 0 {
		d = pol.Base
		for i := 0; i < b.trips && d < pol.Max; i++ {
			d *= 2
		}
	}
	d = min(d, pol.Max)
	b.trips++
	b.fails = 0
	b.until = now.Add(d)
	b.probing = false
	return true, d
}

// abandon gives up a probe that reached no verdict (the client went away),
// so that the next request probes instead.
func (b *breaker) abandon(probe bool) {
	if probe {
		b.probing = false
	}
}
