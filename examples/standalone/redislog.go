package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// redisLog carries go-redis's own log lines ("failed to dial", pool
// notices) into the server's structured log, at most one line per window:
// during a Redis outage go-redis reports every failed dial, and those went
// raw to stderr, thousands a minute, around the JSON log. The lines
// skipped meanwhile are counted in the next one. go-redis takes its logger
// as a process-wide setting (goredis.SetLogger), so the server, which owns
// the process, sets it once; the library never does.
type redisLog struct {
	log    *slog.Logger
	window time.Duration
	now    func() time.Time

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func newRedisLog(log *slog.Logger) *redisLog {
	return &redisLog{log: log, window: 10 * time.Second, now: time.Now}
}

// Printf implements go-redis's logging interface.
func (l *redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.mu.Lock()
	now := l.now()
	if !l.last.IsZero() && now.Sub(l.last) < l.window {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	l.mu.Unlock()
	attrs := []any{"message", fmt.Sprintf(format, v...)}
	if n > 0 {
		attrs = append(attrs, "suppressed", n)
	}
	l.log.WarnContext(ctx, "redis client", attrs...)
}
