package upstreamtest_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/relaystation/relay/upstream/upstreamtest"
)

// A test points the code under test at s.URL instead of
// https://api.anthropic.com, queues the faults it wants to see handled, and
// compares what came out with what the fake sent.
func Example() {
	s := upstreamtest.New(upstreamtest.Config{APIKey: "sk-test", Text: "Hi there!", Deltas: 2})
	defer s.Close()

	// The first request meets an overload, the second gets through.
	s.Enqueue(upstreamtest.Fault{Status: 529, RetryAfter: 2 * time.Second})
	for range 2 {
		req, _ := http.NewRequest("POST", s.URL+"/v1/messages?beta=true",
			strings.NewReader(`{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hi"}]}`))
		req.Header.Set("x-api-key", "sk-test")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		fmt.Println(res.StatusCode, res.Header.Get("Content-Type"))
		if res.StatusCode != 200 {
			fmt.Println("retry-after:", res.Header.Get("Retry-After"))
			fmt.Println(strings.Split(string(body), `,"request_id"`)[0])
			continue
		}
		var events []string
		sc := bufio.NewScanner(strings.NewReader(string(body)))
		for sc.Scan() {
			if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				events = append(events, name)
			}
		}
		fmt.Println(strings.Join(events, " "))
		fmt.Println("byte for byte:", string(body) == string(s.StreamBody("claude-sonnet-4-5")))
	}
	u := s.ExpectedUsage()
	fmt.Println("usage:", u.InputTokens, u.CacheCreationInputTokens, u.CacheReadInputTokens, u.OutputTokens)
	fmt.Println("requests:", s.Count())
	// Output:
	// 529 application/json
	// retry-after: 2
	// {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}
	// 200 text/event-stream; charset=utf-8
	// message_start content_block_start ping content_block_delta content_block_delta content_block_stop message_delta message_stop
	// byte for byte: true
	// usage: 25 30 40 15
	// requests: 2
}

// A stream that fails half-way, as the real API does under load: a 200,
// some events, then an error event.
func ExampleFault_errorAfter() {
	s := upstreamtest.New(upstreamtest.Config{})
	defer s.Close()
	s.Enqueue(upstreamtest.Fault{ErrorAfter: 2})

	res, err := http.Post(s.URL+"/v1/messages", "application/json", strings.NewReader(`{"model":"claude-haiku-4-5","stream":true}`))
	if err != nil {
		panic(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	fmt.Println(res.StatusCode)
	fmt.Println(strings.Join(lines[len(lines)-2:], "\n"))
	// Output:
	// 200
	// event: error
	// data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}
}
