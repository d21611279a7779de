-- pgauth audit: an append-only event log, a hash chain with one entry per seal (covering the
-- transactions that finished since the previous one), and checkpoints left by retention. See docs/audit.md for the digests and the design.

-- Internal functions written in C-ABI Rust (src/audit/record.rs, capture.rs, events.rs, read.rs),
-- declared by hand because their arguments are read as raw datums.
CREATE FUNCTION pgauth.audit_record_digest(id bigint, last_id bigint, event_count integer,
    occurred_at timestamptz, txid xid8, db_user text, app_user_id uuid, client_addr inet,
    event text, table_name text, shape text, rows bytea, events text)
RETURNS bytea LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgauth_audit_record_digest';
COMMENT ON FUNCTION pgauth.audit_record_digest(bigint, bigint, integer, timestamptz, xid8, text, uuid, inet, text, text, text, bytea, text) IS
    'SHA3-512 of an audit record''s canonical serialisation (docs/audit.md, "Digests"), for verifiers outside pgauth';

CREATE FUNCTION pgauth.audit_capture() RETURNS trigger LANGUAGE c
AS 'MODULE_PATHNAME', 'pgauth_audit_capture';

CREATE FUNCTION pgauth.audit_refuse_change() RETURNS trigger LANGUAGE c
AS 'MODULE_PATHNAME', 'pgauth_audit_refuse_change';

-- The role the session acts as (login role or SET ROLE), unchanged by SECURITY DEFINER.
CREATE FUNCTION pgauth.audit_db_user() RETURNS text LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgauth_audit_db_user';

-- The pgauth user bound to the transaction (auth_set_session / auth_bind_user, src/session):
-- what the audit log records as app_user_id.
CREATE FUNCTION pgauth.audit_app_user() RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT @extschema@.auth_current_user_id() $$;

-- Event ids. Every event of a statement gets its own id; a record is named by its first one.
CREATE SEQUENCE pgauth.audit_event_id_seq;

-- The stored log: one record per audited statement (at most 10,000 events each; a bigger
-- statement writes several) and one per TRUNCATE or security event. Changed rows are kept as
-- `rows`, PostgreSQL's own tuple bytes of the table's columns described by `shape` (JSON);
-- security events and TRUNCATE as `events`, the JSON array text [[id, row_key, old_values,
-- new_values], ...]. Both exactly as hashed; pgauth.audit_log shows them as one row per event.
CREATE TABLE pgauth.audit_records (
    id            bigint NOT NULL,
    last_id       bigint NOT NULL,
    event_count   integer NOT NULL,
    occurred_at   timestamptz NOT NULL,
    txid          xid8 NOT NULL,
    db_user       text,
    app_user_id   uuid,
    client_addr   inet,
    event         text NOT NULL,
    table_name    text,
    shape         text,
    rows          bytea,
    events        text,
    record_digest bytea NOT NULL
);
-- Written once, read rarely: no compression on the write path.
ALTER TABLE pgauth.audit_records ALTER COLUMN rows SET STORAGE EXTERNAL;
-- Every index is paid by every audited statement: ids and times follow the physical order,
-- so block-range indexes serve them; ids are unique by construction (reserved ranges) and
-- verification finds any duplicate. Only the sealer's lookup by transaction needs a btree.
CREATE INDEX audit_records_id ON pgauth.audit_records USING brin (id);
CREATE INDEX audit_records_occurred_at ON pgauth.audit_records USING brin (occurred_at);
-- The sealer reads the records of the transactions that finished since the last seal.
CREATE INDEX audit_records_txid ON pgauth.audit_records (txid);
COMMENT ON TABLE pgauth.audit_records IS
    'pgauth audit records: the events of one statement, TRUNCATE or security event each; append-only, verified by auth_audit_verify(); read them through pgauth.audit_log';

-- A record's events (id, row_key, old_values, new_values; for UPDATE the changed columns),
-- read by the function itself from the pgauth.audit_records row at `record` (its ctid) whose id
-- is `record_id`, under the query's snapshot: it decodes no bytes a caller passes. Every stored
-- value is checked before PostgreSQL reads it, and values are shown by pgauth and built-in
-- output functions only (src/audit/read.rs, decode.rs). A record that cannot be read gives one
-- row with new_values {"pgauth_audit_error": why}. Needs SELECT on pgauth.audit_log (or audit_records).
-- PARALLEL UNSAFE: each record is read in an internal subtransaction.
CREATE FUNCTION pgauth.audit_record_events(record tid, record_id bigint)
RETURNS TABLE (id bigint, row_key jsonb, old_values jsonb, new_values jsonb)
LANGUAGE c STABLE STRICT PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'pgauth_audit_record_events';

-- One row per event, as the API describes it.
CREATE VIEW pgauth.audit_log AS
SELECT e.id, r.occurred_at, r.txid, r.db_user, r.app_user_id, r.client_addr, r.event,
       r.table_name, e.row_key, e.old_values, e.new_values,
       r.id AS record_id, r.record_digest
  FROM pgauth.audit_records r
 CROSS JOIN LATERAL pgauth.audit_record_events(r.ctid, r.id) e;
COMMENT ON VIEW pgauth.audit_log IS
    'pgauth audit events: table changes (insert/update/delete/truncate) and security events, one row each; append-only, verified by auth_audit_verify()';

