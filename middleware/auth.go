package middleware

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/keys"
)

// Verifier checks a plaintext relay key. *keys.Service implements it.
type Verifier interface {
	Verify(ctx context.Context, key string) (*keys.Key, error)
}

// KeyFromRequest returns the relay key a client sent: x-api-key (SDK
// api_key, Claude Code ANTHROPIC_API_KEY) or Authorization: Bearer (SDK
// auth token, ANTHROPIC_AUTH_TOKEN). apiKeyHelper sends both; x-api-key
// wins.
func KeyFromRequest(r *http.Request) string {
	if k := r.Header.Get("X-Api-Key"); k != "" {
		return strings.TrimSpace(k)
	}
	auth := r.Header.Get("Authorization")
	if len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
		return strings.TrimSpace(auth[7:])
	}
	return ""
}

// Authenticate lets a request through only with a valid, enabled,
// unexpired relay key, which it stores in the request's Info (KeyFrom).
// Otherwise it answers 401 authentication_error or 403 permission_error.
func Authenticate(v Verifier) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r, info := ensureInfo(r)
			k, err := v.Verify(r.Context(), KeyFromRequest(r))
			if err != nil {
				e := KeyError(err)
				info.ErrorType = e.Type
				apierror.Write(w, e, info.RequestID)
				return
			}
			info.Key = k
			next.ServeHTTP(w, r)
		})
	}
}

// KeyError maps a keys error to the answer a client gets. The messages
// follow Anthropic's wording where one exists.
func KeyError(err error) *apierror.Error {
	switch {
	case errors.Is(err, keys.ErrMissingKey):
		return apierror.New(http.StatusUnauthorized, "x-api-key header is required")
	case errors.Is(err, keys.ErrInvalidKey):
		return apierror.New(http.StatusUnauthorized, "invalid x-api-key")
	case errors.Is(err, keys.ErrDisabled):
		return apierror.New(http.StatusForbidden, "this API key has been disabled")
	case errors.Is(err, keys.ErrExpired):
		return apierror.New(http.StatusForbidden, "this API key has expired")
	case errors.Is(err, keys.ErrModelNotAllowed):
		return apierror.New(http.StatusForbidden, "this API key may not use the requested model")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return apierror.New(http.StatusServiceUnavailable, "key verification did not finish in time")
	}
	return apierror.New(http.StatusInternalServerError, "could not verify the API key")
}
