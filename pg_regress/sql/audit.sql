-- Audit: what a DBA sees when auditing a table, verifying the log, and trying to change it.
-- Runs first in the regress database: it creates pgauth and drops it again at the end.
CREATE EXTENSION pgauth;
-- Seal only when asked (auth_audit_seal), so the chain below is deterministic.
SET pgauth.audit_seal_interval = '1h';
CREATE ROLE pgauth_regress_auditor LOGIN IN ROLE pgauth_admin;
CREATE ROLE pgauth_regress_nobody LOGIN;

CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL,
                       password_hash text);
SELECT auth_audit_enable('accounts', '{password_hash}');
-- (Sealed after each of the first statements, so the chain has several entries below.)
SELECT auth_audit_seal() AS s \gset

INSERT INTO accounts VALUES (1, 'ann', 100, '$argon2id$secret'), (2, 'bob', 50, '$argon2id$other');
SELECT auth_audit_seal() AS s \gset
UPDATE accounts SET balance = balance - 10 WHERE id = 1;
SELECT auth_audit_seal() AS s \gset
UPDATE accounts SET password_hash = 'changed' WHERE id = 2;   -- only an excluded column
SELECT auth_audit_seal() AS s \gset
UPDATE accounts SET id = 3 WHERE id = 2;                      -- the key itself
SELECT auth_audit_seal() AS s \gset
DELETE FROM accounts WHERE id = 1;
SELECT auth_audit_seal() AS s \gset
BEGIN;
INSERT INTO accounts VALUES (10, 'rolled back', 0, NULL);
ROLLBACK;
BEGIN;
INSERT INTO accounts VALUES (4, 'kept', 1, NULL);
SAVEPOINT s;
INSERT INTO accounts VALUES (5, 'undone by the savepoint', 1, NULL);
ROLLBACK TO s;
COMMIT;
TRUNCATE accounts;

-- One row per changed row; UPDATE keeps only the changed columns; password_hash never appears.
-- pgauth.audit_log is a view over pgauth.audit_records (one record per statement).
SELECT event, table_name, row_key, old_values, new_values, db_user, client_addr
  FROM pgauth.audit_log ORDER BY id;

-- One record per statement (or security event), each covering its events' ids.
SELECT id, last_id, event_count, event, octet_length(record_digest) AS digest_len
  FROM pgauth.audit_records ORDER BY id;
SELECT bool_and(l.id BETWEEN r.id AND r.last_id) AS ids_in_records,
       count(*) = (SELECT sum(event_count) FROM pgauth.audit_records) AS one_row_per_event
  FROM pgauth.audit_log l JOIN pgauth.audit_records r ON r.id = l.record_id;

-- Commits only insert records; the sealer chains the transactions that have finished since
-- the last seal, in one entry (here: the two last transactions).
SELECT auth_audit_seal() AS sealed;
SELECT auth_audit_seal() AS sealed_again;
SELECT c.position, cardinality(c.txids) AS txns, t.record_count,
       octet_length(t.txn_digest) AS txn_len, octet_length(c.chain_digest) AS chain_len,
       t.txid >= c.from_horizon AND t.txid < c.horizon AS txid_in_range
  FROM pgauth.audit_chain c JOIN pgauth.audit_chain_txns t USING (position)
 ORDER BY c.position, t.txid;

SELECT * FROM auth_audit_verify();
SELECT id AS head_position, octet_length(digest) AS digest_len FROM auth_audit_head();
SELECT ok FROM auth_audit_head() h, auth_audit_verify(NULL, h.id, h.digest);
SELECT * FROM auth_audit_verify(NULL, 5, '\x00');
SELECT * FROM auth_audit_verify(NULL, 5, NULL);

-- "All deletes of the last 24 hours."
SELECT event, row_key, old_values FROM auth_audit_events('delete');

-- Append-only, for the owner too.
UPDATE pgauth.audit_log SET event = 'nothing happened';
DELETE FROM pgauth.audit_log;
TRUNCATE pgauth.audit_log;
INSERT INTO pgauth.audit_log (id, occurred_at, txid, event) VALUES (100, now(), '1', 'forged');
UPDATE pgauth.audit_records SET events = '[]';
DELETE FROM pgauth.audit_records;
TRUNCATE pgauth.audit_records;
DELETE FROM pgauth.audit_chain;
UPDATE pgauth.audit_checkpoints SET position = 0;

