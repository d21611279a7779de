-- pgauth writes pgauth.audit_records with a direct heap and index insert (src/audit/record.rs),
-- which skips what an INSERT would do besides: triggers, rules, row-level security, CHECK and
-- foreign-key constraints, defaults and generated columns, partition routing. This pins every
-- catalog fact that makes that sound. If an expected line below changes, read the list in
-- src/audit/record.rs first: the direct insert must change with the table.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgauth;
RESET client_min_messages;

-- A plain table: no row-level security, no rules, not partitioned, no inheritance child, not a
-- partition.
SELECT relkind, relpersistence, relrowsecurity, relforcerowsecurity, relhasrules,
       relhassubclass, relispartition
  FROM pg_catalog.pg_class WHERE oid = 'pgauth.audit_records'::regclass;

-- Triggers: only the append-only guard (BEFORE UPDATE OR DELETE OR TRUNCATE, per statement);
-- none on INSERT, none internal (foreign keys are internal triggers).
SELECT tgname, tgfoid::regprocedure AS function, tgenabled, tgisinternal,
       CASE WHEN tgtype & 2 <> 0 THEN 'BEFORE'
            WHEN tgtype & 64 <> 0 THEN 'INSTEAD OF' ELSE 'AFTER' END AS timing,
       CASE WHEN tgtype & 1 <> 0 THEN 'ROW' ELSE 'STATEMENT' END AS level,
       concat_ws(' OR ', CASE WHEN tgtype & 4 <> 0 THEN 'INSERT' END,
                         CASE WHEN tgtype & 16 <> 0 THEN 'UPDATE' END,
                         CASE WHEN tgtype & 8 <> 0 THEN 'DELETE' END,
                         CASE WHEN tgtype & 32 <> 0 THEN 'TRUNCATE' END) AS events
  FROM pg_catalog.pg_trigger WHERE tgrelid = 'pgauth.audit_records'::regclass
 ORDER BY tgname;

-- No rule, no policy.
SELECT count(*) AS rules FROM pg_catalog.pg_rewrite
 WHERE ev_class = 'pgauth.audit_records'::regclass;
SELECT count(*) AS policies FROM pg_catalog.pg_policy
 WHERE polrelid = 'pgauth.audit_records'::regclass;

-- No constraint of any kind (CHECK, foreign key, primary key, unique, exclusion, trigger).
-- NOT NULL (listed here from PostgreSQL 18 on) is no exception: the direct insert fills those columns.
SELECT conname, contype FROM pg_catalog.pg_constraint
 WHERE conrelid = 'pgauth.audit_records'::regclass AND contype <> 'n' ORDER BY conname;

-- Neither a parent nor a child in pg_inherits (partitions included).
SELECT count(*) AS inheritance FROM pg_catalog.pg_inherits
 WHERE inhrelid = 'pgauth.audit_records'::regclass
    OR inhparent = 'pgauth.audit_records'::regclass;

-- The columns the insert fills by name: no default, identity or generated column (it never
-- computes one), no domain (its constraints would not be checked); NOT NULL columns are the
-- ones pgauth always gives a value.
SELECT a.attnum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull, a.atthasdef, a.attidentity, a.attgenerated, t.typtype
  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
 WHERE a.attrelid = 'pgauth.audit_records'::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum;
SELECT count(*) AS defaults FROM pg_catalog.pg_attrdef
 WHERE adrelid = 'pgauth.audit_records'::regclass;

-- The indexes the insert maintains: none unique or exclusion (a deferred check would never run
-- after a direct insert), none partial.
SELECT c.relname, am.amname, i.indisunique, i.indisexclusion, i.indimmediate,
       i.indpred IS NOT NULL AS partial
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
  JOIN pg_catalog.pg_am am ON am.oid = c.relam
 WHERE i.indrelid = 'pgauth.audit_records'::regclass
 ORDER BY c.relname;

-- Leave the regress database as found.
SET client_min_messages = warning;
DROP EXTENSION pgauth CASCADE;
RESET client_min_messages;
