package upstreamtest

import (
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/relaystation/relay/internal/jsonsyntax"
)

// sniffed is what the fake needs from a request body: the model to echo and
// whether to stream. The rest of the body is never decoded.
type sniffed struct {
	// model is the raw content of the "model" string, between the quotes.
	// It aliases the body. modelEscaped is set when it cannot be echoed as
	// it stands: it holds escapes or invalid UTF-8.
	model        []byte
	modelEscaped bool
	hasModel     bool
	// modelNotString is set when "model" is present but not a string.
	modelNotString bool
	stream         bool
	// streamNotBool is set when "stream" is neither a boolean nor null.
	streamNotBool bool
}

// errNotJSON and errNotObject tell a body the real API would refuse apart:
// both become 400 invalid_request_error, with different messages.
var (
	errNotJSON   = errors.New("invalid JSON")
	errNotObject = errors.New("not a JSON object")
)

// maxDepth bounds nesting as encoding/json does, so hostile bodies cannot
// exhaust the stack.
const maxDepth = jsonsyntax.MaxDepth

// sniff validates body as a JSON object and picks out its top-level "model"
// and "stream" members (the last one wins when a key repeats, as with
// encoding/json). It allocates nothing for the usual unescaped keys: the
// load tool sends tens of thousands of bodies a second through here, and
// decoding them whole with encoding/json would make the fake the bottleneck.
func sniff(body []byte) (sniffed, error) {
	var out sniffed
	i := skipSpace(body, 0)
	if i >= len(body) {
		return out, errNotJSON
	}
	if body[i] != '{' {
		// Still tell invalid JSON from a valid non-object.
		j, err := skipValue(body, i, 0)
		if err != nil || skipSpace(body, j) != len(body) {
			return out, errNotJSON
		}
		return out, errNotObject
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		i++
	} else {
		for {
			if i >= len(body) || body[i] != '"' {
				return out, errNotJSON
			}
			keyStart := i + 1
			end, escaped, err := skipString(body, i)
			if err != nil {
				return out, err
			}
			key := body[keyStart : end-1]
			i = skipSpace(body, end)
			if i >= len(body) || body[i] != ':' {
				return out, errNotJSON
			}
			i = skipSpace(body, i+1)
			if i >= len(body) {
				return out, errNotJSON
			}
			switch keyOf(key, escaped) {
			case keyModel:
				out.hasModel = true
				if body[i] == '"' {
					end, esc, err := skipString(body, i)
					if err != nil {
						return out, err
					}
					m := body[i+1 : end-1]
					out.model, out.modelEscaped, out.modelNotString = m, esc || !utf8.Valid(m), false
					i = end
				} else {
					out.model, out.modelEscaped, out.modelNotString = nil, false, true
					if i, err = skipValue(body, i, 1); err != nil {
						return out, err
					}
				}
			case keyStream:
				start := i
				if i, err = skipValue(body, i, 1); err != nil {
					return out, err
				}
				switch string(body[start:i]) {
				case "true":
					out.stream, out.streamNotBool = true, false
				case "false", "null":
					out.stream, out.streamNotBool = false, false
				default:
					out.stream, out.streamNotBool = false, true
				}
			default:
				if i, err = skipValue(body, i, 1); err != nil {
					return out, err
				}
			}
			i = skipSpace(body, i)
			if i >= len(body) {
				return out, errNotJSON
			}
			if body[i] == '}' {
				i++
				break
			}
			if body[i] != ',' {
				return out, errNotJSON
			}
			i = skipSpace(body, i+1)
		}
	}
	if skipSpace(body, i) != len(body) {
		return out, errNotJSON
	}
	return out, nil
}

const (
	keyOther = iota
	keyModel
	keyStream
)

// keyOf classifies a raw object key. Comparing string(key) in a switch does
// not allocate; escaped keys are rare enough to decode with encoding/json.
func keyOf(key []byte, escaped bool) int {
	if escaped {
		return keyOfName(unescape(key))
	}
	switch string(key) {
	case "model":
		return keyModel
	case "stream":
		return keyStream
	}
	return keyOther
}

func keyOfName(name string) int {
	switch name {
	case "model":
		return keyModel
	case "stream":
		return keyStream
	}
	return keyOther
}

// unescape decodes the content of a JSON string that sniff validated.
func unescape(raw []byte) string {
	q := make([]byte, 0, len(raw)+2)
	q = append(append(append(q, '"'), raw...), '"')
	var s string
	_ = json.Unmarshal(q, &s)
	return s
}

// The JSON grammar is internal/jsonsyntax's (json.Valid's rules); these
// give its answers the fake's error.

func skipSpace(b []byte, i int) int { return jsonsyntax.SkipSpace(b, i) }

// skipValue returns the index just past the JSON value starting at b[i].
func skipValue(b []byte, i, depth int) (int, error) {
	end, ok := jsonsyntax.SkipValue(b, i, depth)
	if !ok {
		return end, errNotJSON
	}
	return end, nil
}

// skipString returns the index just past the string starting at the quote
// b[i], and whether it holds an escape.
func skipString(b []byte, i int) (int, bool, error) {
	end, escaped, ok := jsonsyntax.SkipString(b, i)
	if !ok {
		return end, escaped, errNotJSON
	}
	return end, escaped, nil
}
