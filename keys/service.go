package keys

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/singleflight"
)

// Config configures a Service. Every zero value is usable.
type Config struct {
	// Store keeps the records. Required.
	Store Store
	// Secret keys the HMAC under which verified keys are cached. Nil means
	// a random secret for this process (the cache is in-process anyway).
	Secret []byte
	// BcryptCost is the cost of new hashes. Zero means 10.
	BcryptCost int
	// CacheSize bounds the verified-key cache. Zero means 10,000 entries.
	CacheSize int
	// CacheTTL is how long a verified key is served without bcrypt after
	// its last use (each background recheck that finds its hash unchanged
	// extends it). Zero means 15 minutes.
	CacheTTL time.Duration
	// RecheckInterval is how often a cached key's record is compared with
	// the store in the background, so that a change made by another relay
	// instance takes effect without waiting for CacheTTL. Zero means 1 s.
	RecheckInterval time.Duration
	// NegativeTTL is how long an unknown or wrong key is answered from the
	// cache. Zero means 10 s.
	NegativeTTL time.Duration
	// MaxConcurrentHashes bounds concurrent bcrypt comparisons so a flood
	// of made-up keys cannot take every core. Zero means a quarter of
	// GOMAXPROCS, at least 1.
	MaxConcurrentHashes int
	// MaxFailuresPerID bounds the wrong secrets checked with bcrypt for
	// one key id per minute; past it, further unknown secrets for that id
	// are refused without bcrypt until the minute ends. A key in use is
	// served from the cache and never meets this limit. Zero means 10.
	MaxFailuresPerID int
	// TouchInterval is how often last-use times are written, coalesced.
	// Zero means 30 s.
	TouchInterval time.Duration
	// OnChange is called after this Service changed or removed a key, so
	// other instances can be told (storage/redis publishes it). Nil: no-op.
	OnChange func(id string)
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Service issues and verifies keys. It is safe for concurrent use.
type Service struct {
	cfg     Config
	store   Store
	now     func() time.Time
	log     *slog.Logger
	cache   *lru
	neg     *lru // unknown and wrong keys, apart so a flood cannot evict real ones
	hmacs   sync.Pool
	sf      singleflight.Group
	hashSem chan struct{}

	touchMu sync.Mutex
	touched map[string]time.Time

	recheckMu sync.Mutex
	rechecks  map[string]bool

	failMu     sync.Mutex
	failures   map[string]int // wrong secrets per key id in the current minute
	failWindow time.Time

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once

	hits, misses, refusals atomic.Int64
}

// CacheStats counts Verify outcomes since the Service started.
type CacheStats struct {
	Hits     int64 // served from the verified-key cache
	Misses   int64 // needed the store (and bcrypt)
	Refusals int64 // answered from the cache of unknown and wrong keys
}

// Stats reports the verified-key cache's counters (for metrics).
func (s *Service) Stats() CacheStats {
	return CacheStats{Hits: s.hits.Load(), Misses: s.misses.Load(), Refusals: s.refusals.Load()}
}

// NewService returns a Service and starts its background writer of
// last-use times; Close stops it.
func NewService(cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, errors.New("keys: Config.Store is required")
	}
	if cfg.Secret == nil {
		cfg.Secret = make([]byte, 32)
		_, _ = rand.Read(cfg.Secret)
	}
	if cfg.BcryptCost == 0 {
		cfg.BcryptCost = 10
	}
	if cfg.BcryptCost < bcrypt.MinCost || cfg.BcryptCost > bcrypt.MaxCost {
		return nil, fmt.Errorf("keys: bcrypt cost %d out of range [%d, %d]", cfg.BcryptCost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 10000
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 15 * time.Minute
	}
	if cfg.RecheckInterval <= 0 {
		cfg.RecheckInterval = time.Second
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = 10 * time.Second
	}
	if cfg.MaxConcurrentHashes <= 0 {
		cfg.MaxConcurrentHashes = max(1, runtime.GOMAXPROCS(0)/4)
	}
	if cfg.MaxFailuresPerID <= 0 {
		cfg.MaxFailuresPerID = 10
	}
	if cfg.TouchInterval <= 0 {
		cfg.TouchInterval = 30 * time.Second
	}
	s := &Service{
		cfg:      cfg,
		store:    cfg.Store,
		now:      cfg.Now,
		log:      cfg.Logger,
		cache:    newLRU(cfg.CacheSize),
		neg:      newLRU(cfg.CacheSize),
		hashSem:  make(chan struct{}, cfg.MaxConcurrentHashes),
		touched:  make(map[string]time.Time),
		rechecks: make(map[string]bool),
		failures: make(map[string]int),
		stop:     make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.hmacs.New = func() any { return hmac.New(sha256.New, cfg.Secret) }
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.wg.Add(1)
	go s.touchLoop()
	return s, nil
}

// Close writes pending last-use times and stops background work.
func (s *Service) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.recheckMu.Lock()
		close(s.stop)
		s.recheckMu.Unlock()
	})
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.flushTouches(ctx)
}

