package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/crypto/bcrypt"

	"github.com/relaystation/relay"
	"github.com/relaystation/relay/middleware"
	"github.com/relaystation/relay/quota"
	redisstore "github.com/relaystation/relay/storage/redis"
)

func newLogger(c *config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func serve(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) error {
	c, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	log := newLogger(&c, stderr)
	if err := ensureDir(c.DataDir); err != nil {
		return err
	}
	secret, newSecret, err := c.secretKey()
	if err != nil {
		return fmt.Errorf("secret key: %w", err)
	}
	if newSecret {
		log.Info("generated SECRET_KEY and kept it in the data directory", "path", filepath.Join(c.DataDir, "secret_key"))
	}
	pw, pwHash, generated, err := c.adminPassword(func(p string) ([]byte, error) { return bcrypt.GenerateFromPassword([]byte(p), bcrypt.DefaultCost) })
	if err != nil {
		return fmt.Errorf("admin password: %w", err)
	}
	if generated != "" {
		// Printed once, to stdout rather than the log, and never stored.
		fmt.Fprintf(stdout, "\nFirst run: generated the admin password (shown only now; set ADMIN_PASSWORD to choose your own):\n\n    %s:%s\n\n", c.AdminUsername, generated)
	}

	st, err := openStore(ctx, &c, c.AutoMigrate)
	if err != nil {
		return err
	}
	defer st.Close()
	if !c.AutoMigrate {
		if err := requireMigrated(ctx, st); err != nil {
			return err
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	loc, _ := c.location() // validated
	qcfg := quota.Config{
		Location: loc, OutputCap: c.Quota.OutputCap, Counted: c.Quota.Counted, RateCounted: c.Quota.RateCounted,
		Seed: relay.SeedFromUsage(st, c.Quota.Counted),
	}
	rcfg := relay.Config{
		Upstreams: c.upstreams(), Retry: c.Retry, Cooldown: c.Cooldown,
		Keys: st, Usage: st,
		Secret: secret, AdminUsername: c.AdminUsername, AdminPassword: pw, AdminPasswordHash: pwHash,
		AdminTokenTTL: c.AdminTokenTTL, BcryptCost: c.BcryptCost,
		Tiers: c.Tiers, Quota: qcfg, NoLimitHeaders: c.NoLimitHeaders, Pricing: c.pricing(),
		MaxBodyBytes: c.MaxBodyBytes, PublicURL: c.PublicURL, ClientIPHeader: c.ClientIPHeader,
		SpoolDir:  filepath.Join(c.DataDir, "spool"),
		Retention: time.Duration(c.RetentionDays) * 24 * time.Hour,
		Logger:    log, Registerer: reg,
	}

	var redisDone func(context.Context)
	if c.RedisURL != "" {
		rc, err := openRedis(ctx, &c, log)
		if err != nil {
			return err
		}
		inv := redisstore.NewInvalidator(rc, c.RedisPrefix, log)
		degraded := prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "relay", Name: "limiter_degraded",
			Help: "1 while Redis is unreachable and limits are enforced in process (or refused, fail-closed).",
		})
		reg.MustRegister(degraded)
		rcfg.Limiter = quota.NewFailover(
			redisstore.NewLimiter(rc, qcfg, redisstore.LimiterOptions{Prefix: c.RedisPrefix + "quota:"}),
			quota.NewMemory(qcfg),
			quota.FailoverConfig{FailClosed: c.Quota.FailClosed, Logger: log, OnTransition: func(d bool) {
				if d {
					degraded.Set(1)
				} else {
					degraded.Set(0)
				}
			}},
		)
		rcfg.KeyEvents = inv
		rcfg.AdminRevoker = redisstore.NewRevoker(rc, c.RedisPrefix)
		redisDone = func(ctx context.Context) { _ = inv.Close(ctx); _ = rc.Close() }
		log.Info("using Redis for limits, key changes and admin logouts", "redis", redisstore.RedactURL(c.RedisURL))
	}

	rl, err := relay.New(rcfg)
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("/metrics", middleware.RequestID(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	mux.Handle("/", rl.Handler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: c.ReadHeaderTimeout, // slow-loris clients are cut
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    1 << 20,
		// No WriteTimeout: a stream lasts as long as the model writes.
		// Body reads have their own deadline (relay.Config.BodyReadTimeout).
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", c.ListenAddr)
	if err != nil {
		_ = rl.Close(context.Background())
		return err
	}
	kind, _, _ := c.backend()
	log.Info("relay listening", "addr", ln.Addr().String(), "store", kind, "upstreams", len(rcfg.Upstreams), "data_dir", c.DataDir)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		_ = rl.Close(context.Background())
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: letting running requests finish", "grace", c.ShutdownGrace)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.ShutdownGrace)
	defer cancel()
	// Stop accepting; Close then waits for streams (cutting them at the
	// deadline) and writes every pending usage record.
	go func() { _ = srv.Shutdown(sctx) }()
	err = rl.Close(sctx)
	_ = srv.Close()
	if redisDone != nil {
		redisDone(context.WithoutCancel(sctx))
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	log.Info("stopped")
	return nil
}
