package admin_test

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/relaystation/relay/admin"
	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/keys"
)

func TestLogin(t *testing.T) {
	e := newEnv(t, nil)
	rec := e.loginAs("admin", testPassword, "")
	if rec.Code != http.StatusOK {
		t.Fatalf("login: %d %s", rec.Code, rec.Body)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	var tr admin.TokenResponse
	decode(t, rec, &tr)
	if tr.TokenType != "bearer" || tr.ExpiresIn != 3600 || tr.AccessToken == "" {
		t.Fatalf("login response %+v", tr)
	}

	var c jwt.RegisteredClaims
	tok, err := jwt.ParseWithClaims(tr.AccessToken, &c, func(*jwt.Token) (any, error) { return []byte(testSecret), nil },
		jwt.WithTimeFunc(e.clock.Now), jwt.WithValidMethods([]string{"HS256"}))
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	switch {
	case tok.Header["alg"] != "HS256",
		c.Issuer != "relay", c.Subject != "admin", c.ID == "",
		c.IssuedAt == nil || !c.IssuedAt.Equal(now),
		c.ExpiresAt == nil || !c.ExpiresAt.Equal(now.Add(time.Hour)):
		t.Fatalf("claims %+v, header %v", c, tok.Header)
	}
	// The token opens the key API.
	if rec := e.do(http.MethodGet, "/admin/api-keys", "", tr.AccessToken); rec.Code != http.StatusOK {
		t.Fatalf("list with a fresh token: %d %s", rec.Code, rec.Body)
	}
	// Every token is distinct (jti is random).
	if other := e.login(); other == tr.AccessToken {
		t.Fatal("two logins produced the same token")
	}
}

func TestLoginFailures(t *testing.T) {
	e := newEnv(t, func(c *admin.Config) { c.LoginRate = -1 })
	tests := []struct {
		name  string
		setup func(*http.Request)
		msg   string
	}{
		{"no credentials", func(*http.Request) {}, "HTTP Basic"},
		{"bearer instead of basic", func(r *http.Request) { r.Header.Set("Authorization", "Bearer x") }, "HTTP Basic"},
		{"malformed basic", func(r *http.Request) { r.Header.Set("Authorization", "Basic !!!") }, "HTTP Basic"},
		{"wrong password", func(r *http.Request) { r.SetBasicAuth("admin", "wrong") }, "invalid username or password"},
		{"wrong user", func(r *http.Request) { r.SetBasicAuth("root", testPassword) }, "invalid username or password"},
		{"both wrong", func(r *http.Request) { r.SetBasicAuth("root", "wrong") }, "invalid username or password"},
		{"empty password", func(r *http.Request) { r.SetBasicAuth("admin", "") }, "invalid username or password"},
		{"password prefix", func(r *http.Request) { r.SetBasicAuth("admin", testPassword[:5]) }, "invalid username or password"},
		{"password plus suffix", func(r *http.Request) { r.SetBasicAuth("admin", testPassword+"x") }, "invalid username or password"},
		{"user case", func(r *http.Request) { r.SetBasicAuth("Admin", testPassword) }, "invalid username or password"},
	}
	var msgs = map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/admin/login", nil)
			tt.setup(req)
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, req)
			ae := wantError(t, rec, http.StatusUnauthorized, apierror.Authentication, tt.msg)
			if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("WWW-Authenticate %q", rec.Header().Get("WWW-Authenticate"))
			}
			if rec.Header().Get("x-should-retry") != "false" {
				t.Error("x-should-retry not false")
			}
			msgs[ae.Error.Message] = true
		})
	}
	if len(msgs) != 2 {
		t.Errorf("failure messages %v: want one for missing and one for wrong credentials", msgs)
	}
	if strings.Contains(e.logs.String(), testPassword[:5]) || strings.Contains(e.logs.String(), "root") {
		t.Errorf("a credential reached the log: %s", e.logs)
	}
}

