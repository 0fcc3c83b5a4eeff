package relay_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaystation/relay"
	"github.com/relaystation/relay/internal/testenv"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/quota"
	"github.com/relaystation/relay/storage/memory"
	"github.com/relaystation/relay/storage/postgres"
	redisstore "github.com/relaystation/relay/storage/redis"
	"github.com/relaystation/relay/upstream/upstreamtest"
	"github.com/relaystation/relay/usage"
)

// This file holds the fault tests of the relay with the fake upstream and
// the real services: upstream answers too big or too long, Postgres and
// Redis going away under load. After each, the relay serves, no goroutine
// is left behind, no usage record is lost and the quotas are right.

// waitFor polls cond until it holds, failing t after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// startRelay serves a relay on cfg; the cleanup closes both (a second
// Close is harmless, so tests may close earlier).
func startRelay(t *testing.T, cfg relay.Config) (*relay.Relay, *httptest.Server) {
	t.Helper()
	if cfg.BcryptCost == 0 {
		cfg.BcryptCost = 4
	}
	rl, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rl.Handler())
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = rl.Close(ctx)
	})
	return rl, srv
}

// outcome is what a client saw of one request.
type outcome struct {
	status    int
	requestID string // X-Request-Id: the usage record's RequestID
	errType   string // of an error answer
	stream    bool
	complete  bool // a 200 stream that ended with message_stop
	err       error
}

const (
	jsonBody   = `{"model":"claude-sonnet-4-5","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`
	streamBody = `{"model":"claude-sonnet-4-5","max_tokens":1000,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
)

// send posts one Messages request and reads the whole answer.
func send(client *http.Client, base, key string, stream bool) outcome {
	body := jsonBody
	if stream {
		body = streamBody
	}
	req, _ := http.NewRequest("POST", base+"/v1/messages", strings.NewReader(body))
	req.Header.Set("x-api-key", key)
	req.Header.Set("content-type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return outcome{err: err, stream: stream}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	o := outcome{status: resp.StatusCode, requestID: resp.Header.Get("X-Request-Id"), stream: stream, err: err}
	if resp.StatusCode >= 400 {
		var e struct {
			Error struct{ Type string } `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		o.errType = e.Error.Type
	}
	o.complete = err == nil && resp.StatusCode == 200 && (!stream || bytes.Contains(b, []byte("event: message_stop")))
	return o
}

// loadGen is N clients sending requests until stopped, each right after
// the other, and everything they saw.
type loadGen struct {
	client *http.Client
	stop   chan struct{}
	halt   sync.Once
	wg     sync.WaitGroup

	mu       sync.Mutex
	outcomes []outcome
	ok       atomic.Int64 // 200s, complete
}

// startLoad starts workers clients; target tells each request's relay and
// key and whether it streams. The cleanup stops them before the servers
// close.
func startLoad(t *testing.T, workers int, target func(worker, n int) (base, key string, stream bool)) *loadGen {
	t.Helper()
	l := &loadGen{
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}, Timeout: 20 * time.Second},
		stop:   make(chan struct{}),
	}
	for w := range workers {
		l.wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				base, key, stream := target(w, n)
				o := send(l.client, base, key, stream)
				if o.status == 200 && o.complete {
					l.ok.Add(1)
				}
				l.mu.Lock()
				l.outcomes = append(l.outcomes, o)
				l.mu.Unlock()
			}
		})
	}
	t.Cleanup(func() { l.finish() })
	return l
}

