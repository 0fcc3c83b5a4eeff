package sse

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

type got struct {
	Name string
	Data string
	Size int64
}

// parseAll feeds chunks one after another and collects the events.
func parseAll(p *Parser, chunks ...[]byte) []got {
	var out []got
	for _, c := range chunks {
		for len(c) > 0 {
			n, ev, ok := p.Parse(c)
			if n <= 0 || n > len(c) {
				panic(fmt.Sprintf("Parse consumed %d of %d bytes", n, len(c)))
			}
			c = c[n:]
			if ok {
				out = append(out, got{string(ev.Name), string(ev.Data), ev.Size})
			}
		}
	}
	return out
}

func TestParser(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []got
	}{
		{"basic", "event: a\ndata: {\"x\":1}\n\n", []got{{"a", `{"x":1}`, 7}}},
		{"no space", "event:a\ndata:{}\n\n", []got{{"a", "{}", 2}}},
		{"only one space stripped", "data:  x\n\n", []got{{"", " x", 2}}},
		{"crlf", "event: a\r\ndata: 1\r\n\r\nevent: b\r\ndata: 2\r\n\r\n", []got{{"a", "1", 1}, {"b", "2", 1}}},
		{"cr", "event: a\rdata: 1\r\r", []got{{"a", "1", 1}}},
		{"multi-line data", "data: a\ndata:b\ndata\n\n", []got{{"", "a\nb\n", 4}}},
		{"comments", ": hi\n:\nevent: a\n: mid\ndata: 1\n\n", []got{{"a", "1", 1}}},
		{"no data no event", "event: a\n\n: c\n\ndata: 1\n\n", []got{{"", "1", 1}}},
		{"empty data is an event", "data:\n\n", []got{{"", "", 0}}},
		{"last event field wins", "event: a\nevent: b\ndata: 1\n\n", []got{{"b", "1", 1}}},
		{"unknown fields ignored", "id: 7\nretry: 10\nfoo: bar\ndata: 1\n\n", []got{{"", "1", 1}}},
		{"field names are exact", "dataa: 1\ndat: 2\nevents: x\nData: 3\ndata: 4\n\n", []got{{"", "4", 1}}},
		{"colon in value", "data: a:b\n\n", []got{{"", "a:b", 3}}},
		{"event without colon empties name", "event: a\nevent\ndata: 1\n\n", []got{{"", "1", 1}}},
		{"incomplete event dropped", "data: 1\n\ndata: 2\n", []got{{"", "1", 1}}},
		{"blank lines only", "\n\n\r\n\r\r", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			check := func(how string, g []got) {
				t.Helper()
				if fmt.Sprint(g) != fmt.Sprint(tt.want) {
					t.Errorf("%s: got %#v, want %#v", how, g, tt.want)
				}
			}
			check("whole", parseAll(&Parser{}, in))
			for i := range in {
				check(fmt.Sprintf("split at %d", i), parseAll(&Parser{}, in[:i], in[i:]))
			}
			var bytewise [][]byte
			for i := range in {
				bytewise = append(bytewise, in[i:i+1])
			}
			check("byte by byte", parseAll(&Parser{}, bytewise...))
		})
	}
}

func TestParserLongName(t *testing.T) {
	name := strings.Repeat("n", 100)
	g := parseAll(&Parser{}, []byte("event: "+name+"\ndata: 1\n\n"))
	if len(g) != 1 || g[0].Name != name[:MaxName] {
		t.Fatalf("got %#v", g)
	}
}

func TestParserMaxData(t *testing.T) {
	p := &Parser{MaxData: 10}
	g := parseAll(p, []byte("data: 0123456789abcdef\ndata: x\n\ndata: ok\n\n"))
	want := []got{{"", "0123456789", 18}, {"", "ok", 2}}
	if fmt.Sprint(g) != fmt.Sprint(want) {
		t.Fatalf("got %#v, want %#v", g, want)
	}
}

// TestParserBoundedMemory feeds an endless data line and a huge event and
// checks that the parser's allocations stay near its limit.
func TestParserBoundedMemory(t *testing.T) {
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	const total = 64 << 20
	var p Parser
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p.Parse([]byte("event: big\ndata: "))
	for range total / len(chunk) {
		if n, _, ok := p.Parse(chunk); ok || n != len(chunk) {
			t.Fatal("event completed early")
		}
	}
	n, ev, ok := p.Parse([]byte("\n\n"))
	runtime.ReadMemStats(&after)
	if !ok || n != 2 || ev.Size != total || len(ev.Data) != DefaultMaxData {
		t.Fatalf("ok=%v n=%d size=%d len=%d", ok, n, ev.Size, len(ev.Data))
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4*DefaultMaxData {
		t.Errorf("allocated %d bytes for a %d-byte event", alloc, total)
	}
	// The large buffer is let go after the event.
	if g := parseAll(&p, []byte("data: small\n\n")); len(g) != 1 || g[0].Data != "small" {
		t.Fatalf("after big event: %#v", g)
	}
}

func FuzzParser(f *testing.F) {
	f.Add([]byte("event: a\r\ndata: 1\r\n\r\n"), 3)
	f.Add([]byte("data: a\rdata:b\r\r: c\n\n"), 7)
	f.Fuzz(func(t *testing.T, in []byte, at int) {
		if at < 0 {
			at = -at
		}
		if len(in) > 0 {
			at %= len(in) + 1
		} else {
			at = 0
		}
		whole := parseAll(&Parser{MaxData: 64}, in)
		split := parseAll(&Parser{MaxData: 64}, in[:at], in[at:])
		if fmt.Sprint(whole) != fmt.Sprint(split) {
			t.Fatalf("split at %d: %#v != %#v", at, split, whole)
		}
		for _, e := range whole {
			if int64(len(e.Data)) > e.Size || len(e.Data) > 64 || len(e.Name) > MaxName {
				t.Fatalf("bad event %#v", e)
			}
		}
	})
}

func BenchmarkParser(b *testing.B) {
	ev := []byte("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello there\"}}\n\n")
	var p Parser
	b.ReportAllocs()
	b.SetBytes(int64(len(ev)))
	for b.Loop() {
		in := ev
		for len(in) > 0 {
			n, _, _ := p.Parse(in)
			in = in[n:]
		}
	}
}
