package usage

import (
	"unicode/utf8"

	"github.com/relaystation/relay/internal/jsonsyntax"
)

// This file holds a tiny JSON scanner for the hot path: content_block_delta
// and ping events arrive by the thousand per response, and decoding each one
// with encoding/json would allocate for every event. The scanner reads just
// enough structure to find a key of an object and measure a string value; it
// does not validate and never allocates. Anything it does not understand makes
// it give up, which costs an estimate a few bytes, never a count.

// skipSpace returns the index of the first non-whitespace byte at or after i.
func skipSpace(b []byte, i int) int { return jsonsyntax.SkipSpace(b, i) }

// scanString reads the JSON string whose opening quote is at b[i]. It
// returns the index just past the closing quote and the length in bytes of
// the decoded string, counted as encoding/json decodes it: escapes become
// the bytes they stand for, a \u escape becomes the UTF-8 encoding of its
// rune (a surrogate pair one 4-byte rune, a lone surrogate U+FFFD), and each
// byte of invalid UTF-8 becomes U+FFFD.
func scanString(b []byte, i int) (end int, n int64, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return i, 0, false
	}
	i++
	for i < len(b) {
		// Fast path: a run of plain ASCII, one decoded byte each.
		j := i
		for j < len(b) && plainASCII[b[j]] {
			j++
		}
		n += int64(j - i)
		i = j
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			return i + 1, n, true
		case c == '\\':
			if i+1 >= len(b) {
				return i, n, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				n++
				i += 2
			case 'u':
				r, ok := hex4(b, i+2)
				if !ok {
					return i, n, false
				}
				i += 6
				if utf16IsSurrogate(r) {
					if r < 0xDC00 && i+6 <= len(b) && b[i] == '\\' && b[i+1] == 'u' {
						if r2, ok := hex4(b, i+2); ok && r2 >= 0xDC00 && r2 < 0xE000 {
							n += 4
							i += 6
							continue
						}
					}
					n += 3 // U+FFFD
					continue
				}
				n += int64(utf8.RuneLen(r))
			default:
				return i, n, false
			}
		case c < utf8.RuneSelf:
			n++
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				n += 3 // U+FFFD
			} else {
				n += int64(size)
			}
			i += size
		}
	}
	return i, n, false
}

// plainASCII marks the bytes that stand for themselves inside a JSON
// string: ASCII other than the quote and the backslash.
var plainASCII = func() (t [256]bool) {
	for c := range utf8.RuneSelf {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func utf16IsSurrogate(r rune) bool { return r >= 0xD800 && r < 0xE000 }

// hex4 decodes the four hex digits at b[i:i+4].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// skipValue returns the index just past the JSON value starting at b[i]
// (after whitespace). Objects and arrays are skipped by counting brackets
// outside strings, without validating what is inside.
func skipValue(b []byte, i int) (int, bool) {
	i = skipSpace(b, i)
	if i >= len(b) {
		return i, false
	}
	switch b[i] {
	case '"':
		end, _, ok := scanString(b, i)
		return end, ok
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				end, _, ok := scanString(b, i)
				if !ok {
					return end, false
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
			i++
		}
		return i, false
	default:
		// number, true, false, null: up to the next delimiter
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
}

// objectIter walks the members of one JSON object.
type objectIter struct {
	b []byte
	i int // next byte to read; -1 once finished or broken
}

// newObjectIter starts at the object that begins at b[i] (after whitespace).
func newObjectIter(b []byte, i int) objectIter {
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != '{' {
		return objectIter{b: b, i: -1}
	}
	return objectIter{b: b, i: i + 1}
}

// next returns the raw key (between the quotes, escapes left as they are)
// and the bounds of the member's value. The string length is the decoded
// length of the value when it is a string, -1 otherwise.
func (it *objectIter) next() (key []byte, valStart, valEnd int, strLen int64, ok bool) {
	if it.i < 0 {
		return nil, 0, 0, -1, false
	}
	b := it.b
	i := skipSpace(b, it.i)
	if i < len(b) && b[i] == ',' {
		i = skipSpace(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		it.i = -1 // "}" or garbage
		return nil, 0, 0, -1, false
	}
	kend, _, ok := scanString(b, i)
	if !ok {
		it.i = -1
		return nil, 0, 0, -1, false
	}
	key = b[i+1 : kend-1]
	i = skipSpace(b, kend)
	if i >= len(b) || b[i] != ':' {
		it.i = -1
		return nil, 0, 0, -1, false
	}
	valStart = skipSpace(b, i+1)
	strLen = -1
	if valStart < len(b) && b[valStart] == '"' {
		valEnd, strLen, ok = scanString(b, valStart)
	} else {
		valEnd, ok = skipValue(b, valStart)
	}
	if !ok {
		it.i = -1
		return nil, 0, 0, -1, false
	}
	it.i = valEnd
	return key, valStart, valEnd, strLen, true
}

// findKey returns the bounds of the value of key in the object at b[i].
func findKey(b []byte, i int, key string) (valStart, valEnd int, strLen int64, ok bool) {
	it := newObjectIter(b, i)
	for {
		k, vs, ve, n, more := it.next()
		if !more {
			return 0, 0, -1, false
		}
		if string(k) == key {
			return vs, ve, n, true
		}
	}
}

// stringValue returns the raw content of the JSON string b[start:end] when
// it has no escapes, which is always the case for the type names we match.
func stringValue(b []byte, start, end int) []byte {
	if end-start < 2 || b[start] != '"' {
		return nil
	}
	return b[start+1 : end-1]
}
