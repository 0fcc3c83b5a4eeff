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
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/crypto/bcrypt"

	"github.com/relaystation/relay"
	"github.com/relaystation/relay/storage/sqlite"
)

// shutdownGrace is how long running streams may finish after SIGTERM.
const shutdownGrace = 30 * time.Second

func newLogger(c config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// openStore opens the SQLite store named by DATABASE_URL (sqlite:PATH or
// sqlite://PATH) or, by default, RELAY_DATA_DIR/relay.db.
func openStore(ctx context.Context, c config, migrate bool) (*sqlite.Store, error) {
	path := filepath.Join(c.DataDir, "relay.db")
	if u := c.DatabaseURL; u != "" {
		switch {
		case strings.HasPrefix(u, "sqlite://"):
			path = strings.TrimPrefix(u, "sqlite://")
		case strings.HasPrefix(u, "sqlite:"):
			path = strings.TrimPrefix(u, "sqlite:")
		case strings.HasPrefix(u, "postgres://"), strings.HasPrefix(u, "postgresql://"):
			return nil, errors.New("DATABASE_URL: this build stores data in SQLite only; unset DATABASE_URL (or use sqlite:PATH) until Postgres support lands")
		default:
			return nil, fmt.Errorf("DATABASE_URL: unrecognised scheme in %q (want sqlite:PATH)", redactURL(u))
		}
	}
	if err := ensureDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	return sqlite.OpenWith(ctx, path, sqlite.Options{NoMigrate: !migrate})
}

func serve(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) error {
	c, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	log := newLogger(c, stderr)
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
	if c.RedisURL != "" {
		log.Warn("REDIS_URL is set, but this build keeps rate-limit state in process; it is ignored")
	}

	store, err := openStore(ctx, c, true)
	if err != nil {
		return err
	}
	defer store.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rl, err := relay.New(relay.Config{
		UpstreamURL:        c.UpstreamBaseURL,
		UpstreamCredential: c.UpstreamAPIKey,
		UpstreamBearer:     c.UpstreamBearer,
		Keys:               store,
		Usage:              store,
		Secret:             secret,
		AdminUsername:      c.AdminUsername,
		AdminPassword:      pw,
		AdminPasswordHash:  pwHash,
		PublicURL:          c.PublicURL,
		Logger:             log,
		Registerer:         reg,
	})
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", rl.Handler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    1 << 20,
		// No WriteTimeout: a stream lasts as long as the model writes.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", c.ListenAddr)
	if err != nil {
		_ = rl.Close(context.Background())
		return err
	}
	log.Info("relay listening", "addr", ln.Addr().String(), "upstream", c.UpstreamBaseURL, "data_dir", c.DataDir)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		_ = rl.Close(context.Background())
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: letting running requests finish", "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	// Stop accepting; Close then waits for streams (cutting them at the
	// deadline) and writes every pending usage record.
	go func() { _ = srv.Shutdown(sctx) }()
	err = rl.Close(sctx)
	_ = srv.Close()
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	log.Info("stopped")
	return nil
}

func redactURL(s string) string {
	if i := strings.Index(s, "@"); i >= 0 {
		if j := strings.Index(s, "://"); j >= 0 && j < i {
			return s[:j+3] + "…@" + s[i+1:]
		}
	}
	return s
}
