package admin

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/middleware"
)

// KeyService is what the admin API needs from the keys package.
// *keys.Service implements it; tests and wrappers (auditing, say) may
// provide their own.
type KeyService interface {
	// Create issues a key and returns its record and its plaintext.
	Create(ctx context.Context, p keys.CreateParams) (*keys.Key, string, error)
	// Get returns a key, deleted or not; keys.ErrNotFound if none.
	Get(ctx context.Context, id string) (*keys.Key, error)
	// List returns a page of keys and the cursor of the next page.
	List(ctx context.Context, f keys.ListFilter) ([]*keys.Key, string, error)
	// Update applies fn to a key and saves it; keys.ErrNotFound for an
	// unknown or deleted key.
	Update(ctx context.Context, id string, fn func(*keys.Key) error) (*keys.Key, error)
	// Delete revokes a key for good; keys.ErrNotFound for an unknown or
	// deleted key.
	Delete(ctx context.Context, id string) error
	// Rotate gives a key a new secret; the old one keeps working for grace.
	Rotate(ctx context.Context, id string, grace time.Duration) (*keys.Key, string, error)
}

var _ KeyService = (*keys.Service)(nil)

// MinSecretLen is the shortest accepted Config.Secret: HS256 is only as
// strong as its key, and RFC 7518 asks for at least the hash size.
const MinSecretLen = 32

// Config configures a Handler.
type Config struct {
	// Keys manages the relay keys. Required.
	Keys KeyService
	// Username is the administrator's login name. Empty means "admin".
	Username string
	// Password is the administrator's password in plain text. Exactly one
	// of Password and PasswordHash is required.
	Password string
	// PasswordHash is a bcrypt hash of the administrator's password, for
	// hosts that would rather not hold the password itself.
	PasswordHash []byte
	// Secret signs the admin tokens (HS256). Required, at least
	// MinSecretLen bytes; `openssl rand -hex 32` makes a good one. Several
	// relay instances behind one load balancer must share it.
	Secret []byte
	// TokenTTL is how long a token is valid. Zero means one hour; it must
	// otherwise be at least a second.
	TokenTTL time.Duration
	// Issuer is the tokens' "iss" claim, checked on every request, so
	// tokens of another service that happens to share Secret are refused.
	// Empty means "relay".
	Issuer string
	// LoginRate bounds login attempts per client per minute. Zero means
	// 10; a negative value turns the limit off (for a host that limits
	// logins itself). The client is the host part of http.Request.RemoteAddr
	// (an IPv6 client by its /64): behind a reverse proxy, the host must
	// set RemoteAddr from the trusted forwarding header, or every client
	// shares the proxy's budget.
	LoginRate int
	// Revoker remembers logged-out tokens. Nil means an in-process
	// MemoryRevoker, which is right for one instance; several instances
	// need a shared one.
	Revoker Revoker
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Logger receives one line per login and per key change; nil discards
	// them. No token, password or key is ever logged.
	Logger *slog.Logger
}

// Handler serves the admin API. It is safe for concurrent use.
type Handler struct {
	keys       KeyService
	username   string
	userDigest [sha256.Size]byte
	passDigest [sha256.Size]byte // when no PasswordHash
	passHash   []byte
	secret     []byte
	ttl        time.Duration
	issuer     string
	revoker    Revoker
	limiter    *loginLimiter // nil: no limit
	now        func() time.Time
	log        *slog.Logger
	parser     *jwt.Parser

	limits Limits // nil until MountLimits

	mux  *http.ServeMux
	root http.Handler
}

