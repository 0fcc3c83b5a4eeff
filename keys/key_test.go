package keys_test

import (
	"errors"
	"testing"
	"time"

	"github.com/relaystation/relay/keys"
)

func TestAllowsModel(t *testing.T) {
	tests := []struct {
		allowed []string
		model   string
		want    bool
	}{
		{nil, "claude-opus-4-1", true},
		{[]string{}, "anything", true},
		{[]string{"claude-sonnet-4-5"}, "claude-sonnet-4-5", true},
		{[]string{"claude-sonnet-4-5"}, "claude-sonnet-4-5-20250929", false},
		{[]string{"claude-sonnet-4-5*"}, "claude-sonnet-4-5-20250929", true},
		{[]string{"claude-*-4-5*"}, "claude-haiku-4-5", true},
		{[]string{"claude-*-4-5*"}, "claude-opus-4-1", false},
		{[]string{"claude-?aiku-*"}, "claude-haiku-4-5", true},
		{[]string{"claude-[hs]*"}, "claude-sonnet-4", true},
		{[]string{"claude-[hs]*"}, "claude-opus-4", false},
		{[]string{"claude-opus-*", "claude-haiku-*"}, "claude-haiku-4-5", true},
		{[]string{"*"}, "claude-opus-4-1", true},
		{[]string{"*"}, "a/b", false}, // path.Match: * does not cross '/'
		{[]string{"["}, "[", true},    // a malformed glob still matches itself exactly
		{[]string{"["}, "claude", false},
		{[]string{"claude-opus-4-1"}, "", false},
	}
	for _, tt := range tests {
		k := &keys.Key{AllowedModels: tt.allowed}
		if got := k.AllowsModel(tt.model); got != tt.want {
			t.Errorf("AllowedModels %q: AllowsModel(%q) = %v, want %v", tt.allowed, tt.model, got, tt.want)
		}
	}
}

func TestUsable(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	past, future := now.Add(-time.Second), now.Add(time.Second)
	tests := []struct {
		name string
		key  keys.Key
		want error
	}{
		{"enabled", keys.Key{Enabled: true}, nil},
		{"future expiry", keys.Key{Enabled: true, ExpiresAt: &future}, nil},
		{"disabled", keys.Key{}, keys.ErrDisabled},
		{"expired", keys.Key{Enabled: true, ExpiresAt: &past}, keys.ErrExpired},
		{"expires exactly now", keys.Key{Enabled: true, ExpiresAt: &now}, keys.ErrExpired},
		{"deleted", keys.Key{Enabled: true, DeletedAt: &past}, keys.ErrInvalidKey},
		{"deleted wins over disabled and expired", keys.Key{DeletedAt: &past, ExpiresAt: &past}, keys.ErrInvalidKey},
		{"disabled wins over expired", keys.Key{ExpiresAt: &past}, keys.ErrDisabled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.key.Usable(now); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Usable = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestCloneIsDeep(t *testing.T) {
	now := time.Now()
	k := &keys.Key{
		ID: "AbC123xyz789", Hash: []byte("h"), PrevHash: []byte("p"), PrevExpiresAt: &now,
		AllowedModels: []string{"a"}, ExpiresAt: &now, Metadata: map[string]string{"a": "b"},
		LastUsedAt: &now, DeletedAt: &now,
	}
	c := k.Clone()
	c.Hash[0], c.PrevHash[0], c.AllowedModels[0], c.Metadata["a"] = 'x', 'x', "x", "x"
	*c.PrevExpiresAt, *c.ExpiresAt, *c.LastUsedAt, *c.DeletedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if string(k.Hash) != "h" || string(k.PrevHash) != "p" || k.AllowedModels[0] != "a" || k.Metadata["a"] != "b" ||
		!k.PrevExpiresAt.Equal(now) || !k.ExpiresAt.Equal(now) || !k.LastUsedAt.Equal(now) || !k.DeletedAt.Equal(now) {
		t.Fatal("changing the clone changed the original")
	}
}
