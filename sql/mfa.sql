-- Second factors. The TOTP secret is stored only encrypted (auth_encrypt envelope under the
-- `default` key, associated data = the user id); recovery codes only keyed: HMAC-SHA3-256 under
-- the `default` data key of "pgauth recovery code v1" || user id || code (src/mfa). Rows of plain
-- SHA-256 written by earlier versions are still accepted when used.
CREATE TABLE pgauth.totp (
    user_id     uuid PRIMARY KEY REFERENCES pgauth.users ON DELETE CASCADE,
    secret      bytea NOT NULL,
    issuer      text,
    last_step   bigint,
    -- Wrong codes are counted in shared memory (src/login/shared.rs), not here: a row written
    -- by the caller's transaction is undone by its rollback.
    enrolled_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE TABLE pgauth.recovery_codes (
    user_id    uuid NOT NULL REFERENCES pgauth.users ON DELETE CASCADE,
    code_hash  bytea NOT NULL CHECK (octet_length(code_hash) = 32),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    used_at    timestamptz,
    PRIMARY KEY (user_id, code_hash)
);
SELECT pg_catalog.pg_extension_config_dump('pgauth.totp', '');
SELECT pg_catalog.pg_extension_config_dump('pgauth.recovery_codes', '');
REVOKE ALL ON pgauth.totp, pgauth.recovery_codes FROM PUBLIC;
