package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		header http.Header
		want   time.Duration
		ok     bool
	}{
		{"none", http.Header{}, 0, false},
		{"seconds", http.Header{"Retry-After": {"3"}}, 3 * time.Second, true},
		{"fraction", http.Header{"Retry-After": {"1.5"}}, 1500 * time.Millisecond, true},
		{"ms wins", http.Header{"Retry-After": {"3"}, "Retry-After-Ms": {"2500"}}, 2500 * time.Millisecond, true},
		{"ms fraction", http.Header{"Retry-After-Ms": {"0.5"}}, 500 * time.Microsecond, true},
		{"bad ms falls back", http.Header{"Retry-After": {"2"}, "Retry-After-Ms": {"soon"}}, 2 * time.Second, true},
		{"date", http.Header{"Retry-After": {now.Add(90 * time.Second).Format(http.TimeFormat)}}, 90 * time.Second, true},
		{"past date", http.Header{"Retry-After": {now.Add(-time.Hour).Format(http.TimeFormat)}}, 0, true},
		{"negative", http.Header{"Retry-After": {"-1"}}, 0, false},
		{"garbage", http.Header{"Retry-After": {"later"}}, 0, false},
		{"huge is capped", http.Header{"Retry-After": {"1e12"}}, maxRetryAfter, true},
		{"inf", http.Header{"Retry-After": {"+Inf"}}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, ok := retryAfter(tt.header, now)
			if d != tt.want || ok != tt.ok {
				t.Fatalf("retryAfter = %v, %v; want %v, %v", d, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	p := RetryPolicy{Base: 100 * time.Millisecond, Cap: time.Second}
	tests := []struct {
		n    int
		rnd  float64
		want time.Duration
	}{
		{1, 0.999999, 99_999_900},
		{1, 0.5, 50 * time.Millisecond},
		{2, 0.5, 100 * time.Millisecond},
		{3, 0.5, 200 * time.Millisecond},
		{4, 0.5, 400 * time.Millisecond},
		{5, 0.5, 500 * time.Millisecond}, // capped at 1 s
		{60, 0.5, 500 * time.Millisecond},
		{3, 0, 0},
	}
	for _, tt := range tests {
		if got := backoff(&p, tt.n, tt.rnd); got != tt.want {
			t.Errorf("backoff(%d, %v) = %v, want %v", tt.n, tt.rnd, got, tt.want)
		}
	}
}

func TestClassifyStatus(t *testing.T) {
	tests := []struct {
		status      int
		shouldRetry string
		health      health
		retry       bool
	}{
		{200, "", hOK, false},
		{400, "", hOK, false},
		{404, "", hOK, false},
		{413, "", hOK, false},
		{401, "", hCredential, true},
		{403, "false", hCredential, true},
		{408, "", hFailure, true},
		{409, "", hNeutral, true},
		{429, "", hRateLimited, true},
		{500, "", hFailure, true},
		{501, "", hError, false},
		{502, "", hFailure, true},
		{503, "", hFailure, true},
		{504, "", hFailure, true},
		{529, "", hFailure, true},
		{529, "false", hFailure, false},
		{400, "true", hOK, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status, tt.shouldRetry), func(t *testing.T) {
			resp := &http.Response{StatusCode: tt.status, Header: http.Header{}}
			if tt.shouldRetry != "" {
				resp.Header.Set("x-should-retry", tt.shouldRetry)
			}
			h, retry := classifyStatus(resp)
			if h != tt.health || retry != tt.retry {
				t.Fatalf("classifyStatus = %v, %v; want %v, %v", h, retry, tt.health, tt.retry)
			}
		})
	}
}

func TestClassifyError(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		health  health
		timeout bool
	}{
		{"refused", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, hRefused, false},
		{"no host", &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}}, hRefused, false},
		{"reset", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, hFailure, false},
		{"header timeout", fmt.Errorf("%w after 1s", errHeaderTimeout), hFailure, true},
		{"deadline", context.DeadlineExceeded, hFailure, true},
		{"eof", errors.New("EOF"), hFailure, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if h := classifyError(tt.err); h != tt.health {
				t.Errorf("classifyError = %v, want %v", h, tt.health)
			}
			if got := isTimeout(tt.err); got != tt.timeout {
				t.Errorf("isTimeout = %v, want %v", got, tt.timeout)
			}
		})
	}
}

// FuzzRetryAfter: whatever an upstream sends, the wait is within bounds.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"3", "1.5", "-1", "1e400", "NaN", "Wed, 21 Oct 2015 07:28:00 GMT", ""} {
		f.Add(s, s)
	}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, secs, ms string) {
		h := http.Header{"Retry-After": {secs}, "Retry-After-Ms": {ms}}
		d, ok := retryAfter(h, now)
		if d < 0 || d > maxRetryAfter || (!ok && d != 0) {
			t.Fatalf("retryAfter(%q, %q) = %v, %v", secs, ms, d, ok)
		}
	})
}