// finish stops the clients and returns everything they saw.
func (l *loadGen) finish() []outcome {
	l.halt.Do(func() {
		close(l.stop)
		l.wg.Wait()
		l.client.CloseIdleConnections()
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.outcomes)
}

// waitOK waits until the clients saw n more successes than now.
func (l *loadGen) waitOK(t *testing.T, n int64) {
	t.Helper()
	want := l.ok.Load() + n
	waitFor(t, 10*time.Second, fmt.Sprintf("%d successful requests", want), func() bool { return l.ok.Load() >= want })
}

// metric reads a gauge or counter (without labels) from reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		m := mf.GetMetric()[0]
		if g := m.GetGauge(); g != nil {
			return g.GetValue()
		}
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// allRecords lists every usage record of a key, all pages.
func allRecords(t *testing.T, st usage.Store, keyID string) []usage.Record {
	t.Helper()
	var all []usage.Record
	cursor := ""
	for {
		recs, next, err := st.ListRecords(context.Background(), usage.Filter{KeyID: keyID}, cursor, 500)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, recs...)
		if next == "" {
			return all
		}
		cursor = next
	}
}

func totalTokens(u upstreamtest.Usage) int64 {
	return u.InputTokens + u.OutputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
}

// hugeMessage is a non-streamed message whose text is size bytes, written
// as it goes (the fake never holds it), with its usage at the end as the
// real API puts it.
type hugeMessage struct{ size int64 }

const (
	hugeHead = `{"id":"msg_huge","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"`
	hugeTail = `"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":15,"cache_creation_input_tokens":30,"cache_read_input_tokens":40}}`
)

func (h hugeMessage) length() int64 { return int64(len(hugeHead)) + h.size + int64(len(hugeTail)) }

func (h hugeMessage) writeTo(w io.Writer) error {
	chunk := bytes.Repeat([]byte("lorem ipsum "), 32<<10/12)
	if _, err := io.WriteString(w, hugeHead); err != nil {
		return err
	}
	for left := h.size; left > 0; {
		n := min(left, int64(len(chunk)))
		if _, err := w.Write(chunk[:n]); err != nil {
			return err
		}
		left -= n
	}
	_, err := io.WriteString(w, hugeTail)
	return err
}

