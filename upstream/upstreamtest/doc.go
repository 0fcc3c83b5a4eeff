// Package upstreamtest is a fake Anthropic API server, in the style of
// net/http/httptest, for testing code that talks to the Messages API: the
// relay's own tests, its load tool, and the tests of anyone embedding it.
//
// The fake speaks the wire format of the real API as the official SDKs and
// Claude Code see it: SSE streams with their event lines, usage with cache
// counts in message_start and cumulative counts in message_delta, the
// Anthropic error shape, request-id and anthropic-organization-id headers.
// Its answers are deterministic, so a test can compare what a relay passed
// on against [Server.StreamBody] or [Server.MessageBody] byte for byte and
// what it counted against [Server.ExpectedUsage].
//
// Faults ([Fault]) make it misbehave the way real upstreams do: error
// statuses with retry-after headers, latency, streams cut mid-way or ended
// by an error event, answers without usage, HTML or garbage bodies. They
// are queued one-shot with [Server.Enqueue] or set sticky with
// [Server.SetDefault], also while requests are in flight.
//
// Endpoints: POST /v1/messages (with or without ?beta=true, streamed when
// the body says "stream": true), POST /v1/messages/count_tokens,
// GET /v1/models and /v1/models/{id}, a small Message Batches API and a
// small Files API. Anything else gets 404 not_found_error.
//
// Answers are built once in [New]; serving a message only copies bytes,
// so the fake keeps up with a load tool sending tens of thousands of
// requests a second (set [Config].DontRecord there).
package upstreamtest
