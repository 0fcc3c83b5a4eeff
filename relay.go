package relay

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaystation/relay/admin"
	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/internal/tokenizer"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/middleware"
	"github.com/relaystation/relay/quota"
	"github.com/relaystation/relay/upstream"
	"github.com/relaystation/relay/usage"
)

// DefaultMaxBodyBytes is Anthropic's own limit for Messages requests.
const DefaultMaxBodyBytes = 32 << 20

// Config configures a Relay. Every zero value is documented and usable,
// except the three required fields: UpstreamCredential, Keys and Usage.
type Config struct {
	// UpstreamURL is the Anthropic API root. Empty means
	// https://api.anthropic.com.
	UpstreamURL string
	// UpstreamCredential is the real Anthropic API key (or token, with
	// UpstreamBearer). Required unless Upstreams is set. It is sent only
	// upstream.
	UpstreamCredential string
	// UpstreamBearer sends the credential as Authorization: Bearer instead
	// of x-api-key.
	UpstreamBearer bool
	// Upstreams, when set, replaces UpstreamURL/UpstreamCredential with a
	// pool of several accounts or base URLs: priority groups, weights,
	// session affinity, failover and cooldown (see package upstream).
	Upstreams []upstream.Config
	// Retry and Cooldown tune the pool; zero values are upstream's
	// defaults (3 attempts within 30 s; cooldowns up to 5 minutes).
	Retry    upstream.RetryPolicy
	Cooldown upstream.CooldownPolicy
	// Transport carries upstream requests. Nil means transports from
	// upstream.NewTransport: large keep-alive pools, HTTP/2, no overall
	// timeout on streams.
	Transport http.RoundTripper

	// Keys stores relay keys. Required.
	Keys keys.Store
	// Usage stores usage records. Required.
	Usage usage.Store

	// Secret is the server secret: it signs admin JWTs and keys the HMAC of
	// the verified-key cache. Nil means a random secret per Relay, which
	// logs admins out on restart; set it (32+ bytes) in production.
	Secret []byte
	// AdminUsername is the admin login name. Empty means "admin".
	AdminUsername string
	// AdminPassword or AdminPasswordHash (bcrypt) enables the admin API.
	// With neither, AdminHandler answers 404 to everything.
	AdminPassword     string
	AdminPasswordHash []byte
	// AdminTokenTTL is the admin JWT lifetime. Zero means 1 hour.
	AdminTokenTTL time.Duration
	// BcryptCost is the cost of new key hashes. Zero means 10.
	BcryptCost int
	// KeyEvents, when set, carries key changes between relay instances
	// (storage/redis.Invalidator): a key disabled, deleted or rotated on
	// one instance stops working on the others at once. Without it each
	// instance notices within a second by rechecking the store.
	KeyEvents KeyEvents
	// AdminRevoker keeps logged-out admin tokens; nil means in memory (one
	// instance). storage/redis.Revoker shares them between instances.
	AdminRevoker admin.Revoker

	// Tiers defines the limits of each key tier (token budgets, cost
	// budgets, RPM, TPM, concurrency); a key's own overrides and its
	// token_limit go on top. The zero value has no limits: only a key's
	// token_limit applies.
	Tiers quota.Tiers
	// Quota configures the in-process limiter (time zone of the calendar
	// windows, output reservation cap, which token kinds count). Its Seed
	// and Now, when nil, are filled in from Usage and Now.
	Quota quota.Config
	// Limiter enforces the limits. Nil means quota.NewMemory(Quota), right
	// for one relay instance; several instances share a storage/redis
	// Limiter (build its Config with SeedFromUsage).
	Limiter quota.Limiter
	// NoLimitHeaders leaves out the key's anthropic-ratelimit-* headers on
	// successful answers (then the upstream's pass through).
	NoLimitHeaders bool

	// Pricing prices usage records. Nil means usage.DefaultPricing():
	// Anthropic's list prices, unknown models priced as Sonnet.
	Pricing *usage.Pricing

	// MaxBodyBytes bounds request bodies. Zero means 32 MiB, as upstream.
	MaxBodyBytes int64
	// StreamIdleTimeout cuts an answer whose upstream sent nothing (not
	// even a ping) for this long. Zero means 5 minutes; Anthropic pings
	// streams every few seconds.
	StreamIdleTimeout time.Duration
	// Retention is how long raw usage records (the request log) are kept;
	// daily rollups are kept for good, so reports over any range stay
	// exact. Zero keeps every record.
	Retention time.Duration
	// SpoolDir is where usage records wait on disk while the usage store
	// is down or slow, and are replayed from when it is back. Empty means
	// no spool: records then wait in memory (bounded), and a long outage
	// can drop some. The standalone server uses RELAY_DATA_DIR/spool.
	SpoolDir string
	// ClientIPHeader names the header a trusted load balancer or reverse
	// proxy puts the client's address in (X-Forwarded-For, X-Real-Ip).
	// Set it only when every request passes through such a proxy: usage
	// records, the admin login limiter and the access log then name the
	// client. Empty means the connection's address.
	ClientIPHeader string
	// BodyReadTimeout bounds the time to read a request body, so a client
	// that sends slowly cannot hold a connection and a buffer forever.
	// Zero means 2 minutes (enough for 32 MiB over a slow link).
	BodyReadTimeout time.Duration
	// PublicURL is the relay's address as clients see it, used to rewrite
	// a message batch's absolute results_url. Empty means it is derived
	// from each request (scheme, Host and mount prefix).
	PublicURL string

	// Logger receives one access line per request and operational
	// messages. Nil discards them. Secrets are never logged.
	Logger *slog.Logger
	// Registerer receives the relay's Prometheus metrics. Nil means no
	// metrics.
	Registerer prometheus.Registerer
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
}

