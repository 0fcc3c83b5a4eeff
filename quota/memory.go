package quota

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
)

const memShards = 64

// Memory is the in-process Limiter, for a relay running as one instance.
// Keys are spread over 64 shards by a hash of their id; a shard's lock is
// held only to find or add a key, and each key has its own mutex, held for
// the few hundred nanoseconds of a check. There is no global lock.
//
// RPM and TPM use sliding-window counters (see RateWindow): exact to
// within the approximation of assuming the previous minute's requests
// were spread evenly, with two counters per key instead of a log of
// events.
//
// Counters live as long as the Memory; a key's state is a few hundred
// bytes.
type Memory struct {
	rules *Rules
	ttlMs int64
	seq   atomic.Uint64
	shard [memShards]memShard
}

type memShard struct {
	mu   sync.RWMutex
	keys map[string]*memKey
	_    [40]byte // keep shards on separate cache lines
}

type memKey struct {
	mu      sync.Mutex
	seeded  bool
	seeding chan struct{} // closed when the Seed in progress ends
	st      State
	res     map[string]memRes
	next    int64 // earliest expiry among res (Unix ms), or 0
}

type memRes struct {
	tokens, cost int64
	expires      int64 // Unix ms
}

var _ Limiter = (*Memory)(nil)

// NewMemory returns an in-process limiter configured by cfg.
func NewMemory(cfg Config) *Memory {
	m := &Memory{rules: NewRules(cfg)}
	m.ttlMs = m.rules.cfg.ReservationTTL.Milliseconds()
	for i := range m.shard {
		m.shard[i].keys = make(map[string]*memKey)
	}
	return m
}

func (m *Memory) shardOf(id string) *memShard {
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return &m.shard[h%memShards]
}

// find returns the key's state, or nil.
func (m *Memory) find(id string) *memKey {
	sh := m.shardOf(id)
	sh.mu.RLock()
	k := sh.keys[id]
	sh.mu.RUnlock()
	return k
}

// lock returns the key's state locked, seeded first if need be.
func (m *Memory) lock(ctx context.Context, id string) (*memKey, error) {
	k := m.find(id)
	if k == nil {
		sh := m.shardOf(id)
		sh.mu.Lock()
		if k = sh.keys[id]; k == nil {
			k = &memKey{res: make(map[string]memRes)}
			sh.keys[id] = k
		}
		sh.mu.Unlock()
	}
	for {
		k.mu.Lock()
		if k.seeded {
			return k, nil
		}
		if ch := k.seeding; ch != nil {
			k.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		ch := make(chan struct{})
		k.seeding = ch
		k.mu.Unlock()
		st, err := m.rules.Seed(ctx, id, m.rules.Now())
		k.mu.Lock()
		k.seeding = nil
		close(ch)
		if err != nil {
			k.mu.Unlock()
			return nil, err
		}
		k.st, k.seeded = st, true
		return k, nil
	}
}

// purge returns expired reservations. k is locked.
func (m *Memory) purge(k *memKey, nowMs int64) {
	if k.next == 0 || nowMs < k.next {
		return
	}
	k.next = 0
	for id, r := range k.res {
		if nowMs >= r.expires {
			delete(k.res, id)
			k.st.Return(Reservation{Tokens: r.tokens, CostMicros: r.cost})
			continue
		}
		if k.next == 0 || r.expires < k.next {
			k.next = r.expires
		}
	}
}

// Reserve implements Limiter.
func (m *Memory) Reserve(ctx context.Context, req Request) (Reservation, error) {
	a, err := m.rules.Amounts(req)
	if err != nil {
		return Reservation{}, err
	}
	k, err := m.lock(ctx, req.KeyID)
	if err != nil {
		return Reservation{}, err
	}
	now := m.rules.Now()
	nowMs := now.UnixMilli()
	m.purge(k, nowMs)
	m.rules.Roll(&k.st, now)
	if ref := m.rules.Check(req.KeyID, req.Limits, &k.st, a, now); ref != nil {
		k.mu.Unlock()
		return Reservation{}, ref
	}
	k.st.Reserve(a)
	id := strconv.FormatUint(m.seq.Add(1), 36)
	exp := nowMs + m.ttlMs
	k.res[id] = memRes{tokens: a.Tokens, cost: a.CostMicros, expires: exp}
	if k.next == 0 || exp < k.next {
		k.next = exp
	}
	st := k.st
	k.mu.Unlock()
	return Reservation{
		ID: id, KeyID: req.KeyID, At: now,
		Tokens: a.Tokens, CostMicros: a.CostMicros, RateTokens: a.RateTokens, OutputReserved: a.OutputReserved,
		Standing: m.rules.Standing(req.KeyID, req.Limits, st, now),
	}, nil
}

// finish settles (settle) or releases a reservation.
func (m *Memory) finish(r Reservation, act *Amounts) {
	k := m.find(r.KeyID)
	if k == nil {
		return // never seen: its first Seed will read this usage from the store
	}
	resWin := m.rules.Windows(r.At)
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.seeded {
		return
	}
	now := m.rules.Now()
	_, live := k.res[r.ID]
	delete(k.res, r.ID)
	m.purge(k, now.UnixMilli())
	m.rules.Roll(&k.st, now)
	switch {
	case act != nil:
		k.st.Settle(r, resWin, live, *act)
	case live:
		k.st.Release(r)
	}
}

// Settle implements Limiter.
func (m *Memory) Settle(ctx context.Context, r Reservation, actual Actual) error {
	act, err := m.rules.Charge(actual)
	if err != nil {
		return err
	}
	m.finish(r, &act)
	return nil
}

// Release implements Limiter.
func (m *Memory) Release(ctx context.Context, r Reservation) error {
	m.finish(r, nil)
	return nil
}

// Renew implements Limiter.
func (m *Memory) Renew(ctx context.Context, r Reservation) error {
	k := m.find(r.KeyID)
	if k == nil {
		return ErrUnknownReservation
	}
	nowMs := m.rules.Now().UnixMilli()
	k.mu.Lock()
	defer k.mu.Unlock()
	res, ok := k.res[r.ID]
	if !ok || nowMs >= res.expires {
		return ErrUnknownReservation
	}
	res.expires = nowMs + m.ttlMs
	k.res[r.ID] = res
	return nil
}

// Standing implements Limiter.
func (m *Memory) Standing(ctx context.Context, keyID string, l Limits) (Standing, error) {
	if keyID == "" {
		return Standing{}, ErrInvalid
	}
	k, err := m.lock(ctx, keyID)
	if err != nil {
		return Standing{}, err
	}
	now := m.rules.Now()
	m.purge(k, now.UnixMilli())
	st := k.st
	k.mu.Unlock()
	return m.rules.Standing(keyID, l, st, now), nil
}
