package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// go-redis's lines reach the structured log, one per window, with the
// count of those skipped.
func TestRedisLog(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	l := newRedisLog(slog.New(slog.NewTextHandler(&buf, nil)))
	l.now = func() time.Time { return now }
	ctx := context.Background()
	l.Printf(ctx, "redis: connection pool: failed to dial after %d attempts: %v", 5, "dial tcp 10.0.0.9:6379: connect: connection refused")
	for range 99 {
		now = now.Add(50 * time.Millisecond)
		l.Printf(ctx, "redis: connection pool: failed to dial")
	}
	now = now.Add(10 * time.Second)
	l.Printf(ctx, "redis: connection pool: failed to dial again")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], `failed to dial after 5 attempts`) || strings.Contains(lines[0], "suppressed") {
		t.Errorf("first line: %s", lines[0])
	}
	if !strings.Contains(lines[1], "suppressed=99") || !strings.Contains(lines[1], "again") {
		t.Errorf("second line: %s", lines[1])
	}
}
