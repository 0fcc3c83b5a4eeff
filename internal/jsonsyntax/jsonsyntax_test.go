package jsonsyntax

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzValid holds Valid to json.Valid, and SkipString's escape flag to the
// bytes it skipped.
func FuzzValid(f *testing.F) {
	for _, s := range []string{
		`{"a":[1,-0.5e+3,true,false,null,"x\u00e9\n"],"b":{}}`, `[]`, ` 0 `, `-`, `01`, `1.`, `1e`, `.5`, `"\x"`, `"\u12"`,
		"\"\x1f\"", "\"\xff\xfe\"", `{"a" 1}`, `{"a":1,}`, `[1,]`, `{,}`, `nul`, `truex`, `"`, `{"a":"b"}}`, "\t[\r\n]",
		`{"a":1 "b":2}`, `[1 2]`, `1 2`, ``, ` `, `"\uD83D\uDE00"`, `"\uZZZZ"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if got, want := Valid(in), json.Valid(in); got != want {
			t.Fatalf("Valid(%q) = %v, json.Valid says %v", in, got, want)
		}
		if len(in) > 0 && in[0] == '"' {
			if end, escaped, ok := SkipString(in, 0); ok && escaped != strings.Contains(string(in[:end]), `\`) {
				t.Fatalf("SkipString(%q): escaped %v", in, escaped)
			}
		}
	})
}

// Valid stops where encoding/json does: at 10,000 levels of nesting.
func TestValidDepth(t *testing.T) {
	for _, open := range []string{"[", `{"a":`} {
		closing := map[string]string{"[": "]", `{"a":`: "}"}[open]
		for _, n := range []int{MaxDepth, MaxDepth + 1} {
			doc := []byte(strings.Repeat(open, n) + "1" + strings.Repeat(closing, n))
			if got, want := Valid(doc), json.Valid(doc); got != want {
				t.Errorf("%d levels of %s: Valid %v, json.Valid %v", n, open, got, want)
			}
		}
	}
}

func BenchmarkValid(b *testing.B) {
	doc := []byte(`{"id":"msg_01","type":"message","content":[{"type":"text","text":"` +
		strings.Repeat(`Here is the change you asked for, with a test. \"quoted\"\n`, 70) + `"}],"usage":{"input_tokens":2095}}`)
	for _, bm := range []struct {
		name string
		fn   func([]byte) bool
	}{{"jsonsyntax", Valid}, {"encoding_json", json.Valid}} {
		b.Run(bm.name, func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			for b.Loop() {
				if !bm.fn(doc) {
					b.Fatal("invalid")
				}
			}
		})
	}
}
