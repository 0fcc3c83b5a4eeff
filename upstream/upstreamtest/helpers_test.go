package upstreamtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// request sends one request to s and returns the answer with its whole
// body; the read error is returned too, for cut connections.
func request(t testing.TB, s *Server, method, path, body string, header ...string) (*http.Response, []byte, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := s.Client().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, b, err
}

// mustRequest is request for answers that must arrive whole.
func mustRequest(t testing.TB, s *Server, method, path, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	res, b, err := request(t, s, method, path, body, header...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return res, b
}

type sseEvent struct {
	name string
	data string
}

// parseSSE splits a stream body into events, strictly: every event is an
// event line, one data line and a blank line, as the real API sends them.
func parseSSE(t testing.TB, body []byte) []sseEvent {
	t.Helper()
	var out []sseEvent
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, ok := strings.CutPrefix(sc.Text(), "event: ")
		if !ok {
			t.Fatalf("want an event line, got %q", sc.Text())
		}
		if !sc.Scan() {
			t.Fatalf("event %s without data", name)
		}
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			t.Fatalf("want a data line, got %q", sc.Text())
		}
		if !json.Valid([]byte(data)) {
			t.Fatalf("event %s: data is no JSON: %s", name, data)
		}
		var typ struct{ Type string }
		_ = json.Unmarshal([]byte(data), &typ)
		if typ.Type != name {
			t.Fatalf("event %s carries type %q", name, typ.Type)
		}
		if !sc.Scan() || sc.Text() != "" {
			t.Fatalf("event %s not ended by a blank line", name)
		}
		out = append(out, sseEvent{name, data})
	}
	return out
}

func names(events []sseEvent) string {
	var n []string
	for _, e := range events {
		n = append(n, e.name)
	}
	return strings.Join(n, ",")
}

// errorOf decodes an Anthropic error body, failing on any other shape.
func errorOf(t testing.TB, body []byte) (errType, message, requestID string) {
	t.Helper()
	var e struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Type != "error" || e.Error.Type == "" {
		t.Fatalf("not an Anthropic error body: %s", body)
	}
	return e.Error.Type, e.Error.Message, e.RequestID
}

func decode(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a JSON object: %v: %s", err, b)
	}
	return m
}

func msgBody(model string, stream bool) string {
	b, _ := json.Marshal(map[string]any{
		"model":      model,
		"max_tokens": 100,
		"messages":   []any{map[string]any{"role": "user", "content": "Hi"}},
		"stream":     stream,
	})
	return string(b)
}