// TestHugeUpstreamBody: a 64 MiB non-streamed answer passes through byte
// for byte without the relay holding it: the whole process (upstream,
// relay and client) allocates much less than the body while it passes;
// and the usage, which comes last, is read.
func TestHugeUpstreamBody(t *testing.T) {
	testenv.CheckGoroutines(t)
	huge := hugeMessage{size: 64 << 20}
	var served atomic.Int64
	var small []byte
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if served.Add(1) > 1 { // only the first answer is huge
			_, _ = w.Write(small)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(huge.length(), 10))
		_ = huge.writeTo(w)
	}))
	defer up.Close()
	e := newEnv(t, upstreamtest.Config{}, func(c *relay.Config) { c.UpstreamURL = up.URL })
	small = e.fake.MessageBody("claude-sonnet-4-5")

	wantSum := sha256.New()
	if err := huge.writeTo(wantSum); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/messages", strings.NewReader(jsonBody))
	req.Header.Set("x-api-key", e.key)
	got := sha256.New()

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	runtime.ReadMemStats(&after)

	if err != nil || resp.StatusCode != 200 || n != huge.length() || !bytes.Equal(got.Sum(nil), wantSum.Sum(nil)) {
		t.Fatalf("status %d, %d of %d bytes, err %v, same bytes: %v", resp.StatusCode, n, huge.length(), err, bytes.Equal(got.Sum(nil), wantSum.Sum(nil)))
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.FormatInt(huge.length(), 10) {
		t.Errorf("Content-Length %q", cl)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d MiB passed through; the process allocated %.1f MiB meanwhile", huge.length()>>20, float64(alloc)/(1<<20))
	if alloc > uint64(huge.size/4) {
		t.Errorf("allocated %d MiB while %d MiB passed through: the answer is being buffered", alloc>>20, huge.size>>20)
	}

	e.waitTotals(e.keyID, 1)
	rec := e.records(e.keyID)[0]
	want := usage.Usage{InputTokens: 25, OutputTokens: 15, CacheCreationInputTokens: 30, CacheReadInputTokens: 40}
	if rec.Status != 200 || rec.RequestID != resp.Header.Get("X-Request-Id") || rec.ErrorType != "" || rec.Estimated || rec.Usage != want || rec.ResponseModel != "claude-sonnet-4-5" {
		t.Errorf("record = %+v\nwant usage %+v", rec, want)
	}
	// The relay still serves.
	if a := e.post("/v1/messages", jsonBody, e.key); a.status != 200 || len(a.body) > 1<<20 {
		t.Errorf("after the huge answer: %d, %d bytes", a.status, len(a.body))
	}
}

// TestLongStream: a stream of 40,000 events passes through byte for byte,
// with the exact usage recorded, and without the relay keeping it: the
// whole process allocates less than the stream's size.
func TestLongStream(t *testing.T) {
	testenv.CheckGoroutines(t)
	const deltas = 40_000
	text := strings.Repeat("token ", deltas)
	e := newEnv(t, upstreamtest.Config{Text: text, Deltas: deltas, PingEvery: 100, DontRecord: true})
	want := e.fake.StreamBody("claude-sonnet-4-5")
	wantSum := sha256.Sum256(want)

	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/messages", strings.NewReader(streamBody))
	req.Header.Set("x-api-key", e.key)
	got := sha256.New()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	runtime.ReadMemStats(&after)
	if err != nil || resp.StatusCode != 200 || n != int64(len(want)) || !bytes.Equal(got.Sum(nil), wantSum[:]) {
		t.Fatalf("status %d, %d of %d bytes, err %v", resp.StatusCode, n, len(want), err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("a stream of %d events, %.1f MiB, passed through; the process allocated %.1f MiB meanwhile",
		deltas, float64(len(want))/(1<<20), float64(alloc)/(1<<20))
	if alloc > uint64(len(want)) {
		t.Errorf("allocated %d bytes for a stream of %d bytes", alloc, len(want))
	}
	e.waitTotals(e.keyID, 1)
	rec := e.records(e.keyID)[0]
	u := rec.Usage
	u.ServiceTier = ""
	if u != wantUsage(e.fake.ExpectedUsage()) || rec.Estimated || rec.ErrorType != "" || !rec.Stream {
		t.Errorf("record = %+v", rec)
	}
}

// TestLongStreamKeepsItsReservation: a stream that outlives the
// reservation TTL many times over keeps its concurrency slot (the relay
// renews it), and frees it when it ends.
func TestLongStreamKeepsItsReservation(t *testing.T) {
	testenv.CheckGoroutines(t)
	// Renewed every ttl/3: a margin of 2/3 ttl for a late timer under -race.
	const ttl = 500 * time.Millisecond
	e := newEnv(t, upstreamtest.Config{Deltas: 25, EventDelay: 100 * time.Millisecond}, func(c *relay.Config) {
		c.Quota.ReservationTTL = ttl
	})
	key, keyID := e.mint(keys.CreateParams{Name: "one at a time", Limits: map[string]int64{"max_concurrent": 1}})
	done := make(chan outcome, 1)
	start := time.Now()
	go func() { done <- send(http.DefaultClient, e.srv.URL, key, true) }()
	waitFor(t, 5*time.Second, "the stream to start", func() bool { return e.fake.Count() == 1 })
	// Well past the TTL, while the stream runs, its slot is still held.
	for time.Since(start) < 4*ttl {
		time.Sleep(10 * time.Millisecond)
	}
	errorShape(t, e.post("/v1/messages", jsonBody, key), 429, "rate_limit_error")
	select {
	case o := <-done:
		t.Fatalf("the stream ended before the check: %+v", o)
	default:
	}
	if o := <-done; !o.complete {
		t.Fatalf("the long stream: %+v", o)
	}
	if a := e.post("/v1/messages", jsonBody, key); a.status != 200 {
		t.Errorf("after the stream ended: %d %s", a.status, a.body)
	}
	e.waitTotals(keyID, 2)
}

// TestUpstreamFaultsLeaveNothing: after each upstream fault the relay
// serves the next request, records the faulty one, and once closed leaves
// no goroutine behind.
func TestUpstreamFaultsLeaveNothing(t *testing.T) {
	idle := func(c *relay.Config) { c.StreamIdleTimeout = 100 * time.Millisecond }
	tests := []struct {
		name   string
		fault  upstreamtest.Fault
		stream bool
		cfg    func(*relay.Config)
		status int      // what the client sees
		types  []string // the record's error type, one of
	}{
		{"cut mid-stream", upstreamtest.Fault{CutAfter: 4}, true, nil, 200, []string{"stream_interrupted"}},
		// A JSON answer cut short is recorded as invalid (its truncated
		// body does not parse, and that label replaces the cut's), with no
		// usage; a stream cut short keeps stream_interrupted and its usage.
		{"cut mid-JSON", upstreamtest.Fault{CutAfter: 1}, false, nil, 200, []string{"stream_interrupted"}},
		{"garbage stream", upstreamtest.GarbageFault(), true, nil, 200, []string{"invalid_upstream_response"}},
		{"HTML with 200", upstreamtest.HTMLFault(), false, nil, 200, []string{"invalid_upstream_response"}},
		{"dropped", upstreamtest.Fault{Drop: true}, false, nil, 502, []string{"api_error"}},
		{"stall before headers", upstreamtest.Fault{Latency: 5 * time.Second}, true, func(c *relay.Config) {
			c.Transport = &http.Transport{ResponseHeaderTimeout: 100 * time.Millisecond}
		}, 504, []string{"timeout_error"}},
		{"stall mid-stream", upstreamtest.Fault{EventDelay: 5 * time.Second}, true, idle, 200, []string{"upstream_idle_timeout"}},
		{"error event mid-stream", upstreamtest.Fault{ErrorAfter: 3}, true, nil, 200, []string{"overloaded_error"}},
		{"overloaded", upstreamtest.Fault{Status: 529}, false, nil, 529, []string{"overloaded_error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testenv.CheckGoroutines(t)
			e := newEnv(t, upstreamtest.Config{Deltas: 8}, func(c *relay.Config) {
				c.Retry.Attempts = 1
				if tt.cfg != nil {
					tt.cfg(c)
				}
			})
			e.fake.Enqueue(tt.fault)
			start := time.Now()
			o := send(http.DefaultClient, e.srv.URL, e.key, tt.stream)
			if o.status != tt.status || o.complete && tt.fault.Body == nil {
				t.Errorf("the faulty request: %+v", o)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("the faulty request took %v", d)
			}
			if o := send(http.DefaultClient, e.srv.URL, e.key, tt.stream); !o.complete {
				t.Errorf("the request after the fault: %+v", o)
			}
			e.waitTotals(e.keyID, 2)
			var faulty, fine int
			for _, rec := range e.records(e.keyID) {
				switch {
				case rec.ErrorType == "" && rec.Status == 200:
					fine++
				case slices.Contains(tt.types, rec.ErrorType):
					faulty++
				default:
					t.Errorf("record = %+v, want error type %v", rec, tt.types)
				}
			}
			if faulty != 1 || fine != 1 {
				t.Errorf("%d faulty and %d fine records, want one each", faulty, fine)
			}
		})
	}
}

// TestClientGoneLeavesNothing: clients that leave mid-stream, many at
// once, cost the relay nothing once it is closed: every stream recorded as
// 499, no goroutine left.
func TestClientGoneLeavesNothing(t *testing.T) {
	testenv.CheckGoroutines(t)
	e := newEnv(t, upstreamtest.Config{Deltas: 50, EventDelay: 20 * time.Millisecond, DontRecord: true})
	const clients = 10
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/messages", strings.NewReader(streamBody))
			req.Header.Set("x-api-key", e.key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			buf := make([]byte, 0, 4096)
			for !bytes.Contains(buf, []byte("text_delta")) {
				chunk := make([]byte, 512)
				n, err := resp.Body.Read(chunk)
				buf = append(buf, chunk[:n]...)
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	e.waitTotals(e.keyID, clients)
	for _, rec := range e.records(e.keyID) {
		if rec.Status != usage.StatusClientClosed {
			t.Errorf("record = %+v", rec)
		}
	}
	if a := e.post("/v1/messages", jsonBody, e.key); a.status != 200 {
		t.Errorf("after the clients left: %d", a.status)
	}
}

// TestPostgresOutageUnderLoad: Postgres goes away for a while under load
// and comes back. Verified keys keep working and every request is served;
// the usage records wait in the spool and reach the store after, each
// exactly once; the token budget counted every request once.
func TestPostgresOutageUnderLoad(t *testing.T) {
	testenv.CheckGoroutines(t)
	dsn, pg := testenv.PostgresProxy(t)
	ctx := context.Background()
	store, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	fake := upstreamtest.New(upstreamtest.Config{APIKey: upstreamKey, DontRecord: true})
	t.Cleanup(fake.Close)
	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	rl, srv := startRelay(t, relay.Config{
		UpstreamURL: fake.URL, UpstreamCredential: upstreamKey, Keys: store, Usage: store,
		SpoolDir: t.TempDir(), Registerer: reg, Logger: slogTo(logs),
	})
	const budget = 1_000_000_000
	keyID, key := mintOn(t, rl, keys.CreateParams{Name: "load", TokenLimit: budget})
	// The key is verified and its budget seeded before the outage, as for
	// any key in use when the database goes.
	first := postTo(t, srv.URL, jsonBody, key)
	if first.status != 200 {
		t.Fatalf("first request: %d %s", first.status, first.body)
	}

	load := startLoad(t, 8, func(w, n int) (string, string, bool) { return srv.URL, key, (w+n)%3 == 0 })
	load.waitOK(t, 50)
	const errorsBefore, errorsDuring = 3, 3
	for range errorsBefore {
		fake.Enqueue(upstreamtest.Fault{Status: 400, Message: "recorded error"})
	}

	pg.Cut()
	cutAt := time.Now()
	okAtCut := load.ok.Load()
	for range errorsDuring {
		fake.Enqueue(upstreamtest.Fault{Status: 400, Message: "recorded error"})
	}
	// Down long enough that the recorder spooled and a key recheck failed,
	// with requests served all the while.
	waitFor(t, 10*time.Second, "the outage to show", func() bool {
		return time.Since(cutAt) >= time.Second && metric(t, reg, "relay_usage_spooled_records") > 0 &&
			strings.Contains(logs.String(), "key recheck failed") && load.ok.Load()-okAtCut >= 50
	})
	servedDuring := load.ok.Load() - okAtCut
	pg.Restore()
	load.waitOK(t, 50)
	waitFor(t, 5*time.Second, "the queued faults to be served", func() bool { return fake.Pending() == 0 })
	outcomes := load.finish()

	ok, failed := []string{first.header.Get("X-Request-Id")}, []string(nil)
	for _, o := range outcomes {
		switch {
		case o.status == 200 && o.complete:
			ok = append(ok, o.requestID)
		case o.status == 400 && o.errType == "invalid_request_error":
			failed = append(failed, o.requestID)
		default:
			t.Errorf("a client saw %+v", o)
		}
	}
	if len(failed) != errorsBefore+errorsDuring {
		t.Errorf("%d errors seen, want %d", len(failed), errorsBefore+errorsDuring)
	}
	t.Logf("%d requests (%d during the %v outage), %d errors", len(ok), servedDuring, time.Since(cutAt).Round(time.Millisecond), len(failed))

	// Every record reaches the store: the spool is replayed.
	n := int64(len(ok) + len(failed))
	waitFor(t, 10*time.Second, "every record to be stored", func() bool {
		tot, err := store.Totals(ctx, usage.Filter{KeyID: keyID})
		return err == nil && tot.Requests >= n
	})
	// The budget counted each request once.
	u := fake.ExpectedUsage()
	a := postTo(t, srv.URL, jsonBody, key) // one more, counted below
	ok = append(ok, a.header.Get("X-Request-Id"))
	var view struct {
		Requests  int64  `json:"requests"`
		Remaining *int64 `json:"remaining"`
	}
	getUsage := func() {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/usage", nil)
		req.Header.Set("x-api-key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&view); err != nil || resp.StatusCode != 200 {
			t.Fatalf("usage: %d %v", resp.StatusCode, err)
		}
	}
	waitFor(t, 5*time.Second, "the last record", func() bool { getUsage(); return view.Requests == n+1 })
	wantTokens := int64(len(ok)) * totalTokens(u)
	if view.Remaining == nil || *view.Remaining != budget-wantTokens {
		t.Errorf("remaining %v, want %d: the limiter counted %d requests", view.Remaining, budget-wantTokens, len(ok))
	}

	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rl.Close(cctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := metric(t, reg, "relay_usage_dropped_records_total"); d != 0 || strings.Contains(logs.String(), "record dropped") {
		t.Errorf("%v usage records dropped", d)
	}

	// Records in = records out: each id once, nothing else.
	recs := allRecords(t, store, keyID)
	seen := map[string]int{}
	for _, r := range recs {
		seen[r.RequestID]++
	}
	for _, id := range append(slices.Clone(ok), failed...) {
		if seen[id] != 1 {
			t.Errorf("request %q stored %d times", id, seen[id])
		}
	}
	if len(recs) != len(ok)+len(failed) || len(seen) != len(recs) {
		t.Errorf("%d records (%d distinct) for %d requests", len(recs), len(seen), len(ok)+len(failed))
	}
	tot, err := store.Totals(ctx, usage.Filter{KeyID: keyID})
	if err != nil {
		t.Fatal(err)
	}
	want := usage.Usage{}
	for range ok {
		want = want.Add(wantUsage(u))
	}
	price, _ := usage.DefaultPricing().Lookup("claude-sonnet-4-5")
	wantCost := float64(len(ok)) * price.Cost(wantUsage(u))
	if tot.Usage != want || tot.Errors != int64(len(failed)) || tot.CostUSD < wantCost*(1-1e-9) || tot.CostUSD > wantCost*(1+1e-9) {
		t.Errorf("totals %+v\nwant usage %+v, %d errors, cost %v", tot, want, len(failed), wantCost)
	}
}

// limitedRelay is one of several relays whose limits live in one Redis,
// behind a Failover.
type limitedRelay struct {
	rl   *relay.Relay
	srv  *httptest.Server
	fo   *quota.Failover
	logs *syncBuffer // the Failover's

	mu          sync.Mutex
	transitions []bool // OnTransition's calls: true when degraded
}

func (l *limitedRelay) seen() []bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.transitions)
}

// startLimited starts n relays on one usage store and one Redis (as in
// production, through a Failover, with key change notices on Redis). The
// limiters' clock stands still, so that no minute ends during the test
// and the RPM counts are exact.
func startLimited(t *testing.T, n int, redisURL, prefix string, store *memory.Store, fakeURL string, tiers quota.Tiers, failClosed bool) []*limitedRelay {
	t.Helper()
	frozen := time.Now()
	qcfg := quota.Config{Seed: relay.SeedFromUsage(store, 0), Now: func() time.Time { return frozen }}
	var out []*limitedRelay
	for range n {
		rc, err := redisstore.NewClient(redisURL)
		if err != nil {
			t.Fatal(err)
		}
		inv := redisstore.NewInvalidator(rc, prefix, nil)
		t.Cleanup(func() { // after the relay's cleanup, registered below
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = inv.Close(ctx)
			_ = rc.Close()
		})
		lr := &limitedRelay{logs: &syncBuffer{}}
		var fallback quota.Limiter
		if !failClosed {
			fallback = quota.NewMemory(qcfg)
		}
		lr.fo = quota.NewFailover(redisstore.NewLimiter(rc, qcfg, redisstore.LimiterOptions{Prefix: prefix + "quota:"}), fallback,
			quota.FailoverConfig{FailClosed: failClosed, Logger: slogTo(lr.logs), OnTransition: func(degraded bool) {
				lr.mu.Lock()
				lr.transitions = append(lr.transitions, degraded)
				lr.mu.Unlock()
			}})
		lr.rl, lr.srv = startRelay(t, relay.Config{
			UpstreamURL: fakeURL, UpstreamCredential: upstreamKey, Keys: store, Usage: store,
			Tiers: tiers, Quota: qcfg, Limiter: lr.fo, KeyEvents: inv,
		})
		out = append(out, lr)
	}
	return out
}

// probedInOutage reports whether every relay's Failover has probed Redis
// during the outage and found it still away.
func probedInOutage(insts []*limitedRelay) func() bool {
	return func() bool {
		for _, in := range insts {
			if !strings.Contains(in.logs.String(), "primary limiter still unavailable") {
				return false
			}
		}
		return true
	}
}

func allDegraded(insts []*limitedRelay, want bool) func() bool {
	return func() bool {
		for _, in := range insts {
			if in.fo.Degraded() != want {
				return false
			}
		}
		return true
	}
}

// burst sends n requests of key at once, spread over the relays, and
// returns how many were admitted; every other answer must be a 429.
func burst(t *testing.T, insts []*limitedRelay, key string, n int) int {
	t.Helper()
	var ok atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			switch o := send(http.DefaultClient, insts[i%len(insts)].srv.URL, key, false); {
			case o.status == 200:
				ok.Add(1)
			case o.status == 429 && o.errType == "rate_limit_error":
			default:
				t.Errorf("limited key: %+v", o)
			}
		})
	}
	wg.Wait()
	return int(ok.Load())
}

// waitStored polls the store until it holds n records in all, then closes
// the relays: every request served was recorded, none twice.
func waitStored(t *testing.T, store *memory.Store, n int64, insts []*limitedRelay) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d usage records", n), func() bool {
		tot, err := store.Totals(context.Background(), usage.Filter{})
		return err == nil && tot.Requests >= n
	})
	for _, in := range insts {
		in.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := in.rl.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		cancel()
	}
	if tot, _ := store.Totals(context.Background(), usage.Filter{}); tot.Requests != n {
		t.Errorf("%d usage records, want %d", tot.Requests, n)
	}
}

