-- RBAC and session identity as a user sees them.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgauth;
RESET client_min_messages;

-- A model: reader ⊂ editor (editor inherits reader); a group; scopes; networks; expiry.
SELECT auth_create_role('reader') IS NOT NULL AS reader;
SELECT auth_create_role('editor', '{reader}') IS NOT NULL AS editor;
SELECT auth_grant_permission('reader', 'doc.read');
SELECT auth_grant_permission('editor', 'doc.write');
SELECT auth_create_user('alice', 'Tr4vel-Quartz-Mango-71') IS NOT NULL AS alice;
SELECT auth_create_user('bob') IS NOT NULL AS bob;
SELECT auth_create_user('ALICE');
SELECT auth_create_user('carol', 'password');
SELECT auth_create_group('team-a') IS NOT NULL AS team;
SELECT auth_add_member('team-a', (SELECT id FROM pgauth.users WHERE username = 'bob'));
SELECT auth_assign_group_role('team-a', 'editor', 'tenant-1');
SELECT auth_assign_role((SELECT id FROM pgauth.users WHERE username = 'alice'), 'reader');
SELECT auth_assign_role((SELECT id FROM pgauth.users WHERE username = 'alice'), 'editor', '42',
                        allowed_ips => '{10.0.0.0/8, 2001:db8::/32}');
SELECT auth_assign_role((SELECT id FROM pgauth.users WHERE username = 'bob'), 'editor', 'tenant-2',
                        expires_at => now() - interval '1 second');
-- Cycles are refused.
SELECT auth_role_inherit('reader', 'editor');

CREATE TEMP VIEW u AS SELECT username, id FROM pgauth.users;
SELECT username, array(SELECT auth_user_permissions(id)) AS permissions FROM u ORDER BY username;

SELECT username, perm, scope, ip, auth_user_has_permission(id, perm, scope, ip::inet) AS allowed
  FROM u, (VALUES ('doc.read', NULL, NULL),          -- alice: global reader
                  ('doc.read', 'tenant-9', NULL),    -- global grants hold in every scope
                  ('doc.write', '42', '10.1.2.3'),   -- alice: editor in 42 from 10/8
                  ('doc.write', '42', '192.0.2.1'),  -- … not from elsewhere
                  ('doc.write', '42', '2001:db8::1'),
                  ('doc.write', '42', NULL),         -- … nor without an address
                  ('doc.write', 'tenant-1', NULL),   -- bob via team-a
                  ('doc.read', 'tenant-1', NULL),    -- inherited from reader
                  ('doc.write', 'tenant-2', NULL))   -- bob: expired
       AS c(perm, scope, ip)
 WHERE username IN ('alice', 'bob')
 ORDER BY username, perm, scope NULLS FIRST, ip NULLS FIRST;

-- A locked user has no permissions; the change is seen in the same transaction.
BEGIN;
SELECT auth_user_has_permission((SELECT id FROM u WHERE username = 'alice'), 'doc.read') AS before_lock;
UPDATE pgauth.users SET status = 'locked' WHERE username = 'alice';
SELECT auth_user_has_permission((SELECT id FROM u WHERE username = 'alice'), 'doc.read') AS after_lock;
ROLLBACK;
-- Revocation is seen right after the change, too.
BEGIN;
SELECT auth_revoke_permission('reader', 'doc.read');
SELECT auth_user_has_permission((SELECT id FROM u WHERE username = 'alice'), 'doc.read') AS after_revoke;
ROLLBACK;

-- Session identity: bound to the transaction only.
SELECT auth_current_user_id() IS NULL AS nobody_bound, auth_has_permission('doc.read') AS without_user;
CREATE TEMP TABLE tok AS SELECT auth_create_session((SELECT id FROM u WHERE username = 'alice')) AS t;
SELECT t LIKE 'pgs\_%' AND length(t) = 47 AS opaque_token FROM tok;
SELECT count(*) AS stored_as_sha256 FROM pgauth.sessions s, tok WHERE s.token_hash = sha256(convert_to(tok.t, 'UTF8'));
BEGIN;
SELECT auth_set_session(t) = (SELECT id FROM u WHERE username = 'alice') AS bound FROM tok;
SELECT auth_current_user_id() = (SELECT id FROM u WHERE username = 'alice') AS current_is_alice,
       auth_has_permission('doc.read') AS can_read,
       auth_has_permission('doc.write', '42') AS write_42_from_unix_socket;
-- It cannot be forged or reset from SQL:
SAVEPOINT s1;
SET pgauth.session_binding = '00000000-0000-0000-0000-000000000001';
ROLLBACK TO s1;
SELECT set_config('pgauth.session_binding', '00000000-0000-0000-0000-000000000001', true);
ROLLBACK TO s1;
RESET pgauth.session_binding;
ROLLBACK TO s1;
SELECT auth_current_user_id() = (SELECT id FROM u WHERE username = 'alice') AS still_alice;
COMMIT;
SELECT auth_current_user_id() IS NULL AS gone_after_commit;
SELECT auth_set_session('pgs_not-a-real-token-not-a-real-token-not-a-real');
SELECT auth_revoke_session(t) FROM tok;
SELECT auth_set_session(t) FROM tok;

-- PostgREST: request.jwt.claims is trusted only when a superuser turns it on.
SET request.jwt.claims = '{"role": "web", "sub": "00000000-0000-0000-0000-0000000000aa"}';
SELECT auth_current_user_id() IS NULL AS claims_not_trusted_by_default;
SET pgauth.trust_request_jwt_claims = on;
SELECT auth_current_user_id() AS from_claims;
RESET pgauth.trust_request_jwt_claims;
RESET request.jwt.claims;

