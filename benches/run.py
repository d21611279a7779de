#!/usr/bin/env python3
"""pgauth benchmarks: each figure beside its anchor, as a ratio from the same run.

Run with `make bench` (it installs pgauth and starts the throwaway test cluster first).
Timings are wall-clock medians of several repetitions; lower is better.
"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import nacl.pwhash
import psycopg

PORT = int(os.environ.get("TEST_PORT", "5499"))
REPS = int(os.environ.get("BENCH_REPS", "5"))
ARGON2 = dict(m=19456, t=2, p=1)
rows = []


def median_time(fn, reps=REPS):
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def report(name, ours, anchor_name, anchor, unit, target=None):
    ratio = ours / anchor
    verdict = ""
    if isinstance(target, tuple):  # a band: neither faster nor slower than the anchor
        low, high = target
        verdict = "meets target" if low <= ratio <= high else "MISSES target"
        verdict = f"(target {low:.2f}x-{high:.2f}x: {verdict})"
    elif target is not None:
        verdict = "meets target" if ratio <= target else "MISSES target"
        verdict = f"(target <= {target:.2f}x: {verdict})"
    rows.append((name, ours, anchor_name, anchor, unit, ratio, verdict))


def setup_database(port=PORT):
    dsn = f"host=127.0.0.1 port={port} user=postgres"
    with psycopg.connect(dsn + " dbname=postgres", autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS pgauth_bench WITH (FORCE)")
        conn.execute("DROP ROLE IF EXISTS pgauth_bench_app")
        conn.execute("CREATE DATABASE pgauth_bench")
    conn = psycopg.connect(dsn + " dbname=pgauth_bench", autocommit=True)
    conn.execute("CREATE EXTENSION pgauth")
    conn.execute("CREATE EXTENSION pgcrypto")
    return conn


def bench_argon2(conn):
    n = 20
    # One statement hashing n passwords: no per-call round trips in the figure.
    sql = f"SELECT count(auth_hash_password('bench password ' || g)) FROM generate_series(1, {n}) g"
    conn.execute(sql)  # warm up (loads the library, first allocation)
    ours = median_time(lambda: conn.execute(sql).fetchone()) / n

    def sodium():
        for i in range(n):
            nacl.pwhash.argon2id.str(b"bench password %d" % i, opslimit=ARGON2["t"],
                                     memlimit=ARGON2["m"] * 1024)
    sodium()
    libsodium = median_time(sodium) / n
    # The reference CLI reports the time of the hash itself (process start-up excluded).
    samples = []
    for i in range(n):
        out = subprocess.run(
            ["argon2", "benchsaltbenchsalt", "-id", "-t", str(ARGON2["t"]), "-k", str(ARGON2["m"]),
             "-p", str(ARGON2["p"])],
            input=b"bench password %d" % i, capture_output=True, check=True).stdout.decode()
        samples.append(float(re.search(r"([0-9.]+) seconds", out).group(1)))
    reference = statistics.median(samples)
    report("auth_hash_password, Argon2id m=19456 t=2 p=1", ours * 1e3,
           "libsodium argon2id (PyNaCl)", libsodium * 1e3, "ms/hash", 1.10)
    report("auth_hash_password, Argon2id m=19456 t=2 p=1", ours * 1e3,
           "reference C argon2 CLI", reference * 1e3, "ms/hash")


def bench_bcrypt(conn):
    n = 40
    conn.execute(f"""CREATE TABLE bcrypt_hashes AS
                     SELECT crypt('bench password', gen_salt('bf', 10)) AS hash
                       FROM generate_series(1, {n})""")
    ours_sql = "SELECT count(*) FILTER (WHERE auth_verify('bench password', hash)) FROM bcrypt_hashes"
    anchor_sql = "SELECT count(*) FILTER (WHERE crypt('bench password', hash) = hash) FROM bcrypt_hashes"
    assert conn.execute(ours_sql).fetchone()[0] == n
    assert conn.execute(anchor_sql).fetchone()[0] == n
    ours = median_time(lambda: conn.execute(ours_sql).fetchone()) / n
    anchor = median_time(lambda: conn.execute(anchor_sql).fetchone()) / n
    report("auth_verify, bcrypt cost 10", ours * 1e3, "pgcrypto crypt()", anchor * 1e3, "ms/verify", 1.10)


def bench_rejection(conn):
    """How fast hostile stored hashes are refused (they must not be computed)."""
    hostile = "$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
    n = 2000
    sql = f"""DO $$ BEGIN FOR i IN 1..{n} LOOP
                BEGIN PERFORM auth_verify('pw', '{hostile}' || repeat('', i));
                EXCEPTION WHEN invalid_parameter_value THEN NULL; END;
              END LOOP; END $$"""
    base = f"""DO $$ BEGIN FOR i IN 1..{n} LOOP
                BEGIN PERFORM length('{hostile}' || repeat('', i));
                EXCEPTION WHEN invalid_parameter_value THEN NULL; END;
              END LOOP; END $$"""
    ours = median_time(lambda: conn.execute(sql)) / n
    anchor = median_time(lambda: conn.execute(base)) / n
    report("auth_verify refusing a 4 TiB Argon2 hash", ours * 1e6, "plpgsql loop with no call",
           anchor * 1e6, "us/call")


def bench_crypto(conn):
    """1,000,000 values of 100 bytes: AES-256-GCM with key lookup against pgcrypto's
    unauthenticated AES-256-CBC and PostgreSQL's sha256() as the per-row floor."""
    n = int(os.environ.get("BENCH_CRYPTO_ROWS", "1000000"))
    reps = max(3, REPS // 2)
    conn.execute("SET max_parallel_workers_per_gather = 0")  # one core each, like for like
    conn.execute("SET work_mem = '256MB'")
    conn.execute(f"""CREATE TABLE crypto_plain AS
                     SELECT convert_to(rpad(g::text, 100, 'x'), 'UTF8') AS v FROM generate_series(1, {n}) g""")
    key = "'\\x" + "11" * 32 + "'::bytea"
    iv = "'\\x" + "22" * 16 + "'::bytea"
    conn.execute("SELECT auth_encrypt('warm up')")  # the default key exists before timing
    conn.execute(f"""CREATE TABLE crypto_gcm AS SELECT auth_encrypt(v) AS c FROM crypto_plain""")
    conn.execute(f"""CREATE TABLE crypto_cbc AS SELECT encrypt_iv(v, {key}, {iv}, 'aes-cbc') AS c FROM crypto_plain""")
    conn.execute("VACUUM ANALYZE crypto_plain, crypto_gcm, crypto_cbc")

    def timed(sql):
        conn.execute(sql).fetchone()  # warm the cache
        return median_time(lambda: conn.execute(sql).fetchone(), reps)

    floor = timed("SELECT sum(length(sha256(v))) FROM crypto_plain")
    enc = timed("SELECT sum(length(auth_encrypt(v))) FROM crypto_plain")
    cbc_enc = timed(f"SELECT sum(length(encrypt_iv(v, {key}, {iv}, 'aes-cbc'))) FROM crypto_plain")
    dec = timed("SELECT sum(length(auth_decrypt(c))) FROM crypto_gcm")
    cbc_dec = timed(f"SELECT sum(length(decrypt_iv(c, {key}, {iv}, 'aes-cbc'))) FROM crypto_cbc")
    sha3 = timed("SELECT sum(length(auth_digest(v))) FROM crypto_plain")
    sha512 = timed("SELECT sum(length(digest(v, 'sha512'))) FROM crypto_plain")
    label = f"{n:,} x 100 B"
    report(f"auth_encrypt, AES-256-GCM, {label}", enc * 1e3, "pgcrypto encrypt_iv aes-cbc",
           cbc_enc * 1e3, "ms", 1.0)
    report(f"auth_encrypt, AES-256-GCM, {label}", enc * 1e3, "sha256() per-row floor", floor * 1e3, "ms")
    report(f"auth_decrypt, AES-256-GCM, {label}", dec * 1e3, "pgcrypto decrypt_iv aes-cbc",
           cbc_dec * 1e3, "ms", 1.0)
    report(f"auth_digest, SHA3-512, {label}", sha3 * 1e3, "pgcrypto digest sha512", sha512 * 1e3, "ms")
AUDIT_ROWS = 100_000
AUDIT_TABLE = """CREATE TABLE {name} (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL,
                                     amount numeric(12,2), created_at timestamptz NOT NULL DEFAULT now())"""
AUDIT_INSERT = """INSERT INTO {name} SELECT g, 'user ' || g, 'user' || g || '@example.com', g * 1.25, now()
                    FROM generate_series(1, %d) g""" % AUDIT_ROWS


def pgbench_tps(script, clients=2, seconds=10, port=None):
    pgbench = os.environ.get("PGBENCH") or shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            [pgbench, "-h", "127.0.0.1", "-p", str(port or PORT), "-U", "postgres", "-n", "-c", str(clients),
             "-j", str(clients), "-T", str(seconds), "-f", f.name, "pgauth_bench"],
            capture_output=True, check=True, text=True).stdout
    finally:
        os.unlink(f.name)
    return float(re.search(r"tps = ([0-9.]+)", out).group(1))