// KeyEvents is how instances tell each other about key changes.
// *storage/redis.Invalidator implements it.
type KeyEvents interface {
	// OnChange announces that this instance changed a key. It must not
	// block for long.
	OnChange(id string)
	// Run delivers other instances' announcements until ctx ends, calling
	// onResync when announcements may have been missed.
	Run(ctx context.Context, onInvalidate func(id string), onResync func()) error
}

// Relay is a Claude API relay: it serves the Anthropic API to holders of
// relay keys by forwarding to the real API with the real key. Create it
// with New; it is safe for concurrent use; Close it when done.
type Relay struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	pool     *upstream.Pool
	keys     *keys.Service
	usage    usage.Store
	recorder *usage.Recorder
	tok      *tokenizer.Counter
	admin    http.Handler
	metrics  *metrics
	limiter  quota.Limiter
	settles  chan settleJob // background settles of a remote limiter; nil: inline
	settlers sync.WaitGroup
	quotaCfg quota.Config
	tiers    quota.Tiers
	pricing  *usage.Pricing
	unpriced sync.Map // models already reported as missing from pricing
	public   *url.URL
	bufs     sync.Pool

	// closing refuses new work; inflight counts requests being served.
	closing    atomic.Bool
	inflight   sync.WaitGroup
	background sync.WaitGroup // goroutines that end with stopCtx
	// stopCtx is cancelled when Close gives up waiting, ending streams.
	stopCtx  context.Context
	stopAll  context.CancelFunc
	closeErr error
	closed   sync.Once
}

