package upstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaystation/relay/upstream"
	"github.com/relaystation/relay/upstream/upstreamtest"
)

func realClock(c *upstream.PoolConfig) { c.Now = nil }

func TestOverloadThenSuccess(t *testing.T) {
	for _, stream := range []bool{true, false} {
		t.Run(fmt.Sprint("stream=", stream), func(t *testing.T) {
			e := newEnv(t, 1, nil)
			e.fakes[0].Enqueue(upstreamtest.Fault{Status: 529})
			res, body := e.do(call(model, "", stream))
			if res.Response.StatusCode != 200 || res.Attempts != 2 || res.Upstream != "a" {
				t.Fatalf("status %d, attempts %d, upstream %s", res.Response.StatusCode, res.Attempts, res.Upstream)
			}
			want := e.fakes[0].MessageBody(model)
			if stream {
				want = e.fakes[0].StreamBody(model)
			}
			if string(body) != string(want) {
				t.Fatalf("body differs from the fake's answer:\n%s\n%s", body, want)
			}
			st := e.fakes[0].Stats()
			if st.Requests != 2 || st.Messages != 1 || st.Faulted != 1 {
				t.Fatalf("fake stats %+v", st)
			}
			// Both attempts carried the same body, byte for byte.
			reqs := e.fakes[0].Requests()
			if string(reqs[0].Body) != string(reqs[1].Body) || string(reqs[1].Body) != string(msgBody(model, stream)) {
				t.Fatalf("replayed bodies differ: %s / %s", reqs[0].Body, reqs[1].Body)
			}
			if got := joined(e.events.kinds()); got != "retry:a" {
				t.Fatalf("events %s", got)
			}
		})
	}
}

func TestRetryByStatus(t *testing.T) {
	tests := []struct {
		name       string
		fault      upstreamtest.Fault
		wantStatus int
		attempts   int
	}{
		{"408", upstreamtest.Fault{Status: 408}, 200, 2},
		{"409", upstreamtest.Fault{Status: 409}, 200, 2},
		{"429 retry-after", upstreamtest.Fault{Status: 429, RetryAfter: time.Millisecond}, 200, 2},
		{"500", upstreamtest.Fault{Status: 500}, 200, 2},
		{"502", upstreamtest.Fault{Status: 502}, 200, 2},
		{"503", upstreamtest.Fault{Status: 503}, 200, 2},
		{"504", upstreamtest.Fault{Status: 504}, 200, 2},
		{"529", upstreamtest.Fault{Status: 529}, 200, 2},
		{"dropped connection", upstreamtest.Fault{Drop: true}, 200, 2},
		{"400", upstreamtest.Fault{Status: 400, Message: "prompt is too long: 210000 tokens > 200000 maximum"}, 400, 1},
		{"404", upstreamtest.Fault{Status: 404}, 404, 1},
		{"413", upstreamtest.Fault{Status: 413}, 413, 1},
		{"501", upstreamtest.Fault{Status: 501}, 501, 1},
		{"529 x-should-retry false", upstreamtest.Fault{Status: 529, Header: http.Header{"X-Should-Retry": {"false"}}}, 529, 1},
		{"400 x-should-retry true", upstreamtest.Fault{Status: 400, Header: http.Header{"X-Should-Retry": {"true"}}}, 200, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, 1, realClock)
			e.fakes[0].Enqueue(tt.fault)
			res, body := e.do(call(model, "", true))
			if res.Response.StatusCode != tt.wantStatus || res.Attempts != tt.attempts {
				t.Fatalf("status %d after %d attempts; want %d after %d\n%s", res.Response.StatusCode, res.Attempts, tt.wantStatus, tt.attempts, body)
			}
			if n := e.fakes[0].Count(); n != int64(tt.attempts) {
				t.Fatalf("the fake saw %d requests, want %d", n, tt.attempts)
			}
			if tt.wantStatus != 200 && tt.fault.Message != "" && !strings.Contains(string(body), tt.fault.Message) {
				t.Fatalf("the upstream's message did not come through: %s", body)
			}
		})
	}
}

func TestRateLimitMovesToOtherUpstream(t *testing.T) {
	e := newEnv(t, 2, func(c *upstream.PoolConfig) { c.Upstreams[0].Priority = 1 })
	a := e.fakes[0]
	a.Enqueue(upstreamtest.Fault{Status: 429, RetryAfter: 30 * time.Second})

	res, _ := e.do(call(model, "session-1", true))
	if res.Upstream != "b" || res.Response.StatusCode != 200 || res.Attempts != 2 {
		t.Fatalf("upstream %s, status %d, attempts %d", res.Upstream, res.Response.StatusCode, res.Attempts)
	}
	if got := e.counts(); !equalInts(got, []int64{1, 1}) {
		t.Fatalf("counts %v", got)
	}
	if got := joined(e.events.kinds()); got != "cooldown_start:a:"+model+" retry:a" {
		t.Fatalf("events %s", got)
	}
	if ev := e.events.evs[1]; !ev.Failover || ev.Delay != 0 || ev.Status != 429 {
		t.Fatalf("retry event %+v: a failover must not wait", ev)
	}
	st := e.status("a")
	if st.State != upstream.StateHealthy || len(st.ModelCooldowns) != 1 || st.ModelCooldowns[0].Model != model ||
		!st.ModelCooldowns[0].Until.Equal(e.clock.Now().Add(30*time.Second)) {
		t.Fatalf("status of a: %+v", st)
	}

	// While a cools down for this model, the model goes straight to b…
	if res, _ := e.do(call(model, "session-1", true)); res.Upstream != "b" || res.Attempts != 1 {
		t.Fatalf("during the cooldown: %s after %d attempts", res.Upstream, res.Attempts)
	}
	// …but other models still go to a: Anthropic limits each model apart.
	if res, _ := e.do(call("claude-haiku-4-5", "session-1", true)); res.Upstream != "a" {
		t.Fatalf("another model went to %s", res.Upstream)
	}
	// After the retry-after, one request probes a and brings it back.
	e.clock.Add(30 * time.Second)
	e.events.reset()
	if res, _ := e.do(call(model, "session-1", true)); res.Upstream != "a" {
		t.Fatalf("after the cooldown: %s", res.Upstream)
	}
	if got := joined(e.events.kinds()); got != "cooldown_end:a:"+model {
		t.Fatalf("events %s", got)
	}
	if st := e.status("a"); len(st.ModelCooldowns) != 0 {
		t.Fatalf("cooldowns left: %+v", st.ModelCooldowns)
	}
	if got := e.counts(); !equalInts(got, []int64{3, 2}) {
		t.Fatalf("counts %v", got)
	}
}

