package usage

import (
	"encoding/json"
	"errors"
	"io"

	"github.com/relaystation/relay/internal/jsonsyntax"
	"github.com/relaystation/relay/internal/sse"
)

// maxEventData is the part of one SSE event's data the extractor keeps for
// parsing. Real events are far smaller (message_start is the largest, a few
// hundred bytes); the cap only stops a broken or hostile upstream from
// growing the relay's memory.
const maxEventData = 1 << 20

// StreamExtractor reads usage out of a Messages API SSE stream. Write it the
// raw bytes exactly as they are forwarded to the client, in any pieces; it
// keeps no more than one event's data (at most 1 MiB) and never fails, so it
// can sit behind an io.MultiWriter or a tee without ever disturbing the
// stream.
//
// The zero value is ready to use. A StreamExtractor is not safe for
// concurrent use: read its results after the last Write has returned.
type StreamExtractor struct {
	parser sse.Parser

	usage           Usage
	model           string
	messageID       string
	stopReason      string
	errType         string
	errMessage      string
	started         bool
	sawUsage        bool
	done            bool
	outputFromDelta bool
	deltaBytes      int64
	events          int
}

var _ io.Writer = (*StreamExtractor)(nil)

// Write consumes a piece of the stream. It always returns len(p), nil and
// does not keep p.
func (x *StreamExtractor) Write(p []byte) (int, error) {
	n := len(p)
	if x.parser.MaxData == 0 {
		x.parser.MaxData = maxEventData
	}
	for len(p) > 0 {
		k, ev, ok := x.parser.Parse(p)
		p = p[k:]
		if ok {
			x.handle(ev)
		}
	}
	return n, nil
}

// Usage returns the counts seen so far. After message_delta they are final.
func (x *StreamExtractor) Usage() Usage { return x.usage }

// Model returns message_start.message.model: the model that answered.
func (x *StreamExtractor) Model() string { return x.model }

// MessageID returns message_start.message.id.
func (x *StreamExtractor) MessageID() string { return x.messageID }

// StopReason returns the last stop_reason seen (end_turn, max_tokens,
// tool_use, …), or "" when the stream stopped before message_delta.
func (x *StreamExtractor) StopReason() string { return x.stopReason }

// ErrorType returns the error.type of a mid-stream error event, such as
// "overloaded_error", or "" when there was none.
func (x *StreamExtractor) ErrorType() string { return x.errType }

// ErrorMessage returns the error.message of a mid-stream error event.
func (x *StreamExtractor) ErrorMessage() string { return x.errMessage }

// Started reports whether message_start was seen.
func (x *StreamExtractor) Started() bool { return x.started }

// SawUsage reports whether any usage object was seen.
func (x *StreamExtractor) SawUsage() bool { return x.sawUsage }

// Done reports whether message_stop was seen: the stream is complete.
func (x *StreamExtractor) Done() bool { return x.done }

// OutputFromDelta reports whether a message_delta carried output_tokens.
// When it is false, Usage().OutputTokens is only what message_start said
// (usually 1), and DeltaBytes is the better basis for an estimate.
func (x *StreamExtractor) OutputFromDelta() bool { return x.outputFromDelta }

// DeltaBytes returns the total decoded length in bytes of the text_delta,
// thinking_delta and input_json_delta payloads seen: what the model wrote,
// for estimating output tokens of a stream cut before message_delta. A delta
// event too large to parse counts with its raw size.
func (x *StreamExtractor) DeltaBytes() int64 { return x.deltaBytes }

// Events returns the number of events seen (events without data excluded).
func (x *StreamExtractor) Events() int { return x.events }

// Event kinds the extractor cares about.
const (
	evOther = iota
	evPing
	evMessageStart
	evContentBlockDelta
	evMessageDelta
	evMessageStop
	evError
)

func kindOf(name []byte) int {
	switch string(name) { // no allocation: the compiler compares in place
	case "content_block_delta":
		return evContentBlockDelta
	case "ping":
		return evPing
	case "message_start":
		return evMessageStart
	case "message_delta":
		return evMessageDelta
	case "message_stop":
		return evMessageStop
	case "error":
		return evError
	}
	return evOther
}

