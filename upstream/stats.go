package upstream

import "time"

// Window of the recent error rate: six buckets of ten seconds, so the
// rate covers the last 50 to 60 seconds.
const (
	bucketSpan = 10 * time.Second
	buckets    = 6
)

// window counts attempts and errors over the last minute. It is guarded
// by the Pool's mutex.
type window struct {
	slot [buckets]struct {
		at       int64 // bucket number (unix time / bucketSpan)
		req, err int64
	}
}

func (w *window) add(now time.Time, isErr bool) {
	n := now.UnixNano() / int64(bucketSpan)
	b := &w.slot[n%buckets]
	if b.at != n {
		b.at, b.req, b.err = n, 0, 0
	}
	b.req++
	if isErr {
		b.err++
	}
}

// mark counts an error of an attempt already counted (a stream that
// broke off after its headers).
func (w *window) mark(now time.Time) {
	n := now.UnixNano() / int64(bucketSpan)
	b := &w.slot[n%buckets]
	if b.at != n {
		b.at, b.req, b.err = n, 0, 0
	}
	b.err++
}

// sum returns the attempts and errors of the buckets still in the window.
func (w *window) sum(now time.Time) (req, errs int64) {
	n := now.UnixNano() / int64(bucketSpan)
	for i := range w.slot {
		if b := &w.slot[i]; n-b.at < buckets {
			req += b.req
			errs += b.err
		}
	}
	return req, errs
}

// State is an upstream's place in rotation.
type State string

const (
	// StateHealthy: in rotation.
	StateHealthy State = "healthy"
	// StateCoolingDown: out of rotation until CooldownUntil.
	StateCoolingDown State = "cooling_down"
	// StateHalfOpen: the cooldown is over; the next request probes it.
	StateHalfOpen State = "half_open"
	// StateDisabled: out of rotation until an admin enables it.
	StateDisabled State = "disabled"
)

// Status is one upstream as the admin API shows it. It never holds the
// credential.
type Status struct {
	Name     string
	BaseURL  string
	Auth     AuthScheme
	Priority int
	Weight   int
	State    State
	// DisabledReason says who took the upstream out: "admin", or the
	// rejected credential ("credential rejected: 401 authentication_error").
	DisabledReason string
	InFlight       int
	MaxConcurrent  int // 0: unbounded
	// CooldownUntil is when a cooling upstream gets its probe; zero unless
	// State is StateCoolingDown.
	CooldownUntil time.Time
	// ConsecutiveFailures counts failures since the last success.
	ConsecutiveFailures int
	// ModelCooldowns are models this upstream rate-limited (429), with
	// when each gets its probe. The upstream still serves other models.
	ModelCooldowns []ModelCooldown
	// RecentRequests and RecentErrors count attempts over the last minute;
	// ErrorRate is their ratio (0 when idle).
	RecentRequests int64
	RecentErrors   int64
	ErrorRate      float64
	// Requests and Errors count attempts since the pool started; a retried
	// call counts once per attempt.
	Requests int64
	Errors   int64
	// InputTokens (cache reads and writes included) and OutputTokens are
	// what callers reported through Result.Release.
	InputTokens  int64
	OutputTokens int64
	// LastError describes the latest failure ("529 overloaded", "dial tcp:
	// connection refused"), and LastErrorAt when it happened.
	LastError   string
	LastErrorAt time.Time
}

// ModelCooldown is a model an upstream rate-limited.
type ModelCooldown struct {
	Model string
	// Until is when the model gets its probe; zero when the cooldown is
	// over and the probe pending.
	Until time.Time
}
