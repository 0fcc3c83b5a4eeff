package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"
)

func TestLoginLimiterWindow(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLoginLimiter(2, time.Minute, 100)
	steps := []struct {
		at   time.Duration
		ok   bool
		wait time.Duration
	}{
		{0, true, 0},
		{time.Second, true, 0},
		{2 * time.Second, false, 58 * time.Second},
		{59 * time.Second, false, time.Second},
		{time.Minute, true, 0}, // a new window
		{time.Minute + time.Second, true, 0},
		{time.Minute + 2*time.Second, false, 58 * time.Second},
		{-time.Hour, true, 0}, // the clock went back: not a lockout
	}
	for i, s := range steps {
		ok, wait := l.allow("a", t0.Add(s.at))
		if ok != s.ok || wait != s.wait {
			t.Fatalf("step %d at %v: allow = %v, %v; want %v, %v", i, s.at, ok, wait, s.ok, s.wait)
		}
	}
}

func TestLoginLimiterBounded(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLoginLimiter(1, time.Minute, 10)
	for i := range 10 {
		l.allow(fmt.Sprint("c", i), t0.Add(time.Duration(i)*time.Second))
	}
	// Full: a new client evicts the oldest window, not anyone's budget.
	if ok, _ := l.allow("new", t0.Add(20*time.Second)); !ok || l.len() != 10 {
		t.Fatalf("new client when full: %v, %d entries", ok, l.len())
	}
	if ok, _ := l.allow("c0", t0.Add(21*time.Second)); !ok {
		t.Fatal("the evicted client is still limited")
	}
	if ok, _ := l.allow("c9", t0.Add(21*time.Second)); ok {
		t.Fatal("a recent client lost its count")
	}
	// Once the windows are over, the sweep empties the map.
	l.allow("late", t0.Add(5*time.Minute))
	if n := l.len(); n != 1 {
		t.Fatalf("%d entries after every window ended, want 1", n)
	}
}

func TestClientIP(t *testing.T) {
	for remote, want := range map[string]string{
		"192.0.2.1:1234":                "192.0.2.1",
		"[::ffff:192.0.2.1]:1234":       "192.0.2.1",
		"[2001:db8:a:b:c:d:e:f]:443":    "2001:db8:a:b::/64",
		"[fe80::1%eth0]:443":            "fe80::/64",
		"192.0.2.1":                     "192.0.2.1",
		"@unix-socket":                  "@unix-socket",
		"":                              "",
		"[2001:db8:a:b::1]:1":           "2001:db8:a:b::/64",
		"[2001:0db8:000a:000b::2]:8080": "2001:db8:a:b::/64",
	} {
		r := httptest.NewRequest("POST", "/admin/login", nil)
		r.RemoteAddr = remote
		if got := clientIP(r); got != want {
			t.Errorf("clientIP(%q) = %q, want %q", remote, got, want)
		}
	}
}

func TestMemoryRevoker(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	m := NewMemoryRevoker(func() time.Time { return now })
	ctx := context.Background()
	_ = m.Revoke(ctx, "a", now.Add(time.Hour))
	_ = m.Revoke(ctx, "b", now.Add(2*time.Minute))
	_ = m.Revoke(ctx, "expired", now.Add(-time.Second)) // nothing to remember
	for jti, want := range map[string]bool{"a": true, "b": true, "expired": false, "other": false} {
		if got, err := m.Revoked(ctx, jti); got != want || err != nil {
			t.Errorf("Revoked(%q) = %v, %v", jti, got, err)
		}
	}
	if m.Len() != 2 {
		t.Fatalf("Len %d, want 2", m.Len())
	}
	now = now.Add(3 * time.Minute)
	if got, _ := m.Revoked(ctx, "b"); got {
		t.Fatal("b is revoked after its token expired") // harmless, but the entry is dead
	}
	_ = m.Revoke(ctx, "c", now.Add(time.Hour)) // sweeps b
	if m.Len() != 2 {
		t.Fatalf("Len %d after the sweep, want 2 (a and c)", m.Len())
	}
}

func TestUnknownField(t *testing.T) {
	for msg, want := range map[string]string{
		`json: unknown field "enabeld"`: "enabeld",
		`json: unknown field "a\"b"`:    `a"b`,
		`json: unknown field ""`:        "",
	} {
		got, ok := unknownField(errors.New(msg))
		if !ok || got != want {
			t.Errorf("unknownField(%q) = %q, %v; want %q", msg, got, ok, want)
		}
	}
	if _, ok := unknownField(errors.New("json: cannot unmarshal")); ok {
		t.Error("unknownField matched another error")
	}
}