func TestLoginPasswordHash(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *admin.Config) { c.Password, c.PasswordHash, c.Username = "", hash, "ops" })
	if rec := e.loginAs("ops", "s3cret", ""); rec.Code != http.StatusOK {
		t.Fatalf("login with the hashed password: %d %s", rec.Code, rec.Body)
	}
	for _, c := range [][2]string{{"ops", "s3cre"}, {"admin", "s3cret"}, {"ops", string(hash)}} {
		wantError(t, e.loginAs(c[0], c[1], ""), http.StatusUnauthorized, apierror.Authentication, "invalid username or password")
	}
}

func TestLoginRateLimit(t *testing.T) {
	e := newEnv(t, func(c *admin.Config) { c.LoginRate = 3 })
	const ip = "198.51.100.7:5555"
	for i := range 3 {
		pass := "wrong"
		if i == 1 {
			pass = testPassword // successes count too: the limit is on attempts
		}
		if rec := e.loginAs("admin", pass, ip); rec.Code == http.StatusTooManyRequests {
			t.Fatalf("attempt %d limited", i+1)
		}
	}
	e.clock.Add(20 * time.Second)
	rec := e.loginAs("admin", testPassword, ip)
	wantError(t, rec, http.StatusTooManyRequests, apierror.RateLimit, "too many login attempts")
	if ra := rec.Header().Get("Retry-After"); ra != "40" {
		t.Errorf("Retry-After %q, want 40", ra)
	}
	// Another port of the same host is the same client; another host is not.
	wantError(t, e.loginAs("admin", testPassword, "198.51.100.7:6000"), http.StatusTooManyRequests, apierror.RateLimit)
	if rec := e.loginAs("admin", testPassword, "198.51.100.8:5555"); rec.Code != http.StatusOK {
		t.Fatalf("other client: %d", rec.Code)
	}
	// An IPv6 client is counted by its /64.
	for i := range 3 {
		e.loginAs("admin", "wrong", "[2001:db8:1:2::"+string(rune('a'+i))+"]:443")
	}
	wantError(t, e.loginAs("admin", testPassword, "[2001:db8:1:2:ffff::1]:443"), http.StatusTooManyRequests, apierror.RateLimit)
	if rec := e.loginAs("admin", testPassword, "[2001:db8:1:3::1]:443"); rec.Code != http.StatusOK {
		t.Fatalf("other /64: %d", rec.Code)
	}

	e.clock.Add(40 * time.Second) // the window is over
	if rec := e.loginAs("admin", testPassword, ip); rec.Code != http.StatusOK {
		t.Fatalf("after the window: %d %s", rec.Code, rec.Body)
	}

	// A negative LoginRate turns the limit off.
	off := newEnv(t, func(c *admin.Config) { c.LoginRate = -1 })
	for range 30 {
		if rec := off.loginAs("admin", "wrong", ip); rec.Code != http.StatusUnauthorized {
			t.Fatalf("LoginRate -1: %d", rec.Code)
		}
	}
}

