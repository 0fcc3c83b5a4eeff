package upstreamtest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"
)

// answers holds every byte of a message answer except the model, which
// echoes the request. It is built once in New; serving a message copies
// these slices to the connection and allocates nothing for the body.
type answers struct {
	// startHead is the message_start event up to and including
	// `"model":"`; startTail[usage] continues after the model's last byte.
	startHead []byte
	startTail [2][]byte
	// events follow message_start; only message_delta differs between
	// events[withUsage] and events[withoutUsage].
	events [2][][]byte
	// jsonHead and jsonTail[usage] surround the model in the JSON message.
	jsonHead []byte
	jsonTail [2][]byte
}

const (
	withUsage    = 0
	withoutUsage = 1
)

func buildAnswers(c *Config, u Usage) answers {
	var a answers
	startOutput := min(u.OutputTokens, 1) // message_start reports a token or so, as the real API
	for mode := range 2 {
		var msg []byte
		msg = append(msg, `{"type":"message_start","message":{"id":`...)
		msg = appendString(msg, c.MessageID)
		msg = append(msg, `,"type":"message","role":"assistant","content":[],"model":"`...)
		head := appendEvent(nil, "message_start", msg)
		a.startHead = head[:len(head)-2] // appendEvent's blank line comes after the tail

		var tail []byte
		tail = append(tail, `","stop_reason":null,"stop_sequence":null`...)
		if mode == withUsage {
			tail = append(tail, `,"usage":`...)
			tail = appendStartUsage(tail, u, startOutput)
		}
		tail = append(tail, "}}\n\n"...)
		a.startTail[mode] = tail

		var ev [][]byte
		ev = append(ev, appendEvent(nil, "content_block_start", []byte(`{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)))
		ping := appendEvent(nil, "ping", []byte(`{"type":"ping"}`))
		if c.PingEvery >= 0 {
			ev = append(ev, ping)
		}
		for i, part := range splitText(c.Text, c.Deltas) {
			d := append([]byte(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":`), appendString(nil, part)...)
			ev = append(ev, appendEvent(nil, "content_block_delta", append(d, "}}"...)))
			if c.PingEvery > 0 && (i+1)%c.PingEvery == 0 {
				ev = append(ev, ping)
			}
		}
		ev = append(ev, appendEvent(nil, "content_block_stop", []byte(`{"type":"content_block_stop","index":0}`)))
		d := []byte(`{"type":"message_delta","delta":{"stop_reason":`)
		d = appendString(d, c.StopReason)
		d = append(d, `,"stop_sequence":null}`...)
		if mode == withUsage {
			d = append(d, `,"usage":`...)
			d = appendDeltaUsage(d, u, c.FullDeltaUsage)
		}
		ev = append(ev, appendEvent(nil, "message_delta", append(d, '}')))
		ev = append(ev, appendEvent(nil, "message_stop", []byte(`{"type":"message_stop"}`)))
		a.events[mode] = ev

		j := []byte(`{"id":`)
		j = appendString(j, c.MessageID)
		j = append(j, `,"type":"message","role":"assistant","model":"`...)
		a.jsonHead = j
		t := []byte(`","content":[{"type":"text","text":`)
		t = appendString(t, c.Text)
		t = append(t, `}],"stop_reason":`...)
		t = appendString(t, c.StopReason)
		t = append(t, `,"stop_sequence":null`...)
		if mode == withUsage {
			t = append(t, `,"usage":`...)
			t = appendFullUsage(t, u)
		}
		a.jsonTail[mode] = append(t, '}')
	}
	return a
}

// appendStartUsage is message_start's usage: input and cache counts in
// full, output_tokens only what was produced so far.
func appendStartUsage(dst []byte, u Usage, output int64) []byte {
	dst = appendInputUsage(dst, u)
	dst = append(dst, `,"cache_creation":{"ephemeral_5m_input_tokens":`...)
	dst = appendInt(dst, u.CacheCreation5m)
	dst = append(dst, `,"ephemeral_1h_input_tokens":`...)
	dst = appendInt(dst, u.CacheCreation1h)
	dst = append(dst, `},"output_tokens":`...)
	dst = appendInt(dst, output)
	dst = appendTier(dst, u)
	return append(dst, '}')
}

