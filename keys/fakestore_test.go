package keys_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaystation/relay/keys"
)

// fakeStore is a keys.Store in a map that counts its calls, so tests can
// prove what the Service's cache saved. It is a fake until storage/memory
// lands; the counting and the hooks would stay test-only even then.
type fakeStore struct {
	mu      sync.Mutex
	keys    map[string]*keys.Key
	touches []map[string]time.Time

	gets atomic.Int64
	// beforeGet, when set, runs at the start of every GetKey (to block it).
	beforeGet func(id string)
}

var _ keys.Store = (*fakeStore)(nil)

func newFakeStore() *fakeStore { return &fakeStore{keys: make(map[string]*keys.Key)} }

func (s *fakeStore) CreateKey(_ context.Context, k *keys.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[k.ID]; ok {
		return keys.ErrConflict
	}
	s.keys[k.ID] = k.Clone()
	return nil
}

func (s *fakeStore) GetKey(_ context.Context, id string) (*keys.Key, error) {
	s.gets.Add(1)
	if s.beforeGet != nil {
		s.beforeGet(id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[id]
	if !ok {
		return nil, keys.ErrNotFound
	}
	return k.Clone(), nil
}

func (s *fakeStore) ListKeys(_ context.Context, f keys.ListFilter) ([]*keys.Key, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	ids := make([]string, 0, len(s.keys))
	for id := range s.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var out []*keys.Key
	for _, id := range ids {
		k := s.keys[id]
		switch {
		case id <= f.After && f.After != "",
			k.DeletedAt != nil && !f.IncludeDeleted,
			f.Name != "" && !strings.Contains(k.Name, f.Name),
			f.Enabled != nil && k.Enabled != *f.Enabled,
			f.Tier != "" && k.Tier != f.Tier:
			continue
		}
		if len(out) == limit {
			return out, out[len(out)-1].ID, nil
		}
		out = append(out, k.Clone())
	}
	return out, "", nil
}

func (s *fakeStore) UpdateKey(_ context.Context, k *keys.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[k.ID]; !ok {
		return keys.ErrNotFound
	}
	s.keys[k.ID] = k.Clone()
	return nil
}

func (s *fakeStore) TouchKeys(_ context.Context, lastUsed map[string]time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.touches = append(s.touches, lastUsed)
	for id, t := range lastUsed {
		if k, ok := s.keys[id]; ok {
			k.LastUsedAt = &t
		}
	}
	return nil
}

// edit changes a stored record directly, as another relay instance would.
func (s *fakeStore) edit(id string, fn func(*keys.Key)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s.keys[id])
}

func (s *fakeStore) touchLog() []map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.touches)
}

// fakeClock is an injectable Now that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
