-- pgauth keys: data keys wrapped under the master key, who may use them, and the generation
-- counter that tells every backend when its cache of unwrapped keys is stale.

CREATE TABLE pgauth.keys (
    id                     uuid PRIMARY KEY,
    name                   text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.:@/-]{1,128}$'),
    version                integer NOT NULL CHECK (version >= 1),
    status                 text NOT NULL DEFAULT 'active'
                           CHECK (status IN ('active', 'decrypt_only', 'revoked')),
    -- AES-256-GCM(master key, data key), nonce || ciphertext || tag; associated data is the key id.
    wrapped_key            bytea NOT NULL CHECK (octet_length(wrapped_key) = 60),
    -- Which master key wrapped it (HMAC of a fixed label, 8 bytes): not secret, tells keys apart.
    master_key_fingerprint bytea NOT NULL CHECK (octet_length(master_key_fingerprint) = 8),
    created_by             name NOT NULL DEFAULT current_user,
    created_at             timestamptz NOT NULL DEFAULT pg_catalog.now(),
    status_changed_at      timestamptz,
    UNIQUE (name, version)
);
CREATE UNIQUE INDEX keys_one_active_version ON pgauth.keys (name) WHERE status = 'active';
COMMENT ON TABLE pgauth.keys IS
    'pgauth data keys, stored only wrapped under the master key (pgauth.master_key_file / pgauth.master_key_command)';

-- Which database roles may use a key name (all its versions). Membership counts. A grant is to
-- a role: grantee_oid tells the granted role from one dropped and created again under the same
-- name (a grant counts only while that OID has that name); the name is what a dump carries to
-- another cluster, where key_grants_resolve_grantee() looks the OID up again. 'public' has OID 0.
CREATE TABLE pgauth.key_grants (
    key_name    text NOT NULL,
    grantee     name NOT NULL,
    grantee_oid oid NOT NULL,
    granted_by name NOT NULL DEFAULT current_user,
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (key_name, grantee)
);

-- Set by every change to keys or grants; backends compare it once per statement. Each change
-- takes a new value from a sequence, which a rollback does not rewind: a value a rolled-back
-- change used (and a backend may have cached keys under) is never seen again, so no later
-- commit can land on it ("generation + 1" could, and revived a rolled-back grant).
CREATE SEQUENCE pgauth.key_generation_seq START 2;
CREATE TABLE pgauth.key_state (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation bigint NOT NULL DEFAULT 1
);
INSERT INTO pgauth.key_state DEFAULT VALUES;

CREATE FUNCTION pgauth.bump_key_generation() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    UPDATE pgauth.key_state SET generation = pg_catalog.nextval('pgauth.key_generation_seq');
    RETURN NULL;
END
$$;
CREATE TRIGGER keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pgauth.keys
    FOR EACH STATEMENT EXECUTE FUNCTION pgauth.bump_key_generation();
CREATE TRIGGER key_grants_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pgauth.key_grants
    FOR EACH STATEMENT EXECUTE FUNCTION pgauth.bump_key_generation();

-- Restoring a dump into a database where CREATE EXTENSION already made a key must not fail or
-- duplicate: a row whose id exists is skipped (the ids are random, so equal ids are the same key).
CREATE FUNCTION pgauth.keys_skip_existing() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pgauth, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pgauth.keys k WHERE k.id = NEW.id) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER keys_skip_existing BEFORE INSERT ON pgauth.keys
    FOR EACH ROW EXECUTE FUNCTION pgauth.keys_skip_existing();

-- Every grant row gets the OID of the role its name names *now*: at a grant, and when pg_dump's
-- data or auth_import_keys() brings rows from another cluster (whose OIDs mean nothing here).
-- A grant to a role that does not exist is skipped; one that exists for the same role is kept;
-- a stale row of a dropped role of the same name is replaced.
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

SELECT pg_catalog.pg_extension_config_dump('pgauth.keys', '');
SELECT pg_catalog.pg_extension_config_dump('pgauth.key_grants', '');

REVOKE ALL ON pgauth.keys, pgauth.key_grants, pgauth.key_state FROM PUBLIC;
REVOKE ALL ON SEQUENCE pgauth.key_generation_seq FROM PUBLIC;
GRANT SELECT ON pgauth.keys, pgauth.key_grants TO pgauth_admin;

-- Key events go to pgauth.record_event(), defined with the audit log (sql/audit.sql).
