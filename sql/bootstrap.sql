-- pgauth bootstrap: the state schema and the roles.
-- Runs before any generated function is created.

-- The schema of the auth_* functions must not be one where other roles can create objects:
-- there, anyone could add an overload that wins for some argument types (an
-- auth_verify(varchar, varchar) catches what JDBC sends) and capture passwords. Databases
-- created before PostgreSQL 15 keep CREATE on public for PUBLIC.
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

CREATE SCHEMA pgauth;
COMMENT ON SCHEMA pgauth IS 'pgauth state tables and internal helpers; not for direct use by applications';
REVOKE ALL ON SCHEMA pgauth FROM PUBLIC;

-- Roles are cluster-wide: a second database installing pgauth reuses them.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgauth_admin') THEN
        CREATE ROLE pgauth_admin NOLOGIN;
        COMMENT ON ROLE pgauth_admin IS 'pgauth security administrator: users, roles, keys, policies';
    END IF;
END
$$;

GRANT USAGE ON SCHEMA pgauth TO pgauth_admin;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgauth_service') THEN
        CREATE ROLE pgauth_service NOLOGIN;
        COMMENT ON ROLE pgauth_service IS
            'application servers that authenticate users themselves: may bind a pgauth user (auth_bind_user) and create sessions';
    END IF;
END
$$;
GRANT USAGE ON SCHEMA pgauth TO pgauth_service;
