-- pgauth JWT: signing keys (auth_create_signing_key, auth_jwt_sign, auth_jwt_verify, auth_jwks).
-- The refresh tokens of signed-in sessions are session's (sql/session.sql).

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

SELECT pg_catalog.pg_extension_config_dump('pgauth.signing_keys', '');
REVOKE ALL ON pgauth.signing_keys FROM PUBLIC;
GRANT SELECT (id, name, version, algorithm, status, public_jwk, purpose, created_by, created_at,
              status_changed_at) ON pgauth.signing_keys TO pgauth_admin;
