package upstream

import (
	"bytes"
	"encoding/json"
	"path"
	"reflect"
	"testing"
)

func TestRewriteModel(t *testing.T) {
	tests := []struct {
		name, body, to, want string
		ok                   bool
	}{
		{"simple", `{"model":"a","max_tokens":1}`, "b", `{"model":"b","max_tokens":1}`, true},
		{"spacing and order kept", "{ \"stream\" : true ,\n \"model\" :\t\"claude-sonnet-4-5\" , \"x\":[1, 2.50, {\"model\":\"inner\"}] }", "alias/x",
			"{ \"stream\" : true ,\n \"model\" :\t\"alias/x\" , \"x\":[1, 2.50, {\"model\":\"inner\"}] }", true},
		{"nested model untouched", `{"metadata":{"model":"a"},"messages":[{"model":"a"}]}`, "b", `{"metadata":{"model":"a"},"messages":[{"model":"a"}]}`, false},
		{"escaped key", `{"mod\u0065l":"a"}`, "b", `{"mod\u0065l":"b"}`, true},
		{"escapes in other strings", `{"system":"say \"model\": \\\"x\\\"","model":"a"}`, "b", `{"system":"say \"model\": \\\"x\\\"","model":"b"}`, true},
		{"duplicates all replaced", `{"model":"a","model":"c"}`, "b", `{"model":"b","model":"b"}`, true},
		{"needs escaping", `{"model":"a"}`, `we"ird`, `{"model":"we\"ird"}`, true},
		{"not a string", `{"model":7}`, "b", `{"model":7}`, false},
		{"no model", `{"max_tokens":1}`, "b", `{"max_tokens":1}`, false},
		{"not an object", `["model","a"]`, "b", `["model","a"]`, false},
		{"truncated", `{"model":"a","x":[`, "b", `{"model":"a","x":[`, false},
		{"empty", ``, "b", ``, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.body)
			orig := bytes.Clone(in)
			got, ok := rewriteModel(in, tt.to)
			if string(got) != tt.want || ok != tt.ok {
				t.Fatalf("rewriteModel = %s, %v; want %s, %v", got, ok, tt.want, tt.ok)
			}
			if !bytes.Equal(in, orig) {
				t.Fatal("the input was modified")
			}
		})
	}
}

// FuzzRewriteModel checks, for any body that is a JSON object, that only
// the model changes: decoding the result gives the input's fields with the
// new model.
func FuzzRewriteModel(f *testing.F) {
	for _, s := range []string{
		`{"model":"a","max_tokens":1}`,
		`{"messages":[{"role":"user","content":"model"}],"model":"claude"}`,
		`{"a":{"b":["}",{"model":"x"}]},"model":"y"}`,
		`{"model":"\u00e9\"","stream":true}`,
		`{}`, `[]`, `"model"`, `{"model":null}`,
	} {
		f.Add([]byte(s), "claude-sonnet-4-5")
	}
	f.Fuzz(func(t *testing.T, body []byte, to string) {
		orig := bytes.Clone(body)
		got, ok := rewriteModel(body, to)
		if !bytes.Equal(body, orig) {
			t.Fatal("the input was modified")
		}
		if !ok {
			if !bytes.Equal(got, body) {
				t.Fatal("changed a body it did not rewrite")
			}
			return
		}
		var in, out map[string]any
		if json.Unmarshal(body, &in) != nil {
			return // the scanner is lenient; the upstream judges invalid JSON
		}
		if err := json.Unmarshal(got, &out); err != nil {
			t.Fatalf("a valid body became invalid: %v\n%s", err, got)
		}
		var want string
		_ = json.Unmarshal(mustMarshal(to), &want) // invalid UTF-8 becomes U+FFFD
		if out["model"] != want {
			t.Fatalf("model = %v, want %q", out["model"], want)
		}
		delete(in, "model")
		delete(out, "model")
		if !reflect.DeepEqual(in, out) {
			t.Fatalf("other fields changed:\n%v\n%v", in, out)
		}
	})
}

func mustMarshal(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func TestServesModel(t *testing.T) {
	tests := []struct {
		globs []string
		mm    map[string]string
		model string
		want  bool
	}{
		{nil, nil, "anything", true},
		{[]string{"claude-sonnet-*"}, nil, "claude-sonnet-4-5", true},
		{[]string{"claude-sonnet-*"}, nil, "claude-opus-4-5", false},
		{[]string{"claude-sonnet-*"}, nil, "", true},
		{[]string{"claude-haiku-4-5"}, map[string]string{"claude-opus-4-5": "x"}, "claude-opus-4-5", true},
		{[]string{"claude-?aiku-*", "claude-opus-*"}, nil, "claude-haiku-4-5", true},
		{[]string{"claude-*"}, nil, "claude-x/y", false}, // '*' stops at '/', as in path.Match
		{[]string{"claude-*"}, nil, "claude-", true},
		{[]string{"claude-opus-4-5"}, nil, "claude-opus-4-5-20251101", false},
		{[]string{`claude\-*`}, nil, "claude-opus", true},
	}
	for _, tt := range tests {
		for _, p := range tt.globs {
			for _, m := range []string{tt.model, "claude-x/y", "claude-", "claude-opus-4-5"} {
				want, _ := path.Match(p, m)
				if got := compileGlobs([]string{p})[0].match(m); got != want {
					t.Errorf("glob %q on %q: %v, path.Match says %v", p, m, got, want)
				}
			}
		}
		if got := servesModel(compileGlobs(tt.globs), tt.mm, tt.model); got != tt.want {
			t.Errorf("servesModel(%v, %v, %q) = %v, want %v", tt.globs, tt.mm, tt.model, got, tt.want)
		}
	}
}
