package middleware

import (
	"net/http"
)

// statusWriter remembers the status and size of a response. It keeps
// http.Flusher and the rest reachable through Unwrap, which
// http.ResponseController uses, so streaming still flushes per event.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status = code
		w.wrote = code >= 200 // 1xx responses are informational
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Flush lets handlers that type-assert http.Flusher keep working.
func (w *statusWriter) Flush() {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	http.NewResponseController(w.ResponseWriter).Flush() //nolint:errcheck // best effort, as http.Flusher
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
