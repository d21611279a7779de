-- Encryption and keys as a user sees them. The test cluster has pgauth.master_key_file set.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgauth;
RESET client_min_messages;

-- The key "default" is made by the first encryption.
SELECT count(*) AS keys_before FROM pgauth.keys;
SELECT auth_decrypt_text(auth_encrypt('4111 1111 1111 1111')) AS round_trip;
SELECT name, version, status FROM auth_key_status();

-- Envelope: format byte 1, 16-byte key id, 12-byte nonce, ciphertext, 16-byte tag.
WITH c AS (SELECT auth_encrypt('hello'::bytea) AS v)
SELECT get_byte(v, 0) AS format,
       substring(v from 2 for 16) = (SELECT uuid_send(id) FROM pgauth.keys WHERE name = 'default') AS names_its_key,
       length(v) - 45 AS plaintext_bytes
  FROM c;

-- Associated data binds a value to its row.
CREATE TABLE patients (id int PRIMARY KEY, ssn bytea);
INSERT INTO patients VALUES (1, auth_encrypt('123-45-6789', 'default', int4send(1))),
                            (2, auth_encrypt('987-65-4321', 'default', int4send(2)));
SELECT id, auth_decrypt_text(ssn, int4send(id)) AS ssn FROM patients ORDER BY id;
-- Moving a ciphertext to another row is detected:
UPDATE patients SET ssn = (SELECT ssn FROM patients WHERE id = 1) WHERE id = 2;
SELECT id, auth_decrypt_text(ssn, int4send(id)) AS ssn FROM patients ORDER BY id;

