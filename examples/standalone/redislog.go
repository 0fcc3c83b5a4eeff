package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// redisLog carries go-redis's own log lines ("failed to dial", pool
// notices) into the server's structured log, at most one line of each kind
// (each format string) per window: during a Redis outage go-redis reports
// every failed dial, and those went raw to stderr, thousands a minute,
// around the JSON log. The lines of a kind skipped meanwhile are counted
// in its next one. Sentinel's lines (a new master after a failover) always
// pass: they are few and they are the news. go-redis takes its logger as a
// process-wide setting (goredis.SetLogger), so the server, which owns the
// process, sets it once; the library never does.
type redisLog struct {
	log    *slog.Logger
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex
	kinds map[string]*logKind
}

type logKind struct {
	last       time.Time
	suppressed int
}

// maxLogKinds bounds the kinds remembered; go-redis has a few dozen.
const maxLogKinds = 256

func newRedisLog(log *slog.Logger) *redisLog {
	return &redisLog{log: log, window: 10 * time.Second, now: time.Now, kinds: make(map[string]*logKind)}
}

// Printf implements go-redis's logging interface.
func (l *redisLog) Printf(ctx context.Context, format string, v ...any) {
	n := 0
	if !strings.HasPrefix(format, "sentinel:") {
		l.mu.Lock()
		now := l.now()
		k := l.kinds[format]
		if k == nil {
			if len(l.kinds) >= maxLogKinds {
				clear(l.kinds)
			}
			k = &logKind{}
			l.kinds[format] = k
		}
		if !k.last.IsZero() && now.Sub(k.last) < l.window {
			k.suppressed++
			l.mu.Unlock()
			return
		}
		n = k.suppressed
		k.last, k.suppressed = now, 0
		l.mu.Unlock()
	}
	attrs := []any{"message", fmt.Sprintf(format, v...)}
	if n > 0 {
		attrs = append(attrs, "suppressed", n)
	}
	l.log.WarnContext(ctx, "redis client", attrs...)
}
