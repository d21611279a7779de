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

INSERT INTO accounts VALUES (1, 'ann', 100, '$argon2id$secret'), (2, 'bob', 50, '$argon2id$other');
UPDATE accounts SET balance = balance - 10 WHERE id = 1;
UPDATE accounts SET password_hash = 'changed' WHERE id = 2;   -- only an excluded column
UPDATE accounts SET id = 3 WHERE id = 2;                      -- the key itself
DELETE FROM accounts WHERE id = 1;
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

-- Commits only insert records; the sealer chains the transactions that have finished,
-- one entry per committed transaction that wrote audit records.
SELECT auth_audit_seal() AS sealed;
SELECT auth_audit_seal() AS sealed_again;
SELECT position, record_count, octet_length(txn_digest) AS txn_len, octet_length(chain_digest) AS chain_len
  FROM pgauth.audit_chain ORDER BY position;

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
SELECT count(*) FROM auth_audit_events();
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
SELECT event, new_values FROM pgauth.audit_log WHERE event = 'audit_purged';

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

DROP TABLE accounts, no_key, other CASCADE;
DROP EXTENSION pgauth CASCADE;
DROP ROLE pgauth_regress_auditor;
DROP ROLE pgauth_regress_nobody;
