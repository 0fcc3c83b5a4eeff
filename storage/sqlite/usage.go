package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
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

// upsertDailySQL adds one day's counts for a key and model to the rollup.
const upsertDailySQL = `INSERT INTO usage_daily (` + dailyColumns + `)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (day, key_id, model) DO UPDATE SET
		requests = requests + excluded.requests,
		errors = errors + excluded.errors,
		input_tokens = input_tokens + excluded.input_tokens,
		output_tokens = output_tokens + excluded.output_tokens,
		cache_creation_input_tokens = cache_creation_input_tokens + excluded.cache_creation_input_tokens,
		cache_read_input_tokens = cache_read_input_tokens + excluded.cache_read_input_tokens,
		cache_creation_5m_input_tokens = cache_creation_5m_input_tokens + excluded.cache_creation_5m_input_tokens,
		cache_creation_1h_input_tokens = cache_creation_1h_input_tokens + excluded.cache_creation_1h_input_tokens,
		web_search_requests = web_search_requests + excluded.web_search_requests,
		web_fetch_requests = web_fetch_requests + excluded.web_fetch_requests,
		cost_usd = cost_usd + excluded.cost_usd`

const dailyColumns = `day, key_id, model, requests, errors,
	input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
	cache_creation_5m_input_tokens, cache_creation_1h_input_tokens, web_search_requests, web_fetch_requests,
	cost_usd`

// dayKey identifies a rollup row.
type dayKey struct {
	day        int64
	key, model string
}