// TestRedisOutageUnderLoad: the Redis that two relays share goes away under
// load and comes back. Requests keep being served, limits are then
// enforced per instance (fail open), both relays go back to Redis after
// it returns, and the RPM Redis counted before the outage still holds.
func TestRedisOutageUnderLoad(t *testing.T) {
	testenv.CheckGoroutines(t)
	redisURL, prefix, rp := testenv.RedisProxy(t)
	store := memory.New()
	fake := upstreamtest.New(upstreamtest.Config{APIKey: upstreamKey, DontRecord: true})
	t.Cleanup(fake.Close)
	const rpm = 5
	tiers := quota.Tiers{Default: "bulk", Tiers: map[string]quota.Limits{"bulk": {RPM: 1_000_000}, "limited": {RPM: rpm}}}
	insts := startLimited(t, 2, redisURL, prefix, store, fake.URL, tiers, false)
	_, bulk := mintOn(t, insts[0].rl, keys.CreateParams{Name: "bulk"})
	_, limited := mintOn(t, insts[1].rl, keys.CreateParams{Name: "limited", Tier: "limited"})

	load := startLoad(t, 6, func(w, n int) (string, string, bool) { return insts[(w+n)%2].srv.URL, bulk, n%4 == 0 })
	load.waitOK(t, 30)
	admitted := 0
	if n := burst(t, insts, limited, 4*rpm); n != rpm {
		t.Errorf("healthy: %d requests admitted, want the RPM of %d across both relays", n, rpm)
	} else {
		admitted += n
	}

	rp.Cut()
	waitFor(t, 10*time.Second, "both relays to notice the outage", allDegraded(insts, true))
	okAtCut := load.ok.Load()
	// Each relay enforces the limits alone meanwhile, from zero.
	if n := burst(t, insts, limited, 4*rpm); n != len(insts)*rpm {
		t.Errorf("during the outage: %d requests admitted, want %d (the RPM on each relay)", n, len(insts)*rpm)
	} else {
		admitted += n
	}
	load.waitOK(t, 30)
	waitFor(t, 10*time.Second, "a probe of Redis to fail", probedInOutage(insts))
	servedDuring := load.ok.Load() - okAtCut

	rp.Restore()
	waitFor(t, 10*time.Second, "both relays to go back to Redis", allDegraded(insts, false))
	if n := burst(t, insts, limited, 4*rpm); n != 0 {
		t.Errorf("after the outage: %d requests admitted; Redis counted the RPM of %d before it", n, rpm)
	}
	load.waitOK(t, 30)
	outcomes := load.finish()
	for _, o := range outcomes {
		if !o.complete {
			t.Errorf("a client saw %+v", o)
		}
	}
	for i, in := range insts {
		if got := in.seen(); !slices.Equal(got, []bool{true, false}) {
			t.Errorf("relay %d transitions %v, want degraded then recovered", i, got)
		}
	}
	t.Logf("%d bulk requests, %d during the outage", len(outcomes), servedDuring)
	waitStored(t, store, int64(len(outcomes)+admitted), insts)
}

