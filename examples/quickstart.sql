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
