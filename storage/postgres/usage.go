package postgres

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/relaystation/relay/usage"
)

const recordColumns = `request_id, time, key_id, upstream, method, path, model, response_model,
	stream, status, error_type,
	input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
	cache_creation_5m_input_tokens, cache_creation_1h_input_tokens, web_search_requests, web_fetch_requests,
	service_tier, estimated, cost_usd, latency_ns, ttft_ns, client_ip, user_agent, session_id`

// insertRecordsSQL stores a batch and rolls it up in one statement, so in
// one implicit transaction and one round trip. The batch arrives as one
// array per column, unnested back into rows in their order; ON CONFLICT DO
// NOTHING skips a RequestID already stored (committed, or inserted by a
// concurrent batch, which it waits for), and RETURNING yields only the rows
// actually inserted, which are then summed per UTC day, key and model into
// usage_daily. A replayed batch thus counts nowhere twice.
//
// Rows go in request-id order and rollup rows in (day, key, model) order,
// so two overlapping batches from different relay instances take their row
// locks in the same order and one waits for the other, where arbitrary
// orders could deadlock.
const insertRecordsSQL = `WITH ins AS (
	INSERT INTO usage_records (` + recordColumns + `)
	SELECT ` + recordColumns + ` FROM unnest(
		$1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
		$9::boolean[], $10::integer[], $11::text[],
		$12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[],
		$20::text[], $21::boolean[], $22::double precision[], $23::bigint[], $24::bigint[], $25::text[], $26::text[], $27::text[]
	) WITH ORDINALITY AS r(` + recordColumns + `, ord)
	ORDER BY ord
	ON CONFLICT (request_id) DO NOTHING
	RETURNING time, key_id, model, status,
		input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
		cache_creation_5m_input_tokens, cache_creation_1h_input_tokens, web_search_requests, web_fetch_requests,
		cost_usd
)
INSERT INTO usage_daily (` + dailyColumns + `)
SELECT date_trunc('day', time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', key_id, model,
	count(*), count(*) FILTER (WHERE status >= 400),
	sum(input_tokens), sum(output_tokens), sum(cache_creation_input_tokens), sum(cache_read_input_tokens),
	sum(cache_creation_5m_input_tokens), sum(cache_creation_1h_input_tokens), sum(web_search_requests), sum(web_fetch_requests),
	sum(cost_usd)
FROM ins
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
ON CONFLICT (day, key_id, model) DO UPDATE SET
	requests = usage_daily.requests + EXCLUDED.requests,
	errors = usage_daily.errors + EXCLUDED.errors,
	input_tokens = usage_daily.input_tokens + EXCLUDED.input_tokens,
	output_tokens = usage_daily.output_tokens + EXCLUDED.output_tokens,
	cache_creation_input_tokens = usage_daily.cache_creation_input_tokens + EXCLUDED.cache_creation_input_tokens,
	cache_read_input_tokens = usage_daily.cache_read_input_tokens + EXCLUDED.cache_read_input_tokens,
	cache_creation_5m_input_tokens = usage_daily.cache_creation_5m_input_tokens + EXCLUDED.cache_creation_5m_input_tokens,
	cache_creation_1h_input_tokens = usage_daily.cache_creation_1h_input_tokens + EXCLUDED.cache_creation_1h_input_tokens,
	web_search_requests = usage_daily.web_search_requests + EXCLUDED.web_search_requests,
	web_fetch_requests = usage_daily.web_fetch_requests + EXCLUDED.web_fetch_requests,
	cost_usd = usage_daily.cost_usd + EXCLUDED.cost_usd`

const dailyColumns = `day, key_id, model, requests, errors,
	input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
	cache_creation_5m_input_tokens, cache_creation_1h_input_tokens, web_search_requests, web_fetch_requests,
	cost_usd`

// InsertRecords stores recs and adds them to the daily rollup in one
// statement (see insertRecordsSQL): one round trip, one commit, and a batch
// lands whole or not at all.
//
// Records are sent in request-id order (see insertRecordsSQL for why). The
// sort is stable and later duplicates are dropped before sending, so the
// first record with a RequestID is the one kept.
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

	var c recordColumnsOf
	c.grow(len(recs))
	for n, i := range order {
		if n > 0 && ids[order[n-1]] == ids[i] {
			continue
		}
		c.add(ids[i], &recs[i])
	}
	if _, err := s.pool.Exec(ctx, insertRecordsSQL, c.args()...); err != nil {
		return fmt.Errorf("postgres: insert usage records: %w", err)
	}
	return nil
}

