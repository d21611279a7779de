-- pgauth finalize: privileges on the functions. Runs after every function exists.
-- PUBLIC keeps what an application role needs: password hashing/verification/policy checks,
-- encryption with keys granted to it, permission checks for the bound user, session binding
-- with a token, auth_current_user_id. Administration is pgauth_admin's; identity assertions for
-- users authenticated elsewhere are pgauth_service's. auth_login and auth_change_password stay
-- with PUBLIC: an application's login endpoint calls them, and they prove identity themselves.

DO $$
DECLARE f text;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'auth_create_user(text, text)', 'auth_create_group(text)', 'auth_add_member(text, uuid)',
        'auth_remove_member(text, uuid)', 'auth_create_role(text, text[])',
        'auth_role_inherit(text, text)', 'auth_drop_role(text)',
        'auth_grant_permission(text, text, integer)', 'auth_revoke_permission(text, text)',
        'auth_assign_role(uuid, text, text, cidr[], timestamptz)',
        'auth_assign_group_role(text, text, text, cidr[], timestamptz)',
        'auth_unassign_role(uuid, text, text)', 'auth_unassign_group_role(text, text, text)',
        'auth_unlock_user(uuid)', 'auth_block_user(uuid)',
        'auth_create_signing_key(text, text)', 'auth_rotate_signing_key(text)',
        'auth_revoke_signing_key(uuid)', 'auth_import_signing_key(text, text, text)',
        'auth_purge_expired(interval)'] LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION @extschema@.%s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.%s TO pgauth_admin', f);
    END LOOP;
    FOREACH f IN ARRAY ARRAY[
        'auth_user_has_permission(uuid, text, text, inet, integer)', 'auth_user_permissions(uuid)',
        'auth_create_session(uuid, interval, boolean)', 'auth_bind_user(uuid, integer)',
        'auth_jwt_sign(jsonb, text, interval)',
        'auth_create_api_key(uuid, text, text[], timestamptz)', 'auth_revoke_api_key(text)',
        'auth_totp_enroll(uuid, text)', 'auth_totp_verify(uuid, text)', 'auth_recovery_codes(uuid)',
        'auth_use_recovery_code(uuid, text)'] LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION @extschema@.%s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.%s TO pgauth_admin, pgauth_service', f);
    END LOOP;
END
$$;

-- Passkeys: sign-in is PUBLIC's, like auth_login. Registering, listing, renaming and revoking
-- stay with PUBLIC too, because a user may manage their own passkeys in a transaction bound
-- with auth_set_session(); the functions check that, or pgauth_admin / pgauth_service, inside.
DO $$
DECLARE f text;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'auth_webauthn_register_begin(uuid)', 'auth_webauthn_register_finish(uuid, jsonb, text)',
        'auth_webauthn_login_begin(text, inet)', 'auth_webauthn_login_finish(jsonb, inet)',
        'auth_webauthn_credentials(uuid)', 'auth_webauthn_rename(text, text)',
        'auth_webauthn_revoke(text)'] LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.%s TO PUBLIC', f);
    END LOOP;
END
$$;

-- Every change to pgauth's state is an audit event, whichever path makes it. pgauth's code
-- records its own (security events) and writes as the owner of schema pgauth; a write by any
-- other role (pgauth_admin's direct UPDATE, another superuser) is recorded by these triggers
-- as a table change, secret columns redacted. Every table of schema pgauth must be listed here
-- with its secret columns (or be one of the audit tables): installation fails otherwise, so a
-- new table cannot be left out or leak a secret by default.
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
