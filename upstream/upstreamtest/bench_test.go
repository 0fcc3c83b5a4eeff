package upstreamtest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// discardWriter is a ResponseWriter that keeps nothing, so that the
// benchmarks measure the fake's own cost rather than the network's.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Flush()                      {}

func benchmarkMessages(b *testing.B, stream bool) {
	s := NewUnstarted(Config{DontRecord: true})
	defer s.Close()
	h := s.Handler()
	body := []byte(msgBody(model, stream))
	w := &discardWriter{h: make(http.Header)}
	rd := bytes.NewReader(body)
	req := httptest.NewRequest("POST", "/v1/messages?beta=true", io.NopCloser(rd))
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(body)
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

func BenchmarkStream(b *testing.B)  { benchmarkMessages(b, true) }
func BenchmarkMessage(b *testing.B) { benchmarkMessages(b, false) }

func BenchmarkSniff(b *testing.B) {
	body := bytes.Repeat([]byte(`{"role":"user","content":"some words of a long conversation, \"quoted\" too"},`), 1000)
	body = append(append([]byte(`{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[`), body[:len(body)-1]...), `],"stream":true}`...)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := sniff(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStreamHTTP is the whole round trip over loopback.
func BenchmarkStreamHTTP(b *testing.B) {
	s := New(Config{DontRecord: true})
	defer s.Close()
	client := s.Client()
	body := []byte(msgBody(model, true))
	b.ReportAllocs()
	for b.Loop() {
		res, err := client.Post(s.URL+"/v1/messages", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
}
