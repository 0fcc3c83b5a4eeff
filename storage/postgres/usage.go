package postgres

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/relaystation/relay/usage"
)

const recordColumns = `request_id, time, key_id, upstream, method, path, model, response_model,
	stream, status, error_type,
	input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
	cache_creation_5m_input_tokens, cache_creation_1h_input_tokens, web_search_requests, web_fetch_requests,
	service_tier, estimated, cost_usd, latency_ns, ttft_ns, client_ip, user_agent, session_id`

// insertRecordSQL skips a RequestID already stored, committed or inserted
// earlier in the same batch, which is what makes a replayed batch count
// once.
const insertRecordSQL = `INSERT INTO usage_records (` + recordColumns + `)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
		$21, $22, $23, $24, $25, $26, $27)
	ON CONFLICT (request_id) DO NOTHING`

// InsertRecords stores recs in one round trip: a pgx.Batch of one prepared
// INSERT per record, which Postgres runs as one implicit transaction, so a
// batch lands whole or not at all and costs one commit.
//
// Records are sent in request-id order. Two overlapping batches from
// different relay instances then take the unique index's row locks in the
// same order and one waits for the other, where batches in arbitrary order
// could deadlock. The sort is stable and later duplicates are dropped
// before sending, so the first record with a RequestID is the one kept.
//
// Text that a Postgres text column cannot hold is stored with U+FFFD in
// place of each NUL byte and invalid UTF-8 run (see pgText): much of a
// record comes from the client (User-Agent, model, session id), and one
// such record must not make the whole batch, other users' usage included,
// fail on every retry.
func (s *Store) InsertRecords(ctx context.Context, recs []usage.Record) error {
	if len(recs) == 0 {
		return nil
	}
	ids := make([]string, len(recs)) // as stored
	order := make([]int, len(recs))
	for i := range recs {
		ids[i], order[i] = pgText(recs[i].RequestID), i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(ids[a], ids[b]) })

	var b pgx.Batch
	for n, i := range order {
		if n > 0 && ids[order[n-1]] == ids[i] {
			continue
		}
		r := &recs[i]
		u := &r.Usage
		b.Queue(insertRecordSQL,
			ids[i], dbTime(r.Time), pgText(r.KeyID), pgText(r.Upstream), pgText(r.Method), pgText(r.Path),
			pgText(r.Model), pgText(r.ResponseModel), r.Stream, r.Status, pgText(r.ErrorType),
			u.InputTokens, u.OutputTokens, u.CacheCreationInputTokens, u.CacheReadInputTokens,
			u.CacheCreation5m, u.CacheCreation1h, u.WebSearchRequests, u.WebFetchRequests,
			pgText(u.ServiceTier), r.Estimated, r.CostUSD, int64(r.Latency), int64(r.TTFT),
			pgText(r.ClientIP), pgText(r.UserAgent), pgText(r.SessionID),
		)
	}
	if err := s.pool.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("postgres: insert usage records: %w", err)
	}
	return nil
}

// Totals sums the records matching f in one aggregate query. Errors counts
// status >= 400. SUM of a bigint is numeric in Postgres, exact however
// large; it is cast back to bigint, which fails loudly rather than wrapping
// if a sum ever left int64.
func (s *Store) Totals(ctx context.Context, f usage.Filter) (usage.Totals, error) {
	w := recordWhere(f)
	q := `SELECT count(*), count(*) FILTER (WHERE status >= 400),
		COALESCE(sum(input_tokens), 0)::bigint, COALESCE(sum(output_tokens), 0)::bigint,
		COALESCE(sum(cache_creation_input_tokens), 0)::bigint, COALESCE(sum(cache_read_input_tokens), 0)::bigint,
		COALESCE(sum(cache_creation_5m_input_tokens), 0)::bigint, COALESCE(sum(cache_creation_1h_input_tokens), 0)::bigint,
		COALESCE(sum(web_search_requests), 0)::bigint, COALESCE(sum(web_fetch_requests), 0)::bigint,
		COALESCE(sum(cost_usd), 0)
		FROM usage_records` + w.sql()
	var t usage.Totals
	u := &t.Usage
	err := s.pool.QueryRow(ctx, q, w.args...).Scan(&t.Requests, &t.Errors,
		&u.InputTokens, &u.OutputTokens, &u.CacheCreationInputTokens, &u.CacheReadInputTokens,
		&u.CacheCreation5m, &u.CacheCreation1h, &u.WebSearchRequests, &u.WebFetchRequests,
		&t.CostUSD)
	if err != nil {
		return usage.Totals{}, fmt.Errorf("postgres: usage totals: %w", err)
	}
	return t, nil
}

