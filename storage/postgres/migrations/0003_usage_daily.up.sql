-- 0003_usage_daily: the daily rollup of usage_records, per UTC day, key and
-- model. InsertRecords adds the records it inserts here in the same
-- statement; Prune deletes records but never rollup rows, so reports over
-- whole days stay exact (and fast: a month is a few thousand rows) long
-- after the records are gone.

CREATE TABLE usage_daily (
    day                            timestamptz      NOT NULL, -- the UTC midnight starting the day
    key_id                         text             NOT NULL,
    model                          text             NOT NULL,
    requests                       bigint           NOT NULL,
    errors                         bigint           NOT NULL, -- status >= 400
    input_tokens                   bigint           NOT NULL,
    output_tokens                  bigint           NOT NULL,
    cache_creation_input_tokens    bigint           NOT NULL,
    cache_read_input_tokens        bigint           NOT NULL,
    cache_creation_5m_input_tokens bigint           NOT NULL,
    cache_creation_1h_input_tokens bigint           NOT NULL,
    web_search_requests            bigint           NOT NULL,
    web_fetch_requests             bigint           NOT NULL,
    cost_usd                       double precision NOT NULL,
    PRIMARY KEY (day, key_id, model)
);

-- A key's own usage (GET /v1/usage, per-key reports) and a model's.
CREATE INDEX usage_daily_key_day   ON usage_daily (key_id, day);
CREATE INDEX usage_daily_model_day ON usage_daily (model, day);

-- Records stored before this migration.
INSERT INTO usage_daily (day, key_id, model, requests, errors,
    input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
    cache_creation_5m_input_tokens, cache_creation_1h_input_tokens, web_search_requests, web_fetch_requests,
    cost_usd)
SELECT date_trunc('day', time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', key_id, model,
    count(*), count(*) FILTER (WHERE status >= 400),
    sum(input_tokens), sum(output_tokens), sum(cache_creation_input_tokens), sum(cache_read_input_tokens),
    sum(cache_creation_5m_input_tokens), sum(cache_creation_1h_input_tokens), sum(web_search_requests), sum(web_fetch_requests),
    sum(cost_usd)
FROM usage_records
GROUP BY 1, 2, 3;
