-- Every change to pgauth's state is an audit event, whichever path makes it, and security
-- events are written by pgauth's own code only: pgauth_admin can neither forge an event nor
-- change sessions, credentials or grants behind the log's back.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgauth;
RESET client_min_messages;
CREATE ROLE pgauth_regress_forger LOGIN IN ROLE pgauth_admin;
CREATE ROLE pgauth_regress_other_super SUPERUSER;

SELECT auth_create_user('forge_victim', 'Tr4vel-Quartz-Mango-71') AS victim \gset
SELECT auth_create_role('forge_role') IS NOT NULL AS role_created;
SELECT auth_create_session(:'victim') IS NOT NULL AS session_created;
SELECT coalesce(max(id), 0) AS before FROM pgauth.audit_log \gset
-- What the log shows, without the random ids and times.
CREATE FUNCTION pg_temp.masked(j jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT regexp_replace(regexp_replace(regexp_replace(j::text,
               '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g'),
               '"\d{4}-\d\d-\d\dT[^"]*"', '"<time>"', 'g'),
               '"id": \d+', '"id": <n>', 'g')
$$;
\pset format unaligned

SET ROLE pgauth_regress_forger;
-- Forging a security event: refused.
SELECT pgauth.record_event('login_succeeded', 'forge_victim', '{"client_ip": "192.0.2.1"}');
-- Direct changes pgauth_admin may make are recorded, secrets redacted.
UPDATE pgauth.sessions SET aal = 3, amr = '{pwd,otp}' WHERE user_id = :'victim';
UPDATE pgauth.credentials SET password_hash = '$2a$06$ZzjP0Icri5lPJGa8EmvywulUeD9Vw8ZqkwtDbZidtpa4qXYmATzkG'
 WHERE user_id = :'victim';
INSERT INTO pgauth.role_grants (user_id, role_id, scope)
VALUES (:'victim', pgauth.role_id('forge_role'), 'forged');
DELETE FROM pgauth.role_grants WHERE user_id = :'victim' AND scope = 'forged';
UPDATE pgauth.users SET status = 'locked' WHERE id = :'victim';
UPDATE pgauth.password_policies SET min_length = 9 WHERE name = 'default';
UPDATE pgauth.password_policies SET min_length = 8 WHERE name = 'default';
-- pgauth's own functions called by pgauth_admin: their events, and no table events besides.
SELECT auth_unlock_user(:'victim');
SELECT auth_create_group('forge_group') IS NOT NULL AS group_created;
SELECT auth_add_member('forge_group', :'victim');
SELECT auth_create_session(:'victim') IS NOT NULL AS session_created;
-- A sign-in writes sessions, refresh tokens and (rehashing the bcrypt hash) credentials: its
-- own events only.
SELECT ok, reason FROM auth_login('forge_victim', 'hunter2');
RESET ROLE;

SELECT db_user, event, table_name, pg_temp.masked(row_key) AS row_key,
       pg_temp.masked(old_values) AS old_values, pg_temp.masked(new_values) AS new_values
  FROM pgauth.audit_log WHERE id > :before ORDER BY id;
-- No secret reached the log.
SELECT count(*) AS leaked FROM pgauth.audit_log
 WHERE id > :before AND (new_values::text LIKE '%$2a$%' OR old_values::text LIKE '%$argon2id$%');

-- Another superuser than the owner of schema pgauth cannot forge events either, and its direct
-- writes are recorded too.
SELECT coalesce(max(id), 0) AS before FROM pgauth.audit_log \gset
SET ROLE pgauth_regress_other_super;
SELECT pgauth.record_event('login_succeeded', 'forge_victim');
INSERT INTO pgauth.api_keys (prefix, key_hash, user_id, name)
VALUES ('Forged01', decode(repeat('ab', 32), 'hex'), :'victim', 'forged');
DELETE FROM pgauth.api_keys WHERE prefix = 'Forged01';
TRUNCATE pgauth.webauthn_challenges;
RESET ROLE;
SELECT db_user, event, table_name, row_key, pg_temp.masked(old_values) AS old_values,
       pg_temp.masked(new_values) AS new_values
  FROM pgauth.audit_log WHERE id > :before ORDER BY id;

-- The owner's own calls are pgauth's code: record_event still works for it.
SELECT pgauth.record_event('regress_owner_event', 'owner');
SELECT event FROM pgauth.audit_log ORDER BY id DESC LIMIT 1;
SELECT has_function_privilege('pgauth_admin', 'pgauth.record_event(text, text, jsonb)', 'EXECUTE') AS admin_may_record;

SELECT ok, reason FROM auth_audit_verify();
\pset format aligned

DELETE FROM pgauth.users WHERE username = 'forge_victim';
SELECT auth_drop_role('forge_role');
DELETE FROM pgauth.groups WHERE name = 'forge_group';
DROP ROLE pgauth_regress_forger;
DROP ROLE pgauth_regress_other_super;

DROP EXTENSION pgauth CASCADE;
