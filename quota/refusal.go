package quota

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/relaystation/relay/internal/apierror"
)

// Reason says why a request was refused.
type Reason int

const (
	// RateLimit: RPM or TPM. 429.
	RateLimit Reason = iota + 1
	// Concurrency: the key has MaxConcurrent requests in flight. 429.
	Concurrency
	// Budget: a token or cost budget is used up: even if every request in
	// flight used nothing, this one's reservation would not fit. 402.
	Budget
	// InFlight: the budget has room for this request, but requests in
	// flight hold it; it fits again as soon as they settle below their
	// reservations. 429, so clients retry instead of giving up.
	InFlight
)

func (r Reason) String() string {
	switch r {
	case RateLimit:
		return "rate_limit"
	case Concurrency:
		return "concurrency"
	case Budget:
		return "budget"
	case InFlight:
		return "in_flight"
	}
	return "unknown"
}

// Refusal is the error of a refused Reserve. Units follow the budget:
// tokens, micro-dollars for the *_cost budgets, requests for rpm and
// concurrency.
type Refusal struct {
	Reason Reason
	// Budget names the limit: BudgetTokenLimit, BudgetDailyCost, BudgetRPM…
	Budget string
	// Limit is the budget's limit; Remaining what is left of it (limit -
	// used - reserved, at least 0); Requested what this request needed.
	Limit, Remaining, Requested int64
	// ResetAt is when the budget's window resets (zero for token_limit,
	// which never does, and for concurrency); for RPM and TPM, when this
	// request would fit (the refusal's time + RetryAfter).
	ResetAt time.Time
	// RetryAfter is when retrying can succeed at the earliest: for a rate
	// limit, when the window will have room; for concurrency and in-flight
	// refusals, Config.BusyRetryAfter; for a used-up budget, the time to
	// ResetAt (0 for token_limit).
	RetryAfter time.Duration
	// Standing is the key's standing when it was refused, for the
	// response headers.
	Standing Standing

	loc *time.Location
}

// Error describes the refusal in words fit for the client: the budget,
// how much is left and when it resets.
func (r *Refusal) Error() string { return "quota: " + r.Message() }

// Is matches ErrBudgetExceeded (Budget) and ErrRateLimited (every other
// reason).
func (r *Refusal) Is(target error) bool {
	switch target {
	case ErrBudgetExceeded:
		return r.Reason == Budget
	case ErrRateLimited:
		return r.Reason != Budget
	}
	return false
}

// Status is the HTTP status to answer: 402 for a used-up budget, 429 for
// everything that passes by itself.
func (r *Refusal) Status() int {
	if r.Reason == Budget {
		return http.StatusPaymentRequired
	}
	return http.StatusTooManyRequests
}

// Message is the client-facing explanation.
func (r *Refusal) Message() string {
	switch r.Reason {
	case Concurrency:
		return fmt.Sprintf("concurrency limit reached: this key may have %d requests in flight at once; retry when one finishes", r.Limit)
	case RateLimit:
		unit := "requests"
		if r.Budget == BudgetTPM {
			unit = "tokens"
		}
		msg := fmt.Sprintf("rate limit reached: this key may use %d %s per minute", r.Limit, unit)
		if r.Budget == BudgetTPM && r.Requested > r.Limit {
			msg += fmt.Sprintf(" (this request needs about %d, so it waits for an empty window)", r.Requested)
		} else if r.Budget == BudgetTPM {
			msg += fmt.Sprintf(", %d remaining and this request needs about %d", r.Remaining, r.Requested)
		}
		return msg + "; retry after " + seconds(r.RetryAfter) + "s"
	case InFlight:
		return fmt.Sprintf("%s budget is held by requests in flight: %s left, this request reserves up to %s; retry in a moment",
			r.Budget, r.amount(r.Remaining), r.amount(r.Requested))
	}
	var b strings.Builder
	if r.Budget == BudgetTokenLimit {
		fmt.Fprintf(&b, "token_limit exhausted: this key has %s of its %s left and this request reserves up to %s",
			r.number(r.Remaining), r.amount(r.Limit), r.amount(r.Requested))
	} else {
		fmt.Fprintf(&b, "%s budget exhausted: %s of %s left and this request reserves up to %s",
			r.Budget, r.number(r.Remaining), r.amount(r.Limit), r.amount(r.Requested))
	}
	if !strings.HasSuffix(r.Budget, "_cost") && r.Remaining > 0 {
		b.WriteString(" (a lower max_tokens reserves less)")
	}
	if r.ResetAt.IsZero() {
		b.WriteString("; it does not reset")
	} else {
		loc := r.loc
		if loc == nil {
			loc = time.UTC
		}
		b.WriteString("; it resets at " + r.ResetAt.In(loc).Format(time.RFC3339))
	}
	return b.String()
}

// number is v in the budget's unit without the unit's name.
func (r *Refusal) number(v int64) string {
	if strings.HasSuffix(r.Budget, "_cost") {
		return formatUSD(v)
	}
	return strconv.FormatInt(v, 10)
}

// amount is v with its unit.
func (r *Refusal) amount(v int64) string {
	if strings.HasSuffix(r.Budget, "_cost") {
		return formatUSD(v)
	}
	if r.Budget == BudgetTokenLimit || strings.HasSuffix(r.Budget, "_tokens") {
		return strconv.FormatInt(v, 10) + " tokens"
	}
	return strconv.FormatInt(v, 10)
}

// formatUSD writes micro-dollars as dollars with at least two decimals and
// no rounding: 4990000 → $4.99, 1234567 → $1.234567.
func formatUSD(micros int64) string {
	sign := ""
	if micros < 0 {
		sign, micros = "-", -micros
	}
	frac := fmt.Sprintf("%06d", micros%1_000_000)
	frac = strings.TrimRight(frac, "0")
	for len(frac) < 2 {
		frac += "0"
	}
	return sign + "$" + strconv.FormatInt(micros/1_000_000, 10) + "." + frac
}

// seconds is d in whole seconds, rounded up, at least 1.
func seconds(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}

// Headers sets the refusal's response headers on h: the key's rate-limit
// headers (Standing.Headers) and, for a 429, retry-after (whole seconds,
// rounded up) and retry-after-ms.
func (r *Refusal) Headers(h http.Header) {
	r.Standing.Headers(h)
	if r.Status() == http.StatusTooManyRequests {
		h.Set("retry-after", seconds(r.RetryAfter))
		h.Set("retry-after-ms", strconv.FormatInt(max(r.RetryAfter.Milliseconds(), 1), 10))
	}
}

// APIError maps a *Refusal in err's chain to the relay's answer: 402
// billing_error or 429 rate_limit_error, with its headers. It returns nil
// for any other error (an apierror.Mapper).
func APIError(err error) *apierror.Error {
	if errors.Is(err, ErrUnavailable) {
		e := apierror.New(http.StatusServiceUnavailable, "the relay cannot check this key's limits right now; try again shortly")
		e.Header = http.Header{"Retry-After": {"1"}}
		return e
	}
	var r *Refusal
	if !errors.As(err, &r) {
		return nil
	}
	e := apierror.New(r.Status(), r.Message())
	e.Header = make(http.Header)
	r.Headers(e.Header)
	return e
}
