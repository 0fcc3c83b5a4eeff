-- 0003_usage_daily: the daily rollup of usage_records, per UTC day, key and
-- model. InsertRecords adds the records it inserts here in the same
-- transaction; Prune deletes records but never rollup rows, so reports over
-- whole days stay exact (and fast: a month is a few thousand rows) long
-- after the records are gone.

CREATE TABLE usage_daily (
    day                            INTEGER NOT NULL, -- unix microseconds of the UTC midnight
    key_id                         TEXT    NOT NULL,
    model                          TEXT    NOT NULL,
    requests                       INTEGER NOT NULL,
    errors                         INTEGER NOT NULL, -- status >= 400
    input_tokens                   INTEGER NOT NULL,
    output_tokens                  INTEGER NOT NULL,
    cache_creation_input_tokens    INTEGER NOT NULL,
    cache_read_input_tokens        INTEGER NOT NULL,
    cache_creation_5m_input_tokens INTEGER NOT NULL,
    cache_creation_1h_input_tokens INTEGER NOT NULL,
    web_search_requests            INTEGER NOT NULL,
    web_fetch_requests             INTEGER NOT NULL,
    cost_usd                       REAL    NOT NULL,
    PRIMARY KEY (day, key_id, model)
) STRICT, WITHOUT ROWID;

-- A key's own usage (GET /v1/usage, per-key reports) and a model's.
CREATE INDEX usage_daily_key_day   ON usage_daily (key_id, day);
CREATE INDEX usage_daily_model_day ON usage_daily (model, day);

-- Records stored before this migration. The day is the floor of time to a
-- multiple of a day, written so that it also floors times before 1970
-- (SQLite's % truncates toward zero).
INSERT INTO usage_daily (day, key_id, model, requests, errors,
    input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
    cache_creation_5m_input_tokens, cache_creation_1h_input_tokens, web_search_requests, web_fetch_requests,
    cost_usd)
SELECT time - ((time % 86400000000) + 86400000000) % 86400000000, key_id, model, COUNT(*), SUM(status >= 400),
    SUM(input_tokens), SUM(output_tokens), SUM(cache_creation_input_tokens), SUM(cache_read_input_tokens),
    SUM(cache_creation_5m_input_tokens), SUM(cache_creation_1h_input_tokens), SUM(web_search_requests), SUM(web_fetch_requests),
    TOTAL(cost_usd)
FROM usage_records
GROUP BY 1, 2, 3;
