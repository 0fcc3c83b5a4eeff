package upstreamtest

import (
	"net/http"
	"strings"
	"time"
)

// Usage is the token accounting the fake reports for every message. The
// relay's job is to count these numbers exactly, so tests compare what the
// relay recorded against [Server.ExpectedUsage].
type Usage struct {
	InputTokens              int64
	OutputTokens             int64
	CacheCreationInputTokens int64
	CacheReadInputTokens     int64
	// CacheCreation5m and CacheCreation1h split the cache writes by lifetime
	// (usage.cache_creation.ephemeral_{5m,1h}_input_tokens); the real API
	// reports them so that they add up to CacheCreationInputTokens, but the
	// fake sends whatever is set.
	CacheCreation5m int64
	CacheCreation1h int64
	// WebSearchRequests and WebFetchRequests are usage.server_tool_use.
	WebSearchRequests int64
	WebFetchRequests  int64
	// ServiceTier is usage.service_tier; empty leaves the field out.
	ServiceTier string
	// InferenceGeo is usage.inference_geo; empty leaves the field out.
	InferenceGeo string
}

// DefaultUsage is what the fake reports when Config.Usage is nil. Every
// token count is non-zero and distinct, so a relay that drops a field or
// mixes two of them up fails its test instead of passing on zeros.
func DefaultUsage() Usage {
	return Usage{
		InputTokens:              25,
		OutputTokens:             15,
		CacheCreationInputTokens: 30,
		CacheReadInputTokens:     40,
		CacheCreation5m:          20,
		CacheCreation1h:          10,
		ServiceTier:              "standard",
	}
}

// Defaults used for zero Config fields.
const (
	DefaultText           = "Hello! This answer comes from upstreamtest, a fake Claude."
	DefaultDeltas         = 4
	DefaultMessageID      = "msg_01UpstreamTestFakeMessage"
	DefaultOrganizationID = "5b6b1a0e-7f1c-4b8e-9d2a-0f1e2d3c4b5a"
	DefaultStopReason     = "end_turn"
)

// MaxBodyBytes is the real API's request size limit for Messages and
// count_tokens: bigger bodies get 413 request_too_large. The fake applies
// it to every endpoint.
const MaxBodyBytes = 32 << 20

// DefaultModels is the model list GET /v1/models answers when Config.Models
// is nil. It is a function, not a variable, so that no test can change what
// another one sees.
func DefaultModels() []string {
	return []string{
		"claude-opus-4-5-20251101",
		"claude-sonnet-4-5-20250929",
		"claude-haiku-4-5-20251001",
	}
}

// Config shapes the fake. Every zero value is usable: New(Config{}) answers
// like a healthy Anthropic API that accepts any key. Only the faults can
// change once the server runs ([Server.Enqueue], [Server.SetDefault]); the
// answers themselves are built once, up front, so that the hot path only
// copies bytes.
type Config struct {
	// APIKey, when set, must arrive as x-api-key or as Authorization: Bearer
	// (clients use either); other requests get 401 authentication_error.
	// Empty accepts every request, with or without a key.
	APIKey string

	// Usage is reported for every message; nil means DefaultUsage(). A
	// pointer so that an all-zero usage can be asked for.
	Usage *Usage
	// FullDeltaUsage makes message_delta carry the input and cache counts
	// and server_tool_use next to output_tokens, as newer streams do; by
	// default it carries output_tokens only (plus server_tool_use when a
	// server tool count is non-zero), as in PROTOCOL.md's example.
	FullDeltaUsage bool

	// Text is the answer; empty means DefaultText.
	Text string
	// Deltas is how many text_delta events carry Text, split on rune
	// boundaries into nearly equal parts; 0 means DefaultDeltas. It is
	// capped at the number of runes in Text.
	Deltas int
	// PingEvery adds a ping after every PingEvery-th text delta. One ping
	// always follows content_block_start, as with the real API; a negative
	// value sends no ping at all.
	PingEvery int
	// MessageID is the message id in every answer; empty means
	// DefaultMessageID. It is fixed so that tests can compare whole bodies.
	MessageID string
	// StopReason ends every message; empty means DefaultStopReason.
	StopReason string

	// Latency delays every answer before its headers (time to first byte).
	Latency time.Duration
	// EventDelay is slept between two stream events.
	EventDelay time.Duration

	// Models lists the models of GET /v1/models; nil means DefaultModels().
	Models []string
	// RejectUnknownModels answers 404 not_found_error to a message or
	// count_tokens request whose model is not in Models, as the real API
	// does for a model that does not exist. Off by default: tests use any
	// model name.
	RejectUnknownModels bool
	// CountTokens is the answer of count_tokens; 0 means an estimate of a
	// quarter of the request body's length, at least 1.
	CountTokens int64

	// OrganizationID is sent as anthropic-organization-id on every response
	// (a relay should strip it); empty means DefaultOrganizationID.
	OrganizationID string
	// Header holds extra headers for every response, such as
	// anthropic-ratelimit-*; New copies it.
	Header http.Header

	// DontRecord keeps the fake from recording requests (Requests stays
	// empty; the counters still count), for load tests that would otherwise
	// grow without bound.
	DontRecord bool

	// Faults are queued one-shot faults, as if passed to Enqueue; Default
	// is the sticky fault, as if passed to SetDefault.
	Faults  []Fault
	Default Fault

	// Now tells time for created_at fields of batches and files; nil means
	// time.Now.
	Now func() time.Time
}

// displayName turns a model id into the kind of name the real API shows:
// "claude-sonnet-4-5-20250929" becomes "Claude Sonnet 4.5".
func displayName(id string) string {
	parts := strings.Split(id, "-")
	if n := len(parts); n > 1 && isDate(parts[n-1]) {
		parts = parts[:n-1]
	}
	var b strings.Builder
	prevNum := false
	for i, p := range parts {
		if p == "" {
			continue
		}
		num := p[0] >= '0' && p[0] <= '9'
		switch {
		case i == 0:
		case num && prevNum:
			b.WriteByte('.')
		default:
			b.WriteByte(' ')
		}
		if !num {
			p = strings.ToUpper(p[:1]) + p[1:]
		}
		b.WriteString(p)
		prevNum = num
	}
	return b.String()
}

// createdAt takes a model's release date from its id's date suffix, or
// falls back to a fixed date so that answers stay deterministic.
func createdAt(id string) string {
	if i := strings.LastIndexByte(id, '-'); i >= 0 && isDate(id[i+1:]) {
		d := id[i+1:]
		return d[:4] + "-" + d[4:6] + "-" + d[6:] + "T00:00:00Z"
	}
	return "2025-01-01T00:00:00Z"
}

func isDate(s string) bool {
	if len(s) != 8 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
