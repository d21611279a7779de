-- pgauth 0.1.0 -> 0.2.0 (everything since 0.1.0: the attack-hardening and one-house work).
-- Run by ALTER EXTENSION pgauth UPDATE; after it, the catalog equals a fresh 0.2.0 install
-- (tests/upgrade: compared object by object, with privileges) except the physical position of
-- the two columns added to existing tables.
\echo Use "ALTER EXTENSION pgauth UPDATE TO '0.2.0'" to load this file. \quit


-- The schema check of CREATE EXTENSION, now also at update: a schema others can create in is refused.

DO $$
DECLARE
    creators text;
BEGIN
    SELECT pg_catalog.string_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                      ELSE pg_catalog.quote_ident(r.rolname) END, ', ')
      INTO creators
      FROM pg_catalog.pg_namespace n
     CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) a
      LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
     WHERE n.oid = '@extschema@'::regnamespace AND a.privilege_type = 'CREATE'
       AND a.grantee <> n.nspowner AND NOT coalesce(r.rolsuper, false);
    IF creators IS NOT NULL THEN
        RAISE EXCEPTION 'pgauth cannot be installed in schema "%": other roles can create objects in it (%)',
                        '@extschema@', creators
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Another role could add a function that shadows a pgauth function and captures passwords. '
                      || 'Revoke it (REVOKE CREATE ON SCHEMA @extschema@ FROM PUBLIC) or install into a schema only its owner can write to: '
                      || 'CREATE SCHEMA auth; CREATE EXTENSION pgauth SCHEMA auth; and put that schema first in search_path.';
    END IF;
    -- Its owner can create there too: a loud warning when that is not a superuser (in
    -- PostgreSQL 15 public belongs to pg_database_owner, i.e. the database's owner).
    SELECT CASE WHEN n.nspowner = 'pg_database_owner'::regrole THEN d.rolname ELSE o.rolname END
      INTO creators
      FROM pg_catalog.pg_namespace n
      JOIN pg_catalog.pg_roles o ON o.oid = n.nspowner
      JOIN pg_catalog.pg_database db ON db.datname = pg_catalog.current_database()
      JOIN pg_catalog.pg_roles d ON d.oid = db.datdba
     WHERE n.oid = '@extschema@'::regnamespace
       AND NOT (CASE WHEN n.nspowner = 'pg_database_owner'::regrole THEN d.rolsuper
                     ELSE o.rolsuper END);
    IF creators IS NOT NULL THEN
        RAISE WARNING 'pgauth is installed in a schema where the non-superuser role % can create objects',
                      creators
            USING HINT = 'That role could add a function that shadows a pgauth function and captures passwords. '
                      || 'Prefer a schema owned by a superuser: CREATE SCHEMA auth; CREATE EXTENSION pgauth SCHEMA auth;';
    END IF;
END
$$;


-- Audit: the log is read by pgauth.audit_record_events (the record read and checked in Rust), no
-- longer by decoding stored bytes in SQL. The audit_records table and its chain are unchanged.

COMMENT ON FUNCTION pgauth.audit_record_digest(bigint, bigint, integer, timestamptz, xid8, text, uuid, inet, text, text, text, bytea, text) IS
    'SHA3-512 of an audit record''s canonical serialisation (docs/audit.md, "Digests"), for verifiers outside pgauth';

CREATE OR REPLACE FUNCTION pgauth.audit_record_events(record tid, record_id bigint)
RETURNS TABLE (id bigint, row_key jsonb, old_values jsonb, new_values jsonb)
LANGUAGE c STABLE STRICT PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'pgauth_audit_record_events';

CREATE OR REPLACE VIEW pgauth.audit_log AS
SELECT e.id, r.occurred_at, r.txid, r.db_user, r.app_user_id, r.client_addr, r.event,
       r.table_name, e.row_key, e.old_values, e.new_values,
       r.id AS record_id, r.record_digest
  FROM pgauth.audit_records r
 CROSS JOIN LATERAL pgauth.audit_record_events(r.ctid, r.id) e;

DROP FUNCTION pgauth.audit_expand(text, text, bytea, text, bigint);
DROP FUNCTION pgauth.audit_decode(text, bytea, bigint);
DROP FUNCTION pgauth.audit_changed(jsonb, jsonb);

CREATE FUNCTION pgauth.audit_direct_write() RETURNS boolean LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgauth_audit_direct_write';

CREATE FUNCTION pgauth.audit_direct_change() RETURNS trigger LANGUAGE c
AS 'MODULE_PATHNAME', 'pgauth_audit_direct_change';

CREATE OR REPLACE FUNCTION auth_audit_events(event text DEFAULT NULL, since interval DEFAULT '24 hours')
RETURNS SETOF pgauth.audit_log LANGUAGE sql STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pgauth, pg_temp AS $$
    SELECT l.* FROM pgauth.audit_log l
     -- beyond 1000 years: everything (or nothing), not a timestamp out of range
     WHERE l.occurred_at >= CASE WHEN auth_audit_events.since > interval '1000 years' THEN '-infinity'
                                 WHEN auth_audit_events.since < interval '-1000 years' THEN 'infinity'
                                 ELSE pg_catalog.now() - auth_audit_events.since END
       AND (auth_audit_events.event IS NULL OR l.event = auth_audit_events.event)
     ORDER BY l.id
$$;

REVOKE ALL ON FUNCTION pgauth.audit_capture(), pgauth.audit_refuse_change(),
                       pgauth.audit_direct_change(),
                       pgauth.audit_db_user(), pgauth.audit_app_user(),
                       pgauth.record_event(text, text, jsonb)
    FROM PUBLIC;

REVOKE ALL ON FUNCTION pgauth.audit_record_events(tid, bigint) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION pgauth.audit_record_events(tid, bigint) TO pgauth_admin;

-- Only pgauth's own code writes security events.
REVOKE EXECUTE ON FUNCTION pgauth.record_event(text, text, jsonb) FROM pgauth_admin;


-- Key usage grants keep the role's OID (a role dropped and re-created under the same name has no
-- usage). Grants to roles that no longer exist are dropped.
ALTER TABLE pgauth.key_grants ADD COLUMN grantee_oid oid;
DELETE FROM pgauth.key_grants g
 WHERE g.grantee <> 'public' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = g.grantee);
