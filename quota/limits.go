package quota

import (
	"errors"
	"fmt"
	"slices"
)

// Budget names, as they appear in Refusal.Budget, in 402 and 429 messages,
// and in configuration.
const (
	BudgetTokenLimit    = "token_limit"
	BudgetDailyTokens   = "daily_tokens"
	BudgetWeeklyTokens  = "weekly_tokens"
	BudgetMonthlyTokens = "monthly_tokens"
	BudgetDailyCost     = "daily_cost"
	BudgetWeeklyCost    = "weekly_cost"
	BudgetMonthlyCost   = "monthly_cost"
	BudgetRPM           = "rpm"
	BudgetTPM           = "tpm"
	BudgetConcurrency   = "concurrency"
)

// Limits are one key's limits. Every field is optional: zero means
// unlimited. Token counts count the token kinds Config.Counted selects (TPM:
// Config.RateCounted); costs are integer micro-dollars (1 USD = 1,000,000),
// so budgets add up exactly.
type Limits struct {
	// TokenLimit is the key's lifetime token allowance. It never resets.
	TokenLimit int64 `json:"token_limit,omitempty" yaml:"token_limit,omitempty"`

	// DailyTokens, WeeklyTokens and MonthlyTokens are token budgets per
	// calendar day, week and month in Config.Location.
	DailyTokens   int64 `json:"daily_tokens,omitempty" yaml:"daily_tokens,omitempty"`
	WeeklyTokens  int64 `json:"weekly_tokens,omitempty" yaml:"weekly_tokens,omitempty"`
	MonthlyTokens int64 `json:"monthly_tokens,omitempty" yaml:"monthly_tokens,omitempty"`

	// DailyCostMicros, WeeklyCostMicros and MonthlyCostMicros are spending
	// budgets in micro-dollars per calendar day, week and month.
	DailyCostMicros   int64 `json:"daily_cost_micros,omitempty" yaml:"daily_cost_micros,omitempty"`
	WeeklyCostMicros  int64 `json:"weekly_cost_micros,omitempty" yaml:"weekly_cost_micros,omitempty"`
	MonthlyCostMicros int64 `json:"monthly_cost_micros,omitempty" yaml:"monthly_cost_micros,omitempty"`

	// RPM is requests per minute; TPM is tokens per minute (see
	// Config.RateCounted for which kinds).
	RPM int64 `json:"rpm,omitempty" yaml:"rpm,omitempty"`
	TPM int64 `json:"tpm,omitempty" yaml:"tpm,omitempty"`

	// MaxConcurrent is the number of requests the key may have in flight.
	MaxConcurrent int64 `json:"max_concurrent,omitempty" yaml:"max_concurrent,omitempty"`
}

// fields lists the limits with their configuration names, in one place for
// Validate and Override.
func (l *Limits) fields() []struct {
	name string
	v    *int64
} {
	return []struct {
		name string
		v    *int64
	}{
		{BudgetTokenLimit, &l.TokenLimit},
		{BudgetDailyTokens, &l.DailyTokens},
		{BudgetWeeklyTokens, &l.WeeklyTokens},
		{BudgetMonthlyTokens, &l.MonthlyTokens},
		{"daily_cost_micros", &l.DailyCostMicros},
		{"weekly_cost_micros", &l.WeeklyCostMicros},
		{"monthly_cost_micros", &l.MonthlyCostMicros},
		{BudgetRPM, &l.RPM},
		{BudgetTPM, &l.TPM},
		{"max_concurrent", &l.MaxConcurrent},
	}
}

// IsZero reports whether l sets no limit at all.
func (l Limits) IsZero() bool { return l == Limits{} }

// Validate reports the first invalid field (a negative value), named as in
// configuration.
func (l Limits) Validate() error {
	for _, f := range l.fields() {
		if *f.v < 0 {
			return fmt.Errorf("%s: must not be negative (0 means unlimited), got %d", f.name, *f.v)
		}
	}
	return nil
}