// TestRedisOutageFailClosed: with FailClosed, requests are refused with
// 503 overloaded_error while Redis is away, and served again once it is
// back.
func TestRedisOutageFailClosed(t *testing.T) {
	testenv.CheckGoroutines(t)
	redisURL, prefix, rp := testenv.RedisProxy(t)
	store := memory.New()
	fake := upstreamtest.New(upstreamtest.Config{APIKey: upstreamKey, DontRecord: true})
	t.Cleanup(fake.Close)
	tiers := quota.Tiers{Default: "bulk", Tiers: map[string]quota.Limits{"bulk": {RPM: 1_000_000}}}
	insts := startLimited(t, 2, redisURL, prefix, store, fake.URL, tiers, true)
	_, key := mintOn(t, insts[0].rl, keys.CreateParams{Name: "bulk"})

	load := startLoad(t, 4, func(w, n int) (string, string, bool) { return insts[(w+n)%2].srv.URL, key, n%4 == 0 })
	load.waitOK(t, 20)
	rp.Cut()
	waitFor(t, 10*time.Second, "both relays to notice the outage", allDegraded(insts, true))
	for i := range 4 {
		a := postTo(t, insts[i%2].srv.URL, jsonBody, key)
		errorShape(t, a, 503, "overloaded_error")
		if a.header.Get("Retry-After") == "" {
			t.Errorf("503 without retry-after: %v", a.header)
		}
	}
	waitFor(t, 10*time.Second, "a probe of Redis to fail", probedInOutage(insts))
	rp.Restore()
	waitFor(t, 10*time.Second, "both relays to go back to Redis", allDegraded(insts, false))
	load.waitOK(t, 20)
	for i := range 4 {
		if a := postTo(t, insts[i%2].srv.URL, jsonBody, key); a.status != 200 {
			t.Errorf("after the outage: %d %s", a.status, a.body)
		}
	}
	outcomes := load.finish()
	served, refused := 0, 0
	for _, o := range outcomes {
		switch {
		case o.complete:
			served++
		case o.status == 503 && o.errType == "overloaded_error":
			refused++
		default:
			t.Errorf("a client saw %+v", o)
		}
	}
	if refused == 0 {
		t.Error("no request was refused during the outage")
	}
	for i, in := range insts {
		if got := in.seen(); !slices.Equal(got, []bool{true, false}) {
			t.Errorf("relay %d transitions %v, want degraded then recovered", i, got)
		}
	}
	t.Logf("%d requests served, %d refused", served, refused)
	waitStored(t, store, int64(served+4), insts)
}
