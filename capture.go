package relay

import (
	"bytes"

	"github.com/relaystation/relay/usage"
)

// capture keeps what the relay needs of a JSON answer while it streams
// through: the whole answer when it is small (nearly always), else its
// first bytes and a window of its last ones. Anthropic puts "usage" last
// in a message, so the tail still yields the counts of a huge answer
// without the relay holding it.
type capture struct {
	head  bytes.Buffer
	tail  []byte // ring of the last tailSize bytes once head is full
	pos   int    // next write position in tail
	full  bool   // tail has wrapped
	total int64
}

const (
	headSize = 1 << 20  // answers up to this size are parsed whole
	tailSize = 64 << 10 // enough for any usage object
)

func (c *capture) Write(p []byte) {
	c.total += int64(len(p))
	if room := headSize - c.head.Len(); room > 0 {
		n := min(room, len(p))
		c.head.Write(p[:n])
		p = p[n:]
	}
	if len(p) == 0 {
		return
	}
	if c.tail == nil {
		c.tail = make([]byte, tailSize)
	}
	if len(p) >= tailSize {
		copy(c.tail, p[len(p)-tailSize:])
		c.pos, c.full = 0, true
		return
	}
	n := copy(c.tail[c.pos:], p)
	copy(c.tail, p[n:])
	if c.pos+len(p) >= tailSize {
		c.full = true
	}
	c.pos = (c.pos + len(p)) % tailSize
}

// whole reports whether the answer fit in head.
func (c *capture) whole() bool { return c.tail == nil }

// bytes returns the whole answer, when it fit.
func (c *capture) bytes() []byte { return c.head.Bytes() }

// lastBytes returns the tail window in order.
func (c *capture) lastBytes() []byte {
	if !c.full {
		return c.tail[:c.pos]
	}
	out := make([]byte, 0, tailSize)
	out = append(out, c.tail[c.pos:]...)
	return append(out, c.tail[:c.pos]...)
}

// usageFromTail reads the last "usage" object of a huge answer. The
// model is read from the head, where the message names it.
func (c *capture) usageFromTail() (usage.Usage, string, bool) {
	tail := c.lastBytes()
	i := bytes.LastIndex(tail, []byte(`"usage":`))
	if i < 0 {
		return usage.Usage{}, "", false
	}
	obj, ok := objectAt(tail[i+len(`"usage":`):])
	if !ok {
		return usage.Usage{}, "", false
	}
	u, _, ok := usage.FromJSON(append(append([]byte(`{"type":"message","usage":`), obj...), '}'))
	return u, modelFromHead(c.head.Bytes()), ok
}

// objectAt returns the JSON object at the start of b (after spaces).
func objectAt(b []byte) ([]byte, bool) {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	depth, inStr := 0, false
	for j := i; j < len(b); j++ {
		switch c := b[j]; {
		case inStr && c == '\\':
			j++
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '{':
			depth++
		case c == '}':
			depth--
			if depth == 0 {
				return b[i : j+1], true
			}
		}
	}
	return nil, false
}

// modelFromHead finds the top-level "model" of a message's first bytes
// (it precedes the content in Anthropic's answers).
func modelFromHead(head []byte) string {
	i := bytes.Index(head, []byte(`"model":"`))
	if i < 0 {
		return ""
	}
	rest := head[i+len(`"model":"`):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 || j > 200 {
		return ""
	}
	return string(rest[:j])
}
