-- Audit: reading a forged log. Records are rewritten here as a superuser would tamper with them
-- (triggers off); reading must give an error marker for each forged record, never a crash,
-- memory contents or another table's data, and the other records must still read.
-- And reading never runs code that the owner of an audited table wrote.
CREATE EXTENSION pgauth;
SET pgauth.audit_seal_interval = '1h';
CREATE ROLE pgauth_regress_reader LOGIN IN ROLE pgauth_admin;
CREATE ROLE pgauth_regress_owner LOGIN;
GRANT CREATE ON SCHEMA public TO pgauth_regress_owner;
-- Little-endian int4, for writing tuple bytes.
CREATE FUNCTION le4(int) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT set_byte(set_byte(set_byte(set_byte('\x00000000'::bytea, 0, $1 & 255),
           1, ($1 >> 8) & 255), 2, ($1 >> 16) & 255), 3, ($1 >> 24) & 255)
$$;

-- A value the reader may not read, stored out of line.
CREATE TABLE secret (id int PRIMARY KEY, s text);
ALTER TABLE secret ALTER COLUMN s SET STORAGE EXTERNAL;
INSERT INTO secret VALUES (1, repeat('TOP-SECRET-', 300));
SELECT c.relname AS toast_name, t.reltoastrelid::int AS toast_oid
  FROM pg_class t JOIN pg_class c ON c.oid = t.reltoastrelid WHERE t.relname = 'secret' \gset
SELECT chunk_id::int AS chunk FROM pg_toast.:"toast_name" LIMIT 1 \gset

CREATE TABLE forged (id int PRIMARY KEY, a bigint[], t text[], n numeric, j jsonb);
SELECT auth_audit_enable('forged');
INSERT INTO forged VALUES (1, '{1,2}', '{x}', 1.50, '{"k": [1, "two"]}');
INSERT INTO forged VALUES (2, '{1,2}', '{x}', 1.50, '{"k": [1, "two"]}');
INSERT INTO forged VALUES (3, '{1,2}', '{x}', 1.50, '{"k": [1, "two"]}');
INSERT INTO forged VALUES (4, '{1,2}', '{x}', 1.50, '{"k": [1, "two"]}');
INSERT INTO forged VALUES (5, '{1,2}', '{x}', 1.50, '{"k": [1, "two"]}');
INSERT INTO forged VALUES (6, '{1,2}', '{x}', 1.50, '{"k": [1, "two"]}');
INSERT INTO forged VALUES (7, '{1,2}', '{x}', 1.50, '{"k": [1, "two"]}');
INSERT INTO forged VALUES (8, '{1,2}', '{x}', 1.50, '{"k": [1, "two"]}');
INSERT INTO forged VALUES (9, '{1,2}', '{x}', 1.50, '{"k": [1, "two"]}');
SELECT auth_audit_seal() > 0 AS sealed;
CREATE TEMP TABLE rec AS
SELECT (row_key->>'id')::int AS k, record_id FROM pgauth.audit_log WHERE table_name = 'public.forged';
SELECT row_key, new_values FROM pgauth.audit_log WHERE table_name = 'public.forged' AND row_key->>'id' = '1';

-- Rows of one column: no old row, then a new row whose tuple header (6 bytes: 1 column,
-- HEAP_HASVARWIDTH, t_hoff 24) is followed by `value`.
CREATE FUNCTION one_column_row(value bytea) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT '\xffffffff'::bytea || int4send(6 + length(value)) || '\x010002001800'::bytea || value
$$;
-- An int8[] of one element whose header claims `n`.
CREATE FUNCTION int8_array(n int) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT le4(32 << 2) || le4(1) || le4(0) || le4(20) || le4(n) || le4(1) || '\x0700000000000000'::bytea
$$;
SET session_replication_role = replica;
-- 2: an int8[] claiming 64 elements of the 1 it carries (read memory past the value).
UPDATE pgauth.audit_records SET shape = '{"columns":[["a","bigint[]",-1,false,true,1016]]}',
       rows = one_column_row(int8_array(64))
 WHERE id = (SELECT record_id FROM rec WHERE k = 2);
-- 3: claiming 100,000,000 (crashed the backend).
UPDATE pgauth.audit_records SET shape = '{"columns":[["a","bigint[]",-1,false,true,1016]]}',
       rows = one_column_row(int8_array(100000000))
 WHERE id = (SELECT record_id FROM rec WHERE k = 3);
-- 4: a text[] whose element is an on-disk TOAST pointer into secret's TOAST table.
UPDATE pgauth.audit_records SET shape = '{"columns":[["t","text[]",-1,false,true,1009]]}',
       rows = one_column_row(le4(42 << 2) || le4(1) || le4(0) || le4(25) || le4(1) || le4(1)
              || '\x0112'::bytea || le4(3304) || le4(3300) || le4(:chunk) || le4(:toast_oid))
 WHERE id = (SELECT record_id FROM rec WHERE k = 4);
-- 5: a column claiming the anonymous type record, holding a composite datum.
UPDATE pgauth.audit_records SET shape = '{"columns":[["r","record",-1,false,true,2249]]}',
       rows = one_column_row(le4(24 << 2) || le4(-1) || le4(2249) || '\x000000000000000000000000'::bytea)
 WHERE id = (SELECT record_id FROM rec WHERE k = 5);
