package admin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/relaystation/relay/admin"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/storage/memory"
)

// FuzzBearerToken feeds arbitrary Authorization values, and mutations of
// a valid token, to an admin route: the only outcomes are 200 for the
// exact valid token and 401 for everything else — never a panic, a 5xx,
// or a changed token accepted.
func FuzzBearerToken(f *testing.F) {
	clock := newFakeClock()
	svc, err := keys.NewService(keys.Config{Store: memory.New(), BcryptCost: bcrypt.MinCost, Now: clock.Now})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = svc.Close(context.Background()) })
	h, err := admin.New(admin.Config{Keys: svc, Password: testPassword, Secret: []byte(testSecret), Now: clock.Now, LoginRate: -1})
	if err != nil {
		f.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/admin/login", nil)
	req.SetBasicAuth("admin", testPassword)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var tr admin.TokenResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil || tr.AccessToken == "" {
		f.Fatalf("login: %d %s", rec.Code, rec.Body)
	}
	valid := tr.AccessToken
	parts := strings.Split(valid, ".")
	f.Add(valid)
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add(`eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.` + parts[1] + ".")
	f.Add(keys.Prefix + strings.Repeat("a", keys.KeyLen-len(keys.Prefix)))
	f.Add("..")
	f.Add(strings.Repeat("A", 5000))
	f.Fuzz(func(t *testing.T, token string) {
		req := httptest.NewRequest(http.MethodGet, "/admin/api-keys", nil)
		req.Header["Authorization"] = []string{"Bearer " + token}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		// Independently of the handler: is this an HS256 token of ours?
		// (Fuzz workers are separate processes, each with its own login,
		// so "valid" differs between them; any token we signed is fine.)
		_, perr := jwt.Parse(token, func(*jwt.Token) (any, error) { return []byte(testSecret), nil },
			jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(clock.Now), jwt.WithIssuer("relay"))
		ours := perr == nil
		switch {
		case token == valid && rec.Code != http.StatusOK:
			t.Fatalf("the valid token got %d", rec.Code)
		case rec.Code == http.StatusOK && !ours:
			t.Fatalf("a token not signed by us was accepted: %q", token)
		case rec.Code != http.StatusOK && rec.Code != http.StatusUnauthorized:
			t.Fatalf("token %q got %d: %s", token, rec.Code, rec.Body)
		}
	})
}
