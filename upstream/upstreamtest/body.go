package upstreamtest

import (
	"strconv"
	"unicode/utf8"
)

// The answers are assembled with append rather than encoding/json: field
// order is part of what tests compare byte for byte, and encoding/json
// would escape <, > and & where the real API does not.

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as with encoding/json.
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendInt(dst []byte, n int64) []byte { return strconv.AppendInt(dst, n, 10) }

// appendEvent appends one SSE event: the event line that every SDK
// dispatches on, the data line, and the blank line that ends the event.
func appendEvent(dst []byte, name string, data []byte) []byte {
	dst = append(dst, "event: "...)
	dst = append(dst, name...)
	dst = append(dst, "\ndata: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}

// appendErrorBody appends the Anthropic error shape; requestID empty
// leaves request_id out, as in mid-stream error events.
func appendErrorBody(dst []byte, errType, message, requestID string) []byte {
	dst = append(dst, `{"type":"error","error":{"type":`...)
	dst = appendString(dst, errType)
	dst = append(dst, `,"message":`...)
	dst = appendString(dst, message)
	dst = append(dst, '}')
	if requestID != "" {
		dst = append(dst, `,"request_id":`...)
		dst = appendString(dst, requestID)
	}
	return append(dst, '}')
}

// splitText cuts s into n parts of nearly equal rune counts (fewer when s
// has fewer runes), never inside a rune.
func splitText(s string, n int) []string {
	runes := utf8.RuneCountInString(s)
	if n > runes {
		n = runes
	}
	if n <= 1 {
		return []string{s}
	}
	parts := make([]string, 0, n)
	start, seen, part := 0, 0, 0
	for i := range s {
		// Part k ends after (k+1)*runes/n runes.
		if seen == (part+1)*runes/n {
			parts = append(parts, s[start:i])
			start = i
			part++
		}
		seen++
	}
	return append(parts, s[start:])
}
