package testenv

import (
	"net/http"
	"runtime"
	"testing"
	"time"
)

// CheckGoroutines fails t if, once everything the test started is closed
// (its cleanups registered after this call have run), more goroutines
// remain than when it was called, give or take two. Call it first in a
// test. It closes http.DefaultTransport's idle connections, whose reader
// goroutines would otherwise count, and prints every stack on failure.
func CheckGoroutines(t testing.TB) {
	t.Helper()
	const slack = 2
	closeIdle()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			closeIdle()
			n := runtime.NumGoroutine()
			if n <= before+slack {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 4<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d goroutines before the test, %d after everything was closed\n%s", before, n, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func closeIdle() {
	if tr, ok := http.DefaultTransport.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
}
