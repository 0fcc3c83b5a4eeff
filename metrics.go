package relay

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaystation/relay/usage"
)

// metrics are the relay's Prometheus collectors. With no Registerer they
// are nil and observe does nothing: nothing is registered on a global
// registry, so two Relays in one process never collide.
type metrics struct {
	requests *prometheus.CounterVec
	tokens   *prometheus.CounterVec
	cost     *prometheus.CounterVec
	estimate prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{}
	if reg == nil {
		return m, nil
	}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "relay", Name: "model_requests_total",
		Help: "Billable model requests relayed, by model asked and final status.",
	}, []string{"model", "status"})
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "relay", Name: "tokens_total",
		Help: "Tokens relayed, by model and kind (input, output, cache_creation, cache_read).",
	}, []string{"model", "kind"})
	m.cost = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "relay", Name: "cost_usd_total",
		Help: "Cost of relayed requests in US dollars at the configured prices, by model.",
	}, []string{"model"})
	m.estimate = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "relay", Name: "estimated_usage_records_total",
		Help: "Usage records whose counts came from the offline tokenizer because the upstream reported none.",
	})
	for _, c := range []prometheus.Collector{m.requests, m.tokens, m.cost, m.estimate} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(rec *usage.Record) {
	if m.requests == nil {
		return
	}
	model := rec.Model
	m.requests.WithLabelValues(model, strconv.Itoa(rec.Status)).Inc()
	u := rec.Usage
	for _, kv := range [...]struct {
		kind string
		n    int64
	}{{"input", u.InputTokens}, {"output", u.OutputTokens}, {"cache_creation", u.CacheCreationInputTokens}, {"cache_read", u.CacheReadInputTokens}} {
		if kv.n > 0 {
			m.tokens.WithLabelValues(model, kv.kind).Add(float64(kv.n))
		}
	}
	if rec.CostUSD > 0 {
		m.cost.WithLabelValues(model).Add(rec.CostUSD)
	}
	if rec.Estimated {
		m.estimate.Inc()
	}
}
