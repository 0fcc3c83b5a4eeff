package relay

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/upstream"
	"github.com/relaystation/relay/usage"
)

// metrics are the relay's Prometheus collectors, registered on the
// Registerer a host passes in. With no Registerer every method does
// nothing: nothing is registered globally, so two Relays in one process
// never collide.
type metrics struct {
	on        bool
	requests  *prometheus.CounterVec   // every HTTP request: route, status, model
	duration  *prometheus.HistogramVec // route
	ttft      *prometheus.HistogramVec // model, stream
	modelReqs *prometheus.CounterVec   // billable requests: model, status
	tokens    *prometheus.CounterVec   // model, kind
	cost      *prometheus.CounterVec   // model
	estimated prometheus.Counter
	streams   prometheus.Gauge
	refusals  *prometheus.CounterVec // reason
	upstream  *prometheus.HistogramVec
	events    *prometheus.CounterVec // upstream, event
	failovers *prometheus.CounterVec // upstream
}

// latencyBuckets span a cached key check (tens of µs) to a long answer.
var latencyBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

func newMetrics(reg prometheus.Registerer, ks func() keys.CacheStats, rec func() usage.RecorderStats) (*metrics, error) {
	m := &metrics{}
	if reg == nil {
		return m, nil
	}
	m.on = true
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "relay", Name: "http_requests_total",
		Help: "HTTP requests served, by route, status and model."}, []string{"route", "status", "model"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "relay", Name: "http_request_duration_seconds",
		Help: "Time from request to the end of the answer (streams included), by route.", Buckets: latencyBuckets}, []string{"route"})
	m.ttft = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "relay", Name: "time_to_first_token_seconds",
		Help: "Time from request to the first byte of the upstream's answer body, by model and stream.", Buckets: latencyBuckets}, []string{"model", "stream"})
	m.modelReqs = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "relay", Name: "model_requests_total",
		Help: "Billable model requests relayed, by model and final status (499: the client left)."}, []string{"model", "status"})
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "relay", Name: "tokens_total",
		Help: "Tokens relayed, by model and kind (input, output, cache_creation, cache_read)."}, []string{"model", "kind"})
	m.cost = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "relay", Name: "cost_usd_total",
		Help: "Cost of relayed requests in US dollars at the configured prices, by model."}, []string{"model"})
	m.estimated = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "relay", Name: "estimated_usage_records_total",
		Help: "Usage records whose counts came from the offline tokenizer because the upstream reported none."})
	m.streams = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "relay", Name: "active_streams",
		Help: "Streams being relayed now."})
	m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "relay", Name: "limiter_refusals_total",
		Help: "Requests refused by the key's limits, by reason (rate_limit, concurrency, in_flight, budget) and budget."}, []string{"reason", "budget"})
	m.upstream = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "relay", Name: "upstream_duration_seconds",
		Help: "Time an upstream took to answer (to the end of the body), by upstream.", Buckets: latencyBuckets}, []string{"upstream"})
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "relay", Name: "upstream_events_total",
		Help: "Upstream pool events: retry, cooldown_start, cooldown_end, disabled, enabled."}, []string{"upstream", "event"})
	m.failovers = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "relay", Name: "upstream_failovers_total",
		Help: "Retries that moved a request to another upstream, by the upstream that failed."}, []string{"upstream"})
	cs := []prometheus.Collector{m.requests, m.duration, m.ttft, m.modelReqs, m.tokens, m.cost, m.estimated, m.streams, m.refusals, m.upstream, m.events, m.failovers}
	cs = append(cs,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "relay", Name: "key_cache_hits_total",
			Help: "Key verifications served from the verified-key cache."}, func() float64 { return float64(ks().Hits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "relay", Name: "key_cache_misses_total",
			Help: "Key verifications that needed the store and bcrypt."}, func() float64 { return float64(ks().Misses) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "relay", Name: "key_cache_refusals_total",
			Help: "Unknown or wrong keys answered from the refusal cache."}, func() float64 { return float64(ks().Refusals) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "relay", Name: "usage_queue_depth",
			Help: "Usage records waiting in memory to be written."}, func() float64 { return float64(rec().Queued) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "relay", Name: "usage_spooled_records",
			Help: "Usage records on the disk spool, waiting for the store."}, func() float64 { return float64(rec().Spooled) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "relay", Name: "usage_dropped_records_total",
			Help: "Usage records lost (spool full or disabled while the store was down)."}, func() float64 { return float64(rec().Dropped) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "relay", Name: "usage_written_records_total",
			Help: "Usage records written to the store."}, func() float64 { return float64(rec().Written) }),
	)
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// request counts one finished HTTP request.
func (m *metrics) request(route string, status int, model string, seconds float64) {
	if !m.on {
		return
	}
	m.requests.WithLabelValues(route, strconv.Itoa(status), model).Inc()
	m.duration.WithLabelValues(route).Observe(seconds)
}

// record counts a usage record.
func (m *metrics) record(rec *usage.Record, model string) {
	if !m.on {
		return
	}
	m.modelReqs.WithLabelValues(model, strconv.Itoa(rec.Status)).Inc()
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
		m.estimated.Inc()
	}
	if rec.TTFT > 0 {
		m.ttft.WithLabelValues(model, strconv.FormatBool(rec.Stream)).Observe(rec.TTFT.Seconds())
	}
	if rec.Upstream != "" && rec.Latency > 0 {
		m.upstream.WithLabelValues(rec.Upstream).Observe(rec.Latency.Seconds())
	}
}

func (m *metrics) streamStarted() {
	if m.on {
		m.streams.Inc()
	}
}

func (m *metrics) streamEnded() {
	if m.on {
		m.streams.Dec()
	}
}

func (m *metrics) refused(reason, budget string) {
	if m.on {
		m.refusals.WithLabelValues(reason, budget).Inc()
	}
}

// upstreamEvent is the pool's OnEvent.
func (m *metrics) upstreamEvent(e upstream.Event) {
	if !m.on {
		return
	}
	m.events.WithLabelValues(e.Upstream, e.Kind.String()).Inc()
	if e.Kind == upstream.EventRetry && e.Failover {
		m.failovers.WithLabelValues(e.Upstream).Inc()
	}
}

// modelLabel keeps metric cardinality bounded: models the price table
// knows keep their name, anything a client made up is "other".
func (rl *Relay) modelLabel(model string) string {
	if model == "" {
		return ""
	}
	if _, ok := rl.pricing.Lookup(model); ok {
		return model
	}
	return "other"
}

// routeLabel names a path's route for metrics, never the raw path.
func routeLabel(r *http.Request) string {
	p := r.URL.Path
	switch rt, _ := match(r); rt {
	case routeRoot:
		return "/"
	case routeMessages:
		return "/v1/messages"
	case routeCountTokens:
		return "/v1/messages/count_tokens"
	case routeModels:
		return "/v1/models"
	case routeModel:
		return "/v1/models/{id}"
	case routePassthrough:
		if isBatchPath(p) {
			return "/v1/messages/batches"
		}
		return "/v1/files"
	}
	switch {
	case p == "/v1/usage", p == "/health", p == "/ready":
		return p
	case strings.HasPrefix(p, "/admin/"):
		return "/admin"
	}
	return "other"
}