// InsertRecords stores recs in one transaction with one prepared statement:
// a batch costs one commit (one WAL sync at most), not one per record, and
// it lands whole or not at all. The records the statement actually inserted
// (changes() is 1; a RequestID already stored makes it 0) are summed per
// day, key and model and added to the daily rollup in the same
// transaction, so a replayed batch counts nowhere twice.
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
		daily := make(map[dayKey]*usage.Totals)
		for i := range recs {
			r := &recs[i]
			u := &r.Usage
			res, err := stmt.ExecContext(ctx,
				r.RequestID, toMicros(r.Time), r.KeyID, r.Upstream, r.Method, r.Path, r.Model, r.ResponseModel,
				r.Stream, r.Status, r.ErrorType,
				u.InputTokens, u.OutputTokens, u.CacheCreationInputTokens, u.CacheReadInputTokens,
				u.CacheCreation5m, u.CacheCreation1h, u.WebSearchRequests, u.WebFetchRequests,
				u.ServiceTier, r.Estimated, r.CostUSD, int64(r.Latency), int64(r.TTFT), r.ClientIP, r.UserAgent, r.SessionID,
			)
			if err != nil {
				return fmt.Errorf("record %s: %w", r.RequestID, err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return fmt.Errorf("record %s: %w", r.RequestID, err)
			} else if n == 0 {
				continue // already stored
			}
			k := dayKey{day: toMicros(usage.DayOf(r.Time)), key: r.KeyID, model: r.Model}
			t := daily[k]
			if t == nil {
				t = new(usage.Totals)
				daily[k] = t
			}
			t.Requests++
			if r.Status >= 400 {
				t.Errors++
			}
			t.Usage = t.Usage.Add(r.Usage)
			t.CostUSD += r.CostUSD
		}
		if len(daily) == 0 {
			return nil
		}
		up, err := tx.PrepareContext(ctx, upsertDailySQL)
		if err != nil {
			return err
		}
		defer up.Close()
		for k, t := range daily {
			u := &t.Usage
			if _, err := up.ExecContext(ctx, k.day, k.key, k.model, t.Requests, t.Errors,
				u.InputTokens, u.OutputTokens, u.CacheCreationInputTokens, u.CacheReadInputTokens,
				u.CacheCreation5m, u.CacheCreation1h, u.WebSearchRequests, u.WebFetchRequests,
				t.CostUSD); err != nil {
				return fmt.Errorf("daily rollup: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: insert usage records: %w", err)
	}
	return nil
}

// Totals sums the records matching f: whole UTC days from the daily
// rollup, partial days from the records (see usage.ReportQuery).
func (s *Store) Totals(ctx context.Context, f usage.Filter) (usage.Totals, error) {
	r, err := s.Report(ctx, usage.ReportQuery{Filter: f})
	return r.Totals, err
}

// Report answers q with usage.RunReport over usage_daily and
// usage_records.
func (s *Store) Report(ctx context.Context, q usage.ReportQuery) (usage.Report, error) {
	r, err := usage.RunReport(ctx, aggregator{s}, q)
	if err != nil {
		return usage.Report{}, fmt.Errorf("sqlite: usage report: %w", err)
	}
	return r, nil
}

// pruneChunk bounds one DELETE of Prune: each chunk is its own short write
// transaction, so the Recorder's inserts are never queued behind one long
// delete of a month of records.
const pruneChunk = 5000

// Prune deletes the records before the UTC midnight at or before before,
// in chunks; usage_daily is untouched.
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	cut := toMicros(usage.DayOf(before))
	var total int64
	for {
		res, err := s.write.ExecContext(ctx, `DELETE FROM usage_records WHERE rowid IN
			(SELECT rowid FROM usage_records WHERE time < ? LIMIT ?)`, cut, pruneChunk)
		if err != nil {
			return total, fmt.Errorf("sqlite: prune usage records: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("sqlite: prune usage records: %w", err)
		}
		total += n
		if n < pruneChunk {
			return total, nil
		}
	}
}

// aggregator answers usage.RunReport's aggregates with one GROUP BY query
// each.
type aggregator struct{ s *Store }

// sumColumns are the sums both tables share, in usage.Usage order.
const sumColumns = `COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),
	COALESCE(SUM(cache_creation_input_tokens), 0), COALESCE(SUM(cache_read_input_tokens), 0),
	COALESCE(SUM(cache_creation_5m_input_tokens), 0), COALESCE(SUM(cache_creation_1h_input_tokens), 0),
	COALESCE(SUM(web_search_requests), 0), COALESCE(SUM(web_fetch_requests), 0), TOTAL(cost_usd)`

func (a aggregator) SumDaily(ctx context.Context, q usage.Aggregate) ([]usage.Bucket, error) {
	var w where
	if q.KeyID != "" {
		w.add("key_id = ?", q.KeyID)
	}
	if q.Model != "" {
		w.add("model = ?", q.Model)
	}
	if !q.From.IsZero() {
		w.add("day >= ?", toMicros(q.From))
	}
	if !q.To.IsZero() {
		w.add("day < ?", toMicros(q.To))
	}
	// ByTime over the rollup is always by day, its own column.
	return a.sum(ctx, q.By, "day", `COALESCE(SUM(requests), 0), COALESCE(SUM(errors), 0)`, "usage_daily", w)
}

func (a aggregator) SumRecords(ctx context.Context, q usage.Aggregate) ([]usage.Bucket, error) {
	w := recordWhere(usage.Filter{KeyID: q.KeyID, Model: q.Model, From: q.From, To: q.To})
	var slot string
	if q.By == usage.ByTime {
		// The floor of time to a multiple of the slot, before 1970 too.
		n := strconv.FormatInt(q.Slot.Microseconds(), 10)
		slot = "time - ((time % " + n + ") + " + n + ") % " + n
	}
	return a.sum(ctx, q.By, slot, `COUNT(*), COALESCE(SUM(status >= 400), 0)`, "usage_records", w)
}

// sum runs one aggregate query: the group (a time in microseconds for
// ByTime, a model or key id, nothing), then requests, errors and the sums.
func (a aggregator) sum(ctx context.Context, by usage.Dimension, timeExpr, counts, table string, w where) ([]usage.Bucket, error) {
	group := "NULL"
	switch by {
	case usage.ByTime:
		group = timeExpr
	case usage.ByModel:
		group = "model"
	case usage.ByKey:
		group = "key_id"
	}
	q := `SELECT ` + group + `, ` + counts + `, ` + sumColumns + ` FROM ` + table + w.sql()
	if by != usage.ByNothing {
		q += ` GROUP BY 1`
	}
	rows, err := a.s.read.QueryContext(ctx, q, w.args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []usage.Bucket
	for rows.Next() {
		var (
			b usage.Bucket
			g any
		)
		u := &b.Usage
		if err := rows.Scan(&g, &b.Requests, &b.Errors,
			&u.InputTokens, &u.OutputTokens, &u.CacheCreationInputTokens, &u.CacheReadInputTokens,
			&u.CacheCreation5m, &u.CacheCreation1h, &u.WebSearchRequests, &u.WebFetchRequests,
			&b.CostUSD); err != nil {
			return nil, err
		}
		switch g := g.(type) {
		case int64:
			b.Start = fromMicros(g)
		case string:
			b.Group = g
		case []byte:
			b.Group = string(g)
		}
		out = append(out, b)
	}
	return out, rows.Err()
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
		return out, usage.EncodeCursor(toMicros(last.Time), last.RequestID), nil
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
func decodeCursor(c string) (micros int64, requestID string, err error) {
	micros, requestID, ok := usage.DecodeCursor(c)
	if !ok {
		return 0, "", errBadCursor
	}
	return micros, requestID, nil
}

// errBadCursor is returned for a cursor this store did not produce.
var errBadCursor = fmt.Errorf("sqlite: %w", usage.ErrInvalidCursor)