def bench_audit(conn):
    """Bulk insert into an audited table, and single-row audited inserts from 2 clients."""
    for name in ("bench_plain", "bench_audited", "bench_plpgsql"):
        conn.execute(AUDIT_TABLE.format(name=name))
    conn.execute("SELECT auth_audit_enable('bench_audited')")
    # The supa_audit / classic audit-trigger style: one plpgsql row trigger writing to_jsonb(NEW).
    conn.execute("""CREATE TABLE bench_plpgsql_log (id bigserial PRIMARY KEY, ts timestamptz DEFAULT now(),
                        tbl text, op text, record jsonb)""")
    conn.execute("""CREATE FUNCTION bench_plpgsql_audit() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN
                      INSERT INTO bench_plpgsql_log (tbl, op, record) VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(NEW));
                      RETURN NULL;
                    END $$""")
    conn.execute("""CREATE TRIGGER bench_plpgsql_audit AFTER INSERT ON bench_plpgsql
                    FOR EACH ROW EXECUTE FUNCTION bench_plpgsql_audit()""")

    def bulk(name):
        def run():
            conn.execute(f"TRUNCATE {name}")
            start = time.perf_counter()
            conn.execute(AUDIT_INSERT.format(name=name))
            return time.perf_counter() - start
        run()  # warm up: caches, plans
        return statistics.median(run() for _ in range(REPS))

    plain = bulk("bench_plain")
    audited = bulk("bench_audited")
    plpgsql = bulk("bench_plpgsql")
    report(f"INSERT {AUDIT_ROWS:,} rows, audited by pgauth (hash chain)", audited * 1e3,
           "same INSERT unaudited", plain * 1e3, "ms", 2.0)
    report(f"INSERT {AUDIT_ROWS:,} rows, audited by pgauth (hash chain)", audited * 1e3,
           "plpgsql to_jsonb(NEW) row trigger", plpgsql * 1e3, "ms")
    ok = conn.execute("SELECT ok FROM auth_audit_verify()").fetchone()[0]
    assert ok, "the audit log of the benchmark does not verify"

    bench_audit_pgbench(conn, "fsync off")
    durable = os.environ.get("BENCH_DURABLE_PORT")
    if durable:
        # The same on a cluster with fsync on (a production setting): commits wait for a flush.
        with setup_database(int(durable)) as dconn:
            bench_audit_pgbench(dconn, "fsync on", port=int(durable))


