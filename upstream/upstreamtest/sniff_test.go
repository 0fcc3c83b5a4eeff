package upstreamtest

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestSniff(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		err       error
		model     string
		hasModel  bool
		notString bool
		stream    bool
		streamBad bool
		modelEsc  bool
	}{
		{name: "usual", body: `{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"stream":true}`, model: "claude-sonnet-4-5", hasModel: true, stream: true},
		{name: "no stream", body: `{"model":"m","messages":[]}`, model: "m", hasModel: true},
		{name: "stream false", body: `{"stream":false,"model":"m"}`, model: "m", hasModel: true},
		{name: "stream null", body: `{"stream":null,"model":"m"}`, model: "m", hasModel: true},
		{name: "stream string", body: `{"stream":"yes","model":"m"}`, model: "m", hasModel: true, streamBad: true},
		{name: "last key wins", body: `{"model":"a","model":"b","stream":true,"stream":false}`, model: "b", hasModel: true},
		{name: "nested model ignored", body: `{"metadata":{"model":"x","stream":true},"model":"m"}`, model: "m", hasModel: true},
		{name: "no model", body: `{"messages":[]}`},
		{name: "model number", body: `{"model":5}`, hasModel: true, notString: true},
		{name: "escaped model", body: `{"model":"claude\u002dx"}`, model: "claude-x", hasModel: true, modelEsc: true},
		{name: "escaped key", body: `{"mo\u0064el":"m","str\u0065am":true}`, model: "m", hasModel: true, stream: true},
		{name: "whitespace", body: " \n{ \"model\" : \"m\" , \"stream\" :\ttrue }\r\n", model: "m", hasModel: true, stream: true},
		{name: "empty object", body: `{}`},
		{name: "deep values", body: `{"a":[1,-2.5e+3,0.1,true,false,null,{"b":[[],{}]}],"model":"m"}`, model: "m", hasModel: true},
		{name: "empty", body: ``, err: errNotJSON},
		{name: "array", body: `[{"model":"m"}]`, err: errNotObject},
		{name: "string", body: `"x"`, err: errNotObject},
		{name: "trailing", body: `{"model":"m"} x`, err: errNotJSON},
		{name: "two objects", body: `{}{}`, err: errNotJSON},
		{name: "unterminated", body: `{"model":"m"`, err: errNotJSON},
		{name: "trailing comma", body: `{"model":"m",}`, err: errNotJSON},
		{name: "bad number", body: `{"a":01}`, err: errNotJSON},
		{name: "bad escape", body: `{"a":"\x"}`, err: errNotJSON},
		{name: "raw newline in string", body: "{\"a\":\"x\ny\"}", err: errNotJSON},
		{name: "bad literal", body: `{"a":tru}`, err: errNotJSON},
		{name: "html", body: `<html></html>`, err: errNotJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sn, err := sniff([]byte(tt.body))
			if err != tt.err {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if got := modelString(&sn); got != tt.model || sn.hasModel != tt.hasModel || sn.modelNotString != tt.notString || sn.modelEscaped != tt.modelEsc {
				t.Errorf("model = %q has=%v notString=%v escaped=%v", got, sn.hasModel, sn.modelNotString, sn.modelEscaped)
			}
			if sn.stream != tt.stream || sn.streamNotBool != tt.streamBad {
				t.Errorf("stream = %v notBool=%v", sn.stream, sn.streamNotBool)
			}
		})
	}
}

func TestSniffDepthLimit(t *testing.T) {
	deep := `{"a":` + strings.Repeat("[", maxDepth+5) + strings.Repeat("]", maxDepth+5) + `}`
	if _, err := sniff([]byte(deep)); err == nil {
		t.Fatal("no error for nesting beyond maxDepth")
	}
}

func TestSniffDoesNotAllocate(t *testing.T) {
	body := []byte(`{"model":"claude-sonnet-4-5","max_tokens":1024,"system":[{"type":"text","text":"be brief"}],"messages":[{"role":"user","content":"hello \"there\""}],"stream":true}`)
	if n := testing.AllocsPerRun(100, func() { _, _ = sniff(body) }); n != 0 {
		t.Errorf("sniff allocates %v times per body", n)
	}
}

// FuzzSniff holds sniff to encoding/json's reading of the same bytes: the
// fake must refuse what the real API refuses and echo the model it reads.
func FuzzSniff(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","stream":true}`, `{"model":"a\"b","stream":null}`, `{"model":1}`, `[]`, `{"a":{"b":[1,2,{"c":"d"}]}}`,
		`{"mo\u0064el":"x"}`, `{"model":"\ud800"}`, "{\"model\":\"\xff\"}", `{"stream":tRue}`, ` {"x":-0.0e-0} `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		sn, err := sniff(body)
		valid := json.Valid(body)
		var top map[string]json.RawMessage
		isObject := valid && json.Unmarshal(body, &top) == nil && top != nil
		switch {
		case !valid:
			if err != errNotJSON {
				t.Fatalf("invalid JSON %q: err = %v", body, err)
			}
			return
		case !isObject:
			if err != errNotObject {
				t.Fatalf("non-object %q: err = %v", body, err)
			}
			return
		case err != nil:
			t.Fatalf("valid object %q: err = %v", body, err)
		}
		raw, ok := top["model"]
		if ok != sn.hasModel {
			t.Fatalf("%q: hasModel = %v", body, sn.hasModel)
		}
		var model string
		if ok {
			isString := json.Unmarshal(raw, &model) == nil && raw[0] == '"'
			if isString == sn.modelNotString {
				t.Fatalf("%q: modelNotString = %v", body, sn.modelNotString)
			}
			if isString {
				if got := modelString(&sn); got != model {
					t.Fatalf("%q: model = %q, want %q", body, got, model)
				}
				// The echoed bytes must decode to the same model.
				var echoed string
				if err := json.Unmarshal(append(append([]byte{'"'}, modelBytes(&sn)...), '"'), &echoed); err != nil || echoed != model {
					t.Fatalf("%q: echoed model %q (%v), want %q", body, modelBytes(&sn), err, model)
				}
			}
		}
		var stream *bool
		bad := false
		if raw, ok := top["stream"]; ok {
			bad = json.Unmarshal(raw, &stream) != nil
		}
		if bad != sn.streamNotBool || (!bad && (stream != nil && *stream) != sn.stream) {
			t.Fatalf("%q: stream = %v notBool = %v", body, sn.stream, sn.streamNotBool)
		}
	})
}
