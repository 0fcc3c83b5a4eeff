package upstreamtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const model = "claude-sonnet-4-5"

func newServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	s := New(cfg)
	t.Cleanup(s.Close)
	return s
}

func TestStreamWireFormat(t *testing.T) {
	s := newServer(t, Config{})
	for _, path := range []string{"/v1/messages", "/v1/messages?beta=true"} {
		res, body := mustRequest(t, s, "POST", path, msgBody(model, true))
		if res.StatusCode != 200 {
			t.Fatalf("%s: status %d: %s", path, res.StatusCode, body)
		}
		for k, want := range map[string]string{
			"Content-Type":              "text/event-stream; charset=utf-8",
			"Cache-Control":             "no-cache",
			"Anthropic-Organization-Id": DefaultOrganizationID,
		} {
			if got := res.Header.Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", path, k, got, want)
			}
		}
		if id := res.Header.Get("Request-Id"); !strings.HasPrefix(id, "req_") {
			t.Errorf("request-id = %q", id)
		}
		if !bytes.Equal(body, s.StreamBody(model)) {
			t.Errorf("%s: body differs from StreamBody:\n%s\nwant\n%s", path, body, s.StreamBody(model))
		}
		events := parseSSE(t, body)
		want := "message_start,content_block_start,ping,content_block_delta,content_block_delta,content_block_delta,content_block_delta,content_block_stop,message_delta,message_stop"
		if got := names(events); got != want {
			t.Errorf("events = %s\nwant     %s", got, want)
		}
	}
}

func TestStreamExactBytes(t *testing.T) {
	// The wire format spelled out once in full, so that a change to it is
	// a deliberate one.
	s := newServer(t, Config{Text: "Hello", Deltas: 1, Usage: &Usage{InputTokens: 25, OutputTokens: 15, ServiceTier: "standard"}})
	_, body := mustRequest(t, s, "POST", "/v1/messages", `{"model":"claude-sonnet-4-5","stream":true}`)
	want := `event: message_start
data: {"type":"message_start","message":{"id":"msg_01UpstreamTestFakeMessage","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type":"ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

event: message_stop
data: {"type":"message_stop"}

`
	if string(body) != want {
		t.Errorf("stream:\n%s\nwant\n%s", body, want)
	}
}

func TestStreamUsage(t *testing.T) {
	u := DefaultUsage()
	tests := []struct {
		name       string
		cfg        Config
		startUsage string
		deltaUsage string
	}{
		{
			name:       "defaults",
			startUsage: `{"input_tokens":25,"cache_creation_input_tokens":30,"cache_read_input_tokens":40,"cache_creation":{"ephemeral_5m_input_tokens":20,"ephemeral_1h_input_tokens":10},"output_tokens":1,"service_tier":"standard"}`,
			deltaUsage: `{"output_tokens":15}`,
		},
		{
			name:       "full delta usage",
			cfg:        Config{FullDeltaUsage: true},
			startUsage: `{"input_tokens":25,"cache_creation_input_tokens":30,"cache_read_input_tokens":40,"cache_creation":{"ephemeral_5m_input_tokens":20,"ephemeral_1h_input_tokens":10},"output_tokens":1,"service_tier":"standard"}`,
			deltaUsage: `{"input_tokens":25,"cache_creation_input_tokens":30,"cache_read_input_tokens":40,"output_tokens":15,"server_tool_use":{"web_search_requests":0,"web_fetch_requests":0}}`,
		},
		{
			name:       "web search shows in delta",
			cfg:        Config{Usage: &Usage{InputTokens: 7, OutputTokens: 9, WebSearchRequests: 2, InferenceGeo: "us"}},
			startUsage: `{"input_tokens":7,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":1,"inference_geo":"us"}`,
			deltaUsage: `{"output_tokens":9,"server_tool_use":{"web_search_requests":2,"web_fetch_requests":0}}`,
		},
		{
			name:       "all zero",
			cfg:        Config{Usage: &Usage{}},
			startUsage: `{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":0}`,
			deltaUsage: `{"output_tokens":0}`,
		},
	}
	_ = u
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.cfg)
			_, body := mustRequest(t, s, "POST", "/v1/messages", msgBody(model, true))
			events := parseSSE(t, body)
			var start struct {
				Message struct {
					Usage json.RawMessage `json:"usage"`
				} `json:"message"`
			}
			var delta struct {
				Usage json.RawMessage `json:"usage"`
			}
			_ = json.Unmarshal([]byte(events[0].data), &start)
			_ = json.Unmarshal([]byte(events[len(events)-2].data), &delta)
			if string(start.Message.Usage) != tt.startUsage {
				t.Errorf("message_start usage = %s\nwant %s", start.Message.Usage, tt.startUsage)
			}
			if string(delta.Usage) != tt.deltaUsage {
				t.Errorf("message_delta usage = %s\nwant %s", delta.Usage, tt.deltaUsage)
			}
		})
	}
}