def bench_audit_pgbench(conn, label, port=None):
    """pgbench, 2 clients, single-row INSERTs into an audited table against an unaudited one."""
    conn.execute("CREATE TABLE bench_one_plain (id bigserial PRIMARY KEY, name text, amount numeric)")
    conn.execute("CREATE TABLE bench_one_audited (LIKE bench_one_plain INCLUDING ALL)")
    conn.execute("SELECT auth_audit_enable('bench_one_audited')")
    insert = "INSERT INTO {name} (name, amount) VALUES ('client ' || :client_id, random());\n"
    pgbench_tps(insert.format(name="bench_one_plain"), seconds=2, port=port)  # warm up
    plain_tps, audited_tps = [], []
    for _ in range(3):  # interleaved: the machine's load drifts
        plain_tps.append(pgbench_tps(insert.format(name="bench_one_plain"), port=port))
        audited_tps.append(pgbench_tps(insert.format(name="bench_one_audited"), port=port))
    # Reported as time per transaction (lower is better): target 1.25x = 0.8x the TPS.
    report(f"pgbench 2 clients, single-row audited INSERT ({label})",
           1e3 / statistics.median(audited_tps),
           "same, unaudited", 1e3 / statistics.median(plain_tps), "ms/txn", 1.25)
    ok = conn.execute("SELECT ok FROM auth_audit_verify()").fetchone()[0]
    assert ok, "the audit log of the pgbench run does not verify"