-- One entry per seal, appended by the sealer (auth_audit_seal, and commits every
-- pgauth.audit_seal_interval): the transactions that wrote audit records and finished since the
-- previous entry, in transaction id order.
CREATE TABLE pgauth.audit_chain (
    position      bigint PRIMARY KEY,
    from_horizon  xid8 NOT NULL,
    horizon       xid8 NOT NULL,
    first_id      bigint NOT NULL,
    last_id       bigint NOT NULL,
    txids         xid8[] NOT NULL,
    first_ids     bigint[] NOT NULL,
    last_ids      bigint[] NOT NULL,
    record_counts bigint[] NOT NULL,
    txn_digests   bytea[] NOT NULL,
    chain_digest  bytea NOT NULL
);
-- Out of line without compression: digests do not compress, and compressing the id arrays
-- cost more per sealed transaction than the bytes it saves.
ALTER TABLE pgauth.audit_chain ALTER COLUMN txids SET STORAGE EXTERNAL,
                               ALTER COLUMN first_ids SET STORAGE EXTERNAL,
                               ALTER COLUMN last_ids SET STORAGE EXTERNAL,
                               ALTER COLUMN record_counts SET STORAGE EXTERNAL,
                               ALTER COLUMN txn_digests SET STORAGE EXTERNAL;
COMMENT ON TABLE pgauth.audit_chain IS
    'pgauth audit hash chain, one entry per seal, appended by the sealer: it covers every transaction that wrote audit records and finished in [from_horizon, horizon), in txid order (txids, first_ids, last_ids, record_counts, txn_digests); chain_digest = SHA3-512(tag || previous chain_digest || position || from_horizon || horizon || the transactions); first_id and last_id are the smallest and largest event ids covered (for lookups)';

-- The chain one row per sealed transaction: what an operator joins audit records with.
CREATE VIEW pgauth.audit_chain_txns AS
SELECT c.position, t.txid, t.first_id, t.last_id, t.record_count, t.txn_digest
  FROM pgauth.audit_chain c,
       unnest(c.txids, c.first_ids, c.last_ids, c.record_counts, c.txn_digests)
           AS t(txid, first_id, last_id, record_count, txn_digest);
COMMENT ON VIEW pgauth.audit_chain_txns IS
    'pgauth audit chain, one row per sealed transaction: the chain position that covers it, its event ids, record count and txn_digest';

-- Left by auth_audit_purge(): the chain digest at the last purged position, from which the
-- remaining chain is verified.
CREATE TABLE pgauth.audit_checkpoints (
    position     bigint PRIMARY KEY,
    chain_digest bytea NOT NULL,
    horizon      xid8 NOT NULL,
    purged_events bigint NOT NULL,
    purged_by    text NOT NULL DEFAULT pgauth.audit_db_user(),
    purged_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON pgauth.audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION pgauth.audit_refuse_change();
CREATE TRIGGER audit_log_append_only INSTEAD OF INSERT OR UPDATE OR DELETE ON pgauth.audit_log
    FOR EACH ROW EXECUTE FUNCTION pgauth.audit_refuse_change();
CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON pgauth.audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION pgauth.audit_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON pgauth.audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION pgauth.audit_refuse_change();

-- The one internal function every capability reports security events through (one record
-- each): subject goes to row_key as {"subject": …}, details to new_values. Only pgauth's own
-- code may call it: it refuses (42501) unless current_user is the owner of schema pgauth, as
-- in Rust's as_owner() and pgauth's SECURITY DEFINER functions. No other role has EXECUTE.
CREATE FUNCTION pgauth.record_event(event text, subject text, details jsonb DEFAULT '{}')
RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'pgauth_record_event';

-- Writes to pgauth's state tables that pgauth's own code does not make (its code writes as the
-- owner of schema pgauth) are table-change events: a row trigger on every state table
-- (finalize.sql) fires only WHEN pgauth.audit_direct_write(), so pgauth's own writes queue
-- nothing. The trigger's arguments are the secret columns, shown as "(redacted)".
-- EXECUTE stays with PUBLIC: every role that may write a pgauth table evaluates the WHEN.
CREATE FUNCTION pgauth.audit_direct_write() RETURNS boolean LANGUAGE c STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgauth_audit_direct_write';
CREATE FUNCTION pgauth.audit_direct_change() RETURNS trigger LANGUAGE c
AS 'MODULE_PATHNAME', 'pgauth_audit_direct_change';

-- "All deletes of the last 24 hours": SECURITY INVOKER, so it shows what the caller may read.
CREATE FUNCTION auth_audit_events(event text DEFAULT NULL, since interval DEFAULT '24 hours')
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

SELECT pg_catalog.pg_extension_config_dump('pgauth.audit_records', '');
SELECT pg_catalog.pg_extension_config_dump('pgauth.audit_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pgauth.audit_chain', '');
SELECT pg_catalog.pg_extension_config_dump('pgauth.audit_checkpoints', '');

REVOKE ALL ON pgauth.audit_log, pgauth.audit_records, pgauth.audit_chain, pgauth.audit_chain_txns,
              pgauth.audit_checkpoints FROM PUBLIC;
REVOKE ALL ON SEQUENCE pgauth.audit_event_id_seq FROM PUBLIC;
GRANT SELECT ON pgauth.audit_log, pgauth.audit_records, pgauth.audit_chain, pgauth.audit_chain_txns,
                pgauth.audit_checkpoints TO pgauth_admin;
REVOKE ALL ON FUNCTION pgauth.audit_capture(), pgauth.audit_refuse_change(),
                       pgauth.audit_direct_change(),
                       pgauth.audit_db_user(), pgauth.audit_app_user(),
                       pgauth.record_event(text, text, jsonb)
    FROM PUBLIC;
-- The view reads records with the reader's rights: pgauth_admin, and whoever else is granted
-- SELECT on pgauth.audit_log, needs EXECUTE on pgauth.audit_record_events (which checks that
-- SELECT too).
REVOKE ALL ON FUNCTION pgauth.audit_record_events(tid, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgauth.audit_record_events(tid, bigint) TO pgauth_admin;
-- pgauth.audit_record_digest only computes from its arguments.
