-- pgauth login: the accounts (users and their password credentials, auth_create_user), lockout
-- state, the per-address rate limit, password history, the login statistics, and the
-- administrative unlock/block. auth_login and auth_change_password are Rust (src/login/sql.rs).

CREATE TABLE pgauth.users (
    id         uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    username   text NOT NULL CHECK (length(username) BETWEEN 1 AND 256 AND username !~ '[[:cntrl:]]'),
    status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'locked', 'disabled')),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE UNIQUE INDEX users_username_ci ON pgauth.users (pg_catalog.lower(username));

-- Kept apart from users so that reading who exists never touches a hash.
CREATE TABLE pgauth.credentials (
    user_id       uuid PRIMARY KEY REFERENCES pgauth.users ON DELETE CASCADE,
    password_hash text NOT NULL,
    changed_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);
SELECT pg_catalog.pg_extension_config_dump('pgauth.users', '');
SELECT pg_catalog.pg_extension_config_dump('pgauth.credentials', '');
REVOKE ALL ON pgauth.users, pgauth.credentials FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON pgauth.users TO pgauth_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON pgauth.credentials TO pgauth_admin;

-- Consecutive failures, temporary lockouts and the per-address rate windows are counted in
-- shared memory (src/login/shared.rs), not in rows: a failed attempt must count whatever the
-- caller's transaction does afterwards (a rollback would undo a row), and a row locked by one
-- caller's open transaction would hold up everyone else's sign-in. They need pgauth in
-- shared_preload_libraries and last until the server stops. users.status = 'locked' stays the
-- administrative block (auth_block_user), stored and permanent.
CREATE FUNCTION pgauth.attempt_counters()
RETURNS TABLE (kind text, user_id uuid, failed_count integer, locked_until timestamptz,
               last_failure_at timestamptz, last_success_at timestamptz)
LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'attempt_counters_wrapper';
CREATE FUNCTION pgauth.attempt_counters_reset(user_id uuid) RETURNS void
LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'attempt_counters_reset_wrapper';
REVOKE ALL ON FUNCTION pgauth.attempt_counters(), pgauth.attempt_counters_reset(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgauth.attempt_counters(), pgauth.attempt_counters_reset(uuid)
    TO pgauth_admin;
CREATE VIEW pgauth.login_state AS
SELECT c.user_id, c.failed_count, c.locked_until, c.last_failure_at, c.last_success_at
  FROM pgauth.attempt_counters() c
 WHERE c.kind = 'password';
COMMENT ON VIEW pgauth.login_state IS
    'pgauth: consecutive failed logins and temporary lockouts (pgauth.max_failed_logins, pgauth.lockout_duration), from shared memory';
CREATE VIEW pgauth.second_factor_state AS
SELECT c.user_id, c.failed_count, c.locked_until, c.last_failure_at, c.last_success_at
  FROM pgauth.attempt_counters() c
 WHERE c.kind = 'second_factor';
COMMENT ON VIEW pgauth.second_factor_state IS
    'pgauth: consecutive wrong TOTP and recovery codes and the resulting blocks, from shared memory';

-- Hashes a user had before, for the history rule of the password policy (newest first by id).
CREATE TABLE pgauth.password_history (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES pgauth.users ON DELETE CASCADE,
    password_hash text NOT NULL,
    replaced_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX password_history_user ON pgauth.password_history (user_id, id);

SELECT pg_catalog.pg_extension_config_dump('pgauth.password_history', '');
SELECT pg_catalog.pg_extension_config_dump('pgauth.password_history_id_seq', '');
REVOKE ALL ON pgauth.login_state, pgauth.second_factor_state, pgauth.password_history FROM PUBLIC;
GRANT SELECT ON pgauth.login_state, pgauth.second_factor_state TO pgauth_admin;
GRANT SELECT ON pgauth.password_history TO pgauth_admin;

-- The counters are the audit log's events, so they agree with it and survive restarts; they
-- cover what the audit log still holds (auth_audit_purge removes old events).
-- No index on event: every index is paid by every audited statement; security events are small
-- single-event records, so a scan of pgauth.audit_records stays cheap.
CREATE VIEW pgauth.stats AS
SELECT count(*) FILTER (WHERE l.event = 'login_succeeded')   AS logins_succeeded,
       count(*) FILTER (WHERE l.event = 'login_failed')      AS logins_failed,
       count(*) FILTER (WHERE l.event = 'account_locked')    AS lockouts,
       count(*) FILTER (WHERE l.event = 'password_rehashed') AS rehashes,
       count(*) FILTER (WHERE l.event = 'rate_limited')      AS rate_limited,
       count(*) FILTER (WHERE l.event = 'password_expired')  AS passwords_expired,
       min(l.occurred_at)                                    AS since
  FROM pgauth.audit_records l   -- security events are one record each
 WHERE l.event IN ('login_succeeded', 'login_failed', 'account_locked', 'password_rehashed',
                   'rate_limited', 'password_expired');
COMMENT ON VIEW pgauth.stats IS
    'pgauth login counters over the events the audit log holds';
REVOKE ALL ON pgauth.stats FROM PUBLIC;
GRANT SELECT ON pgauth.stats TO pgauth_admin;

-- Administration: pgauth_admin's (PUBLIC has no EXECUTE, revoked in finalize.sql). SECURITY
-- DEFINER, so their writes are pgauth's own (recorded by their events, not as direct changes)
-- and they may call pgauth.record_event, which refuses every role but pgauth's owner.

CREATE FUNCTION pgauth.require_user(uid uuid) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pgauth.users WHERE id = uid) THEN
        RAISE EXCEPTION 'user % does not exist', uid USING ERRCODE = 'undefined_object';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION pgauth.require_user(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgauth.require_user(uuid) TO pgauth_admin;

CREATE FUNCTION @extschema@.auth_create_user(username text, password text DEFAULT NULL)
RETURNS uuid LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
DECLARE new_id uuid;
BEGIN
    IF username IS NULL THEN
        RAISE EXCEPTION 'username must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(username) NOT BETWEEN 1 AND 256 OR username ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'a username must be 1 to 256 characters without control characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM pgauth.users u WHERE lower(u.username) = lower(auth_create_user.username)) THEN
        RAISE EXCEPTION 'user "%" already exists', username USING ERRCODE = 'unique_violation';
    END IF;
    INSERT INTO pgauth.users (username) VALUES (auth_create_user.username) RETURNING id INTO new_id;
    IF password IS NOT NULL THEN
        PERFORM @extschema@.auth_check_password(password, auth_create_user.username);
        INSERT INTO pgauth.credentials (user_id, password_hash)
        VALUES (new_id, @extschema@.auth_hash_password(password));
    END IF;
    PERFORM pgauth.record_event('user_created', auth_create_user.username,
                                jsonb_build_object('user_id', new_id));
    RETURN new_id;
END
$$;

-- Ends a temporary lockout and an administrative block ('locked' → 'active'). A 'disabled'
-- account stays disabled.
CREATE FUNCTION @extschema@.auth_unlock_user(user_id uuid) RETURNS void
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
DECLARE
    was_blocked boolean;
BEGIN
    PERFORM pgauth.require_user(user_id);
    -- Immediate, not transactional: the counters are in shared memory.
    PERFORM pgauth.attempt_counters_reset(user_id);
    UPDATE pgauth.users u SET status = 'active', updated_at = now()
     WHERE u.id = auth_unlock_user.user_id AND u.status = 'locked';
    was_blocked := FOUND;
    PERFORM pgauth.record_event('user_unlocked',
        (SELECT u.username FROM pgauth.users u WHERE u.id = auth_unlock_user.user_id),
        jsonb_build_object('user_id', user_id, 'was_blocked', was_blocked));
END
$$;

-- The administrative block: status 'locked' (no login, no permissions, no session binding) and
-- every open session revoked. A 'disabled' account keeps its status; its sessions are revoked.
CREATE FUNCTION @extschema@.auth_block_user(user_id uuid) RETURNS void
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
DECLARE revoked bigint;
BEGIN
    PERFORM pgauth.require_user(user_id);
    UPDATE pgauth.users u SET status = 'locked', updated_at = now()
     WHERE u.id = auth_block_user.user_id AND u.status = 'active';
    WITH r AS (
        UPDATE pgauth.sessions s SET revoked_at = now()
         WHERE s.user_id = auth_block_user.user_id AND s.revoked_at IS NULL RETURNING 1)
    SELECT count(*) INTO revoked FROM r;
    PERFORM pgauth.record_event('user_blocked',
        (SELECT u.username FROM pgauth.users u WHERE u.id = auth_block_user.user_id),
        jsonb_build_object('user_id', user_id, 'sessions_revoked', revoked));
END
$$;
