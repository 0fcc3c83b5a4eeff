package memory

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/relaystation/relay/usage"
)

// InsertRecords stores copies of recs, skipping any RequestID already
// stored, including one seen earlier in the same batch, and adds the
// records it stored to the daily rollup.
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
		dk := dayKey{day: usage.DayOf(p.Time).UnixMicro(), key: p.KeyID, model: p.Model}
		t := s.daily[dk]
		if t == nil {
			t = new(usage.Totals)
			s.daily[dk] = t
		}
		addRecord(t, p)
	}
	return nil
}

func addRecord(t *usage.Totals, r *usage.Record) {
	t.Requests++
	if r.Status >= 400 {
		t.Errors++
	}
	t.Usage = t.Usage.Add(r.Usage)
	t.CostUSD += r.CostUSD
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

// Totals sums the records matching f: whole UTC days from the daily
// rollup, partial days from the records (see usage.ReportQuery).
func (s *Store) Totals(ctx context.Context, f usage.Filter) (usage.Totals, error) {
	r, err := s.Report(ctx, usage.ReportQuery{Filter: f})
	return r.Totals, err
}

// Report answers q with usage.RunReport over the daily rollup and the
// records.
func (s *Store) Report(ctx context.Context, q usage.ReportQuery) (usage.Report, error) {
	return usage.RunReport(ctx, aggregator{s}, q)
}

// Prune deletes the records before the UTC midnight at or before before;
// the daily rollup stays. Their RequestIDs are forgotten too, as the SQL
// stores forget them with the rows.
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	cut := usage.DayOf(before)
	older := func(rs []*usage.Record) int {
		return sort.Search(len(rs), func(i int) bool { return !rs[i].Time.Before(cut) })
	}
	s.usageMu.Lock()
	defer s.usageMu.Unlock()
	n := older(s.all)
	if n == 0 {
		return 0, nil
	}
	for _, r := range s.all[:n] {
		delete(s.seen, r.RequestID)
	}
	// Delete, not reslice: the pruned records must become garbage.
	s.all = slices.Delete(s.all, 0, n)
	for _, m := range []map[string][]*usage.Record{s.byKey, s.byModel} {
		for k, rs := range m {
			if i := older(rs); i == len(rs) {
				delete(m, k)
			} else if i > 0 {
				m[k] = slices.Delete(rs, 0, i)
			}
		}
	}
	return int64(n), nil
}

// aggregator answers usage.RunReport's aggregates.
type aggregator struct{ s *Store }

func (a aggregator) SumDaily(ctx context.Context, q usage.Aggregate) ([]usage.Bucket, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a.s.usageMu.RLock()
	defer a.s.usageMu.RUnlock()
	from, to := int64(math.MinInt64), int64(math.MaxInt64)
	if !q.From.IsZero() {
		from = q.From.UnixMicro()
	}
	if !q.To.IsZero() {
		to = q.To.UnixMicro()
	}
	b := make(buckets)
	for k, t := range a.s.daily {
		if k.day < from || k.day >= to || (q.KeyID != "" && k.key != q.KeyID) || (q.Model != "" && k.model != q.Model) {
			continue
		}
		b.add(q, k.day, k.key, k.model, *t)
	}
	return b.list(), nil
}

func (a aggregator) SumRecords(ctx context.Context, q usage.Aggregate) ([]usage.Bucket, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a.s.usageMu.RLock()
	defer a.s.usageMu.RUnlock()
	f := usage.Filter{KeyID: q.KeyID, Model: q.Model, From: q.From, To: q.To}
	idx := a.s.index(f)
	lo, hi := timeRange(idx, f)
	b := make(buckets)
	for _, r := range idx[lo:max(lo, hi)] {
		if !matchRecord(r, f) {
			continue
		}
		var t usage.Totals
		addRecord(&t, r)
		b.add(q, r.Time.UnixMicro(), r.KeyID, r.Model, t)
	}
	return b.list(), nil
}

// buckets collects an aggregate's groups.
type buckets map[bucketKey]*usage.Bucket

type bucketKey struct {
	start int64 // ByTime: unix microseconds of the slot's start
	group string
}

// add counts t, of a record or rollup row at micros with key and model,
// in its group.
func (b buckets) add(q usage.Aggregate, micros int64, key, model string, t usage.Totals) {
	var k bucketKey
	switch q.By {
	case usage.ByTime:
		slot := q.Slot.Microseconds()
		k.start = floorDiv(micros, slot) * slot
	case usage.ByModel:
		k.group = model
	case usage.ByKey:
		k.group = key
	}
	bk := b[k]
	if bk == nil {
		bk = &usage.Bucket{Group: k.group}
		if q.By == usage.ByTime {
			bk.Start = time.UnixMicro(k.start).UTC()
		}
		b[k] = bk
	}
	bk.Requests += t.Requests
	bk.Errors += t.Errors
	bk.Usage = bk.Usage.Add(t.Usage)
	bk.CostUSD += t.CostUSD
}

func (b buckets) list() []usage.Bucket {
	out := make([]usage.Bucket, 0, len(b))
	for _, bk := range b {
		out = append(out, *bk)
	}
	return out
}

// floorDiv is a / b rounded down (Go's / truncates toward zero, which is
// wrong for times before 1970).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
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
	return usage.EncodeCursor(at.UnixMicro(), requestID)
}

func decodeCursor(c string) (time.Time, string, error) {
	us, id, ok := usage.DecodeCursor(c)
	if !ok {
		return time.Time{}, "", errBadCursor
	}
	return time.UnixMicro(us).UTC(), id, nil
}

// errBadCursor is returned for a cursor this store did not produce.
var errBadCursor = fmt.Errorf("memory: %w", usage.ErrInvalidCursor)
