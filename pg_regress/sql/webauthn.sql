-- Passkeys (WebAuthn) through SQL: settings, the options the browser gets, bad input, a full
-- registration and sign-in with a fixed vector (tests/fixtures/webauthn/es256_none.json, made by
-- tests/webauthn/soft_authenticator.py), replay and counter rollback, privileges, management.
-- The end-to-end flows with a live software authenticator are in tests/tests/webauthn.rs.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgauth;
RESET client_min_messages;
CREATE ROLE pgauth_regress_wa_app LOGIN;
SET pgauth.login_attempts_per_minute = 1000;
CREATE FUNCTION pg_temp.sqlstate_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END
$$;

-- Settings: defaults, and values refused when they are set (22023).
SHOW pgauth.webauthn_user_verification;
SHOW pgauth.webauthn_challenge_ttl;
SET pgauth.webauthn_rp_id = 'https://example.com';
SET pgauth.webauthn_rp_id = 'Example.com';
SET pgauth.webauthn_origins = 'http://example.com';
SET pgauth.webauthn_origins = 'https://example.com/login';
SET pgauth.webauthn_user_verification = 'sometimes';
-- PostgreSQL 17 added units to the range in this message: the SQLSTATE only.
\set VERBOSITY sqlstate
SET pgauth.webauthn_challenge_ttl = 0;
\set VERBOSITY default
-- Without an rp id there are no passkeys (55000).
SELECT auth_webauthn_login_begin();
SET pgauth.webauthn_rp_id = 'example.com';
SET pgauth.webauthn_origins = 'https://example.com, https://login.example.com:8443';
SET pgauth.webauthn_rp_name = 'Example Inc.';
-- Application roles cannot change them.
SET ROLE pgauth_regress_wa_app;
SET pgauth.webauthn_origins = 'https://evil.example';
SET pgauth.webauthn_user_verification = 'discouraged';
RESET ROLE;

SELECT auth_create_user('wa_alice') AS alice \gset
SELECT auth_create_user('wa_bob') AS bob \gset

-- Registration options, as navigator.credentials.create wants them (binary values base64url).
SELECT auth_webauthn_register_begin(:'alice') AS opts \gset
SELECT length(:'opts'::jsonb->>'challenge') AS challenge_chars,
       :'opts'::jsonb->'rp' AS rp,
       :'opts'::jsonb->'user'->>'name' AS user_name,
       decode(translate(:'opts'::jsonb->'user'->>'id', '-_', '+/') || '=', 'base64')
         = (SELECT handle FROM pgauth.webauthn_user_handles WHERE user_id = :'alice') AS user_handle_stored,
       :'opts'::jsonb->'pubKeyCredParams' AS params,
       :'opts'::jsonb->'excludeCredentials' AS exclude,
       :'opts'::jsonb->'authenticatorSelection' AS selection,
       :'opts'::jsonb->>'attestation' AS attestation,
       :'opts'::jsonb->'timeout' AS timeout;
SELECT ceremony, user_id = :'alice' AS for_alice, expires_at - created_at AS lifetime
  FROM pgauth.webauthn_challenges;

-- Malformed responses: 22023, nothing stored.
SELECT auth_webauthn_register_finish(:'alice', '{}');
SELECT auth_webauthn_register_finish(:'alice', '[1, 2]');
SELECT auth_webauthn_register_finish(:'alice', '{"type": "public-key", "id": "AA", "rawId": "AB", "response": {}}');
SELECT auth_webauthn_register_finish(:'alice', '{"type": "public-key", "id": "AA", "rawId": "AA", "response": {"clientDataJSON": "***", "attestationObject": ""}}');
SELECT auth_webauthn_register_finish(:'alice', '{"type": "public-key", "id": "AA", "rawId": "AA", "response": {"clientDataJSON": "e30", "attestationObject": "oA"}}');
SELECT auth_webauthn_register_finish(NULL, '{}') IS NULL AS strict_like;
SELECT what, pg_temp.sqlstate_of(s) AS sqlstate FROM (VALUES
    ('register_finish: not a credential', 'SELECT auth_webauthn_register_finish(' || quote_literal(:'alice') || ', ''{"type": "public-key"}'')'),
    ('login_finish: not a credential', 'SELECT auth_webauthn_login_finish(''[]'')'),
    ('revoke: not base64url', 'SELECT auth_webauthn_revoke(''not base64url!'')'),
    ('origins: not an origin', 'SET pgauth.webauthn_origins = ''ftp://example.com''')) t(what, s);

