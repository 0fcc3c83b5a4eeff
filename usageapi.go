package relay

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/middleware"
	"github.com/relaystation/relay/quota"
	"github.com/relaystation/relay/usage"
)

// usageView is the answer of GET /v1/usage: the calling key's totals.
type usageView struct {
	KeyID                    string     `json:"key_id"`
	Name                     string     `json:"name"`
	From                     *time.Time `json:"from,omitempty"`
	To                       *time.Time `json:"to,omitempty"`
	Requests                 int64      `json:"requests"`
	Errors                   int64      `json:"errors"`
	InputTokens              int64      `json:"input_tokens"`
	OutputTokens             int64      `json:"output_tokens"`
	CacheCreationInputTokens int64      `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64      `json:"cache_read_input_tokens"`
	TotalTokens              int64      `json:"total_tokens"`
	CostUSD                  float64    `json:"cost_usd"`
	TokenLimit               int64      `json:"token_limit"`
	// Remaining is null for a key without a token limit. Tokens held by
	// requests in flight are not remaining.
	Remaining *int64 `json:"remaining"`
	// Limits is the key's standing against every limit: used, reserved,
	// remaining and reset time of each budget and rate.
	Limits *quota.Standing `json:"limits"`
}

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
		f := usage.Filter{KeyID: key.ID}
		v := usageView{KeyID: key.ID, Name: key.Name, TokenLimit: key.TokenLimit}
		for _, p := range []struct {
			name string
			dst  *time.Time
			view **time.Time
		}{{"from", &f.From, &v.From}, {"to", &f.To, &v.To}} {
			s := r.URL.Query().Get(p.name)
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
		t, err := rl.usage.Totals(r.Context(), f)
		if err != nil {
			rl.log.Error("usage totals failed", "request_id", middleware.RequestIDFrom(r.Context()), "error", err)
			rl.fail(w, r, apierror.New(http.StatusServiceUnavailable, "the usage store is unavailable; try again shortly"))
			return
		}
		v.Requests, v.Errors, v.CostUSD = t.Requests, t.Errors, t.CostUSD
		v.InputTokens, v.OutputTokens = t.Usage.InputTokens, t.Usage.OutputTokens
		v.CacheCreationInputTokens, v.CacheReadInputTokens = t.Usage.CacheCreationInputTokens, t.Usage.CacheReadInputTokens
		v.TotalTokens = t.Usage.Total()
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

func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Parse(time.DateOnly, s)
}
