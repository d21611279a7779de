-- pgauth passkeys (WebAuthn): users' random user handles, registered credentials, and the
-- short-lived challenges of ceremonies in progress. Functions are Rust (src/webauthn/sql.rs).

-- The WebAuthn user handle (user.id in the options): random, so it tells an authenticator
-- nothing about the account; a discoverable credential returns it at sign-in.
CREATE TABLE pgauth.webauthn_user_handles (
    user_id uuid PRIMARY KEY REFERENCES pgauth.users ON DELETE CASCADE,
    handle  bytea NOT NULL UNIQUE CHECK (octet_length(handle) BETWEEN 16 AND 64)
);
COMMENT ON TABLE pgauth.webauthn_user_handles IS 'pgauth: WebAuthn user handles';

CREATE TABLE pgauth.webauthn_credentials (
    id                 uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    user_id            uuid NOT NULL REFERENCES pgauth.users ON DELETE CASCADE,
    credential_id      bytea NOT NULL UNIQUE CHECK (octet_length(credential_id) BETWEEN 1 AND 1023),
    -- The COSE_Key exactly as the authenticator encoded it.
    public_key         bytea NOT NULL CHECK (octet_length(public_key) <= 2048),
    algorithm          integer NOT NULL CHECK (algorithm IN (-7, -8, -257)),
    sign_count         bigint NOT NULL DEFAULT 0 CHECK (sign_count BETWEEN 0 AND 4294967295),
    transports         text[] NOT NULL DEFAULT '{}',
    aaguid             uuid NOT NULL,
    attestation_format text NOT NULL,
    backup_eligible    boolean NOT NULL,
    backed_up          boolean NOT NULL,
    user_verified      boolean NOT NULL,
    name               text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    created_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_used_at       timestamptz
);
CREATE INDEX webauthn_credentials_user ON pgauth.webauthn_credentials (user_id);
COMMENT ON TABLE pgauth.webauthn_credentials IS 'pgauth: registered passkeys (public keys only)';

-- Challenges of registrations and sign-ins in progress: single use, deleted when answered or
-- soon after they expire (pgauth.webauthn_challenge_ttl). UNLOGGED: a crash may forget them.
-- A sign-in challenge names the user it was issued for; user_id NULL with discoverable = false
-- is a challenge for a name that has no account, which no response can satisfy.
CREATE UNLOGGED TABLE pgauth.webauthn_challenges (
    challenge    bytea PRIMARY KEY CHECK (octet_length(challenge) = 32),
    ceremony     text NOT NULL CHECK (ceremony IN ('register', 'login')),
    user_id      uuid REFERENCES pgauth.users ON DELETE CASCADE,
    discoverable boolean NOT NULL DEFAULT false,
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- The sign-in's client address (IPv4, or IPv6 /64), for pgauth.webauthn_pending_challenges.
    client       inet,
    CHECK (ceremony = 'login' OR (user_id IS NOT NULL AND NOT discoverable))
);
CREATE INDEX webauthn_challenges_expiry ON pgauth.webauthn_challenges (expires_at);
CREATE INDEX webauthn_challenges_client ON pgauth.webauthn_challenges (client, expires_at)
    WHERE client IS NOT NULL;

-- The key of the stand-in credential ids that auth_webauthn_login_begin gives names without
-- passkeys (so that it does not tell which names exist). Made on first use.
CREATE TABLE pgauth.webauthn_decoy_key (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    key       bytea NOT NULL CHECK (octet_length(key) = 32)
);

SELECT pg_catalog.pg_extension_config_dump('pgauth.webauthn_user_handles', '');
SELECT pg_catalog.pg_extension_config_dump('pgauth.webauthn_credentials', '');
-- The decoy key too: a restore must not change the stand-ins of names without passkeys while
-- real users' credential ids stay (that difference would tell which names exist). A restore into
-- a database that has made its own decoy key already fails on the singleton: empty it first.
SELECT pg_catalog.pg_extension_config_dump('pgauth.webauthn_decoy_key', '');
REVOKE ALL ON pgauth.webauthn_user_handles, pgauth.webauthn_credentials,
              pgauth.webauthn_challenges, pgauth.webauthn_decoy_key FROM PUBLIC;
