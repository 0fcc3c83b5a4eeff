package keys

import (
	"container/list"
	"sync"
	"time"
)

// cacheKey is HMAC-SHA256(server secret, plaintext key): the cache never
// holds a plaintext key, and a memory dump does not yield one.
type cacheKey [32]byte

type cacheEntry struct {
	ck      cacheKey
	key     *Key      // read-only once cached
	hash    []byte    // the hash the secret matched (current or previous)
	expires time.Time // when the entry must be verified with bcrypt again
	checked time.Time // when the record was last compared with the store
	elem    *list.Element
}

// lru is a bounded map with least-recently-used eviction. One mutex is
// enough: the critical section is a map lookup and a list move.
type lru struct {
	mu    sync.Mutex
	max   int
	items map[cacheKey]*cacheEntry
	order *list.List // front = most recently used
	byID  map[string]map[cacheKey]struct{}
}

func newLRU(max int) *lru {
	return &lru{max: max, items: make(map[cacheKey]*cacheEntry), order: list.New(), byID: make(map[string]map[cacheKey]struct{})}
}

func (c *lru) get(ck cacheKey) (cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[ck]
	if !ok {
		return cacheEntry{}, false
	}
	c.order.MoveToFront(e.elem)
	return *e, true
}

func (c *lru) put(e cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.items[e.ck]; ok {
		c.unlinkLocked(old)
	}
	ne := e
	ne.elem = c.order.PushFront(&ne)
	c.items[e.ck] = &ne
	if ne.key != nil {
		set := c.byID[ne.key.ID]
		if set == nil {
			set = make(map[cacheKey]struct{}, 1)
			c.byID[ne.key.ID] = set
		}
		set[e.ck] = struct{}{}
	}
	for c.order.Len() > c.max {
		c.unlinkLocked(c.order.Back().Value.(*cacheEntry))
	}
}

// setChecked records a successful comparison with the store and slides
// the entry's expiry to until: a verified secret stays verified while its
// hash is unchanged, so a key in use never needs bcrypt again (and never
// meets the per-id failure budget an attacker may have used up).
func (c *lru) setChecked(ck cacheKey, key *Key, at, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[ck]; ok {
		e.checked = at
		if e.expires.Before(until) {
			e.expires = until
		}
		if key != nil {
			e.key = key
		}
	}
}

func (c *lru) remove(ck cacheKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[ck]; ok {
		c.unlinkLocked(e)
	}
}

// removeID drops every entry of one key id (a key may be cached under its
// current and its previous secret during a rotation's grace period).
func (c *lru) removeID(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ck := range c.byID[id] {
		if e, ok := c.items[ck]; ok {
			c.unlinkLocked(e)
		}
	}
	delete(c.byID, id)
}

func (c *lru) unlinkLocked(e *cacheEntry) {
	c.order.Remove(e.elem)
	delete(c.items, e.ck)
	if e.key != nil {
		if set := c.byID[e.key.ID]; set != nil {
			delete(set, e.ck)
			if len(set) == 0 {
				delete(c.byID, e.key.ID)
			}
		}
	}
}

func (c *lru) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.items = make(map[cacheKey]*cacheEntry)
	c.order.Init()
	c.byID = make(map[string]map[cacheKey]struct{})
}