// recordColumnsOf is a batch of records as one slice per column, the
// parameters of insertRecordsSQL.
type recordColumnsOf struct {
	requestID, keyID, upstream, method, path, model, responseModel, errorType []string
	serviceTier, clientIP, userAgent, sessionID                               []string
	time                                                                      []time.Time
	stream, estimated                                                         []bool
	status                                                                    []int32
	input, output, cacheCreation, cacheRead, cache5m, cache1h                 []int64
	webSearch, webFetch, latency, ttft                                        []int64
	cost                                                                      []float64
}

func (c *recordColumnsOf) grow(n int) {
	for _, p := range []*[]string{&c.requestID, &c.keyID, &c.upstream, &c.method, &c.path, &c.model,
		&c.responseModel, &c.errorType, &c.serviceTier, &c.clientIP, &c.userAgent, &c.sessionID} {
		*p = make([]string, 0, n)
	}
	for _, p := range []*[]int64{&c.input, &c.output, &c.cacheCreation, &c.cacheRead, &c.cache5m, &c.cache1h,
		&c.webSearch, &c.webFetch, &c.latency, &c.ttft} {
		*p = make([]int64, 0, n)
	}
	c.time = make([]time.Time, 0, n)
	c.stream, c.estimated = make([]bool, 0, n), make([]bool, 0, n)
	c.status = make([]int32, 0, n)
	c.cost = make([]float64, 0, n)
}

// add appends r, stored under id (r.RequestID as pgText stores it).
func (c *recordColumnsOf) add(id string, r *usage.Record) {
	u := &r.Usage
	c.requestID = append(c.requestID, id)
	c.time = append(c.time, dbTime(r.Time))
	c.keyID = append(c.keyID, pgText(r.KeyID))
	c.upstream = append(c.upstream, pgText(r.Upstream))
	c.method = append(c.method, pgText(r.Method))
	c.path = append(c.path, pgText(r.Path))
	c.model = append(c.model, pgText(r.Model))
	c.responseModel = append(c.responseModel, pgText(r.ResponseModel))
	c.stream = append(c.stream, r.Stream)
	c.status = append(c.status, int32(max(min(r.Status, math.MaxInt32), math.MinInt32)))
	c.errorType = append(c.errorType, pgText(r.ErrorType))
	c.input = append(c.input, u.InputTokens)
	c.output = append(c.output, u.OutputTokens)
	c.cacheCreation = append(c.cacheCreation, u.CacheCreationInputTokens)
	c.cacheRead = append(c.cacheRead, u.CacheReadInputTokens)
	c.cache5m = append(c.cache5m, u.CacheCreation5m)
	c.cache1h = append(c.cache1h, u.CacheCreation1h)
	c.webSearch = append(c.webSearch, u.WebSearchRequests)
	c.webFetch = append(c.webFetch, u.WebFetchRequests)
	c.serviceTier = append(c.serviceTier, pgText(u.ServiceTier))
	c.estimated = append(c.estimated, r.Estimated)
	c.cost = append(c.cost, r.CostUSD)
	c.latency = append(c.latency, int64(r.Latency))
	c.ttft = append(c.ttft, int64(r.TTFT))
	c.clientIP = append(c.clientIP, pgText(r.ClientIP))
	c.userAgent = append(c.userAgent, pgText(r.UserAgent))
	c.sessionID = append(c.sessionID, pgText(r.SessionID))
}

// args is the parameters of insertRecordsSQL, in recordColumns order.
func (c *recordColumnsOf) args() []any {
	return []any{
		c.requestID, c.time, c.keyID, c.upstream, c.method, c.path, c.model, c.responseModel,
		c.stream, c.status, c.errorType,
		c.input, c.output, c.cacheCreation, c.cacheRead, c.cache5m, c.cache1h, c.webSearch, c.webFetch,
		c.serviceTier, c.estimated, c.cost, c.latency, c.ttft, c.clientIP, c.userAgent, c.sessionID,
	}
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
		return usage.Report{}, fmt.Errorf("postgres: usage report: %w", err)
	}
	return r, nil
}

