package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Pool sends requests to a set of upstreams: it picks one (priority,
// weight, affinity, health), retries what failed before the answer was
// handed over (with backoff, on another upstream when there is one), and
// takes failing upstreams out of rotation for a while. Create it with
// NewPool; it is safe for concurrent use.
type Pool struct {
	members []*member
	byName  map[string]*member
	retry   RetryPolicy
	cool    CooldownPolicy
	log     *slog.Logger
	now     func() time.Time
	rand    func() float64
	onEvent func(Event)
	// transports are the ones the pool built, closed by Close.
	transports []*http.Transport

	// mu guards the mutable state of every member: breakers, in-flight
	// counts, round-robin weights and statistics. Critical sections are a
	// few field updates; nothing blocks while holding it.
	mu sync.Mutex
}

// member is one upstream and its state.
type member struct {
	up       *Upstream
	cfg      Config // validated copy: canonical ExtraHeaders, Weight ≥ 1
	globs    []glob // cfg.Models compiled
	idx      int
	weight   int
	nameHash uint64
	rt       http.RoundTripper
	extra    http.Header // ExtraHeaders without anthropic-beta
	betas    []string    // ExtraHeaders' anthropic-beta values

	// Guarded by Pool.mu.
	disabled string // why it is out until enabled; "" when enabled
	brk      breaker
	models   map[string]*breaker // 429 cooldowns per model
	inflight int
	current  int // smooth weighted round robin
	win      window
	requests int64
	errors   int64
	tokensIn int64
	tokensOu int64
	lastErr  string
	lastAt   time.Time
	// authFails counts 401/403 answers since the last success.
	authFails int
}

// maxModelBreakers bounds the per-model cooldowns an upstream keeps; model
// names come from clients.
const maxModelBreakers = 256

// NewPool validates cfg and returns a Pool.
func NewPool(cfg PoolConfig) (*Pool, error) {
	if len(cfg.Upstreams) == 0 {
		return nil, errors.New("upstream: PoolConfig.Upstreams needs at least one upstream")
	}
	p := &Pool{
		byName:  make(map[string]*member, len(cfg.Upstreams)),
		retry:   cfg.Retry.withDefaults(),
		cool:    cfg.Cooldown.withDefaults(),
		log:     cfg.Logger,
		now:     cfg.Now,
		rand:    cfg.Rand,
		onEvent: cfg.OnEvent,
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.rand == nil {
		p.rand = rand.Float64
	}
	built := make(map[TransportConfig]*http.Transport) // one transport per distinct setting
	for i, c := range cfg.Upstreams {
		where := fmt.Sprintf("upstream %d", i+1)
		if c.Name != "" {
			where = fmt.Sprintf("upstream %q", c.Name)
		}
		up, err := New(c.Name, c.BaseURL, c.Credential, c.Auth)
		if err != nil {
			return nil, fmt.Errorf("upstream: %s: %s", where, strings.TrimPrefix(err.Error(), "upstream: "))
		}
		if !validName(up.Name) {
			return nil, fmt.Errorf("upstream: %s: name %q must be 1 to 64 letters, digits, '.', '_', '-' or ':'", where, up.Name)
		}
		if err := c.check(); err != nil {
			return nil, fmt.Errorf("upstream: %s: %w", where, err)
		}
		if p.byName[up.Name] != nil {
			return nil, fmt.Errorf("upstream: two upstreams are named %q; give each a name", up.Name)
		}
		c.Name = up.Name
		c.Models = append([]string(nil), c.Models...)
		if c.ModelMap != nil {
			mm := make(map[string]string, len(c.ModelMap))
			for k, v := range c.ModelMap {
				mm[k] = v
			}
			c.ModelMap = mm
		}
		m := &member{up: up, cfg: c, globs: compileGlobs(c.Models), idx: i, weight: max(c.Weight, 1), nameHash: hashString(up.Name)}
		m.extra, m.betas = splitExtra(c.ExtraHeaders)
		m.cfg.ExtraHeaders = nil // kept split in extra and betas
		if c.Disabled {
			m.disabled = "configuration"
		}
		if cfg.Transport != nil {
			m.rt = cfg.Transport
		} else {
			tc := TransportConfig{DialTimeout: c.DialTimeout, TLSHandshakeTimeout: c.TLSHandshakeTimeout,
				UnencryptedHTTP2: c.H2C} // Config.check allows H2C on http:// only
			if c.ResponseHeaderTimeout > 10*time.Minute {
				tc.ResponseHeaderTimeout = c.ResponseHeaderTimeout // the pool's own timer handles shorter ones
			}
			if built[tc] == nil {
				built[tc] = NewTransport(tc)
				p.transports = append(p.transports, built[tc])
			}
			m.rt = built[tc]
		}
		p.members = append(p.members, m)
		p.byName[up.Name] = m
	}
	return p, nil
}

// splitExtra canonicalises extra headers and sets anthropic-beta apart,
// since those values join the client's list instead of replacing it.
func splitExtra(h http.Header) (http.Header, []string) {
	var betas []string
	out := make(http.Header, len(h))
	for k, vv := range h {
		ck := http.CanonicalHeaderKey(k)
		if ck == "Anthropic-Beta" {
			for _, v := range vv {
				for _, b := range strings.Split(v, ",") {
					if b = strings.TrimSpace(b); b != "" {
						betas = append(betas, b)
					}
				}
			}
			continue
		}
		out[ck] = append(out[ck], vv...)
	}
	return out, betas
}

// Close releases the idle connections of the transports the pool built.
// Requests in flight are not affected.
func (p *Pool) Close() {
	for _, tr := range p.transports {
		tr.CloseIdleConnections()
	}
}

// Call is one request for Pool.Do.
type Call struct {
	// Client is the incoming request: its method, query and headers are
	// forwarded (through CopyRequestHeaders); its body is not read. Required.
	Client *http.Request
	// Path is the API path to call, such as /v1/messages. Empty means
	// Client.URL.Path.
	Path string
	// Body is the request body, replayed byte for byte on every attempt
	// (nil for none). Do never modifies it.
	Body []byte
	// Model is the body's model, as sniffed; it chooses the upstreams that
	// serve it, keys 429 cooldowns, and is rewritten per Config.ModelMap.
	// Empty for requests without one.
	Model string
	// AffinityKey keeps requests with the same key on the same upstream
	// while it is healthy (see AffinityKey). Empty means no affinity.
	AffinityKey string
	// Upstream, when set, pins the call to that upstream: no other is
	// tried. For objects that live on one account (batches, files).
	Upstream string
}

// Result is an answer Do hands over: from then on the caller owns it and
// nothing is retried any more.
type Result struct {
	// Response is the upstream's answer, body unread. It is a success, an
	// error that is not worth retrying, or the last error when every
	// attempt failed (its body then buffered, unmodified).
	Response *http.Response
	// Upstream is the name of the upstream that answered.
	Upstream string
	// BaseURL is that upstream's API root, for rewriting absolute URLs in
	// answers (a batch's results_url).
	BaseURL string
	// Attempts is the number of attempts sent, this one included.
	Attempts int

	pool     *Pool
	m        *member
	cancel   context.CancelCauseFunc
	live     bool // the attempt still holds an in-flight slot
	released atomic.Bool
}

// Outcome is what the caller learnt while passing the body on.
type Outcome struct {
	// InputTokens (cache reads and writes included) and OutputTokens are
	// the usage the answer reported, for the per-upstream counters.
	InputTokens  int64
	OutputTokens int64
	// Failed is true when the body broke off or a stream ended with an
	// error event: an upstream failure after the first byte, which was not
	// retried but counts against the upstream. A client that went away is
	// not a failure.
	Failed bool
}

// Release ends the request: it frees the upstream's in-flight slot,
// records the outcome and closes the body. Call it exactly once per
// Result, after the body was passed on (it is safe to call again; later
// calls do nothing).
func (r *Result) Release(o Outcome) {
	if r == nil || !r.released.CompareAndSwap(false, true) {
		return
	}
	if r.Response != nil && r.Response.Body != nil {
		_ = r.Response.Body.Close()
	}
	if r.cancel != nil {
		r.cancel(nil)
	}
	if r.pool == nil || r.m == nil {
		return
	}
	r.pool.release(r, o)
}

// discard closes the answer without any accounting (the caller does it).
func (r *Result) discard() {
	r.pool, r.m = nil, nil
	r.Release(Outcome{})
}

func (p *Pool) release(r *Result, o Outcome) {
	var evs []Event
	now := p.now()
	p.mu.Lock()
	m := r.m
	if r.live {
		m.inflight--
	}
	m.tokensIn += max(o.InputTokens, 0)
	m.tokensOu += max(o.OutputTokens, 0)
	if o.Failed {
		m.errors++
		m.win.mark(now)
		m.lastErr, m.lastAt = "stream cut or ended by an error event", now
		if opened, d := m.brk.failure(now, &p.cool, false, false, 0); opened {
			evs = append(evs, Event{Kind: EventCooldownStart, Upstream: m.up.Name, Delay: d, Until: now.Add(d)})
		}
	}
	p.mu.Unlock()
	p.emit(evs)
}

// Do sends c to an upstream and returns its answer once the response
// headers are in. Attempts that fail before that — connection errors, 408,
// 409, 429, 500, 502, 503, 504, 529, and 401/403 (a rejected credential,
// on another upstream) — are retried per the RetryPolicy, on an upstream
// not tried yet when there is one, else after a jittered backoff or the
// upstream's retry-after when that fits the deadline. The body is replayed
// from c.Body every time.
//
// When an upstream answered, Do returns a Result even if every attempt
// failed: the last answer, unmodified. It returns an error only when no
// upstream answered at all: an *Error matching ErrUnavailable, ErrTimeout,
// ErrNoUpstream or ErrModelNotServed (MapError turns it into the client's
// answer), ErrUnknownUpstream for a bad c.Upstream, or the cause of ctx's
// end when the caller gave up.
//
// The caller must call Result.Release when done with the body.
func (p *Pool) Do(ctx context.Context, c Call) (*Result, error) {
	if c.Client == nil {
		return nil, errors.New("upstream: Call.Client is required")
	}
	if c.Path == "" {
		c.Path = c.Client.URL.Path
	}
	var pin *member
	if c.Upstream != "" {
		if pin = p.byName[c.Upstream]; pin == nil {
			return nil, fmt.Errorf("%w %q", ErrUnknownUpstream, c.Upstream)
		}
	}
	var key uint64
	hasKey := c.AffinityKey != ""
	if hasKey {
		key = hashString(c.AffinityKey)
	}
	start := p.now()
	deadline := start.Add(p.retry.Deadline)
	if dl, ok := ctx.Deadline(); ok {
		// No wait that the caller's own deadline would cut: better hand
		// over the last answer than nothing.
		deadline = minTime(deadline, start.Add(time.Until(dl)))
	}

	var (
		buf      [8]candidate
		tried    []bool
		attempts int
		last     *Result // the latest failed answer, body buffered
		lastM    *member
		lastErr  error
	)
	giveUp := func(kind error, retryAfter time.Duration) (*Result, error) {
		if last != nil {
			last.Attempts = attempts
			return last, nil
		}
		e := &Error{Kind: kind, Attempts: attempts, RetryAfter: retryAfter, Err: lastErr}
		if lastM != nil {
			e.Upstream = lastM.up.Name
		}
		if kind == ErrUnavailable && isTimeout(lastErr) {
			e.Kind = ErrTimeout
		}
		return nil, e
	}
	for round := 0; ; round++ {
		now := p.now()
		p.mu.Lock()
		cands, bl := p.eligible(&c, pin, now, buf[:0])
		var pick candidate
		if len(cands) > 0 {
			pick = p.choose(cands, tried, key, hasKey)
			p.reserve(pick, c.Model)
		}
		p.mu.Unlock()

		if pick.m == nil {
			switch {
			case !bl.served:
				return giveUp(ErrModelNotServed, 0)
			case !bl.enabled:
				return giveUp(ErrNoUpstream, 0)
			}
			// Everything that serves the model is cooling down or busy:
			// wait for the first one back, if that fits the deadline.
			d := bl.wait
			if d == 0 || bl.busy {
				d = max(backoff(&p.retry, attempts+1, p.rand()), time.Millisecond)
				if bl.wait > 0 {
					d = min(d, bl.wait)
				}
			}
			if round >= maxRounds || now.Add(d).After(deadline) {
				if lastErr != nil && last == nil {
					return giveUp(ErrUnavailable, 0)
				}
				return giveUp(ErrNoUpstream, bl.wait)
			}
			if err := sleep(ctx, d); err != nil {
				return nil, p.abort(last, err)
			}
			continue
		}

		attempts++
		if tried == nil {
			tried = make([]bool, len(p.members))
		}
		tried[pick.m.idx] = true
		res, h, retry, err := p.attempt(ctx, &c, pick)
		if err != nil && !retry {
			p.abandon(pick, c.Model) // the request could not even be built
			return nil, err
		}
		if ctx.Err() != nil {
			// The caller gave up: no verdict on the upstream.
			if res != nil {
				res.discard()
			}
			p.abandon(pick, c.Model)
			return nil, p.abort(last, context.Cause(ctx))
		}
		if err == nil && !retry {
			// Handed over as it is: a success, or an error not worth
			// retrying (which still counts against the upstream).
			if status := res.Response.StatusCode; h >= hFailure {
				ra, hasRA := retryAfter(res.Response.Header, p.now())
				p.failed(pick, c.Model, h, status, nil, ra, hasRA, false)
			} else {
				p.succeeded(pick, c.Model, h, status)
			}
			res.Attempts = attempts
			if last != nil {
				last.Release(Outcome{})
			}
			return res, nil
		}

		// The attempt failed. Keep its answer (if any) as the one to hand
		// over should nothing better come.
		var status int
		var ra time.Duration
		var hasRA bool
		if res != nil {
			status = res.Response.StatusCode
			ra, hasRA = retryAfter(res.Response.Header, p.now())
			bufferBody(res)
			if last != nil {
				last.Release(Outcome{})
			}
			last, lastErr = res, nil
		} else {
			lastErr = err
		}
		lastM = pick.m
		p.failed(pick, c.Model, h, status, err, ra, hasRA, true)
		if attempts >= p.retry.Attempts {
			return giveUp(ErrUnavailable, 0)
		}

		now = p.now()
		p.mu.Lock()
		failover := p.untriedEligible(&c, pin, now, tried)
		p.mu.Unlock()
		var d time.Duration
		if !failover {
			d = backoff(&p.retry, attempts, p.rand())
			if hasRA {
				d = max(d, ra)
			}
		}
		if now.Add(d).After(deadline) {
			return giveUp(ErrUnavailable, 0)
		}
		p.emit([]Event{{Kind: EventRetry, Upstream: pick.m.up.Name, Model: c.Model, Status: status, Err: err, Attempt: attempts, Failover: failover, Delay: d}})
		p.log.Debug("upstream attempt failed; retrying", "upstream", pick.m.up.Name, "model", c.Model, "status", status, "error", err, "attempt", attempts, "failover", failover, "delay", d)
		if err := sleep(ctx, d); err != nil {
			return nil, p.abort(last, err)
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// maxRounds bounds the waits of one call, whatever the clock says.
const maxRounds = 1000

// abort drops the answer kept for the caller, who gave up.
func (p *Pool) abort(last *Result, err error) error {
	if last != nil {
		last.Release(Outcome{})
	}
	return err
}

// reserve takes an in-flight slot and the probes of pick. p.mu is held.
func (p *Pool) reserve(pick candidate, model string) {
	m := pick.m
	m.inflight++
	if pick.probeUp {
		m.brk.probing = true
	}
	if pick.probeModel {
		if b := m.models[model]; b != nil {
			b.probing = true
		}
	}
}

// untriedEligible reports whether an upstream the call has not tried may
// take it now. p.mu is held.
func (p *Pool) untriedEligible(c *Call, pin *member, now time.Time, tried []bool) bool {
	var buf [8]candidate
	cands, _ := p.eligible(c, pin, now, buf[:0])
	for _, cd := range cands {
		if !tried[cd.m.idx] {
			return true
		}
	}
	return false
}

// attempt sends one request. It returns a Result holding the response
// (and the in-flight slot), or the transport error, and the verdict.
func (p *Pool) attempt(ctx context.Context, c *Call, pick candidate) (*Result, health, bool, error) {
	m := pick.m
	body := c.Body
	if to, ok := m.cfg.ModelMap[c.Model]; ok && c.Model != "" {
		body, _ = rewriteModel(body, to)
	}
	actx, cancel := context.WithCancelCause(ctx)
	req, err := m.up.NewRequest(actx, c.Client, c.Path, body)
	if err != nil {
		cancel(nil)
		return nil, hNeutral, false, err
	}
	m.applyExtra(req.Header)
	var timer *time.Timer
	if d := m.cfg.ResponseHeaderTimeout; d > 0 {
		timer = time.AfterFunc(d, func() { cancel(errHeaderTimeout) })
	}
	// The transport itself, not an http.Client: it never follows a
	// redirect (which would carry the credential elsewhere; a 3xx goes
	// back as it is), and it spares the client's per-request header copy.
	resp, err := m.rt.RoundTrip(req)
	if err == nil {
		// What http.Client checks for a caller: a RoundTripper of the
		// host's (PoolConfig.Transport) may break the contract.
		switch {
		case resp == nil:
			err = errors.New("upstream: the transport returned neither a response nor an error")
		case resp.Body == nil:
			resp.Body = http.NoBody
		}
	}
	if timer != nil && !timer.Stop() {
		// The header timeout fired: even if the answer got in just now,
		// its context is gone.
		if err == nil {
			resp.Body.Close()
		}
		err = fmt.Errorf("%w after %v", errHeaderTimeout, m.cfg.ResponseHeaderTimeout)
	}
	if err != nil {
		cancel(nil)
		return nil, classifyError(err), true, err
	}
	res := &Result{Response: resp, Upstream: m.up.Name, BaseURL: m.up.URL("", ""), pool: p, m: m, cancel: cancel, live: true}
	h, retry := classifyStatus(resp)
	return res, h, retry, nil
}

// applyExtra sets the upstream's extra headers on an outgoing request.
func (m *member) applyExtra(h http.Header) {
	for k, vv := range m.extra {
		h[k] = vv
	}
	if len(m.betas) == 0 {
		return
	}
	have := strings.Join(h["Anthropic-Beta"], ",")
	var add []string
	for _, b := range m.betas {
		if !hasToken(have, b) {
			add = append(add, b)
		}
	}
	switch {
	case len(add) == 0:
	case have == "":
		h["Anthropic-Beta"] = []string{strings.Join(add, ",")}
	default:
		h["Anthropic-Beta"] = []string{have + "," + strings.Join(add, ",")}
	}
}

func hasToken(list, tok string) bool {
	for list != "" {
		var t string
		t, list, _ = strings.Cut(list, ",")
		if strings.TrimSpace(t) == tok {
			return true
		}
	}
	return false
}

// maxErrorBody and errorBodyTimeout bound the error body kept while other
// attempts run: error bodies are a few hundred bytes, sent at once, but a
// proxy in between may trickle a page or never end it.
const (
	maxErrorBody     = 1 << 20
	errorBodyTimeout = 10 * time.Second
)

// bufferBody reads a failed attempt's body into memory and frees its
// connection and in-flight slot, so that it can be handed over unmodified
// later.
func bufferBody(r *Result) {
	resp := r.Response
	t := time.AfterFunc(errorBodyTimeout, func() { r.cancel(errHeaderTimeout) })
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	t.Stop()
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	r.cancel(nil)
	r.live = false // failed() frees the slot
	r.pool, r.m = nil, nil
}

// succeeded records an answer that goes to the caller.
func (p *Pool) succeeded(pick candidate, model string, h health, status int) {
	var evs []Event
	now := p.now()
	m := pick.m
	p.mu.Lock()
	m.requests++
	isErr := h != hOK
	m.win.add(now, isErr)
	if isErr {
		m.errors++
		m.lastErr, m.lastAt = strconv.Itoa(status)+" "+http.StatusText(status), now
	}
	switch h {
	case hOK, hError:
		m.authFails = 0
		if m.brk.success(pick.probeUp) {
			evs = append(evs, Event{Kind: EventCooldownEnd, Upstream: m.up.Name, Status: status})
		}
		if b := m.models[model]; b != nil {
			if b.success(pick.probeModel) {
				evs = append(evs, Event{Kind: EventCooldownEnd, Upstream: m.up.Name, Model: model, Status: status})
			}
			if !b.isOpen() {
				delete(m.models, model)
			}
		}
	default:
		p.abandonLocked(pick, model)
	}
	p.mu.Unlock()
	for _, e := range evs {
		p.log.Info("upstream back in rotation", "upstream", e.Upstream, "model", e.Model)
	}
	p.emit(evs)
}

// failed records a failed attempt, freeing its in-flight slot unless the
// answer goes to the caller (whose Release frees it).
func (p *Pool) failed(pick candidate, model string, h health, status int, err error, ra time.Duration, hasRA, free bool) {
	var evs []Event
	now := p.now()
	m := pick.m
	desc := ""
	if err != nil {
		desc = err.Error()
	} else {
		desc = strconv.Itoa(status) + " " + statusText(status)
	}
	strikes := 0 // 401/403 in a row, when not yet enough to disable
	p.mu.Lock()
	if free {
		m.inflight--
	}
	m.requests++
	m.errors++
	m.win.add(now, true)
	m.lastErr, m.lastAt = desc, now
	cooled := func(opened bool, d time.Duration, model string) {
		if opened {
			evs = append(evs, Event{Kind: EventCooldownStart, Upstream: m.up.Name, Model: model, Status: status, Err: err, Delay: d, Until: now.Add(d)})
		}
	}
	switch h {
	case hFailure, hRefused:
		opened, d := m.brk.failure(now, &p.cool, pick.probeUp, h == hRefused, 0)
		cooled(opened, d, "")
		if b := m.models[model]; b != nil {
			b.abandon(pick.probeModel)
		}
	case hRateLimited:
		if !hasRA {
			ra = 0
		}
		// The account answered: for the upstream itself that is a sign of
		// life. The rate limit is per model (Anthropic limits each model
		// class apart), so only this model leaves rotation here.
		if m.brk.success(pick.probeUp) {
			evs = append(evs, Event{Kind: EventCooldownEnd, Upstream: m.up.Name, Status: status})
		}
		b := m.models[model]
		if b == nil && model != "" && len(m.models) < maxModelBreakers {
			if m.models == nil {
				m.models = make(map[string]*breaker)
			}
			b = new(breaker)
			m.models[model] = b
		}
		if b != nil {
			opened, d := b.failure(now, &p.cool, pick.probeModel, true, ra)
			cooled(opened, d, model)
		} else if model == "" {
			opened, d := m.brk.failure(now, &p.cool, pick.probeUp, true, ra)
			cooled(opened, d, "")
		}
	case hCredential:
		m.authFails++
		p.abandonLocked(pick, model)
		if m.disabled == "" && m.authFails >= p.cool.AuthFailures {
			m.disabled = "credential rejected: " + desc
			m.brk = breaker{}
			evs = append(evs, Event{Kind: EventDisabled, Upstream: m.up.Name, Status: status, Reason: m.disabled})
		} else if m.disabled == "" {
			strikes = m.authFails
		}
	default:
		p.abandonLocked(pick, model)
	}
	p.mu.Unlock()
	if strikes > 0 {
		p.log.Warn("upstream refused its credential", "upstream", m.up.Name, "status", status,
			"in_a_row", strikes, "disabled_at", p.cool.AuthFailures)
	}
	for _, e := range evs {
		switch e.Kind {
		case EventDisabled:
			p.log.Error("UPSTREAM CREDENTIAL REJECTED: upstream taken out of rotation until an admin enables it; check its credential",
				"upstream", e.Upstream, "status", e.Status, "base_url", m.up.URL("", ""))
		case EventCooldownStart:
			p.log.Warn("upstream cooling down", "upstream", e.Upstream, "model", e.Model, "status", e.Status, "error", e.Err, "cooldown", e.Delay, "until", e.Until)
		case EventCooldownEnd:
			p.log.Info("upstream back in rotation", "upstream", e.Upstream)
		}
	}
	p.emit(evs)
}

func statusText(status int) string {
	if status == 529 {
		return "Overloaded"
	}
	return http.StatusText(status)
}

// abandon frees the slot and probes of an attempt that reached no verdict.
func (p *Pool) abandon(pick candidate, model string) {
	p.mu.Lock()
	pick.m.inflight--
	p.abandonLocked(pick, model)
	p.mu.Unlock()
}

func (p *Pool) abandonLocked(pick candidate, model string) {
	pick.m.brk.abandon(pick.probeUp)
	if b := pick.m.models[model]; b != nil {
		b.abandon(pick.probeModel)
	}
}

func (p *Pool) emit(evs []Event) {
	if p.onEvent == nil {
		return
	}
	for _, e := range evs {
		p.onEvent(e)
	}
}

// Enable puts an upstream back into rotation, with a clean slate: no
// cooldown, no failure count. It returns ErrUnknownUpstream for an unknown
// name; enabling an enabled upstream does nothing.
func (p *Pool) Enable(name string) error {
	m := p.byName[name]
	if m == nil {
		return fmt.Errorf("%w %q", ErrUnknownUpstream, name)
	}
	p.mu.Lock()
	was := m.disabled
	m.disabled = ""
	m.brk = breaker{}
	m.models = nil
	m.authFails = 0
	p.mu.Unlock()
	if was != "" {
		p.log.Info("upstream enabled", "upstream", name, "was", was)
		p.emit([]Event{{Kind: EventEnabled, Upstream: name}})
	}
	return nil
}

// Disable takes an upstream out of rotation until Enable; requests in
// flight to it finish. It returns ErrUnknownUpstream for an unknown name;
// disabling a disabled upstream does nothing.
func (p *Pool) Disable(name string) error {
	m := p.byName[name]
	if m == nil {
		return fmt.Errorf("%w %q", ErrUnknownUpstream, name)
	}
	p.mu.Lock()
	was := m.disabled
	if was == "" {
		m.disabled = "admin"
	}
	p.mu.Unlock()
	if was == "" {
		p.log.Warn("upstream disabled", "upstream", name, "reason", "admin")
		p.emit([]Event{{Kind: EventDisabled, Upstream: name, Reason: "admin"}})
	}
	return nil
}

// Names lists the upstreams in configuration order.
func (p *Pool) Names() []string {
	out := make([]string, len(p.members))
	for i, m := range p.members {
		out[i] = m.up.Name
	}
	return out
}

// Status reports every upstream, in configuration order.
func (p *Pool) Status() []Status {
	now := p.now()
	out := make([]Status, 0, len(p.members))
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.members {
		s := Status{
			Name:                m.up.Name,
			BaseURL:             m.up.URL("", ""),
			Auth:                m.up.Auth,
			Priority:            m.cfg.Priority,
			Weight:              m.weight,
			State:               StateHealthy,
			DisabledReason:      m.disabled,
			InFlight:            m.inflight,
			MaxConcurrent:       m.cfg.MaxConcurrent,
			ConsecutiveFailures: m.brk.fails,
			Requests:            m.requests,
			Errors:              m.errors,
			InputTokens:         m.tokensIn,
			OutputTokens:        m.tokensOu,
			LastError:           m.lastErr,
			LastErrorAt:         m.lastAt,
		}
		switch {
		case m.disabled != "":
			s.State = StateDisabled
		case m.brk.isOpen() && now.Before(m.brk.until):
			s.State, s.CooldownUntil = StateCoolingDown, m.brk.until
		case m.brk.isOpen():
			s.State = StateHalfOpen
		}
		for model, b := range m.models {
			if !b.isOpen() {
				continue
			}
			mc := ModelCooldown{Model: model}
			if now.Before(b.until) {
				mc.Until = b.until
			}
			s.ModelCooldowns = append(s.ModelCooldowns, mc)
		}
		slices.SortFunc(s.ModelCooldowns, func(a, b ModelCooldown) int { return strings.Compare(a.Model, b.Model) })
		s.RecentRequests, s.RecentErrors = m.win.sum(now)
		if s.RecentRequests > 0 {
			s.ErrorRate = min(float64(s.RecentErrors)/float64(s.RecentRequests), 1)
		}
		out = append(out, s)
	}
	return out
}
