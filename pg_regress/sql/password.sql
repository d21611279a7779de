-- Password hashing and verification as a user sees it in psql.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgauth;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
RESET client_min_messages;

-- New hashes: Argon2id PHC strings with OWASP parameters, 16-byte salt, 32-byte hash.
SELECT auth_hash_password('correct horse battery staple')
       ~ '^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$' AS phc_format;
SELECT count(DISTINCT auth_hash_password('same')) AS distinct_salts FROM generate_series(1, 3);
WITH h AS (SELECT auth_hash_password('correct horse battery staple') AS hash)
SELECT auth_verify('correct horse battery staple', hash) AS right_password,
       auth_verify('correct horse battery stapl', hash) AS wrong_password,
       auth_needs_rehash(hash) AS needs_rehash
  FROM h;

-- Hashes written by pgcrypto verify, and are flagged for an upgrade.
SELECT auth_verify('hunter2', crypt('hunter2', gen_salt('bf', 6))) AS bcrypt_2a,
       auth_verify('hunter3', crypt('hunter2', gen_salt('bf', 6))) AS bcrypt_wrong,
       auth_verify('hunter2', crypt('hunter2', gen_salt('md5'))) AS md5_crypt,
       auth_needs_rehash(crypt('hunter2', gen_salt('bf', 6))) AS bcrypt_needs_rehash;

-- Fixed hashes from other tools (more in tests/fixtures/hashes.tsv).
SELECT scheme, auth_verify('hunter2', hash) AS verifies, auth_needs_rehash(hash) AS needs_rehash
  FROM (VALUES
    ('libsodium argon2id', '$argon2id$v=19$m=65536,t=2,p=1$KfUC3WO5pL+snn+b0Vuqsw$NUgSpiaNDq2PO692vBhgfg+aMH6IU10IpITqmg53bHk'),
    ('argon2 CLI argon2d', '$argon2d$v=19$m=8192,t=1,p=4$NzY3ZjQ5ODkyYzZlMzM0Yg$eIWQ58TsZdoZOqY7MxeetPR7ubMmW3R4'),
    ('passlib $2y$',       '$2y$05$AvBHbYodV01kYele0MVO5ePFEcvhEQ675R9HGNzcpPawSvYe1Tdti'),
    ('passlib pbkdf2',     '$pbkdf2-sha512$1000$AqD0fo9xbo2Rsra21lorRQ$71lZMDLTaYjVmXAS3gLeiw2N7d7pluC5XfKwb7mvvzR1u7Rdnc70mqYfAzK.dAm0xgHoYh01Qc4LY9TqFPB96w'),
    ('django pbkdf2',      'pbkdf2_sha256$1000$oeUZjI6v6PtU$3HbAFUAI743RXBdjf7gLddJWCgi5WKVD7h23ypHVFVQ='),
    ('glibc $5$',          '$5$rounds=10000$saltsaltsaltsalt$nShiNoi1qraEVOc1U8qsSKXr.ZeLgUnc/ISx.KQkAG2'),
    ('openssl $6$',        '$6$9.i49dX39e9mqQyY$Q1t8cCBAZBzyS.uuZJsqf.zjc3R8cWVpmbD.3JB71zdgPcrMVl6dY52fWcKwIy96URUCDm1e8zS3LVxUhqrzs1')
  ) AS t(scheme, hash);

-- NULL in, NULL out.
SELECT auth_verify(NULL, 'x') IS NULL AS a, auth_verify('x', NULL) IS NULL AS b,
       auth_hash_password(NULL) IS NULL AS c, auth_needs_rehash(NULL) IS NULL AS d;

-- Malformed and hostile hashes: ERROR 22023, quickly, never computed.
\set VERBOSITY default
SELECT auth_verify('pw', 'plaintext');
SELECT auth_verify('pw', '$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc');
SELECT auth_verify('pw', '$argon2id$v=19$m=65536,t=4294967295,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc');
SELECT auth_verify('pw', '$argon2id$v=19$m=65536,t=2,p=1$c29t!!!$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc');
SELECT auth_verify('pw', '$2b$31$KOEPW6zqvF2xZBsBvBO9UO7nAtMuwWmEBmKUwqPyHvhyuIMO9Umc2');
SELECT auth_verify('pw', '$2b$10$tooshort');
SELECT auth_verify('pw', '$pbkdf2-sha256$10000000000$c2FsdA$AAAA');
SELECT auth_verify('pw', 'pbkdf2_sha256$many$salt$AAAA');
SELECT auth_verify('pw', '$6$rounds=999999999$salt$Q1t8cCBAZBzyS.uuZJsqf.zjc3R8cWVpmbD.3JB71zdgPcrMVl6dY52fWcKwIy96URUCDm1e8zS3LVxUhqrzs1');
SELECT auth_needs_rehash('{SSHA}abc');
SELECT auth_hash_password(repeat('x', 1025));
SELECT auth_verify(repeat('x', 1025), auth_hash_password('x'));
-- The SQLSTATE itself:
DO $$
BEGIN
    PERFORM auth_verify('pw', '$9$nope');
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE NOTICE 'caught invalid_parameter_value (%)', SQLSTATE;
END
$$;

-- Settings: validated when set, superuser-only, prefix reserved.
-- PostgreSQL 17 added units to the range in this message: the SQLSTATE only.
\set VERBOSITY sqlstate
SET pgauth.argon2_memory_kib = 4096;
SET pgauth.argon2_memory_kib = 4194304;
\set VERBOSITY default
SET pgauth.argon2_iterations = 0;
SET pgauth.argon2_iterations = 1000;
SET pgauth.argon2_parallelism = 64;
SET pgauth.argon2_memroy_kib = 8192;
SET pgauth.argon2_memory_kib = '32MB';
SET pgauth.argon2_iterations = 3;
SELECT auth_hash_password('x') LIKE '$argon2id$v=19$m=32768,t=3,p=1$%' AS uses_settings;
SELECT auth_needs_rehash(crypt('x', gen_salt('bf', 4))) AS legacy,
       auth_needs_rehash('$argon2id$v=19$m=19456,t=2,p=1$KfUC3WO5pL+snn+b0Vuqsw$NUgSpiaNDq2PO692vBhgfg+aMH6IU10IpITqmg53bHk') AS weaker_than_settings;
RESET pgauth.argon2_memory_kib;
RESET pgauth.argon2_iterations;