func TestLongRetryAfterIsCapped(t *testing.T) {
	e := newEnv(t, 2, func(c *upstream.PoolConfig) {
		c.Upstreams[0].Priority = 1
		c.Cooldown.Max = time.Minute
	})
	e.fakes[0].Enqueue(upstreamtest.Fault{Status: 429, RetryAfter: 6 * time.Hour})
	if res, _ := e.do(call(model, "", true)); res.Upstream != "b" {
		t.Fatalf("went to %s", res.Upstream)
	}
	if st := e.status("a"); !st.ModelCooldowns[0].Until.Equal(e.clock.Now().Add(time.Minute)) {
		t.Fatalf("cooldown until %v, want a minute from now", st.ModelCooldowns[0].Until)
	}
	e.clock.Add(time.Minute)
	if res, _ := e.do(call(model, "", true)); res.Upstream != "a" {
		t.Fatalf("a was not probed after the cap: %s", res.Upstream)
	}
}

func TestAllUpstreamsDown(t *testing.T) {
	e := newEnv(t, 2, nil)
	for i, s := range e.fakes {
		s.SetDefault(upstreamtest.Fault{Status: 529, Message: fmt.Sprintf("upstream %c is overloaded", 'a'+i)})
	}
	res, body := e.do(call(model, "", true))
	if res.Response.StatusCode != 529 || res.Attempts != 3 {
		t.Fatalf("status %d after %d attempts", res.Response.StatusCode, res.Attempts)
	}
	// The last upstream's error, byte for byte, in Anthropic's shape.
	want := `{"type":"error","error":{"type":"overloaded_error","message":"upstream ` + res.Upstream + ` is overloaded"},"request_id":"` + res.Response.Header.Get("Request-Id") + `"}`
	if string(body) != want {
		t.Fatalf("body\n%s\nwant\n%s", body, want)
	}
	if res.Response.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("content type %q", res.Response.Header.Get("Content-Type"))
	}
	if c := e.counts(); c[0]+c[1] != 3 || c[0] == 0 || c[1] == 0 {
		t.Fatalf("counts %v: both upstreams should have been tried, 3 attempts in all", c)
	}
	for _, s := range e.pool.Status() {
		if s.InFlight != 0 {
			t.Fatalf("%s: %d in flight", s.Name, s.InFlight)
		}
	}
}

func TestNoUpstreamAnswers(t *testing.T) {
	closed := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return "http://" + addr
	}
	tests := []struct {
		name       string
		mod        func(*env, *upstream.PoolConfig)
		fault      upstreamtest.Fault
		want       error
		status     int
		attempts   int
		retryAfter string
	}{
		{name: "refused", mod: func(_ *env, c *upstream.PoolConfig) { c.Upstreams[0].BaseURL = closed() }, want: upstream.ErrUnavailable, status: 502, attempts: 1},
		{name: "dropped", fault: upstreamtest.Fault{Drop: true}, want: upstream.ErrUnavailable, status: 502, attempts: 3},
		{name: "header timeout", mod: func(_ *env, c *upstream.PoolConfig) { c.Upstreams[0].ResponseHeaderTimeout = 20 * time.Millisecond },
			fault: upstreamtest.Fault{Latency: 5 * time.Second}, want: upstream.ErrTimeout, status: 504, attempts: 3},
		{name: "disabled", mod: func(_ *env, c *upstream.PoolConfig) { c.Upstreams[0].Disabled = true }, want: upstream.ErrNoUpstream, status: 503},
		{name: "model not served", mod: func(_ *env, c *upstream.PoolConfig) { c.Upstreams[0].Models = []string{"claude-haiku-*"} }, want: upstream.ErrModelNotServed, status: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e *env
			e = newEnv(t, 1, func(c *upstream.PoolConfig) {
				if tt.mod != nil {
					tt.mod(e, c)
				}
			})
			e.fakes[0].SetDefault(tt.fault)
			res, err := e.pool.Do(context.Background(), call(model, "", true))
			if res != nil || !errors.Is(err, tt.want) {
				t.Fatalf("Do = %v, %v; want %v", res, err, tt.want)
			}
			var ue *upstream.Error
			if !errors.As(err, &ue) || ue.Attempts != tt.attempts {
				t.Fatalf("error %#v: want %d attempts", err, tt.attempts)
			}
			ae := upstream.MapError(err)
			if ae == nil || ae.Status != tt.status {
				t.Fatalf("MapError = %+v, want status %d", ae, tt.status)
			}
			if strings.Contains(ae.Message, "127.0.0.1") || strings.Contains(err.Error(), "sk-ant-") {
				t.Fatalf("the error reveals too much: %q / %q", ae.Message, err)
			}
		})
	}
}

