package middleware

import (
	"log/slog"
	"net"
	"net/http"
	"time"
)

// AccessLog writes one line per request when it ends: method, path, status,
// bytes, latency and what the handlers recorded in Info (key id, model,
// upstream, tokens). It never logs headers, so no key or token can reach
// the log through it.
func AccessLog(logger *slog.Logger) func(http.Handler) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r, info := ensureInfo(r)
			rw := &statusWriter{ResponseWriter: w}
			next.ServeHTTP(rw, r)
			status := rw.status
			if !rw.wrote {
				status = http.StatusOK
			}
			if r.Context().Err() != nil && info.Stream {
				status = 499
			}
			attrs := make([]slog.Attr, 0, 14)
			attrs = append(attrs,
				slog.String("request_id", info.RequestID),
				slog.String("method", r.Method),
				slog.String("path", r.URL.Path),
				slog.String("client", clientHost(r)),
				slog.Int("status", status),
				slog.Int64("bytes", rw.bytes),
				slog.Duration("latency", time.Since(info.Start)),
			)
			if info.Key != nil {
				attrs = append(attrs, slog.String("key_id", info.Key.ID))
			}
			if info.Model != "" {
				attrs = append(attrs, slog.String("model", info.Model), slog.Bool("stream", info.Stream))
			}
			if info.Upstream != "" {
				attrs = append(attrs, slog.String("upstream", info.Upstream))
			}
			if info.InputTokens != 0 || info.OutputTokens != 0 {
				attrs = append(attrs, slog.Int64("input_tokens", info.InputTokens), slog.Int64("output_tokens", info.OutputTokens))
			}
			if info.ErrorType != "" {
				attrs = append(attrs, slog.String("error_type", info.ErrorType))
			}
			logger.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
		})
	}
}

func clientHost(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}
