-- Every object of the pgauth extension in this database, one line each: its identity, its
-- definition, owner and privileges. tests/upgrade/upgrade.py compares an updated database with a
-- fresh install line by line. Physical column order is left out (ALTER TABLE … ADD COLUMN puts
-- a new column last); everything else must be equal.
WITH ext AS (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'pgauth'),
members AS (
    SELECT d.classid, d.objid
      FROM pg_catalog.pg_depend d, ext
     WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = ext.oid
       AND d.deptype = 'e'
)
-- Functions: full definition (arguments, result, volatility, security, settings, body) and ACL.
SELECT 'function ' || p.oid::regprocedure || ' owner=' || pg_catalog.pg_get_userbyid(p.proowner)
       || ' acl=' || coalesce(p.proacl::text, '(default)') || ' '
       || pg_catalog.replace(pg_catalog.pg_get_functiondef(p.oid), E'\n', ' ')
       || ' comment=' || coalesce(pg_catalog.obj_description(p.oid, 'pg_proc'), '')
  FROM members m JOIN pg_catalog.pg_proc p ON m.classid = 'pg_catalog.pg_proc'::regclass AND p.oid = m.objid
 WHERE p.prokind <> 'a'
UNION ALL
-- Relations: kind, owner, ACL, options, comment.
SELECT 'relation ' || c.oid::regclass || ' kind=' || c.relkind::text || ' persistence=' || c.relpersistence::text
       || ' owner=' || pg_catalog.pg_get_userbyid(c.relowner) || ' acl=' || coalesce(c.relacl::text, '(default)')
       || ' rls=' || c.relrowsecurity::text || '/' || c.relforcerowsecurity::text
       || ' comment=' || coalesce(pg_catalog.obj_description(c.oid, 'pg_class'), '')
       || CASE WHEN c.relkind = 'v' THEN ' view=' || pg_catalog.replace(pg_catalog.pg_get_viewdef(c.oid), E'\n', ' ') ELSE '' END
  FROM members m JOIN pg_catalog.pg_class c ON m.classid = 'pg_catalog.pg_class'::regclass AND c.oid = m.objid
UNION ALL
-- Columns of member tables and views: type, not null, default, column ACL (not their position).
SELECT 'column ' || c.oid::regclass || '.' || pg_catalog.quote_ident(a.attname) || ' '
       || pg_catalog.format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), '')
       || ' acl=' || coalesce(a.attacl::text, '(default)')
  FROM members m JOIN pg_catalog.pg_class c ON m.classid = 'pg_catalog.pg_class'::regclass AND c.oid = m.objid
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
UNION ALL
-- Constraints, indexes, triggers, policies and rules of member tables.
SELECT 'constraint ' || r.conrelid::regclass || ' ' || r.conname || ' ' || pg_catalog.pg_get_constraintdef(r.oid)
  FROM members m JOIN pg_catalog.pg_constraint r ON m.classid = 'pg_catalog.pg_class'::regclass AND r.conrelid = m.objid
UNION ALL
SELECT 'index ' || pg_catalog.pg_get_indexdef(i.indexrelid)
  FROM members m JOIN pg_catalog.pg_index i ON m.classid = 'pg_catalog.pg_class'::regclass AND i.indrelid = m.objid
UNION ALL
SELECT 'trigger ' || pg_catalog.pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
  FROM members m JOIN pg_catalog.pg_trigger t ON m.classid = 'pg_catalog.pg_class'::regclass AND t.tgrelid = m.objid
 WHERE NOT t.tgisinternal
UNION ALL
SELECT 'policy ' || p.schemaname || '.' || p.tablename || ' ' || p.policyname || ' ' || p.cmd || ' '
       || p.roles::text || ' ' || coalesce(p.qual, '') || ' ' || coalesce(p.with_check, '')
  FROM pg_catalog.pg_policies p
 WHERE (pg_catalog.quote_ident(p.schemaname) || '.' || pg_catalog.quote_ident(p.tablename))::regclass
       IN (SELECT objid::regclass FROM members WHERE classid = 'pg_catalog.pg_class'::regclass)
UNION ALL
-- Sequences: parameters (not their current value).
SELECT 'sequence ' || s.seqrelid::regclass || ' ' || s.seqtypid::regtype || ' start=' || s.seqstart
       || ' inc=' || s.seqincrement || ' min=' || s.seqmin || ' max=' || s.seqmax || ' cycle=' || s.seqcycle::text
  FROM members m JOIN pg_catalog.pg_sequence s ON m.classid = 'pg_catalog.pg_class'::regclass AND s.seqrelid = m.objid
UNION ALL
-- Types, schemas, casts, operators and anything else: their identity.
SELECT 'object ' || pg_catalog.pg_describe_object(m.classid, m.objid, 0)
  FROM members m
 WHERE m.classid NOT IN ('pg_catalog.pg_proc'::regclass, 'pg_catalog.pg_class'::regclass)
UNION ALL
-- Tables whose rows pg_dump keeps (pg_extension_config_dump), in any order.
SELECT 'config ' || cfg::regclass || ' ' || coalesce(cond, '')
  FROM ext, pg_catalog.pg_extension e,
       LATERAL unnest(e.extconfig, e.extcondition) AS u(cfg, cond)
 WHERE e.oid = ext.oid
UNION ALL
-- Schema pgauth and the roles it is shared with.
SELECT 'schema ' || n.nspname || ' owner=' || pg_catalog.pg_get_userbyid(n.nspowner) || ' acl=' || coalesce(n.nspacl::text, '')
  FROM pg_catalog.pg_namespace n WHERE n.nspname = 'pgauth'
ORDER BY 1;