func TestNoUpstreamRetryAfter(t *testing.T) {
	e := newEnv(t, 1, func(c *upstream.PoolConfig) { c.Retry.Attempts = 1 })
	e.fakes[0].Enqueue(upstreamtest.Fault{Status: 429, RetryAfter: 42 * time.Second})
	if res, _ := e.do(call(model, "", true)); res.Response.StatusCode != 429 || res.Response.Header.Get("Retry-After") != "42" {
		t.Fatalf("status %d, retry-after %q", res.Response.StatusCode, res.Response.Header.Get("Retry-After"))
	}
	_, err := e.pool.Do(context.Background(), call(model, "", true))
	ae := upstream.MapError(err)
	if !errors.Is(err, upstream.ErrNoUpstream) || ae.Status != 503 || ae.Header.Get("Retry-After") != "42" {
		t.Fatalf("Do: %v, mapped %+v", err, ae)
	}
}

func TestFailoverOnConnectionError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	e := newEnv(t, 2, func(c *upstream.PoolConfig) {
		c.Upstreams[0].BaseURL = dead
		c.Upstreams[0].Priority = 1
	})
	res, _ := e.do(call(model, "", true))
	if res.Upstream != "b" || res.Attempts != 2 {
		t.Fatalf("upstream %s, attempts %d", res.Upstream, res.Attempts)
	}
	st := e.status("a")
	if st.State != upstream.StateCoolingDown || !st.CooldownUntil.Equal(e.clock.Now().Add(10*time.Second)) || st.LastError == "" {
		t.Fatalf("a after a refused connection: %+v", st)
	}
	// While it cools down, nothing is sent its way.
	if res, _ := e.do(call(model, "", true)); res.Upstream != "b" || res.Attempts != 1 {
		t.Fatalf("upstream %s, attempts %d", res.Upstream, res.Attempts)
	}
}

func TestCutAfterFirstByteIsNotRetried(t *testing.T) {
	tests := []struct {
		name  string
		fault upstreamtest.Fault
	}{
		{"cut after headers", upstreamtest.Fault{CutAfter: upstreamtest.AfterHeaders}},
		{"cut mid-stream", upstreamtest.Fault{CutAfter: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, 2, nil)
			for _, s := range e.fakes {
				s.Enqueue(tt.fault)
			}
			res, err := e.pool.Do(context.Background(), call(model, "", true))
			if err != nil || res.Response.StatusCode != 200 || res.Attempts != 1 {
				t.Fatalf("Do = %+v, %v", res, err)
			}
			if _, err := io.ReadAll(res.Response.Body); err == nil {
				t.Fatal("the cut stream read to the end")
			}
			res.Release(upstream.Outcome{Failed: true})
			res.Release(upstream.Outcome{Failed: true}) // a second call does nothing
			if c := e.counts(); c[0]+c[1] != 1 {
				t.Fatalf("counts %v: the cut stream was sent again", c)
			}
			st := e.status(res.Upstream)
			if st.Requests != 1 || st.Errors != 1 || st.InFlight != 0 || st.RecentErrors != 1 || st.ErrorRate != 1 {
				t.Fatalf("status %+v", st)
			}
		})
	}
}

func TestMidStreamErrorEventIsPassedOn(t *testing.T) {
	e := newEnv(t, 2, nil)
	for _, s := range e.fakes {
		s.Enqueue(upstreamtest.Fault{ErrorAfter: 2})
	}
	res, body := e.do(call(model, "", true))
	if res.Attempts != 1 || !strings.Contains(string(body), "event: error") {
		t.Fatalf("attempts %d, body %s", res.Attempts, body)
	}
}

func TestAffinity(t *testing.T) {
	e := newEnv(t, 3, nil)
	first, _ := e.do(call(model, "session-42", true))
	for range 20 {
		if res, _ := e.do(call(model, "session-42", true)); res.Upstream != first.Upstream {
			t.Fatalf("session moved from %s to %s", first.Upstream, res.Upstream)
		}
	}
	// Many sessions spread over all upstreams.
	seen := map[string]int{}
	for i := range 300 {
		res, _ := e.do(call(model, fmt.Sprint("session-", i), true))
		seen[res.Upstream]++
	}
	for _, n := range []string{"a", "b", "c"} {
		if seen[n] < 60 {
			t.Fatalf("sessions per upstream %v: uneven", seen)
		}
	}
	// While its upstream is out, the session moves to one other upstream
	// and stays there; it comes back when the upstream does.
	if err := e.pool.Disable(first.Upstream); err != nil {
		t.Fatal(err)
	}
	second, _ := e.do(call(model, "session-42", true))
	if second.Upstream == first.Upstream {
		t.Fatal("went to a disabled upstream")
	}
	for range 10 {
		if res, _ := e.do(call(model, "session-42", true)); res.Upstream != second.Upstream {
			t.Fatalf("session moved from %s to %s", second.Upstream, res.Upstream)
		}
	}
	if err := e.pool.Enable(first.Upstream); err != nil {
		t.Fatal(err)
	}
	if res, _ := e.do(call(model, "session-42", true)); res.Upstream != first.Upstream {
		t.Fatalf("session did not come back: %s", res.Upstream)
	}
	// The same key maps alike in another pool (another relay instance).
	other := newEnv(t, 3, nil)
	if res, _ := other.do(call(model, "session-42", true)); res.Upstream != first.Upstream {
		t.Fatalf("another instance sends the session to %s, not %s", res.Upstream, first.Upstream)
	}
}

func TestAffinityKey(t *testing.T) {
	tests := []struct {
		session, user, fallback, want string
	}{
		{"s", "u", "k", "s"},
		{"", "u", "k", "u"},
		{"", "", "k", "k"},
		{"", "", "", ""},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.session != "" {
			h.Set("x-claude-code-session-id", tt.session)
		}
		if got := upstream.AffinityKey(h, tt.user, tt.fallback); got != tt.want {
			t.Errorf("AffinityKey(%q, %q, %q) = %q, want %q", tt.session, tt.user, tt.fallback, got, tt.want)
		}
	}
}

