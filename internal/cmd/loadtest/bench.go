package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"
)

// result is one phase against one target.
type result struct {
	Phase       string  `json:"phase"`
	Target      string  `json:"target"`
	Concurrency int     `json:"concurrency,omitempty"`
	Rate        float64 `json:"rate,omitempty"`
	Requests    int     `json:"requests"`
	Errors      int64   `json:"errors"`
	Dropped     int64   `json:"dropped,omitempty"`
	FirstError  string  `json:"first_error,omitempty"`
	Seconds     float64 `json:"seconds"`
	RPS         float64 `json:"rps"`

	Latency  dist          `json:"latency"`
	AddedP50 time.Duration `json:"added_p50_ns"` // over direct, same phase
	AddedP99 time.Duration `json:"added_p99_ns"`

	// CPU time per answered request: of the target's own process (the
	// fake for direct), of the fake behind it, and of the load generator.
	CPUPerReq         time.Duration `json:"cpu_per_request_ns"`
	UpstreamCPUPerReq time.Duration `json:"upstream_cpu_per_request_ns"`
	LoadgenCPUPerReq  time.Duration `json:"loadgen_cpu_per_request_ns"`
	// RSSKiB is the target process's largest RSS seen during the phase.
	RSSKiB int64 `json:"rss_kib"`

	// Paced streams only.
	TTFB      dist          `json:"ttfb,omitzero"`
	AddedTTFB time.Duration `json:"added_ttfb_p50_ns,omitempty"`
	Gap       dist          `json:"event_gap,omitzero"`
	Events    int64         `json:"events,omitempty"`
	Early     int64         `json:"early_events,omitempty"`
	Coalesced int64         `json:"coalesced_events,omitempty"`
}

// bench runs the phases against every target.
type bench struct {
	lg      *loadgen
	o       options
	up      *child
	targets []*target
}

// closed runs a fixed-concurrency phase.
func (b *bench) closed(ctx context.Context, phase string, conc int, stream bool, paced time.Duration) []*result {
	rs := b.interleave(ctx, func(t *target, d time.Duration) (samples, int64, time.Duration) {
		do := func(w *worker, now time.Time) { w.message(ctx, t, now) }
		if stream {
			do = func(w *worker, now time.Time) { w.stream(ctx, t, now, paced) }
		}
		s, el := b.lg.closedLoop(ctx, conc, d, do)
		return s, 0, el
	})
	for _, r := range rs {
		r.Phase, r.Concurrency = phase, conc
	}
	return rs
}

// rate runs the fixed-rate phase.
func (b *bench) rate(ctx context.Context) []*result {
	const maxInflight = 1024
	rs := b.interleave(ctx, func(t *target, d time.Duration) (samples, int64, time.Duration) {
		return b.lg.rateLoop(ctx, t, b.o.Rate, d, maxInflight)
	})
	for _, r := range rs {
		r.Phase, r.Rate = "rate", b.o.Rate
	}
	return rs
}

// interleave gives each target -duration of load in -rounds slices, taking
// the targets in turn (direct, bare, relay, direct, …), so that a change
// in the machine's background load during the phase falls on all three
// alike. Each slice follows an unmeasured warm-up.
func (b *bench) interleave(ctx context.Context, load func(*target, time.Duration) (samples, int64, time.Duration)) []*result {
	slice := b.o.Duration / time.Duration(b.o.Rounds)
	ms := make([]measurement, len(b.targets))
	for range b.o.Rounds {
		for i, t := range b.targets {
			load(t, phaseWarmup(slice))
			ms[i].add(b.measure(t, func() (samples, int64, time.Duration) { return load(t, slice) }))
		}
	}
	rs := make([]*result, len(b.targets))
	for i, t := range b.targets {
		rs[i] = ms[i].result(t.name)
	}
	addedOverDirect(rs)
	return rs
}

// measurement is one or more measured slices of load on one target.
type measurement struct {
	s                 samples
	dropped           int64
	elapsed           time.Duration
	cpu, upCPU, lgCPU time.Duration // target, upstream, load generator
	peakRSS           int64
}

func (m *measurement) add(o measurement) {
	m.s.merge(&o.s)
	m.dropped += o.dropped
	m.elapsed += o.elapsed
	m.cpu += o.cpu
	m.upCPU += o.upCPU
	m.lgCPU += o.lgCPU
	m.peakRSS = max(m.peakRSS, o.peakRSS)
}

func (m *measurement) result(name string) *result {
	s := &m.s
	r := &result{
		Target:    name,
		Requests:  len(s.lat),
		Errors:    s.errs,
		Dropped:   m.dropped,
		Seconds:   m.elapsed.Seconds(),
		RPS:       float64(len(s.lat)) / m.elapsed.Seconds(),
		Latency:   summarize(s.lat),
		TTFB:      summarize(s.ttfb),
		Gap:       summarize(s.gaps),
		Events:    s.events,
		Early:     s.early,
		Coalesced: s.coalesced,
		RSSKiB:    m.peakRSS,
	}
	if s.firstErr != nil {
		r.FirstError = s.firstErr.Error()
	}
	n := time.Duration(max(len(s.lat), 1))
	r.CPUPerReq, r.UpstreamCPUPerReq, r.LoadgenCPUPerReq = m.cpu/n, m.upCPU/n, m.lgCPU/n
	return r
}

