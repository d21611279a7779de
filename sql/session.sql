-- pgauth session: sessions (auth_create_session, sign-ins), their refresh tokens (auth_refresh)
-- and API keys; all written by src/session.

-- A session: opened by auth_create_session (an opaque token, stored as its SHA-256) or by a
-- sign-in (auth_login, passkeys: access JWTs carry the session id as `sid`, refresh tokens
-- belong to it). Revoking the row ends the opaque token, every access JWT and the refresh chain.
-- aal/amr: how it was established; step_up_until: aal 2 until then (auth_step_up).
CREATE TABLE pgauth.sessions (
    id            uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    token_hash    bytea UNIQUE CHECK (octet_length(token_hash) = 32),
    user_id       uuid NOT NULL REFERENCES pgauth.users ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    aal           smallint NOT NULL DEFAULT 1 CHECK (aal BETWEEN 1 AND 3),
    amr           text[] NOT NULL DEFAULT '{}',
    step_up_until timestamptz
);
CREATE INDEX sessions_user ON pgauth.sessions (user_id);
SELECT pg_catalog.pg_extension_config_dump('pgauth.sessions', '');
REVOKE ALL ON pgauth.sessions FROM PUBLIC;
GRANT SELECT, UPDATE ON pgauth.sessions TO pgauth_admin;

-- Refresh tokens, stored only as SHA-256. Each is used once (used_at); a second use revokes the
-- session, which ends the whole chain.
CREATE TABLE pgauth.refresh_tokens (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    session_id uuid NOT NULL REFERENCES pgauth.sessions ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX refresh_tokens_session ON pgauth.refresh_tokens (session_id);
SELECT pg_catalog.pg_extension_config_dump('pgauth.refresh_tokens', '');
REVOKE ALL ON pgauth.refresh_tokens FROM PUBLIC;
GRANT SELECT (session_id, issued_at, expires_at, used_at) ON pgauth.refresh_tokens TO pgauth_admin;

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

-- Expired and long-revoked sessions, expired refresh tokens, and stale rate-limit windows go away
-- here (pgauth_admin; e.g. nightly from pg_cron). Returns the number of rows removed.
CREATE FUNCTION @extschema@.auth_purge_expired(keep interval DEFAULT '1 day') RETURNS bigint
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
DECLARE n bigint; total bigint := 0;
BEGIN
    IF keep NOT BETWEEN interval '-1000 years' AND interval '1000 years' THEN
        RAISE EXCEPTION 'keep must be within 1000 years' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Used tokens stay until they expire: a late second use must still be seen as reuse.
    DELETE FROM pgauth.refresh_tokens r WHERE r.expires_at < now() - keep;
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    DELETE FROM pgauth.sessions s
     WHERE s.expires_at < now() - keep OR s.revoked_at < now() - keep;
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    PERFORM pgauth.record_event('expired_purged', '*', jsonb_build_object('rows', total));
    RETURN total;
END
$$;
