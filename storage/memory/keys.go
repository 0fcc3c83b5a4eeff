package memory

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/relaystation/relay/keys"
)

// CreateKey stores a copy of k. keys.ErrConflict if the id exists.
func (s *Store) CreateKey(ctx context.Context, k *keys.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := storedKey(k)
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	if _, ok := s.keys[k.ID]; ok {
		return fmt.Errorf("create key %s: %w", k.ID, keys.ErrConflict)
	}
	s.keys[k.ID] = c
	i, _ := slices.BinarySearch(s.ids, k.ID)
	s.ids = slices.Insert(s.ids, i, k.ID)
	return nil
}

// GetKey returns a copy of the key. keys.ErrNotFound if none.
func (s *Store) GetKey(ctx context.Context, id string) (*keys.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.keysMu.RLock()
	defer s.keysMu.RUnlock()
	k, ok := s.keys[id]
	if !ok {
		return nil, fmt.Errorf("get key %s: %w", id, keys.ErrNotFound)
	}
	return k.Clone(), nil
}

// ListKeys returns copies of the keys matching f, ordered by id; the cursor
// is the last id of the page.
func (s *Store) ListKeys(ctx context.Context, f keys.ListFilter) ([]*keys.Key, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	s.keysMu.RLock()
	defer s.keysMu.RUnlock()
	start, found := slices.BinarySearch(s.ids, f.After)
	if found {
		start++
	}
	var out []*keys.Key
	for _, id := range s.ids[start:] {
		k := s.keys[id]
		if !matchKey(k, f) {
			continue
		}
		if len(out) == limit {
			// One more match exists, so this page has a successor.
			return out, out[limit-1].ID, nil
		}
		out = append(out, k.Clone())
	}
	return out, "", nil
}

func matchKey(k *keys.Key, f keys.ListFilter) bool {
	return (f.IncludeDeleted || k.DeletedAt == nil) &&
		(f.Enabled == nil || k.Enabled == *f.Enabled) &&
		(f.Tier == "" || k.Tier == f.Tier) &&
		(f.Name == "" || strings.Contains(k.Name, f.Name))
}

// UpdateKey replaces the stored record with a copy of k. keys.ErrNotFound
// if none.
func (s *Store) UpdateKey(ctx context.Context, k *keys.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := storedKey(k)
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	if _, ok := s.keys[k.ID]; !ok {
		return fmt.Errorf("update key %s: %w", k.ID, keys.ErrNotFound)
	}
	s.keys[k.ID] = c
	return nil
}

// TouchKeys moves LastUsedAt forward; it never moves it back, because
// batches from several relay instances may arrive in any order. Unknown ids
// are ignored.
func (s *Store) TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	for id, at := range lastUsed {
		k, ok := s.keys[id]
		if !ok {
			continue
		}
		at = storedTime(at)
		if k.LastUsedAt == nil || k.LastUsedAt.Before(at) {
			k.LastUsedAt = &at // k is the store's own copy; callers only ever see clones
		}
	}
	return nil
}

// storedKey is the copy the store keeps: deep, with times as stored.
func storedKey(k *keys.Key) *keys.Key {
	c := k.Clone()
	c.PrevExpiresAt = storedTimePtr(c.PrevExpiresAt)
	c.ExpiresAt = storedTimePtr(c.ExpiresAt)
	c.CreatedAt = storedTime(c.CreatedAt)
	c.UpdatedAt = storedTime(c.UpdatedAt)
	c.LastUsedAt = storedTimePtr(c.LastUsedAt)
	c.DeletedAt = storedTimePtr(c.DeletedAt)
	return c
}
