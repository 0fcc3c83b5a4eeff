package storagetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/relaystation/relay/keys"
)

// baseTime has nanoseconds and a zone other than UTC, so that the suites
// notice a store that keeps nanoseconds, rounds, or keeps the zone.
func baseTime() time.Time {
	return time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.FixedZone("UTC+5:30", 5*3600+1800))
}

// fullKey sets every field of keys.Key.
func fullKey(id string) *keys.Key {
	t0 := baseTime()
	return &keys.Key{
		ID:            id,
		Name:          "full key " + id,
		Hash:          []byte("$2a$10$abcdefghijklmnopqrstuvABCDEFGHIJKLMNOPQRSTUVWXYZ0123\x00\xff"),
		Hint:          "sk-proxy-" + id + "...wxyz",
		PrevHash:      []byte{0, 1, 2, 254, 255},
		PrevExpiresAt: ptr(t0.Add(48 * time.Hour)),
		TokenLimit:    1_000_000_000_000,
		Tier:          "gold",
		AllowedModels: []string{"claude-sonnet-4-5", "claude-*-4-5*"},
		Limits:        map[string]int64{"rpm": 60, "daily_tokens": 1<<62 + 1, "monthly_cost": 0, "tpm": -1, "ünïcode": 7}, // past 2^53, negative, zero
		ExpiresAt:     ptr(t0.Add(365 * 24 * time.Hour)),
		Enabled:       true,
		Metadata:      map[string]string{"owner": "ana@example.com", "team": "ml", "ünïcode": "✓", "": "empty key"},
		CreatedAt:     t0,
		UpdatedAt:     t0.Add(time.Minute + 999*time.Nanosecond),
		LastUsedAt:    ptr(t0.Add(time.Hour + 1)),
		DeletedAt:     ptr(t0.Add(2 * time.Hour)),
	}
}

// TestKeysStore runs the keys.Store conformance suite. newStore must return
// a new, empty store each time it is called.
func TestKeysStore(t *testing.T, newStore func(t *testing.T) keys.Store) {
	t.Run("RoundTrip", func(t *testing.T) { t.Parallel(); testKeyRoundTrip(t, newStore(t)) })
	t.Run("NoAliasing", func(t *testing.T) { t.Parallel(); testKeyNoAliasing(t, newStore(t)) })
	t.Run("Conflict", func(t *testing.T) { t.Parallel(); testKeyConflict(t, newStore(t)) })
	t.Run("NotFound", func(t *testing.T) { t.Parallel(); testKeyNotFound(t, newStore(t)) })
	t.Run("UpdateReplaces", func(t *testing.T) { t.Parallel(); testKeyUpdate(t, newStore(t)) })
	t.Run("ListPagination", func(t *testing.T) { t.Parallel(); testKeyListPagination(t, newStore(t)) })
	t.Run("ListDefaultLimit", func(t *testing.T) { t.Parallel(); testKeyListDefaultLimit(t, newStore(t)) })
	t.Run("ListFilters", func(t *testing.T) { t.Parallel(); testKeyListFilters(t, newStore(t)) })
	t.Run("ListEmpty", func(t *testing.T) { t.Parallel(); testKeyListEmpty(t, newStore(t)) })
	t.Run("TouchKeys", func(t *testing.T) { t.Parallel(); testTouchKeys(t, newStore(t)) })
	t.Run("Concurrent", func(t *testing.T) { t.Parallel(); testKeysConcurrent(t, newStore(t)) })
}

