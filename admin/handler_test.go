package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/relaystation/relay/admin"
	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/middleware"
	"github.com/relaystation/relay/storage/memory"
)

func TestNewConfig(t *testing.T) {
	svc, err := keys.NewService(keys.Config{Store: memory.New(), BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	secret := []byte(testSecret)
	tests := []struct {
		name string
		cfg  admin.Config
		ok   bool
	}{
		{"minimal", admin.Config{Keys: svc, Password: "pw", Secret: secret}, true},
		{"hash", admin.Config{Keys: svc, PasswordHash: hash, Secret: secret}, true},
		{"no keys", admin.Config{Password: "pw", Secret: secret}, false},
		{"no password", admin.Config{Keys: svc, Secret: secret}, false},
		{"both passwords", admin.Config{Keys: svc, Password: "pw", PasswordHash: hash, Secret: secret}, false},
		{"hash not bcrypt", admin.Config{Keys: svc, PasswordHash: []byte("pw"), Secret: secret}, false},
		{"no secret", admin.Config{Keys: svc, Password: "pw"}, false},
		{"short secret", admin.Config{Keys: svc, Password: "pw", Secret: secret[:31]}, false},
		{"negative TTL", admin.Config{Keys: svc, Password: "pw", Secret: secret, TokenTTL: -1}, false},
		{"sub-second TTL", admin.Config{Keys: svc, Password: "pw", Secret: secret, TokenTTL: 999_999_999}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := admin.New(tt.cfg)
			if (err == nil) != tt.ok || (h == nil) == tt.ok {
				t.Fatalf("New: %v, %v; want ok=%v", h, err, tt.ok)
			}
		})
	}
}

func TestSecretIsCopied(t *testing.T) {
	secret := []byte(testSecret)
	e := newEnv(t, func(c *admin.Config) { c.Secret = secret })
	tok := e.login()
	secret[0] ^= 0xff // the caller reuses its buffer
	if rec := e.do(http.MethodGet, "/admin/api-keys", "", tok); rec.Code != http.StatusOK {
		t.Fatalf("%d: New kept the caller's secret slice", rec.Code)
	}
}

func TestRoutingErrors(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.login()
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodGet, "/admin/nothing", 404, ""},
		{http.MethodGet, "/elsewhere", 404, ""},
		{http.MethodGet, "/admin/api-keys/", 404, ""},
		{http.MethodGet, "/admin/api-keys/x/y", 404, ""},
		{http.MethodGet, "/admin/login", 405, "POST"},
		{http.MethodDelete, "/admin/logout", 405, "POST"},
		{http.MethodPut, "/admin/api-keys", 405, "GET, HEAD, POST"},
		{http.MethodDelete, "/admin/api-keys", 405, "GET, HEAD, POST"},
		{http.MethodPost, "/admin/api-keys/AAAAAAAAAAAA", 405, "GET, HEAD, PATCH, DELETE"},
		{http.MethodPut, "/admin/api-keys/AAAAAAAAAAAA", 405, "GET, HEAD, PATCH, DELETE"},
		{http.MethodGet, "/admin/api-keys/AAAAAAAAAAAA/rotate", 405, "POST"},
		{http.MethodOptions, "/admin/api-keys", 405, "GET, HEAD, POST"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rec := e.do(tt.method, tt.path, "", tok)
			typ := apierror.NotFound
			if tt.status == 405 {
				typ = apierror.InvalidRequest
			}
			wantError(t, rec, tt.status, typ)
			if got := rec.Header().Get("Allow"); got != tt.allow {
				t.Fatalf("Allow %q, want %q", got, tt.allow)
			}
		})
	}
	// A HEAD of a GET route works like GET, without a body.
	rec := e.do(http.MethodHead, "/admin/api-keys", "", tok)
	if rec.Code != http.StatusOK {
		t.Fatalf("HEAD: %d", rec.Code)
	}
}