// jwtPart is base64url without padding, as JWTs use.
func jwtPart(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestTokenAttacks: every way of presenting something other than a token
// this relay issued, and still valid, is a 401 authentication_error. The
// "valid" row proves the hand-made tokens are right apart from the attack.
func TestTokenAttacks(t *testing.T) {
	e := newEnv(t, nil)
	now := e.clock.Now()
	claims := func(mod func(*jwt.RegisteredClaims)) jwt.RegisteredClaims {
		c := jwt.RegisteredClaims{
			Issuer: "relay", Subject: "admin", ID: "test-jti",
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
		}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	sign := func(m jwt.SigningMethod, key any, c jwt.RegisteredClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte(testSecret)

	// Header says RS256, signature is HMAC-SHA256 under our secret: a
	// verifier that picks the algorithm from the header would check it as
	// RSA; one that trusts "any HMAC key" would accept it.
	payload := jwtPart(`{"iss":"relay","sub":"admin","jti":"x","iat":` + strconv.FormatInt(now.Unix(), 10) + `,"exp":` + strconv.FormatInt(now.Add(time.Hour).Unix(), 10) + `}`)
	rsConfused := func(alg string) string {
		signing := jwtPart(`{"alg":"`+alg+`","typ":"JWT"}`) + "." + payload
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(signing))
		return signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}

	loggedOut := e.login()
	if rec := e.do(http.MethodPost, "/admin/logout", "", loggedOut); rec.Code != http.StatusNoContent {
		t.Fatalf("logout: %d %s", rec.Code, rec.Body)
	}

	tests := []struct {
		name   string
		header string // the whole Authorization header
		msg    string
	}{
		{"none alg", "Bearer " + sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil)), "invalid admin token"},
		{"none alg, HS256 signature kept", "Bearer " + strings.Join(append([]string{jwtPart(`{"alg":"none","typ":"JWT"}`)}, strings.Split(sign(jwt.SigningMethodHS256, secret, claims(nil)), ".")[1:]...), "."), "invalid admin token"},
		{"HS512 with the right secret", "Bearer " + sign(jwt.SigningMethodHS512, secret, claims(nil)), "invalid admin token"},
		{"HS384 with the right secret", "Bearer " + sign(jwt.SigningMethodHS384, secret, claims(nil)), "invalid admin token"},
		{"RS256", "Bearer " + sign(jwt.SigningMethodRS256, rsaKey, claims(nil)), "invalid admin token"},
		{"RS256 header, HMAC signature", "Bearer " + rsConfused("RS256"), "invalid admin token"},
		{"lowercase hs256 header", "Bearer " + rsConfused("hs256"), "invalid admin token"},
		{"wrong secret", "Bearer " + sign(jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), claims(nil)), "invalid admin token"},
		{"expired", "Bearer " + sign(jwt.SigningMethodHS256, secret, claims(func(c *jwt.RegisteredClaims) {
			c.IssuedAt, c.ExpiresAt = jwt.NewNumericDate(now.Add(-2*time.Hour)), jwt.NewNumericDate(now.Add(-time.Second))
		})), "expired"},
		{"expired, wrong secret", "Bearer " + sign(jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), claims(func(c *jwt.RegisteredClaims) {
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Second))
		})), "invalid admin token"},
		{"no exp", "Bearer " + sign(jwt.SigningMethodHS256, secret, claims(func(c *jwt.RegisteredClaims) { c.ExpiresAt = nil })), "invalid admin token"},
		{"iat in the future", "Bearer " + sign(jwt.SigningMethodHS256, secret, claims(func(c *jwt.RegisteredClaims) {
			c.IssuedAt, c.ExpiresAt = jwt.NewNumericDate(now.Add(time.Hour)), jwt.NewNumericDate(now.Add(2*time.Hour))
		})), "invalid admin token"},
		{"nbf in the future", "Bearer " + sign(jwt.SigningMethodHS256, secret, claims(func(c *jwt.RegisteredClaims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Minute)) })), "invalid admin token"},
		{"wrong issuer", "Bearer " + sign(jwt.SigningMethodHS256, secret, claims(func(c *jwt.RegisteredClaims) { c.Issuer = "someone-else" })), "invalid admin token"},
		{"no issuer", "Bearer " + sign(jwt.SigningMethodHS256, secret, claims(func(c *jwt.RegisteredClaims) { c.Issuer = "" })), "invalid admin token"},
		{"wrong subject", "Bearer " + sign(jwt.SigningMethodHS256, secret, claims(func(c *jwt.RegisteredClaims) { c.Subject = "mallory" })), "invalid admin token"},
		{"no jti", "Bearer " + sign(jwt.SigningMethodHS256, secret, claims(func(c *jwt.RegisteredClaims) { c.ID = "" })), "invalid admin token"},
		{"garbage", "Bearer not-a-token", "invalid admin token"},
		{"three garbage parts", "Bearer a.b.c", "invalid admin token"},
		{"truncated signature", "Bearer " + func() string { s := sign(jwt.SigningMethodHS256, secret, claims(nil)); return s[:len(s)-5] }(), "invalid admin token"},
		{"relay key as token", "Bearer " + keys.Generate(keys.NewID()), "relay API key"},
		{"revoked after logout", "Bearer " + loggedOut, "revoked"},
		{"no header", "", "requires Authorization: Bearer"},
		{"empty bearer", "Bearer ", "requires Authorization: Bearer"},
		{"basic credentials", "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+testPassword)), "requires Authorization: Bearer"},
		{"token without scheme", sign(jwt.SigningMethodHS256, secret, claims(nil)), "requires Authorization: Bearer"},
	}
	valid := sign(jwt.SigningMethodHS256, secret, claims(nil))
	if rec := e.do(http.MethodGet, "/admin/api-keys", "", valid); rec.Code != http.StatusOK {
		t.Fatalf("valid hand-made token refused: %d %s", rec.Code, rec.Body)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, route := range [][2]string{{http.MethodGet, "/admin/api-keys"}, {http.MethodPost, "/admin/logout"}} {
				req := httptest.NewRequest(route[0], route[1], nil)
				if tt.header != "" {
					req.Header.Set("Authorization", tt.header)
				}
				rec := httptest.NewRecorder()
				e.h.ServeHTTP(rec, req)
				wantError(t, rec, http.StatusUnauthorized, apierror.Authentication, tt.msg)
				if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer ") {
					t.Errorf("WWW-Authenticate %q", rec.Header().Get("WWW-Authenticate"))
				}
			}
		})
	}
	// The key API behind the check is never reached: no key was created.
	if ks, _, _ := e.svc.List(t.Context(), keys.ListFilter{IncludeDeleted: true}); len(ks) != 0 {
		t.Fatalf("%d keys exist", len(ks))
	}
}