func testKeyRoundTrip(t *testing.T, s keys.Store) {
	ctx := context.Background()
	t0 := baseTime()
	tests := []struct {
		name string
		key  *keys.Key
	}{
		{"every field", fullKey("full00000001")},
		{"zero values", &keys.Key{ID: "zero00000001"}},
		{"nil pointers, empty collections", &keys.Key{
			ID: "empt00000001", Name: "empty", Hash: []byte{}, PrevHash: []byte{},
			AllowedModels: []string{}, Metadata: map[string]string{}, Limits: map[string]int64{},
			CreatedAt: t0, UpdatedAt: t0,
		}},
		{"pointer times set, disabled, no hash", &keys.Key{
			ID: "ptrs00000001", Name: "ptrs", Enabled: false,
			PrevExpiresAt: ptr(t0.Add(-time.Hour)), ExpiresAt: ptr(t0.Add(-time.Nanosecond)),
			LastUsedAt: ptr(t0), DeletedAt: ptr(t0.Add(time.Nanosecond)),
			CreatedAt: t0, UpdatedAt: t0,
		}},
		{"times before 1970 and far future", &keys.Key{
			ID: "time00000001", Name: "times", Enabled: true,
			CreatedAt: time.Date(1969, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
			UpdatedAt: time.Date(2999, 1, 1, 0, 0, 0, 1000, time.Local),
			ExpiresAt: ptr(time.Date(9999, 12, 31, 23, 59, 59, 999_999_000, time.UTC)),
		}},
		{"one model, one metadata entry, one limit, negative limit", &keys.Key{
			ID: "one000000001", Name: `quotes ' " and ; -- %_`, TokenLimit: -1,
			AllowedModels: []string{"claude-opus-4-1"}, Metadata: map[string]string{"k": "v"},
			Limits:    map[string]int64{"concurrency": 2},
			CreatedAt: t0, UpdatedAt: t0,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, s.CreateKey(ctx, tc.key))
			got, err := s.GetKey(ctx, tc.key.ID)
			require.NoError(t, err)
			assertKey(t, tc.key, got)
		})
	}
}

// testKeyNoAliasing: a store keeps its own copy. Changing the record passed
// in, or the one handed out, must not change what is stored; the memory
// store is where this can go wrong.
func testKeyNoAliasing(t *testing.T, s keys.Store) {
	ctx := context.Background()
	k := fullKey("alias0000001")
	orig := k.Clone()
	require.NoError(t, s.CreateKey(ctx, k))
	scribble(k)

	got, err := s.GetKey(ctx, orig.ID)
	require.NoError(t, err)
	assertKey(t, orig, got)
	scribble(got)

	list, _, err := s.ListKeys(ctx, keys.ListFilter{IncludeDeleted: true})
	require.NoError(t, err)
	require.Len(t, list, 1)
	assertKey(t, orig, list[0])
	scribble(list[0])

	got, err = s.GetKey(ctx, orig.ID)
	require.NoError(t, err)
	assertKey(t, orig, got)

	u := orig.Clone()
	u.Name = "updated"
	require.NoError(t, s.UpdateKey(ctx, u))
	scribble(u)
	u = orig.Clone()
	u.Name = "updated"

	got, err = s.GetKey(ctx, orig.ID)
	require.NoError(t, err)
	assertKey(t, u, got)
}

// scribble changes every mutable part of k in place.
func scribble(k *keys.Key) {
	k.Name = "scribbled"
	k.Hash[0] ^= 0xff
	k.PrevHash[0] ^= 0xff
	*k.PrevExpiresAt = k.PrevExpiresAt.Add(time.Hour)
	k.AllowedModels[0] = "scribbled"
	k.Metadata["owner"] = "scribbled"
	k.Metadata["new"] = "scribbled"
	k.Limits["rpm"]++
	k.Limits["new"] = 1
	*k.ExpiresAt = k.ExpiresAt.Add(time.Hour)
	*k.LastUsedAt = k.LastUsedAt.Add(time.Hour)
	*k.DeletedAt = k.DeletedAt.Add(time.Hour)
}

func testKeyConflict(t *testing.T, s keys.Store) {
	ctx := context.Background()
	k := fullKey("dup000000001")
	require.NoError(t, s.CreateKey(ctx, k))

	other := fullKey("dup000000001")
	other.Name = "second"
	err := s.CreateKey(ctx, other)
	require.ErrorIs(t, err, keys.ErrConflict)

	got, err := s.GetKey(ctx, k.ID)
	require.NoError(t, err)
	assertKey(t, k, got) // the first one stays

	// A deleted key still owns its id.
	require.NoError(t, s.CreateKey(ctx, &keys.Key{ID: "deleted00001", DeletedAt: ptr(baseTime())}))
	require.ErrorIs(t, s.CreateKey(ctx, &keys.Key{ID: "deleted00001"}), keys.ErrConflict)
}

func testKeyNotFound(t *testing.T, s keys.Store) {
	ctx := context.Background()
	require.NoError(t, s.CreateKey(ctx, &keys.Key{ID: "exists000001"}))

	for _, id := range []string{"missing00001", "", "EXISTS000001", "exists00000"} {
		t.Run(fmt.Sprintf("id=%q", id), func(t *testing.T) {
			_, err := s.GetKey(ctx, id)
			require.ErrorIs(t, err, keys.ErrNotFound)

			err = s.UpdateKey(ctx, &keys.Key{ID: id, Name: "x"})
			require.ErrorIs(t, err, keys.ErrNotFound)

			// UpdateKey of an unknown id must not create it.
			_, err = s.GetKey(ctx, id)
			require.ErrorIs(t, err, keys.ErrNotFound)
		})
	}
}

