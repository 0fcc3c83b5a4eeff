-- 0001_init (down): dropping a table drops its indexes too.
DROP TABLE IF EXISTS usage_records;
DROP TABLE IF EXISTS api_keys;