func TestTokenExpiresWithTTL(t *testing.T) {
	e := newEnv(t, func(c *admin.Config) { c.TokenTTL = 10 * time.Minute })
	tok := e.login()
	e.clock.Add(10*time.Minute - time.Second)
	if rec := e.do(http.MethodGet, "/admin/api-keys", "", tok); rec.Code != http.StatusOK {
		t.Fatalf("before expiry: %d", rec.Code)
	}
	e.clock.Add(time.Second)
	wantError(t, e.do(http.MethodGet, "/admin/api-keys", "", tok), http.StatusUnauthorized, apierror.Authentication, "expired")
}

func TestLogout(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.login(), e.login()
	if rec := e.do(http.MethodPost, "/admin/logout", "", a); rec.Code != http.StatusNoContent {
		t.Fatalf("logout: %d %s", rec.Code, rec.Body)
	}
	wantError(t, e.do(http.MethodGet, "/admin/api-keys", "", a), http.StatusUnauthorized, apierror.Authentication, "revoked")
	wantError(t, e.do(http.MethodPost, "/admin/logout", "", a), http.StatusUnauthorized, apierror.Authentication, "revoked")
	if rec := e.do(http.MethodGet, "/admin/api-keys", "", b); rec.Code != http.StatusOK {
		t.Fatalf("another session died with the logout: %d", rec.Code)
	}
}

// TestSecretsStayOutOfLogs: no password, token or relay key in any log
// line, across a session that handles all three.
func TestSecretsStayOutOfLogs(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.login()
	v := e.createKey(tok, `{"name":"logged"}`)
	rec := e.do(http.MethodPost, "/admin/api-keys/"+v.ID+"/rotate", "", tok)
	var rotated admin.KeyView
	decode(t, rec, &rotated)
	e.do(http.MethodPost, "/admin/logout", "", tok)
	e.loginAs("admin", "wrong-"+testPassword, "")
	logs := e.logs.String()
	for name, secret := range map[string]string{"password": testPassword, "token": tok, "token signature": tok[strings.LastIndex(tok, ".")+1:], "key": v.Key, "rotated key": rotated.Key} {
		if strings.Contains(logs, secret) {
			t.Errorf("the %s reached the log", name)
		}
	}
	for _, want := range []string{"admin login", "api key created", "api key rotated", "admin logout", "admin login failed"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %q line in the log", want)
		}
	}
}
