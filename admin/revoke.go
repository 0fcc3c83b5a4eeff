package admin

import (
	"context"
	"sync"
	"time"
)

// Revoker remembers logged-out admin tokens by their "jti" claim until they
// would have expired anyway. MemoryRevoker serves one instance; several
// instances behind a load balancer need a shared implementation (Redis, say)
// so that a logout on one is honoured by all.
type Revoker interface {
	// Revoke makes Revoked report jti until the time until.
	Revoke(ctx context.Context, jti string, until time.Time) error
	// Revoked reports whether jti was revoked. An error refuses the
	// request: a revocation that cannot be checked is not assumed absent.
	Revoked(ctx context.Context, jti string) (bool, error)
}

// MemoryRevoker is an in-process Revoker. Entries are dropped once their
// token has expired, so it holds at most the tokens logged out within one
// token lifetime. The zero value is not usable; call NewMemoryRevoker.
type MemoryRevoker struct {
	now func() time.Time

	mu        sync.Mutex
	until     map[string]time.Time
	nextPrune time.Time
}

var _ Revoker = (*MemoryRevoker)(nil)

// revokePruneEvery is how often Revoke sweeps out expired entries.
const revokePruneEvery = time.Minute

// NewMemoryRevoker returns an empty MemoryRevoker; nil now means time.Now.
func NewMemoryRevoker(now func() time.Time) *MemoryRevoker {
	if now == nil {
		now = time.Now
	}
	return &MemoryRevoker{now: now, until: make(map[string]time.Time)}
}

// Revoke implements Revoker.
func (m *MemoryRevoker) Revoke(_ context.Context, jti string, until time.Time) error {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if !now.Before(m.nextPrune) {
		for id, t := range m.until {
			if !now.Before(t) {
				delete(m.until, id)
			}
		}
		m.nextPrune = now.Add(revokePruneEvery)
	}
	if now.Before(until) {
		if cur, ok := m.until[jti]; !ok || cur.Before(until) {
			m.until[jti] = until
		}
	}
	return nil
}

// Revoked implements Revoker.
func (m *MemoryRevoker) Revoked(_ context.Context, jti string) (bool, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.until[jti]
	return ok && now.Before(t), nil
}

// Len returns the number of remembered tokens, expired ones not yet swept
// included.
func (m *MemoryRevoker) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.until)
}