-- The fixed vector: its challenge is planted as if register_begin had issued it.
\set reg '{"id":"mVIR3g3s0pS7bZyEsVl5z5AYCi-XMShEIjSk9Fbkdm0","rawId":"mVIR3g3s0pS7bZyEsVl5z5AYCi-XMShEIjSk9Fbkdm0","type":"public-key","response":{"clientDataJSON":"eyJ0eXBlIjoid2ViYXV0aG4uY3JlYXRlIiwiY2hhbGxlbmdlIjoibmZsOWlfQlhaYldZM2JjT0UxRG03WXhHSm5FSlZIcXVuS1JlSkVQR2Z2QSIsIm9yaWdpbiI6Imh0dHBzOi8vZXhhbXBsZS5jb20iLCJjcm9zc09yaWdpbiI6ZmFsc2V9","attestationObject":"o2NmbXRkbm9uZWdhdHRTdG10oGhhdXRoRGF0YViko3mm9u6vuaVeN4wRgDTidR5oL6ufLTCrE9ISVYbOGUdFAAAAAHBnYXV0aCBzb2Z0IGF1dGgAIJlSEd4N7NKUu22chLFZec-QGAovlzEoRCI0pPRW5HZtpQECAyYgASFYIFO9amSMnGbwVXMwbMttAUPd5apyFmOTmV9rhh6iSQI0Ilggi65n1UEHZHZOYpKV33fM0jo3ya6b1669Y2yI8pgRRmg","transports":["internal","hybrid"]},"authenticatorAttachment":"platform","clientExtensionResults":{}}'
\set assertion '{"id":"mVIR3g3s0pS7bZyEsVl5z5AYCi-XMShEIjSk9Fbkdm0","rawId":"mVIR3g3s0pS7bZyEsVl5z5AYCi-XMShEIjSk9Fbkdm0","type":"public-key","response":{"clientDataJSON":"eyJ0eXBlIjoid2ViYXV0aG4uZ2V0IiwiY2hhbGxlbmdlIjoic3ByUGxESG9HVDhFeXUwb09fVmJoN2FOWThQYjA2TDRZS2NWS2REcWM1VSIsIm9yaWdpbiI6Imh0dHBzOi8vZXhhbXBsZS5jb20iLCJjcm9zc09yaWdpbiI6ZmFsc2V9","authenticatorData":"o3mm9u6vuaVeN4wRgDTidR5oL6ufLTCrE9ISVYbOGUcFAAAABw","signature":"MEYCIQCxD6HLGKYZNOYLRPwJDxmNxFZsl7PTi25s-jpEr2axJwIhANmwgiAO1Xo53aMlGpnSx-mfJVMDiSca3Yki1R-bIvAH","userHandle":"5Kq2z878vb35tv2KtSG86g"},"authenticatorAttachment":"platform","clientExtensionResults":{}}'
INSERT INTO pgauth.webauthn_challenges (challenge, ceremony, user_id, expires_at)
VALUES (decode(translate('nfl9i_BXZbWY3bcOE1Dm7YxGJnEJVHqunKReJEPGfvA', '-_', '+/') || '=', 'base64'), 'register', :'alice', now() + interval '5 minutes');
-- The vector's authenticator was given another user handle than alice's random one.
UPDATE pgauth.webauthn_user_handles SET handle = decode(translate('5Kq2z878vb35tv2KtSG86g', '-_', '+/') || '==', 'base64')
 WHERE user_id = :'alice';
-- For another user than the one it was issued for: refused.
SELECT auth_webauthn_register_finish(:'bob', :'reg');
SELECT auth_webauthn_register_finish(:'alice', :'reg', 'YubiKey') IS NOT NULL AS registered;
-- The challenge was used up: the same response again is refused.
SELECT auth_webauthn_register_finish(:'alice', :'reg');
SELECT name, algorithm, transports, backup_eligible, backed_up, sign_count, last_used_at IS NULL AS unused,
       credential_id = :'reg'::jsonb->>'id' AS listed
  FROM auth_webauthn_credentials(:'alice');