func (s *Service) cacheKey(key string) cacheKey {
	m := s.hmacs.Get().(hash.Hash)
	m.Reset()
	m.Write([]byte(key))
	var ck cacheKey
	m.Sum(ck[:0])
	s.hmacs.Put(m)
	return ck
}

// Verify returns the key record for a plaintext key, or ErrInvalidKey,
// ErrDisabled or ErrExpired. The returned record is shared with the cache:
// callers must not modify it.
//
// After a key's first successful use, Verify costs an HMAC and a map
// lookup; bcrypt runs again only when the cache entry ages out.
func (s *Service) Verify(ctx context.Context, key string) (*Key, error) {
	if key == "" {
		return nil, ErrMissingKey
	}
	id, err := Parse(key)
	if err != nil {
		return nil, err
	}
	ck := s.cacheKey(key)
	now := s.now()
	if e, ok := s.neg.get(ck); ok && now.Before(e.expires) {
		s.refusals.Add(1)
		return nil, ErrInvalidKey
	}
	if e, ok := s.cache.get(ck); ok && now.Before(e.expires) {
		if !bytes.Equal(e.hash, e.key.Hash) && (e.key.PrevExpiresAt == nil || !now.Before(*e.key.PrevExpiresAt)) {
			// Verified with a previous secret whose grace period is over.
			s.cache.remove(ck)
			return nil, ErrInvalidKey
		}
		if now.Sub(e.checked) >= s.cfg.RecheckInterval {
			s.recheck(ck, id, e.hash)
		}
		s.hits.Add(1)
		return s.usable(e.key, now)
	}
	s.misses.Add(1)
	// Concurrent first uses of one key share one bcrypt check. The check
	// runs detached from any one caller's context, so a caller that gives
	// up does not fail the others; each waits on its own context.
	ch := s.sf.DoChan(string(ck[:]), func() (any, error) {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		return s.verifySlow(dctx, ck, id, key)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return s.usable(res.Val.(*Key), now)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *Service) usable(k *Key, now time.Time) (*Key, error) {
	if err := k.Usable(now); err != nil {
		return nil, err
	}
	s.touchMu.Lock()
	s.touched[k.ID] = now
	s.touchMu.Unlock()
	return k, nil
}

func (s *Service) verifySlow(ctx context.Context, ck cacheKey, id, key string) (*Key, error) {
	now := s.now()
	k, err := s.store.GetKey(ctx, id)
	if errors.Is(err, ErrNotFound) || (err == nil && k.DeletedAt != nil) {
		s.neg.put(cacheEntry{ck: ck, expires: now.Add(s.cfg.NegativeTTL)})
		return nil, ErrInvalidKey
	}
	if err != nil {
		return nil, fmt.Errorf("keys: load key: %w", err)
	}
	if !s.mayHash(id, now) {
		return nil, ErrInvalidKey // not cached: the real secret may come next
	}
	select {
	case s.hashSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	matched := k.Hash
	err = bcrypt.CompareHashAndPassword(k.Hash, []byte(key))
	if err != nil && len(k.PrevHash) > 0 && k.PrevExpiresAt != nil && now.Before(*k.PrevExpiresAt) {
		matched = k.PrevHash
		err = bcrypt.CompareHashAndPassword(k.PrevHash, []byte(key))
	}
	<-s.hashSem
	if err == nil {
		s.hashSucceeded(id)
	}
	if err != nil {
		s.neg.put(cacheEntry{ck: ck, expires: now.Add(s.cfg.NegativeTTL)})
		return nil, ErrInvalidKey
	}
	s.cache.put(cacheEntry{ck: ck, key: k, hash: matched, expires: now.Add(s.cfg.CacheTTL), checked: now})
	return k, nil
}

// mayHash takes one unit of id's bcrypt budget for this minute, or
// reports that none is left. Units are taken before hashing (so a burst of
// concurrent guesses cannot all pass the check) and given back when the
// secret was right. Guessing secrets of a known id is thus capped at a
// few bcrypt runs a minute, whatever the flood.
func (s *Service) mayHash(id string, now time.Time) bool {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	if now.Sub(s.failWindow) >= time.Minute {
		clear(s.failures)
		s.failWindow = now
	}
	if s.failures[id] >= s.cfg.MaxFailuresPerID {
		return false
	}
	s.failures[id]++
	return true
}

// hashSucceeded gives back the unit a right secret took.
func (s *Service) hashSucceeded(id string) {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	if s.failures[id] > 0 {
		s.failures[id]--
	}
}

// recheck compares a cached record with the store in the background: the
// request that noticed the entry is old is not delayed by it.
func (s *Service) recheck(ck cacheKey, id string, hash []byte) {
	s.recheckMu.Lock()
	if s.rechecks[id] {
		s.recheckMu.Unlock()
		return
	}
	select {
	case <-s.stop: // closed: no new background work
		s.recheckMu.Unlock()
		return
	default:
	}
	s.rechecks[id] = true
	s.wg.Add(1) // under recheckMu, which Close takes before Wait
	s.recheckMu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() {
			s.recheckMu.Lock()
			delete(s.rechecks, id)
			s.recheckMu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		k, err := s.store.GetKey(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			s.cache.removeID(id)
		case err != nil:
			// The store is unreachable: keep serving verified keys.
			s.log.Warn("key recheck failed", "key_id", id, "error", err)
		case !bytes.Equal(hash, k.Hash) && !bytes.Equal(hash, k.PrevHash):
			s.cache.remove(ck) // rotated: the cached secret is no longer valid
		default:
			now := s.now()
			s.cache.setChecked(ck, k, now, now.Add(s.cfg.CacheTTL))
		}
	}()
}

// Invalidate drops every cached entry of a key id. Call it when another
// instance reports a change to that key.
func (s *Service) Invalidate(id string) { s.cache.removeID(id) }

// InvalidateAll empties the verified-key cache. Call it when change
// notices from other instances may have been missed (a reconnect).
func (s *Service) InvalidateAll() { s.cache.clear() }

func (s *Service) changed(id string) {
	s.cache.removeID(id)
	if s.cfg.OnChange != nil {
		s.cfg.OnChange(id)
	}
}

func (s *Service) touchLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.TouchInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := s.flushTouches(ctx); err != nil {
				s.log.Warn("writing key last-use times failed", "error", err)
			}
			cancel()
		}
	}
}

func (s *Service) flushTouches(ctx context.Context) error {
	s.touchMu.Lock()
	if len(s.touched) == 0 {
		s.touchMu.Unlock()
		return nil
	}
	batch := s.touched
	s.touched = make(map[string]time.Time, len(batch))
	s.touchMu.Unlock()
	if err := s.store.TouchKeys(ctx, batch); err != nil {
		// Put them back unless newer times arrived meanwhile.
		s.touchMu.Lock()
		for id, t := range batch {
			if cur, ok := s.touched[id]; !ok || cur.Before(t) {
				s.touched[id] = t
			}
		}
		s.touchMu.Unlock()
		return err
	}
	return nil
}
