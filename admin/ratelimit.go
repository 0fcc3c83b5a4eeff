package admin

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// maxLoginClients bounds the login limiter's memory. Past it, the client
// whose window is oldest is forgotten: an attacker who owns that many
// addresses has that many budgets anyway.
const maxLoginClients = 10000

// loginLimiter counts login attempts per client in fixed windows. Password
// guessing is slow enough at ten a minute that a fixed window's burst at
// the boundary does not matter, and a window is two words per client.
type loginLimiter struct {
	limit  int
	window time.Duration
	max    int

	mu        sync.Mutex
	clients   map[string]attemptWindow
	nextPrune time.Time
}

type attemptWindow struct {
	start time.Time
	n     int
}

func newLoginLimiter(limit int, window time.Duration, maxClients int) *loginLimiter {
	return &loginLimiter{limit: limit, window: window, max: maxClients, clients: make(map[string]attemptWindow)}
}

// allow counts an attempt by client at now. When the client is over its
// limit it returns false and how long until its window ends.
func (l *loginLimiter) allow(client string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !now.Before(l.nextPrune) {
		l.pruneLocked(now)
		l.nextPrune = now.Add(l.window)
	}
	w, ok := l.clients[client]
	if !ok || l.over(w, now) {
		if !ok && len(l.clients) >= l.max {
			l.pruneLocked(now)
			if len(l.clients) >= l.max {
				l.evictOldestLocked()
			}
		}
		w = attemptWindow{start: now}
	}
	if w.n >= l.limit {
		return false, w.start.Add(l.window).Sub(now)
	}
	w.n++
	l.clients[client] = w
	return true, 0
}

// over reports whether w has ended (or the clock went back past it).
func (l *loginLimiter) over(w attemptWindow, now time.Time) bool {
	return now.Sub(w.start) >= l.window || now.Before(w.start)
}

func (l *loginLimiter) pruneLocked(now time.Time) {
	for c, w := range l.clients {
		if l.over(w, now) {
			delete(l.clients, c)
		}
	}
}

func (l *loginLimiter) evictOldestLocked() {
	var oldest string
	var at time.Time
	for c, w := range l.clients {
		if oldest == "" || w.start.Before(at) {
			oldest, at = c, w.start
		}
	}
	delete(l.clients, oldest)
}

func (l *loginLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}

// clientIP names the client of r for rate limiting: the host of
// RemoteAddr, an IPv6 address by its /64 (one host commonly owns a whole
// /64, so counting single addresses would give it 2^64 budgets).
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.String()
		}
	}
	return a.String()
}