func (x *StreamExtractor) handle(ev sse.Event) {
	x.events++
	var kind int
	if len(ev.Name) > 0 {
		kind = kindOf(ev.Name)
	} else if vs, ve, _, ok := findKey(ev.Data, 0, "type"); ok {
		// No event line: SDKs would not dispatch this, but the data says
		// what it is.
		kind = kindOf(stringValue(ev.Data, vs, ve))
	}
	switch kind {
	case evPing, evOther:
	case evContentBlockDelta:
		if ev.Truncated() {
			// Too large to parse: the raw size is close enough for an
			// estimate, and much closer than nothing.
			x.deltaBytes += ev.Size
			return
		}
		x.deltaBytes += deltaLen(ev.Data)
	case evMessageStart:
		x.started = true
		if !ev.Truncated() {
			x.messageStart(ev.Data)
		}
	case evMessageDelta:
		if !ev.Truncated() {
			x.messageDelta(ev.Data)
		}
	case evMessageStop:
		x.done = true
	case evError:
		if !ev.Truncated() {
			if typ, msg, ok := ErrorFromJSON(ev.Data); ok {
				x.errType, x.errMessage = typ, msg
			}
		}
	}
}

// deltaLen returns the decoded length of the model's text in a
// content_block_delta event: delta.text, delta.thinking or
// delta.partial_json. signature_delta and citations_delta carry no text the
// model is billed for as output, so they count zero.
func deltaLen(data []byte) int64 {
	vs, _, _, ok := findKey(data, 0, "delta")
	if !ok {
		return 0
	}
	var n int64
	it := newObjectIter(data, vs)
	for {
		k, _, _, sl, more := it.next()
		if !more {
			return n
		}
		if sl < 0 {
			continue
		}
		switch string(k) {
		case "text", "thinking", "partial_json":
			n += sl
		}
	}
}

// wireUsage is a usage object as sent. Pointers tell a field that is absent
// (or null) from a zero, because message_delta may carry only some fields
// and the others must keep their earlier values.
type wireUsage struct {
	InputTokens              *int64 `json:"input_tokens"`
	OutputTokens             *int64 `json:"output_tokens"`
	CacheCreationInputTokens *int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     *int64 `json:"cache_read_input_tokens"`
	CacheCreation            *struct {
		Ephemeral5m *int64 `json:"ephemeral_5m_input_tokens"`
		Ephemeral1h *int64 `json:"ephemeral_1h_input_tokens"`
	} `json:"cache_creation"`
	ServerToolUse *struct {
		WebSearchRequests *int64 `json:"web_search_requests"`
		WebFetchRequests  *int64 `json:"web_fetch_requests"`
	} `json:"server_tool_use"`
	ServiceTier *string `json:"service_tier"`
}

// applyTo replaces the fields of u that w carries. Counts are cumulative
// snapshots, so they replace and never add.
func (w *wireUsage) applyTo(u *Usage) {
	set := func(dst *int64, src *int64) {
		if src != nil {
			*dst = *src
		}
	}
	set(&u.InputTokens, w.InputTokens)
	set(&u.OutputTokens, w.OutputTokens)
	set(&u.CacheCreationInputTokens, w.CacheCreationInputTokens)
	set(&u.CacheReadInputTokens, w.CacheReadInputTokens)
	if c := w.CacheCreation; c != nil {
		set(&u.CacheCreation5m, c.Ephemeral5m)
		set(&u.CacheCreation1h, c.Ephemeral1h)
	}
	if s := w.ServerToolUse; s != nil {
		set(&u.WebSearchRequests, s.WebSearchRequests)
		set(&u.WebFetchRequests, s.WebFetchRequests)
	}
	if w.ServiceTier != nil {
		u.ServiceTier = *w.ServiceTier
	}
}

// unmarshal decodes data into v. A field of the wrong type is skipped and
// the rest kept (encoding/json's documented behaviour), so one odd field
// does not lose the whole usage; a syntax error decodes nothing.
func unmarshal(data []byte, v any) bool {
	err := json.Unmarshal(data, v)
	var typeErr *json.UnmarshalTypeError
	return err == nil || errors.As(err, &typeErr)
}

var (
	startNames   = []string{"message"}
	messageNames = []string{"id", "model", "stop_reason", "usage"}
	deltaNames   = []string{"delta", "usage"}
	stopNames    = []string{"stop_reason"}
)

