package storagetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/usage"
)

// stored is what a store must return for t: truncated to microseconds, UTC.
func stored(t time.Time) time.Time { return t.Truncate(time.Microsecond).UTC() }

func storedPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := stored(*t)
	return &v
}

// wantKey is k as a store must return it.
func wantKey(k *keys.Key) *keys.Key {
	w := normKey(k)
	w.PrevExpiresAt = storedPtr(w.PrevExpiresAt)
	w.ExpiresAt = storedPtr(w.ExpiresAt)
	w.CreatedAt = stored(w.CreatedAt)
	w.UpdatedAt = stored(w.UpdatedAt)
	w.LastUsedAt = storedPtr(w.LastUsedAt)
	w.DeletedAt = storedPtr(w.DeletedAt)
	return w
}

// normKey folds the differences the contract allows (empty versus nil).
func normKey(k *keys.Key) *keys.Key {
	c := k.Clone()
	if len(c.Hash) == 0 {
		c.Hash = nil
	}
	if len(c.PrevHash) == 0 {
		c.PrevHash = nil
	}
	if len(c.AllowedModels) == 0 {
		c.AllowedModels = nil
	}
	if len(c.Metadata) == 0 {
		c.Metadata = nil
	}
	if len(c.Limits) == 0 {
		c.Limits = nil
	}
	return c
}

// assertKey checks that got is what a store must return for want.
func assertKey(t *testing.T, want, got *keys.Key) bool {
	t.Helper()
	if !assert.NotNil(t, got) {
		return false
	}
	ok := assertUTC(t, "CreatedAt", &got.CreatedAt)
	ok = assertUTC(t, "UpdatedAt", &got.UpdatedAt) && ok
	ok = assertUTC(t, "PrevExpiresAt", got.PrevExpiresAt) && ok
	ok = assertUTC(t, "ExpiresAt", got.ExpiresAt) && ok
	ok = assertUTC(t, "LastUsedAt", got.LastUsedAt) && ok
	ok = assertUTC(t, "DeletedAt", got.DeletedAt) && ok
	// After the UTC check, Equal on the normalised records compares times
	// exactly: stored() yields one canonical time.Time per instant.
	return assert.Equal(t, wantKey(want), normKey(got)) && ok
}

func assertUTC(t *testing.T, field string, tm *time.Time) bool {
	t.Helper()
	if tm == nil {
		return true
	}
	return assert.Equal(t, time.UTC, tm.Location(), "%s must be returned in UTC", field)
}

// wantRecord is r as a store must return it.
func wantRecord(r usage.Record) usage.Record {
	r.Time = stored(r.Time)
	return r
}

func assertRecords(t *testing.T, want, got []usage.Record) bool {
	t.Helper()
	ok := true
	for i := range got {
		ok = assertUTC(t, "Record.Time", &got[i].Time) && ok
		got[i].Time = stored(got[i].Time) // drop a monotonic reading or zone pointer, if any
	}
	w := make([]usage.Record, len(want))
	for i, r := range want {
		w[i] = wantRecord(r)
	}
	if len(w) == 0 && len(got) == 0 {
		return ok
	}
	return assert.Equal(t, w, got) && ok
}

func ptr[T any](v T) *T { return &v }
