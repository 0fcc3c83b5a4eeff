package upstream

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestTransport(t *testing.T) {
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	}))
	s.EnableHTTP2 = true
	s.StartTLS()
	defer s.Close()

	tr := NewTransport(TransportConfig{DialTimeout: time.Second})
	defer tr.CloseIdleConnections()
	if tr.MaxIdleConnsPerHost < 100 || tr.Proxy == nil || tr.ResponseHeaderTimeout != 10*time.Minute ||
		tr.TLSHandshakeTimeout != 10*time.Second || tr.HTTP2 == nil || tr.HTTP2.SendPingTimeout == 0 {
		t.Fatalf("transport settings: idle/host %d, proxy %v, header timeout %v, TLS %v, h2 %+v",
			tr.MaxIdleConnsPerHost, tr.Proxy != nil, tr.ResponseHeaderTimeout, tr.TLSHandshakeTimeout, tr.HTTP2)
	}
	// Trust the test server's certificate; everything else stays as built.
	tr.TLSClientConfig = s.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	for range 2 {
		res, err := newClient(tr).Get(s.URL)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.ProtoMajor != 2 || string(b) != "HTTP/2.0" {
			t.Fatalf("spoke %s (server saw %s), want HTTP/2 where offered", res.Proto, b)
		}
	}
}

func TestNoRedirects(t *testing.T) {
	s := httptest.NewServer(http.RedirectHandler("http://example.invalid/steal", http.StatusTemporaryRedirect))
	defer s.Close()
	res, err := newClient(http.DefaultTransport).Get(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("status %d: the redirect was followed", res.StatusCode)
	}
}
