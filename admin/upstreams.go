package admin

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/middleware"
	"github.com/relaystation/relay/upstream"
)

// UpstreamAdmin is what the upstream routes need from the upstream pool.
// *upstream.Pool implements it.
type UpstreamAdmin interface {
	// Status reports every upstream, in configuration order.
	Status() []upstream.Status
	// Enable puts an upstream back into rotation (clearing its cooldowns);
	// upstream.ErrUnknownUpstream for an unknown name.
	Enable(name string) error
	// Disable takes an upstream out of rotation until enabled;
	// upstream.ErrUnknownUpstream for an unknown name.
	Disable(name string) error
}

var _ UpstreamAdmin = (*upstream.Pool)(nil)

// UpstreamView is an upstream as the admin API shows it: its place in
// rotation, its load and its recent health. Never its credential. Absent
// times are null.
type UpstreamView struct {
	Name     string `json:"name"`
	BaseURL  string `json:"base_url"`
	Auth     string `json:"auth"`
	Priority int    `json:"priority"`
	Weight   int    `json:"weight"`
	// State is healthy, cooling_down, half_open (the next request probes
	// it) or disabled.
	State   string `json:"state"`
	Healthy bool   `json:"healthy"`
	Enabled bool   `json:"enabled"`
	// DisabledReason is "admin", "configuration", or the credential
	// rejection that took the upstream out; empty while enabled.
	DisabledReason string `json:"disabled_reason"`
	InFlight       int    `json:"in_flight"`
	// MaxConcurrent is the in-flight bound; 0 means none.
	MaxConcurrent       int                 `json:"max_concurrent"`
	CooldownUntil       *time.Time          `json:"cooldown_until"`
	ConsecutiveFailures int                 `json:"consecutive_failures"`
	ModelCooldowns      []ModelCooldownView `json:"model_cooldowns"`
	// RecentRequests, RecentErrors and RecentErrorRate cover the last
	// minute of attempts.
	RecentRequests  int64   `json:"recent_requests"`
	RecentErrors    int64   `json:"recent_errors"`
	RecentErrorRate float64 `json:"recent_error_rate"`
	// Requests and Errors count attempts since the relay started.
	Requests     int64      `json:"requests"`
	Errors       int64      `json:"errors"`
	InputTokens  int64      `json:"input_tokens"`
	OutputTokens int64      `json:"output_tokens"`
	LastError    string     `json:"last_error"`
	LastErrorAt  *time.Time `json:"last_error_at"`
}

// ModelCooldownView is a model an upstream rate-limited: the upstream
// serves other models meanwhile. Until is null once the probe is due.
type ModelCooldownView struct {
	Model string     `json:"model"`
	Until *time.Time `json:"until"`
}

// UpstreamList is the answer of GET /admin/upstreams.
type UpstreamList struct {
	Data []UpstreamView `json:"data"`
}

func upstreamViewOf(s upstream.Status) UpstreamView {
	v := UpstreamView{
		Name:                s.Name,
		BaseURL:             s.BaseURL,
		Auth:                s.Auth.String(),
		Priority:            s.Priority,
		Weight:              s.Weight,
		State:               string(s.State),
		Healthy:             s.State == upstream.StateHealthy,
		Enabled:             s.State != upstream.StateDisabled,
		DisabledReason:      s.DisabledReason,
		InFlight:            s.InFlight,
		MaxConcurrent:       s.MaxConcurrent,
		CooldownUntil:       timeOrNull(s.CooldownUntil),
		ConsecutiveFailures: s.ConsecutiveFailures,
		ModelCooldowns:      make([]ModelCooldownView, 0, len(s.ModelCooldowns)),
		RecentRequests:      s.RecentRequests,
		RecentErrors:        s.RecentErrors,
		RecentErrorRate:     s.ErrorRate,
		Requests:            s.Requests,
		Errors:              s.Errors,
		InputTokens:         s.InputTokens,
		OutputTokens:        s.OutputTokens,
		LastError:           s.LastError,
		LastErrorAt:         timeOrNull(s.LastErrorAt),
	}
	for _, m := range s.ModelCooldowns {
		v.ModelCooldowns = append(v.ModelCooldowns, ModelCooldownView{Model: m.Model, Until: timeOrNull(m.Until)})
	}
	return v
}