func TestMessageJSON(t *testing.T) {
	s := newServer(t, Config{Usage: &Usage{InputTokens: 1, OutputTokens: 2, CacheCreationInputTokens: 3, CacheReadInputTokens: 4, CacheCreation5m: 2, CacheCreation1h: 1, WebSearchRequests: 5, WebFetchRequests: 6, ServiceTier: "priority"}})
	for _, body := range []string{msgBody(model, false), `{"model":"claude-sonnet-4-5","messages":[]}`, `{"model":"claude-sonnet-4-5","stream":null}`} {
		res, got := mustRequest(t, s, "POST", "/v1/messages?beta=true", body)
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d, content-type %q", res.StatusCode, res.Header.Get("Content-Type"))
		}
		if res.ContentLength != int64(len(got)) {
			t.Errorf("content-length %d for %d bytes", res.ContentLength, len(got))
		}
		if !bytes.Equal(got, s.MessageBody(model)) {
			t.Errorf("body differs from MessageBody:\n%s\nwant\n%s", got, s.MessageBody(model))
		}
	}
	want := `{"id":"msg_01UpstreamTestFakeMessage","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello! This answer comes from upstreamtest, a fake Claude."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"cache_creation_input_tokens":3,"cache_read_input_tokens":4,"cache_creation":{"ephemeral_5m_input_tokens":2,"ephemeral_1h_input_tokens":1},"output_tokens":2,"server_tool_use":{"web_search_requests":5,"web_fetch_requests":6},"service_tier":"priority"}}`
	if got := string(s.MessageBody(model)); got != want {
		t.Errorf("MessageBody:\n%s\nwant\n%s", got, want)
	}
}

func TestModelEcho(t *testing.T) {
	s := newServer(t, Config{})
	tests := []struct{ raw, want string }{
		{`"claude-opus-4-5"`, "claude-opus-4-5"},
		{`"claude\u002dx"`, "claude-x"},
		{`"a \"quoted\" \\ model"`, `a "quoted" \ model`},
		{`"ünïcödé"`, "ünïcödé"},
		{"\"bad\xffutf8\"", "bad\ufffdutf8"},
	}
	for _, tt := range tests {
		for _, stream := range []bool{false, true} {
			_, body := mustRequest(t, s, "POST", "/v1/messages", fmt.Sprintf(`{"model":%s,"stream":%v}`, tt.raw, stream))
			var got string
			if stream {
				events := parseSSE(t, body)
				var start struct{ Message struct{ Model string } }
				_ = json.Unmarshal([]byte(events[0].data), &start)
				got = start.Message.Model
				if !bytes.Equal(body, s.StreamBody(tt.want)) {
					t.Errorf("model %s: stream differs from StreamBody", tt.raw)
				}
			} else {
				got, _ = decode(t, body)["model"].(string)
				if !bytes.Equal(body, s.MessageBody(tt.want)) {
					t.Errorf("model %s: body differs from MessageBody", tt.raw)
				}
			}
			if got != tt.want {
				t.Errorf("model %s (stream %v) echoed as %q, want %q", tt.raw, stream, got, tt.want)
			}
		}
	}
}

