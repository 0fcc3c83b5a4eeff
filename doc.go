// Package relay is a Claude API relay station (中转站) as a library: its
// http.Handlers turn any Go server into a relay that hands each team member
// a key of their own, forwards their Messages API calls to Anthropic with
// the real key, streams answers back untouched, counts every token (cache
// tokens too), enforces per-key token limits and records usage.
//
// Claude Code and the official SDKs work through it unchanged: point
// ANTHROPIC_BASE_URL at the relay and set ANTHROPIC_API_KEY (or
// ANTHROPIC_AUTH_TOKEN) to a relay key.
//
// A host passes its stores in through Config (storage/sqlite for one node,
// storage/memory for tests) and mounts Handler, or ProxyHandler,
// UsageHandler and AdminHandler separately under its own prefixes.
// examples/standalone is the full relay server built from this package.
//
// The request path, in one pass: request id → panic recovery → access log
// → key (verified once with bcrypt, then served from an in-process cache)
// → bounded body read and sniff of model, stream and max_tokens (the body
// itself is forwarded byte for byte) → authorization (enabled, unexpired,
// model allowed, token limit) → upstream → response streamed to the client
// while the usage extractor watches the bytes go by → asynchronous usage
// record.
package relay
