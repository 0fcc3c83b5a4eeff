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
	Batched   int64         `json:"batched_events,omitempty"`
}

// bench runs the phases against every target.
type bench struct {
	lg      *loadgen
	o       options
	up      *child
	targets []*target
}

// closed runs a fixed-concurrency phase against each target in turn,
// each after an unmeasured warm-up.
func (b *bench) closed(ctx context.Context, phase string, conc int, stream bool, paced time.Duration) []*result {
	var out []*result
	for _, t := range b.targets {
		do := func(w *worker, now time.Time) { w.message(ctx, t, now) }
		if stream {
			do = func(w *worker, now time.Time) { w.stream(ctx, t, now, paced) }
		}
		b.lg.closedLoop(ctx, conc, phaseWarmup(b.o.Duration), do)
		r := b.measure(t, func() (samples, int64, time.Duration) {
			s, el := b.lg.closedLoop(ctx, conc, b.o.Duration, do)
			return s, 0, el
		})
		r.Phase, r.Concurrency = phase, conc
		out = append(out, r)
	}
	addedOverDirect(out)
	return out
}

// rate runs the fixed-rate phase against each target in turn.
func (b *bench) rate(ctx context.Context) []*result {
	var out []*result
	const maxInflight = 1024
	for _, t := range b.targets {
		b.lg.rateLoop(ctx, t, b.o.Rate, phaseWarmup(b.o.Duration), maxInflight)
		r := b.measure(t, func() (samples, int64, time.Duration) {
			return b.lg.rateLoop(ctx, t, b.o.Rate, b.o.Duration, maxInflight)
		})
		r.Phase, r.Rate = "rate", b.o.Rate
		out = append(out, r)
	}
	addedOverDirect(out)
	return out
}

// measure runs one measured load and adds the processes' CPU time and RSS.
func (b *bench) measure(t *target, load func() (samples, int64, time.Duration)) *result {
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

	r := &result{
		Target:   t.name,
		Requests: len(s.lat),
		Errors:   s.errs,
		Dropped:  dropped,
		Seconds:  elapsed.Seconds(),
		RPS:      float64(len(s.lat)) / elapsed.Seconds(),
		Latency:  summarize(s.lat),
		TTFB:     summarize(s.ttfb),
		Gap:      summarize(s.gaps),
		Events:   s.events,
		Batched:  s.batched,
		RSSKiB:   peak,
	}
	if s.firstErr != nil {
		r.FirstError = s.firstErr.Error()
	}
	n := time.Duration(max(len(s.lat), 1))
	r.CPUPerReq = (mustCPU(pid) - cpu0) / n
	r.UpstreamCPUPerReq = (mustCPU(upPid) - up0) / n
	r.LoadgenCPUPerReq = (mustCPU(self) - self0) / n
	return r
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
func checks(rep *report, o options) []check {
	find := func(phase, target string) *result {
		for _, r := range rep.Results {
			if r.Phase == phase && r.Target == target {
				return r
			}
		}
		return nil
	}
	var cs []check
	for _, phase := range []string{"nonstream", "stream"} {
		rl, bp := find(phase, "relay"), find(phase, "bare")
		if rl == nil || bp == nil || bp.RPS == 0 {
			continue
		}
		ratio := rl.RPS / bp.RPS
		cs = append(cs, check{Name: phase + " throughput ≥ 90 % of bare", Pass: ratio >= 0.9,
			Value: fmt.Sprintf("%.0f / %.0f req/s = %.1f %%", rl.RPS, bp.RPS, 100*ratio)})
	}
	if rl, bp := find("latency", "relay"), find("latency", "bare"); rl != nil && bp != nil {
		v := fmt.Sprintf("relay +%s, bare +%s", dur(rl.AddedP50), dur(bp.AddedP50))
		if bp.AddedP50 > 0 {
			v += fmt.Sprintf(" = %.2f×", float64(rl.AddedP50)/float64(bp.AddedP50))
		}
		cs = append(cs, check{Name: "added p50 at 1 connection ≤ 1.1 × bare", Pass: float64(rl.AddedP50) <= 1.1*float64(bp.AddedP50), Value: v})
	}
	if rl, d := find("paced", "relay"), find("paced", "direct"); rl != nil && d != nil {
		cs = append(cs, check{Name: "streaming never batches events", Pass: rl.Batched == 0 && rl.Events > 0,
			Value: fmt.Sprintf("%d of %d events < 0.6 × %v after the previous (direct: %d)", rl.Batched, rl.Events, o.EventDelay, d.Batched)})
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