-- Tampering, truncation, unknown format: 22000 for authentication failures, 22023 for malformed.
\set VERBOSITY default
SELECT auth_decrypt(set_byte(ssn, 40, get_byte(ssn, 40) # 1), int4send(1)) FROM patients WHERE id = 1;
SELECT auth_decrypt(substring(ssn from 1 for 44)) FROM patients WHERE id = 1;
SELECT auth_decrypt(set_byte(ssn, 0, 9)) FROM patients WHERE id = 1;
SELECT auth_decrypt_text(auth_encrypt('\xff00'::bytea));

-- Rotation: new version active, old versions decrypt, auth_reencrypt moves values.
SELECT auth_rotate_key('default') IS NOT NULL AS rotated;
SELECT name, version, status FROM auth_key_status() ORDER BY version;
UPDATE patients SET ssn = auth_encrypt('123-45-6789', 'default', int4send(2)) WHERE id = 2;
SELECT id, auth_decrypt_text(ssn, int4send(id)) AS ssn,
       substring(ssn from 2 for 16) = (SELECT uuid_send(id) FROM pgauth.keys WHERE name = 'default' AND status = 'active') AS on_active_key
  FROM patients ORDER BY id;
UPDATE patients SET ssn = auth_reencrypt(ssn, int4send(id));
SELECT id, substring(ssn from 2 for 16) = (SELECT uuid_send(id) FROM pgauth.keys WHERE name = 'default' AND status = 'active') AS on_active_key
  FROM patients ORDER BY id;

-- Blind index: equality search over an encrypted column through an ordinary index.
CREATE TABLE customers (id serial PRIMARY KEY, email bytea, email_bidx bytea);
CREATE INDEX ON customers (email_bidx);
INSERT INTO customers (email, email_bidx)
SELECT auth_encrypt(e), auth_blind_index(e) FROM (VALUES ('ann@example.com'), ('bob@example.com')) AS t(e);
SELECT auth_decrypt_text(email) AS found FROM customers WHERE email_bidx = auth_blind_index('bob@example.com');
SELECT length(auth_blind_index('x')) AS blind_index_bytes, length(auth_hmac('x', 'default')) AS hmac_bytes;

-- Digests.
SELECT encode(auth_digest('abc'), 'hex') AS sha3_512_abc;
SELECT auth_digest('abc'::bytea) = auth_digest('abc') AS text_and_bytea_agree;

-- Per-tenant keys are just more names; unknown names are errors.
SELECT auth_create_key('tenant:42') IS NOT NULL AS created;
SELECT auth_decrypt_text(auth_encrypt('tenant data', 'tenant:42')) AS tenant_round_trip;
SELECT auth_create_key('tenant:42');
SELECT auth_encrypt('x', 'tenant:99');

-- Only granted roles may use a key.
CREATE ROLE pgauth_regress_reader;
CREATE ROLE pgauth_regress_stranger;
GRANT SELECT ON patients TO pgauth_regress_reader, pgauth_regress_stranger;
SELECT auth_grant_key_usage('default', 'pgauth_regress_reader');
SET ROLE pgauth_regress_reader;
SELECT id, auth_decrypt_text(ssn, int4send(id)) AS ssn FROM patients ORDER BY id;
SELECT auth_encrypt('x', 'tenant:42');
SELECT auth_create_key('mine');
SELECT * FROM pgauth.keys;
RESET ROLE;
SET ROLE pgauth_regress_stranger;
SELECT auth_decrypt_text(ssn, int4send(id)) FROM patients WHERE id = 1;
RESET ROLE;

-- A grant belongs to the role, not to its name: a role dropped and created again under the same
-- name has no usage until it is granted again.
CREATE ROLE pgauth_regress_reborn;
SELECT auth_grant_key_usage('tenant:42', 'pgauth_regress_reborn');
SET ROLE pgauth_regress_reborn;
SELECT auth_decrypt_text(auth_encrypt('reborn', 'tenant:42')) AS granted_role_uses_key;
RESET ROLE;
DROP ROLE pgauth_regress_reborn;
CREATE ROLE pgauth_regress_reborn;
SET ROLE pgauth_regress_reborn;
SELECT auth_encrypt('x', 'tenant:42');
RESET ROLE;
SELECT auth_grant_key_usage('tenant:42', 'pgauth_regress_reborn');
SET ROLE pgauth_regress_reborn;
SELECT auth_encrypt('x', 'tenant:42') IS NOT NULL AS granted_again;
RESET ROLE;
SELECT grantee, grantee_oid = 'pgauth_regress_reborn'::regrole::oid AS is_the_new_role
  FROM pgauth.key_grants WHERE key_name = 'tenant:42' AND grantee = 'pgauth_regress_reborn';
SELECT auth_revoke_key_usage('tenant:42', 'pgauth_regress_reborn');
DROP ROLE pgauth_regress_reborn;
-- Imported (like restored) grants are resolved by role name in this cluster; a grant to a role
-- that does not exist here is skipped with a warning.
SELECT auth_import_keys('{"format": "pgauth-keys/1", "keys": [], "grants": [
    {"key_name": "tenant:42", "grantee": "pgauth_regress_nobody"},
    {"key_name": "tenant:42", "grantee": "pgauth_regress_reader"}]}') AS keys_added;
SELECT grantee, grantee_oid = 'pgauth_regress_reader'::regrole::oid AS resolved
  FROM pgauth.key_grants WHERE key_name = 'tenant:42' AND grantee LIKE 'pgauth_regress_%';
SELECT auth_revoke_key_usage('tenant:42', 'pgauth_regress_reader');

-- Export holds only wrapped keys.
SELECT jsonb_array_length(e->'keys') AS exported_keys,
       bool_and(length(decode(k->>'wrapped_key', 'base64')) = 60) AS only_wrapped
  FROM (SELECT auth_export_keys() AS e) x, jsonb_array_elements(e->'keys') k GROUP BY e;

-- Without a master key, key operations fail with 55000 and a hint; hashing still works.
SET pgauth.master_key_file = '';
SELECT auth_encrypt('x');
SELECT auth_verify('pw', auth_hash_password('pw')) AS hashing_still_works;
SET pgauth.master_key_file = '/nonexistent/pgauth.key';
SELECT auth_encrypt('x');
-- A role allowed to use the key gets the error without the file's path (the server log has
-- it); a role without usage is refused before the master key is read at all.
SET ROLE pgauth_regress_reader;
SELECT auth_encrypt('x');
RESET ROLE;
SET ROLE pgauth_regress_stranger;
SELECT auth_encrypt('x');
RESET ROLE;
RESET pgauth.master_key_file;
SELECT auth_decrypt_text(auth_encrypt('back')) AS works_again;

-- Unprivileged roles cannot see where the master key is.
SET ROLE pgauth_regress_stranger;
-- The SQLSTATE only: the wording of this error changed in PostgreSQL 16.
\set VERBOSITY sqlstate
SHOW pgauth.master_key_file;
\set VERBOSITY default
RESET ROLE;

-- Parallel query gives the same answers (keys are read, never written, in parallel mode).
-- force_parallel_mode is named debug_parallel_query from PostgreSQL 16 on.
SELECT CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END AS parallel_mode_setting \gset
SET :parallel_mode_setting = on;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SELECT id, auth_decrypt_text(ssn, int4send(id)) AS ssn FROM patients ORDER BY id;
SELECT auth_decrypt_text(email) AS found FROM customers WHERE email_bidx = auth_blind_index('ann@example.com');
SELECT count(*) AS encrypted_in_parallel FROM (SELECT auth_encrypt(email) FROM customers) s;
RESET :parallel_mode_setting;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;

DROP TABLE patients, customers;
DROP ROLE pgauth_regress_reader;
DROP ROLE pgauth_regress_stranger;