func TestBadRequests(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		path    string
		body    string
		status  int
		errType string
		message string
	}{
		{"not JSON", Config{}, "/v1/messages", `{"model":`, 400, "invalid_request_error", "There was an error parsing the body of your request. Please check that it is valid JSON."},
		{"empty body", Config{}, "/v1/messages", ``, 400, "invalid_request_error", ""},
		{"array", Config{}, "/v1/messages", `[]`, 400, "invalid_request_error", ""},
		{"no model", Config{}, "/v1/messages", `{"messages":[]}`, 400, "invalid_request_error", "model: Field required"},
		{"model not string", Config{}, "/v1/messages", `{"model":["x"]}`, 400, "invalid_request_error", "model: Input should be a valid string"},
		{"stream not bool", Config{}, "/v1/messages", `{"model":"m","stream":1}`, 400, "invalid_request_error", "stream: Input should be a valid boolean"},
		{"unknown model", Config{RejectUnknownModels: true}, "/v1/messages", `{"model":"claude-nope"}`, 404, "not_found_error", "model: claude-nope"},
		{"count_tokens no model", Config{}, "/v1/messages/count_tokens", `{}`, 400, "invalid_request_error", "model: Field required"},
		{"count_tokens unknown model", Config{RejectUnknownModels: true}, "/v1/messages/count_tokens", `{"model":"claude-nope"}`, 404, "not_found_error", "model: claude-nope"},
		{"too large", Config{}, "/v1/messages", `{"model":"m","x":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, 413, "request_too_large", "Request exceeds the maximum allowed number of bytes."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.cfg)
			res, body := mustRequest(t, s, "POST", tt.path, tt.body)
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tt.status, body)
			}
			errType, msg, reqID := errorOf(t, body)
			if errType != tt.errType || (tt.message != "" && msg != tt.message) {
				t.Errorf("error %s %q, want %s %q", errType, msg, tt.errType, tt.message)
			}
			if reqID != res.Header.Get("Request-Id") {
				t.Errorf("request_id %q, header %q", reqID, res.Header.Get("Request-Id"))
			}
			if s.Stats().Messages != 0 {
				t.Errorf("refused request counted as a message")
			}
		})
	}
	t.Run("known model accepted", func(t *testing.T) {
		s := newServer(t, Config{RejectUnknownModels: true, Models: []string{"claude-x"}})
		if res, body := mustRequest(t, s, "POST", "/v1/messages", `{"model":"claude-x"}`); res.StatusCode != 200 {
			t.Errorf("status %d: %s", res.StatusCode, body)
		}
	})
}

func TestAuth(t *testing.T) {
	tests := []struct {
		name    string
		key     string
		header  []string
		status  int
		message string
	}{
		{"no key configured, none sent", "", nil, 200, ""},
		{"no key configured, any sent", "", []string{"X-Api-Key", "whatever"}, 200, ""},
		{"x-api-key", "sk-1", []string{"X-Api-Key", "sk-1"}, 200, ""},
		{"bearer", "sk-1", []string{"Authorization", "Bearer sk-1"}, 200, ""},
		{"both, as apiKeyHelper sends", "sk-1", []string{"X-Api-Key", "sk-1", "Authorization", "Bearer sk-1"}, 200, ""},
		{"wrong x-api-key", "sk-1", []string{"X-Api-Key", "sk-2"}, 401, "invalid x-api-key"},
		{"wrong bearer", "sk-1", []string{"Authorization", "Bearer sk-2"}, 401, "invalid x-api-key"},
		{"basic is no bearer", "sk-1", []string{"Authorization", "Basic sk-1"}, 401, "invalid x-api-key"},
		{"missing", "sk-1", nil, 401, "x-api-key header is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, Config{APIKey: tt.key})
			res, body := mustRequest(t, s, "POST", "/v1/messages", msgBody(model, false), tt.header...)
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tt.status, body)
			}
			if tt.status != 200 {
				if errType, msg, _ := errorOf(t, body); errType != "authentication_error" || msg != tt.message {
					t.Errorf("error %s %q", errType, msg)
				}
			}
		})
	}
}

func TestErrorFaults(t *testing.T) {
	tests := []struct {
		status  int
		errType string
	}{
		{400, "invalid_request_error"}, {401, "authentication_error"}, {402, "billing_error"},
		{403, "permission_error"}, {404, "not_found_error"}, {409, "conflict_error"},
		{413, "request_too_large"}, {418, "invalid_request_error"}, {429, "rate_limit_error"},
		{500, "api_error"}, {503, "api_error"}, {504, "timeout_error"}, {529, "overloaded_error"},
	}
	s := newServer(t, Config{})
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			s.Enqueue(Fault{Status: tt.status})
			res, body := mustRequest(t, s, "POST", "/v1/messages", msgBody(model, true))
			if res.StatusCode != tt.status || res.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d %q", res.StatusCode, res.Header.Get("Content-Type"))
			}
			errType, msg, reqID := errorOf(t, body)
			if errType != tt.errType || msg != defaultMessage(tt.errType) {
				t.Errorf("error %s %q, want %s", errType, msg, tt.errType)
			}
			if reqID == "" || reqID != res.Header.Get("Request-Id") {
				t.Errorf("request_id %q, header %q", reqID, res.Header.Get("Request-Id"))
			}
			if res.Header.Get("Anthropic-Organization-Id") == "" {
				t.Error("no anthropic-organization-id on an error")
			}
		})
	}
	t.Run("custom", func(t *testing.T) {
		s.Enqueue(Fault{
			Status: 429, ErrorType: "rate_limit_error", Message: "slow down \"now\"",
			RetryAfter: 1500 * time.Millisecond,
			Header:     http.Header{"x-should-retry": {"true"}},
		})
		res, body := mustRequest(t, s, "POST", "/v1/messages", msgBody(model, false))
		if errType, msg, _ := errorOf(t, body); errType != "rate_limit_error" || msg != `slow down "now"` {
			t.Errorf("error %s %q", errType, msg)
		}
		for k, want := range map[string]string{"Retry-After": "2", "Retry-After-Ms": "1500", "X-Should-Retry": "true"} {
			if got := res.Header.Get(k); got != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
	})
	t.Run("raw error body passes as given", func(t *testing.T) {
		raw := []byte(`{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}`)
		s.Enqueue(Fault{Status: 400, Body: raw, ContentType: "application/json"})
		res, body := mustRequest(t, s, "POST", "/v1/messages", msgBody(model, false))
		if res.StatusCode != 400 || !bytes.Equal(body, raw) {
			t.Errorf("status %d body %s", res.StatusCode, body)
		}
	})
}

func TestFaultQueue(t *testing.T) {
	s := newServer(t, Config{Faults: []Fault{ErrorFault(500, "first")}, Default: ErrorFault(529, "")})
	s.Enqueue(ErrorFault(429, "second"), Fault{}, ErrorFault(401, "fourth"))
	if n := s.Pending(); n != 4 {
		t.Fatalf("Pending = %d", n)
	}
	want := []int{500, 429, 200, 401, 529, 529}
	for i, w := range want {
		res, _ := mustRequest(t, s, "POST", "/v1/messages", msgBody(model, false))
		if res.StatusCode != w {
			t.Errorf("request %d: status %d, want %d", i, res.StatusCode, w)
		}
	}
	if st := s.Stats(); st.Faulted != 5 || st.Messages != 1 || st.Requests != 6 {
		t.Errorf("stats %+v", st)
	}
	s.SetDefault(Fault{})
	if res, _ := mustRequest(t, s, "POST", "/v1/messages", msgBody(model, false)); res.StatusCode != 200 {
		t.Errorf("zero default still faults: %d", res.StatusCode)
	}
	s.Enqueue(ErrorFault(500, ""), ErrorFault(500, ""))
	s.SetDefault(ErrorFault(503, ""))
	s.ClearFaults()
	if res, _ := mustRequest(t, s, "POST", "/v1/messages", msgBody(model, false)); res.StatusCode != 200 || s.Pending() != 0 {
		t.Errorf("ClearFaults left faults: %d, pending %d", res.StatusCode, s.Pending())
	}
}

func TestFaultIsCopied(t *testing.T) {
	s := newServer(t, Config{})
	f := Fault{Status: 200, Body: []byte("abc"), ContentType: "text/plain", Header: http.Header{"X-A": {"1"}}}
	s.Enqueue(f)
	f.Body[0] = 'z'
	f.Header.Set("X-A", "2")
	res, body := mustRequest(t, s, "GET", "/v1/models", "")
	if string(body) != "abc" || res.Header.Get("X-A") != "1" {
		t.Errorf("fault changed after Enqueue: %s %q", body, res.Header.Get("X-A"))
	}
}

// readEvents reads a stream event by event, returning those read whole and
// the error that ended the reading (io.EOF for a clean end).
func readEvents(t testing.TB, r io.Reader) ([]sseEvent, error) {
	t.Helper()
	br := bufio.NewReader(r)
	var out []sseEvent
	for {
		var lines []string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				if err == io.EOF && line == "" && len(lines) == 0 {
					return out, io.EOF
				}
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return out, err
			}
			if line == "\n" {
				break
			}
			lines = append(lines, strings.TrimSuffix(line, "\n"))
		}
		if len(lines) != 2 {
			t.Fatalf("event of %d lines: %q", len(lines), lines)
		}
		out = append(out, sseEvent{strings.TrimPrefix(lines[0], "event: "), strings.TrimPrefix(lines[1], "data: ")})
	}
}

func streamRequest(t testing.TB, s *Server) *http.Response {
	t.Helper()
	res, err := s.Client().Post(s.URL+"/v1/messages", "application/json", strings.NewReader(msgBody(model, true)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func TestStreamFaults(t *testing.T) {
	const all = 10 // events of a default stream
	tests := []struct {
		name    string
		fault   Fault
		events  int  // whole events before the end
		errLast bool // the last of them is an error event
		cut     bool // the connection is cut
	}{
		{name: "cut after 3", fault: Fault{CutAfter: 3}, events: 3, cut: true},
		{name: "cut after headers", fault: Fault{CutAfter: AfterHeaders}, events: 0, cut: true},
		{name: "cut after the last", fault: Fault{CutAfter: all}, events: all, cut: true},
		{name: "cut beyond the end", fault: Fault{CutAfter: 99}, events: all},
		{name: "error after 4", fault: Fault{ErrorAfter: 4}, events: 5, errLast: true},
		{name: "error after headers", fault: Fault{ErrorAfter: AfterHeaders}, events: 1, errLast: true},
		{name: "error before cut", fault: Fault{ErrorAfter: 2, CutAfter: 5}, events: 3, errLast: true},
		{name: "cut before error", fault: Fault{ErrorAfter: 5, CutAfter: 2}, events: 2, cut: true},
	}
	s := newServer(t, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.Enqueue(tt.fault)
			res := streamRequest(t, s)
			if res.StatusCode != 200 {
				t.Fatalf("status %d", res.StatusCode)
			}
			events, err := readEvents(t, res.Body)
			if tt.cut != (err != io.EOF) {
				t.Errorf("read ended with %v, want cut = %v", err, tt.cut)
			}
			if len(events) != tt.events {
				t.Fatalf("%d events, want %d: %s", len(events), tt.events, names(events))
			}
			if tt.errLast {
				last := events[len(events)-1]
				if last.name != "error" || last.data != `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}` {
					t.Errorf("last event %s %s", last.name, last.data)
				}
			}
		})
	}
	t.Run("custom error event", func(t *testing.T) {
		s.Enqueue(Fault{ErrorAfter: 1, ErrorType: "api_error", Message: "Internal server error"})
		events, _ := readEvents(t, streamRequest(t, s).Body)
		if got := events[len(events)-1].data; got != `{"type":"error","error":{"type":"api_error","message":"Internal server error"}}` {
			t.Errorf("error event %s", got)
		}
	})
	t.Run("JSON cut after headers", func(t *testing.T) {
		s.Enqueue(Fault{CutAfter: AfterHeaders})
		res, body, err := request(t, s, "POST", "/v1/messages", msgBody(model, false))
		if err == nil || res.StatusCode != 200 || len(body) != 0 {
			t.Errorf("status %d, %d bytes, err %v", res.StatusCode, len(body), err)
		}
	})
	t.Run("JSON cut", func(t *testing.T) {
		s.Enqueue(Fault{CutAfter: 1})
		res, body, err := request(t, s, "POST", "/v1/messages", msgBody(model, false))
		if err == nil || res.StatusCode != 200 || len(body) == 0 || len(body) >= len(s.MessageBody(model)) {
			t.Errorf("status %d, %d bytes, err %v", res.StatusCode, len(body), err)
		}
	})
}

func TestOmitUsage(t *testing.T) {
	s := newServer(t, Config{})
	s.Enqueue(Fault{OmitUsage: true}, Fault{OmitUsage: true})
	_, stream := mustRequest(t, s, "POST", "/v1/messages", msgBody(model, true))
	_, msg := mustRequest(t, s, "POST", "/v1/messages", msgBody(model, false))
	if bytes.Contains(stream, []byte("usage")) || bytes.Contains(msg, []byte("usage")) {
		t.Errorf("usage left in:\n%s\n%s", stream, msg)
	}
	if got := names(parseSSE(t, stream)); !strings.HasSuffix(got, "message_delta,message_stop") {
		t.Errorf("events %s", got)
	}
	_ = decode(t, msg)
}

func TestRawFaults(t *testing.T) {
	tests := []struct {
		name   string
		fault  Fault
		stream bool
		status int
		ctype  string
	}{
		{"html", HTMLFault(), false, 200, "text/html; charset=utf-8"},
		{"html 502", func() Fault { f := HTMLFault(); f.Status = 502; return f }(), true, 502, "text/html; charset=utf-8"},
		{"garbage as JSON", GarbageFault(), false, 200, "application/json"},
		{"garbage as SSE", GarbageFault(), true, 200, "text/event-stream; charset=utf-8"},
	}
	s := newServer(t, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.Enqueue(tt.fault)
			res, body := mustRequest(t, s, "POST", "/v1/messages", msgBody(model, tt.stream))
			if res.StatusCode != tt.status || res.Header.Get("Content-Type") != tt.ctype || !bytes.Equal(body, tt.fault.Body) {
				t.Errorf("status %d %q: %q", res.StatusCode, res.Header.Get("Content-Type"), body)
			}
		})
	}
}

func TestDrop(t *testing.T) {
	s := newServer(t, Config{})
	s.Enqueue(Fault{Drop: true})
	if res, _, err := request(t, s, "POST", "/v1/messages", msgBody(model, false)); err == nil {
		t.Fatalf("dropped request answered %d", res.StatusCode)
	}
	if res, _ := mustRequest(t, s, "POST", "/v1/messages", msgBody(model, false)); res.StatusCode != 200 {
		t.Errorf("next request: %d", res.StatusCode)
	}
}

func TestLatency(t *testing.T) {
	s := newServer(t, Config{Latency: 50 * time.Millisecond})
	start := time.Now()
	mustRequest(t, s, "GET", "/v1/models", "")
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("answered after %v", d)
	}
	s.Enqueue(Fault{Latency: 150 * time.Millisecond})
	start = time.Now()
	mustRequest(t, s, "GET", "/v1/models", "")
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("fault latency: answered after %v", d)
	}
}

func TestEventsAreFlushedOneByOne(t *testing.T) {
	// With an hour between events, the first event can only arrive if it
	// was flushed on its own; Close then cuts the stream short.
	s := New(Config{EventDelay: time.Hour})
	res := streamRequest(t, s)
	br := bufio.NewReader(res.Body)
	got := make(chan string, 1)
	go func() {
		line, _ := br.ReadString('\n')
		got <- line
	}()
	select {
	case line := <-got:
		if line != "event: message_start\n" {
			t.Errorf("first line %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("first event not flushed")
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waits for the event delay")
	}
}

func TestCloseEndsLatency(t *testing.T) {
	s := New(Config{})
	s.SetDefault(Fault{Latency: time.Hour})
	errc := make(chan error, 1)
	go func() {
		_, _, err := request(t, s, "GET", "/v1/models", "")
		errc <- err
	}()
	for s.Count() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	if err := <-errc; err == nil {
		t.Error("request during Close was answered")
	}
}

func TestDeltasAndPings(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		deltas int
		pings  int
	}{
		{"defaults", Config{}, DefaultDeltas, 1},
		{"one delta", Config{Deltas: 1}, 1, 1},
		{"more deltas than runes", Config{Text: "héé", Deltas: 10}, 3, 1},
		{"ping every delta", Config{Deltas: 5, PingEvery: 1}, 5, 6},
		{"ping every 2", Config{Deltas: 5, PingEvery: 2}, 5, 3},
		{"no ping", Config{PingEvery: -1}, DefaultDeltas, 0},
		{"long unicode text", Config{Text: strings.Repeat("日本語のテキスト ", 40), Deltas: 7}, 7, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.cfg)
			_, body := mustRequest(t, s, "POST", "/v1/messages", msgBody(model, true))
			var text strings.Builder
			deltas, pings := 0, 0
			for _, ev := range parseSSE(t, body) {
				switch ev.name {
				case "ping":
					pings++
				case "content_block_delta":
					deltas++
					var d struct{ Delta struct{ Type, Text string } }
					_ = json.Unmarshal([]byte(ev.data), &d)
					if d.Delta.Type != "text_delta" || d.Delta.Text == "" {
						t.Errorf("delta %s", ev.data)
					}
					text.WriteString(d.Delta.Text)
				}
			}
			if deltas != tt.deltas || pings != tt.pings {
				t.Errorf("%d deltas, %d pings; want %d, %d", deltas, pings, tt.deltas, tt.pings)
			}
			if text.String() != s.Text() {
				t.Errorf("text %q, want %q", text.String(), s.Text())
			}
		})
	}
}

func TestSplitText(t *testing.T) {
	for _, tt := range []struct {
		s    string
		n    int
		want []string
	}{
		{"abcdefghij", 4, []string{"ab", "cde", "fg", "hij"}},
		{"abc", 1, []string{"abc"}},
		{"abc", 0, []string{"abc"}},
		{"ab", 5, []string{"a", "b"}},
		{"äöü", 2, []string{"ä", "öü"}},
	} {
		if got := splitText(tt.s, tt.n); fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("splitText(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"b\s`, "\n\r\t\x00\x1f", "<&>", "ünï 日本", "bad\xff\xfe", "\u2028"} {
		got := appendString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Errorf("%q: %s is no JSON string: %v", s, got, err)
			continue
		}
		want, _ := json.Marshal(s) // encoding/json's reading of s, U+FFFD for bad bytes
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Errorf("%q round-trips to %q, want %q", s, back, wantBack)
		}
	}
	if got := string(appendString(nil, "<&>")); got != `"<&>"` {
		t.Errorf("HTML characters escaped: %s", got)
	}
}

