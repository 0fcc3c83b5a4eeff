package relay

import (
	"bytes"
	"strings"
	"testing"
)

func TestCapture(t *testing.T) {
	body := `{"id":"msg_1","type":"message","role":"assistant","model":"claude-opus-4-5","content":[{"type":"text","text":"` +
		strings.Repeat("abc\\\"}{", 400_000) + `"}],"stop_reason":"end_turn","usage":{"input_tokens":7,"output_tokens":900000,"cache_read_input_tokens":3}}`
	for _, chunk := range []int{1 << 10, 4093, 100_000, len(body)} {
		var c capture
		for b := []byte(body); len(b) > 0; {
			n := min(chunk, len(b))
			c.Write(b[:n])
			b = b[n:]
		}
		if c.whole() || c.total != int64(len(body)) {
			t.Fatalf("chunk %d: whole %v total %d", chunk, c.whole(), c.total)
		}
		if !bytes.HasSuffix([]byte(body), c.lastBytes()) || len(c.lastBytes()) != tailSize {
			t.Fatalf("chunk %d: the tail is not the answer's end", chunk)
		}
		u, model, ok := c.usageFromTail()
		if !ok || u.InputTokens != 7 || u.OutputTokens != 900000 || u.CacheReadInputTokens != 3 || model != "claude-opus-4-5" {
			t.Fatalf("chunk %d: %+v %q %v", chunk, u, model, ok)
		}
	}
	var small capture
	small.Write([]byte(`{"type":"message"}`))
	if !small.whole() || string(small.bytes()) != `{"type":"message"}` {
		t.Error("a small answer is not kept whole")
	}
}
