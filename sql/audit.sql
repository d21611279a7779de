-- pgauth audit: an append-only event log, a hash chain with one entry per committed transaction,
-- and checkpoints left by retention. See README "Audit" for the digests and the design.

-- Internal functions written in C-ABI Rust (src/audit/sql.rs), declared by hand because their
-- arguments are read as raw datums.
CREATE FUNCTION pgauth.audit_row_digest(id bigint, occurred_at timestamptz, txid xid8,
    db_user text, app_user_id uuid, client_addr inet, event text, table_name text,
    row_key jsonb, old_values jsonb, new_values jsonb)
RETURNS bytea LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'pgauth_audit_row_digest';
COMMENT ON FUNCTION pgauth.audit_row_digest(bigint, timestamptz, xid8, text, uuid, inet, text, text, jsonb, jsonb, jsonb) IS
    'SHA3-512 of an audit row''s canonical serialisation; also marks the transaction for a chain entry at commit';

CREATE FUNCTION pgauth.audit_capture() RETURNS trigger LANGUAGE c
AS 'MODULE_PATHNAME', 'pgauth_audit_capture';

CREATE FUNCTION pgauth.audit_refuse_change() RETURNS trigger LANGUAGE c
AS 'MODULE_PATHNAME', 'pgauth_audit_refuse_change';

-- The role the session acts as (login role or SET ROLE), unchanged by SECURITY DEFINER.
CREATE FUNCTION pgauth.audit_db_user() RETURNS text LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgauth_audit_db_user';

-- The pgauth user bound to the session. RBAC (auth_set_session / auth_bind_user) replaces this
-- body; until then there is none.
CREATE FUNCTION pgauth.audit_app_user() RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULL::uuid $$;

-- The keys of `a` whose values differ in `b`, with a's values: what an UPDATE changed.
CREATE FUNCTION pgauth.audit_changed(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(pg_catalog.jsonb_object_agg(e.key, e.value), '{}'::jsonb)
      FROM pg_catalog.jsonb_each(a) e
     WHERE (b OPERATOR(pg_catalog.->) e.key) IS DISTINCT FROM e.value
$$;

CREATE TABLE pgauth.audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at  timestamptz NOT NULL,
    txid         xid8 NOT NULL,
    db_user      text,
    app_user_id  uuid,
    client_addr  inet,
    event        text NOT NULL,
    table_name   text,
    row_key      jsonb,
    old_values   jsonb,
    new_values   jsonb,
    row_digest   bytea NOT NULL
);
CREATE INDEX audit_log_occurred_at ON pgauth.audit_log USING brin (occurred_at);
COMMENT ON TABLE pgauth.audit_log IS
    'pgauth audit events: table changes (insert/update/delete/truncate) and security events; append-only, verified by auth_audit_verify()';

-- One entry per committed transaction that wrote audit rows, in commit order.
CREATE TABLE pgauth.audit_chain (
    position     bigint PRIMARY KEY,
    txid         xid8 NOT NULL UNIQUE,
    first_id     bigint NOT NULL,
    last_id      bigint NOT NULL,
    row_count    bigint NOT NULL,
    txn_digest   bytea NOT NULL,
    chain_digest bytea NOT NULL
);
COMMENT ON TABLE pgauth.audit_chain IS
    'pgauth audit hash chain: chain_digest = SHA3-512(tag || previous chain_digest || position || txn_digest)';

-- Left by auth_audit_purge(): the chain digest at the last purged position, from which the
-- remaining chain is verified.
CREATE TABLE pgauth.audit_checkpoints (
    position     bigint PRIMARY KEY,
    chain_digest bytea NOT NULL,
    purged_rows  bigint NOT NULL,
    purged_by    text NOT NULL DEFAULT pgauth.audit_db_user(),
    purged_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON pgauth.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION pgauth.audit_refuse_change();
CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON pgauth.audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION pgauth.audit_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON pgauth.audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION pgauth.audit_refuse_change();

-- The one internal function every capability reports security events through: subject goes
-- to row_key as {"subject": …}, details to new_values. Must be called as the owner of schema
-- pgauth (capabilities do, like a SECURITY DEFINER function would).
CREATE FUNCTION pgauth.record_event(event text, subject text, details jsonb DEFAULT '{}')
RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'pgauth_record_event';

-- "All deletes of the last 24 hours": SECURITY INVOKER, so it shows what the caller may read.
CREATE FUNCTION auth_audit_events(event text DEFAULT NULL, since interval DEFAULT '24 hours')
RETURNS SETOF pgauth.audit_log LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pgauth, pg_temp AS $$
    SELECT l.* FROM pgauth.audit_log l
     WHERE l.occurred_at >= pg_catalog.now() - auth_audit_events.since
       AND (auth_audit_events.event IS NULL OR l.event = auth_audit_events.event)
     ORDER BY l.id
$$;

SELECT pg_catalog.pg_extension_config_dump('pgauth.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('pgauth.audit_log_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pgauth.audit_chain', '');
SELECT pg_catalog.pg_extension_config_dump('pgauth.audit_checkpoints', '');

REVOKE ALL ON pgauth.audit_log, pgauth.audit_chain, pgauth.audit_checkpoints FROM PUBLIC;
REVOKE ALL ON SEQUENCE pgauth.audit_log_id_seq FROM PUBLIC;
GRANT SELECT ON pgauth.audit_log, pgauth.audit_chain, pgauth.audit_checkpoints TO pgauth_admin;
REVOKE ALL ON FUNCTION pgauth.audit_row_digest(bigint, timestamptz, xid8, text, uuid, inet, text, text, jsonb, jsonb, jsonb),
                       pgauth.audit_capture(), pgauth.audit_refuse_change(), pgauth.audit_db_user(),
                       pgauth.audit_app_user(), pgauth.audit_changed(jsonb, jsonb),
                       pgauth.record_event(text, text, jsonb)
    FROM PUBLIC;
