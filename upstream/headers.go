package upstream

import (
	"net/http"
	"net/textproto"
	"strings"
)

// hopByHop are the connection-level headers of RFC 9110 §7.6.1 that a proxy
// must not forward.
var hopByHop = [...]string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// requestDrop are request headers that never go upstream: the client's
// credentials (the upstream credential replaces them), what the transport
// sets itself, and what would reveal the client to the upstream account.
var requestDrop = [...]string{
	"X-Api-Key", "Authorization", "Host", "Content-Length", "Accept-Encoding",
	"Cookie", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip",
}

// responseDrop are response headers that identify the upstream account or
// would set state in the user's client; they never reach a user.
var responseDrop = [...]string{
	"Anthropic-Organization-Id", "Anthropic-Workspace-Id", "Set-Cookie", "Content-Length",
}

// CopyRequestHeaders copies a client's headers to an upstream request:
// every anthropic-* header, x-stainless-*, user-agent and the rest byte
// for byte, minus hop-by-hop headers and credentials. Headers are an open
// list: nothing is allow-listed, because a dropped anthropic-beta makes the
// upstream refuse a body that uses the beta.
func CopyRequestHeaders(dst, src http.Header) {
	copyHeaders(dst, src, requestDrop[:])
}

// CopyResponseHeaders copies an upstream response's headers for the client,
// minus hop-by-hop headers and the ones that identify the upstream account.
// request-id, the rate-limit headers and retry-after pass through.
func CopyResponseHeaders(dst, src http.Header) {
	copyHeaders(dst, src, responseDrop[:])
}

func copyHeaders(dst, src http.Header, drop []string) {
	var connTokens []string
	for _, v := range src["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				connTokens = append(connTokens, textproto.CanonicalMIMEHeaderKey(f))
			}
		}
	}
	// One backing array for all the values, as http.Header.Clone does:
	// a header is a dozen names each way, and one allocation each added up.
	n := 0
	for _, vv := range src {
		n += len(vv)
	}
	buf := make([]string, 0, n)
	for k, vv := range src {
		if dropped(k, drop, connTokens) {
			continue
		}
		i := len(buf)
		buf = append(buf, vv...)
		dst[k] = buf[i:len(buf):len(buf)] // capped: an append to one cannot overwrite the next
	}
}

func dropped(k string, drop, connTokens []string) bool {
	for _, h := range hopByHop {
		if k == h {
			return true
		}
	}
	for _, h := range drop {
		if k == h {
			return true
		}
	}
	for _, h := range connTokens {
		if k == h {
			return true
		}
	}
	return false
}