func TestCountTokens(t *testing.T) {
	body := `{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"Hello there, how are you?"}]}`
	for _, tt := range []struct {
		cfg  Config
		want int64
	}{
		{Config{}, int64(len(body) / 4)},
		{Config{CountTokens: 1234}, 1234},
	} {
		s := newServer(t, tt.cfg)
		res, got := mustRequest(t, s, "POST", "/v1/messages/count_tokens?beta=true", body)
		if res.StatusCode != 200 {
			t.Fatalf("status %d: %s", res.StatusCode, got)
		}
		if want := fmt.Sprintf(`{"input_tokens":%d}`, tt.want); string(got) != want {
			t.Errorf("got %s, want %s", got, want)
		}
		if s.Stats().Messages != 0 {
			t.Error("count_tokens counted as a message")
		}
	}
}

func TestModels(t *testing.T) {
	s := newServer(t, Config{Models: []string{"claude-a-1", "claude-b-2-20250101", "claude-c-3-5"}})
	type list struct {
		Data []struct {
			Type        string `json:"type"`
			ID          string `json:"id"`
			DisplayName string `json:"display_name"`
			CreatedAt   string `json:"created_at"`
		}
		HasMore bool    `json:"has_more"`
		FirstID *string `json:"first_id"`
		LastID  *string `json:"last_id"`
	}
	tests := []struct {
		query   string
		ids     string
		hasMore bool
	}{
		{"", "claude-a-1,claude-b-2-20250101,claude-c-3-5", false},
		{"?beta=true&limit=2", "claude-a-1,claude-b-2-20250101", true},
		{"?limit=2&after_id=claude-b-2-20250101", "claude-c-3-5", false},
		{"?limit=1&after_id=claude-a-1", "claude-b-2-20250101", true},
		{"?limit=1&before_id=claude-c-3-5", "claude-b-2-20250101", true},
		{"?after_id=claude-c-3-5", "", false},
		{"?after_id=unknown", "", false},
	}
	for _, tt := range tests {
		res, body := mustRequest(t, s, "GET", "/v1/models"+tt.query, "")
		if res.StatusCode != 200 {
			t.Fatalf("%s: status %d", tt.query, res.StatusCode)
		}
		var l list
		if err := json.Unmarshal(body, &l); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range l.Data {
			if d.Type != "model" || d.DisplayName == "" || d.CreatedAt == "" {
				t.Errorf("model object %+v", d)
			}
			ids = append(ids, d.ID)
		}
		if strings.Join(ids, ",") != tt.ids || l.HasMore != tt.hasMore {
			t.Errorf("%s: %v has_more %v", tt.query, ids, l.HasMore)
		}
		if len(ids) > 0 && (l.FirstID == nil || *l.FirstID != ids[0] || *l.LastID != ids[len(ids)-1]) {
			t.Errorf("%s: first_id/last_id %s", tt.query, body)
		}
		if len(ids) == 0 && (l.FirstID != nil || l.LastID != nil) {
			t.Errorf("%s: empty page with ids: %s", tt.query, body)
		}
	}
	res, body := mustRequest(t, s, "GET", "/v1/models?limit=0", "")
	if res.StatusCode != 400 {
		t.Errorf("limit=0: %d %s", res.StatusCode, body)
	}
	res, body = mustRequest(t, s, "GET", "/v1/models/claude-b-2-20250101?beta=true", "")
	if want := `{"type":"model","id":"claude-b-2-20250101","display_name":"Claude B 2","created_at":"2025-01-01T00:00:00Z"}`; res.StatusCode != 200 || string(body) != want {
		t.Errorf("get model: %d %s", res.StatusCode, body)
	}
	res, body = mustRequest(t, s, "GET", "/v1/models/claude-nope", "")
	if errType, msg, _ := errorOf(t, body); res.StatusCode != 404 || errType != "not_found_error" || msg != "model: claude-nope" {
		t.Errorf("unknown model: %d %s", res.StatusCode, body)
	}
}

