package relay

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/internal/tokenizer"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/quota"
	"github.com/relaystation/relay/usage"
)

// SeedFromUsage returns the quota.SeedFunc that reads a key's past usage
// from a usage store, so token and cost budgets survive restarts. Hosts
// building their own limiter (storage/redis) pass it in quota.Config.Seed;
// counted must be the same as the limiter's Config.Counted (zero: all four
// token kinds).
func SeedFromUsage(store usage.Store, counted quota.Kinds) quota.SeedFunc {
	if counted == 0 {
		counted = quota.AllKinds
	}
	return func(ctx context.Context, keyID string, since time.Time) (int64, int64, error) {
		t, err := store.Totals(ctx, usage.Filter{KeyID: keyID, From: since})
		if err != nil {
			return 0, 0, err
		}
		u := t.Usage
		return counted.Count(u.InputTokens, u.OutputTokens, u.CacheCreationInputTokens, u.CacheReadInputTokens), quota.Micros(t.CostUSD), nil
	}
}

// keyLimits resolves a key's limits: its tier's, with the key's own
// overrides on top. A key's token_limit, when set (> 0), is one of them.
func (rl *Relay) keyLimits(k *keys.Key) (quota.Limits, error) {
	o, err := quota.OverrideFromMap(k.Limits)
	if err != nil {
		return quota.Limits{}, err
	}
	if k.TokenLimit > 0 {
		tl := k.TokenLimit
		o.TokenLimit = &tl
	}
	return rl.tiers.Resolve(k.Tier, o), nil
}

// reserve holds a request's estimated usage against the key's limits: the
// input as tokenizer.QuickEstimate counts it (one pass over the body, no
// encoder: the encoder costs milliseconds on Claude Code's 70 KB prompts,
// and the reservation settles to the real usage anyway), plus
// min(max_tokens, the output cap). It answers 429 or 402 (with the headers clients need) when the
// reservation does not fit, and 503 when the limiter cannot decide.
func (rl *Relay) reserve(ctx context.Context, k *keys.Key, model string, body []byte, maxTokens int64) (quota.Reservation, *apierror.Error) {
	limits, err := rl.keyLimits(k)
	if err != nil {
		rl.log.Error("key has invalid limit overrides", "key_id", k.ID, "error", err)
		return quota.Reservation{}, apierror.New(http.StatusInternalServerError, "this key's limits are misconfigured; tell the relay's operator")
	}
	est := tokenizer.QuickEstimate(body)
	price, _ := rl.pricing.Lookup(model)
	cost := price.Cost(usage.Usage{InputTokens: est, OutputTokens: rl.quotaCfg.OutputReservation(maxTokens)})
	res, err := rl.limiter.Reserve(ctx, quota.Request{
		KeyID: k.ID, Limits: limits, InputEstimate: est, MaxTokens: maxTokens, CostEstimateMicros: quota.Micros(cost),
	})
	if e := quota.APIError(err); e != nil {
		var ref *quota.Refusal
		if errors.As(err, &ref) {
			rl.metrics.refused(ref.Reason.String(), ref.Budget)
		} else {
			rl.metrics.refused("unavailable", "")
		}
		return res, e
	}
	if err != nil {
		rl.log.Error("quota limiter unavailable", "key_id", k.ID, "error", err)
		e := apierror.New(http.StatusServiceUnavailable, "the relay cannot check this key's limits right now; try again shortly")
		e.Header = http.Header{"Retry-After": {"1"}}
		return res, e
	}
	return res, nil
}

// settleJob is a reservation to settle with a request's real usage.
type settleJob struct {
	res       quota.Reservation
	actual    quota.Actual
	requestID string
}

