-- pgauth bootstrap: the state schema, the roles and the password policy table.
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

CREATE TABLE pgauth.password_policies (
    name            text PRIMARY KEY CHECK (name ~ '^[a-z0-9_]{1,63}$'),
    min_length      integer NOT NULL DEFAULT 8 CHECK (min_length BETWEEN 4 AND 128),
    require_upper   boolean NOT NULL DEFAULT false,
    require_lower   boolean NOT NULL DEFAULT false,
    require_digit   boolean NOT NULL DEFAULT false,
    require_special boolean NOT NULL DEFAULT false,
    min_strength    integer NOT NULL DEFAULT 3 CHECK (min_strength BETWEEN 0 AND 4),
    history         integer NOT NULL DEFAULT 0 CHECK (history BETWEEN 0 AND 24),
    max_age_days    integer NOT NULL DEFAULT 0 CHECK (max_age_days BETWEEN 0 AND 365),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE pgauth.password_policies IS
    'Password policies used by auth_password_problems / auth_check_password. min_strength is a zxcvbn score (0-4); history and max_age_days are enforced by password changes and login.';

INSERT INTO pgauth.password_policies
    (name, min_length, require_upper, require_lower, require_digit, require_special, min_strength)
VALUES
    ('default', 8, false, false, false, false, 3),
    ('strong', 20, true, true, true, true, 4);

-- pg_dump keeps the rows (edited built-ins included). CREATE EXTENSION inserts the built-ins
-- before the dump's COPY runs, so a row whose name exists updates it instead of failing.
CREATE FUNCTION pgauth.password_policies_upsert() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    UPDATE pgauth.password_policies p
       SET min_length = NEW.min_length, require_upper = NEW.require_upper,
           require_lower = NEW.require_lower, require_digit = NEW.require_digit,
           require_special = NEW.require_special, min_strength = NEW.min_strength,
           history = NEW.history, max_age_days = NEW.max_age_days, updated_at = NEW.updated_at
     WHERE p.name = NEW.name;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER password_policies_upsert BEFORE INSERT ON pgauth.password_policies
    FOR EACH ROW EXECUTE FUNCTION pgauth.password_policies_upsert();

CREATE FUNCTION pgauth.password_policies_touch() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    NEW.updated_at := pg_catalog.now();
    RETURN NEW;
END
$$;
CREATE TRIGGER password_policies_touch BEFORE UPDATE ON pgauth.password_policies
    FOR EACH ROW EXECUTE FUNCTION pgauth.password_policies_touch();

REVOKE ALL ON FUNCTION pgauth.password_policies_upsert() FROM PUBLIC;
REVOKE ALL ON FUNCTION pgauth.password_policies_touch() FROM PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('pgauth.password_policies', '');

REVOKE ALL ON pgauth.password_policies FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON pgauth.password_policies TO pgauth_admin;
