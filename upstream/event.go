package upstream

import "time"

// EventKind names what happened in a pool.
type EventKind int

const (
	// EventRetry: an attempt failed and the call tries again, on the same
	// upstream or (Failover) on another.
	EventRetry EventKind = iota + 1
	// EventCooldownStart: an upstream (or, with Model, an upstream for one
	// model) left rotation until Until.
	EventCooldownStart
	// EventCooldownEnd: its probe succeeded; it is back in rotation.
	EventCooldownEnd
	// EventDisabled: an upstream was taken out until enabled again, by an
	// admin or because it rejected its credential (Status 401 or 403).
	EventDisabled
	// EventEnabled: an admin put an upstream back.
	EventEnabled
)

func (k EventKind) String() string {
	switch k {
	case EventRetry:
		return "retry"
	case EventCooldownStart:
		return "cooldown_start"
	case EventCooldownEnd:
		return "cooldown_end"
	case EventDisabled:
		return "disabled"
	case EventEnabled:
		return "enabled"
	}
	return "unknown"
}

// Event is told to PoolConfig.OnEvent.
type Event struct {
	Kind     EventKind
	Upstream string
	// Model is set for a model's cooldown (429) and for retries.
	Model string
	// Status is the HTTP status that caused the event; 0 for a connection
	// error or an admin's action.
	Status int
	// Err is the connection error that caused the event, if any.
	Err error
	// Attempt is the number of the attempt that failed (EventRetry).
	Attempt int
	// Failover is true when the retry moves to an upstream the call has
	// not tried yet (and so does not wait).
	Failover bool
	// Delay is the wait before the retry (EventRetry) or the cooldown's
	// length (EventCooldownStart).
	Delay time.Duration
	// Until is when a cooldown ends.
	Until time.Time
	// Reason explains EventDisabled: "admin" or the rejected credential.
	Reason string
}