// ListRecords returns the records matching f newest first (ties by request
// id, descending, bytewise) after cursor, using keyset pagination: the
// cursor is the (time, request_id) of the last record returned, so pages
// stay consistent while records are inserted and a deep page costs no more
// than the first.
func (s *Store) ListRecords(ctx context.Context, f usage.Filter, cursor string, limit int) ([]usage.Record, string, error) {
	if limit <= 0 {
		limit = defaultLimit
	}
	w := recordWhere(f)
	if cursor != "" {
		at, id, err := decodeCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		// A row comparison is a single index condition in Postgres: the
		// backward scan starts right at the cursor.
		w.add("(time, request_id) < (" + w.arg(at) + ", " + w.arg(id) + ")")
	}
	cond := w.sql()
	q := `SELECT ` + recordColumns + ` FROM usage_records` + cond +
		` ORDER BY time DESC, request_id DESC LIMIT ` + w.arg(limit+1)
	rows, err := s.pool.Query(ctx, q, w.args...)
	if err != nil {
		return nil, "", fmt.Errorf("postgres: list usage records: %w", err)
	}
	defer rows.Close()
	var out []usage.Record
	for rows.Next() {
		var (
			r             usage.Record
			latency, ttft int64
		)
		u := &r.Usage
		if err := rows.Scan(&r.RequestID, &r.Time, &r.KeyID, &r.Upstream, &r.Method, &r.Path, &r.Model, &r.ResponseModel,
			&r.Stream, &r.Status, &r.ErrorType,
			&u.InputTokens, &u.OutputTokens, &u.CacheCreationInputTokens, &u.CacheReadInputTokens,
			&u.CacheCreation5m, &u.CacheCreation1h, &u.WebSearchRequests, &u.WebFetchRequests,
			&u.ServiceTier, &r.Estimated, &r.CostUSD, &latency, &ttft, &r.ClientIP, &r.UserAgent, &r.SessionID,
		); err != nil {
			return nil, "", fmt.Errorf("postgres: list usage records: %w", err)
		}
		r.Time = r.Time.UTC()
		r.Latency, r.TTFT = time.Duration(latency), time.Duration(ttft)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("postgres: list usage records: %w", err)
	}
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		return out, encodeCursor(last.Time, last.RequestID), nil
	}
	return out, "", nil
}

func recordWhere(f usage.Filter) where {
	var w where
	if f.KeyID != "" {
		w.add("key_id = " + w.arg(pgText(f.KeyID)))
	}
	if f.Model != "" {
		w.add("model = " + w.arg(pgText(f.Model)))
	}
	if !f.From.IsZero() {
		w.add("time >= " + w.arg(ceilMicros(f.From)))
	}
	if !f.To.IsZero() {
		w.add("time < " + w.arg(ceilMicros(f.To)))
	}
	return w
}

// A cursor is base64 of "unix_micros:request_id", the same shape as
// storage/sqlite's, so it travels in a URL untouched and nobody is tempted
// to build one.
func encodeCursor(at time.Time, requestID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixMicro(), 10) + ":" + requestID))
}

func decodeCursor(c string) (at time.Time, requestID string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", errBadCursor
	}
	m, id, ok := strings.Cut(string(b), ":")
	if !ok {
		return time.Time{}, "", errBadCursor
	}
	micros, err := strconv.ParseInt(m, 10, 64)
	if err != nil || !validText(id) {
		return time.Time{}, "", errBadCursor
	}
	return time.UnixMicro(micros).UTC(), id, nil
}

// errBadCursor is returned for a cursor this store did not produce.
var errBadCursor = errors.New("postgres: invalid usage cursor")

// validText reports whether s fits a Postgres text column: valid UTF-8
// without NUL, which Postgres rejects even though Go strings, SQLite and
// the memory store take any bytes.
func validText(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

// pgText is s as a text column can hold it: each NUL byte, and each run of
// bytes that is not valid UTF-8, becomes U+FFFD. It is the identity on valid text, and
// deterministic, so a sanitised RequestID still deduplicates a replay.
func pgText(s string) string {
	if validText(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}