func TestPriorityAndWeights(t *testing.T) {
	e := newEnv(t, 3, func(c *upstream.PoolConfig) {
		c.Upstreams[0].Priority = 1
		c.Upstreams[1].Weight = 3
	})
	for range 10 {
		if res, _ := e.do(call(model, "", true)); res.Upstream != "a" {
			t.Fatalf("went to %s, not the top priority", res.Upstream)
		}
	}
	if err := e.pool.Disable("a"); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	var order []string
	for range 8 {
		res, _ := e.do(call(model, "", true))
		got[res.Upstream]++
		order = append(order, res.Upstream)
	}
	if got["b"] != 6 || got["c"] != 2 {
		t.Fatalf("shares %v, want b 6 and c 2", got)
	}
	if s := joined(order); s != "b b c b b b c b" {
		t.Fatalf("order %s: smooth weighted round robin interleaves", s)
	}
}

func TestCredentialRejected(t *testing.T) {
	e := newEnv(t, 2, func(c *upstream.PoolConfig) { c.Upstreams[0].Priority = 1 })
	e.fakes[0].SetDefault(upstreamtest.Fault{Status: 401})
	// Every 401 fails over; the third in a row takes a out.
	for i := range 3 {
		res, _ := e.do(call(model, "", true))
		if res.Upstream != "b" || res.Attempts != 2 || res.Response.StatusCode != 200 {
			t.Fatalf("call %d: upstream %s, attempts %d, status %d", i, res.Upstream, res.Attempts, res.Response.StatusCode)
		}
		if st := e.status("a"); (st.State == upstream.StateDisabled) != (i == 2) {
			t.Fatalf("call %d: a is %s", i, st.State)
		}
	}
	st := e.status("a")
	if !strings.Contains(st.DisabledReason, "401") {
		t.Fatalf("a: %+v", st)
	}
	if got := joined(e.events.kinds()); got != "retry:a retry:a disabled:a retry:a" {
		t.Fatalf("events %s", got)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"level":"ERROR"`) || !strings.Contains(logs, "CREDENTIAL REJECTED") {
		t.Fatalf("not logged loudly:\n%s", logs)
	}
	if strings.Contains(logs, "sk-ant-") || strings.Contains(logs, "relay-key-of-the-client") {
		t.Fatalf("a secret reached the logs:\n%s", logs)
	}
	// It stays out, however long, until an admin enables it.
	e.clock.Add(24 * time.Hour)
	for range 3 {
		if res, _ := e.do(call(model, "", true)); res.Upstream != "b" {
			t.Fatalf("went to %s", res.Upstream)
		}
	}
	e.fakes[0].ClearFaults()
	if err := e.pool.Enable("a"); err != nil {
		t.Fatal(err)
	}
	if res, _ := e.do(call(model, "", true)); res.Upstream != "a" {
		t.Fatalf("went to %s after enabling a", res.Upstream)
	}
	if err := e.pool.Enable("nope"); !errors.Is(err, upstream.ErrUnknownUpstream) {
		t.Fatalf("Enable(nope) = %v", err)
	}
	if err := e.pool.Disable("nope"); !errors.Is(err, upstream.ErrUnknownUpstream) {
		t.Fatalf("Disable(nope) = %v", err)
	}
}

func TestCredentialRejectedSingleUpstream(t *testing.T) {
	e := newEnv(t, 1, func(c *upstream.PoolConfig) { c.Cooldown.AuthFailures = 1 })
	e.fakes[0].SetDefault(upstreamtest.Fault{Status: 403})
	res, body := e.do(call(model, "", true))
	if res.Response.StatusCode != 403 || res.Attempts != 1 || !strings.Contains(string(body), "permission_error") {
		t.Fatalf("status %d after %d attempts: %s", res.Response.StatusCode, res.Attempts, body)
	}
	_, err := e.pool.Do(context.Background(), call(model, "", true))
	if !errors.Is(err, upstream.ErrNoUpstream) {
		t.Fatalf("Do after the upstream was disabled: %v", err)
	}
}

func TestCooldownAndHalfOpenProbe(t *testing.T) {
	e := newEnv(t, 2, func(c *upstream.PoolConfig) {
		c.Upstreams[0].Priority = 1
		c.Retry.Attempts = 1
	})
	a := e.fakes[0]
	a.SetDefault(upstreamtest.Fault{Status: 500})
	for i := range 3 {
		res, _ := e.do(call(model, "", true))
		if res.Upstream != "a" || res.Response.StatusCode != 500 {
			t.Fatalf("call %d: %s %d", i, res.Upstream, res.Response.StatusCode)
		}
	}
	st := e.status("a")
	if st.State != upstream.StateCoolingDown || !st.CooldownUntil.Equal(e.clock.Now().Add(10*time.Second)) {
		t.Fatalf("after three 500s: %+v", st)
	}
	if res, _ := e.do(call(model, "", true)); res.Upstream != "b" {
		t.Fatalf("during the cooldown: %s", res.Upstream)
	}

	// The cooldown ends; the probe fails; the next cooldown is twice as long.
	e.clock.Add(10 * time.Second)
	if st := e.status("a"); st.State != upstream.StateHalfOpen {
		t.Fatalf("state %s", st.State)
	}
	if res, _ := e.do(call(model, "", true)); res.Upstream != "a" || res.Response.StatusCode != 500 {
		t.Fatalf("probe: %s %d", res.Upstream, res.Response.StatusCode)
	}
	if st := e.status("a"); st.State != upstream.StateCoolingDown || !st.CooldownUntil.Equal(e.clock.Now().Add(20*time.Second)) {
		t.Fatalf("after a failed probe: %+v", st)
	}

	// The next probe is slow: while it waits for its headers, everything
	// else goes to b. Then it succeeds and a is back.
	e.clock.Add(20 * time.Second)
	a.SetDefault(upstreamtest.Fault{Latency: 300 * time.Millisecond})
	probe := make(chan *upstream.Result)
	go func() {
		res, err := e.pool.Do(context.Background(), call(model, "", true))
		if err != nil {
			t.Error(err)
		}
		probe <- res
	}()
	deadline := time.Now().Add(2 * time.Second)
	for e.status("a").InFlight == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for range 3 {
		if res, _ := e.do(call(model, "", true)); res.Upstream != "b" {
			t.Fatalf("a request went to %s beside the probe", res.Upstream)
		}
	}
	res := <-probe
	if res.Upstream != "a" || res.Response.StatusCode != 200 {
		t.Fatalf("probe: %s %d", res.Upstream, res.Response.StatusCode)
	}
	res.Release(upstream.Outcome{})
	if st := e.status("a"); st.State != upstream.StateHealthy || st.ConsecutiveFailures != 0 {
		t.Fatalf("after the probe: %+v", st)
	}
	want := "cooldown_start:a cooldown_start:a cooldown_end:a"
	if got := joined(e.events.kinds()); got != want {
		t.Fatalf("events %s, want %s", got, want)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	tests := []struct {
		name     string
		fault    upstreamtest.Fault
		minWait  time.Duration
		status   int
		attempts int
	}{
		{"429 waits", upstreamtest.Fault{Status: 429, RetryAfter: 40 * time.Millisecond}, 40 * time.Millisecond, 200, 2},
		{"529 waits", upstreamtest.Fault{Status: 529, RetryAfter: 40 * time.Millisecond}, 40 * time.Millisecond, 200, 2},
		{"beyond the deadline: handed back", upstreamtest.Fault{Status: 429, RetryAfter: time.Hour}, 0, 429, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, 1, realClock)
			e.fakes[0].Enqueue(tt.fault)
			start := time.Now()
			res, _ := e.do(call(model, "", true))
			took := time.Since(start)
			if res.Response.StatusCode != tt.status || res.Attempts != tt.attempts || took < tt.minWait {
				t.Fatalf("status %d after %d attempts in %v", res.Response.StatusCode, res.Attempts, took)
			}
			if tt.status == 429 && (took > time.Second || res.Response.Header.Get("Retry-After") != "3600") {
				t.Fatalf("took %v; retry-after %q", took, res.Response.Header.Get("Retry-After"))
			}
		})
	}
}

func TestDeadline(t *testing.T) {
	e := newEnv(t, 1, func(c *upstream.PoolConfig) {
		c.Now = nil
		c.Retry = upstream.RetryPolicy{Attempts: 100, Base: 20 * time.Millisecond, Cap: 20 * time.Millisecond, Deadline: 100 * time.Millisecond}
		c.Rand = func() float64 { return 0.5 }
		c.Cooldown.Failures = 1000
	})
	e.fakes[0].SetDefault(upstreamtest.Fault{Status: 529})
	start := time.Now()
	res, _ := e.do(call(model, "", true))
	if took := time.Since(start); took > 500*time.Millisecond || res.Attempts < 2 || res.Attempts > 20 {
		t.Fatalf("%d attempts in %v", res.Attempts, took)
	}
}

func TestCancelWhileWaiting(t *testing.T) {
	e := newEnv(t, 1, realClock)
	e.fakes[0].Enqueue(upstreamtest.Fault{Status: 429, RetryAfter: 3 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	start := time.Now()
	res, err := e.pool.Do(ctx, call(model, "", true))
	if res != nil || !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
		t.Fatalf("Do = %v, %v after %v", res, err, time.Since(start))
	}
	if st := e.status("a"); st.InFlight != 0 {
		t.Fatalf("in flight %d", st.InFlight)
	}
}

func TestMaxConcurrent(t *testing.T) {
	e := newEnv(t, 2, func(c *upstream.PoolConfig) {
		c.Upstreams[0].Priority = 1
		c.Upstreams[0].MaxConcurrent = 1
	})
	first, err := e.pool.Do(context.Background(), call(model, "", false))
	if err != nil || first.Upstream != "a" {
		t.Fatalf("first: %+v, %v", first, err)
	}
	if st := e.status("a"); st.InFlight != 1 {
		t.Fatalf("in flight %d", st.InFlight)
	}
	if res, _ := e.do(call(model, "", false)); res.Upstream != "b" {
		t.Fatalf("second went to %s beside a full a", res.Upstream)
	}
	first.Release(upstream.Outcome{})
	if res, _ := e.do(call(model, "", false)); res.Upstream != "a" {
		t.Fatalf("third went to %s", res.Upstream)
	}
}

func TestMaxConcurrentWaits(t *testing.T) {
	e := newEnv(t, 1, func(c *upstream.PoolConfig) {
		c.Now = nil
		c.Upstreams[0].MaxConcurrent = 1
		c.Retry.Deadline = 2 * time.Second
	})
	first, err := e.pool.Do(context.Background(), call(model, "", false))
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(30*time.Millisecond, func() { first.Release(upstream.Outcome{}) })
	res, _ := e.do(call(model, "", false))
	if res.Response.StatusCode != 200 {
		t.Fatalf("status %d", res.Response.StatusCode)
	}

	// Nobody releases: the call gives up at the deadline.
	e2 := newEnv(t, 1, func(c *upstream.PoolConfig) {
		c.Now = nil
		c.Upstreams[0].MaxConcurrent = 1
		c.Retry.Deadline = 50 * time.Millisecond
	})
	held, err := e2.pool.Do(context.Background(), call(model, "", false))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(upstream.Outcome{})
	if _, err := e2.pool.Do(context.Background(), call(model, "", false)); !errors.Is(err, upstream.ErrNoUpstream) {
		t.Fatalf("Do = %v", err)
	}
}

func TestModelRouting(t *testing.T) {
	e := newEnv(t, 2, func(c *upstream.PoolConfig) {
		c.Upstreams[0].Models = []string{"claude-haiku-*"}
		c.Upstreams[1].Models = []string{"claude-opus-*"}
		c.Upstreams[1].ModelMap = map[string]string{model: "sonnet-via-b"}
	})
	tests := []struct {
		model, upstream, sent string
	}{
		{"claude-haiku-4-5", "a", "claude-haiku-4-5"},
		{"claude-opus-4-5", "b", "claude-opus-4-5"},
		{model, "b", "sonnet-via-b"},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			res, body := e.do(call(tt.model, "", false))
			if res.Upstream != tt.upstream {
				t.Fatalf("went to %s", res.Upstream)
			}
			i := int(tt.upstream[0] - 'a')
			got, _ := e.fakes[i].LastRequest()
			if want := msgBody(tt.sent, false); string(got.Body) != string(want) {
				t.Fatalf("sent\n%s\nwant\n%s", got.Body, want)
			}
			var m struct{ Model string }
			if err := json.Unmarshal(body, &m); err != nil || m.Model != tt.sent {
				t.Fatalf("answer model %q, %v", m.Model, err)
			}
		})
	}
	if _, err := e.pool.Do(context.Background(), call("gpt-4", "", false)); !errors.Is(err, upstream.ErrModelNotServed) {
		t.Fatalf("unserved model: %v", err)
	}
	// Requests without a model (the models list, files) go anywhere.
	r, _ := http.NewRequest(http.MethodGet, "/v1/models", nil)
	res, err := e.pool.Do(context.Background(), upstream.Call{Client: r})
	if err != nil || res.Response.StatusCode != 200 {
		t.Fatalf("models list: %v, %v", res, err)
	}
	res.Release(upstream.Outcome{})
}

func TestHeadersAndAuth(t *testing.T) {
	e := newEnv(t, 1, func(c *upstream.PoolConfig) {
		c.Upstreams[0].Auth = upstream.AuthBearer
		c.Upstreams[0].ExtraHeaders = http.Header{
			"anthropic-beta": {"oauth-2025-04-20"},
			"x-extra":        {"1"},
			"User-Agent":     {"relay/1"},
		}
	})
	c := call(model, "s", true)
	c.Client.Header.Set("Anthropic-Beta", "prompt-caching-2024-07-31,oauth-2025-04-20, context-1m-2025-08-07")
	c.Client.Header.Set("User-Agent", "claude-cli/2.1.0")
	res, _ := e.do(c)
	if res.Response.StatusCode != 200 {
		t.Fatalf("status %d", res.Response.StatusCode)
	}
	got, _ := e.fakes[0].LastRequest()
	h := got.Header
	checks := map[string]string{
		"Authorization":  "Bearer sk-ant-a",
		"X-Api-Key":      "",
		"Anthropic-Beta": "prompt-caching-2024-07-31,oauth-2025-04-20, context-1m-2025-08-07",
		"X-Extra":        "1",
		"User-Agent":     "relay/1",
	}
	for k, want := range checks {
		if v := strings.Join(h.Values(k), "|"); v != want {
			t.Errorf("%s: %q, want %q", k, v, want)
		}
	}
	if got.RawQuery != "beta=true" || got.Path != "/v1/messages" {
		t.Errorf("path %s query %s", got.Path, got.RawQuery)
	}

	// A beta the client did not send is added to its list.
	c = call(model, "s", true)
	c.Client.Header.Set("Anthropic-Beta", "prompt-caching-2024-07-31")
	e.do(c)
	got, _ = e.fakes[0].LastRequest()
	if v := got.Header.Values("Anthropic-Beta"); len(v) != 1 || v[0] != "prompt-caching-2024-07-31,oauth-2025-04-20" {
		t.Errorf("anthropic-beta %q", v)
	}
}

func TestPinnedUpstream(t *testing.T) {
	e := newEnv(t, 2, func(c *upstream.PoolConfig) { c.Upstreams[0].Priority = 1 })
	c := call(model, "", true)
	c.Upstream = "b"
	if res, _ := e.do(c); res.Upstream != "b" {
		t.Fatalf("went to %s", res.Upstream)
	}
	// Pinned calls do not fail over.
	e.fakes[1].SetDefault(upstreamtest.Fault{Status: 529})
	if res, _ := e.do(c); res.Upstream != "b" || res.Response.StatusCode != 529 || res.Attempts != 3 {
		t.Fatalf("%s %d after %d", res.Upstream, res.Response.StatusCode, res.Attempts)
	}
	c.Upstream = "zzz"
	if _, err := e.pool.Do(context.Background(), c); !errors.Is(err, upstream.ErrUnknownUpstream) {
		t.Fatalf("Do = %v", err)
	}
}

// TestNoRequestLostOrDuplicated sends many concurrent calls through two
// faulty upstreams and checks with the fakes' counters that every call got
// exactly one answer and every attempt was sent exactly once.
func TestNoRequestLostOrDuplicated(t *testing.T) {
	e := newEnv(t, 2, func(c *upstream.PoolConfig) {
		c.Now = nil
		c.Retry = upstream.RetryPolicy{Attempts: 10, Base: time.Millisecond, Cap: 4 * time.Millisecond, Deadline: 10 * time.Second}
		c.Cooldown = upstream.CooldownPolicy{Failures: 3, Base: 2 * time.Millisecond, Max: 10 * time.Millisecond}
	})
	for _, s := range e.fakes {
		for i := range 40 {
			switch i % 4 {
			case 0:
				s.Enqueue(upstreamtest.Fault{Status: 529})
			case 1:
				s.Enqueue(upstreamtest.Fault{Drop: true})
			case 2:
				s.Enqueue(upstreamtest.Fault{Status: 429, RetryAfter: time.Millisecond})
			case 3:
				s.Enqueue(upstreamtest.Fault{Status: 503})
			}
		}
	}
	const workers, perWorker = 32, 8
	var (
		mu       sync.Mutex
		attempts int
		wg       sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				c := call(model, fmt.Sprint("session-", w%5), i%2 == 0)
				res, err := e.pool.Do(context.Background(), c)
				if err != nil {
					t.Error(err)
					return
				}
				body, err := io.ReadAll(res.Response.Body)
				res.Release(upstream.Outcome{InputTokens: 1, OutputTokens: 2})
				if err != nil || res.Response.StatusCode != 200 || len(body) == 0 {
					t.Errorf("status %d, %d bytes, %v", res.Response.StatusCode, len(body), err)
				}
				mu.Lock()
				attempts += res.Attempts
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	var requests, messages, faulted, tokens int64
	for _, s := range e.fakes {
		st := s.Stats()
		requests += st.Requests
		messages += st.Messages
		faulted += st.Faulted
	}
	if faulted < 40 {
		t.Errorf("only %d faults met: the test did not exercise retries", faulted)
	}
	if requests != messages+faulted {
		t.Errorf("%d requests, %d messages, %d faulted: some request got neither", requests, messages, faulted)
	}
	for _, s := range e.pool.Status() {
		if s.InFlight != 0 {
			t.Errorf("%s: %d in flight", s.Name, s.InFlight)
		}
		tokens += s.OutputTokens
	}
	if messages != workers*perWorker {
		t.Errorf("the fakes answered %d messages for %d calls", messages, workers*perWorker)
	}
	if requests != int64(attempts) {
		t.Errorf("the fakes saw %d requests; the calls made %d attempts", requests, attempts)
	}
	if tokens != 2*workers*perWorker {
		t.Errorf("output tokens %d", tokens)
	}
}

func TestStatus(t *testing.T) {
	e := newEnv(t, 2, func(c *upstream.PoolConfig) {
		c.Upstreams[0].MaxConcurrent = 7
		c.Upstreams[1].Weight = 2
		c.Upstreams[1].Auth = upstream.AuthBearer
		c.Upstreams[1].Disabled = true
	})
	e.fakes[0].Enqueue(upstreamtest.Fault{Status: 529})
	e.do(call(model, "", true))
	st := e.pool.Status()
	if len(st) != 2 || st[0].Name != "a" || st[1].Name != "b" {
		t.Fatalf("status %+v", st)
	}
	a := st[0]
	if a.Requests != 2 || a.Errors != 1 || a.RecentRequests != 2 || a.RecentErrors != 1 || a.ErrorRate != 0.5 ||
		a.InputTokens != 25 || a.OutputTokens != 15 || a.MaxConcurrent != 7 || a.Weight != 1 ||
		a.LastError != "529 Overloaded" || !a.LastErrorAt.Equal(e.clock.Now()) || a.State != upstream.StateHealthy || a.Priority != 0 ||
		a.BaseURL != e.fakes[0].URL || a.ConsecutiveFailures != 0 {
		t.Fatalf("a: %+v", a)
	}
	if b := st[1]; b.Weight != 2 || b.Auth != upstream.AuthBearer || b.Requests != 0 || b.State != upstream.StateDisabled || b.DisabledReason != "configuration" {
		t.Fatalf("b: %+v", b)
	}
	// The recent window forgets.
	e.clock.Add(2 * time.Minute)
	if a := e.status("a"); a.RecentRequests != 0 || a.ErrorRate != 0 || a.Requests != 2 {
		t.Fatalf("a later: %+v", a)
	}
}

func TestNewPoolValidation(t *testing.T) {
	ok := upstream.Config{Name: "a", BaseURL: "https://api.anthropic.com", Credential: "sk-secret"}
	with := func(f func(*upstream.Config)) []upstream.Config {
		c := ok
		f(&c)
		return []upstream.Config{c}
	}
	tests := []struct {
		name    string
		ups     []upstream.Config
		wantErr string
	}{
		{"ok", []upstream.Config{ok}, ""},
		{"default name is the host", with(func(c *upstream.Config) { c.Name = "" }), ""},
		{"none", nil, "at least one"},
		{"duplicate", []upstream.Config{ok, ok}, "two upstreams"},
		{"same host twice", []upstream.Config{{BaseURL: "https://api.anthropic.com", Credential: "sk"}, {BaseURL: "https://api.anthropic.com", Credential: "sk"}}, "two upstreams"},
		{"bad name", with(func(c *upstream.Config) { c.Name = "a/b" }), "name"},
		{"bad url", with(func(c *upstream.Config) { c.BaseURL = "ftp://x" }), "base URL"},
		{"user info", with(func(c *upstream.Config) { c.BaseURL = "https://u:sk-secret@x" }), "user info"},
		{"no credential", with(func(c *upstream.Config) { c.Credential = "" }), "credential"},
		{"negative weight", with(func(c *upstream.Config) { c.Weight = -1 }), "weight"},
		{"negative concurrency", with(func(c *upstream.Config) { c.MaxConcurrent = -1 }), "max_concurrent"},
		{"bad glob", with(func(c *upstream.Config) { c.Models = []string{"claude-["} }), "glob"},
		{"empty map target", with(func(c *upstream.Config) { c.ModelMap = map[string]string{"a": ""} }), "model_map"},
		{"credential header", with(func(c *upstream.Config) { c.ExtraHeaders = http.Header{"authorization": {"x"}} }), "headers"},
		{"bad auth", with(func(c *upstream.Config) { c.Auth = 7 }), "auth"},
		{"h2c on https", with(func(c *upstream.Config) { c.BaseURL = "https://x"; c.H2C = true }), "h2c"},
		{"h2c on http", with(func(c *upstream.Config) { c.BaseURL = "http://x"; c.H2C = true }), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := upstream.NewPool(upstream.PoolConfig{Upstreams: tt.ups})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				p.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewPool error %v, want one about %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "sk-secret") {
				t.Fatalf("the error shows the credential: %v", err)
			}
		})
	}
}

func TestConfigRedaction(t *testing.T) {
	c := upstream.Config{Name: "a", BaseURL: "https://x", Credential: "sk-ant-secret"}
	var logs syncBuffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "upstream", c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprint(&c), logs.String()} {
		if strings.Contains(s, "sk-ant-secret") {
			t.Fatalf("credential shown: %s", s)
		}
	}
}

func TestAuthSchemeText(t *testing.T) {
	tests := []struct {
		in   string
		want upstream.AuthScheme
		ok   bool
	}{
		{"", upstream.AuthAPIKey, true},
		{"x-api-key", upstream.AuthAPIKey, true},
		{"Bearer", upstream.AuthBearer, true},
		{"basic", 0, false},
	}
	for _, tt := range tests {
		var a upstream.AuthScheme
		err := a.UnmarshalText([]byte(tt.in))
		if (err == nil) != tt.ok || (tt.ok && a != tt.want) {
			t.Errorf("UnmarshalText(%q) = %v, %v", tt.in, a, err)
		}
		if tt.ok {
			b, _ := a.MarshalText()
			var back upstream.AuthScheme
			if back.UnmarshalText(b) != nil || back != a {
				t.Errorf("round trip of %v via %q", a, b)
			}
		}
	}
}

func TestNotRetriedFailureStillCounts(t *testing.T) {
	e := newEnv(t, 2, func(c *upstream.PoolConfig) { c.Upstreams[0].Priority = 1 })
	e.fakes[0].Enqueue(upstreamtest.Fault{Status: 429, RetryAfter: time.Minute, Header: http.Header{"X-Should-Retry": {"false"}}})
	res, _ := e.do(call(model, "", true))
	if res.Upstream != "a" || res.Response.StatusCode != 429 || res.Attempts != 1 {
		t.Fatalf("%s %d after %d attempts", res.Upstream, res.Response.StatusCode, res.Attempts)
	}
	if st := e.status("a"); len(st.ModelCooldowns) != 1 || st.InFlight != 0 || st.Errors != 1 {
		t.Fatalf("a: %+v", st)
	}
	if res, _ := e.do(call(model, "", true)); res.Upstream != "b" {
		t.Fatalf("went to %s during a's cooldown", res.Upstream)
	}
}

func TestCallerDeadlineHandsBackLastAnswer(t *testing.T) {
	e := newEnv(t, 1, realClock)
	e.fakes[0].Enqueue(upstreamtest.Fault{Status: 529, RetryAfter: 2 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	res, err := e.pool.Do(ctx, call(model, "", true))
	if err != nil || res.Response.StatusCode != 529 {
		t.Fatalf("Do = %+v, %v; want the 529 back rather than a wait the caller cannot afford", res, err)
	}
	res.Release(upstream.Outcome{})
}

// TestLone403DoesNotDisable: a 403 that one request provoked (a beta its
// account may not use) must not take the account out when other requests
// succeed in between.
func TestLone403DoesNotDisable(t *testing.T) {
	e := newEnv(t, 1, nil)
	for range 5 {
		e.fakes[0].Enqueue(upstreamtest.Fault{Status: 403}, upstreamtest.Fault{Status: 403})
		res, _ := e.do(call(model, "", true))
		if res.Response.StatusCode != 200 || res.Attempts != 3 {
			t.Fatalf("status %d after %d attempts", res.Response.StatusCode, res.Attempts)
		}
	}
	if st := e.status("a"); st.State != upstream.StateHealthy {
		t.Fatalf("a: %+v", st)
	}
	if !strings.Contains(e.logs.String(), "upstream refused its credential") {
		t.Fatal("strikes not logged")
	}
}

// roundTripFunc is an http.RoundTripper from a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestCancelDuringAttempt(t *testing.T) {
	tests := []struct {
		name   string
		answer bool // the transport answers although the caller is gone
	}{
		{"no answer", false},
		{"answer after cancel", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			closed := make(chan struct{})
			tr := roundTripFunc(func(r *http.Request) (*http.Response, error) {
				cancel()
				if !tt.answer {
					<-r.Context().Done()
					return nil, r.Context().Err()
				}
				return &http.Response{StatusCode: 200, Header: http.Header{}, Body: closeNotifier{closed}, Request: r}, nil
			})
			e := newEnv(t, 1, func(c *upstream.PoolConfig) { c.Transport = tr })
			res, err := e.pool.Do(ctx, call(model, "", true))
			if res != nil || !errors.Is(err, context.Canceled) {
				t.Fatalf("Do = %v, %v", res, err)
			}
			if st := e.status("a"); st.InFlight != 0 || st.State != upstream.StateHealthy || st.Requests != 0 {
				t.Fatalf("status %+v", st)
			}
			if tt.answer {
				select {
				case <-closed:
				default:
					t.Fatal("the answer's body was not closed")
				}
			}
		})
	}
}

type closeNotifier struct{ c chan struct{} }

func (closeNotifier) Read([]byte) (int, error) { return 0, io.EOF }
func (n closeNotifier) Close() error {
	close(n.c)
	return nil
}
