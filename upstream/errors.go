package upstream

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/relaystation/relay/internal/apierror"
)

// Errors of Pool.Do, matched with errors.Is. When an upstream answered at
// all, Do returns its answer instead (the last one, body unmodified), so
// these mean that no upstream answered.
var (
	// ErrUnavailable: every attempt failed to connect or lost the
	// connection before the response headers. A relay answers 502.
	ErrUnavailable = errors.New("upstream: no upstream could be reached")
	// ErrTimeout: the last attempt timed out (connect, TLS handshake or
	// response headers). A relay answers 504.
	ErrTimeout = errors.New("upstream: the upstream did not answer in time")
	// ErrNoUpstream: no upstream may take the request now — every one that
	// serves the model is disabled, cooling down or at MaxConcurrent, and
	// none comes back within the retry deadline. A relay answers 503 with
	// the retry-after of Error.RetryAfter.
	ErrNoUpstream = errors.New("upstream: no upstream is available")
	// ErrModelNotServed: no upstream serves the requested model (see
	// Config.Models). A relay answers 404, as the real API does for an
	// unknown model.
	ErrModelNotServed = errors.New("upstream: no upstream serves this model")
	// ErrUnknownUpstream: Enable, Disable or Call.Upstream named an
	// upstream the pool does not have.
	ErrUnknownUpstream = errors.New("upstream: unknown upstream")
)

// Error is the error Pool.Do returns when no upstream answered. It matches
// one of the sentinels above with errors.Is, and the cause of the last
// failure (a *net.OpError, say) too.
type Error struct {
	// Kind is ErrUnavailable, ErrTimeout, ErrNoUpstream or ErrModelNotServed.
	Kind error
	// Upstream is the last upstream tried, if any.
	Upstream string
	// Attempts is how many attempts were sent.
	Attempts int
	// RetryAfter, with ErrNoUpstream, is when the first cooling upstream
	// comes back (zero when unknown).
	RetryAfter time.Duration
	// Err is the last failure's cause, if any.
	Err error
}

func (e *Error) Error() string {
	s := e.Kind.Error()
	if e.Upstream != "" {
		s += " (last tried " + e.Upstream + ", " + strconv.Itoa(e.Attempts) + " attempts)"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// MapError is an apierror.Mapper for Pool.Do's errors: 502 api_error for
// ErrUnavailable, 504 timeout_error for ErrTimeout, 503 overloaded_error
// with retry-after for ErrNoUpstream, 404 not_found_error for
// ErrModelNotServed. The messages name no upstream and no address.
func MapError(err error) *apierror.Error {
	var ue *Error
	if !errors.As(err, &ue) {
		return nil
	}
	switch ue.Kind {
	case ErrTimeout:
		return apierror.New(http.StatusGatewayTimeout, "the upstream API did not answer in time")
	case ErrNoUpstream:
		e := apierror.New(http.StatusServiceUnavailable, "no upstream API is available right now; retry later")
		if ue.RetryAfter > 0 {
			secs := int64((ue.RetryAfter + time.Second - 1) / time.Second)
			e.Header = http.Header{"Retry-After": {strconv.FormatInt(secs, 10)}}
		}
		return e
	case ErrModelNotServed:
		return apierror.New(http.StatusNotFound, "model: this relay serves no such model")
	}
	return &apierror.Error{Status: http.StatusBadGateway, Type: apierror.API, Message: "the upstream API could not be reached"}
}