// New returns a Handler for cfg. It fails when a required field is missing
// or a value is out of range.
func New(cfg Config) (*Handler, error) {
	if cfg.Keys == nil {
		return nil, errors.New("admin: Config.Keys is required")
	}
	switch {
	case cfg.Password == "" && len(cfg.PasswordHash) == 0:
		return nil, errors.New("admin: Config.Password or Config.PasswordHash is required")
	case cfg.Password != "" && len(cfg.PasswordHash) > 0:
		return nil, errors.New("admin: set only one of Config.Password and Config.PasswordHash")
	}
	if len(cfg.PasswordHash) > 0 {
		if _, err := bcrypt.Cost(cfg.PasswordHash); err != nil {
			return nil, fmt.Errorf("admin: Config.PasswordHash is not a bcrypt hash: %w", err)
		}
	}
	if len(cfg.Secret) < MinSecretLen {
		return nil, fmt.Errorf("admin: Config.Secret must be at least %d bytes", MinSecretLen)
	}
	switch {
	case cfg.TokenTTL == 0:
		cfg.TokenTTL = time.Hour
	case cfg.TokenTTL < time.Second:
		return nil, errors.New("admin: Config.TokenTTL must be at least one second")
	}
	if cfg.Username == "" {
		cfg.Username = "admin"
	}
	if cfg.Issuer == "" {
		cfg.Issuer = "relay"
	}
	if cfg.LoginRate == 0 {
		cfg.LoginRate = 10
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Revoker == nil {
		cfg.Revoker = NewMemoryRevoker(cfg.Now)
	}
	h := &Handler{
		keys:       cfg.Keys,
		username:   cfg.Username,
		userDigest: sha256.Sum256([]byte(cfg.Username)),
		passDigest: sha256.Sum256([]byte(cfg.Password)),
		passHash:   append([]byte(nil), cfg.PasswordHash...),
		secret:     append([]byte(nil), cfg.Secret...),
		ttl:        cfg.TokenTTL,
		issuer:     cfg.Issuer,
		revoker:    cfg.Revoker,
		now:        cfg.Now,
		log:        cfg.Logger,
		mux:        http.NewServeMux(),
	}
	if len(h.passHash) == 0 {
		h.passHash = nil
	}
	if cfg.LoginRate > 0 {
		h.limiter = newLoginLimiter(cfg.LoginRate, time.Minute, maxLoginClients)
	}
	h.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(h.issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(h.now),
	)

	h.mux.HandleFunc("POST /admin/login", h.login)
	h.mux.Handle("POST /admin/logout", h.authenticated(http.HandlerFunc(h.logout)))
	h.mux.Handle("GET /admin/api-keys", h.authenticated(http.HandlerFunc(h.listKeys)))
	h.mux.Handle("POST /admin/api-keys", h.authenticated(http.HandlerFunc(h.createKey)))
	h.mux.Handle("GET /admin/api-keys/{id}", h.authenticated(http.HandlerFunc(h.getKey)))
	h.mux.Handle("PATCH /admin/api-keys/{id}", h.authenticated(http.HandlerFunc(h.patchKey)))
	h.mux.Handle("DELETE /admin/api-keys/{id}", h.authenticated(http.HandlerFunc(h.deleteKey)))
	h.mux.Handle("POST /admin/api-keys/{id}/rotate", h.authenticated(http.HandlerFunc(h.rotateKey)))
	h.mux.HandleFunc(fallbackPattern, h.fallback)

	h.root = middleware.RequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Tokens, keys and key records must not land in a shared cache.
		w.Header().Set("Cache-Control", "no-store")
		h.mux.ServeHTTP(w, r)
	}))
	return h, nil
}

// ServeHTTP serves the admin API. Requests get a request id (the one an
// outer middleware.RequestID assigned, or a new one).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.root.ServeHTTP(w, r) }

// Handle mounts handler at pattern behind the same bearer-token check as the
// key routes: this is how reports, upstream status and the like join the
// admin API. pattern is an http.ServeMux pattern whose path starts with
// /admin/, such as "GET /admin/usage" or "/admin/upstreams/"; a handler
// finds the administrator's name with User. Like http.ServeMux.Handle,
// Handle panics on an invalid or conflicting pattern; a host calls it while
// wiring, before serving.
func (h *Handler) Handle(pattern string, handler http.Handler) {
	p := pattern
	if i := strings.IndexAny(p, " \t"); i >= 0 {
		p = strings.TrimLeft(p[i:], " \t")
	}
	if !strings.HasPrefix(p, "/admin/") {
		panic(fmt.Sprintf("admin: pattern %q: path must start with /admin/ (and name no host)", pattern))
	}
	if handler == nil {
		panic("admin: nil handler")
	}
	h.mux.Handle(pattern, h.authenticated(handler))
}

type userKey struct{}

// User returns the authenticated administrator's name ("sub" claim) in a
// handler mounted with Handle, or "".
func User(ctx context.Context) string {
	c, _ := ctx.Value(userKey{}).(*jwt.RegisteredClaims)
	if c == nil {
		return ""
	}
	return c.Subject
}

func claimsFrom(ctx context.Context) *jwt.RegisteredClaims {
	c, _ := ctx.Value(userKey{}).(*jwt.RegisteredClaims)
	return c
}

// fallbackPattern matches every request no route claims.
const fallbackPattern = "/"

// probeMethods are the methods fallback tries when it computes Allow.
var probeMethods = [...]string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// fallback answers 405 with Allow when the path exists under another
// method, else 404 — in the Anthropic error shape, which http.ServeMux's own
// plain-text answers would not be. It asks the mux which pattern each method
// would reach, so routes added with Handle are accounted for too.
func (h *Handler) fallback(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range probeMethods {
		if m == r.Method {
			continue
		}
		probe := r.WithContext(r.Context())
		probe.Method = m
		if _, p := h.mux.Handler(probe); p != fallbackPattern {
			allow = append(allow, m)
		}
	}
	if len(allow) == 0 {
		h.writeError(w, r, apierror.New(http.StatusNotFound, fmt.Sprintf("no admin route %s", r.URL.Path)))
		return
	}
	e := apierror.New(http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed for %s; allowed: %s", r.Method, r.URL.Path, strings.Join(allow, ", ")))
	e.Header = http.Header{"Allow": {strings.Join(allow, ", ")}}
	h.writeError(w, r, e)
}

// writeError writes e in the Anthropic shape and notes its type for the
// access log.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, e *apierror.Error) {
	if info := middleware.InfoFrom(r.Context()); info != nil {
		info.ErrorType = e.Type
	}
	apierror.Write(w, e, middleware.RequestIDFrom(r.Context()))
}