func TestDisplayName(t *testing.T) {
	for id, want := range map[string]string{
		"claude-sonnet-4-5-20250929": "Claude Sonnet 4.5",
		"claude-opus-4-1":            "Claude Opus 4.1",
		"claude-3-5-haiku-20241022":  "Claude 3.5 Haiku",
		"claude-sonnet-4-6":          "Claude Sonnet 4.6",
		"gpt":                        "Gpt",
	} {
		if got := displayName(id); got != want {
			t.Errorf("displayName(%q) = %q, want %q", id, got, want)
		}
	}
	if got := createdAt("claude-sonnet-4-5-20250929"); got != "2025-09-29T00:00:00Z" {
		t.Errorf("createdAt = %q", got)
	}
}

func TestBatches(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	s := newServer(t, Config{Now: func() time.Time { return now }})
	res, body := mustRequest(t, s, "POST", "/v1/messages/batches",
		`{"requests":[{"custom_id":"a","params":{"model":"claude-x","max_tokens":5,"messages":[]}},{"custom_id":"b","params":{"model":"claude-y","max_tokens":5,"messages":[]}}]}`)
	if res.StatusCode != 200 {
		t.Fatalf("create: %d %s", res.StatusCode, body)
	}
	created := decode(t, body)
	id, _ := created["id"].(string)
	if !strings.HasPrefix(id, "msgbatch_") || created["processing_status"] != "in_progress" || created["results_url"] != nil || created["created_at"] != "2025-06-01T12:00:00Z" {
		t.Errorf("created batch %s", body)
	}

	// The relay forwards with its own upstream Host; results_url is built from it.
	req, _ := http.NewRequest("GET", s.URL+"/v1/messages/batches/"+id, nil)
	req.Host = "upstream.example:8443"
	res, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	got := decode(t, body)
	if got["processing_status"] != "ended" || got["results_url"] != "http://upstream.example:8443/v1/messages/batches/"+id+"/results" {
		t.Errorf("batch %s", body)
	}
	if counts, _ := got["request_counts"].(map[string]any); counts["succeeded"] != 2.0 {
		t.Errorf("request_counts %v", counts)
	}

	_, body = mustRequest(t, s, "GET", "/v1/messages/batches/"+id+"/results", "")
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("results %q", body)
	}
	for i, want := range []string{"a", "b"} {
		var r struct {
			CustomID string `json:"custom_id"`
			Result   struct {
				Type    string
				Message json.RawMessage
			}
		}
		if err := json.Unmarshal([]byte(lines[i]), &r); err != nil || r.CustomID != want || r.Result.Type != "succeeded" {
			t.Errorf("result line %s", lines[i])
		}
		if m := []string{"claude-x", "claude-y"}[i]; !bytes.Equal(r.Result.Message, s.MessageBody(m)) {
			t.Errorf("result message %s", r.Result.Message)
		}
	}

	_, body = mustRequest(t, s, "GET", "/v1/messages/batches", "")
	if l := decode(t, body); l["first_id"] != id || len(l["data"].([]any)) != 1 {
		t.Errorf("list %s", body)
	}
	for _, tt := range []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/v1/messages/batches/msgbatch_nope", "", 404},
		{"GET", "/v1/messages/batches/" + id + "/nope", "", 404},
		{"POST", "/v1/messages/batches", `{"requests":[]}`, 400},
		{"POST", "/v1/messages/batches", `nope`, 400},
		{"DELETE", "/v1/messages/batches", "", 405},
	} {
		res, body := mustRequest(t, s, tt.method, tt.path, tt.body)
		if res.StatusCode != tt.status {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.path, res.StatusCode, tt.status)
		}
		errorOf(t, body)
	}
}