def bench_rbac(conn):
    """1,000,000 rows over 1,000 tenants; a user who reaches 10 tenants through a group and an
    inherited role; SELECT count(*) under row-level security, against no RLS, a hand-written
    inline policy and a plpgsql helper called per row."""
    n = int(os.environ.get("BENCH_RBAC_ROWS", "1000000"))
    reps = max(3, REPS)
    conn.execute("SET max_parallel_workers_per_gather = 0")  # per-row cost, one core each
    conn.execute("""
        SELECT auth_create_role('doc-reader'); SELECT auth_grant_permission('doc-reader', 'doc.read');
        SELECT auth_create_role('tenant-member', '{doc-reader}');
        SELECT auth_create_group('bench-group');
        SELECT auth_add_member('bench-group', auth_create_user('bench-user'));
        SELECT auth_assign_group_role('bench-group', 'tenant-member', (t * 97)::text)
          FROM generate_series(1, 10) t;
        CREATE TABLE memberships (user_id uuid, tenant_id bigint, PRIMARY KEY (user_id, tenant_id));
        INSERT INTO memberships SELECT id, t * 97 FROM pgauth.users, generate_series(1, 10) t
         WHERE username = 'bench-user';
        CREATE ROLE pgauth_bench_app;
        GRANT pgauth_service TO pgauth_bench_app;
        GRANT SELECT ON memberships TO pgauth_bench_app;
    """)
    for name in ("docs_norls", "docs_inline", "docs_helper", "docs_pgauth"):
        conn.execute(f"""CREATE TABLE {name} AS
                         SELECT g::bigint AS id, (g % 1000)::bigint AS tenant_id, 'document ' || g AS body
                           FROM generate_series(1, {n}) g""")
        conn.execute(f"GRANT SELECT ON {name} TO pgauth_bench_app")
        conn.execute(f"VACUUM ANALYZE {name}")
    conn.execute("""
        ALTER TABLE docs_inline ENABLE ROW LEVEL SECURITY;
        CREATE POLICY p ON docs_inline USING (tenant_id IN (
            SELECT m.tenant_id FROM memberships m
             WHERE m.user_id = current_setting('bench.user_id')::uuid));
        CREATE FUNCTION bench_is_member(t bigint) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
        BEGIN
            RETURN EXISTS (SELECT 1 FROM memberships m
                            WHERE m.user_id = current_setting('bench.user_id')::uuid AND m.tenant_id = t);
        END $$;
        ALTER TABLE docs_helper ENABLE ROW LEVEL SECURITY;
        CREATE POLICY p ON docs_helper USING (bench_is_member(tenant_id));
        SELECT auth_rls_enable('docs_pgauth', 'doc.read', 'tenant_id');
    """)
    user = conn.execute("SELECT id FROM pgauth.users WHERE username = 'bench-user'").fetchone()[0]
    conn.execute("SET ROLE pgauth_bench_app")
    conn.execute(f"SET bench.user_id = '{user}'")

    def timed(table):
        sql = f"SELECT count(*) FROM {table}"

        def run():
            conn.execute("BEGIN")
            conn.execute("SELECT auth_bind_user(%s)", (user,))
            rows = conn.execute(sql).fetchone()[0]
            conn.execute("COMMIT")
            return rows
        expected = 10 * (n // 1000) if table != "docs_norls" else n
        got = run()
        assert got == expected, f"{table}: {got} rows visible, expected {expected}"
        return median_time(run, reps)

    norls, inline = timed("docs_norls"), timed("docs_inline")
    helper = timed("docs_helper")
    ours = timed("docs_pgauth")
    conn.execute("RESET ROLE")
    label = f"count(*) of {n:,} rows under RLS, 10 of 1,000 tenants"
    report(f"{label}: auth_has_permission", ours * 1e3, "hand-written inline IN (SELECT …) policy",
           inline * 1e3, "ms", 1.5)
    report(f"{label}: auth_has_permission", ours * 1e3, "no RLS", norls * 1e3, "ms")
    report(f"{label}: auth_has_permission", ours * 1e3, "plpgsql helper called per row",
           helper * 1e3, "ms")


def bench_login(conn):
    """auth_login: an unknown user must cost what a wrong password for a known user costs (no
    username oracle); a successful login against a bare auth_verify."""
    n = 30
    conn.execute("SET pgauth.login_attempts_per_minute = 0")
    conn.execute("SET pgauth.max_failed_logins = 0")
    conn.execute("SELECT auth_create_user('bench-login', 'Tr4vel-Quartz-Mango-71')")
    h = conn.execute("""SELECT c.password_hash FROM pgauth.credentials c JOIN pgauth.users u
                         ON u.id = c.user_id WHERE u.username = 'bench-login'""").fetchone()[0]

    def logins(user, password):
        def run():
            for _ in range(n):
                conn.execute("SELECT ok FROM auth_login(%s, %s, '192.0.2.1')", (user, password)).fetchone()
        return run

    def verifies():
        for _ in range(n):
            conn.execute("SELECT auth_verify(%s, %s)", ("Tr4vel-Quartz-Mango-71", h)).fetchone()

    wrong = median_time(logins("bench-login", "wrong password")) / n
    unknown = median_time(logins("no-such-user", "wrong password")) / n
    good = median_time(logins("bench-login", "Tr4vel-Quartz-Mango-71")) / n
    verify = median_time(verifies) / n
    report("auth_login, unknown user", unknown * 1e3, "auth_login, known user + wrong password",
           wrong * 1e3, "ms", (0.8, 1.25))
    report("auth_login, success (access JWT + refresh token, audited)", good * 1e3, "bare auth_verify",
           verify * 1e3, "ms")
    print(f"auth_login throughput, default Argon2id, one session: {1 / good:.0f} logins/s")

PGJWT = r"""
CREATE FUNCTION bench_url_encode(data bytea) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT translate(encode(data, 'base64'), E'+/=\n', '-_');
$$;
CREATE FUNCTION bench_url_decode(data text) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    WITH t AS (SELECT translate(data, '-_', '+/') AS trans),
         rem AS (SELECT length(t.trans) % 4 AS remainder FROM t)
    SELECT decode(t.trans || CASE WHEN rem.remainder > 0 THEN repeat('=', (4 - rem.remainder))
                                  ELSE '' END, 'base64') FROM t, rem;
$$;
CREATE FUNCTION bench_algorithm_sign(signables text, secret text, algorithm text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    WITH alg AS (SELECT CASE WHEN algorithm = 'HS256' THEN 'sha256' WHEN algorithm = 'HS384'
                             THEN 'sha384' WHEN algorithm = 'HS512' THEN 'sha512' ELSE '' END AS id)
    SELECT bench_url_encode(hmac(signables, secret, alg.id)) FROM alg;
$$;
CREATE FUNCTION bench_jwt_sign(payload json, secret text, algorithm text DEFAULT 'HS256') RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    WITH header AS (SELECT bench_url_encode(convert_to('{"alg":"' || algorithm || '","typ":"JWT"}', 'utf8')) AS data),
         payload AS (SELECT bench_url_encode(convert_to(payload::text, 'utf8')) AS data),
         signables AS (SELECT header.data || '.' || payload.data AS data FROM header, payload)
    SELECT signables.data || '.' || bench_algorithm_sign(signables.data, secret, algorithm) FROM signables;
$$;
CREATE FUNCTION bench_jwt_verify(token text, secret text, algorithm text DEFAULT 'HS256')
RETURNS TABLE(header json, payload json, valid boolean) LANGUAGE sql IMMUTABLE AS $$
    SELECT jwt.header, jwt.payload,
           jwt.signature_ok AND tstzrange(to_timestamp((jwt.payload->>'nbf')::double precision),
                                          to_timestamp((jwt.payload->>'exp')::double precision))
                                @> CURRENT_TIMESTAMP AS valid
      FROM (SELECT convert_from(bench_url_decode(r[1]), 'utf8')::json AS header,
                   convert_from(bench_url_decode(r[2]), 'utf8')::json AS payload,
                   r[3] = bench_algorithm_sign(r[1] || '.' || r[2], secret, algorithm) AS signature_ok
              FROM regexp_split_to_array(token, '\.') r) jwt;
$$;
"""


def bench_jwt(conn):
    """Sign and verify 10,000 tokens in SQL: pgauth (jsonwebtoken on aws-lc-rs) against the
    pgjwt approach (SQL over pgcrypto's hmac), same claims, same run."""
    n = 10_000
    conn.execute(PGJWT)
    secret = "bench-secret-bench-secret-bench-secret-0123456789"
    conn.execute("SELECT auth_import_signing_key('bench-hs256', 'HS256', %s)",
                 (__import__("base64").urlsafe_b64encode(secret.encode()).decode().rstrip("="),))
    for alg in ("ES256", "EdDSA", "RS256"):
        conn.execute("SELECT auth_create_signing_key(%s, %s)", (f"bench-{alg.lower()}", alg))
    claims = "json_build_object('sub', 'user-' || g, 'role', 'reader', 'exp', extract(epoch FROM now())::bigint + 900)"
    pgjwt_sign = f"SELECT count(bench_jwt_sign({claims}, '{secret}')) FROM generate_series(1, {n}) g"
    ours_sign = f"SELECT count(auth_jwt_sign(({claims})::jsonb, 'bench-hs256')) FROM generate_series(1, {n}) g"
    conn.execute(f"CREATE TEMP TABLE bench_pgjwt_tokens AS SELECT bench_jwt_sign({claims}, '{secret}') AS t "
                 f"FROM generate_series(1, {n}) g")
    conn.execute(f"CREATE TEMP TABLE bench_ours_tokens AS SELECT auth_jwt_sign(({claims})::jsonb, 'bench-hs256') AS t "
                 f"FROM generate_series(1, {n}) g")
    pgjwt_verify = f"SELECT count(*) FILTER (WHERE v.valid) FROM bench_pgjwt_tokens, bench_jwt_verify(t, '{secret}') v"
    ours_verify = "SELECT count(auth_jwt_verify(t, 'bench-hs256')) FROM bench_ours_tokens"
    assert conn.execute(pgjwt_verify).fetchone()[0] == n
    assert conn.execute(ours_verify).fetchone()[0] == n
    a_sign = median_time(lambda: conn.execute(pgjwt_sign).fetchone())
    o_sign = median_time(lambda: conn.execute(ours_sign).fetchone())
    a_verify = median_time(lambda: conn.execute(pgjwt_verify).fetchone())
    o_verify = median_time(lambda: conn.execute(ours_verify).fetchone())
    report(f"auth_jwt_sign HS256 x{n}", o_sign * 1e3, "pgjwt-style SQL sign", a_sign * 1e3, "ms", 0.20)
    report(f"auth_jwt_verify HS256 x{n}", o_verify * 1e3, "pgjwt-style SQL verify", a_verify * 1e3, "ms", 0.20)
    for alg in ("ES256", "EdDSA", "RS256"):
        name = f"bench-{alg.lower()}"
        m = n if alg != "RS256" else n // 10
        sign = f"SELECT count(auth_jwt_sign(({claims})::jsonb, '{name}')) FROM generate_series(1, {m}) g"
        conn.execute(f"CREATE TEMP TABLE bench_{alg.lower()}_tokens AS SELECT auth_jwt_sign(({claims})::jsonb, '{name}') AS t "
                     f"FROM generate_series(1, {m}) g")
        verify = f"SELECT count(auth_jwt_verify(t, '{name}')) FROM bench_{alg.lower()}_tokens"
        s_time = median_time(lambda: conn.execute(sign).fetchone(), reps=3) * n / m
        v_time = median_time(lambda: conn.execute(verify).fetchone(), reps=3) * n / m
        report(f"auth_jwt_sign {alg} x{n}" + (" (from 1,000)" if m != n else ""), s_time * 1e3,
               "pgjwt-style SQL sign HS256", a_sign * 1e3, "ms")
        report(f"auth_jwt_verify {alg} x{n}" + (" (from 1,000)" if m != n else ""), v_time * 1e3,
               "pgjwt-style SQL verify HS256", a_verify * 1e3, "ms")


def main():
    conn = setup_database()
    benches = {"argon2": bench_argon2, "bcrypt": bench_bcrypt, "reject": bench_rejection,
               "crypto": bench_crypto, "audit": bench_audit, "rbac": bench_rbac,
               "login": bench_login, "jwt": bench_jwt}
    chosen = sys.argv[1:] or list(benches)
    for name in chosen:
        benches[name](conn)
    print(f"\npgauth benchmarks (median of {REPS} runs, same machine, same run)\n")
    width = max(len(r[0]) for r in rows)
    for name, ours, anchor_name, anchor, unit, ratio, verdict in rows:
        print(f"{name:<{width}}  {ours:10.3f} {unit:<9}  vs {anchor_name}: {anchor:10.3f}  "
              f"ratio {ratio:5.2f}x {verdict}")
    conn.close()


if __name__ == "__main__":
    main()
