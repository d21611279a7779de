-- TOTP and recovery codes (the test cluster has a master key: secrets are stored encrypted).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgauth;
RESET client_min_messages;

SELECT auth_create_user('mfa-user') AS uid \gset
SELECT auth_totp_enroll(:'uid', 'pgauth demo') AS uri \gset
SELECT :'uri' ~ '^otpauth://totp/pgauth%20demo:mfa-user\?secret=[A-Z2-7]{32}&issuer=pgauth%20demo$' AS otpauth_uri;
-- A colon in the username or issuer (the label's separator) is shown as U+A789.
SELECT auth_create_user('corp:ann') AS colon_uid \gset
SELECT auth_totp_enroll(:'colon_uid', 'acme:eu') ~ '^otpauth://totp/acme%EA%9E%89eu:corp%EA%9E%89ann\?secret=' AS colon_label;
-- The secret is stored only encrypted (an auth_encrypt envelope bound to the user).
SELECT get_byte(secret, 0) = 1 AS encrypted, length(secret) = 45 + 20 AS envelope_of_20_bytes,
       position(convert_to(substring(:'uri' from 'secret=([A-Z2-7]+)'), 'UTF8') in secret) = 0 AS not_in_clear
  FROM pgauth.totp WHERE user_id = :'uid';
SELECT auth_totp_verify(:'uid', '000000') AS wrong_code, auth_totp_verify(:'uid', 'abc') AS malformed;

CREATE TEMP TABLE codes AS SELECT c FROM auth_recovery_codes(:'uid') c;
SELECT count(*) AS codes, bool_and(c ~ '^[a-z2-9]{5}-[a-z2-9]{5}$') AS well_formed FROM codes;
-- Stored keyed (HMAC under the default data key, bound to the user), never as a plain hash
-- that a copy of the table could be searched against offline.
SELECT count(*) AS stored_as_plain_sha256 FROM pgauth.recovery_codes r, codes
 WHERE r.user_id = :'uid' AND r.code_hash = sha256(convert_to(replace(codes.c, '-', ''), 'UTF8'));
SELECT count(*) AS stored_keyed FROM pgauth.recovery_codes r, codes
 WHERE r.user_id = :'uid'
   AND r.code_hash = auth_hmac(convert_to('pgauth recovery code v1', 'UTF8') || uuid_send(:'uid')
                               || convert_to(replace(codes.c, '-', ''), 'UTF8'), 'default');
SELECT auth_use_recovery_code(:'uid', (SELECT upper(c) FROM codes LIMIT 1)) AS first_use;
SELECT auth_use_recovery_code(:'uid', (SELECT c FROM codes LIMIT 1)) AS second_use;
SELECT auth_use_recovery_code(:'uid', 'aaaaa-bbbbb') AS unknown_code;
-- A code stored by an earlier version (plain SHA-256) still works, once.
INSERT INTO pgauth.recovery_codes (user_id, code_hash)
VALUES (:'uid', sha256(convert_to('legacy2code', 'UTF8')));
SELECT auth_use_recovery_code(:'uid', 'LEGAC-Y2CODE') AS legacy_first_use;
SELECT auth_use_recovery_code(:'uid', 'legacy2code') AS legacy_second_use;
SELECT event FROM pgauth.audit_log WHERE event LIKE 'totp%' OR event LIKE 'recovery%' ORDER BY id;

CREATE ROLE pgauth_regress_mfa;
SET ROLE pgauth_regress_mfa;
SELECT auth_totp_verify(:'uid', '123456');
RESET ROLE;
DROP ROLE pgauth_regress_mfa;

-- Changing the second factors of a user who has one needs assurance level 2 of that user's
-- binding: an application server (pgauth_service) acting in a transaction bound to the user at
-- aal 1 (a password sign-in) may not replace the recovery codes, re-enroll or disable TOTP.
CREATE ROLE pgauth_regress_mfa_svc IN ROLE pgauth_service;
SELECT auth_create_user('mfa-new') AS new_uid \gset
SET ROLE pgauth_regress_mfa_svc;
BEGIN;
SELECT auth_bind_user(:'uid') = :'uid' AS bound_at_aal_1;
SELECT count(*) FROM auth_recovery_codes(:'uid');
ROLLBACK;
BEGIN;
SELECT auth_bind_user(:'uid') = :'uid' AS bound_at_aal_1;
SELECT auth_totp_enroll(:'uid', 'pgauth demo') IS NOT NULL AS reenrolled;
ROLLBACK;
BEGIN;
SELECT auth_bind_user(:'uid') = :'uid' AS bound_at_aal_1;
SELECT auth_totp_disable(:'uid');
ROLLBACK;
-- At aal 2 (after a step-up; here the service vouches for it) the same changes are allowed.
BEGIN;
SELECT auth_bind_user(:'uid', aal => 2) = :'uid' AS bound_at_aal_2;
SELECT count(*) AS new_codes FROM auth_recovery_codes(:'uid');
SELECT auth_totp_disable(:'uid') AS disabled;
SELECT auth_totp_disable(:'uid') AS disabled_again;
COMMIT;
-- A user's first factor may be enrolled at aal 1 (the audit row says so); the next change
-- needs aal 2.
BEGIN;
SELECT auth_bind_user(:'new_uid') = :'new_uid' AS bound_at_aal_1;
SELECT auth_totp_enroll(:'new_uid') IS NOT NULL AS first_factor_enrolled;
SELECT count(*) FROM auth_recovery_codes(:'new_uid');
ROLLBACK;
BEGIN;
SELECT auth_bind_user(:'new_uid') = :'new_uid' AS bound_at_aal_1;
SELECT auth_totp_enroll(:'new_uid') IS NOT NULL AS first_factor_enrolled;
COMMIT;
RESET ROLE;
SELECT event, new_values->>'first_factor' AS first_factor, new_values->>'aal' AS aal
  FROM pgauth.audit_log
 WHERE event IN ('totp_enrolled', 'totp_disabled', 'recovery_codes_generated') ORDER BY id;
DROP ROLE pgauth_regress_mfa_svc;
SET client_min_messages = warning;
DROP EXTENSION pgauth CASCADE;
RESET client_min_messages;
