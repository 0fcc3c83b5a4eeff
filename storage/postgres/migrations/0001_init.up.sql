-- 0001_init: keys and usage records; the same tables and meaning as
-- storage/sqlite's 0001_init, in Postgres's native types.
--
-- Times are timestamptz: Postgres keeps microseconds, which is the precision
-- every relay store promises, and an instant rather than a wall-clock
-- reading, so the session time zone never changes what is stored. Hashes
-- are bytea, collections jsonb (NULL when empty, so "none" has one
-- spelling). Ids use COLLATE "C": keyset pagination and the conformance
-- suite need bytewise order, whatever collation the database defaults to.

CREATE TABLE api_keys (
    id              text COLLATE "C" NOT NULL PRIMARY KEY,
    name            text        NOT NULL DEFAULT '',
    hash            bytea,                          -- bcrypt hash of the full key
    hint            text        NOT NULL DEFAULT '',
    prev_hash       bytea,                          -- hash replaced by the last rotation
    prev_expires_at timestamptz,
    token_limit     bigint      NOT NULL DEFAULT 0,
    tier            text        NOT NULL DEFAULT '',
    allowed_models  jsonb CHECK (jsonb_typeof(allowed_models) = 'array'),
    expires_at      timestamptz,
    enabled         boolean     NOT NULL DEFAULT true,
    metadata        jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    last_used_at    timestamptz,
    deleted_at      timestamptz
);

-- No foreign key to api_keys: usage is written asynchronously in batches,
-- and one record naming an unknown key must not make the whole batch fail.
CREATE TABLE usage_records (
    request_id                     text COLLATE "C" NOT NULL PRIMARY KEY, -- idempotency: ON CONFLICT DO NOTHING
    time                           timestamptz      NOT NULL,
    key_id                         text             NOT NULL,
    upstream                       text             NOT NULL DEFAULT '',
    method                         text             NOT NULL DEFAULT '',
    path                           text             NOT NULL DEFAULT '',
    model                          text             NOT NULL DEFAULT '',
    response_model                 text             NOT NULL DEFAULT '',
    stream                         boolean          NOT NULL DEFAULT false,
    status                         integer          NOT NULL,
    error_type                     text             NOT NULL DEFAULT '',
    input_tokens                   bigint           NOT NULL DEFAULT 0,
    output_tokens                  bigint           NOT NULL DEFAULT 0,
    cache_creation_input_tokens    bigint           NOT NULL DEFAULT 0,
    cache_read_input_tokens        bigint           NOT NULL DEFAULT 0,
    cache_creation_5m_input_tokens bigint           NOT NULL DEFAULT 0,
    cache_creation_1h_input_tokens bigint           NOT NULL DEFAULT 0,
    web_search_requests            bigint           NOT NULL DEFAULT 0,
    web_fetch_requests             bigint           NOT NULL DEFAULT 0,
    service_tier                   text             NOT NULL DEFAULT '',
    estimated                      boolean          NOT NULL DEFAULT false,
    cost_usd                       double precision NOT NULL DEFAULT 0, -- float8 keeps every bit of a Go float64
    latency_ns                     bigint           NOT NULL DEFAULT 0,
    ttft_ns                        bigint           NOT NULL DEFAULT 0,
    client_ip                      text             NOT NULL DEFAULT '',
    user_agent                     text             NOT NULL DEFAULT '',
    session_id                     text             NOT NULL DEFAULT ''
);

-- Each index ends in (time, request_id), the newest-first order of
-- ListRecords, so a page is one backward index scan that starts at the
-- cursor's row comparison, with no sort, and Totals reads just the rows in
-- its time range.
CREATE INDEX usage_records_key_time   ON usage_records (key_id, time, request_id);
CREATE INDEX usage_records_time       ON usage_records (time, request_id);
CREATE INDEX usage_records_model_time ON usage_records (model, time, request_id);
