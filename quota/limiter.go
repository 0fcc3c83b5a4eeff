package quota

import (
	"context"
	"errors"
	"time"
)

// Limiter enforces per-key limits with reservations. Implementations are
// safe for concurrent use: this package's Memory (one process) and
// storage/redis.Limiter (several relay instances). storage/storagetest
// holds the conformance suite both pass.
type Limiter interface {
	// Reserve admits a request or refuses it. Admitted, it holds the
	// request's estimated tokens and cost against every budget, counts it
	// against RPM and TPM and takes a concurrency lease, all atomically,
	// until Settle or Release (or the reservation's TTL). Refused, nothing
	// is held and the error is a *Refusal (errors.Is ErrRateLimited or
	// ErrBudgetExceeded). Any other error means the limiter could not
	// decide (store unreachable, Seed failed, invalid request).
	Reserve(ctx context.Context, req Request) (Reservation, error)
	// Settle replaces the reservation by the request's real usage: a
	// smaller usage returns the difference, a larger one is charged in
	// full even when that passes a limit, and the concurrency lease ends.
	// Usage is charged to the calendar windows the reservation was made in
	// (the windows of the request's start, as usage records are dated).
	// A reservation that expired is charged in full all the same. Call
	// Settle or Release once per reservation.
	Settle(ctx context.Context, r Reservation, actual Actual) error
	// Release returns everything the reservation holds (budgets, the
	// request in RPM, its tokens in TPM, the lease), for a request that
	// used nothing upstream. Releasing a reservation that expired or was
	// finished already does nothing.
	Release(ctx context.Context, r Reservation) error
	// Renew extends a reservation's life by Config.ReservationTTL from
	// now. Call it every TTL/3 or so while a long stream runs. It returns
	// ErrUnknownReservation when the reservation expired or was finished.
	Renew(ctx context.Context, r Reservation) error
	// Standing reports the key's standing against l without changing it
	// (expired reservations excepted): used, reserved and remaining and the
	// reset time of every budget, for usage APIs and response headers. A
	// key seen for the first time is seeded first.
	Standing(ctx context.Context, keyID string, l Limits) (Standing, error)
}

// Request is what the relay knows of a request before it forwards it.
type Request struct {
	// KeyID identifies the relay key. Required.
	KeyID string
	// Limits are the key's resolved limits (Tiers.Resolve).
	Limits Limits
	// InputEstimate is the prompt's estimated size in tokens (the offline
	// tokenizer's estimate of everything the model will read, cache
	// included).
	InputEstimate int64
	// MaxTokens is the request's max_tokens; <= 0 reserves Config.OutputCap.
	MaxTokens int64
	// CostEstimateMicros is the estimated cost of InputEstimate input
	// tokens and Config.OutputReservation(MaxTokens) output tokens at the
	// model's prices, in micro-dollars. It is held against the cost
	// budgets.
	CostEstimateMicros int64
}

// Actual is a request's real usage, as the upstream reported it (or as
// estimated when the stream broke before the final count).
type Actual struct {
	Input, Output, CacheCreation, CacheRead int64 // tokens
	CostMicros                              int64 // priced with the model's prices
}

// Reservation is what Reserve holds for one request. The relay keeps the
// value and hands it back to Settle, Release or Renew.
type Reservation struct {
	// ID identifies the reservation (and its concurrency lease) in the
	// limiter, unique across instances.
	ID    string
	KeyID string
	// At is when the reservation was made; it places the request's usage
	// in its calendar windows and minute.
	At time.Time
	// Tokens is what is held against the token budgets (counted kinds of
	// the input estimate plus OutputReserved).
	Tokens int64
	// CostMicros is what is held against the cost budgets.
	CostMicros int64
	// RateTokens is what was counted against TPM.
	RateTokens int64
	// OutputReserved is min(max_tokens, Config.OutputCap).
	OutputReserved int64
	// Standing is the key's standing just after this reservation, for the
	// response's rate-limit headers (Standing.Headers).
	Standing Standing
}

// Errors. A *Refusal matches ErrRateLimited or ErrBudgetExceeded with
// errors.Is.
var (
	// ErrRateLimited: a rate limit (RPM, TPM), the concurrency limit, or a
	// budget held by requests in flight refused the request; answer 429
	// rate_limit_error with retry-after. Retrying later succeeds.
	ErrRateLimited = errors.New("quota: rate limited")
	// ErrBudgetExceeded: a token or cost budget is used up for its window
	// (or for good: token_limit); answer 402 billing_error. Retrying
	// before the budget resets cannot succeed.
	ErrBudgetExceeded = errors.New("quota: budget exceeded")
	// ErrUnknownReservation: Renew of a reservation that expired or was
	// settled or released.
	ErrUnknownReservation = errors.New("quota: reservation expired or finished")
	// ErrInvalid: a Request or Actual with a missing key id or a negative
	// count.
	ErrInvalid = errors.New("quota: invalid request")
)