SELECT attestation_format, user_verified, octet_length(public_key) AS key_bytes FROM pgauth.webauthn_credentials;
-- Now excluded from further registrations, and offered at sign-in.
SELECT jsonb_array_length(auth_webauthn_register_begin(:'alice')->'excludeCredentials') AS excluded;
SELECT o->'allowCredentials'->0->>'id' = :'reg'::jsonb->>'id' AS allowed, o->>'rpId' AS rp_id,
       o->>'userVerification' AS uv
  FROM auth_webauthn_login_begin('WA_ALICE') o;
-- Discoverable credentials: no list. Names without passkeys, known or not, get the same
-- shape: one stand-in id, the same each time.
SELECT auth_webauthn_login_begin()->'allowCredentials' AS discoverable;
SELECT jsonb_array_length(a->'allowCredentials') AS n, length(a->'allowCredentials'->0->>'id') AS id_chars,
       a->'allowCredentials'->0->'transports' AS transports
  FROM (VALUES (auth_webauthn_login_begin('wa_bob')), (auth_webauthn_login_begin('wa_nobody'))) t(a);
SELECT (auth_webauthn_login_begin('wa_nobody')->'allowCredentials')
     = (auth_webauthn_login_begin('WA_NOBODY')->'allowCredentials') AS stable_decoy;

-- Sign-in with the vector's assertion (counter 7).
DELETE FROM pgauth.webauthn_challenges;
INSERT INTO pgauth.webauthn_challenges (challenge, ceremony, user_id, discoverable, expires_at)
VALUES (decode(translate('sprPlDHoGT8Eyu0oO_Vbh7aNY8Pb06L4YKcVKdDqc5U', '-_', '+/') || '=', 'base64'), 'login', NULL, true, now() + interval '5 minutes');
SELECT ok, user_id = :'alice' AS is_alice, reason, access_token IS NOT NULL AS has_token
  FROM auth_webauthn_login_finish(:'assertion', '192.0.2.10');
SELECT sign_count, last_used_at IS NOT NULL AS used FROM auth_webauthn_credentials(:'alice');
-- Replayed: the challenge is gone.
SELECT ok, user_id, reason, access_token FROM auth_webauthn_login_finish(:'assertion', '192.0.2.10');
-- The same challenge issued again: a valid signature, but the counter did not increase.
INSERT INTO pgauth.webauthn_challenges (challenge, ceremony, user_id, discoverable, expires_at)
VALUES (decode(translate('sprPlDHoGT8Eyu0oO_Vbh7aNY8Pb06L4YKcVKdDqc5U', '-_', '+/') || '=', 'base64'), 'login', NULL, true, now() + interval '5 minutes');
SELECT ok, reason FROM auth_webauthn_login_finish(:'assertion', '192.0.2.10');
-- Expired.
UPDATE pgauth.webauthn_credentials SET sign_count = 0;
INSERT INTO pgauth.webauthn_challenges (challenge, ceremony, user_id, discoverable, expires_at)
VALUES (decode(translate('sprPlDHoGT8Eyu0oO_Vbh7aNY8Pb06L4YKcVKdDqc5U', '-_', '+/') || '=', 'base64'), 'login', NULL, true, now() - interval '1 second');
SELECT ok, reason FROM auth_webauthn_login_finish(:'assertion', '192.0.2.10');
-- Issued for bob.
INSERT INTO pgauth.webauthn_challenges (challenge, ceremony, user_id, discoverable, expires_at)
VALUES (decode(translate('sprPlDHoGT8Eyu0oO_Vbh7aNY8Pb06L4YKcVKdDqc5U', '-_', '+/') || '=', 'base64'), 'login', :'bob', false, now() + interval '5 minutes');
SELECT ok, reason FROM auth_webauthn_login_finish(:'assertion', '192.0.2.10');
-- A response whose inner bytes are garbage is a failed sign-in, not an error ...
SELECT ok, reason FROM auth_webauthn_login_finish(jsonb_set(:'assertion'::jsonb, '{response,clientDataJSON}', '"e30"'));
-- ... but something that is not a credential at all is 22023.
SELECT * FROM auth_webauthn_login_finish(NULL);
SELECT * FROM auth_webauthn_login_finish('{"type": "public-key"}');
SELECT * FROM auth_webauthn_login_finish(jsonb_set(:'assertion'::jsonb, '{response,signature}', '"%%"'));
SELECT event, new_values->>'reason' AS reason, new_values->>'problem' AS problem
  FROM pgauth.audit_log WHERE event LIKE 'webauthn%' ORDER BY id;
