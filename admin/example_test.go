package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/relaystation/relay/admin"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/storage/memory"
)

// An administrator logs in with HTTP Basic and creates a key with the
// token, as in: curl -X POST $RELAY/admin/login -u admin:password, then
// curl -X POST $RELAY/admin/api-keys -H "Authorization: Bearer $TOKEN"
// -d '{"name": "User", "token_limit": 1000000}'.
func ExampleNew() {
	svc, err := keys.NewService(keys.Config{Store: memory.New(), BcryptCost: bcrypt.MinCost})
	if err != nil {
		panic(err)
	}
	defer svc.Close(context.Background())
	h, err := admin.New(admin.Config{
		Keys:     svc,
		Password: "password",
		Secret:   []byte("an example secret of 32+ bytes, from openssl rand"),
	})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/admin/login", nil)
	req.SetBasicAuth("admin", "password")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	var login admin.TokenResponse
	_ = json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	fmt.Println("login:", resp.Status, login.TokenType, login.ExpiresIn)

	req, _ = http.NewRequest(http.MethodPost, srv.URL+"/admin/api-keys", strings.NewReader(`{"name": "User", "token_limit": 1000000}`))
	req.Header.Set("Authorization", "Bearer "+login.AccessToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	var key admin.KeyView
	_ = json.NewDecoder(resp.Body).Decode(&key)
	resp.Body.Close()
	fmt.Println("create:", resp.Status, key.Name, key.TokenLimit, key.Enabled)
	fmt.Println("plaintext shown once:", strings.HasPrefix(key.Key, keys.Prefix))

	// The new key works at once.
	_, err = svc.Verify(context.Background(), key.Key)
	fmt.Println("verifies:", err == nil)
	// Output:
	// login: 200 OK bearer 3600
	// create: 201 Created User 1000000 true
	// plaintext shown once: true
	// verifies: true
}

// Later routes join the admin API behind the same login.
func ExampleHandler_Handle() {
	svc, _ := keys.NewService(keys.Config{Store: memory.New(), BcryptCost: bcrypt.MinCost})
	defer svc.Close(context.Background())
	h, _ := admin.New(admin.Config{Keys: svc, Password: "password", Secret: []byte("an example secret of 32+ bytes, from openssl rand")})
	h.Handle("GET /admin/stats", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "stats for %s", admin.User(r.Context()))
	}))

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/admin/stats", nil))
	fmt.Println("without a token:", rec.Code)

	req := httptest.NewRequest(http.MethodPost, "/admin/login", nil)
	req.SetBasicAuth("admin", "password")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var login admin.TokenResponse
	_ = json.Unmarshal(rec.Body.Bytes(), &login)

	req = httptest.NewRequest(http.MethodGet, "/admin/stats", nil)
	req.Header.Set("Authorization", "Bearer "+login.AccessToken)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Body)
	fmt.Println("with a token:", rec.Code, string(body))
	// Output:
	// without a token: 401
	// with a token: 200 stats for admin
}