// appendFullUsage is the usage of a JSON message.
func appendFullUsage(dst []byte, u Usage) []byte {
	dst = appendInputUsage(dst, u)
	dst = append(dst, `,"cache_creation":{"ephemeral_5m_input_tokens":`...)
	dst = appendInt(dst, u.CacheCreation5m)
	dst = append(dst, `,"ephemeral_1h_input_tokens":`...)
	dst = appendInt(dst, u.CacheCreation1h)
	dst = append(dst, `},"output_tokens":`...)
	dst = appendInt(dst, u.OutputTokens)
	dst = appendServerToolUse(dst, u)
	dst = appendTier(dst, u)
	return append(dst, '}')
}

// appendDeltaUsage is message_delta's cumulative usage.
func appendDeltaUsage(dst []byte, u Usage, full bool) []byte {
	if full {
		dst = appendInputUsage(dst, u)
		dst = append(dst, `,"output_tokens":`...)
	} else {
		dst = append(dst, `{"output_tokens":`...)
	}
	dst = appendInt(dst, u.OutputTokens)
	if full || u.WebSearchRequests != 0 || u.WebFetchRequests != 0 {
		dst = appendServerToolUse(dst, u)
	}
	return append(dst, '}')
}

// appendInputUsage opens a usage object with the three input counts.
func appendInputUsage(dst []byte, u Usage) []byte {
	dst = append(dst, `{"input_tokens":`...)
	dst = appendInt(dst, u.InputTokens)
	dst = append(dst, `,"cache_creation_input_tokens":`...)
	dst = appendInt(dst, u.CacheCreationInputTokens)
	dst = append(dst, `,"cache_read_input_tokens":`...)
	return appendInt(dst, u.CacheReadInputTokens)
}

func appendServerToolUse(dst []byte, u Usage) []byte {
	dst = append(dst, `,"server_tool_use":{"web_search_requests":`...)
	dst = appendInt(dst, u.WebSearchRequests)
	dst = append(dst, `,"web_fetch_requests":`...)
	dst = appendInt(dst, u.WebFetchRequests)
	return append(dst, '}')
}

func appendTier(dst []byte, u Usage) []byte {
	if u.ServiceTier != "" {
		dst = append(dst, `,"service_tier":`...)
		dst = appendString(dst, u.ServiceTier)
	}
	if u.InferenceGeo != "" {
		dst = append(dst, `,"inference_geo":`...)
		dst = appendString(dst, u.InferenceGeo)
	}
	return dst
}

// modelBytes returns the model as it goes between the quotes of an answer.
// An unescaped model from the request is valid JSON string content as it
// stands and is echoed without a copy; an escaped one is decoded and
// encoded again.
func modelBytes(sn *sniffed) []byte {
	if !sn.modelEscaped {
		return sn.model
	}
	q := appendString(nil, modelString(sn))
	return q[1 : len(q)-1]
}

// modelString is the decoded model name.
func modelString(sn *sniffed) string {
	if !sn.modelEscaped {
		return string(sn.model)
	}
	return unescape(sn.model)
}

// StreamBody is the exact SSE body the fake sends for a streamed message to
// model, so that a test can check that the relay passes it on byte for byte.
func (s *Server) StreamBody(model string) []byte {
	m := appendString(nil, model)
	m = m[1 : len(m)-1]
	out := append([]byte(nil), s.answers.startHead...)
	out = append(out, m...)
	out = append(out, s.answers.startTail[withUsage]...)
	for _, ev := range s.answers.events[withUsage] {
		out = append(out, ev...)
	}
	return out
}

// MessageBody is the exact JSON body the fake sends for a non-streamed
// message to model.
func (s *Server) MessageBody(model string) []byte {
	return s.messageBody(appendString(nil, model), withUsage)
}