UPDATE pgauth.key_grants g
   SET grantee_oid = CASE WHEN g.grantee = 'public' THEN 0
                          ELSE (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = g.grantee) END;
ALTER TABLE pgauth.key_grants ALTER COLUMN grantee_oid SET NOT NULL;
DROP TRIGGER key_grants_skip_existing ON pgauth.key_grants;
DROP FUNCTION pgauth.key_grants_skip_existing();


-- Cache generations come from sequences, which a rollback cannot rewind; they start above every
-- generation handed out so far.

CREATE SEQUENCE pgauth.key_generation_seq START 2;

SELECT pg_catalog.setval('pgauth.key_generation_seq', (SELECT pg_catalog.max(generation) + 1 FROM pgauth.key_state), false);

CREATE OR REPLACE FUNCTION pgauth.bump_key_generation() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    UPDATE pgauth.key_state SET generation = pg_catalog.nextval('pgauth.key_generation_seq');
    RETURN NULL;
END
$$;

CREATE FUNCTION pgauth.key_grants_resolve_grantee() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pgauth, pg_temp AS $$
DECLARE role_oid oid;
BEGIN
    IF NEW.grantee = 'public' THEN
        role_oid := 0;
    ELSE
        SELECT r.oid INTO role_oid FROM pg_catalog.pg_roles r WHERE r.rolname = NEW.grantee;
        IF role_oid IS NULL THEN
            RAISE WARNING 'pgauth: usage of key "%" by role "%" skipped: the role does not exist',
                NEW.key_name, NEW.grantee;
            RETURN NULL;
        END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM pgauth.key_grants g
                WHERE g.key_name = NEW.key_name AND g.grantee = NEW.grantee
                  AND g.grantee_oid = role_oid) THEN
        RETURN NULL;
    END IF;
    DELETE FROM pgauth.key_grants g WHERE g.key_name = NEW.key_name AND g.grantee = NEW.grantee;
    NEW.grantee_oid := role_oid;
    RETURN NEW;
END
$$;

CREATE TRIGGER key_grants_resolve_grantee BEFORE INSERT ON pgauth.key_grants
    FOR EACH ROW EXECUTE FUNCTION pgauth.key_grants_resolve_grantee();