func TestFiles(t *testing.T) {
	s := newServer(t, Config{})
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("file", "notes.txt")
	_, _ = fw.Write([]byte("some notes"))
	_ = mw.Close()
	res, body := mustRequest(t, s, "POST", "/v1/files", buf.String(), "Content-Type", mw.FormDataContentType(), "anthropic-beta", "files-api-2025-04-14")
	if res.StatusCode != 200 {
		t.Fatalf("upload: %d %s", res.StatusCode, body)
	}
	meta := decode(t, body)
	id, _ := meta["id"].(string)
	if !strings.HasPrefix(id, "file_") || meta["filename"] != "notes.txt" || meta["size_bytes"] != 10.0 || meta["type"] != "file" || meta["mime_type"] != "application/octet-stream" {
		t.Errorf("meta %s", body)
	}
	if _, got := mustRequest(t, s, "GET", "/v1/files/"+id, ""); !bytes.Equal(got, body) {
		t.Errorf("metadata %s", got)
	}
	if _, got := mustRequest(t, s, "GET", "/v1/files/"+id+"/content", ""); string(got) != "some notes" {
		t.Errorf("content %q", got)
	}
	if _, got := mustRequest(t, s, "GET", "/v1/files", ""); decode(t, got)["last_id"] != id {
		t.Errorf("list %s", got)
	}
	if res, got := mustRequest(t, s, "DELETE", "/v1/files/"+id, ""); res.StatusCode != 200 || decode(t, got)["type"] != "file_deleted" {
		t.Errorf("delete %d %s", res.StatusCode, got)
	}
	if res, _ := mustRequest(t, s, "GET", "/v1/files/"+id, ""); res.StatusCode != 404 {
		t.Errorf("deleted file: %d", res.StatusCode)
	}
	if res, _ := mustRequest(t, s, "POST", "/v1/files", "x", "Content-Type", "text/plain"); res.StatusCode != 400 {
		t.Errorf("non-multipart upload: %d", res.StatusCode)
	}
}

