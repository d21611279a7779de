-- Password policy: every problem, in plain words, never quoting the password.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgauth;
RESET client_min_messages;

SELECT pw, auth_password_problems(pw) AS problems
  FROM (VALUES ('short'), ('password'), ('P@ssw0rd!'), ('aaaaaaaaaa'), ('1234abcd'), ('qwertyuiop'),
               ('monkey123!'), ('a b c d e f g'), ('xT7#qLm9!vRw2Zp'), ('correct horse battery staple umbrella'))
       AS t(pw);

-- Context words: the user name and the database name, reversed, leetspeak, digits around.
SELECT pw, auth_password_problems(pw, 'alice.walker') AS problems
  FROM (VALUES ('alice1990!Zq#'), ('ecila#Zq91!xX'), ('4l1c3-Qz#91!x'), ('Zq#9walker!xX')) AS t(pw);
SELECT auth_password_problems(current_database() || '#Xq91!zZ') AS database_name;

-- The strong policy: at least 20 characters, upper, lower, digit and special characters.
SELECT auth_password_problems('xT7#qLm9!vRw2Zp', NULL, 'strong') AS too_short_for_strong;
SELECT auth_password_problems('kR8#vN2q!Lz7wT4m%Xp9Yb', NULL, 'strong') AS strong_ok;

-- auth_check_password raises 22023 listing the problems; returns nothing when acceptable.
SELECT auth_check_password('password1', 'bob');
SELECT auth_check_password('xT7#qLm9!vRw2Zp', 'bob');
SELECT auth_check_password('x', NULL, 'nonexistent');

-- Policies are rows; their ranges are enforced.
SELECT name, min_length, require_upper, require_lower, require_digit, require_special, min_strength,
       history, max_age_days
  FROM pgauth.password_policies ORDER BY name;
\set VERBOSITY terse
UPDATE pgauth.password_policies SET min_length = 200 WHERE name = 'default';
UPDATE pgauth.password_policies SET history = 25 WHERE name = 'default';
\set VERBOSITY default
INSERT INTO pgauth.password_policies (name, min_length, require_digit) VALUES ('pin_free', 12, true);
SELECT auth_password_problems('Vq-sN-rKf-LmWz', NULL, 'pin_free') AS needs_digit;
-- Restoring a dump re-inserts existing names: the row is updated, not duplicated.
INSERT INTO pgauth.password_policies (name, min_length) VALUES ('default', 10);
SELECT name, min_length FROM pgauth.password_policies ORDER BY name;
UPDATE pgauth.password_policies SET min_length = 8 WHERE name = 'default';
DELETE FROM pgauth.password_policies WHERE name = 'pin_free';
