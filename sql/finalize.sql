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
