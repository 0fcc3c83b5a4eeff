// Package sniff reads the few top-level fields of a Messages request the
// relay needs (model, stream, max_tokens, metadata.user_id) without decoding
// the body: the body is forwarded byte for byte, so decoding and re-encoding
// it is both wasted work and a way to lose field order or unknown fields.
//
// The scanner walks the top-level object once and skips every other value
// by tracking strings and nesting. It checks only as much JSON syntax as it
// needs; the upstream validates the rest.
package sniff

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"
)

// Request is what the relay reads from a request body.
type Request struct {
	Model     string
	Stream    bool
	MaxTokens int64
	// UserID is metadata.user_id, which Claude Code fills with a stable
	// per-user id; the upstream pool may use it for affinity.
	UserID string
}

// Errors, matched with errors.Is.
var (
	ErrNotJSON   = errors.New("request body is not valid JSON")
	ErrNotObject = errors.New("request body must be a JSON object")
)

// Parse sniffs body. It fails when body is not a JSON object (or is cut
// off), and when "model" appears twice: parsers disagree on which of two
// duplicate keys wins, so a body that says two models could pass the
// relay's model check with one and reach the upstream with the other.
// Keys are compared decoded ("mod\u0065l" is "model"), as the upstream's
// parser reads them. Missing fields are left zero for the caller to judge.
func Parse(body []byte) (Request, error) {
	var req Request
	models := 0
	err := Walk(body, func(key []byte, val []byte, _ int) {
		switch Key(key) {
		case "model":
			models++
			if val[0] == '"' {
				req.Model = unquote(val)
			}
		case "stream":
			req.Stream = bytes.Equal(val, []byte("true"))
		case "max_tokens":
			if n, err := strconv.ParseInt(string(val), 10, 64); err == nil {
				req.MaxTokens = n
			}
		case "metadata":
			if val[0] == '{' {
				var m struct {
					UserID string `json:"user_id"`
				}
				if json.Unmarshal(val, &m) == nil {
					req.UserID = m.UserID
				}
			}
		}
	})
	if err != nil {
		return Request{}, err
	}
	if models > 1 {
		return Request{}, ErrDuplicateModel
	}
	return req, nil
}

// ErrDuplicateModel: the body has more than one top-level "model".
var ErrDuplicateModel = errors.New("model: the field appears more than once")

// Key returns a quoted JSON key decoded ("mod\u0065l" is "model"). Keys
// without escapes, nearly all, are not allocated for by the comparison a
// caller makes with the result.
func Key(quoted []byte) string {
	if len(quoted) < 2 {
		return ""
	}
	if bytes.IndexByte(quoted, '\\') < 0 {
		return string(quoted[1 : len(quoted)-1])
	}
	var s string
	if json.Unmarshal(quoted, &s) != nil {
		return ""
	}
	return s
}

// Walk calls visit for each top-level member of the JSON object body,
// with the member's quoted key, its raw value and the value's offset in
// body. It checks only as much syntax as it needs to find the members.
func Walk(body []byte, visit func(key, val []byte, at int)) error {
	i := skipSpace(body, 0)
	if i >= len(body) {
		return ErrNotJSON
	}
	if body[i] != '{' {
		if body[i] == '[' || body[i] == '"' || body[i] == 't' || body[i] == 'f' || body[i] == 'n' || body[i] == '-' || (body[i] >= '0' && body[i] <= '9') {
			return ErrNotObject
		}
		return ErrNotJSON
	}
	i++
	for {
		i = skipSpace(body, i)
		if i >= len(body) {
			return ErrNotJSON
		}
		if body[i] == '}' {
			if j := skipSpace(body, i+1); j != len(body) {
				return ErrNotJSON
			}
			return nil
		}
		if body[i] != '"' {
			return ErrNotJSON
		}
		kEnd, ok := skipString(body, i)
		if !ok {
			return ErrNotJSON
		}
		key := body[i:kEnd]
		i = skipSpace(body, kEnd)
		if i >= len(body) || body[i] != ':' {
			return ErrNotJSON
		}
		i = skipSpace(body, i+1)
		vEnd, ok := skipValue(body, i)
		if !ok {
			return ErrNotJSON
		}
		visit(key, body[i:vEnd], i)
		i = skipSpace(body, vEnd)
		if i >= len(body) {
			return ErrNotJSON
		}
		switch body[i] {
		case ',':
			i++
		case '}':
		default:
			return ErrNotJSON
		}
	}
}

func unquote(v []byte) string {
	if bytes.IndexByte(v, '\\') < 0 && utf8.Valid(v) {
		return string(v[1 : len(v)-1])
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return ""
	}
	return s
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at b[i]=='"'.
func skipString(b []byte, i int) (int, bool) {
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

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{' || c == '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				end, ok := skipString(b, i)
				if !ok {
					return 0, false
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
		}
		return 0, false
	default:
		start := i
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
			i++
		}
		if i == start {
			return 0, false
		}
		return i, true
	}
}
