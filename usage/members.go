package usage

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"github.com/relaystation/relay/internal/sniff"
)

// The answers the relay reads usage from are mostly text the model wrote:
// a non-streaming answer to Claude Code is tens of kilobytes of content
// around a usage object of two hundred bytes. encoding/json reads the
// whole document twice (validation, then decoding, skipping what no field
// wants, byte by byte); profiles of the load tool put that at 4 % of the
// relay's CPU. So the readers below validate once with json.Valid (a
// document encoding/json would refuse still yields nothing), find the few
// members they need with sniff.Walk, and decode only those.
//
// encoding/json also matches keys case-insensitively and lets a repeated
// key win; members reports such documents, which no Anthropic answer is,
// and the readers then decode them the slow way, so both ways always agree
// (FuzzFromJSON checks that they do).

// members stores in vals[i] the raw value of the top-level member of obj
// named names[i], or nil. obj is valid JSON; a document that is not an
// object has no members. It returns false when an exact-name lookup could
// differ from encoding/json: a key with an escape, a name twice, or a key
// that differs from a name only in case.
func members(obj []byte, names []string, vals [][]byte) bool {
	clear(vals)
	fast := true
	_ = sniff.Walk(obj, func(key, val []byte, _ int) {
		k := key[1 : len(key)-1]
		if bytes.IndexByte(k, '\\') >= 0 {
			fast = false
			return
		}
		for i, n := range names {
			if string(k) == n {
				if vals[i] != nil {
					fast = false
				}
				vals[i] = val
				return
			}
			if bytes.EqualFold(k, []byte(n)) {
				fast = false
				return
			}
		}
	})
	return fast
}

// jsonString decodes raw when it is a JSON string; anything else (null, a
// number) is "", as encoding/json leaves a string field it cannot fill.
func jsonString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	in := raw[1 : len(raw)-1]
	if bytes.IndexByte(in, '\\') < 0 && utf8.Valid(in) {
		return string(in), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// decodeUsage decodes a raw usage value; nil when it is absent, null or
// not an object.
func decodeUsage(raw []byte) *wireUsage {
	if raw == nil {
		return nil
	}
	var w *wireUsage
	if !unmarshal(raw, &w) {
		return nil
	}
	return w
}
