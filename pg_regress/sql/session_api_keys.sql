-- API keys: shown once, stored as prefix + SHA-256, verified in constant time.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgauth;
RESET client_min_messages;

SELECT auth_create_user('api-owner') AS uid \gset
SELECT auth_create_api_key(:'uid', 'ci deploy', '{deploy}') AS key \gset
SELECT :'key' ~ '^pga_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{43}$' AS well_formed;
SELECT count(*) AS stored_as_sha256_only
  FROM pgauth.api_keys WHERE key_hash = sha256(convert_to(:'key', 'UTF8')) AND prefix = substr(:'key', 5, 8);
SELECT auth_verify_api_key(:'key') = :'uid' AS verifies;
SELECT auth_verify_api_key(left(:'key', 13) || repeat('A', 43)) IS NULL AS wrong_secret;
SELECT auth_verify_api_key('pga_nonsense') IS NULL AS malformed;
-- Scopes: a key made for 'deploy' is not a key for 'admin'; one made without scopes is for all.
SELECT auth_verify_api_key(:'key', 'deploy') = :'uid' AS deploy_scope;
SELECT auth_verify_api_key(:'key', 'admin') IS NULL AS admin_scope_refused;
SELECT auth_create_api_key(:'uid', 'unscoped') AS any_key \gset
SELECT auth_verify_api_key(:'any_key', 'admin') = :'uid' AS unscoped_key_any_scope;
SELECT auth_verify_api_key(left(:'any_key', 13) || repeat('A', 43), 'admin') IS NULL AS wrong_secret_with_scope;
SELECT last_used_at IS NOT NULL AS last_use_recorded FROM pgauth.api_keys WHERE prefix = substr(:'key', 5, 8);

-- Expired keys and keys of locked users do not verify.
SELECT auth_create_api_key(:'uid', 'old', NULL, now() - interval '1 minute') AS old_key \gset
SELECT auth_verify_api_key(:'old_key') IS NULL AS expired;
BEGIN;
UPDATE pgauth.users SET status = 'locked' WHERE id = :'uid';
SELECT auth_verify_api_key(:'key') IS NULL AS user_locked;
ROLLBACK;
-- The failed verification's event was undone by the rollback; the event keeper writes it again
-- in its own transaction, shortly after (waited for here so that the listing below is stable).
DO $$
BEGIN
    FOR i IN 1..200 LOOP
        EXIT WHEN EXISTS (SELECT FROM pgauth.audit_log WHERE event = 'api_key_failed'
                             AND new_values->>'kept_after_rollback' = 'true');
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
SELECT count(*) AS kept_after_rollback FROM pgauth.audit_log
 WHERE event = 'api_key_failed' AND new_values->>'kept_after_rollback' = 'true';

-- Revocation by prefix (with or without the pga_ marker).
SELECT auth_revoke_api_key(substr(:'key', 1, 12)) AS revoked;
SELECT auth_verify_api_key(:'key') IS NULL AS after_revoke;
SELECT auth_revoke_api_key(substr(:'key', 5, 8)) AS revoked_twice;

-- Events, and who may create keys.
SELECT event FROM pgauth.audit_log WHERE event LIKE 'api_key%' ORDER BY id;
CREATE ROLE pgauth_regress_apikeys;
SET ROLE pgauth_regress_apikeys;
SELECT auth_create_api_key(:'uid', 'mine');
SELECT auth_verify_api_key(:'any_key') = :'uid' AS anyone_may_verify;
RESET ROLE;
DROP ROLE pgauth_regress_apikeys;
DELETE FROM pgauth.users WHERE id = :'uid';
-- Drop pgauth again, so that the case after this one starts from a fresh install.
SET client_min_messages = warning;
DROP EXTENSION pgauth CASCADE;
RESET client_min_messages;
