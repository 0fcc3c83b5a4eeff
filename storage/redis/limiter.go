package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/relaystation/relay/quota"
)

// Defaults of LimiterOptions.
const (
	DefaultLimiterPrefix = "relay:quota:"
	DefaultStateTTL      = 35 * 24 * time.Hour
)

// LimiterOptions configure a Limiter. The zero value is usable.
type LimiterOptions struct {
	// Prefix starts every key the limiter writes; a key's counters live
	// under Prefix + "{" + key id + "}:" so they share one cluster slot.
	// Empty means DefaultLimiterPrefix. It must not contain braces (they
	// would move the hash tag). Give each relay deployment (and each test)
	// its own.
	Prefix string
	// ReservationTTL, when set, overrides quota.Config.ReservationTTL: how
	// long a reservation and its concurrency lease live without Renew. A
	// crashed instance's reservations are returned after it.
	ReservationTTL time.Duration
	// StateTTL is how long a key's counters live without any request;
	// after that they are dropped and the next request seeds them again
	// from quota.Config.Seed. Zero means DefaultStateTTL (longer than a
	// month, so an idle key costs one seed per month at most).
	StateTTL time.Duration
}

// Limiter is a quota.Limiter on Redis, shared by every relay instance
// that uses the same Redis and prefix. Reserve, Settle, Release and Renew
// are one round trip each (one EVALSHA, EVAL only when Redis lost the
// script), and calls made at the same time share round trips: while two
// are in flight, the calls that arrive wait and go together in the next
// pipeline (see combiner). A key's first Reserve (or its first after Redis lost its
// counters) adds three: a look whether another caller seeded it meanwhile,
// then Seed's answer written with a create-if-missing script (the first
// writer wins), then the Reserve again. An instance seeds a key once
// however many requests find it unseeded at once.
//
// Works with every go-redis UniversalClient: single node, Sentinel and
// Cluster (all of one key's counters share a hash slot).
type Limiter struct {
	client  goredis.UniversalClient
	rules   *quota.Rules
	prefix  string
	ttlMs   int64
	stateMs int64
	idBase  string
	seq     atomic.Uint64

	// seeding dedupes concurrent seeds of one key in this process.
	mu      sync.Mutex
	seeding map[string]*seedCall

	reserve, finish, renew, standing, seed *goredis.Script

	// comb runs Reserve, Settle, Release, Renew and Standing, sharing
	// round trips between calls made at the same time.
	comb combiner
}

var _ quota.Limiter = (*Limiter)(nil)

// NewLimiter returns a Limiter on client with cfg's rules.
func NewLimiter(client goredis.UniversalClient, cfg quota.Config, opts LimiterOptions) *Limiter {
	if opts.ReservationTTL > 0 {
		cfg.ReservationTTL = opts.ReservationTTL
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultLimiterPrefix
	}
	if opts.StateTTL <= 0 {
		opts.StateTTL = DefaultStateTTL
	}
	rules := quota.NewRules(cfg)
	ttl := rules.Config().ReservationTTL
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &Limiter{
		client:   client,
		rules:    rules,
		prefix:   opts.Prefix,
		ttlMs:    ttl.Milliseconds(),
		stateMs:  opts.StateTTL.Milliseconds(),
		idBase:   hex.EncodeToString(b[:]) + "-",
		reserve:  goredis.NewScript(luaReserve),
		finish:   goredis.NewScript(luaFinish),
		renew:    goredis.NewScript(luaRenew),
		standing: goredis.NewScript(luaStanding),
		seed:     goredis.NewScript(luaSeed),
		seeding:  make(map[string]*seedCall),
		comb:     newCombiner(client),
	}
}

type seedCall struct {
	done chan struct{}
	err  error
}

