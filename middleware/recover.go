package middleware

import (
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/relaystation/relay/internal/apierror"
)

// Recover turns a panic in next into a 500 api_error (when nothing was
// written yet) and a log line with the stack, instead of a dropped
// connection and a crashed server. http.ErrAbortHandler is re-panicked: it
// is how a handler deliberately aborts a response.
func Recover(logger *slog.Logger) func(http.Handler) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r, info := ensureInfo(r)
			rw := &statusWriter{ResponseWriter: w}
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(v)
				}
				logger.Error("panic serving request", "request_id", info.RequestID, "panic", v, "stack", string(debug.Stack()))
				if !rw.wrote {
					apierror.Write(rw, apierror.New(http.StatusInternalServerError, "internal error"), info.RequestID)
				}
			}()
			next.ServeHTTP(rw, r)
		})
	}
}
