-- JWT signing keys, access and refresh tokens, assurance levels and step-up.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgauth;
RESET client_min_messages;
\set VERBOSITY default
-- Many sign-ins from one (socket) address in this file.
SET pgauth.login_attempts_per_minute = 1000;

-- Signing keys: every algorithm; bad names and algorithms are refused.
SELECT alg, auth_create_signing_key('t-' || lower(alg), alg) IS NOT NULL AS created
  FROM unnest(ARRAY['HS256', 'HS384', 'HS512', 'RS256', 'ES256', 'EdDSA']) alg;
SELECT auth_create_signing_key('t-none', 'none');
SELECT auth_create_signing_key('t-hs256', 'HS256');
SELECT auth_create_signing_key('bad name!', 'HS256');
-- Private material is stored sealed (an auth_encrypt envelope), never as PEM or raw secret.
SELECT name, get_byte(private_key, 0) = 1 AS sealed,
       position(convert_to('PRIVATE KEY', 'UTF8') in private_key) = 0 AS no_pem_in_clear
  FROM pgauth.signing_keys WHERE name LIKE 't-%' ORDER BY name;

-- The JWKS lists only public halves: no HMAC keys, no private parameters.
SELECT k->>'alg' AS alg, k->>'kty' AS kty, k ? 'd' AS has_private, k->>'use' AS use
  FROM jsonb_array_elements(auth_jwks()->'keys') k ORDER BY 1;

-- Sign and verify with each key; the claims come back with iat, exp and iss added.
SELECT name,
       (auth_jwt_verify(auth_jwt_sign('{"sub": "u1", "role": "reader"}', name), name)
          - 'iat' - 'exp') AS claims,
       (c->>'exp')::bigint - (c->>'iat')::bigint AS lifetime
  FROM pgauth.signing_keys,
       LATERAL (SELECT auth_jwt_verify(auth_jwt_sign('{}', name, '5 minutes'), name) AS c) v
 WHERE name LIKE 't-%' ORDER BY name;

-- A token verifies only with its own key name; tampering, truncation and garbage are 22023.
SELECT auth_jwt_sign('{"sub": "u1"}', 't-es256') AS es \gset
SELECT auth_jwt_verify(:'es', 't-eddsa');
SELECT auth_jwt_verify(left(:'es', -2) || CASE WHEN right(:'es', 2) = 'AA' THEN 'BB' ELSE 'AA' END, 't-es256');
SELECT auth_jwt_verify(split_part(:'es', '.', 1) || '.' || split_part(:'es', '.', 2), 't-es256');
SELECT auth_jwt_verify('not a token', 't-es256');
SELECT auth_jwt_verify(repeat('a', 20000) || '.e30.x', 't-es256');
-- alg "none" with a known kid, and an HS256 token signed with an RS key's public JWK as secret
-- (algorithm confusion) are refused.
SELECT kid AS rs_kid, public_jwk::text AS rs_jwk FROM (SELECT id AS kid, public_jwk FROM pgauth.signing_keys WHERE name = 't-rs256') k \gset
SELECT auth_jwt_verify(
         rtrim(translate(encode(convert_to('{"alg":"none","typ":"JWT","kid":"' || :'rs_kid' || '"}', 'UTF8'), 'base64'), '+/', '-_'), '=')
         || '.' || rtrim(translate(encode(convert_to('{"sub":"x","exp":4102444800}', 'UTF8'), 'base64'), '+/', '-_'), '=') || '.',
         't-rs256');
