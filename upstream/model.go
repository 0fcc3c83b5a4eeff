package upstream

import (
	"github.com/relaystation/relay/internal/sniff"

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
	err := sniff.Walk(body, func(key, val []byte, at int) {
		if val[0] == '"' && sniff.Key(key) == "model" {
			spans = append(spans, [2]int{at, at + len(val)})
		}
	})
	if err != nil {
		return body, false
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
