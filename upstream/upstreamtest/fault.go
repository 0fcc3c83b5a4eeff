package upstreamtest

import (
	"net/http"
	"time"
)

// AfterHeaders, as Fault.CutAfter or Fault.ErrorAfter, acts right after the
// 200 headers went out, before any event: the moment at which a relay can
// no longer fail over to another upstream.
const AfterHeaders = -1

// Fault is a misbehaviour the fake shows for one request (queued with
// [Server.Enqueue]) or for every request (with [Server.SetDefault]). It is
// how tests reach the relay's retry, failover and error paths, which a
// healthy upstream never exercises. The zero Fault is no fault.
//
// A fault acts in this order: Latency, then Drop, then Body, then an error
// Status; otherwise the normal answer goes out, shaped by EventDelay,
// CutAfter, ErrorAfter and OmitUsage. Header and RetryAfter apply to
// whatever is answered. Faults apply to every endpoint, but the stream
// shaping fields only to POST /v1/messages.
type Fault struct {
	// Status, from 400 up and without Body, answers with that status and an
	// Anthropic error body {"type":"error","error":{"type":..,"message":..},
	// "request_id":..}. With Body it is the status of Body (0 means 200).
	Status int
	// ErrorType overrides the error type that Status implies (see
	// ErrorTypeFor); for ErrorAfter it defaults to overloaded_error.
	ErrorType string
	// Message overrides the error message; clients match on wording (such
	// as "prompt is too long"), so tests can set the exact one.
	Message string
	// RetryAfter, when positive, sends retry-after (whole seconds, rounded
	// up) and retry-after-ms. For only one of them use Header.
	RetryAfter time.Duration
	// Header holds extra response headers such as x-should-retry.
	Header http.Header

	// Body replaces the answer with these raw bytes: an HTML page from a
	// proxy in between, or garbage. ContentType is its content type; empty
	// means the one the request would normally get (application/json, or
	// text/event-stream for a stream), which is what makes garbage
	// treacherous.
	Body        []byte
	ContentType string

	// Drop closes the connection without any answer, as a crashed or
	// unreachable upstream would.
	Drop bool

	// Latency and EventDelay override Config's when non-zero.
	Latency    time.Duration
	EventDelay time.Duration

	// CutAfter closes the connection abruptly after that many stream
	// events (pings count) or AfterHeaders. A JSON answer is cut after its
	// headers (AfterHeaders) or, for any positive count, in the middle of
	// its body.
	CutAfter int
	// ErrorAfter sends an error event (event: error, overloaded_error
	// unless ErrorType says otherwise) after that many stream events or
	// AfterHeaders, and ends the stream there cleanly, as the real API does
	// when it gets overloaded mid-answer. JSON answers ignore it.
	ErrorAfter int
	// OmitUsage leaves usage out of message_start, message_delta and the
	// JSON message, so tests see how the relay copes with no counts.
	OmitUsage bool
}

// IsZero reports whether f changes nothing.
func (f *Fault) IsZero() bool {
	return f.Status == 0 && f.ErrorType == "" && f.Message == "" && f.RetryAfter == 0 &&
		len(f.Header) == 0 && f.Body == nil && f.ContentType == "" && !f.Drop &&
		f.Latency == 0 && f.EventDelay == 0 && f.CutAfter == 0 && f.ErrorAfter == 0 && !f.OmitUsage
}

// ErrorFault answers with status and the matching Anthropic error type;
// an empty message means the default one for that type.
func ErrorFault(status int, message string) Fault {
	return Fault{Status: status, Message: message}
}

// HTMLFault answers 200 with an HTML page, as a captive portal or a
// misconfigured proxy does: the status says success, the body is no JSON.
func HTMLFault() Fault {
	return Fault{
		Body:        []byte("<!DOCTYPE html>\n<html><head><title>Gateway</title></head><body><h1>It works!</h1></body></html>\n"),
		ContentType: "text/html; charset=utf-8",
	}
}

// GarbageFault answers 200 with bytes that are neither JSON nor SSE under
// the content type the client expects.
func GarbageFault() Fault {
	return Fault{Body: []byte("\x00\xff\xfe garbage {\"type\":\n\x1b[0m\xc3\x28 not json\n\n")}
}

// ErrorTypeFor is the Anthropic error type the real API uses for status:
// invalid_request_error for unlisted 4xx, api_error for unlisted 5xx.
func ErrorTypeFor(status int) string {
	switch status {
	case 400:
		return "invalid_request_error"
	case 401:
		return "authentication_error"
	case 402:
		return "billing_error"
	case 403:
		return "permission_error"
	case 404:
		return "not_found_error"
	case 409:
		return "conflict_error"
	case 413:
		return "request_too_large"
	case 429:
		return "rate_limit_error"
	case 500:
		return "api_error"
	case 504:
		return "timeout_error"
	case 529:
		return "overloaded_error"
	}
	if status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}

// defaultMessage is the message the fake sends when a fault names none.
func defaultMessage(errType string) string {
	switch errType {
	case "authentication_error":
		return "invalid x-api-key"
	case "billing_error":
		return "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."
	case "permission_error":
		return "Your API key does not have permission to use the specified resource."
	case "not_found_error":
		return "Not found"
	case "conflict_error":
		return "Conflict"
	case "request_too_large":
		return "Request exceeds the maximum allowed number of bytes."
	case "rate_limit_error":
		return "Number of requests has exceeded your per-minute rate limit"
	case "api_error":
		return "Internal server error"
	case "timeout_error":
		return "Request timed out"
	case "overloaded_error":
		return "Overloaded"
	}
	return "Invalid request"
}