// New returns a Relay for cfg.
func New(cfg Config) (_ *Relay, err error) {
	if cfg.UpstreamCredential == "" && len(cfg.Upstreams) == 0 {
		return nil, errors.New("relay: Config.UpstreamCredential is required (the real Anthropic API key)")
	}
	if cfg.Keys == nil {
		return nil, errors.New("relay: Config.Keys is required")
	}
	if cfg.Usage == nil {
		return nil, errors.New("relay: Config.Usage is required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.BodyReadTimeout <= 0 {
		cfg.BodyReadTimeout = 2 * time.Minute
	}
	if cfg.StreamIdleTimeout <= 0 {
		cfg.StreamIdleTimeout = 5 * time.Minute
	}
	rl := &Relay{cfg: cfg, log: cfg.Logger, now: cfg.Now, usage: cfg.Usage}
	if rl.log == nil {
		rl.log = slog.New(slog.DiscardHandler)
	}
	if rl.now == nil {
		rl.now = time.Now
	}
	if cfg.PublicURL != "" {
		u, err := url.Parse(strings.TrimSuffix(cfg.PublicURL, "/"))
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("relay: PublicURL %q must be an absolute URL", cfg.PublicURL)
		}
		rl.public = u
	}
	ups := cfg.Upstreams
	if len(ups) == 0 {
		auth := upstream.AuthAPIKey
		if cfg.UpstreamBearer {
			auth = upstream.AuthBearer
		}
		base := cfg.UpstreamURL
		if base == "" {
			base = upstream.DefaultBaseURL
		}
		ups = []upstream.Config{{Name: "anthropic", BaseURL: base, Credential: cfg.UpstreamCredential, Auth: auth}}
	}
	defer func() {
		if err != nil { // undo what was started
			if rl.pool != nil {
				rl.pool.Close()
			}
			if rl.keys != nil {
				_ = rl.keys.Close(context.Background())
			}
			if rl.recorder != nil {
				_ = rl.recorder.Close(context.Background())
			}
			if rl.settles != nil {
				close(rl.settles)
				rl.settlers.Wait()
			}
		}
	}()
	rl.pool, err = upstream.NewPool(upstream.PoolConfig{
		Upstreams: ups, Retry: cfg.Retry, Cooldown: cfg.Cooldown,
		Transport: cfg.Transport, Logger: rl.log, Now: cfg.Now,
		// Events arrive only once requests are served, after New returned.
		OnEvent: func(e upstream.Event) { rl.metrics.upstreamEvent(e) },
	})
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	if rl.tok, err = tokenizer.New(); err != nil {
		return nil, fmt.Errorf("relay: tokenizer: %w", err)
	}
	secret := cfg.Secret
	if len(secret) == 0 {
		secret = randomSecret()
	}
	kcfg := keys.Config{Store: cfg.Keys, Secret: derive(secret, "relay/keys/cache"), BcryptCost: cfg.BcryptCost, Logger: rl.log, Now: cfg.Now}
	if cfg.KeyEvents != nil {
		kcfg.OnChange = cfg.KeyEvents.OnChange
	}
	if rl.keys, err = keys.NewService(kcfg); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	if rl.recorder, err = usage.NewRecorder(usage.RecorderConfig{Store: cfg.Usage, SpoolDir: cfg.SpoolDir, Logger: rl.log}); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	if cfg.AdminPassword != "" || len(cfg.AdminPasswordHash) > 0 {
		var ah *admin.Handler
		ah, err = admin.New(admin.Config{
			Keys: rl.keys, Username: cfg.AdminUsername, Password: cfg.AdminPassword, PasswordHash: cfg.AdminPasswordHash,
			Secret: derive(secret, "relay/admin/jwt"), TokenTTL: cfg.AdminTokenTTL, Now: cfg.Now, Logger: rl.log,
			Revoker: cfg.AdminRevoker,
		})
		if err != nil {
			return nil, fmt.Errorf("relay: admin: %w", err)
		}
		admin.MountUpstreams(ah, rl.pool)
		admin.MountUsage(ah, cfg.Usage, admin.UsageOptions{Now: cfg.Now, Location: cfg.Quota.Location})
		admin.MountLimits(ah, adminLimits{rl})
		rl.admin = ah
	}
	if err = cfg.Tiers.Validate(); err != nil {
		return nil, fmt.Errorf("relay: tiers: %w", err)
	}
	rl.tiers = cfg.Tiers
	rl.quotaCfg = cfg.Quota
	if rl.quotaCfg.Seed == nil {
		rl.quotaCfg.Seed = SeedFromUsage(cfg.Usage, rl.quotaCfg.Counted)
	}
	if rl.quotaCfg.Now == nil {
		rl.quotaCfg.Now = cfg.Now
	}
	if rl.quotaCfg.ReservationTTL <= 0 {
		rl.quotaCfg.ReservationTTL = quota.DefaultReservationTTL
	}
	if rl.limiter = cfg.Limiter; rl.limiter == nil {
		rl.limiter = quota.NewMemory(rl.quotaCfg)
	}
	if _, inProcess := rl.limiter.(*quota.Memory); !inProcess {
		rl.startSettlers(4)
	}
	if rl.pricing = cfg.Pricing; rl.pricing == nil {
		rl.pricing = usage.DefaultPricing()
	}
	// Registered last, so a New that fails leaves nothing registered.
	if rl.metrics, err = newMetrics(cfg.Registerer, rl.keys.Stats, rl.recorder.Stats); err != nil {
		return nil, fmt.Errorf("relay: metrics: %w", err)
	}
	rl.stopCtx, rl.stopAll = context.WithCancel(context.Background())
	if cfg.Retention > 0 {
		rl.background.Add(1)
		go func() {
			defer rl.background.Done()
			usage.RunRetention(rl.stopCtx, cfg.Usage, cfg.Retention, time.Hour, rl.now, rl.log)
		}()
	}
	if cfg.KeyEvents != nil {
		rl.background.Add(1)
		go func() {
			defer rl.background.Done()
			if err := cfg.KeyEvents.Run(rl.stopCtx, rl.keys.Invalidate, rl.keys.InvalidateAll); err != nil {
				rl.log.Error("key change notices stopped", "error", err)
			}
		}()
	}
	rl.bufs.New = func() any { b := make([]byte, 32<<10); return &b }
	return rl, nil
}

