package upstream

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestCopyRequestHeaders(t *testing.T) {
	src := http.Header{
		"X-Api-Key":         {"sk-proxy-user"},
		"Authorization":     {"Bearer sk-proxy-user"},
		"Anthropic-Version": {"2023-06-01"},
		"Anthropic-Beta":    {"a-2025-01-01,b-2025-02-02"},
		"Anthropic-Dangerous-Direct-Browser-Access": {"true"},
		"X-Stainless-Retry-Count":                   {"2"},
		"User-Agent":                                {"claude-cli/2.1.0"},
		"Connection":                                {"keep-alive, X-Custom-Hop"},
		"X-Custom-Hop":                              {"1"},
		"Keep-Alive":                                {"timeout=5"},
		"Transfer-Encoding":                         {"chunked"},
		"Proxy-Authorization":                       {"Basic x"},
		"Accept-Encoding":                           {"gzip, br, zstd"},
		"Cookie":                                    {"a=b"},
		"X-Forwarded-For":                           {"10.0.0.1"},
		"X-App":                                     {"cli"},
	}
	dst := http.Header{}
	CopyRequestHeaders(dst, src)
	for _, k := range []string{"Anthropic-Version", "Anthropic-Beta", "Anthropic-Dangerous-Direct-Browser-Access", "X-Stainless-Retry-Count", "User-Agent", "X-App"} {
		if dst.Get(k) != src.Get(k) {
			t.Errorf("%s = %q, want %q", k, dst.Get(k), src.Get(k))
		}
	}
	for _, k := range []string{"X-Api-Key", "Authorization", "Connection", "X-Custom-Hop", "Keep-Alive", "Transfer-Encoding", "Proxy-Authorization", "Accept-Encoding", "Cookie", "X-Forwarded-For"} {
		if _, ok := dst[k]; ok {
			t.Errorf("%s was forwarded", k)
		}
	}
	dst["Anthropic-Beta"][0] = "changed"
	if src.Get("Anthropic-Beta") == "changed" {
		t.Error("the copy shares its slices with the source")
	}
}

func TestCopyResponseHeaders(t *testing.T) {
	src := http.Header{
		"Request-Id":                             {"req_1"},
		"Anthropic-Organization-Id":              {"org"},
		"Set-Cookie":                             {"__cf_bm=x"},
		"Retry-After":                            {"3"},
		"Anthropic-Ratelimit-Requests-Remaining": {"10"},
		"Content-Type":                           {"application/json"},
		"Content-Length":                         {"10"},
		"Connection":                             {"close"},
	}
	dst := http.Header{}
	CopyResponseHeaders(dst, src)
	for _, k := range []string{"Request-Id", "Retry-After", "Anthropic-Ratelimit-Requests-Remaining", "Content-Type"} {
		if dst.Get(k) == "" {
			t.Errorf("%s was dropped", k)
		}
	}
	for _, k := range []string{"Anthropic-Organization-Id", "Set-Cookie", "Content-Length", "Connection"} {
		if _, ok := dst[k]; ok {
			t.Errorf("%s reached the client", k)
		}
	}
}

func TestNewRequest(t *testing.T) {
	u, err := New("", "https://gw.example/anthropic/", "sk-ant-real", AuthBearer)
	if err != nil {
		t.Fatal(err)
	}
	client := httptest.NewRequest("POST", "/v1/messages?beta=true", nil)
	client.Header.Set("X-Api-Key", "sk-proxy-user")
	req, err := u.NewRequest(t.Context(), client, "/v1/messages", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if req.URL.String() != "https://gw.example/anthropic/v1/messages?beta=true" || u.Name != "gw.example" {
		t.Errorf("url %s name %s", req.URL, u.Name)
	}
	if req.Header.Get("Authorization") != "Bearer sk-ant-real" || req.Header.Get("X-Api-Key") != "" {
		t.Errorf("credentials %v", req.Header)
	}
	if req.GetBody == nil {
		t.Error("the body cannot be replayed")
	}
	for _, bad := range []string{"ftp://x", "/relative", "https://x/?q=1", "http://"} {
		if _, err := New("", bad, "k", AuthAPIKey); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := New("", "", "", AuthAPIKey); err == nil {
		t.Error("an empty credential was accepted")
	}
}
