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
// relay's CPU. So the readers below validate once with jsonsyntax.Valid (a
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

var (
	usageNames = []string{"input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
		"cache_creation", "server_tool_use", "service_tier"}
	cacheNames = []string{"ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"}
	toolNames  = []string{"web_search_requests", "web_fetch_requests"}
)

// applyUsage applies a raw usage value to u as (*wireUsage).applyTo
// applies encoding/json's decoding of it, and says what that decoding
// would have seen: present when the value is anything but null or absent
// (encoding/json allocates the usage even for a value of the wrong type),
// output when output_tokens was set.
func applyUsage(raw []byte, u *Usage) (present, output bool) {
	if present, output, ok := readUsage(raw, u); ok {
		return present, output
	}
	w := decodeUsage(raw)
	if w == nil {
		return false, false
	}
	w.applyTo(u)
	return true, w.OutputTokens != nil
}

// readUsage is applyUsage without encoding/json: ok is false, and u
// untouched, when members declines the object or one inside it.
//
// It keeps encoding/json's rules for a field of the wrong type: null
// leaves the field as it was, an integer sets it, and any other value
// sets it to zero (encoding/json allocates the pointer, then fails to
// fill it).
func readUsage(raw []byte, u *Usage) (present, output, ok bool) {
	if raw == nil || isNull(raw) {
		return false, false, true
	}
	if raw[0] != '{' {
		return true, false, true
	}
	var f [7][]byte
	var c, t [2][]byte
	if !members(raw, usageNames, f[:]) || !members(f[4], cacheNames, c[:]) || !members(f[5], toolNames, t[:]) {
		return false, false, false
	}
	setInt(&u.InputTokens, f[0])
	setInt(&u.OutputTokens, f[1])
	setInt(&u.CacheCreationInputTokens, f[2])
	setInt(&u.CacheReadInputTokens, f[3])
	setInt(&u.CacheCreation5m, c[0])
	setInt(&u.CacheCreation1h, c[1])
	setInt(&u.WebSearchRequests, t[0])
	setInt(&u.WebFetchRequests, t[1])
	if f[6] != nil && !isNull(f[6]) {
		u.ServiceTier, _ = jsonString(f[6])
	}
	return true, f[1] != nil && !isNull(f[1]), true
}

func isNull(raw []byte) bool { return string(raw) == "null" }

// setInt sets *dst from a raw JSON value by encoding/json's rules for an
// *int64 field (see readUsage).
func setInt(dst *int64, raw []byte) {
	if raw == nil || isNull(raw) {
		return
	}
	v, _ := parseInt(raw)
	*dst = v
}

// parseInt reads a JSON number that is an integer in int64's range, as
// strconv.ParseInt does; anything else is 0, false.
func parseInt(raw []byte) (int64, bool) {
	neg := len(raw) > 0 && raw[0] == '-'
	d := raw
	if neg {
		d = raw[1:]
	}
	if len(d) == 0 || len(d) > 19 {
		return 0, false
	}
	var n uint64
	for _, ch := range d {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		n = n*10 + uint64(ch-'0') // 19 digits cannot overflow a uint64
	}
	if neg {
		if n > 1<<63 {
			return 0, false
		}
		return -int64(n), true
	}
	if n > 1<<63-1 {
		return 0, false
	}
	return int64(n), true
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
