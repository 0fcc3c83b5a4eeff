package upstream

import (
	"bytes"
	"encoding/json"
	"path"
	"strings"
)

// glob is a compiled Config.Models pattern: most are an exact id or a
// prefix and a final '*', which need no path.Match.
type glob struct {
	pat  string
	kind byte // '=' exact, '*' prefix, 'm' path.Match
}

func compileGlobs(pats []string) []glob {
	out := make([]glob, 0, len(pats))
	for _, p := range pats {
		switch i := strings.IndexAny(p, `*?[\`); {
		case i < 0:
			out = append(out, glob{p, '='})
		case i == len(p)-1 && p[i] == '*':
			out = append(out, glob{p[:i], '*'})
		default:
			out = append(out, glob{p, 'm'})
		}
	}
	return out
}

func (g glob) match(s string) bool {
	switch g.kind {
	case '=':
		return s == g.pat
	case '*':
		return strings.HasPrefix(s, g.pat) && !strings.Contains(s[len(g.pat):], "/")
	}
	ok, _ := path.Match(g.pat, s)
	return ok
}

// servesModel reports whether an upstream with these settings takes
// model. Requests without a model go anywhere.
func servesModel(globs []glob, modelMap map[string]string, model string) bool {
	if model == "" || len(globs) == 0 {
		return true
	}
	if _, ok := modelMap[model]; ok {
		return true
	}
	for _, g := range globs {
		if g.match(model) {
			return true
		}
	}
	return false
}

// rewriteModel returns a copy of body whose top-level "model" string is
// to, and whether there was one to replace. Only the bytes of that string
// change: the body is never decoded and re-encoded, so field order,
// unknown fields, whitespace and number spellings survive. A body that is
// not a JSON object comes back unchanged (the upstream will say why).
// Duplicate top-level "model" keys are all replaced, so every JSON parser
// upstream reads the same model.
func rewriteModel(body []byte, to string) ([]byte, bool) {
	var spans [][2]int
	i := jsonSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return body, false
	}
	i++
	for {
		i = jsonSpace(body, i)
		if i >= len(body) {
			return body, false
		}
		if body[i] == '}' {
			break
		}
		if body[i] != '"' {
			return body, false
		}
		kEnd, ok := jsonString(body, i)
		if !ok {
			return body, false
		}
		key := body[i:kEnd]
		i = jsonSpace(body, kEnd)
		if i >= len(body) || body[i] != ':' {
			return body, false
		}
		i = jsonSpace(body, i+1)
		vEnd, ok := jsonValue(body, i)
		if !ok {
			return body, false
		}
		if body[i] == '"' && isModelKey(key) {
			spans = append(spans, [2]int{i, vEnd})
		}
		i = jsonSpace(body, vEnd)
		if i >= len(body) {
			return body, false
		}
		if body[i] == ',' {
			i++
			continue
		}
		if body[i] != '}' {
			return body, false
		}
		break
	}
	if len(spans) == 0 {
		return body, false
	}
	val, err := json.Marshal(to)
	if err != nil {
		return body, false
	}
	out := make([]byte, 0, len(body)+len(spans)*len(val))
	prev := 0
	for _, s := range spans {
		out = append(out, body[prev:s[0]]...)
		out = append(out, val...)
		prev = s[1]
	}
	return append(out, body[prev:]...), true
}

// isModelKey reports whether a quoted key decodes to "model" (escapes
// such as "mod\u0065l" included: the upstream's parser decodes them).
func isModelKey(quoted []byte) bool {
	if bytes.Equal(quoted, []byte(`"model"`)) {
		return true
	}
	if bytes.IndexByte(quoted, '\\') < 0 {
		return false
	}
	var s string
	return json.Unmarshal(quoted, &s) == nil && s == "model"
}

func jsonSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// jsonString returns the index just past the string that starts at
// b[i] == '"'.
func jsonString(b []byte, i int) (int, bool) {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1, true
		}
	}
	return 0, false
}

// jsonValue returns the index just past the value that starts at b[i]:
// a string, an object or array (nesting tracked, strings skipped whole),
// or a literal.
func jsonValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return jsonString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				end, ok := jsonString(b, i)
				if !ok {
					return 0, false
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1, true
				}
			}
		}
		return 0, false
	}
	start := i
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i, i > start
		}
		i++
	}
	return i, i > start
}
