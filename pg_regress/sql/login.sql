-- Password login as an application and a security administrator see it: reasons, lockout,
-- the per-address rate limit, administrative block, rehash on login, password changes with
-- history, expiry, audit events and counters.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgauth;
RESET client_min_messages;
CREATE ROLE pgauth_regress_login_app LOGIN;
CREATE ROLE pgauth_regress_login_dba LOGIN IN ROLE pgauth_admin;
-- The rate limit gets its own section; lock out after 3 failures to keep this short.
SET pgauth.login_attempts_per_minute = 1000;
SET pgauth.max_failed_logins = 3;

SELECT auth_create_user('lg_dora', 'Tr4vel-Quartz-Mango-71') IS NOT NULL AS dora;
SELECT id AS dora_id FROM pgauth.users WHERE username = 'lg_dora' \gset

-- One row; an access JWT and a refresh token only on success (more in jwt.sql).
SELECT ok, user_id = :'dora_id' AS is_dora, reason, access_token LIKE 'eyJ%.%.%' AS has_token,
       refresh_token LIKE 'pgr\_%' AS has_refresh_token
  FROM auth_login('lg_dora', 'Tr4vel-Quartz-Mango-71', '192.0.2.1');
-- The token is an access JWT: auth_set_session binds the user. Usernames are case-insensitive.
SELECT auth_set_session(access_token) = :'dora_id' AS bound
  FROM auth_login('LG_DORA', 'Tr4vel-Quartz-Mango-71', '192.0.2.1');

-- A wrong password and an unknown user get the same answer; so do NULLs.
SELECT ok, user_id, reason, access_token, refresh_token FROM auth_login('lg_dora', 'wrong', '192.0.2.1');
SELECT ok, user_id, reason, access_token, refresh_token FROM auth_login('lg_nobody', 'wrong', '192.0.2.1');
SELECT ok, user_id, reason FROM auth_login(NULL, NULL);
SELECT failed_count, locked_until FROM pgauth.login_state WHERE user_id = :'dora_id';

-- The third consecutive failure locks the account for pgauth.lockout_duration …
SELECT reason FROM auth_login('lg_dora', 'wrong again', '192.0.2.2');
SELECT reason FROM auth_login('lg_dora', 'still wrong', '192.0.2.3');
SELECT failed_count, locked_until > now() + interval '14 minutes' AS for_15_minutes
  FROM pgauth.login_state WHERE user_id = :'dora_id';
-- … during which even the right password is refused, from any address.
SELECT ok, user_id, reason, access_token FROM auth_login('lg_dora', 'Tr4vel-Quartz-Mango-71', '192.0.2.4');

-- An application role may log in, but not unlock, nor read the state.
SET ROLE pgauth_regress_login_app;
SELECT ok, reason FROM auth_login('lg_dora', 'Tr4vel-Quartz-Mango-71', '192.0.2.4');
SELECT auth_unlock_user(:'dora_id');
SELECT auth_block_user(:'dora_id');
SELECT count(*) FROM pgauth.login_state;
SELECT * FROM pgauth.stats;
RESET ROLE;
-- The security administrator unlocks.
SET ROLE pgauth_regress_login_dba;
SELECT auth_unlock_user(:'dora_id');
RESET ROLE;
SELECT ok, reason FROM auth_login('lg_dora', 'Tr4vel-Quartz-Mango-71', '192.0.2.4');
SELECT failed_count, locked_until FROM pgauth.login_state WHERE user_id = :'dora_id';

-- A lockout that has run out starts the count from zero.
SET pgauth.lockout_duration = 1;
SELECT reason FROM auth_login('lg_dora', 'wrong', '192.0.2.1');
SELECT reason FROM auth_login('lg_dora', 'wrong', '192.0.2.1');
SELECT reason FROM auth_login('lg_dora', 'wrong', '192.0.2.1');
SELECT reason FROM auth_login('lg_dora', 'wrong', '192.0.2.1');
SELECT pg_sleep(1.2);
SELECT reason FROM auth_login('lg_dora', 'wrong', '192.0.2.1');
SELECT failed_count, locked_until FROM pgauth.login_state WHERE user_id = :'dora_id';
RESET pgauth.lockout_duration;

