-- pgauth RBAC: groups, roles with inheritance, permissions, scoped and network- and
-- time-conditioned role assignments, and the generation that invalidates cached permissions.
-- The users they are granted to are login's (sql/login.sql).

CREATE TABLE pgauth.groups (
    id         uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    name       text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TABLE pgauth.group_members (
    group_id uuid NOT NULL REFERENCES pgauth.groups ON DELETE CASCADE,
    user_id  uuid NOT NULL REFERENCES pgauth.users ON DELETE CASCADE,
    added_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON pgauth.group_members (user_id);

CREATE TABLE pgauth.roles (
    id         uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    name       text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TABLE pgauth.role_inherits (
    role_id     uuid NOT NULL REFERENCES pgauth.roles ON DELETE CASCADE,
    inherits_id uuid NOT NULL REFERENCES pgauth.roles ON DELETE CASCADE,
    PRIMARY KEY (role_id, inherits_id),
    CHECK (role_id <> inherits_id)
);

CREATE TABLE pgauth.permissions (
    name       text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.:*/-]{1,200}$'),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TABLE pgauth.role_permissions (
    role_id    uuid NOT NULL REFERENCES pgauth.roles ON DELETE CASCADE,
    permission text NOT NULL REFERENCES pgauth.permissions ON DELETE CASCADE,
    min_aal    integer NOT NULL DEFAULT 1 CHECK (min_aal BETWEEN 1 AND 3),
    PRIMARY KEY (role_id, permission)
);

CREATE TABLE pgauth.role_grants (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     uuid REFERENCES pgauth.users ON DELETE CASCADE,
    group_id    uuid REFERENCES pgauth.groups ON DELETE CASCADE,
    role_id     uuid NOT NULL REFERENCES pgauth.roles ON DELETE CASCADE,
    scope       text CHECK (length(scope) BETWEEN 1 AND 200),
    allowed_ips cidr[],
    expires_at  timestamptz,
    granted_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CHECK ((user_id IS NULL) <> (group_id IS NULL))
);
CREATE UNIQUE INDEX role_grants_unique ON pgauth.role_grants (user_id, group_id, role_id, scope) NULLS NOT DISTINCT;
CREATE INDEX role_grants_user ON pgauth.role_grants (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX role_grants_group ON pgauth.role_grants (group_id) WHERE group_id IS NOT NULL;
-- pg_dump keeps the grants (below) and their id sequence: without it a restored database would
-- hand out ids its restored grants already have (the identity sequence is not dumped with an
-- extension's table).
SELECT pg_catalog.pg_extension_config_dump('pgauth.role_grants_id_seq', '');

-- Role inheritance must stay acyclic.
CREATE FUNCTION pgauth.refuse_role_cycles() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    IF EXISTS (
        WITH RECURSIVE up(id) AS (
            SELECT NEW.inherits_id
            UNION
            SELECT i.inherits_id FROM pgauth.role_inherits i JOIN up ON i.role_id = up.id)
        SELECT 1 FROM up WHERE id = NEW.role_id)
    THEN
        RAISE EXCEPTION 'role inheritance cycle: "%" would inherit from itself',
              (SELECT name FROM pgauth.roles WHERE id = NEW.role_id)
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER role_inherits_acyclic BEFORE INSERT OR UPDATE ON pgauth.role_inherits
    FOR EACH ROW EXECUTE FUNCTION pgauth.refuse_role_cycles();

-- Every change that can alter a permission check sets a new generation; backends compare it at
-- every statement and drop their cached permissions when it moved. New values come from a
-- sequence (never rewound by a rollback, see pgauth.key_state): a generation a backend cached
-- a rolled-back grant under can never be committed by another change.
CREATE SEQUENCE pgauth.rbac_generation_seq START 2;
REVOKE ALL ON SEQUENCE pgauth.rbac_generation_seq FROM PUBLIC;
CREATE TABLE pgauth.rbac_state (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation bigint NOT NULL DEFAULT 1
);
INSERT INTO pgauth.rbac_state DEFAULT VALUES;

CREATE FUNCTION pgauth.bump_rbac_generation() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    UPDATE pgauth.rbac_state SET generation = pg_catalog.nextval('pgauth.rbac_generation_seq');
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION pgauth.bump_rbac_generation(), pgauth.refuse_role_cycles() FROM PUBLIC;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['groups', 'group_members', 'roles', 'role_inherits',
                             'permissions', 'role_permissions', 'role_grants'] LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pgauth.%I
                        FOR EACH STATEMENT EXECUTE FUNCTION pgauth.bump_rbac_generation()',
                       t || '_changed', t);
        EXECUTE format('SELECT pg_catalog.pg_extension_config_dump(%L, %L)', 'pgauth.' || t, '');
        EXECUTE format('REVOKE ALL ON pgauth.%I FROM PUBLIC', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON pgauth.%I TO pgauth_admin', t);
    END LOOP;
END
$$;
-- A user's status decides whether their grants count (an inactive user has no permissions).
CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pgauth.users
    FOR EACH STATEMENT EXECUTE FUNCTION pgauth.bump_rbac_generation();
REVOKE ALL ON pgauth.rbac_state FROM PUBLIC;

-- Administration: pgauth_admin's (PUBLIC has no EXECUTE, revoked in finalize.sql). SECURITY
-- DEFINER, so their writes are pgauth's own (recorded by their events, not as direct changes)
-- and they may call pgauth.record_event, which refuses every role but pgauth's owner.

CREATE FUNCTION @extschema@.auth_create_group(name text) RETURNS uuid
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

CREATE FUNCTION pgauth.group_id(group_name text) RETURNS uuid
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pgauth, pg_temp AS $$
DECLARE found uuid;
BEGIN
    SELECT id INTO found FROM pgauth.groups WHERE name = group_name;
    IF found IS NULL THEN
        RAISE EXCEPTION 'group "%" does not exist', group_name USING ERRCODE = 'undefined_object';
    END IF;
    RETURN found;
END
$$;

CREATE FUNCTION pgauth.role_id(role_name text) RETURNS uuid
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pgauth, pg_temp AS $$
DECLARE found uuid;
BEGIN
    SELECT id INTO found FROM pgauth.roles WHERE name = role_name;
    IF found IS NULL THEN
        RAISE EXCEPTION 'role "%" does not exist', role_name USING ERRCODE = 'undefined_object',
              HINT = 'pgauth roles are created with auth_create_role(); they are not database roles.';
    END IF;
    RETURN found;
END
$$;

CREATE FUNCTION @extschema@.auth_add_member(group_name text, user_id uuid) RETURNS void
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    PERFORM pgauth.require_user(user_id);
    INSERT INTO pgauth.group_members (group_id, user_id)
    VALUES (pgauth.group_id(group_name), auth_add_member.user_id) ON CONFLICT DO NOTHING;
    PERFORM pgauth.record_event('member_added', group_name, jsonb_build_object('user_id', user_id));
END
$$;

CREATE FUNCTION @extschema@.auth_remove_member(group_name text, user_id uuid) RETURNS void
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    DELETE FROM pgauth.group_members m
     WHERE m.group_id = pgauth.group_id(group_name) AND m.user_id = auth_remove_member.user_id;
    PERFORM pgauth.record_event('member_removed', group_name, jsonb_build_object('user_id', user_id));
END
$$;

CREATE FUNCTION @extschema@.auth_create_role(name text, inherits text[] DEFAULT '{}') RETURNS uuid
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

CREATE FUNCTION @extschema@.auth_role_inherit(name text, inherits text) RETURNS void
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    INSERT INTO pgauth.role_inherits (role_id, inherits_id)
    VALUES (pgauth.role_id(name), pgauth.role_id(inherits)) ON CONFLICT DO NOTHING;
    PERFORM pgauth.record_event('role_inherits_added', name, jsonb_build_object('inherits', inherits));
END
$$;

CREATE FUNCTION @extschema@.auth_drop_role(name text) RETURNS void
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    DELETE FROM pgauth.roles r WHERE r.id = pgauth.role_id(auth_drop_role.name);
    PERFORM pgauth.record_event('role_dropped', auth_drop_role.name, '{}');
END
$$;

CREATE FUNCTION @extschema@.auth_grant_permission(role text, permission text, min_aal integer DEFAULT 1)
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

CREATE FUNCTION @extschema@.auth_revoke_permission(role text, permission text) RETURNS void
LANGUAGE plpgsql STRICT SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    DELETE FROM pgauth.role_permissions rp
     WHERE rp.role_id = pgauth.role_id(role) AND rp.permission = auth_revoke_permission.permission;
    PERFORM pgauth.record_event('permission_revoked', role, jsonb_build_object('permission', permission));
END
$$;

CREATE FUNCTION @extschema@.auth_assign_role(user_id uuid, role text, scope text DEFAULT NULL,
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

CREATE FUNCTION @extschema@.auth_assign_group_role(group_name text, role text, scope text DEFAULT NULL,
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

CREATE FUNCTION @extschema@.auth_unassign_role(user_id uuid, role text, scope text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    DELETE FROM pgauth.role_grants g
     WHERE g.user_id = auth_unassign_role.user_id AND g.role_id = pgauth.role_id(role)
       AND g.scope IS NOT DISTINCT FROM auth_unassign_role.scope;
    PERFORM pgauth.record_event('role_unassigned', role, jsonb_build_object('user_id', user_id, 'scope', scope));
END
$$;

CREATE FUNCTION @extschema@.auth_unassign_group_role(group_name text, role text, scope text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    DELETE FROM pgauth.role_grants g
     WHERE g.group_id = pgauth.group_id(group_name) AND g.role_id = pgauth.role_id(role)
       AND g.scope IS NOT DISTINCT FROM auth_unassign_group_role.scope;
    PERFORM pgauth.record_event('role_unassigned', role, jsonb_build_object('group', group_name, 'scope', scope));
END
$$;

-- Row-level security for the common case, in one call. Runs as the caller, who must own the
-- table. Reading never implies writing: `permission` gets a FOR SELECT policy only, and INSERT,
-- UPDATE and DELETE are allowed by policies for `write_permission` alone (none given: no
-- policy lets anyone subject to RLS write). The table's owner bypasses RLS unless `force` sets
-- FORCE ROW LEVEL SECURITY; superusers and BYPASSRLS roles always do. Repeatable: the policies
-- it creates are replaced (including the FOR ALL policy earlier builds made).
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

REVOKE ALL ON FUNCTION pgauth.group_id(text), pgauth.role_id(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgauth.group_id(text), pgauth.role_id(text) TO pgauth_admin;