func testKeyUpdate(t *testing.T, s keys.Store) {
	ctx := context.Background()
	t1 := baseTime().Add(24 * time.Hour)
	tests := []struct {
		name   string
		before *keys.Key
		after  func(k *keys.Key)
	}{
		{"change every field", fullKey("upd000000001"), func(k *keys.Key) {
			k.Name = "renamed"
			k.Hash = []byte("new hash")
			k.PrevHash = []byte("old hash")
			k.PrevExpiresAt = ptr(t1)
			k.TokenLimit = 7
			k.Tier = "free"
			k.AllowedModels = []string{"claude-haiku-4-5"}
			k.ExpiresAt = ptr(t1.Add(time.Hour))
			k.Enabled = false
			k.Metadata = map[string]string{"only": "this"}
			k.Limits = map[string]int64{"rpm": 5}
			k.CreatedAt = t1.Add(-time.Hour) // UpdateKey replaces; it does not protect CreatedAt
			k.UpdatedAt = t1
			k.LastUsedAt = ptr(t1.Add(-time.Minute))
			k.DeletedAt = ptr(t1.Add(time.Second))
		}},
		{"clear pointers and collections", fullKey("upd000000002"), func(k *keys.Key) {
			k.PrevHash = nil
			k.PrevExpiresAt = nil
			k.AllowedModels = nil
			k.ExpiresAt = nil
			k.Metadata = nil
			k.Limits = nil
			k.LastUsedAt = nil
			k.DeletedAt = nil // undelete
			k.Tier = ""
		}},
		{"set pointers on a bare key", &keys.Key{ID: "upd000000003"}, func(k *keys.Key) {
			*k = *fullKey(k.ID)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, s.CreateKey(ctx, tc.before))
			u := tc.before.Clone()
			tc.after(u)
			require.NoError(t, s.UpdateKey(ctx, u))
			got, err := s.GetKey(ctx, u.ID)
			require.NoError(t, err)
			assertKey(t, u, got)
		})
	}
}

// listAll follows cursors until the last page and checks the page rules.
func listAll(t *testing.T, s keys.Store, f keys.ListFilter) []string {
	t.Helper()
	ctx := context.Background()
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	var ids []string
	for page := 0; ; page++ {
		require.Less(t, page, 1000, "pagination does not end")
		got, next, err := s.ListKeys(ctx, f)
		require.NoError(t, err)
		require.LessOrEqual(t, len(got), limit)
		for _, k := range got {
			ids = append(ids, k.ID)
		}
		if next == "" {
			return ids
		}
		require.NotEmpty(t, got, "a page with a next cursor must not be empty")
		require.Len(t, got, limit, "only the last page may be short")
		f.After = next
	}
}

func testKeyListPagination(t *testing.T, s keys.Store) {
	ctx := context.Background()
	// Created out of order; ids chosen so that bytewise and case-insensitive
	// orders differ ('B' < 'a' < 'b').
	ids := []string{"b00000000003", "a00000000001", "B00000000009", "000000000007", "a00000000002", "z00000000000", "Z00000000000"}
	for _, id := range ids {
		require.NoError(t, s.CreateKey(ctx, &keys.Key{ID: id, Name: id}))
	}
	want := slices.Clone(ids)
	sort.Strings(want)

	for _, limit := range []int{1, 2, 3, 6, 7, 8, 0, -1} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
			require.Equal(t, want, listAll(t, s, keys.ListFilter{Limit: limit}))
		})
	}

	t.Run("after an id that does not exist", func(t *testing.T) {
		got := listAll(t, s, keys.ListFilter{After: "a00000000001x", Limit: 2})
		require.Equal(t, []string{"a00000000002", "b00000000003", "z00000000000"}, got)
	})
	t.Run("after the last id", func(t *testing.T) {
		got, next, err := s.ListKeys(ctx, keys.ListFilter{After: "z00000000000"})
		require.NoError(t, err)
		require.Empty(t, got)
		require.Empty(t, next)
	})
	t.Run("records are complete", func(t *testing.T) {
		k := fullKey("m00000000000")
		k.DeletedAt = nil
		require.NoError(t, s.CreateKey(ctx, k))
		got, _, err := s.ListKeys(ctx, keys.ListFilter{After: "b00000000003", Limit: 1})
		require.NoError(t, err)
		require.Len(t, got, 1)
		assertKey(t, k, got[0])
	})
}

