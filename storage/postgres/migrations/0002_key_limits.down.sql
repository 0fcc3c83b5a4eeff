-- 0002_key_limits (down): the overrides are lost.
ALTER TABLE api_keys DROP COLUMN limits;
