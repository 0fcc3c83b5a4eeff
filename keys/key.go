// Package keys issues, stores and verifies the relay keys users present
// instead of the real Anthropic key.
//
// A key is "sk-proxy-" followed by a 12-character public id and a
// 40-character secret, both base62. The id locates the record without a
// scan; the secret carries 238 bits of randomness and is kept only as a
// bcrypt hash. Because bcrypt costs tens of milliseconds, a key verified once
// is served from an in-process cache keyed by an HMAC of the whole key, so the
// request path pays for bcrypt at most once per key and cache lifetime.
package keys

import (
	"context"
	"errors"
	"path"
	"time"
)

// Key is a relay key's stored record. The plaintext key is never stored.
type Key struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Hash []byte `json:"-"`    // bcrypt hash of the full plaintext key
	Hint string `json:"hint"` // display form: prefix, id and the last 4 characters
	// PrevHash is the hash of the secret a rotation replaced; it keeps
	// verifying until PrevExpiresAt (the rotation's grace period).
	PrevHash      []byte     `json:"-"`
	PrevExpiresAt *time.Time `json:"-"`
	TokenLimit    int64      `json:"token_limit"`
	Tier          string     `json:"tier,omitempty"`
	AllowedModels []string   `json:"allowed_models,omitempty"` // exact names or path.Match globs; empty allows all
	// Limits overrides the tier's limits for this key, by the quota
	// package's limit names (e.g. "rpm", "daily_tokens"). Absent names use
	// the tier's value; 0 means unlimited.
	Limits     map[string]int64  `json:"limits,omitempty"`
	ExpiresAt  *time.Time        `json:"expires_at,omitempty"`
	Enabled    bool              `json:"enabled"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	CreatedAt  time.Time         `json:"created_at"`
	UpdatedAt  time.Time         `json:"updated_at"`
	LastUsedAt *time.Time        `json:"last_used_at,omitempty"`
	// DeletedAt is set when the key was deleted: the record stays so that its
	// usage history keeps a name, but the key never verifies again.
	DeletedAt *time.Time `json:"deleted_at,omitempty"`
}

// Usable reports why k may not serve a request at now, or nil.
func (k *Key) Usable(now time.Time) error {
	switch {
	case k.DeletedAt != nil:
		return ErrInvalidKey
	case !k.Enabled:
		return ErrDisabled
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		return ErrExpired
	}
	return nil
}

// AllowsModel reports whether k may call model. An empty allow list allows
// every model; entries are exact names or path.Match globs such as
// "claude-*-4-5*".
func (k *Key) AllowsModel(model string) bool {
	if len(k.AllowedModels) == 0 {
		return true
	}
	for _, pat := range k.AllowedModels {
		if pat == model {
			return true
		}
		if ok, err := path.Match(pat, model); err == nil && ok {
			return true
		}
	}
	return false
}

// Clone returns a deep copy, so cached records are never shared mutably.
func (k *Key) Clone() *Key {
	c := *k
	c.Hash = append([]byte(nil), k.Hash...)
	c.PrevHash = append([]byte(nil), k.PrevHash...)
	c.PrevExpiresAt = cloneTime(k.PrevExpiresAt)
	c.AllowedModels = append([]string(nil), k.AllowedModels...)
	if k.Limits != nil {
		c.Limits = make(map[string]int64, len(k.Limits))
		for a, b := range k.Limits {
			c.Limits[a] = b
		}
	}
	if k.Metadata != nil {
		c.Metadata = make(map[string]string, len(k.Metadata))
		for a, b := range k.Metadata {
			c.Metadata[a] = b
		}
	}
	c.ExpiresAt = cloneTime(k.ExpiresAt)
	c.LastUsedAt = cloneTime(k.LastUsedAt)
	c.DeletedAt = cloneTime(k.DeletedAt)
	return &c
}

func cloneTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := *t
	return &v
}

// Errors returned by this package and by Store implementations.
var (
	// ErrNotFound: no key with that id.
	ErrNotFound = errors.New("keys: not found")
	// ErrConflict: a key with that id already exists.
	ErrConflict = errors.New("keys: already exists")
	// ErrInvalidKey: the presented key is malformed, unknown, deleted or
	// has a wrong secret. Deliberately one error so callers cannot tell
	// which.
	ErrInvalidKey = errors.New("keys: invalid api key")
	// ErrMissingKey: the request carried no key at all.
	ErrMissingKey = errors.New("keys: missing api key")
	// ErrDisabled: the key exists but an admin disabled it.
	ErrDisabled = errors.New("keys: key disabled")
	// ErrExpired: the key is past its expiry time.
	ErrExpired = errors.New("keys: key expired")
	// ErrModelNotAllowed: the key may not call the requested model.
	ErrModelNotAllowed = errors.New("keys: model not allowed for this key")
)

// ListFilter selects keys for List. Zero fields match everything.
type ListFilter struct {
	Name    string // case-sensitive substring match on the name
	Enabled *bool
	Tier    string
	// IncludeDeleted lists deleted keys too.
	IncludeDeleted bool
	// After is the cursor returned with the previous page ("" for the first).
	After string
	// Limit bounds the page; 0 means 100.
	Limit int
}

// Store keeps key records. Every method takes ctx first. Implementations
// live in storage/*; storage/storagetest holds the suite each must pass.
type Store interface {
	// CreateKey stores a new key. ErrConflict if the id exists.
	CreateKey(ctx context.Context, k *Key) error
	// GetKey returns the key with that id, deleted or not. ErrNotFound if none.
	GetKey(ctx context.Context, id string) (*Key, error)
	// ListKeys returns keys ordered by id, after f.After, at most f.Limit,
	// and the cursor of the next page ("" when there is none).
	ListKeys(ctx context.Context, f ListFilter) ([]*Key, string, error)
	// UpdateKey replaces the stored record of k.ID. ErrNotFound if none.
	UpdateKey(ctx context.Context, k *Key) error
	// TouchKeys records last-use times in one write; unknown ids are
	// ignored and LastUsedAt never moves backwards. Nothing else changes.
	TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error
}
