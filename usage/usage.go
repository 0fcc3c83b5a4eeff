// Package usage turns upstream responses into exact token counts and keeps
// one Record per relayed request.
//
// The extractor reads usage out of a JSON body or out of an SSE stream while
// the bytes go by, so the relay never holds a stream in memory and never
// re-encodes what the client receives. Counts in message_delta events are
// cumulative: they replace what was seen before, they are never added.
//
// It reads only what it needs: a syntax check, then the few members that
// hold the model and the usage, decoded by encoding/json's rules (members.go),
// never the whole answer; encoding/json itself serves the rare document
// those rules could read two ways.
package usage

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Usage is what Anthropic reports for one response. All counts are tokens,
// except the server tool counters, which count requests.
type Usage struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	// CacheCreation5m and CacheCreation1h split CacheCreationInputTokens by
	// cache lifetime when the upstream reports the split (they are priced
	// differently).
	CacheCreation5m   int64  `json:"cache_creation_5m_input_tokens"`
	CacheCreation1h   int64  `json:"cache_creation_1h_input_tokens"`
	WebSearchRequests int64  `json:"web_search_requests"`
	WebFetchRequests  int64  `json:"web_fetch_requests"`
	ServiceTier       string `json:"service_tier,omitempty"`
}

// TotalInput is input plus cache creation plus cache read: everything the
// model read.
func (u Usage) TotalInput() int64 {
	return u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
}

// Total is every token of the response, cache tokens included.
func (u Usage) Total() int64 { return u.TotalInput() + u.OutputTokens }

// IsZero reports whether no token was counted.
func (u Usage) IsZero() bool {
	return u.InputTokens == 0 && u.OutputTokens == 0 && u.CacheCreationInputTokens == 0 && u.CacheReadInputTokens == 0
}

// Add returns u with every count of v added. Use it to sum records, never to
// merge two events of one stream (stream counts are cumulative).
func (u Usage) Add(v Usage) Usage {
	u.InputTokens += v.InputTokens
	u.OutputTokens += v.OutputTokens
	u.CacheCreationInputTokens += v.CacheCreationInputTokens
	u.CacheReadInputTokens += v.CacheReadInputTokens
	u.CacheCreation5m += v.CacheCreation5m
	u.CacheCreation1h += v.CacheCreation1h
	u.WebSearchRequests += v.WebSearchRequests
	u.WebFetchRequests += v.WebFetchRequests
	return u
}

// StatusClientClosed is recorded when the client went away before the
// response was complete (nginx's convention).
const StatusClientClosed = 499

// Record is one relayed request, as kept in the usage store.
type Record struct {
	RequestID     string        `json:"request_id"`
	Time          time.Time     `json:"time"`
	KeyID         string        `json:"key_id"`
	Upstream      string        `json:"upstream,omitempty"`
	Method        string        `json:"method"`
	Path          string        `json:"path"`
	Model         string        `json:"model,omitempty"`          // as the client asked
	ResponseModel string        `json:"response_model,omitempty"` // as the upstream answered
	Stream        bool          `json:"stream"`
	Status        int           `json:"status"`
	ErrorType     string        `json:"error_type,omitempty"`
	Usage         Usage         `json:"usage"`
	Estimated     bool          `json:"estimated"` // counts came from the offline tokenizer, not the upstream
	CostUSD       float64       `json:"cost_usd"`
	Latency       time.Duration `json:"latency_ns"`
	TTFT          time.Duration `json:"ttft_ns"` // time to first byte of the response body
	ClientIP      string        `json:"client_ip,omitempty"`
	UserAgent     string        `json:"user_agent,omitempty"`
	SessionID     string        `json:"session_id,omitempty"` // x-claude-code-session-id
}

// Filter selects records. Zero fields match everything; From is inclusive,
// To exclusive.
type Filter struct {
	KeyID string
	Model string
	From  time.Time
	To    time.Time
}

// Totals sums a set of records.
type Totals struct {
	Requests int64 `json:"requests"`
	// Errors counts records with Status >= 400, client-closed (499)
	// included.
	Errors  int64   `json:"errors"`
	Usage   Usage   `json:"usage"`
	CostUSD float64 `json:"cost_usd"`
}

// Errors returned by stores.
var (
	// ErrNotFound: the record does not exist.
	ErrNotFound = errors.New("usage: not found")
	// ErrInvalidCursor: a pagination cursor the store did not issue.
	ErrInvalidCursor = errors.New("usage: invalid cursor")
	// ErrInvalidQuery: a report query the store cannot answer, such as an
	// unknown GroupBy.
	ErrInvalidQuery = errors.New("usage: invalid report query")
)

// Store keeps usage records, and a daily rollup of them that outlives the
// records (see Prune). Implementations live in storage/*; they answer
// Report with RunReport, so that every backend plans and groups reports
// the same way.
type Store interface {
	// InsertRecords stores records. It is idempotent on RequestID: a record
	// whose RequestID is already stored is skipped (the first one stored
	// wins), so a batch may be replayed after a failure without counting
	// anything twice. Every record must have a RequestID. Times are kept
	// at microsecond precision, in UTC. The daily rollup is updated in the
	// same transaction, with the records actually inserted only.
	InsertRecords(ctx context.Context, recs []Record) error
	// Totals sums the records that match f. It is Report with GroupNone:
	// whole UTC days come from the rollup, the partial days at either end
	// of f from the records.
	Totals(ctx context.Context, f Filter) (Totals, error)
	// ListRecords returns up to limit records matching f (limit <= 0 means
	// 100), newest first, starting after the cursor returned by the
	// previous call ("" for the first page). The returned cursor is "" on
	// the last page. A cursor the store did not issue is ErrInvalidCursor.
	ListRecords(ctx context.Context, f Filter, cursor string, limit int) ([]Record, string, error)
	// Report sums the records matching q.Filter, grouped by q.GroupBy; see
	// ReportQuery for which parts read the rollup and which the records.
	// An unknown GroupBy is ErrInvalidQuery.
	Report(ctx context.Context, q ReportQuery) (Report, error)
	// Prune deletes the records older than the UTC midnight at or before
	// before, and returns how many it deleted. The daily rollup is kept,
	// so reports over whole UTC days stay exact after their records are
	// gone. Rounding down to a midnight means only whole days are ever
	// pruned; a record replayed after its day was pruned is counted again.
	Prune(ctx context.Context, before time.Time) (int64, error)
}

// EncodeCursor is the request-log cursor every store issues: the last
// record's time in Unix microseconds and its RequestID, opaque to clients.
// One format for all stores, so a store can be swapped under a client that
// holds a cursor.
func EncodeCursor(micros int64, requestID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(micros, 10) + ":" + requestID))
}

// DecodeCursor reads a cursor of EncodeCursor's; ok is false for anything
// else (callers answer ErrInvalidCursor).
func DecodeCursor(c string) (micros int64, requestID string, ok bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", false
	}
	m, id, found := strings.Cut(string(b), ":")
	if !found {
		return 0, "", false
	}
	micros, err = strconv.ParseInt(m, 10, 64)
	if err != nil {
		return 0, "", false
	}
	return micros, id, true
}