SELECT new_values->>'stored_count' AS stored, new_values->>'received_count' AS received
  FROM pgauth.audit_log WHERE event = 'webauthn_counter_rollback';
-- Passkey failures have their own counter (wrong passwords do not lock passkeys out).
SELECT kind, failed_count FROM pgauth.attempt_counters() WHERE user_id = :'alice' ORDER BY kind;

-- Privileges: an application role may sign in, but manages passkeys only for the user bound
-- to its transaction.
SELECT auth_create_session(:'alice') AS alice_token \gset
SET ROLE pgauth_regress_wa_app;
SELECT jsonb_typeof(auth_webauthn_login_begin('wa_alice')) AS app_can_begin_login;
SELECT auth_webauthn_register_begin(:'alice');
SELECT * FROM auth_webauthn_credentials(:'alice');
SELECT auth_webauthn_revoke(:'reg'::jsonb->>'id');
SELECT * FROM pgauth.webauthn_credentials;
SELECT * FROM pgauth.webauthn_challenges;
BEGIN;
SELECT auth_set_session(:'alice_token') = :'alice' AS bound;
SELECT count(*) AS own_passkeys FROM auth_webauthn_credentials(:'alice');
SELECT auth_webauthn_rename(:'reg'::jsonb->>'id', 'Work key') AS renamed;
SELECT auth_webauthn_register_begin(:'bob');
ROLLBACK;
-- A session at aal 1 (a password sign-in, auth_create_session) of a user who has a passkey
-- may not add or remove passkeys: that needs a step-up first (42501).
BEGIN;
SELECT auth_set_session(:'alice_token') = :'alice' AS bound, auth_current_aal() AS aal;
SELECT auth_webauthn_register_begin(:'alice');
ROLLBACK;
BEGIN;
SELECT auth_set_session(:'alice_token') = :'alice' AS bound;
SELECT auth_webauthn_revoke(:'reg'::jsonb->>'id');
ROLLBACK;
RESET ROLE;

-- Management: rename, revoke, unknown ids, bad names.
SELECT auth_webauthn_rename(:'reg'::jsonb->>'id', 'Work key') AS renamed;
SELECT auth_webauthn_rename(:'reg'::jsonb->>'id', '');
SELECT auth_webauthn_rename('***', 'x');
SELECT name FROM auth_webauthn_credentials(:'alice');
SELECT auth_webauthn_revoke(:'reg'::jsonb->>'id') AS revoked, auth_webauthn_revoke(:'reg'::jsonb->>'id') AS again;
SELECT count(*) AS left_over FROM auth_webauthn_credentials(:'alice');
SELECT event FROM pgauth.audit_log WHERE event IN ('webauthn_renamed', 'webauthn_revoked') ORDER BY id;

-- Sign-in challenges per client address are bounded: anyone may ask for them.
SET pgauth.webauthn_pending_challenges = 3;
DELETE FROM pgauth.webauthn_challenges;
SELECT count(auth_webauthn_login_begin(NULL, '203.0.113.9')) AS three_pending FROM generate_series(1, 3);
SELECT auth_webauthn_login_begin(NULL, '203.0.113.9');
SELECT count(auth_webauthn_login_begin('wa_alice', '203.0.113.10')) AS other_address_unaffected;
-- An IPv6 client counts by its /64: the fourth address of one /64 is refused.
SELECT count(auth_webauthn_login_begin(NULL, ('2001:db8::' || g)::inet)) FROM generate_series(1, 4) g;
RESET pgauth.webauthn_pending_challenges;

DROP ROLE pgauth_regress_wa_app;
SET client_min_messages = warning;
DROP EXTENSION pgauth CASCADE;
RESET client_min_messages;