func timeOrNull(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// MountUpstreams adds the upstream routes to h, behind its token check:
//
//	GET  /admin/upstreams                 {"data": [UpstreamView…]}
//	GET  /admin/upstreams/{name}          one UpstreamView
//	POST /admin/upstreams/{name}/enable   back into rotation; the UpstreamView after
//	POST /admin/upstreams/{name}/disable  out of rotation; the UpstreamView after
//
// Enabling and disabling are idempotent and logged with the
// administrator's name. Like Handle, it panics when called twice on one
// Handler or with a nil p.
func MountUpstreams(h *Handler, p UpstreamAdmin) {
	if p == nil {
		panic("admin: MountUpstreams with a nil UpstreamAdmin")
	}
	u := &upstreamRoutes{h: h, p: p}
	h.Handle("GET /admin/upstreams", http.HandlerFunc(u.list))
	h.Handle("GET /admin/upstreams/{name}", http.HandlerFunc(u.get))
	h.Handle("POST /admin/upstreams/{name}/enable", u.change("enabled", p.Enable))
	h.Handle("POST /admin/upstreams/{name}/disable", u.change("disabled", p.Disable))
}

type upstreamRoutes struct {
	h *Handler
	p UpstreamAdmin
}

func (u *upstreamRoutes) list(w http.ResponseWriter, r *http.Request) {
	st := u.p.Status()
	out := UpstreamList{Data: make([]UpstreamView, 0, len(st))}
	for _, s := range st {
		out.Data = append(out.Data, upstreamViewOf(s))
	}
	writeJSON(w, http.StatusOK, out)
}

func (u *upstreamRoutes) get(w http.ResponseWriter, r *http.Request) {
	u.answer(w, r, r.PathValue("name"), http.StatusOK)
}

// answer writes the named upstream's view, or 404.
func (u *upstreamRoutes) answer(w http.ResponseWriter, r *http.Request, name string, status int) {
	for _, s := range u.p.Status() {
		if s.Name == name {
			writeJSON(w, status, upstreamViewOf(s))
			return
		}
	}
	u.h.writeError(w, r, upstreamNotFound(name))
}

func upstreamNotFound(name string) *apierror.Error {
	const maxLen = 64 // the name is the caller's input
	if len(name) > maxLen {
		name = name[:maxLen] + "…"
	}
	return apierror.New(http.StatusNotFound, "no upstream named "+strconv.Quote(name))
}

// change serves enable and disable.
func (u *upstreamRoutes) change(done string, apply func(string) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if err := apply(name); err != nil {
			switch {
			case errors.Is(err, upstream.ErrUnknownUpstream):
				u.h.writeError(w, r, upstreamNotFound(name))
			case errors.Is(err, context.Canceled):
				u.h.writeError(w, r, apierror.New(http.StatusServiceUnavailable, "request canceled"))
			default:
				u.h.log.LogAttrs(r.Context(), slog.LevelError, "admin upstream operation failed",
					slog.String("request_id", middleware.RequestIDFrom(r.Context())),
					slog.String("upstream", name), slog.String("error", err.Error()))
				u.h.writeError(w, r, apierror.New(http.StatusInternalServerError, "internal error"))
			}
			return
		}
		u.h.log.LogAttrs(r.Context(), slog.LevelInfo, "upstream "+done+" by admin",
			slog.String("request_id", middleware.RequestIDFrom(r.Context())),
			slog.String("admin", User(r.Context())), slog.String("upstream", name))
		u.answer(w, r, name, http.StatusOK)
	})
}