func testKeyListDefaultLimit(t *testing.T, s keys.Store) {
	ctx := context.Background()
	for i := range 101 {
		require.NoError(t, s.CreateKey(ctx, &keys.Key{ID: fmt.Sprintf("k%011d", i)}))
	}
	got, next, err := s.ListKeys(ctx, keys.ListFilter{})
	require.NoError(t, err)
	require.Len(t, got, 100)
	require.Equal(t, "k00000000099", got[99].ID)
	require.NotEmpty(t, next)
	got, next, err = s.ListKeys(ctx, keys.ListFilter{After: next})
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, "k00000000100", got[0].ID)
	require.Empty(t, next)
}

func testKeyListFilters(t *testing.T, s keys.Store) {
	ctx := context.Background()
	del := ptr(baseTime())
	for _, k := range []*keys.Key{
		{ID: "f01", Name: "Alpha prod", Enabled: true, Tier: "gold"},
		{ID: "f02", Name: "alpha staging", Enabled: false, Tier: "gold"},
		{ID: "f03", Name: "beta prod", Enabled: true, Tier: "free"},
		{ID: "f04", Name: "beta 100%_off", Enabled: true},
		{ID: "f05", Name: "gamma prod", Enabled: true, Tier: "gold", DeletedAt: del},
		{ID: "f06", Name: "gamma dev", Enabled: false, Tier: "free", DeletedAt: del},
		{ID: "f07", Name: "", Enabled: false},
	} {
		require.NoError(t, s.CreateKey(ctx, k))
	}
	yes, no := ptr(true), ptr(false)
	tests := []struct {
		name string
		f    keys.ListFilter
		want []string
	}{
		{"zero filter hides deleted", keys.ListFilter{}, []string{"f01", "f02", "f03", "f04", "f07"}},
		{"include deleted", keys.ListFilter{IncludeDeleted: true}, []string{"f01", "f02", "f03", "f04", "f05", "f06", "f07"}},
		{"name substring", keys.ListFilter{Name: "prod"}, []string{"f01", "f03"}},
		{"name substring with deleted", keys.ListFilter{Name: "prod", IncludeDeleted: true}, []string{"f01", "f03", "f05"}},
		{"name is case-sensitive", keys.ListFilter{Name: "alpha"}, []string{"f02"}},
		{"name prefix", keys.ListFilter{Name: "Alpha"}, []string{"f01"}},
		{"name LIKE metacharacters are literal", keys.ListFilter{Name: "%_"}, []string{"f04"}},
		{"name percent alone", keys.ListFilter{Name: "%"}, []string{"f04"}},
		{"name no match", keys.ListFilter{Name: "delta"}, nil},
		{"enabled", keys.ListFilter{Enabled: yes}, []string{"f01", "f03", "f04"}},
		{"disabled", keys.ListFilter{Enabled: no}, []string{"f02", "f07"}},
		{"disabled with deleted", keys.ListFilter{Enabled: no, IncludeDeleted: true}, []string{"f02", "f06", "f07"}},
		{"tier", keys.ListFilter{Tier: "gold"}, []string{"f01", "f02"}},
		{"tier with deleted", keys.ListFilter{Tier: "free", IncludeDeleted: true}, []string{"f03", "f06"}},
		{"tier no match", keys.ListFilter{Tier: "GOLD"}, nil},
		{"all filters", keys.ListFilter{Name: "mm", Enabled: yes, Tier: "gold", IncludeDeleted: true}, []string{"f05"}},
		{"filters with small pages", keys.ListFilter{Name: " ", IncludeDeleted: true, Limit: 2}, []string{"f01", "f02", "f03", "f04", "f05", "f06"}},
		{"filter with cursor", keys.ListFilter{Enabled: yes, After: "f01", Limit: 1}, []string{"f03", "f04"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, listAll(t, s, tc.f))
		})
	}
}

func testKeyListEmpty(t *testing.T, s keys.Store) {
	got, next, err := s.ListKeys(context.Background(), keys.ListFilter{IncludeDeleted: true})
	require.NoError(t, err)
	require.Empty(t, got)
	require.Empty(t, next)
}

