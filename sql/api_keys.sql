-- API keys: only a public prefix and the SHA-256 of the whole key are stored.
CREATE TABLE pgauth.api_keys (
    prefix       text PRIMARY KEY CHECK (prefix ~ '^[A-Za-z0-9]{8}$'),
    key_hash     bytea NOT NULL CHECK (octet_length(key_hash) = 32),
    user_id      uuid NOT NULL REFERENCES pgauth.users ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    scopes       text[],
    expires_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_user ON pgauth.api_keys (user_id);
SELECT pg_catalog.pg_extension_config_dump('pgauth.api_keys', '');
REVOKE ALL ON pgauth.api_keys FROM PUBLIC;
GRANT SELECT ON pgauth.api_keys TO pgauth_admin;
