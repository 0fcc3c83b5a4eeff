package usage

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"
)

// GroupBy says how Report groups records.
type GroupBy string

// The groupings Report knows. The zero value "" means GroupNone.
const (
	// GroupNone: totals only, no rows.
	GroupNone GroupBy = "none"
	// GroupHour: one row per hour of ReportQuery.Location. Always read
	// from the records, so it covers the retention window only.
	GroupHour GroupBy = "hour"
	// GroupDay: one row per day of ReportQuery.Location. UTC days read the
	// daily rollup; days of any other zone are read from the records (a
	// UTC day rollup cannot be cut at another zone's midnight), so they
	// cover the retention window only.
	GroupDay GroupBy = "day"
	// GroupModel: one row per model, as the client asked for it
	// (Record.Model).
	GroupModel GroupBy = "model"
	// GroupKey: one row per key id.
	GroupKey GroupBy = "key"
)

// Valid reports whether g is one of the groupings Report knows.
func (g GroupBy) Valid() bool {
	switch g {
	case "", GroupNone, GroupHour, GroupDay, GroupModel, GroupKey:
		return true
	}
	return false
}

// ReportQuery selects and groups records for Report.
//
// Where the numbers come from: a store keeps every record (until Prune)
// and a rollup of them per UTC day, key and model. A report over a range
// reads the rollup for the whole UTC days inside the range and the records
// for the partial days at its ends, so a report over months reads a few
// thousand rollup rows plus at most two days of records, and a report over
// whole UTC days stays exact after its records were pruned. GroupHour, and
// GroupDay in a zone other than UTC, read records only.
type ReportQuery struct {
	Filter
	GroupBy GroupBy
	// Location is the zone whose days and hours GroupDay and GroupHour
	// bucket by; nil means UTC. Zones whose offsets are whole multiples of
	// 15 minutes (every zone in use today) bucket exactly.
	Location *time.Location
}

// Report is the answer to a ReportQuery.
type Report struct {
	// Totals sums every record the query matched.
	Totals Totals `json:"totals"`
	// Rows holds one entry per group that has records, none for
	// GroupNone. Hours and days are in time order; models and keys in
	// bytewise order of Group.
	Rows []ReportRow `json:"rows"`
}

// ReportRow is one group of a Report.
type ReportRow struct {
	// Group is the start of the hour or day in RFC 3339, with the
	// ReportQuery.Location's offset ("2025-03-01T00:00:00Z"), or the
	// model, or the key id.
	Group string `json:"group"`
	Totals
}

// The rest of this file is for Store implementations: a store answers
// Report by calling RunReport with two aggregate queries of its own, so
// that every backend splits ranges, buckets times and orders rows the same
// way, and storage/storagetest checks only the aggregates' results.

// Dimension is what an Aggregate groups by.
type Dimension int

const (
	// ByNothing: one bucket for everything (none when nothing matched).
	ByNothing Dimension = iota
	// ByTime: one bucket per Aggregate.Slot of time.
	ByTime
	// ByModel: one bucket per Record.Model.
	ByModel
	// ByKey: one bucket per Record.KeyID.
	ByKey
)

// Aggregate is one aggregate query of RunReport.
type Aggregate struct {
	// KeyID and Model select as in Filter: "" matches all.
	KeyID string
	Model string
	// From (inclusive) and To (exclusive) bound the range; zero means
	// unbounded on that side. For SumDaily they are UTC midnights; for
	// SumRecords, whole microseconds (RunReport has already rounded the
	// caller's bounds as Filter specifies).
	From, To time.Time
	By       Dimension
	// Slot is the width of ByTime buckets: 24 hours, 1 hour or 15
	// minutes, always a divisor of a day. Buckets start at multiples of
	// Slot since the Unix epoch, in UTC. SumDaily is asked for ByTime only
	// with a Slot of 24 hours, its day.
	Slot time.Duration
}

// Bucket is one group of an aggregate's answer.
type Bucket struct {
	// Start is the bucket's first instant for ByTime; zero otherwise.
	Start time.Time
	// Group is the model for ByModel, the key id for ByKey; "" otherwise.
	Group string
	Totals
}

// Aggregator answers RunReport's aggregate queries. Each returns one
// Bucket per group with at least one request, in any order; a bucket with
// no requests is ignored.
type Aggregator interface {
	// SumDaily sums the daily rollup rows of the UTC days in [a.From, a.To).
	SumDaily(ctx context.Context, a Aggregate) ([]Bucket, error)
	// SumRecords sums the stored records with times in [a.From, a.To).
	SumRecords(ctx context.Context, a Aggregate) ([]Bucket, error)
}

const day = 24 * time.Hour

// rawSlot is the bucket width RunReport asks SumRecords for when it has to
// regroup by another zone's hours or days: every offset in use today is a
// multiple of it.
const rawSlot = 15 * time.Minute

