package sniff

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Request
		err  error
	}{
		{"basic", `{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			Request{Model: "claude-sonnet-4-5", MaxTokens: 1024, Stream: true}, nil},
		{"order and spaces", " {\n \"messages\" : [ {\"content\":\"}]{\\\"\"} ] ,\r\n\t\"stream\":false, \"model\" : \"m\" } ",
			Request{Model: "m"}, nil},
		{"escaped model", `{"model":"a\u0062c"}`, Request{Model: "abc"}, nil},
		{"metadata", `{"metadata":{"user_id":"u_1","x":[1,2]},"model":"m"}`, Request{Model: "m", UserID: "u_1"}, nil},
		{"model not string", `{"model":5}`, Request{}, nil},
		{"empty object", `{}`, Request{}, nil},
		{"array", `[1,2]`, Request{}, ErrNotObject},
		{"string", `"x"`, Request{}, ErrNotObject},
		{"number", `12`, Request{}, ErrNotObject},
		{"empty", ``, Request{}, ErrNotJSON},
		{"garbage", `<html>`, Request{}, ErrNotJSON},
		{"cut", `{"model":"m"`, Request{}, ErrNotJSON},
		{"cut string", `{"model":"m`, Request{}, ErrNotJSON},
		{"trailing", `{"model":"m"} x`, Request{}, ErrNotJSON},
		{"missing colon", `{"model" "m"}`, Request{}, ErrNotJSON},
		{"escaped key", `{"mod\u0065l":"claude-opus-4-5"}`, Request{Model: "claude-opus-4-5"}, nil},
		{"duplicate model", `{"model":"claude-haiku-4-5","model":"claude-opus-4-5"}`, Request{}, ErrDuplicateModel},
		{"duplicate via escape", `{"model":"a","m\u006fdel":"b"}`, Request{}, ErrDuplicateModel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.body))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err == nil && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// FuzzParse checks that Parse never panics and that, whenever encoding/json
// accepts a body as an object, Parse accepts it and finds the same model.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`{"model":"claude-sonnet-4-5","max_tokens":64000,"stream":true}`, `{"a":[{"b":"}"}],"model":"x"}`, `[]`, `{`, `{"model":"\u00e9"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := Parse(body)
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) != nil || m == nil {
			return
		}
		if errors.Is(err, ErrDuplicateModel) {
			return // refused on purpose: parsers disagree on duplicates
		}
		if err != nil {
			t.Fatalf("Parse rejected a valid object: %v", err)
		}
		var model string
		if raw, ok := m["model"]; ok && json.Unmarshal(raw, &model) == nil && model != got.Model {
			// Duplicate keys: encoding/json keeps the last, as do we.
			t.Fatalf("model = %q, encoding/json says %q", got.Model, model)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	body := []byte(`{"model":"claude-sonnet-4-5","max_tokens":64000,"stream":true,"system":[{"type":"text","text":"You are Claude Code."}],"messages":[{"role":"user","content":[{"type":"text","text":"` + string(make([]byte, 0)) + `hello"}]}],"metadata":{"user_id":"user_abc"}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := Parse(body); err != nil {
			b.Fatal(err)
		}
	}
}