-- Bad input.
SELECT auth_audit_enable('accounts');
CREATE TABLE no_key (a int);
SELECT auth_audit_enable('no_key');
CREATE VIEW account_view AS SELECT * FROM accounts;
SELECT auth_audit_enable('account_view');
SELECT auth_audit_enable('pgauth.keys');
SELECT auth_audit_enable('pgauth.audit_log');
SELECT auth_audit_enable('accounts_missing');
SELECT auth_audit_disable('no_key');
CREATE TABLE other (id int PRIMARY KEY, v text);
SELECT auth_audit_enable('other', '{nope}');

-- Privileges: a pgauth_admin member who does not own the table, and a role with no rights.
SET ROLE pgauth_regress_auditor;
SELECT auth_audit_enable('other');
SELECT count(*) > 0 AS auditor_reads_log FROM pgauth.audit_log;
SELECT ok FROM auth_audit_verify();
RESET ROLE;
SET ROLE pgauth_regress_nobody;
SELECT auth_audit_disable('accounts');
SELECT * FROM auth_audit_verify();
SELECT * FROM auth_audit_head();
SELECT count(*) FROM pgauth.audit_log;
-- PostgreSQL 18 words the CONTEXT of an error inside an SQL function differently: hide it.
\set SHOW_CONTEXT never
SELECT count(*) FROM auth_audit_events();
\set SHOW_CONTEXT errors
SELECT pgauth.record_event('forged', 'x');
RESET ROLE;

-- Security events from other capabilities land in the same log.
SELECT auth_create_key('regress_audit_key') IS NOT NULL AS key_created;
SELECT event, row_key FROM pgauth.audit_log WHERE table_name IS NULL ORDER BY id;

-- Disabling stops the capture and is itself an event; the rows stay.
SELECT auth_audit_disable('accounts');
INSERT INTO accounts VALUES (6, 'not audited', 0, NULL);
SELECT count(*) AS rows_for_id_6 FROM pgauth.audit_log WHERE row_key = '{"id": 6}';
SELECT ok, checked FROM auth_audit_verify();

