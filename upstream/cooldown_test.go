package upstream

import (
	"testing"
	"time"
)

func TestBreaker(t *testing.T) {
	pol := CooldownPolicy{Failures: 3, Base: time.Second, Max: 5 * time.Second}
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		at        time.Duration // since t0
		op        string        // fail, refuse, ratelimit, ok, admit, abandon
		probe     bool          // the op's request was the probe
		ra        time.Duration
		wantOpen  bool          // for fail ops: did it open
		wantD     time.Duration // cooldown when it opened
		wantAdmit bool          // for admit
		wantProbe bool          // for admit
		wantWait  time.Duration // for admit
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"failures below threshold stay closed", []step{
			{op: "fail"}, {op: "fail"}, {op: "admit", wantAdmit: true},
		}},
		{"a success resets the count", []step{
			{op: "fail"}, {op: "fail"}, {op: "ok"}, {op: "fail"}, {op: "fail"}, {op: "admit", wantAdmit: true},
		}},
		{"threshold opens for Base", []step{
			{op: "fail"}, {op: "fail"}, {op: "fail", wantOpen: true, wantD: time.Second},
			{at: 500 * time.Millisecond, op: "admit", wantWait: 500 * time.Millisecond},
		}},
		{"a refused connection opens at once", []step{
			{op: "refuse", wantOpen: true, wantD: time.Second},
		}},
		{"retry-after sets the cooldown, capped at Max", []step{
			{op: "ratelimit", ra: 3 * time.Second, wantOpen: true, wantD: 3 * time.Second},
			{at: 3 * time.Second, op: "admit", wantAdmit: true, wantProbe: true},
			{at: 3 * time.Second, op: "ratelimit", probe: true, ra: time.Hour, wantOpen: true, wantD: 5 * time.Second},
		}},
		{"half-open admits one probe", []step{
			{op: "refuse", wantOpen: true, wantD: time.Second},
			{at: time.Second, op: "admit", wantAdmit: true, wantProbe: true},
			{at: time.Second, op: "admit"}, // probe in flight: nobody else
		}},
		{"probe success closes", []step{
			{op: "refuse", wantOpen: true, wantD: time.Second},
			{at: time.Second, op: "admit", wantAdmit: true, wantProbe: true},
			{at: time.Second, op: "ok", probe: true},
			{at: time.Second, op: "admit", wantAdmit: true},
			// a fresh start: threshold again, Base again
			{at: time.Second, op: "fail"}, {at: time.Second, op: "fail"},
			{at: time.Second, op: "fail", wantOpen: true, wantD: time.Second},
		}},
		{"failed probes double the cooldown up to Max", []step{
			{op: "refuse", wantOpen: true, wantD: time.Second},
			{at: 1 * time.Second, op: "admit", wantAdmit: true, wantProbe: true},
			{at: 1 * time.Second, op: "fail", probe: true, wantOpen: true, wantD: 2 * time.Second},
			{at: 3 * time.Second, op: "admit", wantAdmit: true, wantProbe: true},
			{at: 3 * time.Second, op: "fail", probe: true, wantOpen: true, wantD: 4 * time.Second},
			{at: 7 * time.Second, op: "admit", wantAdmit: true, wantProbe: true},
			{at: 7 * time.Second, op: "fail", probe: true, wantOpen: true, wantD: 5 * time.Second},
		}},
		{"answers to older requests change nothing while open", []step{
			{op: "refuse", wantOpen: true, wantD: time.Second},
			{op: "fail"}, {op: "fail"}, {op: "fail"}, {op: "ok"},
			{at: 500 * time.Millisecond, op: "admit", wantWait: 500 * time.Millisecond},
			{at: time.Second, op: "fail"}, // half-open, but not the probe
			{at: time.Second, op: "admit", wantAdmit: true, wantProbe: true},
		}},
		{"an abandoned probe lets the next request probe", []step{
			{op: "refuse", wantOpen: true, wantD: time.Second},
			{at: time.Second, op: "admit", wantAdmit: true, wantProbe: true},
			{at: time.Second, op: "abandon", probe: true},
			{at: time.Second, op: "admit", wantAdmit: true, wantProbe: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b breaker
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				switch s.op {
				case "admit":
					ok, probe, wait := b.admits(now)
					if ok != s.wantAdmit || probe != s.wantProbe || wait != s.wantWait {
						t.Fatalf("step %d: admits = %v, %v, %v; want %v, %v, %v", i, ok, probe, wait, s.wantAdmit, s.wantProbe, s.wantWait)
					}
					if probe {
						b.probing = true
					}
				case "ok":
					b.success(s.probe)
				case "abandon":
					b.abandon(s.probe)
				default:
					opened, d := b.failure(now, &pol, s.probe, s.op != "fail", s.ra)
					if opened != s.wantOpen || d != s.wantD {
						t.Fatalf("step %d (%s): failure = %v, %v; want %v, %v", i, s.op, opened, d, s.wantOpen, s.wantD)
					}
				}
			}
		})
	}
}