-- The forged token is a real HS256 token whose HMAC key is the RS256 key's public JWK, as
-- published by auth_jwks() (pgcrypto's hmac computes it).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
RESET client_min_messages;
WITH m AS (
  SELECT translate(encode(convert_to('{"alg":"HS256","typ":"JWT","kid":"' || :'rs_kid' || '"}', 'UTF8'), 'base64'), E'+/=\n', '-_')
         || '.' || translate(encode(convert_to('{"sub":"x","exp":4102444800}', 'UTF8'), 'base64'), E'+/=\n', '-_') AS signed)
SELECT auth_jwt_verify(signed || '.' || translate(encode(hmac(signed, :'rs_jwk', 'sha256'), 'base64'), E'+/=\n', '-_'),
                       't-rs256')
  FROM m;
-- Audience: checked when the verifier names one.
SELECT auth_jwt_verify(auth_jwt_sign('{"aud": "api"}', 't-hs256'), 't-hs256', 'api')->>'aud' AS aud_ok;
SELECT auth_jwt_verify(auth_jwt_sign('{"aud": "api"}', 't-hs256'), 't-hs256', 'web');
-- Issuer: checked when the verifier names one (no iss, or another, is refused).
SELECT auth_jwt_verify(auth_jwt_sign('{"iss": "https://idp.example"}', 't-hs256'), 't-hs256', issuer => 'https://idp.example')->>'iss' AS iss_ok;
SELECT auth_jwt_verify(auth_jwt_sign('{"iss": "https://evil.example"}', 't-hs256'), 't-hs256', issuer => 'https://idp.example');
SET pgauth.jwt_issuer = '';
SELECT auth_jwt_sign('{}', 't-hs256') AS no_iss_token \gset
RESET pgauth.jwt_issuer;
SELECT auth_jwt_verify(:'no_iss_token', 't-hs256', issuer => 'pgauth');
-- Claims must be an object; lifetimes are bounded.
SELECT auth_jwt_sign('[1, 2]', 't-hs256');
SELECT auth_jwt_sign('{}', 't-hs256', '0 seconds');
SELECT auth_jwt_sign('{}', 'no-such-key');

-- Without the master key, nothing sealed under it signs (cached keys are dropped too).
SELECT auth_jwt_sign('{}', 't-hs256') IS NOT NULL AS signs_with_master_key;
SET pgauth.master_key_file = '';
SELECT auth_jwt_sign('{}', 't-hs256');
RESET pgauth.master_key_file;
SELECT auth_jwt_sign('{}', 't-hs256') IS NOT NULL AS signs_again;

-- Rotation: the old version still verifies (and stays in the JWKS) until revoked.
SELECT auth_jwt_sign('{"n": 1}', 't-eddsa') AS old_token \gset
SELECT id AS old_kid FROM pgauth.signing_keys WHERE name = 't-eddsa' AND status = 'active' \gset
SELECT auth_rotate_signing_key('t-eddsa') <> :'old_kid'::uuid AS new_kid;
SELECT auth_jwt_verify(:'old_token', 't-eddsa')->>'n' AS old_still_verifies;
SELECT count(*) AS eddsa_keys_in_jwks FROM jsonb_array_elements(auth_jwks('t-eddsa')->'keys');
SELECT auth_revoke_signing_key(:'old_kid');
SELECT auth_jwt_verify(:'old_token', 't-eddsa');
SELECT count(*) AS eddsa_keys_in_jwks FROM jsonb_array_elements(auth_jwks('t-eddsa')->'keys');

-- Import: a PEM public key verifies only; an HMAC secret from elsewhere signs and verifies.
SELECT auth_import_signing_key('ext-hs', 'HS256', 'c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYnl0ZXM') IS NOT NULL AS imported;
SELECT auth_jwt_verify(auth_jwt_sign('{"x": 1}', 'ext-hs'), 'ext-hs')->>'x' AS imported_hs;
SELECT auth_import_signing_key('ext-hs', 'HS256', 'c2hvcnQ');
SELECT auth_import_signing_key('ext-es', 'ES256', 'not a pem');

-- Privileges: an application role verifies and reads the JWKS, but may not sign or manage keys.
CREATE ROLE pgauth_regress_app;
SET ROLE pgauth_regress_app;
SELECT auth_jwt_verify(:'es', 't-es256')->>'sub' AS app_can_verify;
SELECT jsonb_typeof(auth_jwks()->'keys') AS app_reads_jwks;
SELECT auth_jwt_sign('{"sub": "admin"}', 't-es256');
SELECT auth_create_signing_key('mine', 'HS256');
SELECT * FROM pgauth.signing_keys;
RESET ROLE;

-- Sign-in: an access JWT for auth_set_session and a refresh token.
SELECT auth_create_user('tok-user', 'Tr0ub4dor&3 horse staple') AS uid \gset
SELECT ok, reason, access_token ~ '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' AS jwt,
       refresh_token ~ '^pgr_[A-Za-z0-9_-]{43}$' AS refresh
  FROM auth_login('tok-user', 'Tr0ub4dor&3 horse staple');
SELECT access_token AS at1, refresh_token AS rt1 FROM auth_login('tok-user', 'Tr0ub4dor&3 horse staple') \gset
SELECT c->>'sub' = :'uid' AS sub_is_user, c->>'aal' AS aal, c->'amr' AS amr, c ? 'sid' AS has_sid,
       c->>'iss' AS iss, (c->>'exp')::bigint - (c->>'iat')::bigint AS ttl
  FROM (SELECT auth_jwt_verify(:'at1') AS c) v;
SELECT count(*) AS refresh_stored_as_sha256 FROM pgauth.refresh_tokens
 WHERE token_hash = sha256(convert_to(:'rt1', 'UTF8'));
BEGIN;
SELECT auth_set_session(:'at1') = :'uid'::uuid AS bound, auth_current_aal() AS aal;
COMMIT;
SELECT auth_current_user_id() IS NULL AS unbound_after_commit, auth_current_aal() IS NULL AS no_aal;
-- A token of another key, even a valid one, is not an access token.
SELECT auth_set_session(auth_jwt_sign(jsonb_build_object('sub', :'uid', 'sid', gen_random_uuid()), 't-es256'));
-- With pgauth.jwt_issuer set (default 'pgauth'), a token signed with the access-token key but
-- with another iss, or none, is not an access token either; with the right iss it is.
SELECT auth_jwt_verify(:'at1')->>'sid' AS sid1 \gset
SET pgauth.jwt_issuer = 'https://evil.example';
SELECT access_token AS at_evil_iss FROM auth_login('tok-user', 'Tr0ub4dor&3 horse staple') \gset
RESET pgauth.jwt_issuer;
SELECT auth_set_session(:'at_evil_iss');
SET pgauth.jwt_issuer = '';
SELECT access_token AS at_no_iss FROM auth_login('tok-user', 'Tr0ub4dor&3 horse staple') \gset
RESET pgauth.jwt_issuer;
SELECT auth_jwt_verify(:'at_no_iss') ? 'iss' AS has_iss;
SELECT auth_set_session(:'at_no_iss');
-- With pgauth.jwt_issuer empty, access tokens carry no iss and none is required.
SET pgauth.jwt_issuer = '';
BEGIN;
SELECT auth_set_session(:'at_no_iss') = :'uid'::uuid AS no_issuer_configured_binds;
COMMIT;
RESET pgauth.jwt_issuer;

-- Access tokens are pgauth's own. Nobody signs with the access-token key through auth_jwt_sign
-- (a pgauth_service member could otherwise mint a token for any user's session), not even a
-- superuser: 42501.
CREATE ROLE pgauth_regress_svc IN ROLE pgauth_service;
SET ROLE pgauth_regress_svc;
SELECT auth_jwt_sign(jsonb_build_object('sub', :'uid', 'sid', :'sid1'), 'jwt');
RESET ROLE;
DROP ROLE pgauth_regress_svc;
SELECT auth_jwt_sign(jsonb_build_object('sub', :'uid', 'sid', :'sid1'), 'jwt');
SELECT name, purpose FROM pgauth.signing_keys WHERE name IN ('jwt', 't-es256') ORDER BY name;
-- A key made by auth_create_signing_key is a general-purpose key: its tokens never bind, even
-- when pgauth.jwt_key is pointed at it, and pgauth does not sign access tokens with it.
SET pgauth.jwt_key = 't-es256';
SELECT auth_set_session(auth_jwt_sign(jsonb_build_object('sub', :'uid', 'sid', :'sid1'), 't-es256'));
SELECT auth_create_user('tok-misconf', 'Tr0ub4dor&3 horse staple') IS NOT NULL AS created;
SELECT ok FROM auth_login('tok-misconf', 'Tr0ub4dor&3 horse staple');
RESET pgauth.jwt_key;
-- The access-token key's name is pgauth's: auth_create_signing_key refuses it.
SET pgauth.jwt_key = 'jwt-next';
SELECT auth_create_signing_key('jwt-next', 'HS256');
RESET pgauth.jwt_key;

-- Refresh: rotation; a second use of a used token revokes the whole chain.
SELECT access_token AS at2, refresh_token AS rt2 FROM auth_refresh(:'rt1') \gset
SELECT :'rt2' <> :'rt1' AS rotated;
BEGIN; SELECT auth_set_session(:'at2') = :'uid'::uuid AS refreshed_token_binds; COMMIT;
SELECT count(*) AS rows_on_reuse FROM auth_refresh(:'rt1');
SELECT count(*) AS chain_revoked FROM auth_refresh(:'rt2');
SELECT auth_set_session(:'at2');
SELECT event FROM pgauth.audit_log WHERE event IN ('refresh_token_reused', 'token_refreshed') ORDER BY id;
SELECT auth_refresh('pgr_short');
SELECT count(*) AS unknown_refresh FROM auth_refresh('pgr_' || repeat('A', 43));

-- Sign-out with the access token ends the session (and its refresh token).
SELECT access_token AS at3, refresh_token AS rt3 FROM auth_login('tok-user', 'Tr0ub4dor&3 horse staple') \gset
SELECT auth_revoke_session(:'at3');
SELECT auth_set_session(:'at3');
SELECT count(*) AS refresh_after_signout FROM auth_refresh(:'rt3');

-- Assurance levels: a permission that needs aal 2.
SELECT auth_create_role('approver') IS NOT NULL AS role_created;
SELECT auth_grant_permission('approver', 'pay.read');
SELECT auth_grant_permission('approver', 'pay.approve', 2);
SELECT auth_assign_role(:'uid', 'approver');
SELECT auth_user_has_permission(:'uid', 'pay.approve') AS at_aal1,
       auth_user_has_permission(:'uid', 'pay.approve', aal => 2) AS at_aal2;
SELECT access_token AS at4, refresh_token AS rt4 FROM auth_login('tok-user', 'Tr0ub4dor&3 horse staple') \gset
CREATE TEMP TABLE codes AS SELECT c FROM auth_recovery_codes(:'uid') c;
BEGIN;
SELECT auth_set_session(:'at4') IS NOT NULL AS bound;
SELECT auth_has_permission('pay.read') AS read_at_aal1, auth_has_permission('pay.approve') AS approve_at_aal1;
SAVEPOINT s;
SELECT auth_require_permission('pay.approve');
ROLLBACK TO s;
SELECT auth_step_up('wrong-code') AS wrong_code;
SELECT auth_step_up((SELECT c FROM codes ORDER BY c LIMIT 1)) AS stepped_up, auth_current_aal() AS aal;
SELECT auth_has_permission('pay.approve') AS approve_after_step_up;
COMMIT;
-- The level belongs to the session for pgauth.step_up_ttl: the same token binds at aal 2 in a
-- later transaction, and the next refreshed access token says so.
BEGIN; SELECT auth_set_session(:'at4') IS NOT NULL AS bound, auth_current_aal() AS aal_next_tx; COMMIT;
SELECT auth_jwt_verify(access_token)->>'aal' AS refreshed_aal FROM auth_refresh(:'rt4');
-- A recovery code works once.
BEGIN;
SELECT auth_set_session(:'at4') IS NOT NULL AS bound;
SELECT auth_step_up((SELECT c FROM codes ORDER BY c LIMIT 1)) AS reused_code;
COMMIT;
-- When pgauth.step_up_ttl has passed, the same token binds at aal 1 again.
UPDATE pgauth.sessions SET step_up_until = now() - interval '1 second'
 WHERE id = (auth_jwt_verify(:'at4')->>'sid')::uuid;
BEGIN; SELECT auth_set_session(:'at4') IS NOT NULL AS bound, auth_current_aal() AS aal_after_ttl; COMMIT;
-- Without a bound user there is nothing to step up.
SELECT auth_step_up('123456');
-- A service vouching for its own sign-in level.
GRANT pgauth_service TO pgauth_regress_app;
SET ROLE pgauth_regress_app;
BEGIN;
SELECT auth_bind_user(:'uid', 2) IS NOT NULL AS bound, auth_has_permission('pay.approve') AS service_aal2;
COMMIT;
SELECT auth_bind_user(:'uid', 4);
RESET ROLE;
SELECT event FROM pgauth.audit_log WHERE event LIKE 'step_up%' ORDER BY id;

-- Changing the password ends the user's other sessions.
SELECT access_token AS at5 FROM auth_login('tok-user', 'Tr0ub4dor&3 horse staple') \gset
SELECT auth_change_password(:'uid', 'Tr0ub4dor&3 horse staple', 'Quiet violet lantern 42 drift');
SELECT auth_set_session(:'at5');

-- Housekeeping.
SELECT auth_purge_expired('0 seconds') >= 0 AS purged;
SELECT count(*) AS revoked_sessions_left FROM pgauth.sessions WHERE revoked_at IS NOT NULL;

DROP OWNED BY pgauth_regress_app;
DROP ROLE pgauth_regress_app;
SET client_min_messages = warning;
DROP EXTENSION pgauth CASCADE;
RESET client_min_messages;