func testTouchKeys(t *testing.T, s keys.Store) {
	ctx := context.Background()
	t0 := baseTime()
	a := fullKey("touch0000001")
	a.LastUsedAt = nil
	b := fullKey("touch0000002")
	c := fullKey("touch0000003")
	for _, k := range []*keys.Key{a, b, c} {
		require.NoError(t, s.CreateKey(ctx, k))
	}

	// Each step touches, then every key must equal its expected record
	// (only LastUsedAt ever changes).
	steps := []struct {
		name  string
		touch map[string]time.Time
		want  map[string]*time.Time // expected LastUsedAt of a, b, c
	}{
		{"nil map", nil, map[string]*time.Time{a.ID: nil, b.ID: b.LastUsedAt, c.ID: c.LastUsedAt}},
		{"empty map", map[string]time.Time{}, map[string]*time.Time{a.ID: nil, b.ID: b.LastUsedAt, c.ID: c.LastUsedAt}},
		{"set on nil, forward, unknown ignored",
			map[string]time.Time{a.ID: t0.Add(5 * time.Hour), b.ID: t0.Add(6 * time.Hour), "unknown00001": t0},
			map[string]*time.Time{a.ID: ptr(t0.Add(5 * time.Hour)), b.ID: ptr(t0.Add(6 * time.Hour)), c.ID: c.LastUsedAt}},
		{"never backwards",
			map[string]time.Time{a.ID: t0.Add(4 * time.Hour), b.ID: t0.Add(6*time.Hour + time.Microsecond), c.ID: c.LastUsedAt.Add(-time.Microsecond)},
			map[string]*time.Time{a.ID: ptr(t0.Add(5 * time.Hour)), b.ID: ptr(t0.Add(6*time.Hour + time.Microsecond)), c.ID: c.LastUsedAt}},
		{"only unknown ids", map[string]time.Time{"unknown00002": t0.Add(100 * time.Hour)},
			map[string]*time.Time{a.ID: ptr(t0.Add(5 * time.Hour)), b.ID: ptr(t0.Add(6*time.Hour + time.Microsecond)), c.ID: c.LastUsedAt}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			require.NoError(t, s.TouchKeys(ctx, st.touch))
			for _, k := range []*keys.Key{a, b, c} {
				want := k.Clone()
				want.LastUsedAt = st.want[k.ID]
				got, err := s.GetKey(ctx, k.ID)
				require.NoError(t, err)
				assertKey(t, want, got)
			}
		})
	}
	_, err := s.GetKey(ctx, "unknown00001")
	require.ErrorIs(t, err, keys.ErrNotFound, "TouchKeys must not create keys")
}

// testKeysConcurrent races creates, updates, touches and reads. Run under
// -race it also checks the store's own locking.
func testKeysConcurrent(t *testing.T, s keys.Store) {
	ctx := context.Background()
	const workers, perWorker = 8, 10
	t0 := baseTime()
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		conflicts int
		errs      []error
	)
	fail := func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }
	for w := range workers {
		wg.Go(func() {
			// Every worker tries to create the same key: exactly one wins.
			switch err := s.CreateKey(ctx, &keys.Key{ID: "contended001", Name: fmt.Sprint(w)}); {
			case errors.Is(err, keys.ErrConflict):
				mu.Lock()
				conflicts++
				mu.Unlock()
			case err != nil:
				fail(err)
			}
			for i := range perWorker {
				id := fmt.Sprintf("w%02di%09d", w, i)
				if err := s.CreateKey(ctx, &keys.Key{ID: id, Enabled: true}); err != nil {
					fail(err)
					continue
				}
				if err := s.UpdateKey(ctx, &keys.Key{ID: id, Name: "updated", Enabled: true}); err != nil {
					fail(err)
				}
				if err := s.TouchKeys(ctx, map[string]time.Time{id: t0.Add(time.Duration(i) * time.Second), "contended001": t0.Add(time.Duration(w) * time.Hour)}); err != nil {
					fail(err)
				}
				if _, err := s.GetKey(ctx, id); err != nil {
					fail(err)
				}
				if _, _, err := s.ListKeys(ctx, keys.ListFilter{Limit: 5}); err != nil {
					fail(err)
				}
			}
		})
	}
	wg.Wait()
	require.Empty(t, errs)
	require.Equal(t, workers-1, conflicts)

	ids := listAll(t, s, keys.ListFilter{Name: "updated", Enabled: ptr(true), Limit: 7})
	require.Len(t, ids, workers*perWorker)
	k, err := s.GetKey(ctx, "contended001")
	require.NoError(t, err)
	require.NotNil(t, k.LastUsedAt)
	assert.True(t, k.LastUsedAt.Equal(stored(t0.Add(time.Duration(workers-1)*time.Hour))), "latest touch wins: %v", k.LastUsedAt)
}
