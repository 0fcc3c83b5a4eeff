package middleware_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/middleware"
)

type fakeVerifier map[string]error

func (f fakeVerifier) Verify(_ context.Context, key string) (*keys.Key, error) {
	err, ok := f[key]
	if !ok {
		return nil, keys.ErrInvalidKey
	}
	if err != nil {
		return nil, err
	}
	return &keys.Key{ID: "key1", Name: key}, nil
}

func chain(h http.Handler, logger *slog.Logger, v middleware.Verifier) http.Handler {
	return middleware.RequestID(middleware.AccessLog(logger)(middleware.Recover(logger)(middleware.Authenticate(v)(h))))
}

func TestAuthenticate(t *testing.T) {
	v := fakeVerifier{"good": nil, "off": keys.ErrDisabled, "old": keys.ErrExpired}
	h := chain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, middleware.KeyFrom(r.Context()).ID)
	}), nil, v)
	tests := []struct {
		name, header, value string
		status              int
		body                string
	}{
		{"x-api-key", "X-Api-Key", "good", 200, "key1"},
		{"bearer", "Authorization", "Bearer good", 200, "key1"},
		{"bearer lower case", "Authorization", "bearer good", 200, "key1"},
		{"missing", "", "", 401, "authentication_error"},
		{"unknown", "X-Api-Key", "nope", 401, "authentication_error"},
		{"basic is not bearer", "Authorization", "Basic Z29vZA==", 401, "authentication_error"},
		{"disabled", "X-Api-Key", "off", 403, "permission_error"},
		{"expired", "X-Api-Key", "old", 403, "permission_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/", nil)
			if tt.header != "" {
				req.Header.Set(tt.header, tt.value)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.body) {
				t.Errorf("%d %s", rec.Code, rec.Body)
			}
			if id := rec.Header().Get("X-Request-Id"); !strings.HasPrefix(id, "req_relay_") {
				t.Errorf("X-Request-Id = %q", id)
			}
			if tt.status >= 400 && !strings.Contains(rec.Body.String(), rec.Header().Get("X-Request-Id")) {
				t.Errorf("the error body lacks the request id: %s", rec.Body)
			}
		})
	}
}

func TestRecoverAndAccessLog(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	h := chain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic(errors.New("boom"))
	}), logger, fakeVerifier{"sk-proxy-secret": nil})
	req := httptest.NewRequest("POST", "/v1/messages", nil)
	req.Header.Set("X-Api-Key", "sk-proxy-secret")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), `"api_error"`) {
		t.Errorf("panic answered %d %s", rec.Code, rec.Body)
	}
	out := logs.String()
	if !strings.Contains(out, "panic serving request") || !strings.Contains(out, "status=500") || !strings.Contains(out, "key_id=key1") {
		t.Errorf("logs:\n%s", out)
	}
	if strings.Contains(out, "sk-proxy-secret") {
		t.Error("the key reached the log")
	}
	if ids := strings.Count(out, rec.Header().Get("X-Request-Id")); ids != 2 {
		t.Errorf("request id on %d lines, want 2", ids)
	}

	// http.ErrAbortHandler is how a handler aborts a response: not recovered.
	abort := middleware.Recover(logger)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }))
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Errorf("recovered %v", v)
		}
	}()
	abort.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
}

// Flushing must reach the underlying writer through the middleware, or
// streams would be batched.
func TestFlushPassesThrough(t *testing.T) {
	h := middleware.RequestID(middleware.AccessLog(nil)(middleware.Recover(nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("event"))
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("flush: %v", err)
		}
	}))))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if !rec.Flushed {
		t.Error("not flushed")
	}
}

// Protecting a host's own route with relay keys.
func ExampleAuthenticate() {
	verifier := fakeVerifier{"sk-proxy-good": nil}
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello, key %s", middleware.KeyFrom(r.Context()).ID)
	})
	h := middleware.RequestID(middleware.Authenticate(verifier)(hello))

	for _, key := range []string{"sk-proxy-good", "sk-proxy-bad"} {
		req := httptest.NewRequest("GET", "/hello", nil)
		req.Header.Set("x-api-key", key)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		fmt.Println(rec.Code, strings.SplitN(rec.Body.String(), `,"request_id"`, 2)[0])
	}
	// Output:
	// 200 hello, key key1
	// 401 {"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}
}

func TestRequestIDsSortByTime(t *testing.T) {
	prev := middleware.NewRequestID()
	seen := map[string]bool{prev: true}
	for range 1000 {
		id := middleware.NewRequestID()
		if len(id) != 30 || !strings.HasPrefix(id, "req_relay_") || seen[id] {
			t.Fatalf("id %q", id)
		}
		if id[10:19] < prev[10:19] {
			t.Fatalf("%q sorts before the earlier %q", id, prev)
		}
		seen[id], prev = true, id
	}
}

func TestRealIP(t *testing.T) {
	var got string
	h := middleware.RealIP("X-Forwarded-For")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.RemoteAddr }))
	for _, tt := range []struct{ xff, want string }{
		{"", "10.0.0.9:5555"},
		{"203.0.113.7", "203.0.113.7:0"},
		{"1.2.3.4, 203.0.113.7", "203.0.113.7:0"}, // the client's own claim is ignored
		{"2001:db8::1", "[2001:db8::1]:0"},
		{"not-an-ip", "10.0.0.9:5555"},
	} {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = "10.0.0.9:5555"
		if tt.xff != "" {
			req.Header.Set("X-Forwarded-For", tt.xff)
		}
		h.ServeHTTP(httptest.NewRecorder(), req)
		if got != tt.want {
			t.Errorf("X-Forwarded-For %q: RemoteAddr %q, want %q", tt.xff, got, tt.want)
		}
	}
}