// messageStart reads a message_start event's data (see members.go for
// the fast way and why).
func (x *StreamExtractor) messageStart(data []byte) {
	if !jsonsyntax.Valid(data) {
		return
	}
	var top [1][]byte
	var f [4][]byte
	if !members(data, startNames, top[:]) || !members(top[0], messageNames, f[:]) {
		x.messageStartDecode(data)
		return
	}
	if s, _ := jsonString(f[0]); s != "" {
		x.messageID = s
	}
	if s, _ := jsonString(f[1]); s != "" {
		x.model = s
	}
	if s, _ := jsonString(f[2]); s != "" {
		x.stopReason = s
	}
	if present, _ := applyUsage(f[3], &x.usage); present {
		x.sawUsage = true
	}
}

// messageStartDecode is messageStart by encoding/json alone.
func (x *StreamExtractor) messageStartDecode(data []byte) {
	var ev struct {
		Message struct {
			ID         string     `json:"id"`
			Model      string     `json:"model"`
			StopReason *string    `json:"stop_reason"`
			Usage      *wireUsage `json:"usage"`
		} `json:"message"`
	}
	if !unmarshal(data, &ev) {
		return
	}
	m := &ev.Message
	if m.ID != "" {
		x.messageID = m.ID
	}
	if m.Model != "" {
		x.model = m.Model
	}
	if m.StopReason != nil && *m.StopReason != "" {
		x.stopReason = *m.StopReason
	}
	if m.Usage != nil {
		x.sawUsage = true
		m.Usage.applyTo(&x.usage)
	}
}

// messageDelta reads a message_delta event's data.
func (x *StreamExtractor) messageDelta(data []byte) {
	if !jsonsyntax.Valid(data) {
		return
	}
	var f [2][]byte
	var d [1][]byte
	if !members(data, deltaNames, f[:]) || !members(f[0], stopNames, d[:]) {
		x.messageDeltaDecode(data)
		return
	}
	if s, _ := jsonString(d[0]); s != "" {
		x.stopReason = s
	}
	if present, output := applyUsage(f[1], &x.usage); present {
		x.sawUsage = true
		if output {
			x.outputFromDelta = true
		}
	}
}

// messageDeltaDecode is messageDelta by encoding/json alone.
func (x *StreamExtractor) messageDeltaDecode(data []byte) {
	var ev struct {
		Delta struct {
			StopReason *string `json:"stop_reason"`
		} `json:"delta"`
		Usage *wireUsage `json:"usage"`
	}
	if !unmarshal(data, &ev) {
		return
	}
	if s := ev.Delta.StopReason; s != nil && *s != "" {
		x.stopReason = *s
	}
	if u := ev.Usage; u != nil {
		x.sawUsage = true
		if u.OutputTokens != nil {
			x.outputFromDelta = true
		}
		u.applyTo(&x.usage)
	}
}

// FromJSON reads usage and model out of a non-streaming Messages API
// response body. ok is false when the body has no usage object (an error
// body, or not JSON at all).
func FromJSON(body []byte) (u Usage, model string, ok bool) {
	if !jsonsyntax.Valid(body) {
		return Usage{}, "", false
	}
	var f [2][]byte
	if !members(body, answerNames, f[:]) {
		return fromJSONDecode(body)
	}
	if present, _ := applyUsage(f[1], &u); !present {
		return Usage{}, "", false
	}
	model, _ = jsonString(f[0])
	return u, model, true
}

var answerNames = []string{"model", "usage"}

// fromJSONDecode is FromJSON by encoding/json alone: the way for
// documents members declines, and the reference FuzzFromJSON holds the
// fast way to.
func fromJSONDecode(body []byte) (u Usage, model string, ok bool) {
	var resp struct {
		Model string     `json:"model"`
		Usage *wireUsage `json:"usage"`
	}
	if !unmarshal(body, &resp) || resp.Usage == nil {
		return Usage{}, "", false
	}
	resp.Usage.applyTo(&u)
	return u, resp.Model, true
}

// ErrorFromJSON reads an Anthropic error body,
// {"type":"error","error":{"type":T,"message":M}}, and returns T and M. It
// is also the data of a mid-stream error event. ok is false when the body
// has no error object with a type.
func ErrorFromJSON(body []byte) (typ, msg string, ok bool) {
	var e struct {
		Error *struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if !unmarshal(body, &e) || e.Error == nil || e.Error.Type == "" {
		return "", "", false
	}
	return e.Error.Type, e.Error.Message, true
}