// measure runs one slice of load, noting the CPU time the target, the
// upstream and the load generator used meanwhile, and the target's
// largest RSS.
func (b *bench) measure(t *target, load func() (samples, int64, time.Duration)) measurement {
	pid, upPid, self := t.proc.pid(), b.up.pid(), os.Getpid()
	cpu0, up0, self0 := mustCPU(pid), mustCPU(upPid), mustCPU(self)

	var peak int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			peak = max(peak, rssKiB(pid))
			select {
			case <-tick.C:
			case <-stop:
				return
			}
		}
	})
	s, dropped, elapsed := load()
	close(stop)
	wg.Wait()
	return measurement{
		s: s, dropped: dropped, elapsed: elapsed, peakRSS: peak,
		cpu:   mustCPU(pid) - cpu0,
		upCPU: mustCPU(upPid) - up0,
		lgCPU: mustCPU(self) - self0,
	}
}

func mustCPU(pid int) time.Duration {
	d, err := cpuTime(pid)
	if err != nil {
		return 0
	}
	return d
}

// addedOverDirect fills what each target adds to direct's latency.
func addedOverDirect(rs []*result) {
	direct := rs[0]
	for _, r := range rs {
		r.AddedP50 = r.Latency.P50 - direct.Latency.P50
		r.AddedP99 = r.Latency.P99 - direct.Latency.P99
		r.AddedTTFB = r.TTFB.P50 - direct.TTFB.P50
	}
}

// check is one of the targets, as measured.
type check struct {
	Name  string `json:"name"`
	Pass  bool   `json:"pass"`
	Value string `json:"value"`
}

// checks compares the relay with the bare proxy on the targets.
func checks(rep *report) []check {
	find := func(phase, target string) *result {
		for _, r := range rep.Results {
			if r.Phase == phase && r.Target == target {
				return r
			}
		}
		return nil
	}
	var cs []check
	// The targets: 90 % of the bare proxy embedded, 80 % with
	// Postgres and Redis (the relay then waits on two more servers).
	goal := 0.9
	if rep.Options.Mode == "postgres" {
		goal = 0.8
	}
	for _, phase := range []string{"nonstream", "stream"} {
		rl, bp := find(phase, "relay"), find(phase, "bare")
		if rl == nil || bp == nil || bp.RPS == 0 {
			continue
		}
		ratio := rl.RPS / bp.RPS
		cs = append(cs, check{Name: fmt.Sprintf("%s throughput ≥ %.0f %% of bare", phase, 100*goal), Pass: ratio >= goal,
			Value: fmt.Sprintf("%.0f / %.0f req/s = %.1f %%", rl.RPS, bp.RPS, 100*ratio)})
	}
	if rl, bp := find("latency", "relay"), find("latency", "bare"); rl != nil && bp != nil {
		v := fmt.Sprintf("relay +%s, bare +%s", dur(rl.AddedP50), dur(bp.AddedP50))
		if bp.AddedP50 > 0 {
			v += fmt.Sprintf(" = %.2f×", float64(rl.AddedP50)/float64(bp.AddedP50))
		}
		cs = append(cs, check{Name: "added p50 at 1 connection ≤ 1.1 × bare", Pass: float64(rl.AddedP50) <= 1.1*float64(bp.AddedP50), Value: v})
	}
	// A proxy that flushes after every read still passes on two events in
	// one write when both arrived before it got to read (the machine was
	// busy for longer than the event delay); so the relay is held to the
	// bare proxy's count. A relay that buffers shows in most of its events.
	if rl, bp := find("paced", "relay"), find("paced", "bare"); rl != nil && bp != nil {
		cs = append(cs, check{Name: "streaming never batches events (≤ bare)", Pass: rl.Events > 0 && rl.Coalesced <= bp.Coalesced,
			Value: fmt.Sprintf("%d of %d events came in one read with the previous (bare: %d)", rl.Coalesced, rl.Events, bp.Coalesced)})
	}
	for _, r := range rep.Open {
		if r.Target != "relay" {
			continue
		}
		name := fmt.Sprintf("%d open streams at ≤ 100 KiB RSS each", r.Streams)
		pass := r.Errors == 0 && r.PerStreamKiB <= 100
		v := fmt.Sprintf("%.1f KiB per stream, %d opened", r.PerStreamKiB, r.Opened)
		if r.Streams < 10000 {
			v += " (the target is 10,000)"
		}
		cs = append(cs, check{Name: name, Pass: pass, Value: v})
	}
	cs = append(cs, check{Name: "every relay request has a usage record", Pass: rep.RelayRecords == rep.RelayRequests,
		Value: fmt.Sprintf("%d records for %d requests", rep.RelayRecords, rep.RelayRequests)})
	var errs int64
	for _, r := range rep.Results {
		errs += r.Errors + r.Dropped
	}
	for _, r := range rep.Open {
		errs += r.Errors
	}
	cs = append(cs, check{Name: "zero errors (all phases, all targets)", Pass: errs == 0, Value: fmt.Sprint(errs)})
	return cs
}
