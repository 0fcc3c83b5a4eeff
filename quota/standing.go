package quota

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Entry is a key's standing against one limit. Token entries count tokens,
// cost entries micro-dollars, RPM requests, concurrency requests in flight.
type Entry struct {
	// Limit is the limit; 0 means unlimited (Remaining is then 0 and
	// meaningless).
	Limit int64 `json:"limit"`
	// Used is what settled requests used in the window. For RPM and TPM it
	// is the sliding-window count, which includes requests in flight at
	// their reserved size; for concurrency, the requests in flight.
	Used int64 `json:"used"`
	// Reserved is what requests in flight hold (budgets only).
	Reserved int64 `json:"reserved"`
	// Remaining is Limit - Used - Reserved, never below 0.
	Remaining int64 `json:"remaining"`
	// ResetAt is when the window ends (budgets) or when the rate window
	// will have forgotten everything counted so far (RPM, TPM). Zero for
	// token_limit (it never resets) and concurrency.
	ResetAt time.Time `json:"reset_at,omitzero"`
}

func entry(limit, used, reserved int64, reset time.Time) Entry {
	e := Entry{Limit: limit, Used: used, Reserved: reserved, ResetAt: reset}
	if limit > 0 {
		e.Remaining = max(0, limit-used-reserved)
	}
	return e
}

// Standing is a key's standing against its limits at one instant.
type Standing struct {
	KeyID string    `json:"key_id"`
	At    time.Time `json:"at"`

	TokenLimit    Entry `json:"token_limit"`
	DailyTokens   Entry `json:"daily_tokens"`
	WeeklyTokens  Entry `json:"weekly_tokens"`
	MonthlyTokens Entry `json:"monthly_tokens"`
	DailyCost     Entry `json:"daily_cost"`
	WeeklyCost    Entry `json:"weekly_cost"`
	MonthlyCost   Entry `json:"monthly_cost"`
	RPM           Entry `json:"rpm"`
	TPM           Entry `json:"tpm"`
	Concurrency   Entry `json:"concurrency"`
}

// Entry returns the entry of a budget by name (BudgetDailyTokens, …).
func (s *Standing) Entry(budget string) (Entry, bool) {
	if p := s.entry(budget); p != nil {
		return *p, true
	}
	return Entry{}, false
}

func (s *Standing) entry(budget string) *Entry {
	switch budget {
	case BudgetTokenLimit:
		return &s.TokenLimit
	case BudgetDailyTokens:
		return &s.DailyTokens
	case BudgetWeeklyTokens:
		return &s.WeeklyTokens
	case BudgetMonthlyTokens:
		return &s.MonthlyTokens
	case BudgetDailyCost:
		return &s.DailyCost
	case BudgetWeeklyCost:
		return &s.WeeklyCost
	case BudgetMonthlyCost:
		return &s.MonthlyCost
	case BudgetRPM:
		return &s.RPM
	case BudgetTPM:
		return &s.TPM
	case BudgetConcurrency:
		return &s.Concurrency
	}
	return nil
}

// Response headers, as Anthropic names them.
const (
	HeaderRequestsLimit     = "anthropic-ratelimit-requests-limit"
	HeaderRequestsRemaining = "anthropic-ratelimit-requests-remaining"
	HeaderRequestsReset     = "anthropic-ratelimit-requests-reset"
	HeaderTokensLimit       = "anthropic-ratelimit-tokens-limit"
	HeaderTokensRemaining   = "anthropic-ratelimit-tokens-remaining"
	HeaderTokensReset       = "anthropic-ratelimit-tokens-reset"

	ratelimitPrefix = "anthropic-ratelimit-"
)

// Headers sets the key's rate-limit headers on h, describing the key's own
// limits, as Anthropic does for its own:
//
//   - anthropic-ratelimit-requests-{limit,remaining,reset}: RPM, when set;
//   - anthropic-ratelimit-tokens-{limit,remaining,reset}: the most
//     restrictive token limit in effect (the one with the fewest tokens
//     remaining among TPM and the token budgets), when any is set. The
//     reset header is left out for token_limit, which never resets.
//
// Resets are RFC 3339 times in UTC. Every other anthropic-ratelimit-*
// header already in h (the upstream's, describing the relay's own
// organisation) is removed, so a response never passes the upstream's
// limits off as the key's.
func (s Standing) Headers(h http.Header) {
	for name := range h {
		if len(name) >= len(ratelimitPrefix) && strings.EqualFold(name[:len(ratelimitPrefix)], ratelimitPrefix) {
			delete(h, name)
		}
	}
	if s.RPM.Limit > 0 {
		setEntry(h, s.RPM, HeaderRequestsLimit, HeaderRequestsRemaining, HeaderRequestsReset)
	}
	var tight *Entry
	for _, e := range [...]*Entry{&s.TPM, &s.DailyTokens, &s.WeeklyTokens, &s.MonthlyTokens, &s.TokenLimit} {
		if e.Limit > 0 && (tight == nil || e.Remaining < tight.Remaining) {
			tight = e
		}
	}
	if tight != nil {
		setEntry(h, *tight, HeaderTokensLimit, HeaderTokensRemaining, HeaderTokensReset)
	}
}

func setEntry(h http.Header, e Entry, limit, remaining, reset string) {
	h.Set(limit, strconv.FormatInt(e.Limit, 10))
	h.Set(remaining, strconv.FormatInt(e.Remaining, 10))
	if !e.ResetAt.IsZero() {
		h.Set(reset, e.ResetAt.UTC().Format(time.RFC3339))
	}
}
