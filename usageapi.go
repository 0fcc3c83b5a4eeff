package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/middleware"
	"github.com/relaystation/relay/quota"
	"github.com/relaystation/relay/usage"
)

// usageView is the answer of GET /v1/usage: the calling key's totals over
// from and to (all time without them; model narrows them to one model),
// its standing against its limits, and its usage by day and by model.
type usageView struct {
	KeyID      string     `json:"key_id"`
	Name       string     `json:"name"`
	From       *time.Time `json:"from,omitempty"`
	To         *time.Time `json:"to,omitempty"`
	usageSums             // the totals over [From, To), flattened in place
	TokenLimit int64      `json:"token_limit"`
	// Remaining is null for a key without a token limit. Tokens held by
	// requests in flight are not remaining.
	Remaining *int64 `json:"remaining"`
	// Limits is the key's standing against every limit: used, reserved,
	// remaining and reset time of each budget and rate.
	Limits *quota.Standing `json:"limits"`
	// Breakdown splits the key's usage by UTC day and by model.
	Breakdown usageBreakdown `json:"breakdown"`
}

// usageBreakdown is the per-day and per-model usage of GET /v1/usage over
// [From, To): the from and to parameters when given; otherwise the 30 UTC
// days ending today (today included) and now. Days and models without
// requests are left out; days are in order, models by name.
type usageBreakdown struct {
	From   time.Time    `json:"from"`
	To     time.Time    `json:"to"`
	Daily  []usageDay   `json:"daily"`
	Models []usageModel `json:"models"`
}

type usageDay struct {
	Date string `json:"date"` // YYYY-MM-DD, UTC
	usageSums
}

type usageModel struct {
	Model string `json:"model"`
	usageSums
}

