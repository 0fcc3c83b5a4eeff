DROP INDEX IF EXISTS usage_records_model_time;
DROP INDEX IF EXISTS usage_records_time;
DROP INDEX IF EXISTS usage_records_key_time;
DROP TABLE IF EXISTS usage_records;
DROP TABLE IF EXISTS api_keys;
