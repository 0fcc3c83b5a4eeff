package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/relaystation/relay/admin"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/storage/memory"
)

const (
	testSecret   = "0123456789abcdef0123456789abcdef" // 32 bytes
	testPassword = "correct horse battery staple"
)

// testEnv is an admin Handler over a real keys.Service and an in-memory
// store, on a clock that moves only when the test says so.
type testEnv struct {
	t     *testing.T
	clock *fakeClock
	store *memory.Store
	svc   *keys.Service
	h     *admin.Handler
	logs  *syncBuffer
}

func newEnv(t *testing.T, mod func(*admin.Config)) *testEnv {
	t.Helper()
	e := &testEnv{t: t, clock: newFakeClock(), store: memory.New(), logs: &syncBuffer{}}
	logger := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc, err := keys.NewService(keys.Config{Store: e.store, BcryptCost: bcrypt.MinCost, Now: e.clock.Now, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	e.svc = svc
	cfg := admin.Config{Keys: svc, Password: testPassword, Secret: []byte(testSecret), Now: e.clock.Now, Logger: logger}
	if mod != nil {
		mod(&cfg)
	}
	if e.h, err = admin.New(cfg); err != nil {
		t.Fatal(err)
	}
	return e
}

// do sends one request to the Handler. token, when set, goes in
// Authorization: Bearer.
func (e *testEnv) do(method, target, body, token string) *httptest.ResponseRecorder {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}

func (e *testEnv) loginAs(user, pass, remoteAddr string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/admin/login", nil)
	req.SetBasicAuth(user, pass)
	if remoteAddr != "" {
		req.RemoteAddr = remoteAddr
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}

// login returns a fresh admin token.
func (e *testEnv) login() string {
	e.t.Helper()
	rec := e.loginAs("admin", testPassword, "")
	if rec.Code != http.StatusOK {
		e.t.Fatalf("login: %d %s", rec.Code, rec.Body)
	}
	var tr admin.TokenResponse
	decode(e.t, rec, &tr)
	return tr.AccessToken
}

// createKey creates a key over HTTP and returns its view (with plaintext).
func (e *testEnv) createKey(token, body string) admin.KeyView {
	e.t.Helper()
	rec := e.do(http.MethodPost, "/admin/api-keys", body, token)
	if rec.Code != http.StatusCreated {
		e.t.Fatalf("create %s: %d %s", body, rec.Code, rec.Body)
	}
	var v admin.KeyView
	decode(e.t, rec, &v)
	return v
}

func decode(t *testing.T, rec *httptest.ResponseRecorder, v any) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("decoding %s: %v", rec.Body, err)
	}
}

// apiError is the Anthropic error body.
type apiError struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
	RequestID string `json:"request_id"`
}

// wantError checks an Anthropic-shaped error with status and type, whose
// message contains every one of msg.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int, typ string, msg ...string) apiError {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	var e apiError
	decode(t, rec, &e)
	if e.Type != "error" || e.Error.Type != typ {
		t.Fatalf("error %+v, want type %q", e, typ)
	}
	if e.RequestID == "" || e.RequestID != rec.Header().Get("X-Request-Id") {
		t.Fatalf("request_id %q, X-Request-Id %q", e.RequestID, rec.Header().Get("X-Request-Id"))
	}
	for _, m := range msg {
		if !strings.Contains(e.Error.Message, m) {
			t.Fatalf("message %q does not contain %q", e.Error.Message, m)
		}
	}
	return e
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeClock is an injectable Now that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