// derive returns a key for one purpose from the server secret, so the
// JWT signing key and the cache HMAC key are never the same bytes.
func derive(secret []byte, purpose string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

// Keys returns the key service, for hosts that issue keys in code.
func (rl *Relay) Keys() *keys.Service { return rl.keys }

// wrap puts the per-request middleware around h: request id, access log,
// panic recovery, and the in-flight count Close waits for. The access log
// sits outside Recover so that a request that panicked still gets its line,
// with the 500 that Recover answered.
func (rl *Relay) wrap(h http.Handler) http.Handler {
	h = rl.track(h)
	h = middleware.Recover(rl.log)(h)
	h = middleware.AccessLog(rl.log)(h)
	h = middleware.RealIP(rl.cfg.ClientIPHeader)(h)
	return middleware.RequestID(h)
}

func (rl *Relay) track(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rl.inflight.Add(1)
		defer rl.inflight.Done()
		if rl.metrics.on {
			sw := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
			w = sw
			defer func() {
				info := middleware.InfoFrom(r.Context())
				status, model, start := sw.status, "", rl.now()
				if info != nil {
					start = info.Start
					model = rl.modelLabel(info.Model)
					if info.Stream && r.Context().Err() != nil {
						status = usage.StatusClientClosed
					}
				}
				rl.metrics.request(routeLabel(r), status, model, rl.now().Sub(start).Seconds())
			}()
		}
		if rl.closing.Load() {
			w.Header().Set("Connection", "close")
			apierror.Write(w, apierror.New(http.StatusServiceUnavailable, "the relay is shutting down"), middleware.RequestIDFrom(r.Context()))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Handler serves every route: the proxied Anthropic API (/v1/…, HEAD /),
// the self-service usage API (GET /v1/usage), the admin API (/admin/…)
// and /health.
func (rl *Relay) Handler() http.Handler {
	proxy, usageAPI, adminAPI := rl.proxyHandler(), rl.usageHandler(), rl.adminHandler()
	return rl.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case !cleanPath(r):
			// Answered, not redirected: a path with dot segments or encoded
			// slashes must not reach a route it does not spell.
			rl.fail(w, r, apierror.New(http.StatusNotFound, "not found: "+p))
		case p == "/health":
			rl.serveHealth(w, r)
		case p == "/ready":
			rl.serveReady(w, r)
		case p == "/v1/usage":
			usageAPI.ServeHTTP(w, r)
		case p == "/admin" || strings.HasPrefix(p, "/admin/"):
			adminAPI.ServeHTTP(w, r)
		default:
			proxy.ServeHTTP(w, r)
		}
	}))
}

// ProxyHandler serves the proxied Anthropic API: POST /v1/messages,
// POST /v1/messages/count_tokens, GET /v1/models[/{id}], the batches and
// files APIs, and HEAD /. Mount it at the root of a host's mux or under a
// prefix with http.StripPrefix; clients then use the prefix as their
// ANTHROPIC_BASE_URL.
func (rl *Relay) ProxyHandler() http.Handler { return rl.wrap(rl.proxyHandler()) }

// UsageHandler serves GET /v1/usage: the calling key's own usage.
func (rl *Relay) UsageHandler() http.Handler { return rl.wrap(rl.usageHandler()) }

// AdminHandler serves the admin API under /admin/. Without an admin
// password configured it answers 404.
func (rl *Relay) AdminHandler() http.Handler { return rl.wrap(rl.adminHandler()) }

func (rl *Relay) adminHandler() http.Handler {
	if rl.admin == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			apierror.Write(w, apierror.New(http.StatusNotFound, "the admin API is not enabled on this relay"), middleware.RequestIDFrom(r.Context()))
		})
	}
	return rl.admin
}

// Close stops taking new requests, lets running requests and streams
// finish until ctx ends (then cuts them, recording what they used), and
// writes every pending usage record. Close the http.Server first
// (Shutdown) so no new connection arrives; Close is safe to call twice.
func (rl *Relay) Close(ctx context.Context) error {
	rl.closed.Do(func() {
		rl.closing.Store(true)
		done := make(chan struct{})
		go func() { rl.inflight.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			rl.stopAll() // cut remaining streams; their handlers record and return
			<-done
		}
		// Records must be written even when ctx is over: give them their own
		// short deadline rather than lose them.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if rl.settles != nil {
			close(rl.settles) // every request has returned: no more settles
			rl.settlers.Wait()
		}
		rl.closeErr = errors.Join(rl.recorder.Close(wctx), rl.keys.Close(wctx))
		rl.pool.Close()
		rl.stopAll()
		rl.background.Wait()
	})
	return rl.closeErr
}

// statusRecorder remembers the status for metrics; Unwrap keeps flushing
// and deadlines reachable through http.ResponseController.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote && code >= 200 {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(p)
}

func (s *statusRecorder) Flush() { _ = http.NewResponseController(s.ResponseWriter).Flush() }

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
