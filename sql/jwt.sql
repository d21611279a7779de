-- pgauth JWT: signing keys (auth_create_signing_key, auth_jwt_sign, auth_jwt_verify, auth_jwks)
-- and the refresh tokens of signed-in sessions (auth_login, auth_refresh).

-- One row per key version; id is the `kid` of the tokens it signs. Private material (HMAC secret
-- or PKCS#8 PEM) is stored only sealed: the auth_encrypt envelope under the `default` data key,
-- associated data = id. public_jwk: the public half for RS/ES/EdDSA, served by auth_jwks().
-- purpose: 'access' for the key of pgauth's own access tokens (pgauth.jwt_key, created by the
-- first sign-in; only auth_login/auth_refresh sign with it and auth_set_session accepts only its
-- tokens), 'general' for keys made by auth_create_signing_key (auth_jwt_sign). Every version of
-- a name has the purpose of the first.
CREATE TABLE pgauth.signing_keys (
    id                uuid PRIMARY KEY,
    name              text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.:@/-]{1,128}$'),
    version           integer NOT NULL CHECK (version >= 1),
    algorithm         text NOT NULL
                      CHECK (algorithm IN ('HS256', 'HS384', 'HS512', 'RS256', 'ES256', 'EdDSA')),
    status            text NOT NULL DEFAULT 'active'
                      CHECK (status IN ('active', 'verify_only', 'revoked')),
    private_key       bytea,
    public_jwk        jsonb,
    purpose           text NOT NULL DEFAULT 'general' CHECK (purpose IN ('access', 'general')),
    created_by        name NOT NULL DEFAULT current_user,
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    status_changed_at timestamptz,
    UNIQUE (name, version),
    CHECK (private_key IS NOT NULL OR public_jwk IS NOT NULL),
    CHECK (status <> 'active' OR private_key IS NOT NULL)
);
CREATE UNIQUE INDEX signing_keys_one_active ON pgauth.signing_keys (name) WHERE status = 'active';
COMMENT ON TABLE pgauth.signing_keys IS
    'pgauth JWT signing keys; private material sealed under the default data key (master key protected)';
CREATE TRIGGER signing_keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pgauth.signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION pgauth.bump_key_generation();

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

SELECT pg_catalog.pg_extension_config_dump('pgauth.signing_keys', '');
SELECT pg_catalog.pg_extension_config_dump('pgauth.refresh_tokens', '');
REVOKE ALL ON pgauth.signing_keys, pgauth.refresh_tokens FROM PUBLIC;
GRANT SELECT (id, name, version, algorithm, status, public_jwk, purpose, created_by, created_at,
              status_changed_at) ON pgauth.signing_keys TO pgauth_admin;
GRANT SELECT (session_id, issued_at, expires_at, used_at) ON pgauth.refresh_tokens TO pgauth_admin;

-- Expired and long-revoked sessions, expired refresh tokens, and stale rate-limit windows go away
-- here (pgauth_admin; e.g. nightly from pg_cron). Returns the number of rows removed.
CREATE FUNCTION @extschema@.auth_purge_expired(keep interval DEFAULT '1 day') RETURNS bigint
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
DECLARE n bigint; total bigint := 0;
BEGIN
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
