-- pgauth password: the password policies (src/password/policy.rs reads them; auth_password_problems,
-- auth_check_password and the CREATE/ALTER ROLE check apply them). Password history is login's
-- (sql/login.sql): auth_change_password keeps it.

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
