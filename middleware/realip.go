package middleware

import (
	"net"
	"net/http"
	"strings"
)

// RealIP sets r.RemoteAddr from header, for a server behind a load
// balancer or reverse proxy that sets it: everything that names the
// client (usage records, the admin login limiter, the access log) then
// sees the client, not the proxy. With X-Forwarded-For the last address
// is taken, the one the trusted proxy itself appended: earlier ones come
// from the client and can be forged. Use it only when every request
// passes through such a proxy; a request without a valid value keeps its
// RemoteAddr.
func RealIP(header string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if header == "" {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ip := lastIP(r.Header.Values(header)); ip != "" {
				r2 := *r
				r2.RemoteAddr = net.JoinHostPort(ip, "0")
				r = &r2
			}
			next.ServeHTTP(w, r)
		})
	}
}

func lastIP(values []string) string {
	if len(values) == 0 {
		return ""
	}
	v := values[len(values)-1]
	if i := strings.LastIndexByte(v, ','); i >= 0 {
		v = v[i+1:]
	}
	ip := net.ParseIP(strings.TrimSpace(v))
	if ip == nil {
		return ""
	}
	return ip.String()
}
