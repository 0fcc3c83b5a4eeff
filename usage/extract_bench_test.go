package usage

import (
	"strings"
	"testing"
)

// BenchmarkStreamExtractor measures SSE usage extraction per event (the
// content_block_delta and ping events that make up most of every stream)
// and per whole stream.
func BenchmarkStreamExtractor(b *testing.B) {
	events := []struct {
		name string
		ev   string
	}{
		{"content_block_delta", "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello! How can I help you today? \\\"quoted\\\"\\n\"}}\n\n"},
		{"input_json_delta", "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"path\\\": \\\"/src/m\"}}\n\n"},
		{"ping", "event: ping\ndata: {\"type\": \"ping\"}\n\n"},
		{"message_delta", "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n"},
	}
	for _, e := range events {
		b.Run(e.name, func(b *testing.B) {
			ev := []byte(e.ev)
			var x StreamExtractor
			x.Write([]byte(protocolExample[:strings.Index(protocolExample, "event: ping")]))
			b.ReportAllocs()
			b.SetBytes(int64(len(ev)))
			for b.Loop() {
				x.Write(ev)
			}
		})
	}

	// A whole stream of 200 text deltas, written in network-sized pieces.
	var sb strings.Builder
	sb.WriteString(protocolExample[:strings.Index(protocolExample, "event: content_block_delta")])
	for range 200 {
		sb.WriteString(events[0].ev)
	}
	sb.WriteString(protocolExample[strings.Index(protocolExample, "event: content_block_stop"):])
	stream := []byte(sb.String())
	b.Run("stream", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(stream)))
		for b.Loop() {
			var x StreamExtractor
			for rest := stream; len(rest) > 0; {
				n := min(1400, len(rest))
				x.Write(rest[:n])
				rest = rest[n:]
			}
			if x.Events() != 206 {
				b.Fatalf("events = %d", x.Events())
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/206, "ns/event")
	})
}

// BenchmarkFromJSON reads usage from a non-streaming answer of 4 KB of
// text (Claude Code's are tens of KB): the fast reader, and encoding/json
// alone for comparison.
func BenchmarkFromJSON(b *testing.B) {
	body := []byte(`{"id":"msg_01","type":"message","role":"assistant","model":"claude-opus-4-8","content":[{"type":"text","text":"` +
		strings.Repeat(`Here is the change you asked for, with a test. \"quoted\"\n`, 70) +
		`"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":503,"service_tier":"standard"}}`)
	for _, bm := range []struct {
		name string
		fn   func([]byte) (Usage, string, bool)
	}{{"members", FromJSON}, {"encoding_json", fromJSONDecode}} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, _, ok := bm.fn(body); !ok {
					b.Fatal("no usage")
				}
			}
		})
	}
}
