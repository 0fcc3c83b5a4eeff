package main

import (
	"math"
	"slices"
	"time"
)

// dist summarises a set of durations.
type dist struct {
	N    int           `json:"n"`
	Mean time.Duration `json:"mean_ns"`
	P50  time.Duration `json:"p50_ns"`
	P90  time.Duration `json:"p90_ns"`
	P99  time.Duration `json:"p99_ns"`
	Max  time.Duration `json:"max_ns"`
}

// summarize sorts samples in place and returns their distribution.
func summarize(samples []time.Duration) dist {
	if len(samples) == 0 {
		return dist{}
	}
	slices.Sort(samples)
	var sum time.Duration
	for _, s := range samples {
		sum += s
	}
	return dist{
		N:    len(samples),
		Mean: sum / time.Duration(len(samples)),
		P50:  percentile(samples, 50),
		P90:  percentile(samples, 90),
		P99:  percentile(samples, 99),
		Max:  samples[len(samples)-1],
	}
}

// percentile is the nearest-rank percentile p (0 < p ≤ 100) of sorted
// samples: the smallest sample with at least p % of the samples at or
// below it. No interpolation, so the answer is always a measured value.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	k := int(math.Ceil(p/100*float64(n))) - 1
	return sorted[min(max(k, 0), n-1)]
}

// samples is what one worker measured; workers own theirs and the
// results are merged once the phase is over, so recording takes no lock.
type samples struct {
	lat, ttfb, gaps []time.Duration
	events          int64
	early           int64 // came < 0.6 × the event delay after the previous
	coalesced       int64 // came in the same read as the previous
	errs            int64
	firstErr        error
}

func (s *samples) fail(err error) {
	s.errs++
	if s.firstErr == nil {
		s.firstErr = err
	}
}

func (s *samples) merge(o *samples) {
	s.lat = append(s.lat, o.lat...)
	s.ttfb = append(s.ttfb, o.ttfb...)
	s.gaps = append(s.gaps, o.gaps...)
	s.events += o.events
	s.early += o.early
	s.coalesced += o.coalesced
	s.errs += o.errs
	if s.firstErr == nil {
		s.firstErr = o.firstErr
	}
}
