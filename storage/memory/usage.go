package memory

import (
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/relaystation/relay/usage"
)

// InsertRecords stores copies of recs, skipping any RequestID already
// stored, including one seen earlier in the same batch.
func (s *Store) InsertRecords(ctx context.Context, recs []usage.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.usageMu.Lock()
	defer s.usageMu.Unlock()
	for _, r := range recs {
		if _, dup := s.seen[r.RequestID]; dup {
			continue
		}
		s.seen[r.RequestID] = struct{}{}
		p := new(usage.Record)
		*p = r // Record holds no pointers, maps or slices: a value copy is deep
		p.Time = storedTime(p.Time)
		s.all = insertSorted(s.all, p)
		s.byKey[p.KeyID] = insertSorted(s.byKey[p.KeyID], p)
		if p.Model != "" { // Filter.Model "" means every model, so "" is never looked up
			s.byModel[p.Model] = insertSorted(s.byModel[p.Model], p)
		}
	}
	return nil
}

// insertSorted inserts r in order. Records mostly arrive in time order, so
// this is usually an append.
func insertSorted(rs []*usage.Record, r *usage.Record) []*usage.Record {
	i, _ := slices.BinarySearchFunc(rs, r, compareRecords)
	return slices.Insert(rs, i, r)
}

// compareRecords orders by Time, then RequestID: the reverse of the
// newest-first order of ListRecords.
func compareRecords(a, b *usage.Record) int {
	if c := a.Time.Compare(b.Time); c != 0 {
		return c
	}
	return cmp.Compare(a.RequestID, b.RequestID)
}

// Totals sums the records matching f.
func (s *Store) Totals(ctx context.Context, f usage.Filter) (usage.Totals, error) {
	if err := ctx.Err(); err != nil {
		return usage.Totals{}, err
	}
	s.usageMu.RLock()
	defer s.usageMu.RUnlock()
	var t usage.Totals
	idx := s.index(f)
	lo, hi := timeRange(idx, f)
	for _, r := range idx[lo:max(lo, hi)] {
		if !matchRecord(r, f) {
			continue
		}
		t.Requests++
		if r.Status >= 400 {
			t.Errors++
		}
		t.Usage = t.Usage.Add(r.Usage)
		t.CostUSD += r.CostUSD
	}
	return t, nil
}

// ListRecords returns copies of the records matching f, newest first (ties
// by RequestID, descending), after cursor.
func (s *Store) ListRecords(ctx context.Context, f usage.Filter, cursor string, limit int) ([]usage.Record, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	if limit <= 0 {
		limit = defaultLimit
	}
	var after *usage.Record
	if cursor != "" {
		at, id, err := decodeCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		after = &usage.Record{Time: at, RequestID: id}
	}

	s.usageMu.RLock()
	defer s.usageMu.RUnlock()
	idx := s.index(f)
	lo, hi := timeRange(idx, f)
	if after != nil {
		// Everything before the cursor's position in ascending order comes
		// after it in the newest-first order.
		hi = min(hi, sort.Search(len(idx), func(i int) bool { return compareRecords(idx[i], after) >= 0 }))
	}
	var out []usage.Record
	for i := hi - 1; i >= lo; i-- {
		r := idx[i]
		if !matchRecord(r, f) {
			continue
		}
		if len(out) == limit {
			last := out[limit-1]
			return out, encodeCursor(last.Time, last.RequestID), nil
		}
		out = append(out, *r)
	}
	return out, "", nil
}

// index returns the narrowest ordered slice holding every match of f.
func (s *Store) index(f usage.Filter) []*usage.Record {
	switch {
	case f.KeyID != "":
		return s.byKey[f.KeyID]
	case f.Model != "":
		return s.byModel[f.Model]
	}
	return s.all
}

// timeRange returns the bounds of the records in [f.From, f.To) of a slice
// ordered by time. Stored times are whole microseconds; comparing them with
// the bounds as given (nanoseconds and all) is exactly what From inclusive,
// To exclusive means.
func timeRange(idx []*usage.Record, f usage.Filter) (lo, hi int) {
	hi = len(idx)
	if !f.From.IsZero() {
		lo = sort.Search(len(idx), func(i int) bool { return !idx[i].Time.Before(f.From) })
	}
	if !f.To.IsZero() {
		hi = sort.Search(len(idx), func(i int) bool { return !idx[i].Time.Before(f.To) })
	}
	return lo, hi
}

// matchRecord applies the filters the chosen index did not already apply;
// time bounds are applied by timeRange.
func matchRecord(r *usage.Record, f usage.Filter) bool {
	return (f.KeyID == "" || r.KeyID == f.KeyID) && (f.Model == "" || r.Model == f.Model)
}

// A cursor is the position of the last record returned, (time, request id),
// so that pages stay consistent while records are inserted. It is base64 so
// that it travels in a URL untouched and nobody is tempted to build one.
func encodeCursor(at time.Time, requestID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixMicro(), 10) + ":" + requestID))
}

func decodeCursor(c string) (time.Time, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", errBadCursor
	}
	micros, id, ok := strings.Cut(string(b), ":")
	if !ok {
		return time.Time{}, "", errBadCursor
	}
	us, err := strconv.ParseInt(micros, 10, 64)
	if err != nil {
		return time.Time{}, "", errBadCursor
	}
	return time.UnixMicro(us).UTC(), id, nil
}

// errBadCursor is returned for a cursor this store did not produce.
var errBadCursor = fmt.Errorf("memory: %w", usage.ErrInvalidCursor)