// settleQuota replaces a reservation by the request's real usage. It runs
// detached from the request's context: a client that left still pays.
//
// With the in-process limiter it settles at once (half a microsecond).
// With a remote one (Redis) the settle is handed to background workers:
// the client already has its whole answer, and its keep-alive connection
// should not wait a round trip for the relay's bookkeeping. The budgets
// are then exact a moment later; a full queue settles inline instead, so
// nothing is ever skipped, and Close drains the queue.
func (rl *Relay) settleQuota(res quota.Reservation, rec *usage.Record) {
	u := rec.Usage
	job := settleJob{res: res, requestID: rec.RequestID, actual: quota.Actual{
		Input: u.InputTokens, Output: u.OutputTokens, CacheCreation: u.CacheCreationInputTokens, CacheRead: u.CacheReadInputTokens,
		CostMicros: quota.Micros(rec.CostUSD),
	}}
	if rl.settles != nil {
		select {
		case rl.settles <- job:
			return
		default:
		}
	}
	rl.settle1(job)
}

func (rl *Relay) settle1(job settleJob) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rl.limiter.Settle(ctx, job.res, job.actual); err != nil {
		rl.log.Warn("settling a quota reservation failed", "request_id", job.requestID, "key_id", job.res.KeyID, "error", err)
	}
}

// startSettlers runs the background settle workers of a remote limiter.
// A worker takes whatever settles wait (up to 64) and, when the limiter
// can, settles them in one round trip.
func (rl *Relay) startSettlers(n int) {
	rl.settles = make(chan settleJob, 4096)
	batcher, _ := rl.limiter.(quota.BatchSettler)
	for range n {
		rl.settlers.Add(1)
		go func() {
			defer rl.settlers.Done()
			batch := make([]settleJob, 0, 64)
			for job := range rl.settles {
				batch = append(batch[:0], job)
			more:
				for len(batch) < cap(batch) {
					select {
					case j, ok := <-rl.settles:
						if !ok {
							break more
						}
						batch = append(batch, j)
					default:
						break more
					}
				}
				if batcher == nil || len(batch) == 1 {
					for _, j := range batch {
						rl.settle1(j)
					}
					continue
				}
				rl.settleBatch(batcher, batch)
			}
		}()
	}
}

func (rl *Relay) settleBatch(b quota.BatchSettler, batch []settleJob) {
	rs := make([]quota.Reservation, len(batch))
	as := make([]quota.Actual, len(batch))
	for i, j := range batch {
		rs[i], as[i] = j.res, j.actual
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, err := range b.SettleMany(ctx, rs, as) {
		if err != nil {
			rl.log.Warn("settling a quota reservation failed", "request_id", batch[i].requestID, "key_id", batch[i].res.KeyID, "error", err)
		}
	}
}

// releaseQuota returns a reservation whose request never reached the
// upstream.
func (rl *Relay) releaseQuota(ctx context.Context, res quota.Reservation) {
	if err := rl.limiter.Release(context.WithoutCancel(ctx), res); err != nil {
		rl.log.Warn("releasing a quota reservation failed", "key_id", res.KeyID, "error", err)
	}
}

// renewWhileStreaming keeps a long stream's reservation alive (a
// reservation expires after Config.ReservationTTL so that a crashed
// instance's holds free themselves). The returned func stops it.
func (rl *Relay) renewWhileStreaming(res quota.Reservation) (stop func()) {
	every := rl.quotaCfg.ReservationTTL / 3
	if every <= 0 {
		every = time.Minute
	}
	var mu sync.Mutex
	var t *time.Timer
	stopped := false
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(every, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = rl.limiter.Renew(ctx, res)
		cancel()
		mu.Lock()
		if !stopped {
			t.Reset(every)
		}
		mu.Unlock()
	})
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

// standing is a key's current standing against its limits, for the usage
// API.
func (rl *Relay) standing(ctx context.Context, k *keys.Key) (quota.Standing, error) {
	limits, err := rl.keyLimits(k)
	if err != nil {
		return quota.Standing{}, err
	}
	return rl.limiter.Standing(ctx, k.ID, limits)
}

// adminLimits shows the relay's tiers and key standings to the admin API.
type adminLimits struct{ rl *Relay }

func (a adminLimits) Tiers() quota.Tiers { return a.rl.tiers }

func (a adminLimits) Standing(ctx context.Context, k *keys.Key) (quota.Standing, error) {
	return a.rl.standing(ctx, k)
}
