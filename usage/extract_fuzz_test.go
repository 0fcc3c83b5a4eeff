package usage

import (
	"encoding/json"
	"testing"
)

// FuzzStreamExtractor feeds arbitrary bytes: the extractor must not panic,
// and splitting the input into two writes at any point (at, taken modulo
// len(in)+1) must not change what it reports. Seeds are the test streams,
// here and in testdata/fuzz/FuzzStreamExtractor.
func FuzzStreamExtractor(f *testing.F) {
	for _, tt := range extractTests {
		f.Add([]byte(tt.stream), uint(len(tt.stream)/2))
		f.Add([]byte(crlf(tt.stream)), uint(len(tt.stream)/3))
	}
	f.Add([]byte("data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}}\r\r"), uint(70))
	f.Add([]byte("event: content_block_delta\ndata: {\"delta\":{\"text\":\"\\ud800\\udc00\\ud800x\\u12\"}}\n\n"), uint(40))
	f.Fuzz(func(t *testing.T, in []byte, at uint) {
		i := int(at % uint(len(in)+1))
		whole := extract(t, in)
		split := extract(t, in[:i], in[i:])
		if split != whole {
			t.Fatalf("split at %d of %d:\n got %+v\nwant %+v", i, len(in), split, whole)
		}
		if whole.DeltaBytes < 0 || whole.Events < 0 || whole.Events > len(in) {
			t.Fatalf("impossible counters: %+v", whole)
		}
	})
}

// FuzzScanString checks the scanner's decoded string length against
// encoding/json for every string encoding/json accepts.
func FuzzScanString(f *testing.F) {
	for _, s := range []string{
		`""`, `"plain"`, `"\"q\" \\ \/ \b\f\n\r\t"`, `"caf\u00e9 \u65e5 \ud83d\ude00"`,
		`"lone \ud800 and \udc00 and \ud800\u0041"`, "\"raw \xff\xfe bytes é 日\"", `"\u0000"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var s string
		start := skipSpace(in, 0)
		if err := json.Unmarshal(in, &s); err != nil || in[start] != '"' {
			return // not a JSON string (null decodes into a string too)
		}
		end, n, ok := scanString(in, start)
		if !ok || skipSpace(in, end) != len(in) || n != int64(len(s)) {
			t.Fatalf("scanString(%q) = %d, %d, %v; encoding/json decodes %d bytes", in, end, n, ok, len(s))
		}
		// The same string as a delta, after other members.
		ev := append([]byte(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","x":[{"a":"}"}],"text":`), in...)
		ev = append(ev, "}}"...)
		if got := deltaLen(ev); got != int64(len(s)) {
			t.Fatalf("deltaLen(%s) = %d, want %d", ev, got, len(s))
		}
	})
}

// FuzzFromJSON holds the fast readers of members.go to encoding/json on
// any input: FromJSON to fromJSONDecode, and the message_start and
// message_delta readers to their whole decodes.
func FuzzFromJSON(f *testing.F) {
	for _, s := range []string{
		`{"id":"msg_1","type":"message","role":"assistant","model":"claude-opus-4-8","content":[{"type":"text","text":"hi \"usage\": {}"}],"stop_reason":"end_turn","usage":{"input_tokens":25,"cache_creation_input_tokens":30,"cache_read_input_tokens":40,"output_tokens":15,"cache_creation":{"ephemeral_5m_input_tokens":10,"ephemeral_1h_input_tokens":20},"server_tool_use":{"web_search_requests":2},"service_tier":"standard"}}`,
		`{"model":"a","usage":{"input_tokens":1},"usage":{"output_tokens":2}}`,
		`{"Model":"m","USAGE":{"input_tokens":3}}`,
		`{"mod\u0065l":"m","usage":{"input_tokens":3}}`,
		`{"model":"caf\u00e9 \xff","usage":{"input_tokens":"x","output_tokens":4}}`,
		`{"model":5,"usage":null}`,
		`{"usage":{"input_tokens":1}`,
		`[{"usage":{"input_tokens":1}}]`,
		`{"type":"message_start","message":{"id":"msg_1","model":"claude-haiku-4-5","stop_reason":null,"usage":{"input_tokens":9,"output_tokens":1}}}`,
		`{"type":"message_start","message":{"id":"m","stop_reason":"end_turn","Usage":{"input_tokens":9}},"message":{"id":"n"}}`,
		`{"message":null}`,
		`{"message":"x","usage":{}}`,
		`{"uſage":{"input_tokens":1},"model":"m"}`,
		`{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":15,"input_tokens":null,"cache_read_input_tokens":"x","cache_creation":5,"server_tool_use":{"web_fetch_requests":1.5},"service_tier":3}}`,
		`{"type":"message_delta","delta":5,"usage":{"output_tokens":-9223372036854775808,"input_tokens":9223372036854775808,"cache_creation":{"ephemeral_1h_input_tokens":-0,"Ephemeral_5m_input_tokens":2}}}`,
		`{"usage":[1,{"input_tokens":3}],"delta":{"stop_reason":null}}`,
		`{"usage":{"input_tokens":1,"input_tokens":2},"delta":{"stop_reason":"a","stop_reason":"b"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		u, model, ok := FromJSON(in)
		wu, wmodel, wok := fromJSONDecode(in)
		if u != wu || model != wmodel || ok != wok {
			t.Fatalf("FromJSON(%q) = %+v, %q, %v; encoding/json reads %+v, %q, %v", in, u, model, ok, wu, wmodel, wok)
		}
		// message_start and message_delta, from a state that earlier
		// events left, so that what is replaced and what is kept shows.
		start := func() StreamExtractor {
			return StreamExtractor{usage: Usage{InputTokens: 7, OutputTokens: 8, CacheCreation5m: 9, ServiceTier: "priority"},
				model: "m0", messageID: "id0", stopReason: "s0"}
		}
		for _, ev := range []struct {
			name       string
			fast, slow func(*StreamExtractor, []byte)
		}{
			{"message_start", (*StreamExtractor).messageStart, (*StreamExtractor).messageStartDecode},
			{"message_delta", (*StreamExtractor).messageDelta, (*StreamExtractor).messageDeltaDecode},
		} {
			got, want := start(), start()
			ev.fast(&got, in)
			ev.slow(&want, in)
			if got.usage != want.usage || got.model != want.model || got.messageID != want.messageID ||
				got.stopReason != want.stopReason || got.sawUsage != want.sawUsage || got.outputFromDelta != want.outputFromDelta {
				t.Fatalf("%s(%q):\n got %+v\nwant %+v", ev.name, in, got, want)
			}
		}
	})
}
