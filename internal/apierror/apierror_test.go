package apierror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestTypeFor(t *testing.T) {
	for status, want := range map[int]string{
		400: InvalidRequest, 401: Authentication, 402: Billing, 403: Permission, 404: NotFound,
		405: InvalidRequest, 409: Conflict, 413: RequestTooLarge, 429: RateLimit, 500: API,
		502: API, 503: Overloaded, 504: Timeout, 529: Overloaded, 418: InvalidRequest,
	} {
		if got := TypeFor(status); got != want {
			t.Errorf("TypeFor(%d) = %s, want %s", status, got, want)
		}
	}
}

func TestWrite(t *testing.T) {
	rec := httptest.NewRecorder()
	e := New(http.StatusPaymentRequired, "quota used up")
	e.Header = http.Header{"Retry-After": {"5"}}
	Write(rec, e, "req_1")
	var body struct {
		Type  string `json:"type"`
		Error struct {
			Type, Message string
		} `json:"error"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 402 || body.Type != "error" || body.Error.Type != Billing || body.Error.Message != "quota used up" || body.RequestID != "req_1" {
		t.Errorf("%d %s", rec.Code, rec.Body)
	}
	if rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Retry-After") != "5" || rec.Header().Get("X-Should-Retry") != "false" {
		t.Errorf("headers %v", rec.Header())
	}
	rec = httptest.NewRecorder()
	Write(rec, New(529, "busy"), "")
	if rec.Header().Get("X-Should-Retry") != "" {
		t.Error("a retryable error told clients not to retry")
	}
}

func TestFrom(t *testing.T) {
	sentinel := errors.New("domain")
	mapper := func(err error) *Error {
		if errors.Is(err, sentinel) {
			return New(403, "mapped")
		}
		return nil
	}
	if e := From(fmt.Errorf("wrapped: %w", sentinel), mapper); e.Status != 403 {
		t.Errorf("mapped %+v", e)
	}
	own := New(409, "own")
	if e := From(fmt.Errorf("x: %w", own), mapper); e != own {
		t.Errorf("an *Error was not returned as is: %+v", e)
	}
	if e := From(context.DeadlineExceeded); e.Status != 504 {
		t.Errorf("deadline %+v", e)
	}
	if e := From(errors.New("db password is hunter2")); e.Status != 500 || e.Message != "internal error" {
		t.Errorf("an unknown error leaked: %+v", e)
	}
}
