-- pgauth quick start: what the extension does, in a few statements.
-- Run by `make install` in the database pgauth_demo (psql -f examples/quickstart.sql).
\pset footer off
\echo
\echo '== 1. Hash a password (Argon2id, OWASP parameters, random salt) =='
SELECT auth_hash_password('correct horse battery staple') AS argon2id_hash;

\echo '== 2. Verify it (constant-time comparison) =='
WITH h AS (SELECT auth_hash_password('correct horse battery staple') AS hash)
SELECT auth_verify('correct horse battery staple', hash) AS right_password,
       auth_verify('Correct horse battery staple', hash) AS wrong_password
  FROM h;

\echo '== 3. Verify hashes other systems already store, and see which need an upgrade =='
SELECT scheme,
       auth_verify('hunter2', hash) AS verifies,
       auth_needs_rehash(hash)      AS needs_rehash
  FROM (VALUES
    ('argon2id (libsodium)',        '$argon2id$v=19$m=65536,t=2,p=1$KfUC3WO5pL+snn+b0Vuqsw$NUgSpiaNDq2PO692vBhgfg+aMH6IU10IpITqmg53bHk'),
    ('bcrypt (pgcrypto crypt())',   '$2a$06$ZzjP0Icri5lPJGa8EmvywulUeD9Vw8ZqkwtDbZidtpa4qXYmATzkG'),
    ('PBKDF2 (Django)',             'pbkdf2_sha256$1000$oeUZjI6v6PtU$3HbAFUAI743RXBdjf7gLddJWCgi5WKVD7h23ypHVFVQ='),
    ('sha512-crypt (glibc)',        '$6$rounds=5000$explicitdefault$RSTwNECPzdgZ4HOlyoY6SU3bq4Al7kCTYtIuigWdPa40DSBB1LNgF138ud.hf1AAqrd5rwfEOIX9dbwE1wa0g/'),
    ('md5-crypt (openssl passwd)',  '$1$bNiu9n.L$ZWtStH7mpZWMEwZVhKveL/'),
    ('argon2id (pgauth)',           auth_hash_password('hunter2'))
  ) AS stored(scheme, hash);

\echo '== 4. Judge a password before accepting it =='
SELECT pw AS candidate, auth_password_problems(pw, 'alice') AS problems
  FROM (VALUES ('password'), ('alice1990'), ('1234abcd'), ('Tr4vel-Quartz-Mango-71')) AS t(pw);

\echo '== 5. Policies are rows a pgauth_admin can edit =='
SELECT name, min_length, require_special, min_strength FROM pgauth.password_policies ORDER BY name;

\echo '== 6. Encrypt a column; the master key never appears in SQL =='
SET client_min_messages = warning;
DROP TABLE IF EXISTS patients, docs;
DROP ROLE IF EXISTS pgauth_demo_web;
RESET client_min_messages;
CREATE TABLE patients (id int PRIMARY KEY, name text, ssn bytea);
INSERT INTO patients VALUES
  (1, 'Ada',   auth_encrypt('123-45-6789', 'default', int4send(1))),   -- bound to row 1
  (2, 'Grace', auth_encrypt('987-65-4321', 'default', int4send(2)));
SELECT id, name, length(ssn) AS stored_bytes, auth_decrypt_text(ssn, int4send(id)) AS ssn FROM patients;
SELECT name, version, status FROM auth_key_status();

\echo '== 7. Rotate the key; old values still decrypt and can be moved to the new version =='
SELECT auth_rotate_key('default') IS NOT NULL AS rotated;
UPDATE patients SET ssn = auth_reencrypt(ssn, int4send(id));
SELECT id, auth_decrypt_text(ssn, int4send(id)) AS ssn FROM patients;

\echo '== 8. Roles, scoped permissions and row-level security in one call =='
SELECT auth_create_role('reader') IS NOT NULL AS role_created;
SELECT auth_grant_permission('reader', 'doc.read');
SELECT auth_create_user('alice', 'Tr4vel-Quartz-Mango-71') AS alice_id \gset
SELECT auth_assign_role(:'alice_id', 'reader', scope => '1');
CREATE TABLE docs (id serial PRIMARY KEY, tenant_id bigint, title text);
INSERT INTO docs (tenant_id, title) VALUES (1, 'Q3 plan'), (1, 'Roadmap'), (2, 'Other tenant''s secret');
SELECT auth_rls_enable('docs', 'doc.read', 'tenant_id');
CREATE ROLE pgauth_demo_web;
GRANT SELECT ON docs TO pgauth_demo_web;
GRANT pgauth_service TO pgauth_demo_web;
SET ROLE pgauth_demo_web;
SELECT count(*) AS visible_without_a_user FROM docs;
BEGIN;
SELECT auth_bind_user(:'alice_id') IS NOT NULL AS alice_bound;
SELECT title AS visible_to_alice FROM docs ORDER BY id;
COMMIT;
RESET ROLE;

\echo '== 9. Every security event is in the tamper-evident audit log =='
SELECT event, row_key->>'subject' AS subject FROM pgauth.audit_log ORDER BY id;
SELECT ok, checked, first_bad_id FROM auth_audit_verify();
DROP TABLE docs, patients;
DROP ROLE pgauth_demo_web;
