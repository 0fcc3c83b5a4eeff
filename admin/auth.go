package admin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/middleware"
)

// TokenResponse is the body of a successful login.
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"` // always "bearer"
	ExpiresIn   int64  `json:"expires_in"` // seconds
}

const (
	basicChallenge  = `Basic realm="relay admin", charset="UTF-8"`
	bearerChallenge = `Bearer realm="relay admin"`
	// badCredentials is the one answer to a wrong user or a wrong password,
	// so that the answer does not reveal which user names exist.
	badCredentials = "invalid username or password"
)

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	now := h.now()
	ip := clientIP(r)
	if h.limiter != nil {
		if ok, wait := h.limiter.allow(ip, now); !ok {
			e := apierror.New(http.StatusTooManyRequests, "too many login attempts; try again later")
			e.Header = http.Header{"Retry-After": {strconv.Itoa(retryAfterSeconds(wait))}}
			h.log.LogAttrs(r.Context(), slog.LevelWarn, "admin login rate limited",
				slog.String("request_id", middleware.RequestIDFrom(r.Context())), slog.String("client", ip))
			h.writeError(w, r, e)
			return
		}
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		e := apierror.New(http.StatusUnauthorized, "login requires HTTP Basic credentials (curl -u user:password)")
		e.Header = http.Header{"Www-Authenticate": {basicChallenge}}
		h.writeError(w, r, e)
		return
	}
	if !h.checkCredentials(user, pass) {
		// The user name is not logged: people type passwords into it.
		h.log.LogAttrs(r.Context(), slog.LevelWarn, "admin login failed",
			slog.String("request_id", middleware.RequestIDFrom(r.Context())), slog.String("client", ip))
		e := apierror.New(http.StatusUnauthorized, badCredentials)
		e.Header = http.Header{"Www-Authenticate": {basicChallenge}}
		h.writeError(w, r, e)
		return
	}
	token, err := h.issue(now)
	if err != nil {
		h.log.LogAttrs(r.Context(), slog.LevelError, "admin token signing failed",
			slog.String("request_id", middleware.RequestIDFrom(r.Context())), slog.String("error", err.Error()))
		h.writeError(w, r, apierror.New(http.StatusInternalServerError, "internal error"))
		return
	}
	h.log.LogAttrs(r.Context(), slog.LevelInfo, "admin login",
		slog.String("request_id", middleware.RequestIDFrom(r.Context())), slog.String("admin", h.username), slog.String("client", ip))
	writeJSON(w, http.StatusOK, TokenResponse{AccessToken: token, TokenType: "bearer", ExpiresIn: int64(h.ttl / time.Second)})
}

// checkCredentials compares both the user name and the password in time
// independent of where they differ and of their lengths (digests have one
// length), and always does both comparisons, so the time taken does not
// tell a wrong user from a wrong password.
func (h *Handler) checkCredentials(user, pass string) bool {
	u := sha256.Sum256([]byte(user))
	userOK := subtle.ConstantTimeCompare(u[:], h.userDigest[:])
	var passOK int
	if h.passHash != nil {
		if bcrypt.CompareHashAndPassword(h.passHash, []byte(pass)) == nil {
			passOK = 1
		}
	} else {
		p := sha256.Sum256([]byte(pass))
		passOK = subtle.ConstantTimeCompare(p[:], h.passDigest[:])
	}
	return userOK&passOK == 1
}

// issue signs a token valid from now for the configured TTL.
func (h *Handler) issue(now time.Time) (string, error) {
	var jti [16]byte
	_, _ = rand.Read(jti[:]) // crypto/rand.Read never fails (Go 1.24+)
	claims := jwt.RegisteredClaims{
		Issuer:    h.issuer,
		Subject:   h.username,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(h.ttl)),
		ID:        base64.RawURLEncoding.EncodeToString(jti[:]),
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(h.secret)
}

// logout revokes the presented token until it would have expired anyway.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	c := claimsFrom(r.Context())
	if err := h.revoker.Revoke(r.Context(), c.ID, c.ExpiresAt.Time); err != nil {
		h.log.LogAttrs(r.Context(), slog.LevelError, "admin token revocation failed",
			slog.String("request_id", middleware.RequestIDFrom(r.Context())), slog.String("error", err.Error()))
		h.writeError(w, r, apierror.New(http.StatusInternalServerError, "could not revoke the token"))
		return
	}
	h.log.LogAttrs(r.Context(), slog.LevelInfo, "admin logout",
		slog.String("request_id", middleware.RequestIDFrom(r.Context())), slog.String("admin", c.Subject))
	w.WriteHeader(http.StatusNoContent)
}

// authenticated lets a request through to next only with a valid admin
// token, whose claims it puts in the context (User).
func (h *Handler) authenticated(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, e := h.verify(r.Context(), bearerToken(r))
		if e != nil {
			if e.Status == http.StatusUnauthorized {
				e.Header = http.Header{"Www-Authenticate": {bearerChallenge}}
			}
			h.writeError(w, r, e)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, c)))
	})
}

// bearerToken returns the token of an "Authorization: Bearer" header, or "".
// Unlike middleware.KeyFromRequest it ignores x-api-key: the admin API takes
// tokens, never relay keys.
func bearerToken(r *http.Request) string {
	auth := r.Header.Get("Authorization")
	if len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
		return strings.TrimSpace(auth[7:])
	}
	return ""
}

// verify checks a token: HS256 only (no "none", no algorithm the caller
// picks), our signature, our issuer, our administrator, issued in the past,
// not expired, not revoked. The error is a ready answer.
func (h *Handler) verify(ctx context.Context, token string) (*jwt.RegisteredClaims, *apierror.Error) {
	switch {
	case token == "":
		return nil, apierror.New(http.StatusUnauthorized, "the admin API requires Authorization: Bearer <token>; get a token from POST /admin/login")
	case strings.HasPrefix(token, keys.Prefix):
		return nil, apierror.New(http.StatusUnauthorized, "a relay API key is not an admin token; get a token from POST /admin/login")
	}
	var c jwt.RegisteredClaims
	_, err := h.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if t.Method != jwt.SigningMethodHS256 { // WithValidMethods already refused it; belt and braces
			return nil, fmt.Errorf("unexpected signing method %v", t.Header["alg"])
		}
		return h.secret, nil
	})
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		// Claims are validated only after the signature checked out, so
		// saying "expired" tells nothing to someone without the secret.
		return nil, apierror.New(http.StatusUnauthorized, "the admin token has expired; log in again")
	case err != nil:
		return nil, apierror.New(http.StatusUnauthorized, "invalid admin token")
	case c.Subject != h.username || c.ID == "":
		return nil, apierror.New(http.StatusUnauthorized, "invalid admin token")
	}
	revoked, err := h.revoker.Revoked(ctx, c.ID)
	if err != nil {
		h.log.LogAttrs(ctx, slog.LevelError, "admin token revocation check failed",
			slog.String("request_id", middleware.RequestIDFrom(ctx)), slog.String("error", err.Error()))
		return nil, apierror.New(http.StatusInternalServerError, "could not check the admin token")
	}
	if revoked {
		return nil, apierror.New(http.StatusUnauthorized, "the admin token has been revoked; log in again")
	}
	return &c, nil
}

// retryAfterSeconds rounds a wait up to whole seconds, at least one.
func retryAfterSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}