// keys returns the key's two Redis keys: counters and reservations. A
// key id with braces is hex-encoded so it cannot break the hash tag.
func (l *Limiter) keys(keyID string) []string {
	tag := keyID
	if strings.ContainsAny(keyID, "{}") {
		tag = "~" + hex.EncodeToString([]byte(keyID))
	}
	base := l.prefix + "{" + tag + "}:"
	return []string{base + "q", base + "l"}
}

// member is a reservation's name in the key's sorted set: its id and the
// amounts it holds, so that purging an expired one needs no other lookup.
func member(id string, tokens, costMicros int64) string {
	return id + ":" + strconv.FormatInt(tokens, 10) + ":" + strconv.FormatInt(costMicros, 10)
}

func (l *Limiter) windowArgs(now time.Time) (int64, int64, int64, int64) {
	w := l.rules.Windows(now)
	return w[0], w[1], w[2], quota.MinuteOf(now)
}

// decode turns a script reply into the key's state.
func decode(v []int64) (quota.State, error) {
	if len(v) != 20 {
		return quota.State{}, fmt.Errorf("quota: unexpected reply from Redis (%d values)", len(v))
	}
	return quota.State{
		Lifetime:           v[1],
		Day:                quota.Window{Start: v[2], Tokens: v[3], CostMicros: v[4]},
		Week:               quota.Window{Start: v[5], Tokens: v[6], CostMicros: v[7]},
		Month:              quota.Window{Start: v[8], Tokens: v[9], CostMicros: v[10]},
		ReservedTokens:     v[11],
		ReservedCostMicros: v[12],
		Requests:           quota.RateWindow{Minute: v[13], Current: v[14], Previous: v[15]},
		Tokens:             quota.RateWindow{Minute: v[16], Current: v[17], Previous: v[18]},
		InFlight:           v[19],
	}, nil
}

// Reserve implements quota.Limiter in one round trip (three on a key's
// first sight: see Limiter).
func (l *Limiter) Reserve(ctx context.Context, req quota.Request) (quota.Reservation, error) {
	a, err := l.rules.Amounts(req)
	if err != nil {
		return quota.Reservation{}, err
	}
	now := l.rules.Now()
	nowMs := now.UnixMilli()
	day, week, month, minute := l.windowArgs(now)
	keys := l.keys(req.KeyID)
	id := l.idBase + strconv.FormatUint(l.seq.Add(1), 36)
	lim := req.Limits
	args := []any{nowMs, day, week, month, minute, member(id, a.Tokens, a.CostMicros), nowMs + l.ttlMs,
		a.Tokens, a.CostMicros, a.RateTokens,
		lim.TokenLimit, lim.MonthlyTokens, lim.MonthlyCostMicros, lim.WeeklyTokens, lim.WeeklyCostMicros,
		lim.DailyTokens, lim.DailyCostMicros, lim.RPM, lim.TPM, lim.MaxConcurrent,
		l.stateMs}
	for seeded := false; ; seeded = true {
		v, err := l.comb.run(ctx, l.reserve, keys, args...).Int64Slice()
		if err != nil {
			return quota.Reservation{}, fmt.Errorf("quota: redis reserve: %w", err)
		}
		if len(v) == 1 && v[0] == -1 {
			if seeded {
				return quota.Reservation{}, errors.New("quota: redis lost the counters of key " + req.KeyID + " again right after seeding them")
			}
			if err := l.seedKey(ctx, req.KeyID, keys, now); err != nil {
				return quota.Reservation{}, err
			}
			continue
		}
		st, err := decode(v)
		if err != nil {
			return quota.Reservation{}, err
		}
		if v[0] != 1 {
			if ref := l.rules.Check(req.KeyID, lim, &st, a, now); ref != nil {
				return quota.Reservation{}, ref
			}
			return quota.Reservation{}, errors.New("quota: redis refused a request the rules admit (script and rules disagree)")
		}
		return quota.Reservation{
			ID: id, KeyID: req.KeyID, At: now,
			Tokens: a.Tokens, CostMicros: a.CostMicros, RateTokens: a.RateTokens, OutputReserved: a.OutputReserved,
			Standing: l.rules.Standing(req.KeyID, lim, st, now),
		}, nil
	}
}