REVOKE ALL ON FUNCTION pgauth.bump_key_generation(), pgauth.keys_skip_existing(),
                       pgauth.key_grants_resolve_grantee() FROM PUBLIC;

REVOKE ALL ON SEQUENCE pgauth.key_generation_seq FROM PUBLIC;

CREATE SEQUENCE pgauth.rbac_generation_seq START 2;

SELECT pg_catalog.setval('pgauth.rbac_generation_seq', (SELECT pg_catalog.max(generation) + 1 FROM pgauth.rbac_state), false);

REVOKE ALL ON SEQUENCE pgauth.rbac_generation_seq FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgauth.bump_rbac_generation() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    UPDATE pgauth.rbac_state SET generation = pg_catalog.nextval('pgauth.rbac_generation_seq');
    RETURN NULL;
END
$$;


-- Signing keys have a purpose: the access-token key (pgauth.jwt_key, default "jwt") signs only
-- pgauth's access tokens, and only its tokens bind a session.
ALTER TABLE pgauth.signing_keys
    ADD COLUMN purpose text NOT NULL DEFAULT 'general' CHECK (purpose IN ('access', 'general'));
UPDATE pgauth.signing_keys
   SET purpose = 'access'
 WHERE name = coalesce(nullif(pg_catalog.current_setting('pgauth.jwt_key', true), ''), 'jwt');

GRANT SELECT (id, name, version, algorithm, status, public_jwk, purpose, created_by, created_at,
              status_changed_at) ON pgauth.signing_keys TO pgauth_admin;


-- Failed-attempt counters live in shared memory (a row written by the caller's transaction is
-- undone by its rollback). Running lockouts are not carried over: the update needs a server
-- restart for the new library anyway, and counters start empty at every start.

-- Out of the extension first: that also takes it off pg_dump's list of configuration tables.
ALTER EXTENSION pgauth DROP TABLE pgauth.login_state;
DROP TABLE pgauth.login_state;
DROP TABLE pgauth.login_attempts;
ALTER TABLE pgauth.totp DROP COLUMN failures, DROP COLUMN blocked_until;

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

REVOKE ALL ON pgauth.login_state, pgauth.second_factor_state, pgauth.password_history FROM PUBLIC;

GRANT SELECT ON pgauth.login_state, pgauth.second_factor_state TO pgauth_admin;


-- Administrative functions run as pgauth's owner (their events are pgauth's own).

CREATE OR REPLACE FUNCTION @extschema@.auth_create_user(username text, password text DEFAULT NULL)
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

CREATE OR REPLACE FUNCTION @extschema@.auth_unlock_user(user_id uuid) RETURNS void
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

CREATE OR REPLACE FUNCTION @extschema@.auth_block_user(user_id uuid) RETURNS void
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