// RunReport answers q with agg's aggregates: the daily rollup for the whole
// UTC days of the range, the records for the partial days at its ends (see
// ReportQuery). An unknown q.GroupBy is ErrInvalidQuery.
func RunReport(ctx context.Context, agg Aggregator, q ReportQuery) (Report, error) {
	if !q.GroupBy.Valid() {
		return Report{}, fmt.Errorf("%w: unknown group_by %q", ErrInvalidQuery, string(q.GroupBy))
	}
	loc := q.Location
	if loc == nil {
		loc = time.UTC
	}
	utc := loc == time.UTC

	base := Aggregate{KeyID: q.KeyID, Model: q.Model}
	switch q.GroupBy {
	case GroupHour:
		base.By, base.Slot = ByTime, time.Hour
		if !utc {
			base.Slot = rawSlot
		}
	case GroupDay:
		base.By, base.Slot = ByTime, day
		if !utc {
			base.Slot = rawSlot
		}
	case GroupModel:
		base.By = ByModel
	case GroupKey:
		base.By = ByKey
	}

	// Stored times are whole microseconds: rounding the bounds up makes
	// "t >= From" and "t < To" exact, as Filter promises.
	var lo, hi time.Time
	if !q.From.IsZero() {
		lo = ceilMicro(q.From)
	}
	if !q.To.IsZero() {
		hi = ceilMicro(q.To)
	}
	if !lo.IsZero() && !hi.IsZero() && !lo.Before(hi) {
		return Report{}, nil
	}

	type part struct {
		daily    bool
		from, to time.Time
	}
	var parts []part
	rawOnly := q.GroupBy == GroupHour || base.Slot == rawSlot
	// dlo and dhi are the whole UTC days inside [lo, hi).
	var dlo, dhi time.Time
	if !lo.IsZero() {
		if dlo = lo.UTC().Truncate(day); dlo.Before(lo) {
			dlo = dlo.Add(day)
		}
	}
	if !hi.IsZero() {
		dhi = hi.UTC().Truncate(day)
	}
	if !rawOnly && (dlo.IsZero() || dhi.IsZero() || dlo.Before(dhi)) {
		parts = append(parts, part{daily: true, from: dlo, to: dhi})
		if !lo.IsZero() && lo.Before(dlo) {
			parts = append(parts, part{from: lo, to: dlo})
		}
		if !hi.IsZero() && dhi.Before(hi) {
			parts = append(parts, part{from: dhi, to: hi})
		}
	} else {
		parts = append(parts, part{from: lo, to: hi})
	}

	type group struct {
		order time.Time // time groups: the bucket's start
		name  string
		Totals
	}
	groups := make(map[string]*group)
	var rep Report
	for _, p := range parts {
		a := base
		a.From, a.To = p.from, p.to
		var (
			bs  []Bucket
			err error
		)
		if p.daily {
			bs, err = agg.SumDaily(ctx, a)
		} else {
			bs, err = agg.SumRecords(ctx, a)
		}
		if err != nil {
			return Report{}, err
		}
		for _, b := range bs {
			if b.Requests == 0 {
				continue
			}
			rep.Totals = rep.Totals.add(b.Totals)
			if base.By == ByNothing {
				continue
			}
			g := &group{name: b.Group}
			if base.By == ByTime {
				g.order = bucketStart(q.GroupBy, b.Start, loc)
				g.name = g.order.Format(time.RFC3339)
			}
			if have := groups[g.name]; have != nil {
				g = have
			} else {
				groups[g.name] = g
			}
			g.Totals = g.Totals.add(b.Totals)
		}
	}
	if base.By == ByNothing {
		return rep, nil
	}
	sorted := make([]*group, 0, len(groups))
	for _, g := range groups {
		sorted = append(sorted, g)
	}
	slices.SortFunc(sorted, func(a, b *group) int {
		if c := a.order.Compare(b.order); c != 0 {
			return c
		}
		return cmp.Compare(a.name, b.name)
	})
	rep.Rows = make([]ReportRow, len(sorted))
	for i, g := range sorted {
		rep.Rows[i] = ReportRow{Group: g.name, Totals: g.Totals}
	}
	return rep, nil
}

// bucketStart is the start, in loc, of the hour or day holding the slot
// that starts at slot.
func bucketStart(g GroupBy, slot time.Time, loc *time.Location) time.Time {
	t := slot.In(loc)
	if g == GroupDay {
		y, m, d := t.Date()
		return time.Date(y, m, d, 0, 0, 0, 0, loc)
	}
	// The hour by the offset in force at the slot, not by wall clock:
	// when clocks go back, the repeated hour is two distinct buckets.
	_, off := t.Zone()
	shift := time.Duration(off) * time.Second
	return t.Add(shift).Truncate(time.Hour).Add(-shift).In(loc)
}

// add returns t with every count of u added.
func (t Totals) add(u Totals) Totals {
	t.Requests += u.Requests
	t.Errors += u.Errors
	t.Usage = t.Usage.Add(u.Usage)
	t.Usage.ServiceTier = ""
	t.CostUSD += u.CostUSD
	return t
}

// ceilMicro is the first whole microsecond at or after t.
func ceilMicro(t time.Time) time.Time {
	c := t.Truncate(time.Microsecond)
	if c.Before(t) {
		c = c.Add(time.Microsecond)
	}
	return c.UTC()
}

// DayOf is the UTC midnight starting t's UTC day: the day a record counts
// in for the daily rollup.
func DayOf(t time.Time) time.Time { return t.UTC().Truncate(day) }