-- 6: a column claiming anyarray, whose values name their own element type.
UPDATE pgauth.audit_records SET shape = '{"columns":[["x","anyarray",-1,false,true,2277]]}',
       rows = one_column_row(int8_array(1))
 WHERE id = (SELECT record_id FROM rec WHERE k = 6);
-- 7: a jsonb object claiming a million pairs.
UPDATE pgauth.audit_records SET shape = '{"columns":[["j","jsonb",-1,false,true,3802]]}',
       rows = one_column_row(le4(12 << 2) || le4(x'20000000'::int | 1000000) || le4(1))
 WHERE id = (SELECT record_id FROM rec WHERE k = 7);
-- 8: a compressed text value claiming 1 GB.
UPDATE pgauth.audit_records SET shape = '{"columns":[["s","text",-1,false,true,25]]}',
       rows = one_column_row(le4((12 << 2) | 2) || le4(x'3fffffff'::int) || '\x00000000'::bytea)
 WHERE id = (SELECT record_id FROM rec WHERE k = 8);
-- 9: a shape that is not JSON.
UPDATE pgauth.audit_records SET shape = '{"columns":' WHERE id = (SELECT record_id FROM rec WHERE k = 9);
RESET session_replication_role;

-- Each forged record is one marked row; the others still read, and no secret appears.
SELECT r.k, l.row_key, l.new_values
  FROM pgauth.audit_log l JOIN rec r USING (record_id) ORDER BY r.k;
SET ROLE pgauth_regress_reader;
SELECT count(*) AS events, count(*) FILTER (WHERE new_values ? 'pgauth_audit_error') AS marked,
       bool_or(new_values::text LIKE '%SECRET%') AS leaked
  FROM auth_audit_events() WHERE table_name = 'public.forged';
RESET ROLE;
-- Verification still names the first forged record.
SELECT ok, first_bad_id = (SELECT record_id FROM rec WHERE k = 2) AS at_record_2, reason
  FROM auth_audit_verify();

-- No function decodes bytes a caller passes: the reader takes a row of pgauth.audit_records.
SELECT p.oid::regprocedure FROM pg_proc p
 WHERE p.pronamespace = 'pgauth'::regnamespace AND p.proname LIKE 'audit%'
   AND 'bytea'::regtype = ANY (p.proargtypes::regtype[])
 ORDER BY 1;
SELECT count(*) FROM pgauth.audit_record_events('(0,1)', -1);
SELECT count(*) FROM pgauth.audit_record_events('(4294967295,1)', 1);
SELECT count(*) FROM pgauth.audit_record_events('(0,65535)', 1);
SELECT has_function_privilege('public', 'pgauth.audit_record_events(tid, bigint)', 'EXECUTE') AS public_reads;
-- EXECUTE alone is not enough: the reader must be allowed to read the log.
CREATE ROLE pgauth_regress_nosy LOGIN;
GRANT USAGE ON SCHEMA pgauth TO pgauth_regress_nosy;
GRANT EXECUTE ON FUNCTION pgauth.audit_record_events(tid, bigint) TO pgauth_regress_nosy;
SET ROLE pgauth_regress_nosy;
SELECT count(*) FROM pgauth.audit_record_events('(0,1)', 1);
RESET ROLE;
REVOKE ALL ON FUNCTION pgauth.audit_record_events(tid, bigint) FROM pgauth_regress_nosy;
REVOKE ALL ON SCHEMA pgauth FROM pgauth_regress_nosy;
DROP ROLE pgauth_regress_nosy;

-- The owner of an audited table defines a cast of its enum to json that runs whatever it
-- likes as whoever reads the log, and raises to make the log unreadable.
SET ROLE pgauth_regress_owner;
CREATE TYPE feeling AS ENUM ('fine', 'meh');
CREATE DOMAIN mood AS feeling;
CREATE TABLE owned (id int PRIMARY KEY, f feeling, fs feeling[], m mood, r int4range);
CREATE FUNCTION evil(feeling) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    RAISE WARNING 'evil() runs as % (superuser: %)', current_user, current_setting('is_superuser');
    RAISE EXCEPTION 'the audit log is mine';
END $$;
CREATE CAST (feeling AS json) WITH FUNCTION evil(feeling);
RESET ROLE;
SELECT auth_audit_enable('owned');
INSERT INTO owned VALUES (1, 'fine', '{meh,NULL,fine}', 'meh', '[1,5)');
UPDATE owned SET f = 'meh';
-- The superuser reads it: no WARNING, no error, the labels as stored.
SELECT event, row_key, old_values, new_values FROM auth_audit_events() WHERE table_name = 'public.owned' ORDER BY id;
SELECT count(*) FROM pgauth.audit_log;
-- Types pgauth cannot check byte by byte (int4range) are stored as their text.
SELECT shape::jsonb->'columns'->4 AS r FROM pgauth.audit_records
 WHERE table_name = 'public.owned' AND event = 'insert';

DROP TABLE forged, secret, owned CASCADE;
DROP TYPE feeling CASCADE;
DROP FUNCTION le4(int), one_column_row(bytea), int8_array(int);
DROP EXTENSION pgauth CASCADE;
REVOKE CREATE ON SCHEMA public FROM pgauth_regress_owner;
DROP ROLE pgauth_regress_reader;
DROP ROLE pgauth_regress_owner;