-- The administrative block: status 'locked', sessions revoked. Without the right password the
-- answer does not tell.
SET ROLE pgauth_regress_login_dba;
SELECT auth_block_user(:'dora_id');
RESET ROLE;
SELECT status FROM pgauth.users WHERE id = :'dora_id';
SELECT count(*) AS open_sessions FROM pgauth.sessions WHERE user_id = :'dora_id' AND revoked_at IS NULL;
SELECT ok, user_id, reason FROM auth_login('lg_dora', 'wrong', '192.0.2.1');
SELECT ok, user_id, reason FROM auth_login('lg_dora', 'Tr4vel-Quartz-Mango-71', '192.0.2.1');
SET ROLE pgauth_regress_login_dba;
SELECT auth_unlock_user(:'dora_id');
RESET ROLE;
SELECT status FROM pgauth.users WHERE id = :'dora_id';
UPDATE pgauth.users SET status = 'disabled' WHERE id = :'dora_id';
SELECT ok, user_id, reason FROM auth_login('lg_dora', 'Tr4vel-Quartz-Mango-71', '192.0.2.1');
UPDATE pgauth.users SET status = 'active' WHERE id = :'dora_id';

-- The rate limit is per client address (IPv6: per /64); a refused attempt is not a failure
-- of the user, and other addresses are not affected.
SET pgauth.login_attempts_per_minute = 2;
SELECT reason FROM auth_login('lg_dora', 'wrong', '198.51.100.7');
SELECT reason FROM auth_login('lg_dora', 'wrong', '198.51.100.7');
SELECT reason FROM auth_login('lg_dora', 'Tr4vel-Quartz-Mango-71', '198.51.100.7');
SELECT failed_count FROM pgauth.login_state WHERE user_id = :'dora_id';
SELECT reason FROM auth_login('lg_dora', 'Tr4vel-Quartz-Mango-71', '198.51.100.8');
SELECT reason FROM auth_login('lg_nobody', 'x', '2001:db8:5:5::1');
SELECT reason FROM auth_login('lg_nobody', 'x', '2001:db8:5:5:ffff::2');
SELECT reason FROM auth_login('lg_nobody', 'x', '2001:db8:5:5::3');
SELECT reason FROM auth_login('lg_nobody', 'x', '2001:db8:5:6::1');
SET pgauth.login_attempts_per_minute = 0;
SET pgauth.login_attempts_per_minute = -1;
SET pgauth.max_failed_logins = 1001;
-- PostgreSQL 17 added units to the range in this message: the SQLSTATE only.
\set VERBOSITY sqlstate
SET pgauth.lockout_duration = 0;
\set VERBOSITY default
SET pgauth.login_attempts_per_minute = 1000;

-- A successful login upgrades an old hash (bcrypt here) in the same transaction.
SELECT auth_create_user('lg_emil') IS NOT NULL AS emil;
SELECT id AS emil_id FROM pgauth.users WHERE username = 'lg_emil' \gset
INSERT INTO pgauth.credentials (user_id, password_hash)
VALUES (:'emil_id', '$2a$06$ZzjP0Icri5lPJGa8EmvywulUeD9Vw8ZqkwtDbZidtpa4qXYmATzkG');
SELECT ok, reason FROM auth_login('lg_emil', 'hunter2', '192.0.2.9');
SELECT password_hash LIKE '$argon2id$%' AS argon2id, auth_needs_rehash(password_hash) AS needs_rehash,
       auth_verify('hunter2', password_hash) AS verifies
  FROM pgauth.credentials WHERE user_id = :'emil_id';
SELECT ok, reason FROM auth_login('lg_emil', 'hunter2', '192.0.2.9');

