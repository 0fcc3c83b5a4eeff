package upstream

import (
	"context"
	"errors"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// health is what one attempt's outcome says about the upstream.
type health int

const (
	// hOK: the upstream answered sanely (2xx, 3xx, most 4xx).
	hOK health = iota
	// hNeutral: says nothing either way (409 conflict).
	hNeutral
	// hError: an error in the statistics, not for the breaker (501, 505…).
	hError
	// hFailure: a failure that counts towards a cooldown (408, 5xx, 529,
	// timeouts, connections lost before the headers).
	hFailure
	// hRefused: the upstream is not there (connection refused, no route,
	// no such host): it leaves rotation at once.
	hRefused
	// hRateLimited: 429: the upstream leaves rotation for the model for
	// its retry-after.
	hRateLimited
	// hCredential: 401 or 403: the credential may be bad; after
	// CooldownPolicy.AuthFailures in a row the upstream leaves rotation
	// until an admin enables it.
	hCredential
)

// classifyStatus judges an answer: what it says about the upstream, and
// whether the call may retry it (408, 409, 429, 500, 502, 503, 504, 529,
// and 401/403 on another upstream; x-should-retry overrides the status
// list, as the SDKs let it).
func classifyStatus(resp *http.Response) (h health, retry bool) {
	switch s := resp.StatusCode; {
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		// Whatever x-should-retry says: this account is unusable, another
		// one may be fine.
		return hCredential, true
	case s == http.StatusTooManyRequests:
		h, retry = hRateLimited, true
	case s == http.StatusConflict:
		h, retry = hNeutral, true
	case s == http.StatusRequestTimeout, s == http.StatusInternalServerError, s == http.StatusBadGateway,
		s == http.StatusServiceUnavailable, s == http.StatusGatewayTimeout, s == 529:
		h, retry = hFailure, true
	case s >= 500:
		h = hError
	}
	switch resp.Header.Get("X-Should-Retry") {
	case "false":
		retry = false
	case "true":
		retry = true
	}
	return h, retry
}

// classifyError judges a transport error; every one is retryable.
func classifyError(err error) health {
	if refused(err) {
		return hRefused
	}
	return hFailure
}

// refused reports whether err means the upstream is not there at all: the
// connection was refused, the host is unreachable or does not resolve.
// Such an upstream leaves rotation at once rather than after several
// failures.
func refused(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var dns *net.DNSError
	if errors.As(err, &dns) && dns.IsNotFound {
		return true
	}
	return false
}

// isTimeout reports whether err is a timeout: dial, TLS handshake,
// response headers.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errHeaderTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// errHeaderTimeout is the cause of an attempt cut by its
// ResponseHeaderTimeout.
var errHeaderTimeout = timeoutError("upstream: timeout awaiting response headers")

type timeoutError string

func (e timeoutError) Error() string { return string(e) }
func (e timeoutError) Timeout() bool { return true }

// Temporary is part of net.Error.
func (e timeoutError) Temporary() bool { return true }

// maxRetryAfter bounds what is parsed: beyond a day it is nonsense.
const maxRetryAfter = 24 * time.Hour

// retryAfter reads how long the upstream asks to wait: retry-after-ms
// first, then retry-after in seconds (fractions allowed, as the SDKs do)
// or as an HTTP date. ok is false when neither is present and valid.
func retryAfter(h http.Header, now time.Time) (d time.Duration, ok bool) {
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms >= 0 && !math.IsInf(ms, 0) {
			return capDuration(ms * float64(time.Millisecond)), true
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs < 0 || math.IsInf(secs, 0) || math.IsNaN(secs) {
			return 0, false
		}
		return capDuration(secs * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter), true
	}
	return 0, false
}

// capDuration converts nanoseconds to a Duration no longer than
// maxRetryAfter, in floating point so that huge values cannot overflow.
func capDuration(ns float64) time.Duration {
	if ns >= float64(maxRetryAfter) {
		return maxRetryAfter
	}
	return time.Duration(ns)
}

// backoff is the full-jitter wait before retry n (1 for the first retry):
// uniform in [0, min(Cap, Base·2^(n-1))).
func backoff(p *RetryPolicy, n int, rnd float64) time.Duration {
	d := p.Base
	for i := 1; i < n && d < p.Cap; i++ {
		d *= 2
	}
	d = min(d, p.Cap)
	return time.Duration(rnd * float64(d))
}

// sleep waits d unless ctx ends first.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