-- Row-level security in one call; checks per row under a forced parallel plan.
CREATE TABLE docs (id int, tenant_id bigint, body text);
INSERT INTO docs SELECT g, g % 5, 'doc ' || g FROM generate_series(1, 1000) g;
SELECT auth_create_role('t-reader') IS NOT NULL AS created;
SELECT auth_grant_permission('t-reader', 'docs.read');
SELECT auth_assign_role((SELECT id FROM u WHERE username = 'bob'), 't-reader', '1');
SELECT auth_assign_role((SELECT id FROM u WHERE username = 'bob'), 't-reader', '3');
SELECT auth_rls_enable('docs', 'docs.read', 'tenant_id');
SELECT polname, pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polrelid = 'docs'::regclass;
CREATE ROLE pgauth_regress_web;
GRANT SELECT ON docs TO pgauth_regress_web;
GRANT pgauth_service TO pgauth_regress_web;
SELECT id AS bob_id FROM pgauth.users WHERE username = 'bob' \gset
SET ROLE pgauth_regress_web;
SELECT count(*) AS visible_without_user FROM docs;
BEGIN;
SELECT auth_bind_user(:'bob_id') = :'bob_id' AS bound;
SELECT count(*) AS visible_to_bob, array_agg(DISTINCT tenant_id ORDER BY tenant_id) AS tenants FROM docs;
-- force_parallel_mode is named debug_parallel_query from PostgreSQL 16 on.
SELECT CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END AS parallel_mode_setting \gset
SET LOCAL :parallel_mode_setting = on;
SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
SELECT count(*) AS visible_to_bob_in_parallel FROM docs;
COMMIT;
RESET ROLE;

-- Readers do not write: docs.read gets a FOR SELECT policy only. Bob (docs.read in tenants 1
-- and 3) tries INSERT, UPDATE and DELETE within his own tenants.
GRANT INSERT, UPDATE, DELETE ON docs TO pgauth_regress_web;
SET ROLE pgauth_regress_web;
BEGIN;
SELECT auth_bind_user(:'bob_id') = :'bob_id' AS bound;
INSERT INTO docs VALUES (5001, 1, 'written by a reader');
ROLLBACK;
BEGIN;
SELECT auth_bind_user(:'bob_id') = :'bob_id' AS bound;
WITH c AS (UPDATE docs SET body = 'changed by a reader' WHERE tenant_id = 1 RETURNING 1)
SELECT count(*) AS updated_by_reader FROM c;
WITH c AS (DELETE FROM docs WHERE tenant_id = 3 RETURNING 1)
SELECT count(*) AS deleted_by_reader FROM c;
COMMIT;
RESET ROLE;
SELECT count(*) FILTER (WHERE body LIKE 'doc %') AS untouched, count(*) AS total FROM docs;
-- The table's owner bypasses RLS (superusers and BYPASSRLS roles always do) unless RLS is forced.
CREATE ROLE pgauth_regress_owner;
ALTER TABLE docs OWNER TO pgauth_regress_owner;
SET ROLE pgauth_regress_owner;
SELECT count(*) AS owner_sees_all FROM docs;
RESET ROLE;
-- Writes need a permission given for writing (write_permission), in its scope; force => true
-- makes the owner subject to the policies too.
SELECT auth_create_role('t-writer', '{t-reader}') IS NOT NULL AS created;
SELECT auth_grant_permission('t-writer', 'docs.write');
SELECT id AS alice_id FROM pgauth.users WHERE username = 'alice' \gset
SELECT auth_assign_role(:'alice_id', 't-writer', '1');
SET ROLE pgauth_regress_owner;
SELECT auth_rls_enable('docs', 'docs.read', 'tenant_id', write_permission => 'docs.write', force => true);
SELECT count(*) AS forced_owner_sees FROM docs;
RESET ROLE;
SELECT polname, polcmd, pg_get_expr(polqual, polrelid) AS using_expr,
       pg_get_expr(polwithcheck, polrelid) AS check_expr
  FROM pg_policy WHERE polrelid = 'docs'::regclass ORDER BY polname;
SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'docs'::regclass;
SET ROLE pgauth_regress_web;
BEGIN;
SELECT auth_bind_user(:'alice_id') = :'alice_id' AS bound;
INSERT INTO docs VALUES (5001, 1, 'written by a writer');
WITH c AS (UPDATE docs SET body = 'changed by a writer' WHERE tenant_id = 1 RETURNING 1)
SELECT count(*) AS updated_by_writer FROM c;
WITH c AS (DELETE FROM docs WHERE id = 5001 RETURNING 1)
SELECT count(*) AS deleted_by_writer FROM c;
-- ... only within its scope: tenant 2 is not alice's.
INSERT INTO docs VALUES (5002, 2, 'outside the writer''s scope');
ROLLBACK;
BEGIN;
SELECT auth_bind_user(:'bob_id') = :'bob_id' AS bound;
INSERT INTO docs VALUES (5003, 1, 'still a reader');
ROLLBACK;
RESET ROLE;

-- An application role without pgauth_service or pgauth_admin:
CREATE ROLE pgauth_regress_plain;
SET ROLE pgauth_regress_plain;
SELECT auth_bind_user((SELECT '00000000-0000-0000-0000-000000000001'::uuid));
SELECT auth_create_user('mallory');
SELECT auth_user_has_permission('00000000-0000-0000-0000-000000000001', 'doc.read');
SELECT count(*) FROM pgauth.users;
SELECT auth_has_permission('doc.read') AS plain_can_check;
SET pgauth.trust_request_jwt_claims = on;
RESET ROLE;

DROP TABLE docs;
DROP ROLE pgauth_regress_owner;
DROP ROLE pgauth_regress_web;
DROP ROLE pgauth_regress_plain;
