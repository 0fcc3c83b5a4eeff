package keys

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// CreateParams describes a new key. Enabled defaults to true.
type CreateParams struct {
	Name          string
	TokenLimit    int64
	Tier          string
	AllowedModels []string
	Limits        map[string]int64
	ExpiresAt     *time.Time
	Disabled      bool
	Metadata      map[string]string
}

// Create issues a new key. The plaintext is returned once and never stored.
func (s *Service) Create(ctx context.Context, p CreateParams) (*Key, string, error) {
	if p.TokenLimit < 0 {
		return nil, "", fmt.Errorf("%w: token_limit must not be negative", ErrInvalidParams)
	}
	now := s.now().UTC()
	for range 3 { // an id collision is astronomically unlikely; retry anyway
		id := NewID()
		plain := Generate(id)
		hash, err := s.hash(plain)
		if err != nil {
			return nil, "", err
		}
		k := &Key{
			ID:            id,
			Name:          p.Name,
			Hash:          hash,
			Hint:          Hint(plain),
			TokenLimit:    p.TokenLimit,
			Tier:          p.Tier,
			AllowedModels: p.AllowedModels,
			Limits:        p.Limits,
			ExpiresAt:     p.ExpiresAt,
			Enabled:       !p.Disabled,
			Metadata:      p.Metadata,
			CreatedAt:     now,
			UpdatedAt:     now,
		}
		err = s.store.CreateKey(ctx, k)
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		return k, plain, nil
	}
	return nil, "", ErrConflict
}

// ErrInvalidParams wraps a description of a bad create or update value.
var ErrInvalidParams = errors.New("keys: invalid parameters")

func (s *Service) hash(plain string) ([]byte, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(plain), s.cfg.BcryptCost)
	if err != nil {
		return nil, fmt.Errorf("keys: hash: %w", err)
	}
	return h, nil
}

// Get returns a key record, deleted or not.
func (s *Service) Get(ctx context.Context, id string) (*Key, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	return s.store.GetKey(ctx, id)
}

// List returns a page of keys and the cursor of the next one.
func (s *Service) List(ctx context.Context, f ListFilter) ([]*Key, string, error) {
	return s.store.ListKeys(ctx, f)
}

// Update applies fn to the stored record and saves it. The change takes
// effect at once on this instance and, through OnChange, on others.
func (s *Service) Update(ctx context.Context, id string, fn func(*Key) error) (*Key, error) {
	k, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if k.DeletedAt != nil {
		return nil, ErrNotFound
	}
	if err := fn(k); err != nil {
		return nil, err
	}
	k.UpdatedAt = s.now().UTC()
	if err := s.store.UpdateKey(ctx, k); err != nil {
		return nil, err
	}
	s.changed(id)
	return k, nil
}

// Delete revokes a key for good. Its record stays, marked deleted, so its
// usage history keeps a name.
func (s *Service) Delete(ctx context.Context, id string) error {
	_, err := s.Update(ctx, id, func(k *Key) error {
		now := s.now().UTC()
		k.DeletedAt = &now
		k.Enabled = false
		return nil
	})
	return err
}

// Rotate gives a key a new secret, keeping its id, settings and history.
// With grace > 0 the old secret keeps working until then; otherwise it
// dies at once.
func (s *Service) Rotate(ctx context.Context, id string, grace time.Duration) (*Key, string, error) {
	if grace < 0 {
		return nil, "", fmt.Errorf("%w: grace period must not be negative", ErrInvalidParams)
	}
	if !ValidID(id) {
		// Before hashing: a malformed id would make a plaintext bcrypt
		// refuses (over 72 bytes) and answer a 500 instead of not found.
		return nil, "", ErrNotFound
	}
	plain := Generate(id)
	hash, err := s.hash(plain)
	if err != nil {
		return nil, "", err
	}
	k, err := s.Update(ctx, id, func(k *Key) error {
		if grace > 0 {
			until := s.now().UTC().Add(grace)
			k.PrevHash, k.PrevExpiresAt = k.Hash, &until
		} else {
			k.PrevHash, k.PrevExpiresAt = nil, nil
		}
		k.Hash = hash
		k.Hint = Hint(plain)
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return k, plain, nil
}