func TestRouting(t *testing.T) {
	s := newServer(t, Config{})
	for _, tt := range []struct {
		method, path string
		status       int
		errType      string
	}{
		{"GET", "/", 404, "not_found_error"},
		{"HEAD", "/", 404, ""},
		{"POST", "/v1/complete", 404, "not_found_error"},
		{"POST", "/v1/messages/", 404, "not_found_error"},
		{"GET", "/v1/messages", 405, "invalid_request_error"},
		{"POST", "/v1/models", 405, "invalid_request_error"},
		{"GET", "/v1/messages/count_tokens", 405, "invalid_request_error"},
	} {
		res, body := mustRequest(t, s, tt.method, tt.path, "")
		if res.StatusCode != tt.status || res.Header.Get("Request-Id") == "" {
			t.Errorf("%s %s: %d, request-id %q", tt.method, tt.path, res.StatusCode, res.Header.Get("Request-Id"))
		}
		if tt.errType != "" {
			if errType, _, _ := errorOf(t, body); errType != tt.errType {
				t.Errorf("%s %s: %s", tt.method, tt.path, errType)
			}
		}
	}
}

func TestRecording(t *testing.T) {
	s := newServer(t, Config{})
	body := msgBody(model, false)
	mustRequest(t, s, "POST", "/v1/messages?beta=true", body, "Anthropic-Beta", "a,b", "X-Api-Key", "k")
	mustRequest(t, s, "GET", "/v1/models", "")
	reqs := s.Requests()
	if len(reqs) != 2 || s.Count() != 2 {
		t.Fatalf("%d requests recorded, Count %d", len(reqs), s.Count())
	}
	r := reqs[0]
	if r.Method != "POST" || r.Path != "/v1/messages" || r.RawQuery != "beta=true" || string(r.Body) != body ||
		r.Header.Get("Anthropic-Beta") != "a,b" || r.Header.Get("X-Api-Key") != "k" || !strings.HasPrefix(s.URL, "http://"+r.Host) {
		t.Errorf("recorded %+v", r)
	}
	if last, ok := s.LastRequest(); !ok || last.Path != "/v1/models" || len(last.Body) != 0 {
		t.Errorf("LastRequest %+v %v", last, ok)
	}
	s.Reset()
	if len(s.Requests()) != 0 || s.Count() != 0 || s.Stats() != (Stats{}) {
		t.Errorf("after Reset: %d requests, %+v", len(s.Requests()), s.Stats())
	}
	if _, ok := s.LastRequest(); ok {
		t.Error("LastRequest after Reset")
	}

	q := newServer(t, Config{DontRecord: true})
	mustRequest(t, q, "POST", "/v1/messages", body)
	if len(q.Requests()) != 0 || q.Count() != 1 || q.Stats().Messages != 1 {
		t.Errorf("DontRecord: %d recorded, %+v", len(q.Requests()), q.Stats())
	}
}

