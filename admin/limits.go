package admin

import (
	"context"
	"net/http"
	"sort"
	"strings"

	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/quota"
)

// Limits connects the key API to the relay's limits: which tiers exist
// (a key's tier must be one of them), and a key's current standing
// (used, reserved, remaining and reset time per budget), shown by
// GET /admin/api-keys/{id}. The relay implements it.
type Limits interface {
	Tiers() quota.Tiers
	Standing(ctx context.Context, k *keys.Key) (quota.Standing, error)
}

// MountLimits adds GET /admin/tiers and makes the key API check tiers and
// show standings through l.
func MountLimits(h *Handler, l Limits) {
	h.limits = l
	h.Handle("GET /admin/tiers", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := l.Tiers()
		names := make([]string, 0, len(t.Tiers))
		for n := range t.Tiers {
			names = append(names, n)
		}
		sort.Strings(names)
		type tierView struct {
			Name   string       `json:"name"`
			Limits quota.Limits `json:"limits"`
		}
		out := struct {
			Default string     `json:"default"`
			Data    []tierView `json:"data"`
			Names   []string   `json:"limit_names"`
		}{Default: t.Default, Data: []tierView{}, Names: quota.Names()}
		for _, n := range names {
			out.Data = append(out.Data, tierView{Name: n, Limits: t.Tiers[n]})
		}
		writeJSON(w, http.StatusOK, out)
	}))
}

// checkLimits validates a key's limit overrides by name and value.
func checkLimits(m map[string]int64) *apierror.Error {
	if _, err := quota.OverrideFromMap(m); err != nil {
		return fieldError("limits", "%s", strings.TrimPrefix(err.Error(), quota.ErrInvalid.Error()+": "))
	}
	return nil
}

// checkKnownTier refuses a tier the relay does not define (when it knows
// its tiers).
func (h *Handler) checkKnownTier(tier string) *apierror.Error {
	if h.limits == nil || tier == "" {
		return nil
	}
	t := h.limits.Tiers()
	if len(t.Tiers) == 0 || t.Has(tier) {
		return nil
	}
	names := make([]string, 0, len(t.Tiers))
	for n := range t.Tiers {
		names = append(names, n)
	}
	sort.Strings(names)
	return fieldError("tier", "unknown tier %q (known: %s)", tier, strings.Join(names, ", "))
}