// pruneChunk bounds one DELETE of Prune, so that pruning a month of
// records is many short transactions rather than one long one holding
// back vacuum and replication.
const pruneChunk = 10000

// Prune deletes the records before the UTC midnight at or before before,
// in chunks; usage_daily is untouched.
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	cut := usage.DayOf(before)
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, `DELETE FROM usage_records WHERE ctid = ANY(ARRAY(
			SELECT ctid FROM usage_records WHERE time < $1 LIMIT $2))`, cut, pruneChunk)
		if err != nil {
			return total, fmt.Errorf("postgres: prune usage records: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < pruneChunk {
			return total, nil
		}
	}
}

// aggregator answers usage.RunReport's aggregates with one GROUP BY query
// each.
type aggregator struct{ s *Store }

// sumColumns are the sums both tables share, in usage.Usage order. SUM of
// a bigint is numeric in Postgres, exact however large; it is cast back to
// bigint, which fails loudly rather than wrapping if a sum ever left int64.
const sumColumns = `COALESCE(sum(input_tokens), 0)::bigint, COALESCE(sum(output_tokens), 0)::bigint,
	COALESCE(sum(cache_creation_input_tokens), 0)::bigint, COALESCE(sum(cache_read_input_tokens), 0)::bigint,
	COALESCE(sum(cache_creation_5m_input_tokens), 0)::bigint, COALESCE(sum(cache_creation_1h_input_tokens), 0)::bigint,
	COALESCE(sum(web_search_requests), 0)::bigint, COALESCE(sum(web_fetch_requests), 0)::bigint,
	COALESCE(sum(cost_usd), 0)`

func (a aggregator) SumDaily(ctx context.Context, q usage.Aggregate) ([]usage.Bucket, error) {
	var w where
	if q.KeyID != "" {
		w.add("key_id = " + w.arg(pgText(q.KeyID)))
	}
	if q.Model != "" {
		w.add("model = " + w.arg(pgText(q.Model)))
	}
	if !q.From.IsZero() {
		w.add("day >= " + w.arg(q.From.UTC()))
	}
	if !q.To.IsZero() {
		w.add("day < " + w.arg(q.To.UTC()))
	}
	// ByTime over the rollup is always by day, its own column.
	return a.sum(ctx, q.By, "day", `COALESCE(sum(requests), 0)::bigint, COALESCE(sum(errors), 0)::bigint`, "usage_daily", w)
}

func (a aggregator) SumRecords(ctx context.Context, q usage.Aggregate) ([]usage.Bucket, error) {
	w := recordWhere(usage.Filter{KeyID: q.KeyID, Model: q.Model, From: q.From, To: q.To})
	var slot string
	if q.By == usage.ByTime {
		// Unix seconds of the slot's start. extract(epoch) is an exact
		// numeric since Postgres 14, and floor() floors before 1970 too.
		n := strconv.FormatInt(int64(q.Slot/time.Second), 10)
		slot = "(floor(extract(epoch FROM time) / " + n + ") * " + n + ")::bigint"
	}
	return a.sum(ctx, q.By, slot, `count(*), count(*) FILTER (WHERE status >= 400)`, "usage_records", w)
}

// sum runs one aggregate query: the group (the day, or the slot's start in
// Unix seconds, for ByTime; a model or key id; nothing), then requests,
// errors and the sums.
func (a aggregator) sum(ctx context.Context, by usage.Dimension, timeExpr, counts, table string, w where) ([]usage.Bucket, error) {
	group := "NULL::text"
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
	rows, err := a.s.pool.Query(ctx, q, w.args...)
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
		case time.Time:
			b.Start = g.UTC()
		case int64:
			b.Start = time.Unix(g, 0).UTC()
		case string:
			b.Group = g
		}
		out = append(out, b)
	}
	return out, rows.Err()
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
	return usage.EncodeCursor(at.UnixMicro(), requestID)
}

func decodeCursor(c string) (at time.Time, requestID string, err error) {
	micros, id, ok := usage.DecodeCursor(c)
	if !ok || !validText(id) {
		return time.Time{}, "", errBadCursor
	}
	return time.UnixMicro(micros).UTC(), id, nil
}

// errBadCursor is returned for a cursor this store did not produce.
var errBadCursor = fmt.Errorf("postgres: %w", usage.ErrInvalidCursor)

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