func TestHeaders(t *testing.T) {
	s := newServer(t, Config{
		OrganizationID: "org-1",
		Header:         http.Header{"anthropic-ratelimit-requests-limit": {"50"}},
	})
	seen := map[string]bool{}
	for range 3 {
		res, _ := mustRequest(t, s, "POST", "/v1/messages", msgBody(model, false))
		if res.Header.Get("Anthropic-Organization-Id") != "org-1" || res.Header.Get("Anthropic-Ratelimit-Requests-Limit") != "50" {
			t.Errorf("headers %v", res.Header)
		}
		if v := res.Header.Values("Anthropic-Ratelimit-Requests-Limit"); len(v) != 1 {
			t.Errorf("ratelimit header values %q", v)
		}
		seen[res.Header.Get("Request-Id")] = true
	}
	if len(seen) != 3 {
		t.Errorf("request ids not unique: %v", seen)
	}
}

func TestHandlerOnOwnListener(t *testing.T) {
	s := NewUnstarted(Config{APIKey: "k"})
	defer s.Close()
	if s.URL != "" {
		t.Fatalf("unstarted server has URL %q", s.URL)
	}
	mux := http.NewServeMux()
	mux.Handle("/", s.Handler())
	ts := httptest.NewServer(mux)
	defer ts.Close()
	req, _ := http.NewRequest("POST", ts.URL+"/v1/messages", strings.NewReader(msgBody(model, true)))
	req.Header.Set("Authorization", "Bearer k")
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if !bytes.Equal(body, s.StreamBody(model)) {
		t.Errorf("stream through own listener:\n%s", body)
	}
}

// hideFlush is middleware whose ResponseWriter cannot flush.
type hideFlush struct{ w http.ResponseWriter }

func (h hideFlush) Header() http.Header         { return h.w.Header() }
func (h hideFlush) Write(b []byte) (int, error) { return h.w.Write(b) }
func (h hideFlush) WriteHeader(code int)        { h.w.WriteHeader(code) }

func TestStreamWithoutFlusher(t *testing.T) {
	s := NewUnstarted(Config{})
	defer s.Close()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Handler().ServeHTTP(hideFlush{w}, r)
	}))
	defer ts.Close()
	res, err := ts.Client().Post(ts.URL+"/v1/messages", "application/json", strings.NewReader(msgBody(model, true)))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if !bytes.Equal(body, s.StreamBody(model)) {
		t.Errorf("stream without a flusher:\n%s", body)
	}
}

func TestStartTLS(t *testing.T) {
	s := NewUnstarted(Config{})
	s.StartTLS()
	defer s.Close()
	if !strings.HasPrefix(s.URL, "https://") {
		t.Fatalf("URL %q", s.URL)
	}
	mustRequest(t, s, "POST", "/v1/messages/batches", `{"requests":[{"custom_id":"a","params":{"model":"m"}}]}`)
	_, body := mustRequest(t, s, "GET", "/v1/messages/batches", "")
	if !strings.Contains(string(body), `"results_url":"https://`) {
		t.Errorf("results_url not https: %s", body)
	}
	defer func() {
		if recover() == nil {
			t.Error("second Start did not panic")
		}
	}()
	s.Start()
}

func TestConcurrentUse(t *testing.T) {
	s := newServer(t, Config{EventDelay: time.Microsecond})
	const workers, each = 16, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				switch (w + i) % 5 {
				case 0:
					s.Enqueue(ErrorFault(529, ""))
				case 1:
					s.SetDefault(Fault{OmitUsage: i%2 == 0})
				case 2:
					_ = s.Requests()
					_ = s.Stats()
				}
				res, body, err := request(t, s, "POST", "/v1/messages", msgBody(model, i%2 == 0))
				if err != nil {
					t.Error(err)
					return
				}
				if res.StatusCode != 200 && res.StatusCode != 529 {
					t.Errorf("status %d: %s", res.StatusCode, body)
				}
			}
		}()
	}
	wg.Wait()
	s.ClearFaults()
	if s.Count() != workers*each || len(s.Requests()) != workers*each {
		t.Errorf("Count %d, %d recorded", s.Count(), len(s.Requests()))
	}
}

func TestExpectedUsage(t *testing.T) {
	if got := newServer(t, Config{}).ExpectedUsage(); got != DefaultUsage() {
		t.Errorf("default ExpectedUsage %+v", got)
	}
	u := Usage{InputTokens: 3}
	s := newServer(t, Config{Usage: &u})
	u.InputTokens = 4 // the server keeps its own copy
	if got := s.ExpectedUsage(); got.InputTokens != 3 {
		t.Errorf("ExpectedUsage %+v", got)
	}
}
