package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// go-redis's lines reach the structured log, one of each kind per window,
// with the count of those skipped; Sentinel's always.
func TestRedisLog(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	l := newRedisLog(slog.New(slog.NewTextHandler(&buf, nil)))
	l.now = func() time.Time { return now }
	ctx := context.Background()
	const dial = "redis: connection pool: failed to dial after %d attempts: %v"
	l.Printf(ctx, dial, 5, "dial tcp 10.0.0.9:6379: connect: connection refused")
	for range 99 {
		now = now.Add(50 * time.Millisecond)
		l.Printf(ctx, dial, 5, "refused")
	}
	l.Printf(ctx, "sentinel: new master=%q addr=%q", "mymaster", "10.0.0.10:6379")
	l.Printf(ctx, "sentinel: new master=%q addr=%q", "mymaster", "10.0.0.11:6379")
	l.Printf(ctx, "redis: %s has unread data", "conn")
	now = now.Add(10 * time.Second)
	l.Printf(ctx, dial, 5, "again")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines, want 5:\n%s", len(lines), buf.String())
	}
	for i, want := range []string{"failed to dial after 5 attempts", "10.0.0.10", "10.0.0.11", "unread data", "suppressed=99"} {
		if !strings.Contains(lines[i], want) || !strings.Contains(lines[i], "level=WARN") {
			t.Errorf("line %d: %s, want %q", i, lines[i], want)
		}
	}
	if strings.Contains(lines[0], "suppressed") {
		t.Errorf("first line: %s", lines[0])
	}
}
