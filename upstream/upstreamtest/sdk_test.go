package upstreamtest

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
)

// These tests hold the fake to what the official Go SDK accepts: if the
// SDK cannot parse it, the fake does not speak the wire format.

func sdkClient(s *Server, opts ...option.RequestOption) anthropic.Client {
	return anthropic.NewClient(append([]option.RequestOption{
		option.WithBaseURL(s.URL), option.WithAPIKey("k"), option.WithRequestTimeout(30 * time.Second),
	}, opts...)...)
}

func sdkParams() anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     "claude-sonnet-4-5",
		MaxTokens: 100,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hi"))},
	}
}

func checkSDKMessage(t *testing.T, s *Server, m anthropic.Message) {
	t.Helper()
	u := s.ExpectedUsage()
	if m.ID != DefaultMessageID || string(m.Model) != "claude-sonnet-4-5" || m.StopReason != anthropic.StopReasonEndTurn || string(m.Role) != "assistant" {
		t.Errorf("message %s %s %s %s", m.ID, m.Model, m.StopReason, m.Role)
	}
	if len(m.Content) != 1 || m.Content[0].Type != "text" || m.Content[0].Text != s.Text() {
		t.Errorf("content %+v", m.Content)
	}
	got := m.Usage
	if got.InputTokens != u.InputTokens || got.OutputTokens != u.OutputTokens ||
		got.CacheCreationInputTokens != u.CacheCreationInputTokens || got.CacheReadInputTokens != u.CacheReadInputTokens ||
		got.CacheCreation.Ephemeral5mInputTokens != u.CacheCreation5m || got.CacheCreation.Ephemeral1hInputTokens != u.CacheCreation1h ||
		string(got.ServiceTier) != u.ServiceTier || got.ServerToolUse.WebSearchRequests != u.WebSearchRequests {
		t.Errorf("usage %s\nwant %+v", got.RawJSON(), u)
	}
}

func TestSDKStreaming(t *testing.T) {
	for _, cfg := range []Config{
		{APIKey: "k"},
		{APIKey: "k", FullDeltaUsage: true, PingEvery: 1, Deltas: 9},
		{APIKey: "k", Usage: &Usage{InputTokens: 1000, OutputTokens: 2000, CacheReadInputTokens: 3000, WebSearchRequests: 3, ServiceTier: "priority"}},
	} {
		s := newServer(t, cfg)
		client := sdkClient(s)
		stream := client.Messages.NewStreaming(context.Background(), sdkParams())
		var m anthropic.Message
		for stream.Next() {
			if err := m.Accumulate(stream.Current()); err != nil {
				t.Fatal(err)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		_ = stream.Close()
		checkSDKMessage(t, s, m)
		r, _ := s.LastRequest()
		key := r.Header.Get("X-Api-Key") + strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if key != "k" || r.Header.Get("Anthropic-Version") == "" || !strings.Contains(string(r.Body), `"stream":true`) {
			t.Errorf("SDK request %v %s", r.Header, r.Body)
		}
	}
}

func TestSDKMessage(t *testing.T) {
	s := newServer(t, Config{APIKey: "k"})
	client := sdkClient(s)
	m, err := client.Messages.New(context.Background(), sdkParams())
	if err != nil {
		t.Fatal(err)
	}
	checkSDKMessage(t, s, *m)
}

func TestSDKRetriesFaults(t *testing.T) {
	s := newServer(t, Config{})
	s.Enqueue(
		Fault{Status: 529, RetryAfter: time.Millisecond},
		Fault{Status: 429, RetryAfter: time.Millisecond},
	)
	client := sdkClient(s)
	m, err := client.Messages.New(context.Background(), sdkParams())
	if err != nil {
		t.Fatal(err)
	}
	checkSDKMessage(t, s, *m)
	reqs := s.Requests()
	if len(reqs) != 3 || reqs[2].Header.Get("X-Stainless-Retry-Count") != "2" {
		t.Errorf("%d requests, last retry count %q", len(reqs), reqs[len(reqs)-1].Header.Get("X-Stainless-Retry-Count"))
	}

	// A dropped connection is retried too.
	s.Enqueue(Fault{Drop: true})
	if _, err := client.Messages.New(context.Background(), sdkParams()); err != nil {
		t.Errorf("after a drop: %v", err)
	}
}

func TestSDKErrors(t *testing.T) {
	s := newServer(t, Config{APIKey: "k"})
	client := sdkClient(s, option.WithMaxRetries(0))
	tests := []struct {
		fault   Fault
		status  int
		errType string
		message string
	}{
		{ErrorFault(400, "prompt is too long: 210000 tokens > 200000 maximum"), 400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"},
		{ErrorFault(529, ""), 529, "overloaded_error", "Overloaded"},
		{ErrorFault(402, ""), 402, "billing_error", defaultMessage("billing_error")},
	}
	for _, tt := range tests {
		s.Enqueue(tt.fault)
		_, err := client.Messages.New(context.Background(), sdkParams())
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("error %v is no *anthropic.Error", err)
		}
		if apiErr.StatusCode != tt.status || string(apiErr.Type()) != tt.errType || apiErr.Message != tt.message || !strings.HasPrefix(apiErr.RequestID, "req_") {
			t.Errorf("error %d %s %q %q", apiErr.StatusCode, apiErr.Type(), apiErr.Message, apiErr.RequestID)
		}
	}
	// A wrong key.
	wrong := sdkClient(s, option.WithAPIKey("wrong"), option.WithMaxRetries(0))
	_, err := wrong.Messages.New(context.Background(), sdkParams())
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Type() != "authentication_error" {
		t.Errorf("wrong key: %v", err)
	}
}

func TestSDKStreamFaults(t *testing.T) {
	s := newServer(t, Config{})
	client := sdkClient(s, option.WithMaxRetries(0))
	drain := func() (anthropic.Message, error) {
		stream := client.Messages.NewStreaming(context.Background(), sdkParams())
		defer stream.Close()
		var m anthropic.Message
		for stream.Next() {
			_ = m.Accumulate(stream.Current())
		}
		return m, stream.Err()
	}

	s.Enqueue(Fault{ErrorAfter: 4})
	m, err := drain()
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.Type() != "overloaded_error" || apiErr.Message != "Overloaded" {
		t.Errorf("mid-stream error: %v", err)
	}
	if m.Usage.InputTokens != s.ExpectedUsage().InputTokens {
		t.Errorf("message_start before the error not seen: %+v", m.Usage)
	}

	s.Enqueue(Fault{CutAfter: 5})
	if _, err := drain(); err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut stream: %v", err)
	}

	s.Enqueue(Fault{OmitUsage: true})
	m, err = drain()
	if err != nil || m.Usage.InputTokens != 0 || m.Usage.OutputTokens != 0 || m.Content[0].Text != s.Text() {
		t.Errorf("stream without usage: %v %+v", err, m.Usage)
	}

	// The SDK skips lines it does not understand: garbage gives no error,
	// but no message either. A relay has to notice on its own.
	s.Enqueue(GarbageFault())
	if m, _ := drain(); m.ID != "" || len(m.Content) != 0 {
		t.Errorf("garbage stream made a message: %+v", m)
	}
}

func TestSDKCountTokensAndModels(t *testing.T) {
	s := newServer(t, Config{CountTokens: 42, Models: []string{"claude-a-1", "claude-b-2", "claude-c-3"}})
	client := sdkClient(s)
	ctx := context.Background()
	n, err := client.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{
		Model:    "claude-a-1",
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hi"))},
	})
	if err != nil || n.InputTokens != 42 {
		t.Fatalf("count_tokens %v %v", n, err)
	}

	var ids []string
	pager := client.Models.ListAutoPaging(ctx, anthropic.ModelListParams{Limit: anthropic.Int(2)})
	for pager.Next() {
		ids = append(ids, pager.Current().ID)
	}
	if err := pager.Err(); err != nil || strings.Join(ids, ",") != "claude-a-1,claude-b-2,claude-c-3" {
		t.Errorf("auto-paged models %v %v", ids, err)
	}
	if got := s.Count(); got != 3 { // count_tokens + two pages
		t.Errorf("%d requests", got)
	}
	info, err := client.Models.Get(ctx, "claude-b-2", anthropic.ModelGetParams{})
	if err != nil || info.ID != "claude-b-2" || info.DisplayName != "Claude B 2" || info.CreatedAt.IsZero() {
		t.Errorf("model %+v %v", info, err)
	}
	_, err = client.Models.Get(ctx, "nope", anthropic.ModelGetParams{})
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
		t.Errorf("unknown model: %v", err)
	}
}