func TestHandleMountsBehindAuth(t *testing.T) {
	e := newEnv(t, nil)
	var sawUser string
	e.h.Handle("GET /admin/usage", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawUser = admin.User(r.Context())
		_, _ = io.WriteString(w, "usage report")
	}))
	e.h.Handle("/admin/upstreams/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Method+" "+r.URL.Path)
	}))

	wantError(t, e.do(http.MethodGet, "/admin/usage", "", ""), http.StatusUnauthorized, apierror.Authentication)
	wantError(t, e.do(http.MethodGet, "/admin/upstreams/a", "", "garbage"), http.StatusUnauthorized, apierror.Authentication)
	if sawUser != "" {
		t.Fatal("the mounted handler ran without a token")
	}
	tok := e.login()
	rec := e.do(http.MethodGet, "/admin/usage", "", tok)
	if rec.Code != http.StatusOK || rec.Body.String() != "usage report" || sawUser != "admin" {
		t.Fatalf("mounted route: %d %q, user %q", rec.Code, rec.Body, sawUser)
	}
	if rec := e.do(http.MethodDelete, "/admin/upstreams/x", "", tok); rec.Body.String() != "DELETE /admin/upstreams/x" {
		t.Fatalf("subtree route: %d %q", rec.Code, rec.Body)
	}
	// 405 accounts for mounted routes too.
	rec = e.do(http.MethodPost, "/admin/usage", "", tok)
	wantError(t, rec, http.StatusMethodNotAllowed, apierror.InvalidRequest)
	if rec.Header().Get("Allow") != "GET, HEAD" {
		t.Fatalf("Allow %q", rec.Header().Get("Allow"))
	}

	for _, bad := range []string{"/usage", "GET /usage", "example.com/admin/x", "GET example.com/admin/x", "POST /admin/login"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Handle(%q) did not panic", bad)
				}
			}()
			e.h.Handle(bad, http.NotFoundHandler())
		}()
	}
}

// TestRequestID: the id of an outer middleware.RequestID is the one in
// errors; without one the Handler makes its own.
func TestRequestID(t *testing.T) {
	e := newEnv(t, nil)
	var outer string
	wrapped := middleware.RequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		outer = middleware.RequestIDFrom(r.Context())
		e.h.ServeHTTP(w, r)
	}))
	rec := httptest.NewRecorder()
	wrapped.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/admin/api-keys", nil))
	ae := wantError(t, rec, http.StatusUnauthorized, apierror.Authentication)
	if ae.RequestID != outer || !strings.HasPrefix(outer, "req_") {
		t.Fatalf("request_id %q, outer middleware's %q", ae.RequestID, outer)
	}
}

// TestMountedUnderPrefix: a host serves the admin API under its own prefix.
func TestMountedUnderPrefix(t *testing.T) {
	e := newEnv(t, nil)
	mux := http.NewServeMux()
	mux.Handle("/relay/admin/", http.StripPrefix("/relay", e.h))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/relay/admin/login", nil)
	req.SetBasicAuth("admin", testPassword)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login under a prefix: %d", resp.StatusCode)
	}
}

// TestConcurrentUse runs sessions side by side, for the race detector.
func TestConcurrentUse(t *testing.T) {
	e := newEnv(t, func(c *admin.Config) { c.LoginRate = 1000 })
	done := make(chan error, 8)
	for i := range 8 {
		go func() {
			done <- func() error {
				// Not e.login or e.createKey: they call t.Fatal, which
				// only the test's own goroutine may.
				rec := e.loginAs("admin", testPassword, "")
				var tr admin.TokenResponse
				if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil || rec.Code != http.StatusOK {
					return fmt.Errorf("login: %d %s", rec.Code, rec.Body)
				}
				tok := tr.AccessToken
				rec = e.do(http.MethodPost, "/admin/api-keys", `{"name":"c`+strconv.Itoa(i)+`"}`, tok)
				var v admin.KeyView
				if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || rec.Code != http.StatusCreated {
					return fmt.Errorf("create: %d %s", rec.Code, rec.Body)
				}
				for _, req := range [][3]string{
					{http.MethodGet, "/admin/api-keys?limit=3", ""},
					{http.MethodPatch, "/admin/api-keys/" + v.ID, `{"tier":"pro"}`},
					{http.MethodPost, "/admin/api-keys/" + v.ID + "/rotate", `{"grace_period_seconds":60}`},
					{http.MethodDelete, "/admin/api-keys/" + v.ID, ""},
					{http.MethodPost, "/admin/logout", ""},
				} {
					if rec := e.do(req[0], req[1], req[2], tok); rec.Code >= 300 {
						return fmt.Errorf("%s %s: %d %s", req[0], req[1], rec.Code, rec.Body)
					}
				}
				return nil
			}()
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
