package sqlite

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/relaystation/relay/usage"
)

// defaultLimit is the page size when a caller asks for none, as
// keys.ListFilter documents; ListRecords follows the same rule.
const defaultLimit = 100

const recordColumns = `request_id, time, key_id, upstream, method, path, model, response_model,
	stream, status, error_type,
	input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
	cache_creation_5m_input_tokens, cache_creation_1h_input_tokens, web_search_requests, web_fetch_requests,
	service_tier, estimated, cost_usd, latency_ns, ttft_ns, client_ip, user_agent, session_id`

// insertRecordSQL skips a RequestID already stored, also one inserted
// earlier in the same transaction, which is what makes a replayed or
// self-overlapping batch count once.
const insertRecordSQL = `INSERT INTO usage_records (` + recordColumns + `)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (request_id) DO NOTHING`

// InsertRecords stores recs in one transaction with one prepared statement:
// a batch costs one commit (one WAL sync at most), not one per record, and
// it lands whole or not at all.
func (s *Store) InsertRecords(ctx context.Context, recs []usage.Record) error {
	if len(recs) == 0 {
		return nil
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, insertRecordSQL)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i := range recs {
			r := &recs[i]
			u := &r.Usage
			if _, err := stmt.ExecContext(ctx,
				r.RequestID, toMicros(r.Time), r.KeyID, r.Upstream, r.Method, r.Path, r.Model, r.ResponseModel,
				r.Stream, r.Status, r.ErrorType,
				u.InputTokens, u.OutputTokens, u.CacheCreationInputTokens, u.CacheReadInputTokens,
				u.CacheCreation5m, u.CacheCreation1h, u.WebSearchRequests, u.WebFetchRequests,
				u.ServiceTier, r.Estimated, r.CostUSD, int64(r.Latency), int64(r.TTFT), r.ClientIP, r.UserAgent, r.SessionID,
			); err != nil {
				return fmt.Errorf("record %s: %w", r.RequestID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: insert usage records: %w", err)
	}
	return nil
}

// Totals sums the records matching f in one aggregate query. Errors counts
// status >= 400. TOTAL, unlike SUM, is a float and 0.0 on no rows; the
// integer sums use SUM, which stays exact, under COALESCE for the empty case.
func (s *Store) Totals(ctx context.Context, f usage.Filter) (usage.Totals, error) {
	w := recordWhere(f)
	q := `SELECT COUNT(*), COALESCE(SUM(status >= 400), 0),
		COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),
		COALESCE(SUM(cache_creation_input_tokens), 0), COALESCE(SUM(cache_read_input_tokens), 0),
		COALESCE(SUM(cache_creation_5m_input_tokens), 0), COALESCE(SUM(cache_creation_1h_input_tokens), 0),
		COALESCE(SUM(web_search_requests), 0), COALESCE(SUM(web_fetch_requests), 0),
		TOTAL(cost_usd)
		FROM usage_records` + w.sql()
	var t usage.Totals
	u := &t.Usage
	err := s.read.QueryRowContext(ctx, q, w.args...).Scan(&t.Requests, &t.Errors,
		&u.InputTokens, &u.OutputTokens, &u.CacheCreationInputTokens, &u.CacheReadInputTokens,
		&u.CacheCreation5m, &u.CacheCreation1h, &u.WebSearchRequests, &u.WebFetchRequests,
		&t.CostUSD)
	if err != nil {
		return usage.Totals{}, fmt.Errorf("sqlite: usage totals: %w", err)
	}
	return t, nil
}

// ListRecords returns the records matching f newest first (ties by
// request id, descending) after cursor, using keyset pagination: the cursor
// is the (time, request_id) of the last record returned, so pages stay
// consistent while records are inserted and a deep page costs no more than
// the first.
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
		// "(time, request_id) < (at, id)" spelled so that the first term is
		// a plain range the index can seek to.
		w.add("time <= ? AND (time < ? OR request_id < ?)", at, at, id)
	}
	q := `SELECT ` + recordColumns + ` FROM usage_records` + w.sql() +
		` ORDER BY time DESC, request_id DESC LIMIT ?`
	rows, err := s.read.QueryContext(ctx, q, append(w.args, limit+1)...)
	if err != nil {
		return nil, "", fmt.Errorf("sqlite: list usage records: %w", err)
	}
	defer rows.Close()
	var out []usage.Record
	for rows.Next() {
		var (
			r                 usage.Record
			at, latency, ttft int64
		)
		u := &r.Usage
		if err := rows.Scan(&r.RequestID, &at, &r.KeyID, &r.Upstream, &r.Method, &r.Path, &r.Model, &r.ResponseModel,
			&r.Stream, &r.Status, &r.ErrorType,
			&u.InputTokens, &u.OutputTokens, &u.CacheCreationInputTokens, &u.CacheReadInputTokens,
			&u.CacheCreation5m, &u.CacheCreation1h, &u.WebSearchRequests, &u.WebFetchRequests,
			&u.ServiceTier, &r.Estimated, &r.CostUSD, &latency, &ttft, &r.ClientIP, &r.UserAgent, &r.SessionID,
		); err != nil {
			return nil, "", fmt.Errorf("sqlite: list usage records: %w", err)
		}
		r.Time = fromMicros(at)
		r.Latency, r.TTFT = time.Duration(latency), time.Duration(ttft)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("sqlite: list usage records: %w", err)
	}
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		return out, encodeCursor(toMicros(last.Time), last.RequestID), nil
	}
	return out, "", nil
}

func recordWhere(f usage.Filter) where {
	var w where
	if f.KeyID != "" {
		w.add("key_id = ?", f.KeyID)
	}
	if f.Model != "" {
		w.add("model = ?", f.Model)
	}
	if !f.From.IsZero() {
		w.add("time >= ?", ceilMicros(f.From))
	}
	if !f.To.IsZero() {
		w.add("time < ?", ceilMicros(f.To))
	}
	return w
}

// A cursor is base64 of "micros:request_id", so it travels in a URL
// untouched and nobody is tempted to build one.
func encodeCursor(micros int64, requestID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(micros, 10) + ":" + requestID))
}

func decodeCursor(c string) (micros int64, requestID string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", errBadCursor
	}
	m, id, ok := strings.Cut(string(b), ":")
	if !ok {
		return 0, "", errBadCursor
	}
	micros, err = strconv.ParseInt(m, 10, 64)
	if err != nil {
		return 0, "", errBadCursor
	}
	return micros, id, nil
}

// errBadCursor is returned for a cursor this store did not produce.
var errBadCursor = fmt.Errorf("sqlite: %w", usage.ErrInvalidCursor)
