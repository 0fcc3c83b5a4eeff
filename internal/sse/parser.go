// Package sse splits a server-sent events stream into events while the bytes
// go by, in whatever pieces the network delivers them.
//
// It follows the WHATWG event stream rules that matter to a relay: lines end
// in "\n", "\r\n" or "\r" (a "\r\n" split between two writes is still one line
// end); "field: value" and "field:value" are the same; repeated data fields
// are joined with "\n"; lines starting with ":" are comments; a blank line
// ends an event, and an event without a data field is not reported. The id
// and retry fields are ignored, because the Anthropic API does not use them.
//
// The parser never holds more than one event's data, and never more than
// MaxData bytes of it: the relay must not let an upstream grow its memory
// without bound.
package sse

import "bytes"

// DefaultMaxData is the data limit of a Parser whose MaxData is zero.
const DefaultMaxData = 1 << 20

// MaxName is the longest event name a Parser keeps. Longer names are cut to
// MaxName bytes; such a name cannot equal any name a caller looks for.
const MaxName = 64

// Event is one event of the stream. Its slices point into the Parser and are
// valid only until the next call to Parse.
type Event struct {
	// Name is the value of the event's last "event" field, empty when it
	// had none (the SSE default type "message").
	Name []byte
	// Data is the event's data lines joined by "\n", cut to MaxData bytes.
	Data []byte
	// Size is the length of the joined data before any cut: Size > len(Data)
	// means Data is incomplete.
	Size int64
}

// Truncated reports whether Data was cut at the parser's limit.
func (e Event) Truncated() bool { return e.Size > int64(len(e.Data)) }

// line states
const (
	stField     = iota // reading a field name (or the start of a line)
	stSkipSpace        // after "field:", one optional space follows
	stValue            // reading a field value
)

// value destinations
const (
	dstNone = iota // comment, id, retry or an unknown field
	dstData
	dstEvent
)

// Parser is an incremental SSE parser. The zero value is ready to use. It is
// not safe for concurrent use.
type Parser struct {
	// MaxData limits the data kept per event; zero means DefaultMaxData.
	// Bytes beyond it are counted in Event.Size and dropped.
	MaxData int

	state   uint8
	dst     uint8
	afterCR bool // the last byte was "\r": a "\n" right after it ends nothing

	field    [5]byte // the field name so far ("event" is the longest we match)
	fieldLen int     // length of the field name so far; -1 once its value began

	name    [MaxName]byte
	nameLen int

	data    []byte
	size    int64
	hasData bool
}

// Parse consumes p up to and including the blank line that completes the
// first event, and returns how many bytes it consumed and that event. When no
// event completes within p, it consumes all of p and ok is false; the partial
// event is kept for the next call. Parse never retains p.
//
// Call it in a loop until p is consumed:
//
//	for len(p) > 0 {
//		n, ev, ok := parser.Parse(p)
//		p = p[n:]
//		if ok {
//			handle(ev)
//		}
//	}
func (s *Parser) Parse(p []byte) (n int, ev Event, ok bool) {
	i := 0
	for i < len(p) {
		if s.afterCR {
			s.afterCR = false
			if p[i] == '\n' {
				i++
				continue
			}
		}
		switch s.state {
		case stValue:
			rest := p[i:]
			end := lineEnd(rest)
			if end < 0 {
				s.value(rest)
				return len(p), Event{}, false
			}
			s.value(rest[:end])
			s.afterCR = rest[end] == '\r'
			i += end + 1
			s.endLine() // a line with a value is never blank
		case stSkipSpace:
			s.state = stValue
			if p[i] == ' ' {
				i++
			}
		default: // stField: the start of a line or a field name
			c := p[i]
			i++
			switch c {
			case '\r', '\n':
				s.afterCR = c == '\r'
				if s.endLine() {
					ev, ok = s.event()
					if ok {
						return i, ev, true
					}
				}
			case ':':
				s.beginValue()
				s.state = stSkipSpace
			default:
				if s.fieldLen < len(s.field) {
					s.field[s.fieldLen] = c
				}
				s.fieldLen++
			}
		}
	}
	return len(p), Event{}, false
}

// lineEnd returns the index of the first "\r" or "\n" in b, or -1.
func lineEnd(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return bytes.IndexByte(b, '\r')
	}
	if j := bytes.IndexByte(b[:i], '\r'); j >= 0 {
		return j
	}
	return i
}

// endLine finishes the current line and reports whether it was blank, which
// completes an event.
func (s *Parser) endLine() (blank bool) {
	switch {
	case s.fieldLen == 0:
		blank = true
	case s.fieldLen > 0:
		// A field name without a colon: the field with an empty value.
		s.beginValue()
	}
	s.state = stField
	s.fieldLen = 0
	s.dst = dstNone
	return blank
}

// beginValue starts the value of the field whose name was just read.
func (s *Parser) beginValue() {
	s.dst = dstNone
	switch {
	case s.fieldLen == 0:
		// ":" at the start of a line: a comment.
	case s.fieldLen == 4 && string(s.field[:4]) == "data":
		s.dst = dstData
		if s.hasData {
			s.appendData([]byte{'\n'})
		}
		s.hasData = true
	case s.fieldLen == 5 && string(s.field[:5]) == "event":
		s.dst = dstEvent
		s.nameLen = 0
	}
	s.fieldLen = -1
}

// value handles a piece of the current field's value.
func (s *Parser) value(b []byte) {
	switch s.dst {
	case dstData:
		s.appendData(b)
	case dstEvent:
		s.nameLen += copy(s.name[s.nameLen:], b)
	}
}

func (s *Parser) appendData(b []byte) {
	s.size += int64(len(b))
	limit := s.MaxData
	if limit <= 0 {
		limit = DefaultMaxData
	}
	room := limit - len(s.data)
	if room <= 0 {
		return
	}
	if len(b) > room {
		b = b[:room]
	}
	if need := len(s.data) + len(b); need > cap(s.data) {
		// Grow by doubling as append would, but never past the limit, so
		// that a huge event costs about twice the limit in allocations.
		c := min(max(2*cap(s.data), need, 512), limit)
		s.data = append(make([]byte, 0, c), s.data...)
	}
	s.data = append(s.data, b...)
}

// shrinkAbove is the buffer capacity above which the parser lets a buffer go
// after an event, so one huge event does not pin memory for the whole stream.
const shrinkAbove = 64 << 10

// event returns the completed event, if it had data, and resets the parser
// for the next one. The returned slices stay valid until the next Parse.
func (s *Parser) event() (Event, bool) {
	ev := Event{Name: s.name[:s.nameLen], Data: s.data, Size: s.size}
	ok := s.hasData
	s.nameLen = 0
	s.hasData = false
	s.size = 0
	if cap(s.data) > shrinkAbove {
		s.data = nil // ev.Data keeps the old buffer alive until it is dropped
	} else {
		s.data = s.data[:0]
	}
	return ev, ok
}