-- Changing a password: the old one must be right (a wrong one counts as a failure), the new one
-- must meet the policy and differ from the last `history` passwords.
UPDATE pgauth.password_policies SET history = 2 WHERE name = 'default';
SELECT auth_change_password(:'emil_id', 'wrong', 'Granite-Otter-Vessel-58') AS changed;
SELECT failed_count FROM pgauth.login_state WHERE user_id = :'emil_id';
SELECT auth_change_password(:'emil_id', 'hunter2', 'lg_emil2024');
SELECT auth_change_password(:'emil_id', 'hunter2', 'Granite-Otter-Vessel-58') AS changed;
SELECT auth_change_password(:'emil_id', 'Granite-Otter-Vessel-58', 'Copper-Lantern-Fjord-93') AS changed;
SELECT auth_change_password(:'emil_id', 'Copper-Lantern-Fjord-93', 'Granite-Otter-Vessel-58');
SELECT auth_change_password(:'emil_id', 'Copper-Lantern-Fjord-93', 'Copper-Lantern-Fjord-93');
SELECT auth_change_password(:'emil_id', 'Copper-Lantern-Fjord-93', 'Maple-Orbit-Stanza-26') AS changed;
-- Two passwords back is allowed again with history = 2.
SELECT auth_change_password(:'emil_id', 'Maple-Orbit-Stanza-26', 'Granite-Otter-Vessel-58') AS changed;
SELECT count(*) AS kept_hashes FROM pgauth.password_history WHERE user_id = :'emil_id';
SELECT changed_at > now() - interval '1 minute' AS changed_just_now FROM pgauth.credentials WHERE user_id = :'emil_id';
SELECT ok, reason FROM auth_login('lg_emil', 'Granite-Otter-Vessel-58', '192.0.2.9');
SELECT ok, reason FROM auth_login('lg_emil', 'hunter2', '192.0.2.9');
UPDATE pgauth.password_policies SET history = 0 WHERE name = 'default';

-- Expiry: with max_age_days, an old password logs in no more (the user id lets the application
-- offer a password change); a wrong password still says only invalid_credentials.
UPDATE pgauth.password_policies SET max_age_days = 30 WHERE name = 'default';
UPDATE pgauth.credentials SET changed_at = now() - interval '31 days' WHERE user_id = :'emil_id';
SELECT ok, user_id = :'emil_id' AS is_emil, reason, access_token
  FROM auth_login('lg_emil', 'Granite-Otter-Vessel-58', '192.0.2.9');
SELECT ok, user_id, reason FROM auth_login('lg_emil', 'wrong', '192.0.2.9');
SELECT auth_change_password(:'emil_id', 'Granite-Otter-Vessel-58', 'Harbor-Quill-Meadow-44') AS changed;
SELECT ok, reason FROM auth_login('lg_emil', 'Harbor-Quill-Meadow-44', '192.0.2.9');
UPDATE pgauth.password_policies SET max_age_days = 0 WHERE name = 'default';

-- Every outcome is an audit event; no password appears in the log.
SELECT event, new_values->>'reason' AS reason, count(*)
  FROM pgauth.audit_log
 WHERE row_key->>'subject' LIKE 'lg\_%'
   AND event NOT IN ('user_created', 'session_created')
 GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) AS rows_with_a_password FROM pgauth.audit_log
 WHERE (coalesce(row_key::text, '') || coalesce(new_values::text, ''))
       ~ '(Tr4vel|hunter2|Granite|Copper|Maple|Harbor|wrong)';
SELECT logins_succeeded, logins_failed, lockouts, rehashes, rate_limited, passwords_expired
  FROM pgauth.stats;
SELECT ok FROM auth_audit_verify();

RESET pgauth.login_attempts_per_minute;
RESET pgauth.max_failed_logins;
DROP ROLE pgauth_regress_login_app;
DROP ROLE pgauth_regress_login_dba;
-- Leave no users behind for the suites that run after this one.
DELETE FROM pgauth.users WHERE username LIKE 'lg\_%';
