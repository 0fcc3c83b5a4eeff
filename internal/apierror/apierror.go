// Package apierror writes errors in the Anthropic API's shape, so every
// client and SDK that talks to the relay parses the relay's own errors the
// same way it parses Anthropic's:
//
//	{"type":"error","error":{"type":"invalid_request_error","message":"..."},"request_id":"req_..."}
//
// The mapping from domain errors to status and type lives here, once.
package apierror

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// Error types, as Anthropic names them.
const (
	InvalidRequest  = "invalid_request_error"
	Authentication  = "authentication_error"
	Billing         = "billing_error"
	Permission      = "permission_error"
	NotFound        = "not_found_error"
	Conflict        = "conflict_error"
	RequestTooLarge = "request_too_large"
	RateLimit       = "rate_limit_error"
	API             = "api_error"
	Timeout         = "timeout_error"
	Overloaded      = "overloaded_error"
)

// Error is an HTTP error in Anthropic's shape. It implements error so that
// packages can return it and have it written unchanged.
type Error struct {
	Status  int
	Type    string
	Message string
	// Header holds extra response headers (retry-after, Allow, …).
	Header http.Header
}

func (e *Error) Error() string { return e.Type + ": " + e.Message }

// New returns an Error with the type that Anthropic uses for status.
func New(status int, msg string) *Error {
	return &Error{Status: status, Type: TypeFor(status), Message: msg}
}

// TypeFor returns Anthropic's error type for an HTTP status.
func TypeFor(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusUnsupportedMediaType:
		return InvalidRequest
	case http.StatusUnauthorized:
		return Authentication
	case http.StatusPaymentRequired:
		return Billing
	case http.StatusForbidden:
		return Permission
	case http.StatusNotFound:
		return NotFound
	case http.StatusConflict:
		return Conflict
	case http.StatusRequestEntityTooLarge:
		return RequestTooLarge
	case http.StatusTooManyRequests:
		return RateLimit
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return Timeout
	case 529, http.StatusServiceUnavailable:
		return Overloaded
	}
	if status >= 500 {
		return API
	}
	return InvalidRequest
}

// Mapper turns a domain error into an *Error. It returns nil when it does
// not recognise err. The relay composes the domain packages' mappers with
// From so the mapping stays in one place.
type Mapper func(err error) *Error

// From returns the *Error for err: err itself when it is one, else the
// first mapper's answer, else a 500 api_error that reveals nothing of err.
func From(err error, mappers ...Mapper) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	for _, m := range mappers {
		if e := m(err); e != nil {
			return e
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return New(http.StatusGatewayTimeout, "request timed out")
	}
	return New(http.StatusInternalServerError, "internal error")
}

type body struct {
	Type      string `json:"type"`
	Error     detail `json:"error"`
	RequestID string `json:"request_id,omitempty"`
}

type detail struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// Write writes e with the request id. It sets x-should-retry so SDKs do not
// retry errors that cannot succeed on retry.
func Write(w http.ResponseWriter, e *Error, requestID string) {
	h := w.Header()
	for k, v := range e.Header {
		h[k] = v
	}
	h.Set("Content-Type", "application/json")
	h.Del("Content-Length")
	b, _ := json.Marshal(body{Type: "error", Error: detail{Type: e.Type, Message: e.Message}, RequestID: requestID})
	b = append(b, '\n')
	h.Set("Content-Length", strconv.Itoa(len(b)))
	if h.Get("x-should-retry") == "" && !retryable(e.Status) {
		h.Set("x-should-retry", "false")
	}
	w.WriteHeader(e.Status)
	_, _ = w.Write(b)
}

func retryable(status int) bool {
	return status == http.StatusRequestTimeout || status == http.StatusConflict || status == http.StatusTooManyRequests || status >= 500
}
