-- 0003_usage_daily (down): dropping the table drops its indexes. The
-- rollup of days whose records were pruned is lost.
DROP TABLE IF EXISTS usage_daily;
