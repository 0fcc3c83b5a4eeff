package upstream

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
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
		res, err := (&http.Client{Transport: tr}).Get(s.URL)
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

// A redirect from an upstream goes back to the client as it is: following
// it would carry the credential elsewhere.
func TestNoRedirects(t *testing.T) {
	var followed atomic.Bool
	elsewhere := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { followed.Store(true) }))
	defer elsewhere.Close()
	s := httptest.NewServer(http.RedirectHandler(elsewhere.URL+"/steal", http.StatusTemporaryRedirect))
	defer s.Close()
	p, err := NewPool(PoolConfig{Upstreams: []Config{{Name: "a", BaseURL: s.URL, Credential: "sk-secret"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	req := httptest.NewRequest("POST", "/v1/messages", nil)
	res, err := p.Do(t.Context(), Call{Client: req, Body: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	res.Release(Outcome{})
	if res.Response.StatusCode != http.StatusTemporaryRedirect || followed.Load() {
		t.Fatalf("status %d, followed %v: the redirect was followed", res.Response.StatusCode, followed.Load())
	}
}

// roundTripFunc is a RoundTripper stub: a host's transport that breaks
// the contract must not break the pool.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestPoolGuardsTheTransport(t *testing.T) {
	for _, tt := range []struct {
		name string
		rt   roundTripFunc
		ok   bool
	}{
		{"no response, no error", func(*http.Request) (*http.Response, error) { return nil, nil }, false},
		{"nil body, 200", func(*http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 200, Header: http.Header{}}, nil
		}, true},
		{"nil body, 500", func(*http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 500, Header: http.Header{}}, nil
		}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPool(PoolConfig{
				Upstreams: []Config{{Name: "a", BaseURL: "http://a.invalid", Credential: "k"}},
				Transport: tt.rt,
				Retry:     RetryPolicy{Attempts: 1},
			})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest("POST", "/v1/messages", nil)
			res, err := p.Do(t.Context(), Call{Client: req, Body: []byte(`{}`)})
			if !tt.ok {
				if err == nil {
					res.Release(Outcome{})
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer res.Release(Outcome{})
			if b, err := io.ReadAll(res.Response.Body); err != nil || len(b) != 0 {
				t.Fatalf("body %q, %v", b, err)
			}
		})
	}
}

// An h2c transport speaks HTTP/2 only and goes direct: HTTP/2 with prior
// knowledge cannot pass an HTTP/1.1 proxy.
func TestTransportH2C(t *testing.T) {
	tr := NewTransport(TransportConfig{UnencryptedHTTP2: true})
	if tr.Protocols == nil || !tr.Protocols.UnencryptedHTTP2() || tr.Protocols.HTTP1() || tr.Proxy != nil {
		t.Fatalf("protocols %v, proxy set %v", tr.Protocols, tr.Proxy != nil)
	}
	if tr := NewTransport(TransportConfig{}); tr.Protocols != nil || tr.Proxy == nil {
		t.Fatalf("the default transport changed: protocols %v, proxy set %v", tr.Protocols, tr.Proxy != nil)
	}
}