// seedKey seeds a key's missing counters from quota.Config.Seed. Callers
// that find the same key unseeded at once wait for one seed.
func (l *Limiter) seedKey(ctx context.Context, keyID string, keys []string, now time.Time) error {
	l.mu.Lock()
	if c, ok := l.seeding[keyID]; ok {
		l.mu.Unlock()
		select {
		case <-c.done:
			return c.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c := &seedCall{done: make(chan struct{})}
	l.seeding[keyID] = c
	l.mu.Unlock()
	c.err = l.seedOnce(ctx, keyID, keys, now)
	l.mu.Lock()
	delete(l.seeding, keyID)
	l.mu.Unlock()
	close(c.done)
	return c.err
}

func (l *Limiter) seedOnce(ctx context.Context, keyID string, keys []string, now time.Time) error {
	// Another caller may have seeded the key since this one found it
	// unseeded: a look is cheaper than reading the usage store again.
	if n, err := l.client.Exists(ctx, keys[0]).Result(); err == nil && n == 1 {
		return nil
	}
	st, err := l.rules.Seed(ctx, keyID, now)
	if err != nil {
		return err
	}
	err = l.seed.Run(ctx, l.client, keys, st.Lifetime,
		st.Day.Start, st.Day.Tokens, st.Day.CostMicros,
		st.Week.Start, st.Week.Tokens, st.Week.CostMicros,
		st.Month.Start, st.Month.Tokens, st.Month.CostMicros,
		st.Requests.Minute, l.stateMs).Err()
	if err != nil {
		return fmt.Errorf("quota: redis seed: %w", err)
	}
	return nil
}

func (l *Limiter) end(ctx context.Context, r quota.Reservation, mode string, act quota.Amounts) error {
	if r.KeyID == "" || r.ID == "" {
		return fmt.Errorf("%w: not a reservation", quota.ErrInvalid)
	}
	args := l.finishArgs(l.rules.Now(), 1)
	args = l.appendFinish(args, r, mode, act)
	if err := l.comb.run(ctx, l.finish, l.keys(r.KeyID), args...).Err(); err != nil {
		op := "settle"
		if mode == "r" {
			op = "release"
		}
		return fmt.Errorf("quota: redis %s: %w", op, err)
	}
	return nil
}

// finishArgs starts the arguments of luaFinish for n reservations.
func (l *Limiter) finishArgs(now time.Time, n int) []any {
	day, week, month, minute := l.windowArgs(now)
	args := make([]any, 0, 6+12*n)
	return append(args, now.UnixMilli(), day, week, month, minute, l.stateMs)
}

// appendFinish adds one reservation to luaFinish's arguments.
func (l *Limiter) appendFinish(args []any, r quota.Reservation, mode string, act quota.Amounts) []any {
	rw := l.rules.Windows(r.At)
	return append(args, mode, member(r.ID, r.Tokens, r.CostMicros),
		r.Tokens, r.CostMicros, r.RateTokens, rw[0], rw[1], rw[2], quota.MinuteOf(r.At),
		act.Tokens, act.CostMicros, act.RateTokens)
}

// maxSettleGroup bounds the reservations one script call settles.
const maxSettleGroup = 64

// SettleMany settles several reservations in one round trip, for callers
// that settle in the background and can group them (the relay's settle
// workers). Reservations of the same key are settled by one script call,
// which loads and saves the key's counters once: most of a call's cost in
// Redis is that load and save, and a key that runs many requests at once
// (Claude Code's parallel subagents, a CI fleet on one key) settles many
// at a time. The calls for the different keys go in one pipeline. It
// returns one error per reservation, nil where it was settled. A script
// Redis lost (after a restart) is loaded again by that call alone.
func (l *Limiter) SettleMany(ctx context.Context, rs []quota.Reservation, actuals []quota.Actual) []error {
	errs := make([]error, len(rs))
	type group struct {
		key  string
		idx  []int
		args []any
		cmd  *goredis.Cmd
	}
	var groups []*group
	open := make(map[string]*group)
	now := l.rules.Now()
	for i, r := range rs {
		act, err := l.rules.Charge(actuals[i])
		if err != nil {
			errs[i] = err
			continue
		}
		if r.KeyID == "" || r.ID == "" {
			errs[i] = fmt.Errorf("%w: not a reservation", quota.ErrInvalid)
			continue
		}
		g := open[r.KeyID]
		if g == nil || len(g.idx) == maxSettleGroup {
			g = &group{key: r.KeyID, args: l.finishArgs(now, 1)}
			groups = append(groups, g)
			open[r.KeyID] = g
		}
		g.idx = append(g.idx, i)
		g.args = l.appendFinish(g.args, r, "s", act)
	}
	if len(groups) == 0 {
		return errs
	}
	pipe := l.client.Pipeline()
	for _, g := range groups {
		g.cmd = l.finish.EvalSha(ctx, pipe, l.keys(g.key), g.args...)
	}
	_, _ = pipe.Exec(ctx) // errors are read per command below
	for _, g := range groups {
		err := g.cmd.Err()
		if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			err = l.finish.Run(ctx, l.client, l.keys(g.key), g.args...).Err()
		}
		if err != nil {
			for _, i := range g.idx {
				errs[i] = fmt.Errorf("quota: redis settle: %w", err)
			}
		}
	}
	return errs
}

// Settle implements quota.Limiter in one round trip.
func (l *Limiter) Settle(ctx context.Context, r quota.Reservation, actual quota.Actual) error {
	act, err := l.rules.Charge(actual)
	if err != nil {
		return err
	}
	return l.end(ctx, r, "s", act)
}

// Release implements quota.Limiter in one round trip.
func (l *Limiter) Release(ctx context.Context, r quota.Reservation) error {
	return l.end(ctx, r, "r", quota.Amounts{})
}

// Renew implements quota.Limiter in one round trip.
func (l *Limiter) Renew(ctx context.Context, r quota.Reservation) error {
	if r.KeyID == "" || r.ID == "" {
		return quota.ErrUnknownReservation
	}
	nowMs := l.rules.Now().UnixMilli()
	n, err := l.comb.run(ctx, l.renew, l.keys(r.KeyID), nowMs, member(r.ID, r.Tokens, r.CostMicros), nowMs+l.ttlMs, l.stateMs).Int64()
	if err != nil {
		return fmt.Errorf("quota: redis renew: %w", err)
	}
	if n != 1 {
		return quota.ErrUnknownReservation
	}
	return nil
}

// Standing implements quota.Limiter.
func (l *Limiter) Standing(ctx context.Context, keyID string, lim quota.Limits) (quota.Standing, error) {
	if keyID == "" {
		return quota.Standing{}, fmt.Errorf("%w: KeyID is required", quota.ErrInvalid)
	}
	keys := l.keys(keyID)
	for seeded := false; ; seeded = true {
		now := l.rules.Now()
		day, week, month, minute := l.windowArgs(now)
		v, err := l.comb.run(ctx, l.standing, keys, now.UnixMilli(), day, week, month, minute, l.stateMs).Int64Slice()
		if err != nil {
			return quota.Standing{}, fmt.Errorf("quota: redis standing: %w", err)
		}
		if len(v) == 1 && v[0] == -1 {
			if seeded {
				return quota.Standing{}, errors.New("quota: redis lost the counters of key " + keyID + " again right after seeding them")
			}
			if err := l.seedKey(ctx, keyID, keys, now); err != nil {
				return quota.Standing{}, err
			}
			continue
		}
		st, err := decode(v)
		if err != nil {
			return quota.Standing{}, err
		}
		return l.rules.Standing(keyID, lim, st, now), nil
	}
}
