-- 0002_key_limits: per-key limit overrides (keys.Key.Limits), a jsonb
-- object of limit name to integer; NULL when the key overrides nothing, so
-- "none" has one spelling, as for allowed_models and metadata.
ALTER TABLE api_keys ADD COLUMN limits jsonb CHECK (jsonb_typeof(limits) = 'object');
