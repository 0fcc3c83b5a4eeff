// Package quota enforces a relay key's limits exactly: a lifetime token
// allowance (token_limit), daily, weekly and monthly token and cost
// budgets, requests and tokens per minute, and concurrent requests.
//
// Limits come from tiers (Tiers, loaded from YAML) with per-key overrides
// (Override); Tiers.Resolve gives a key's Limits. A Limiter enforces them:
// Memory for one relay instance, storage/redis.Limiter for several. Both
// pass the same conformance suite (storage/storagetest.TestLimiter).
//
// # Reserve, then settle
//
// Before forwarding a request, the relay calls Limiter.Reserve with the
// prompt's size as estimated by the offline tokenizer and the request's
// max_tokens. Reserve checks every limit and, atomically with the check,
// holds the request's reservation against every budget at once:
//
//	tokens = input estimate + min(max_tokens, OutputCap)    OutputCap: 4096 by default
//	cost   = Request.CostEstimateMicros                      the relay prices the same tokens
//
// It also counts the request against RPM, its tokens against TPM, and
// takes a concurrency lease. After the response, Settle replaces the
// reservation by the real usage: a smaller usage gives the difference
// back at once, a larger one is charged in full, past the limit if need
// be (the tokens were spent). A request that never reached the upstream
// is Released, which returns everything. A reservation that is not
// finished within Config.ReservationTTL (10 minutes; Renew extends it
// during long streams) expires and returns what it held, so a crashed
// relay instance cannot keep a key's budget or leases.
//
// A request is refused only when its own reservation does not fit:
// limit − used − reserved must be positive and at least the reservation.
// Capping the output part is what lets Claude Code, which sends
// max_tokens: 64000, through on a key with plenty left: it reserves the
// input and 4096 output tokens, not 64000.
//
// # Worst-case overshoot
//
// Every admission keeps used + reserved <= limit. After the last admission
// before a budget runs out, nothing more is admitted, so the budget ends
// at most the requests then in flight over their reservations. Exactly:
//
//	overshoot <= Σ (actual_i − reserved_i)   over the requests in flight at the last admission
//	          <= Σ [ (max_tokens_i − min(max_tokens_i, OutputCap)) + (input_i − estimate_i) ]
//
// With N requests in flight, each with max_tokens M and an input estimate
// off by E: overshoot <= N·(max(M − OutputCap, 0) + E). N is at most
// MaxConcurrent, and at most what was left divided by one reservation
// (estimate + min(M, OutputCap)). The offline tokenizer undercounts Claude
// by roughly 15–30 %, so E is up to about 0.3 × input. With max_tokens <=
// OutputCap only the estimate's error remains; with max_tokens <=
// 2·OutputCap the bound is within N·OutputCap + the estimate's error.
// Claude Code's 64000 against the default cap of 4096 can overshoot by
// up to 59904 + E per request in flight: a deployment that must never
// overshoot by more than a little sets a larger OutputCap (fewer requests
// fit in parallel when little is left) or a MaxConcurrent. Cost budgets
// obey the same formula in micro-dollars: Σ (actual cost − cost
// estimate).
//
// Measured with 100 goroutines against a key with 20,000 of 1,000,000
// tokens left, estimate 1,000 per request, real input 30 % over it and
// output = max_tokens (the formula's worst case), on Memory and Redis
// alike: max_tokens 64000 admits 3 and overshoots by 175,900 (bound
// 180,612); max_tokens 8192: 3, 8,476 (bound 13,188); max_tokens 4096: 3,
// no overshoot; max_tokens 1024: 9, 916 (bound 2,700). With usage within
// the reservations, 100 goroutines reserving and settling until refused
// end at or under the limit, never over.
//
// Outside the formula: a reservation that expires while its request still
// runs (renew long streams), and a first-sight Seed that misses records
// not written to the usage store yet.
//
// # What counts
//
// Token budgets count the kinds in Config.Counted: by default all four
// (input, output, cache creation, cache read), every token Anthropic
// reports. TPM counts Config.RateCounted: by default input, cache creation
// and output. Cache reads do not count, as they do not toward Anthropic's
// own per-minute input limits: a coding agent re-reads its whole
// conversation from the cache on every turn. Which prompt tokens will be
// cache reads is unknown before the response, so a reservation holds the
// whole prompt estimate when any prompt kind counts; Settle corrects it.
// Cost budgets count the cost the relay computes with its price table
// (cache writes and reads at their own prices), in integer micro-dollars,
// so sums are exact.
//
// # Windows
//
// Daily, weekly and monthly budgets are calendar windows in
// Config.Location: a day starts at local midnight (and lasts 23 or 25
// hours across a DST change), a week at midnight of Config.WeekStart
// (Monday by default), a month at midnight of the 1st. Usage is charged to
// the windows the request started in, as usage records are dated: a
// stream that runs past midnight counts for the day it started.
// token_limit never resets. Windows do not call Config.Seed when they roll
// over: every charge passes through the limiter, so a new window starts
// exactly at zero.
//
// RPM and TPM are one-minute sliding-window counters (RateWindow): the
// count at e milliseconds into the current minute is the previous
// minute's count × (60000 − e)/60000 plus the current minute's. It keeps
// two numbers per key instead of a log of requests, never lets a fixed
// minute boundary double the rate as fixed windows do, and admits at most
// 2 × RPM in any 60 seconds (at most RPM in each of two adjacent minutes).
// A request larger than TPM by itself is admitted into an empty window, so
// it waits instead of being refused forever. Retry-after is computed
// exactly from the counters: retrying a millisecond earlier is refused.
//
// # 402 or 429
//
// A budget that is used up — the reservation would not fit even if every
// request in flight used nothing — is answered 402 billing_error
// (Reason Budget, ErrBudgetExceeded): SDKs and Claude Code do not retry
// it, which is right, since retrying before the budget resets cannot
// succeed. The message names the budget, what is left and when it resets.
// Everything that passes by itself is 429 rate_limit_error with
// retry-after, which clients retry: RPM and TPM (RateLimit), the
// concurrency limit (Concurrency), and a budget with room that requests in
// flight hold (InFlight): they usually settle below their reservations and
// the request then fits. Both carry the key's own anthropic-ratelimit-*
// headers (Refusal.Headers); APIError maps a refusal to the relay's error
// answer.
//
// # Use from the relay
//
//	lim := quota.NewMemory(cfg) // or redis.NewLimiter(client, cfg, opts)
//	...
//	limits := tiers.Resolve(key.Tier, override)
//	out := cfg.OutputReservation(sniffed.MaxTokens)
//	est := tokenizer.EstimateRequest(body)
//	costEst := quota.Micros(price.Cost(usage.Usage{InputTokens: est, OutputTokens: out}))
//	res, err := lim.Reserve(ctx, quota.Request{KeyID: key.ID, Limits: limits,
//		InputEstimate: est, MaxTokens: sniffed.MaxTokens, CostEstimateMicros: costEst})
//	if e := quota.APIError(err); e != nil { write e (402 or 429 with headers); return }
//	if err != nil { 503: the limiter could not decide }
//	res.Standing.Headers(w.Header()) // after copying the upstream's headers
//	... forward; if nothing was sent upstream: lim.Release(ctx, res)
//	... during a long stream, every ReservationTTL/3: lim.Renew(ctx, res)
//	lim.Settle(context.WithoutCancel(ctx), res, quota.Actual{Input: u.InputTokens, ...,
//		CostMicros: quota.Micros(price.Cost(u))})
package quota