func TestSDKBatchesAndFiles(t *testing.T) {
	s := newServer(t, Config{})
	client := sdkClient(s)
	ctx := context.Background()
	b, err := client.Messages.Batches.New(ctx, anthropic.MessageBatchNewParams{
		Requests: []anthropic.MessageBatchNewParamsRequest{{
			CustomID: "one",
			Params: anthropic.MessageBatchNewParamsRequestParams{
				Model: "claude-sonnet-4-5", MaxTokens: 10,
				Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hi"))},
			},
		}},
	})
	if err != nil || b.ProcessingStatus != "in_progress" {
		t.Fatalf("batch %+v %v", b, err)
	}
	b, err = client.Messages.Batches.Get(ctx, b.ID, anthropic.MessageBatchGetParams{})
	if err != nil || b.ProcessingStatus != "ended" || b.ResultsURL != s.URL+"/v1/messages/batches/"+b.ID+"/results" {
		t.Fatalf("batch %+v %v", b, err)
	}
	results := client.Messages.Batches.ResultsStreaming(ctx, b.ID, anthropic.MessageBatchResultsParams{})
	n := 0
	for results.Next() {
		r := results.Current()
		n++
		if r.CustomID != "one" || r.Result.Type != "succeeded" {
			t.Errorf("result %+v", r)
		}
		checkSDKMessage(t, s, r.Result.Message)
	}
	if err := results.Err(); err != nil || n != 1 {
		t.Errorf("%d results, %v", n, err)
	}

	f, err := client.Files.Upload(ctx, anthropic.FileUploadParams{File: anthropic.File(strings.NewReader("hello file"), "a.txt", "text/plain")})
	if err != nil || f.Filename != "a.txt" || f.SizeBytes != 10 || f.MimeType != "text/plain" {
		t.Fatalf("upload %+v %v", f, err)
	}
	res, err := client.Files.Download(ctx, f.ID, anthropic.FileDownloadParams{})
	if err != nil {
		t.Fatal(err)
	}
	content, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(content) != "hello file" {
		t.Errorf("content %q", content)
	}
	if _, err := client.Files.Delete(ctx, f.ID, anthropic.FileDeleteParams{}); err != nil {
		t.Errorf("delete: %v", err)
	}
}