CREATE OR REPLACE FUNCTION @extschema@.auth_create_group(name text) RETURNS uuid
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
DECLARE new_id uuid;
BEGIN
    IF length(auth_create_group.name) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'a group name must be 1 to 200 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO pgauth.groups (name) VALUES (auth_create_group.name) RETURNING id INTO new_id;
    PERFORM pgauth.record_event('group_created', auth_create_group.name, jsonb_build_object('group_id', new_id));
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.auth_add_member(group_name text, user_id uuid) RETURNS void
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    PERFORM pgauth.require_user(user_id);
    INSERT INTO pgauth.group_members (group_id, user_id)
    VALUES (pgauth.group_id(group_name), auth_add_member.user_id) ON CONFLICT DO NOTHING;
    PERFORM pgauth.record_event('member_added', group_name, jsonb_build_object('user_id', user_id));
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.auth_remove_member(group_name text, user_id uuid) RETURNS void
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    DELETE FROM pgauth.group_members m
     WHERE m.group_id = pgauth.group_id(group_name) AND m.user_id = auth_remove_member.user_id;
    PERFORM pgauth.record_event('member_removed', group_name, jsonb_build_object('user_id', user_id));
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.auth_create_role(name text, inherits text[] DEFAULT '{}') RETURNS uuid
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
DECLARE new_id uuid; parent text;
BEGIN
    IF length(auth_create_role.name) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'a role name must be 1 to 200 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO pgauth.roles (name) VALUES (auth_create_role.name) RETURNING id INTO new_id;
    FOREACH parent IN ARRAY coalesce(inherits, '{}') LOOP
        INSERT INTO pgauth.role_inherits (role_id, inherits_id) VALUES (new_id, pgauth.role_id(parent));
    END LOOP;
    PERFORM pgauth.record_event('role_created', auth_create_role.name,
                                jsonb_build_object('inherits', coalesce(inherits, '{}')));
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.auth_role_inherit(name text, inherits text) RETURNS void
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    INSERT INTO pgauth.role_inherits (role_id, inherits_id)
    VALUES (pgauth.role_id(name), pgauth.role_id(inherits)) ON CONFLICT DO NOTHING;
    PERFORM pgauth.record_event('role_inherits_added', name, jsonb_build_object('inherits', inherits));
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.auth_drop_role(name text) RETURNS void
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    DELETE FROM pgauth.roles r WHERE r.id = pgauth.role_id(auth_drop_role.name);
    PERFORM pgauth.record_event('role_dropped', auth_drop_role.name, '{}');
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.auth_grant_permission(role text, permission text, min_aal integer DEFAULT 1)
RETURNS void LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF permission !~ '^[A-Za-z0-9_.:*/-]{1,200}$' THEN
        RAISE EXCEPTION 'a permission name is 1 to 200 characters of A-Z, a-z, 0-9 and _ . : * / -' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(min_aal, 1) NOT BETWEEN 1 AND 3 THEN
        RAISE EXCEPTION 'min_aal must be 1, 2 or 3' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO pgauth.permissions (name) VALUES (permission) ON CONFLICT DO NOTHING;
    INSERT INTO pgauth.role_permissions (role_id, permission, min_aal)
    VALUES (pgauth.role_id(role), permission, coalesce(min_aal, 1))
    ON CONFLICT (role_id, permission) DO UPDATE SET min_aal = EXCLUDED.min_aal;
    PERFORM pgauth.record_event('permission_granted', role,
                                jsonb_build_object('permission', permission, 'min_aal', coalesce(min_aal, 1)));
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.auth_revoke_permission(role text, permission text) RETURNS void
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    DELETE FROM pgauth.role_permissions rp
     WHERE rp.role_id = pgauth.role_id(role) AND rp.permission = auth_revoke_permission.permission;
    PERFORM pgauth.record_event('permission_revoked', role, jsonb_build_object('permission', permission));
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.auth_assign_role(user_id uuid, role text, scope text DEFAULT NULL,
                                             allowed_ips cidr[] DEFAULT NULL,
                                             expires_at timestamptz DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF length(scope) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'a scope must be 1 to 200 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pgauth.require_user(user_id);
    INSERT INTO pgauth.role_grants (user_id, role_id, scope, allowed_ips, expires_at)
    VALUES (auth_assign_role.user_id, pgauth.role_id(role), scope, allowed_ips, expires_at)
    ON CONFLICT (user_id, group_id, role_id, scope)
    DO UPDATE SET allowed_ips = EXCLUDED.allowed_ips, expires_at = EXCLUDED.expires_at;
    PERFORM pgauth.record_event('role_assigned', role,
        jsonb_build_object('user_id', user_id, 'scope', scope, 'allowed_ips', allowed_ips, 'expires_at', expires_at));
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.auth_assign_group_role(group_name text, role text, scope text DEFAULT NULL,
                                                   allowed_ips cidr[] DEFAULT NULL,
                                                   expires_at timestamptz DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF length(scope) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'a scope must be 1 to 200 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO pgauth.role_grants (group_id, role_id, scope, allowed_ips, expires_at)
    VALUES (pgauth.group_id(group_name), pgauth.role_id(role), scope, allowed_ips, expires_at)
    ON CONFLICT (user_id, group_id, role_id, scope)
    DO UPDATE SET allowed_ips = EXCLUDED.allowed_ips, expires_at = EXCLUDED.expires_at;
    PERFORM pgauth.record_event('role_assigned', role,
        jsonb_build_object('group', group_name, 'scope', scope, 'allowed_ips', allowed_ips, 'expires_at', expires_at));
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.auth_unassign_role(user_id uuid, role text, scope text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    DELETE FROM pgauth.role_grants g
     WHERE g.user_id = auth_unassign_role.user_id AND g.role_id = pgauth.role_id(role)
       AND g.scope IS NOT DISTINCT FROM auth_unassign_role.scope;
    PERFORM pgauth.record_event('role_unassigned', role, jsonb_build_object('user_id', user_id, 'scope', scope));
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.auth_unassign_group_role(group_name text, role text, scope text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    DELETE FROM pgauth.role_grants g
     WHERE g.group_id = pgauth.group_id(group_name) AND g.role_id = pgauth.role_id(role)
       AND g.scope IS NOT DISTINCT FROM auth_unassign_group_role.scope;
    PERFORM pgauth.record_event('role_unassigned', role, jsonb_build_object('group', group_name, 'scope', scope));
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.auth_purge_expired(keep interval DEFAULT '1 day') RETURNS bigint
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


-- auth_rls_enable: read and write permissions apart, FORCE on request (new arguments).
DROP FUNCTION @extschema@.auth_rls_enable(regclass, text, name);

CREATE FUNCTION @extschema@.auth_rls_enable(tbl regclass, permission text, scope_column name DEFAULT NULL,
                                            write_permission text DEFAULT NULL, force boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    col_type regtype;
    scope_arg text := '';
    write_check text;
    policy_name text;
    cmd text;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'tbl must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- a regclass given as a number is not looked up when it is read
    IF NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = tbl) THEN
        RAISE EXCEPTION 'relation with OID % does not exist', tbl::oid USING ERRCODE = 'undefined_table';
    END IF;
    IF permission IS NULL OR permission !~ '^[A-Za-z0-9_.:*/-]{1,200}$' THEN
        RAISE EXCEPTION 'invalid permission name' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF write_permission IS NOT NULL AND write_permission !~ '^[A-Za-z0-9_.:*/-]{1,200}$' THEN
        RAISE EXCEPTION 'invalid write permission name' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF scope_column IS NOT NULL THEN
        SELECT a.atttypid::regtype INTO col_type FROM pg_attribute a
         WHERE a.attrelid = tbl AND a.attname = scope_column AND NOT a.attisdropped AND a.attnum > 0;
        IF col_type IS NULL THEN
            RAISE EXCEPTION 'column "%" does not exist in %', scope_column, tbl USING ERRCODE = 'undefined_column';
        END IF;
        scope_arg := CASE
            WHEN col_type IN ('bigint'::regtype, 'integer'::regtype, 'smallint'::regtype)
                THEN format(', %I::bigint', scope_column)
            WHEN col_type = 'uuid'::regtype
                THEN format(', %I', scope_column)
            ELSE format(', %I::text', scope_column)
        END;
    END IF;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    IF force THEN
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    END IF;
    policy_name := left('pgauth_' || regexp_replace(permission, '[^A-Za-z0-9_]', '_', 'g'), 63);
    IF EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = tbl AND polname = policy_name) THEN
        EXECUTE format('DROP POLICY %I ON %s', policy_name, tbl);
    END IF;
    EXECUTE format('CREATE POLICY %I ON %s FOR SELECT USING (@extschema@.auth_has_permission(%L%s))',
                   policy_name, tbl, permission, scope_arg);
    IF write_permission IS NOT NULL THEN
        write_check := format('@extschema@.auth_has_permission(%L%s)', write_permission, scope_arg);
        FOREACH cmd IN ARRAY ARRAY['insert', 'update', 'delete'] LOOP
            policy_name := left('pgauth_' || regexp_replace(write_permission, '[^A-Za-z0-9_]', '_', 'g'), 56)
                           || '_' || cmd;
            IF EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = tbl AND polname = policy_name) THEN
                EXECUTE format('DROP POLICY %I ON %s', policy_name, tbl);
            END IF;
            EXECUTE format('CREATE POLICY %I ON %s FOR %s %s', policy_name, tbl, upper(cmd),
                           CASE cmd
                               WHEN 'insert' THEN format('WITH CHECK (%s)', write_check)
                               WHEN 'update' THEN format('USING (%s) WITH CHECK (%s)', write_check, write_check)
                               ELSE format('USING (%s)', write_check)
                           END);
        END LOOP;
    END IF;
END
$$;


-- auth_jwt_verify checks the issuer (new argument); auth_verify is STABLE (it reads settings).
DROP FUNCTION @extschema@.auth_jwt_verify(text, text, text);

CREATE FUNCTION "auth_jwt_verify"(
	"token" TEXT, /* Option < & str > */
	"key_name" TEXT DEFAULT 'jwt', /* Option < & str > */
	"audience" TEXT DEFAULT NULL, /* Option < & str > */
	"issuer" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS jsonb /* Option < RawJsonb > */
VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'auth_jwt_verify_wrapper';

CREATE OR REPLACE FUNCTION "auth_verify"(
	"password" TEXT, /* & str */
	"hash" TEXT /* & str */
) RETURNS bool /* bool */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'auth_verify_wrapper';

CREATE FUNCTION "auth_totp_disable"(
	"user_id" uuid /* Uuid */
) RETURNS bool /* bool */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'auth_totp_disable_wrapper';


-- Direct writes to pgauth's state tables by anyone but pgauth itself are audited.

DO $$
DECLARE
    secrets constant jsonb := '{
        "password_policies": [], "users": [], "credentials": ["password_hash"],
        "password_history": ["password_hash"], "groups": [], "group_members": [], "roles": [],
        "role_inherits": [], "permissions": [], "role_permissions": [], "role_grants": [],
        "sessions": ["token_hash"], "refresh_tokens": ["token_hash"], "rbac_state": [],
        "keys": ["wrapped_key"], "key_grants": [], "key_state": [],
        "signing_keys": ["private_key"], "api_keys": ["key_hash"], "totp": ["secret"],
        "recovery_codes": ["code_hash"], "webauthn_user_handles": [],
        "webauthn_credentials": [], "webauthn_challenges": ["challenge"],
        "webauthn_decoy_key": ["key"]}';
    t text;
    args text;
BEGIN
    FOR t IN SELECT c.relname FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'pgauth'::regnamespace AND c.relkind IN ('r', 'p')
                AND c.relname NOT IN ('audit_records', 'audit_chain', 'audit_checkpoints')
              ORDER BY 1 LOOP
        IF NOT secrets ? t THEN
            RAISE EXCEPTION 'pgauth.% has no audit classification', t
                USING HINT = 'List it with its secret columns in sql/finalize.sql.';
        END IF;
        SELECT coalesce(pg_catalog.string_agg(pg_catalog.quote_literal(c), ', '), '')
          INTO args FROM pg_catalog.jsonb_array_elements_text(secrets -> t) c;
        EXECUTE format('CREATE TRIGGER audit_direct_change AFTER INSERT OR UPDATE OR DELETE ON pgauth.%I
                        FOR EACH ROW WHEN (pgauth.audit_direct_write())
                        EXECUTE FUNCTION pgauth.audit_direct_change(%s)', t, args);
        EXECUTE format('CREATE TRIGGER audit_direct_truncate AFTER TRUNCATE ON pgauth.%I
                        FOR EACH STATEMENT WHEN (pgauth.audit_direct_write())
                        EXECUTE FUNCTION pgauth.audit_direct_change(%s)', t, args);
    END LOOP;
END
$$;

-- pg_dump keeps role_grants' id sequence (a restored database otherwise hands out ids its
-- restored grants already have) and the passkey decoy key (stand-ins of names without passkeys
-- stay the same across a restore).
SELECT pg_catalog.pg_extension_config_dump('pgauth.role_grants_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pgauth.webauthn_decoy_key', '');


-- Row-level security set up by 0.1.0's auth_rls_enable is one FOR ALL policy: whoever may read
-- may also write. The update leaves the tables' policies alone (their owners' objects) and says
-- which ones to set up again.
DO $$
DECLARE
    tables text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.format('%s (%I)', p.polrelid::regclass, p.polname), ', ')
      INTO tables
      FROM pg_catalog.pg_policy p
     WHERE p.polcmd = '*' AND p.polname LIKE 'pgauth\_%'
       AND pg_catalog.pg_get_expr(p.polqual, p.polrelid) LIKE '%auth_has_permission(%';
    IF tables IS NOT NULL THEN
        RAISE WARNING 'pgauth: row-level security set up by version 0.1.0 lets every reader write: %', tables
            USING HINT = 'Call auth_rls_enable(table, permission, scope_column, write_permission) again for each table: '
                      || 'it replaces the policy with a read policy and, for write_permission, write policies.';
    END IF;
END
$$;
