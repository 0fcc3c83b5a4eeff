package quota

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
)

// Kinds is a set of token kinds, as Anthropic reports them in usage.
type Kinds uint8

// The token kinds.
const (
	// Input is input_tokens: prompt tokens read neither from nor into the
	// prompt cache.
	Input Kinds = 1 << iota
	// Output is output_tokens.
	Output
	// CacheCreation is cache_creation_input_tokens: prompt tokens written
	// to the cache.
	CacheCreation
	// CacheRead is cache_read_input_tokens: prompt tokens read from the
	// cache.
	CacheRead

	// AllKinds counts every token; it is what the zero Config.Counted means.
	AllKinds = Input | Output | CacheCreation | CacheRead
	// RateKinds is what the zero Config.RateCounted means: input, cache
	// creation and output. Cache reads do not count toward Anthropic's own
	// input-tokens-per-minute limits either, and a coding agent re-reads
	// its whole conversation from the cache on every turn.
	RateKinds = Input | CacheCreation | Output

	promptKinds = Input | CacheCreation | CacheRead
)

var kindNames = [...]struct {
	k    Kinds
	name string
}{{Input, "input"}, {Output, "output"}, {CacheCreation, "cache_creation"}, {CacheRead, "cache_read"}}

// Count returns the tokens of the kinds in k.
func (k Kinds) Count(input, output, cacheCreation, cacheRead int64) int64 {
	var n int64
	if k&Input != 0 {
		n += input
	}
	if k&Output != 0 {
		n += output
	}
	if k&CacheCreation != 0 {
		n += cacheCreation
	}
	if k&CacheRead != 0 {
		n += cacheRead
	}
	return n
}

// String lists the kinds comma-separated: "input,output,cache_creation,cache_read".
func (k Kinds) String() string {
	var b strings.Builder
	for _, kn := range kindNames {
		if k&kn.k != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(kn.name)
		}
	}
	return b.String()
}

// ParseKinds parses a comma-separated list of kinds (input, output,
// cache_creation, cache_read, or all). Spaces are ignored.
func ParseKinds(s string) (Kinds, error) {
	var k Kinds
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if part == "all" {
			k |= AllKinds
			continue
		}
		found := false
		for _, kn := range kindNames {
			if kn.name == part {
				k |= kn.k
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown token kind %q (want input, output, cache_creation, cache_read or all)", part)
		}
	}
	if k == 0 {
		return 0, fmt.Errorf("no token kind in %q", s)
	}
	return k, nil
}

// MarshalText implements encoding.TextMarshaler (YAML and JSON write the list).
func (k Kinds) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseKinds.
func (k *Kinds) UnmarshalText(b []byte) error {
	v, err := ParseKinds(string(b))
	if err != nil {
		return err
	}
	*k = v
	return nil
}

// Defaults of Config.
const (
	// DefaultOutputCap bounds the output tokens a request reserves.
	DefaultOutputCap = 4096
	// DefaultReservationTTL is how long an unsettled reservation (and its
	// concurrency lease) lives without Renew.
	DefaultReservationTTL = 10 * time.Minute
	// DefaultBusyRetryAfter is the retry-after of refusals that end when
	// requests in flight finish (concurrency, budgets held by reservations).
	DefaultBusyRetryAfter = time.Second
)

// SeedFunc reports what a key has used since a time, from the usage store:
// tokens counted as Config.Counted counts them, and cost in micro-dollars.
// The zero since means the key's whole lifetime. See Config.Seed.
type SeedFunc func(ctx context.Context, keyID string, since time.Time) (tokens, costMicros int64, err error)

// Config configures a Limiter. The zero Config is usable: UTC calendar
// windows, weeks from Monday, a 4096-token output reservation cap, every
// token kind counted, no seeding.
type Config struct {
	// Location is the time zone of the calendar windows (daily, weekly and
	// monthly budgets reset at local midnight). Nil means UTC.
	Location *time.Location
	// WeekStart is the first day of a weekly window. Nil means Monday.
	// Set it with new(time.Sunday).
	WeekStart *time.Weekday

	// OutputCap bounds the output tokens a request reserves:
	// min(max_tokens, OutputCap). Zero means DefaultOutputCap. A larger cap
	// lowers the worst-case overshoot and refuses sooner; see the package
	// documentation.
	OutputCap int64
	// Counted selects the token kinds the token budgets (token_limit,
	// daily, weekly, monthly) count. Zero means AllKinds.
	Counted Kinds
	// RateCounted selects the token kinds TPM counts. Zero means RateKinds
	// (input, cache creation, output).
	RateCounted Kinds

	// ReservationTTL is how long a reservation and its concurrency lease
	// live unless renewed (Limiter.Renew) or finished. Zero means
	// DefaultReservationTTL. A reservation of a crashed relay is returned
	// when it expires; its request's real usage is then never charged.
	ReservationTTL time.Duration
	// BusyRetryAfter is the retry-after of 429s that end when requests in
	// flight finish. Zero means DefaultBusyRetryAfter.
	BusyRetryAfter time.Duration

	// Now returns the current time. Nil means time.Now.
	Now func() time.Time

	// Seed, when set, is called the first time a limiter sees a key (for
	// the Redis limiter: whenever the key's counters are missing: first
	// use, counters expired after StateTTL of idleness, or a Redis that
	// lost its data), so that lifetime and window usage survive restarts.
	// It is called four times, with since = the zero time (lifetime: the
	// key's token total for token_limit), the start of the current month,
	// week and day (tokens and cost of the records of requests that
	// started at or after since). Counted tokens must be counted with
	// Counted (Kinds.Count) and cost rounded with Micros. Nil means every
	// key starts from zero.
	//
	// Windows never call Seed when they roll over: every charge passes
	// through the limiter, so a new window starts exactly at zero.
	// A Seed error fails the Reserve or Standing call that needed it; the
	// next call tries again.
	Seed SeedFunc
}

// Micros converts US dollars to integer micro-dollars, rounding to the
// nearest micro-dollar.
func Micros(usd float64) int64 { return int64(math.Round(usd * 1e6)) }

// USD converts micro-dollars to dollars, for display.
func USD(micros int64) float64 { return float64(micros) / 1e6 }

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Location == nil {
		c.Location = time.UTC
	}
	if c.WeekStart == nil {
		c.WeekStart = new(time.Monday)
	}
	if c.OutputCap <= 0 {
		c.OutputCap = DefaultOutputCap
	}
	if c.Counted == 0 {
		c.Counted = AllKinds
	}
	if c.RateCounted == 0 {
		c.RateCounted = RateKinds
	}
	if c.ReservationTTL <= 0 {
		c.ReservationTTL = DefaultReservationTTL
	}
	if c.BusyRetryAfter <= 0 {
		c.BusyRetryAfter = DefaultBusyRetryAfter
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// OutputReservation is the output a request with maxTokens reserves:
// min(maxTokens, OutputCap), OutputCap when maxTokens is unset (<= 0). The
// relay prices its cost estimate with it (Request.CostEstimateMicros).
func (c Config) OutputReservation(maxTokens int64) int64 {
	capped := c.OutputCap
	if capped <= 0 {
		capped = DefaultOutputCap
	}
	if maxTokens <= 0 || maxTokens > capped {
		return capped
	}
	return maxTokens
}