type usageSums struct {
	Requests                 int64   `json:"requests"`
	Errors                   int64   `json:"errors"`
	InputTokens              int64   `json:"input_tokens"`
	OutputTokens             int64   `json:"output_tokens"`
	CacheCreationInputTokens int64   `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64   `json:"cache_read_input_tokens"`
	TotalTokens              int64   `json:"total_tokens"`
	CostUSD                  float64 `json:"cost_usd"`
}

func sumsOf(t usage.Totals) usageSums {
	return usageSums{
		Requests: t.Requests, Errors: t.Errors,
		InputTokens: t.Usage.InputTokens, OutputTokens: t.Usage.OutputTokens,
		CacheCreationInputTokens: t.Usage.CacheCreationInputTokens, CacheReadInputTokens: t.Usage.CacheReadInputTokens,
		TotalTokens: t.Usage.Total(), CostUSD: t.CostUSD,
	}
}

// usageParams are the query parameters GET /v1/usage understands. There is
// deliberately no key_id: the key is always the caller's.
var usageParams = []string{"from", "to", "model"}

// breakdownDays is how far back the breakdown reaches without from.
const breakdownDays = 30

func (rl *Relay) usageHandler() http.Handler {
	auth := middleware.Authenticate(rl.keys)
	return auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/usage" {
			rl.fail(w, r, apierror.New(http.StatusNotFound, "not found: "+r.URL.Path))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			e := apierror.New(http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed on /v1/usage")
			e.Header = http.Header{"Allow": {"GET, HEAD"}}
			rl.fail(w, r, e)
			return
		}
		key := middleware.KeyFrom(r.Context())
		q := r.URL.Query()
		for name := range q {
			if !slices.Contains(usageParams, name) {
				msg := fmt.Sprintf("unknown query parameter %q; known: %s", name, strings.Join(usageParams, ", "))
				if name == "key_id" {
					msg = "key_id: not accepted; GET /v1/usage reports the calling key's own usage"
				}
				rl.fail(w, r, apierror.New(http.StatusBadRequest, msg))
				return
			}
		}
		// The key filter is the caller's, whatever the query says: a key
		// never sees another key's usage.
		f := usage.Filter{KeyID: key.ID, Model: q.Get("model")}
		v := usageView{KeyID: key.ID, Name: key.Name, TokenLimit: key.TokenLimit}
		for _, p := range []struct {
			name string
			dst  *time.Time
			view **time.Time
		}{{"from", &f.From, &v.From}, {"to", &f.To, &v.To}} {
			s := q.Get(p.name)
			if s == "" {
				continue
			}
			t, err := parseTime(s)
			if err != nil {
				rl.fail(w, r, apierror.New(http.StatusBadRequest, p.name+": must be an RFC 3339 time or a YYYY-MM-DD date"))
				return
			}
			*p.dst, *p.view = t, &t
		}
		if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
			rl.fail(w, r, apierror.New(http.StatusBadRequest, "to: must be after from"))
			return
		}
		t, bd, err := rl.usageBreakdown(r.Context(), f)
		if err != nil {
			rl.log.Error("usage totals failed", "request_id", middleware.RequestIDFrom(r.Context()), "error", err)
			rl.fail(w, r, apierror.New(http.StatusServiceUnavailable, "the usage store is unavailable; try again shortly"))
			return
		}
		v.Breakdown = bd
		v.usageSums = sumsOf(t)
		st, err := rl.standing(r.Context(), key)
		if err != nil {
			rl.log.Error("quota standing failed", "request_id", middleware.RequestIDFrom(r.Context()), "error", err)
			rl.fail(w, r, apierror.New(http.StatusServiceUnavailable, "the relay cannot read this key's limits right now; try again shortly"))
			return
		}
		v.Limits = &st
		if tl := st.TokenLimit; tl.Limit > 0 {
			v.TokenLimit = tl.Limit
			rem := tl.Remaining
			v.Remaining = &rem
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(v)
	}))
}

// usageBreakdown returns the totals over f and the breakdown (see
// usageBreakdown). Every query carries f.KeyID. Without from and to the
// totals are all time, read from the daily rollup; the breakdown's 30 days
// then start at a UTC midnight, so they too come from the rollup, plus
// today's records.
func (rl *Relay) usageBreakdown(ctx context.Context, f usage.Filter) (usage.Totals, usageBreakdown, error) {
	now := rl.now()
	bf := f
	if bf.From.IsZero() {
		end := now
		if !bf.To.IsZero() {
			end = bf.To
		}
		bf.From = usage.DayOf(end).AddDate(0, 0, 1-breakdownDays)
	}
	bd := usageBreakdown{From: bf.From.UTC(), To: now.UTC(), Daily: []usageDay{}, Models: []usageModel{}}
	if !bf.To.IsZero() {
		bd.To = bf.To.UTC()
	}
	// Without to, no upper bound: a record stamped a moment ahead by
	// another instance's clock still counts.
	days, err := rl.usage.Report(ctx, usage.ReportQuery{Filter: bf, GroupBy: usage.GroupDay})
	if err != nil {
		return usage.Totals{}, bd, err
	}
	for _, row := range days.Rows {
		d, err := time.Parse(time.RFC3339, row.Group)
		if err != nil {
			return usage.Totals{}, bd, fmt.Errorf("usage report: day %q: %w", row.Group, err)
		}
		bd.Daily = append(bd.Daily, usageDay{Date: d.UTC().Format(time.DateOnly), usageSums: sumsOf(row.Totals)})
	}
	models, err := rl.usage.Report(ctx, usage.ReportQuery{Filter: bf, GroupBy: usage.GroupModel})
	if err != nil {
		return usage.Totals{}, bd, err
	}
	for _, row := range models.Rows {
		bd.Models = append(bd.Models, usageModel{Model: row.Group, usageSums: sumsOf(row.Totals)})
	}
	if bf == f {
		return days.Totals, bd, nil
	}
	t, err := rl.usage.Totals(ctx, f)
	return t, bd, err
}

func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Parse(time.DateOnly, s)
}