-- Retention: purge through a chain position; what remains verifies from the checkpoint.
SELECT auth_audit_purge(3) AS purged_events;
SELECT position, purged_events FROM pgauth.audit_checkpoints;
SELECT min(position) AS first_position FROM pgauth.audit_chain;
SELECT ok, reason FROM auth_audit_verify();
-- A head stored at the purged position is checked against the checkpoint.
SELECT ok, reason FROM auth_audit_verify(NULL, 3, (SELECT chain_digest FROM pgauth.audit_checkpoints));
SELECT ok, reason FROM auth_audit_verify(NULL, 3, '\x00');
SELECT event, new_values FROM pgauth.audit_log WHERE event = 'audit_purged';
-- A purge that fails half-way (here: a superuser's own trigger refuses its DELETE) and whose
-- error is caught by a savepoint does not leave the guard off: a later DELETE in the same
-- transaction is refused by pgauth, not let through to the other trigger.
CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'refused by a superuser''s trigger'; END$$;
CREATE TRIGGER zz_refuse BEFORE DELETE ON pgauth.audit_records FOR EACH ROW EXECUTE FUNCTION refuse_delete();
BEGIN;
DO $$BEGIN PERFORM auth_audit_purge(4);
       EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'purge failed: %', SQLERRM; END$$;
DELETE FROM pgauth.audit_records;
ROLLBACK;
DROP TRIGGER zz_refuse ON pgauth.audit_records;
DROP FUNCTION refuse_delete();

-- A superuser can switch the guard off; the chain shows what was done.
ALTER TABLE pgauth.audit_records DISABLE TRIGGER audit_records_append_only;
-- Same-length bytes inside the stored tuple: 'kept' becomes 'evil'.
UPDATE pgauth.audit_records
   SET rows = decode(replace(encode(rows, 'hex'), encode('kept', 'hex'), encode('evil', 'hex')), 'hex')
 WHERE id = (SELECT record_id FROM pgauth.audit_log WHERE event = 'insert' AND row_key = '{"id": 4}');
ALTER TABLE pgauth.audit_records ENABLE TRIGGER audit_records_append_only;
SELECT new_values->>'owner' AS forged_owner FROM pgauth.audit_log WHERE row_key = '{"id": 4}';
SELECT ok, first_bad_id = (SELECT id FROM pgauth.audit_log WHERE row_key = '{"id": 4}') AS right_row, reason
  FROM auth_audit_verify();

-- Large values: an out-of-line (TOASTed) value is copied into the record, so it stays
-- readable after the row and its TOAST data are gone.
CREATE TABLE docs (id int PRIMARY KEY, body text, n int);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
SELECT auth_audit_enable('docs');
INSERT INTO docs VALUES (1, repeat('x', 100000), 0);
UPDATE docs SET n = 1;
DELETE FROM docs;
VACUUM docs;
SELECT event, length(old_values->>'body') AS old_body, length(new_values->>'body') AS new_body,
       old_values->'n' AS old_n, new_values->'n' AS new_n
  FROM pgauth.audit_log WHERE table_name = 'public.docs' ORDER BY id;

-- A statement of more than 10,000 rows is stored as records of at most 10,000 events, with
-- consecutive ids.
CREATE TABLE many (id int PRIMARY KEY, v int);
SELECT auth_audit_enable('many');
INSERT INTO many SELECT g, g * 2 FROM generate_series(1, 25000) g;
SELECT event_count, last_id - id + 1 = event_count AS consecutive
  FROM pgauth.audit_records WHERE table_name = 'public.many' ORDER BY id;
SELECT count(*) AS events, count(DISTINCT id) AS ids, max(id) - min(id) + 1 AS span,
       sum((new_values->>'v')::int) = sum((row_key->>'id')::int * 2) AS values_match
  FROM pgauth.audit_log WHERE table_name = 'public.many';

-- Enums and domains are stored; user-defined composite types are refused unless excluded.
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TYPE pair AS (a int, b int);
CREATE TABLE typed (id int PRIMARY KEY, m mood, p positive, tags text[], pr pair);
SELECT auth_audit_enable('typed');
SELECT auth_audit_enable('typed', '{pr}');
INSERT INTO typed VALUES (1, 'happy', 5, '{a,b}', ROW(1, 2));
SELECT new_values FROM pgauth.audit_log WHERE table_name = 'public.typed';
-- Records do not depend on the types' OIDs or names: enums are stored as their labels, domains
-- over built-in types as their base type, so a rename (or a restore into another cluster) reads
-- the same.
ALTER TYPE mood RENAME TO mood_old;
SELECT new_values FROM pgauth.audit_log WHERE table_name = 'public.typed';
ALTER TYPE mood_old RENAME TO mood;
SELECT new_values->'m' AS m FROM pgauth.audit_log WHERE table_name = 'public.typed';

-- Excluded columns are excluded by attribute, so a rename does not let them in.
CREATE TABLE secrets (id int PRIMARY KEY, pw text);
SELECT auth_audit_enable('secrets', '{pw}');
ALTER TABLE secrets RENAME COLUMN pw TO password_hash;
INSERT INTO secrets VALUES (1, 'a hash');
SELECT new_values FROM pgauth.audit_log WHERE table_name = 'public.secrets';

-- Damaged stored rows read as a marked row (one per record), never a read past their end.
ALTER TABLE pgauth.audit_records DISABLE TRIGGER audit_records_append_only;
-- No old row; a new row of 3 columns whose text value claims 127 bytes of the 1 left.
UPDATE pgauth.audit_records SET rows = '\xffffffff0000000b030002001800' || '\x01000000ff'::bytea
 WHERE table_name = 'public.docs' AND event = 'insert';
SELECT count(*), count(*) FILTER (WHERE new_values ? 'pgauth_audit_error') AS marked
  FROM pgauth.audit_log WHERE table_name = 'public.docs';
SELECT new_values FROM pgauth.audit_log
 WHERE table_name = 'public.docs' AND new_values ? 'pgauth_audit_error';
-- A cut frame.
UPDATE pgauth.audit_records SET rows = '\xffffffff000000'
 WHERE table_name = 'public.docs' AND event = 'insert';
SELECT new_values FROM pgauth.audit_log
 WHERE table_name = 'public.docs' AND new_values ? 'pgauth_audit_error';
ALTER TABLE pgauth.audit_records ENABLE TRIGGER audit_records_append_only;

-- Security events are written without the executor: a read-only transaction still refuses them.
BEGIN READ ONLY;
SELECT pgauth.record_event('read_only_event', 'nobody');
ROLLBACK;

-- Reading records is not PUBLIC's.
SELECT has_function_privilege('public', 'pgauth.audit_record_events(tid, bigint)', 'EXECUTE') AS public_reads,
       has_function_privilege('pgauth_admin', 'pgauth.audit_record_events(tid, bigint)', 'EXECUTE') AS admin_reads;

DROP TABLE accounts, no_key, other, docs, many, typed, secrets CASCADE;
DROP TYPE mood, pair;
DROP DOMAIN positive;
DROP EXTENSION pgauth CASCADE;
DROP ROLE pgauth_regress_auditor;
DROP ROLE pgauth_regress_nobody;
