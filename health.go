package relay

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/upstream"
	"github.com/relaystation/relay/usage"
)

// serveHealth is liveness: the process answers. It checks no dependency,
// so an outage of Postgres or Redis never gets a healthy relay restarted.
func (rl *Relay) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
}

// Readiness is the answer of /ready and Ready.
type Readiness struct {
	Status  string            `json:"status"` // ready or not_ready
	Checks  map[string]string `json:"checks"`
	Reasons []string          `json:"reasons,omitempty"`
}

// degrader is implemented by limiters that can fall back (quota.Failover).
type degrader interface{ Degraded() bool }

// Ready reports whether the relay can serve: it checks what serving needs: the key and usage stores answer, the
// limiter is not refusing everything, an upstream is in rotation, and the
// relay is not shutting down. A degraded but serving limiter (Redis down,
// limits enforced in process) is reported, not failed.
func (rl *Relay) Ready(ctx context.Context) Readiness {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out := Readiness{Status: "ready", Checks: map[string]string{}}
	fail := func(check, reason string) {
		out.Checks[check] = "fail"
		out.Reasons = append(out.Reasons, reason)
	}
	if rl.closing.Load() {
		fail("relay", "shutting down")
	}
	// A lookup of an id that cannot exist: ErrNotFound means the store answered.
	if _, err := rl.cfg.Keys.GetKey(ctx, "readiness000"); err != nil && !errors.Is(err, keys.ErrNotFound) {
		fail("key_store", "key store: "+err.Error())
	} else {
		out.Checks["key_store"] = "ok"
	}
	if _, err := rl.usage.Totals(ctx, usage.Filter{KeyID: "readiness000", From: rl.now()}); err != nil {
		fail("usage_store", "usage store: "+err.Error())
	} else {
		out.Checks["usage_store"] = "ok"
	}
	if d, ok := rl.limiter.(degrader); ok && d.Degraded() {
		out.Checks["limiter"] = "degraded"
	} else {
		out.Checks["limiter"] = "ok"
	}
	if st := rl.recorder.Stats(); st.Spooled > 0 {
		out.Checks["usage_recorder"] = "spooling"
	} else {
		out.Checks["usage_recorder"] = "ok"
	}
	inRotation := 0
	for _, s := range rl.pool.Status() {
		if s.State != upstream.StateDisabled {
			inRotation++
		}
	}
	if inRotation == 0 {
		fail("upstreams", "no upstream is enabled")
	} else {
		out.Checks["upstreams"] = "ok"
	}
	if len(out.Reasons) > 0 {
		out.Status = "not_ready"
	}
	return out
}

func (rl *Relay) serveReady(w http.ResponseWriter, r *http.Request) {
	res := rl.Ready(r.Context())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if res.Status != "ready" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(res)
}