// messageBody builds the JSON message around a quoted model.
func (s *Server) messageBody(quotedModel []byte, mode int) []byte {
	m := quotedModel[1 : len(quotedModel)-1]
	out := make([]byte, 0, len(s.answers.jsonHead)+len(m)+len(s.answers.jsonTail[mode]))
	out = append(out, s.answers.jsonHead...)
	out = append(out, m...)
	return append(out, s.answers.jsonTail[mode]...)
}

// serveJSON answers a non-streamed message.
func (s *Server) serveJSON(w http.ResponseWriter, model []byte, f *Fault) {
	mode := withUsage
	if f != nil && f.OmitUsage {
		mode = withoutUsage
	}
	head, tail := s.answers.jsonHead, s.answers.jsonTail[mode]
	h := w.Header()
	h["Content-Type"] = s.ctJSON
	h["Content-Length"] = []string{strconv.Itoa(len(head) + len(model) + len(tail))}
	w.WriteHeader(http.StatusOK)
	if f != nil && f.CutAfter != 0 {
		// The headers (and half the body, unless AfterHeaders), then the
		// connection goes: the client sees an unexpected EOF short of
		// Content-Length.
		if f.CutAfter > 0 {
			whole := make([]byte, 0, len(head)+len(model)+len(tail))
			whole = append(append(append(whole, head...), model...), tail...)
			_, _ = w.Write(whole[:len(whole)/2])
		}
		_ = flush(http.NewResponseController(w))
		panic(http.ErrAbortHandler)
	}
	_, _ = w.Write(head)
	_, _ = w.Write(model)
	_, _ = w.Write(tail)
}

// serveStream answers a streamed message, flushing every event on its own
// as the real API does: a relay that buffers shows up as late events.
func (s *Server) serveStream(ctx context.Context, w http.ResponseWriter, model []byte, f *Fault, timer **time.Timer) {
	mode := withUsage
	delay := s.cfg.EventDelay
	cutAfter, errorAfter := 0, 0
	if f != nil {
		if f.OmitUsage {
			mode = withoutUsage
		}
		if f.EventDelay != 0 {
			delay = f.EventDelay
		}
		cutAfter, errorAfter = f.CutAfter, f.ErrorAfter
	}
	h := w.Header()
	h["Content-Type"] = s.ctSSE
	h["Cache-Control"] = s.noCache
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if flush(rc) != nil {
		return
	}
	events := s.answers.events[mode]
	total := 1 + len(events)
	for sent := 0; sent <= total; sent++ {
		switch {
		case cutAfter == AfterHeaders && sent == 0, cutAfter > 0 && sent == cutAfter:
			panic(http.ErrAbortHandler)
		case errorAfter == AfterHeaders && sent == 0, errorAfter > 0 && sent == errorAfter:
			s.writeErrorEvent(w, f)
			_ = flush(rc)
			return
		case sent == total:
			return
		}
		if sent > 0 && delay > 0 && !s.sleep(ctx, delay, timer) {
			return
		}
		var err error
		if sent == 0 {
			_, _ = w.Write(s.answers.startHead)
			_, _ = w.Write(model)
			_, err = w.Write(s.answers.startTail[mode])
		} else {
			_, err = w.Write(events[sent-1])
		}
		if err != nil || flush(rc) != nil {
			return // the client is gone
		}
	}
}

// flush sends what was written so far. A ResponseWriter that cannot flush
// (wrapped by middleware that hides Flush) still gets the whole answer,
// only not event by event.
func flush(rc *http.ResponseController) error {
	if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

func (s *Server) writeErrorEvent(w io.Writer, f *Fault) {
	errType, msg := f.ErrorType, f.Message
	if errType == "" {
		errType = "overloaded_error"
	}
	if msg == "" {
		msg = defaultMessage(errType)
	}
	_, _ = w.Write(appendEvent(nil, "error", appendErrorBody(nil, errType, msg, "")))
}