// Override sets some of a key's limits over its tier's. A nil field keeps
// the tier's value; a non-nil field replaces it, and a pointer to 0 lifts
// the limit (unlimited).
type Override struct {
	TokenLimit        *int64 `json:"token_limit,omitempty" yaml:"token_limit,omitempty"`
	DailyTokens       *int64 `json:"daily_tokens,omitempty" yaml:"daily_tokens,omitempty"`
	WeeklyTokens      *int64 `json:"weekly_tokens,omitempty" yaml:"weekly_tokens,omitempty"`
	MonthlyTokens     *int64 `json:"monthly_tokens,omitempty" yaml:"monthly_tokens,omitempty"`
	DailyCostMicros   *int64 `json:"daily_cost_micros,omitempty" yaml:"daily_cost_micros,omitempty"`
	WeeklyCostMicros  *int64 `json:"weekly_cost_micros,omitempty" yaml:"weekly_cost_micros,omitempty"`
	MonthlyCostMicros *int64 `json:"monthly_cost_micros,omitempty" yaml:"monthly_cost_micros,omitempty"`
	RPM               *int64 `json:"rpm,omitempty" yaml:"rpm,omitempty"`
	TPM               *int64 `json:"tpm,omitempty" yaml:"tpm,omitempty"`
	MaxConcurrent     *int64 `json:"max_concurrent,omitempty" yaml:"max_concurrent,omitempty"`
}

func (o *Override) fields() []**int64 {
	return []**int64{
		&o.TokenLimit, &o.DailyTokens, &o.WeeklyTokens, &o.MonthlyTokens,
		&o.DailyCostMicros, &o.WeeklyCostMicros, &o.MonthlyCostMicros,
		&o.RPM, &o.TPM, &o.MaxConcurrent,
	}
}

// Apply returns l with o's non-nil fields set over it.
func (o Override) Apply(l Limits) Limits {
	dst := l.fields()
	for i, p := range o.fields() {
		if *p != nil {
			*dst[i].v = **p
		}
	}
	return l
}

// Validate reports the first negative field, named as in configuration.
func (o Override) Validate() error {
	var l Limits
	dst := l.fields()
	for i, p := range o.fields() {
		if *p != nil && **p < 0 {
			*dst[i].v = **p
			return l.Validate()
		}
	}
	return nil
}

// Tiers are named sets of limits (for example free, pro and team), loaded
// from configuration:
//
//	default: free
//	tiers:
//	  free: {daily_tokens: 200000, rpm: 10, max_concurrent: 2}
//	  pro:  {monthly_cost_micros: 50000000, rpm: 60, tpm: 400000}
//	  team: {rpm: 300}
//
// The zero Tiers has no tier: every key is unlimited but for its own
// overrides.
type Tiers struct {
	// Default is the tier of keys that name none (or a tier that does not
	// exist). With tiers defined, it must name one of them.
	Default string `json:"default,omitempty" yaml:"default,omitempty"`
	// Tiers maps a tier name to its limits.
	Tiers map[string]Limits `json:"tiers,omitempty" yaml:"tiers,omitempty"`
}

// Resolve returns the limits of a key of the given tier with its
// overrides. An empty or unknown tier resolves to the default tier, so a
// key never escapes its limits through a typo; with no default tier the
// base is unlimited.
func (t Tiers) Resolve(tier string, override Override) Limits {
	base, ok := t.Tiers[tier]
	if !ok {
		base = t.Tiers[t.Default]
	}
	return override.Apply(base)
}

// Has reports whether tier is defined, for validating a key's tier when it
// is set.
func (t Tiers) Has(tier string) bool {
	_, ok := t.Tiers[tier]
	return ok
}

// Validate reports the first problem: a default tier that is not defined,
// an empty tier name, or a negative limit, named by its path
// ("tiers.pro.rpm").
func (t Tiers) Validate() error {
	if len(t.Tiers) == 0 {
		if t.Default != "" {
			return fmt.Errorf("default: tier %q is not defined (no tiers are)", t.Default)
		}
		return nil
	}
	if t.Default == "" {
		return errors.New("default: must name the tier of keys without one")
	}
	if _, ok := t.Tiers[t.Default]; !ok {
		return fmt.Errorf("default: tier %q is not defined", t.Default)
	}
	names := make([]string, 0, len(t.Tiers))
	for name := range t.Tiers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if name == "" {
			return errors.New("tiers: a tier name must not be empty")
		}
		if err := t.Tiers[name].Validate(); err != nil {
			return fmt.Errorf("tiers.%s.%w", name, err)
		}
	}
	return nil
}
