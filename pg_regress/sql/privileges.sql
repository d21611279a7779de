-- What an application role may and may not do.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgauth;
RESET client_min_messages;
CREATE ROLE pgauth_regress_app LOGIN;
CREATE ROLE pgauth_regress_dba LOGIN IN ROLE pgauth_admin;

SET ROLE pgauth_regress_app;
SELECT auth_verify('hunter2', '$2a$06$ZzjP0Icri5lPJGa8EmvywulUeD9Vw8ZqkwtDbZidtpa4qXYmATzkG') AS app_can_verify;
SELECT auth_hash_password('x') LIKE '$argon2id$%' AS app_can_hash;
SELECT auth_password_problems('password') <> '{}' AS app_can_check;
SELECT * FROM pgauth.password_policies;
UPDATE pgauth.password_policies SET min_length = 4;
SET pgauth.argon2_memory_kib = 65536;
SET pgauth.argon2_iterations = 1;
-- A same-named table earlier on the caller's search_path does not hijack the SECURITY DEFINER check.
CREATE TEMP TABLE password_policies (name text, min_length int);
INSERT INTO password_policies VALUES ('default', 4);
SET search_path = pg_temp, public;
SELECT auth_password_problems('short') AS still_uses_pgauth_table;
RESET search_path;
DROP TABLE pg_temp.password_policies;
RESET ROLE;

SET ROLE pgauth_regress_dba;
UPDATE pgauth.password_policies SET min_length = 9 WHERE name = 'default';
SELECT min_length FROM pgauth.password_policies WHERE name = 'default';
UPDATE pgauth.password_policies SET min_length = 8 WHERE name = 'default';
RESET ROLE;

-- Security-definer functions pin their search_path.
SELECT p.proname, p.prosecdef, p.proconfig
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pgauth'
 WHERE p.prosecdef ORDER BY 1;
-- Volatility and parallel markings are part of the contract.
SELECT p.proname, p.provolatile, p.proparallel, p.proisstrict
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pgauth'
 WHERE p.proname LIKE 'auth\_%' ORDER BY 1;

-- CREATE/ALTER ROLE passwords (pgauth is in shared_preload_libraries on the test cluster).
SET pgauth.check_role_passwords = on;
CREATE ROLE pgauth_regress_weak PASSWORD 'password';
CREATE ROLE pgauth_regress_weak PASSWORD 'pgauth_regress_weak2024';
CREATE ROLE pgauth_regress_good PASSWORD 'xT7#qLm9!vRw2Zp';
ALTER ROLE pgauth_regress_good PASSWORD '12345678';
-- Pre-hashed (SCRAM) passwords cannot be checked and are let through.
ALTER ROLE pgauth_regress_good PASSWORD 'SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$YmZmNjQ5ZWE1ODY4ZDQ3NjQ0NjBhYjhkY2Q2NDc0ZDE=:YmZmNjQ5ZWE1ODY4ZDQ3NjQ0NjBhYjhkY2Q2NDc0ZDE=';
SET pgauth.check_role_passwords = off;
CREATE ROLE pgauth_regress_weak PASSWORD 'password';
RESET pgauth.check_role_passwords;

DROP ROLE pgauth_regress_weak;
DROP ROLE pgauth_regress_good;
DROP ROLE pgauth_regress_app;
DROP ROLE pgauth_regress_dba;
