-- 0001_init: keys and usage records.
--
-- Times are INTEGER unix microseconds, UTC: they sort and compare as
-- numbers, cost 8 bytes, and match the microsecond precision every relay
-- store keeps. Nullable times are NULL when unset. Tables are STRICT so a
-- wrong type is an error instead of a silently coerced value.

CREATE TABLE api_keys (
    id              TEXT    NOT NULL PRIMARY KEY,
    name            TEXT    NOT NULL DEFAULT '',
    hash            BLOB,                          -- bcrypt hash of the full key
    hint            TEXT    NOT NULL DEFAULT '',
    prev_hash       BLOB,                          -- hash replaced by the last rotation
    prev_expires_at INTEGER,
    token_limit     INTEGER NOT NULL DEFAULT 0,
    tier            TEXT    NOT NULL DEFAULT '',
    allowed_models  TEXT,                          -- JSON array; NULL when empty
    expires_at      INTEGER,
    enabled         INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    metadata        TEXT,                          -- JSON object; NULL when empty
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    last_used_at    INTEGER,
    deleted_at      INTEGER
) STRICT;

-- No foreign key to api_keys: usage is written asynchronously in batches,
-- and one record naming an unknown key must not make the whole batch fail.
CREATE TABLE usage_records (
    request_id                     TEXT    NOT NULL PRIMARY KEY, -- idempotency: ON CONFLICT DO NOTHING
    time                           INTEGER NOT NULL,
    key_id                         TEXT    NOT NULL,
    upstream                       TEXT    NOT NULL DEFAULT '',
    method                         TEXT    NOT NULL DEFAULT '',
    path                           TEXT    NOT NULL DEFAULT '',
    model                          TEXT    NOT NULL DEFAULT '',
    response_model                 TEXT    NOT NULL DEFAULT '',
    stream                         INTEGER NOT NULL DEFAULT 0,
    status                         INTEGER NOT NULL,
    error_type                     TEXT    NOT NULL DEFAULT '',
    input_tokens                   INTEGER NOT NULL DEFAULT 0,
    output_tokens                  INTEGER NOT NULL DEFAULT 0,
    cache_creation_input_tokens    INTEGER NOT NULL DEFAULT 0,
    cache_read_input_tokens        INTEGER NOT NULL DEFAULT 0,
    cache_creation_5m_input_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_1h_input_tokens INTEGER NOT NULL DEFAULT 0,
    web_search_requests            INTEGER NOT NULL DEFAULT 0,
    web_fetch_requests             INTEGER NOT NULL DEFAULT 0,
    service_tier                   TEXT    NOT NULL DEFAULT '',
    estimated                      INTEGER NOT NULL DEFAULT 0,
    cost_usd                       REAL    NOT NULL DEFAULT 0,
    latency_ns                     INTEGER NOT NULL DEFAULT 0,
    ttft_ns                        INTEGER NOT NULL DEFAULT 0,
    client_ip                      TEXT    NOT NULL DEFAULT '',
    user_agent                     TEXT    NOT NULL DEFAULT '',
    session_id                     TEXT    NOT NULL DEFAULT ''
) STRICT; -- a rowid table: inserts append, although request ids are random

-- Each index ends in (time, request_id), the newest-first order of
-- ListRecords, so a page is one backwards index range scan with no sort, and
-- Totals reads just the rows in its time range.
CREATE INDEX usage_records_key_time   ON usage_records (key_id, time, request_id);
CREATE INDEX usage_records_time       ON usage_records (time, request_id);
CREATE INDEX usage_records_model_time ON usage_records (model, time, request_id);
