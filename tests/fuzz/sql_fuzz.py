#!/usr/bin/env python3
"""SQL-level fuzzer for pgauth, through a real server and a real client (psycopg 3).

Starts its own throwaway cluster (tests/cluster.sh), creates a fresh database with the extension,
seeds valid material (users, hashes of every supported scheme, ciphertexts, JWTs, sessions, refresh
tokens, API keys, TOTP, a key export, passkey JSON, audited rows), reads every function of the
extension from the catalog (pg_depend) and calls each with mutated arguments as three login roles:

  fuzz_anon     no grants at all (PUBLIC only)
  fuzz_admin    member of pgauth_admin
  fuzz_service  member of pgauth_service

Each call is its own transaction (autocommit), some inside a transaction that first binds a
user with auth_set_session. Checks, each a finding (exit status 1):

  crash        the connection died during a call, or the server log has a crashed backend
               ('terminated by signal', 'was terminated by', PANIC, TRAP)
  internal     SQLSTATE XX000
  undocumented a SQLSTATE that docs/reference.md's SQLSTATE table does not list (and that is not
               one of PostgreSQL's own argument-conversion errors, GENERIC_INPUT below)
  timeout      a call ran into statement_timeout (a hang)

Report: target/fuzz/sql_report.json and a printed summary (calls per function and role, SQLSTATEs
per function, every finding with the smallest reproducer seen).

Usage (see docs/development.md, "SQL fuzzing"):
  python3 tests/fuzz/sql_fuzz.py --calls 1000000
  python3 tests/fuzz/sql_fuzz.py --seconds 60
"""

import argparse
import base64
import collections
import json
import multiprocessing as mp
import os
import random
import re
import subprocess
import sys
import time
import uuid

import psycopg
from psycopg.types.string import StrDumperUnknown

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
DB = "sqlfuzz"
ROLES = ("fuzz_anon", "fuzz_admin", "fuzz_service")
ROLE_WEIGHTS = (0.4, 0.4, 0.2)
GOOD_PASSWORD = "Fuzz-correct-horse-battery-7"
MAX_VALUE = 900 * 1024  # keep each value under ~1 MiB

# PostgreSQL's own errors when a parameter is converted to the argument's type, before any pgauth
# code runs. Accepted only when the error's CONTEXT says so ("unnamed portal parameter $n"):
# the same SQLSTATE raised from inside a pgauth function is still a finding.
GENERIC_INPUT = {
    "22P02": "invalid_text_representation: a malformed uuid/integer/inet/cidr/boolean/jsonb/tid/array literal",
    "22003": "numeric_value_out_of_range: an integer literal beyond int4/int8",
    "22007": "invalid_datetime_format: a malformed timestamptz/interval literal",
    "22008": "datetime_field_overflow: a timestamptz/interval field out of range",
    "22015": "interval_field_overflow: an interval out of range",
    "22P05": "untranslatable_character: \\u0000 in a jsonb literal",
    "22021": "character_not_in_repertoire: a literal that is not valid UTF-8",
    "54001": "statement_too_complex: jsonb literal nested deeper than the stack allows",
    "42P01": "undefined_table: a regclass literal naming no table",
    "42602": "invalid_name: a regclass literal that is not a name",
    "3F000": "invalid_schema_name: a regclass literal naming no schema",
    "42601": "syntax_error: a regclass/name literal that does not parse",
    "0A000": "feature_not_supported: a regclass literal with a cross-database reference",
    "2202E": "array_subscript_error: an array literal with bad bounds",
    "54000": "program_limit_exceeded: an array literal with too many dimensions",
}

# Called last (after every other function), in their own phase: they destroy seeded state
# (revoked keys and sessions, blocked users, rotated refresh tokens, changed passwords, imported
# garbage keys) that the other functions' valid inputs depend on.
DESTRUCTIVE = {
    "auth_revoke_key", "auth_revoke_signing_key", "auth_block_user", "auth_drop_role",
    "auth_totp_disable", "auth_revoke_session", "auth_revoke_api_key", "auth_webauthn_revoke",
    "auth_audit_disable", "auth_remove_member", "auth_unassign_role", "auth_unassign_group_role",
    "auth_revoke_permission", "auth_revoke_key_usage", "auth_purge_expired", "auth_audit_purge",
    "auth_recovery_codes", "auth_import_keys", "auth_refresh", "auth_change_password",
    "auth_rewrap_keys", "attempt_counters_reset", "auth_clear_session",
}

LOG_CRASH = re.compile(r"terminated by signal|was terminated by|PANIC:|TRAP:|server process .* exited with exit code [^0]|stack smashing")


# ---------------------------------------------------------------------------------------------
# Reference parsing


def documented_sqlstates(path):
    text = open(path, encoding="utf-8").read()
    section = text.split("## SQLSTATEs", 1)[1]
    codes = set(re.findall(r"^\| `([0-9A-Z]{5})`", section, re.M))
    if not codes:
        sys.exit(f"no SQLSTATE table found in {path}")
    return codes


# ---------------------------------------------------------------------------------------------
# Cluster and seeding


def cluster(args, action):
    env = dict(os.environ, PG_MAJOR=str(args.pg_major), TEST_PORT=str(args.port),
               TEST_ROOT=args.root, PG_BIN=args.pg_bin)
    subprocess.run(["bash", os.path.join(REPO, "tests", "cluster.sh"), action], env=env, check=True)


def dsn(args, user="postgres", db=DB):
    return (f"host={args.root}/socket port={args.port} user={user} dbname={db} "
            f"options='-c statement_timeout={args.statement_timeout_ms}'")


def connect(args, user="postgres", db=DB):
    conn = psycopg.connect(dsn(args, user, db), autocommit=True)
    # str parameters go as 'unknown': the server converts them to the argument's type, so a
    # malformed literal is PostgreSQL's input error (GENERIC_INPUT), not a client-side error.
    conn.adapters.register_dumper(str, StrDumperUnknown)
    conn.add_notice_handler(lambda d: None)
    return conn


def one(conn, query, params=()):
    return conn.execute(query, params).fetchone()[0]


def seed(args):
    """A fresh database with the extension and valid material of every kind; returns the pools."""
    with connect(args, db="postgres") as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        for r in ROLES:
            c.execute(f"DROP ROLE IF EXISTS {r}")
        c.execute(f"CREATE DATABASE {DB}")
    c = connect(args)
    c.execute("CREATE EXTENSION pgauth")
    for setting, value in [("login_attempts_per_minute", 0), ("jwt_access_ttl", 86400),
                           ("session_ttl", 86400), ("webauthn_rp_id", "example.com"),
                           ("webauthn_origins", "https://example.com"),
                           ("webauthn_pending_challenges", 0)]:
        c.execute(f"ALTER DATABASE {DB} SET pgauth.{setting} = '{value}'")
    # The clients see every error; the server log keeps what a crash leaves (LOG and above:
    # 'terminated by signal', PANIC), not a line and a statement of up to 1 MiB per failed call.
    c.execute(f"ALTER DATABASE {DB} SET log_min_messages = 'log'")
    c.execute(f"ALTER DATABASE {DB} SET log_min_error_statement = 'panic'")
    c.execute("CREATE ROLE fuzz_anon LOGIN")
    c.execute("CREATE ROLE fuzz_admin LOGIN IN ROLE pgauth_admin")
    c.execute("CREATE ROLE fuzz_service LOGIN IN ROLE pgauth_service")
    c.execute("GRANT CREATE ON SCHEMA public TO fuzz_admin")
    c.close()
    a = connect(args, "fuzz_admin")
    P = collections.defaultdict(list)

    # users, groups, roles, permissions
    users = {}
    for name in ("alice", "bob", "carol", "dave", "erin", "Ünïcødé-user"):
        users[name] = str(one(a, "SELECT auth_create_user(%s, %s)", (name, GOOD_PASSWORD)))
    P["user_id"] += list(users.values())
    P["username"] += list(users) + ["nobody", "ALICE", ""]
    P["password"] += [GOOD_PASSWORD, "wrong", "", "x" * 1024, "x" * 1025, "pässwörd-ünïcode"]
    a.execute("SELECT auth_create_group('staff')")
    a.execute("SELECT auth_add_member('staff', %s)", (users["alice"],))
    a.execute("SELECT auth_create_role('reader')")
    a.execute("SELECT auth_create_role('writer', '{reader}')")
    a.execute("SELECT auth_grant_permission('reader', 'doc.read')")
    a.execute("SELECT auth_grant_permission('writer', 'doc.write', 2)")
    a.execute("SELECT auth_assign_role(%s, 'writer', 'acme')", (users["alice"],))
    a.execute("SELECT auth_assign_group_role('staff', 'reader')")
    P["group_name"] += ["staff", "nogroup"]
    P["role"] += ["reader", "writer", "norole", "public", "fuzz_service", "fuzz_anon"]
    P["permission"] += ["doc.read", "doc.write", "doc.*", "a.b.c", "bad perm"]
    P["scope"] += ["acme", "other", "*"]
    P["policy"] += ["default", "nopolicy"]

    # password hashes of every supported scheme, and hostile ones
    for path, col in ((os.path.join(REPO, "tests/fixtures/hashes.tsv"), 3),
                      (os.path.join(REPO, "tests/fixtures/bad_hashes.tsv"), 1)):
        for line in open(path, encoding="utf-8").read().splitlines()[1:]:
            cols = line.split("\t")
            if len(cols) > col:
                P["hash"].append(cols[col])
                if col == 3:
                    P["password"].append(cols[2])
    P["hash"].append(one(a, "SELECT auth_hash_password(%s)", (GOOD_PASSWORD,)))

    # encryption keys and ciphertexts
    a.execute("SELECT auth_create_key('k2')")
    a.execute("SELECT auth_grant_key_usage('k2', 'public')")
    for plain, key, aad in [(b"hello", "default", None), (b"hello", "k2", None), (b"", "k2", b"row-1"),
                            (b"\xff\xfe\x00invalid utf-8", "k2", None), (os.urandom(300), "default", b"a")]:
        ct = one(a, "SELECT auth_encrypt(%s::bytea, %s, %s::bytea)", (plain, key, aad))
        P["ciphertext"].append(bytes(ct))
        P["aad"].append(aad)
        P["bytes"].append(plain)
    a.execute("SELECT auth_grant_key_usage('default', 'fuzz_service')")
    P["key_name"] += ["default", "k2", "nokey", "jwt", "hs", "Default"]
    P["key_id"] += [str(r[0]) for r in a.execute("SELECT id FROM auth_key_status()")]
    P["key_export"].append(json.dumps(one(a, "SELECT auth_export_keys()")))
    P["digest"].append(bytes(one(a, "SELECT auth_digest('x'::text)")))

    # signing keys and JWTs
    for name, alg in (("hs", "HS256"), ("ed", "EdDSA"), ("es", "ES256"), ("rs", "RS256")):
        P["kid"].append(str(one(a, "SELECT auth_create_signing_key(%s, %s)", (name, alg))))
        P["key_name"].append(name)
        for claims in ({"sub": "alice", "role": "x"}, {"aud": "api", "iss": "me", "n": 1}):
            tok = one(a, "SELECT auth_jwt_sign(%s::jsonb, %s)", (json.dumps(claims), name))
            P["jwt"].append(tok)
            P["token"].append(tok)
        P["claims"] += [json.dumps({"sub": "alice", "nested": {"a": [1, 2, {"b": None}]}})]
    P["algorithm"] += ["HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA", "none", "hs256"]
    P["signing_key"].append(base64.b64encode(os.urandom(32)).decode())
    for algo in (["-algorithm", "ed25519"], ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]):
        pem = subprocess.run(["openssl", "genpkey", *algo], capture_output=True, text=True, check=True).stdout
        P["signing_key"].append(pem)
        pub = subprocess.run(["openssl", "pkey", "-pubout"], input=pem, capture_output=True, text=True,
                             check=True).stdout
        P["signing_key"].append(pub)

    # sign-in: access and refresh tokens, sessions, API keys
    for name in ("alice", "bob", "dave"):
        row = a.execute("SELECT * FROM auth_login(%s, %s, '192.0.2.1')", (name, GOOD_PASSWORD)).fetchone()
        assert row[0], f"seed login of {name} failed: {row}"
        P["token"].append(row[3])
        P["access_token"].append(row[3])
        P["refresh_token"].append(row[4])
    for name in ("alice", "carol"):
        s = one(a, "SELECT auth_create_session(%s, '1 day')", (users[name],))
        P["token"].append(s)
        P["session"].append(s)
    for name in ("alice", "bob"):
        k = one(a, "SELECT auth_create_api_key(%s, 'ci', '{read,acme}')", (users[name],))
        P["api_key"].append(k)
        P["prefix"].append(k[:12])
        P["prefix"].append(k.split("_")[0] + "_" + k.split("_")[1][:8] if "_" in k else k[:8])

    # TOTP and recovery codes (carol); a session of carol at aal 1 for step-up
    uri = one(a, "SELECT auth_totp_enroll(%s, 'Fuzz')", (users["carol"],))
    P["text"].append(uri)
    try:
        import pyotp
        P["code"].append(pyotp.parse_uri(uri).now())
    except Exception:
        pass
    P["code"] += [r[0] for r in a.execute("SELECT auth_recovery_codes(%s)", (users["carol"],))]
    P["code"] += ["000000", "123456", "1234567", "abcdef", ""]

    # passkeys: recorded registrations and assertions (rp example.com), and live options
    wdir = os.path.join(REPO, "tests/fixtures/webauthn")
    for f in sorted(os.listdir(wdir)):
        d = json.load(open(os.path.join(wdir, f)))
        if "registration" not in d:  # a real authenticator's recording: build the JSON shapes
            d["registration"] = {"id": d["credential_id"], "rawId": d["credential_id"], "type": "public-key",
                                 "response": {"clientDataJSON": d["registration_client_data"],
                                              "attestationObject": d["attestation_object"]}}
            d["assertion"] = {"id": d["credential_id"], "rawId": d["credential_id"], "type": "public-key",
                              "response": {"clientDataJSON": d["assertion_client_data"],
                                           "authenticatorData": d["authenticator_data"],
                                           "signature": d["signature"]}}
        P["credential"] += [json.dumps(d["registration"]), json.dumps(d["assertion"])]
        P["credential_id"].append(d["registration"]["id"])
    P["credential"].append(json.dumps(one(a, "SELECT auth_webauthn_register_begin(%s)", (users["dave"],))))
    P["credential"].append(json.dumps(one(a, "SELECT auth_webauthn_login_begin('dave')")))

    # audited and RLS tables owned by fuzz_admin, with rows
    a.execute("CREATE TABLE fuzz_docs (id int PRIMARY KEY, body text, owner uuid, scope text)")
    a.execute("SELECT auth_audit_enable('fuzz_docs')")
    a.execute("CREATE TABLE fuzz_plain (id int PRIMARY KEY, scope text)")
    a.execute("CREATE TABLE fuzz_nopk (v text)")
    for i in range(5):
        a.execute("INSERT INTO fuzz_docs VALUES (%s, %s, %s, 'acme')", (i, "row %d" % i, users["alice"]))
    a.execute("UPDATE fuzz_docs SET body = body || '!'")
    a.execute("DELETE FROM fuzz_docs WHERE id = 4")
    head = a.execute("SELECT * FROM auth_audit_head()").fetchone()
    P["audit_id"] += [str(head[0]), "1", "0"]
    P["digest"].append(bytes(head[1]))
    P["table"] += ["fuzz_docs", "fuzz_plain", "fuzz_nopk", "public.fuzz_docs", "pgauth.users",
                   "pg_class", "nosuch", "pgauth.audit_log"]
    P["column"] += ["scope", "id", "nosuch", ""]
    with connect(args) as su:
        P["tid"] += [str(r[0]) for r in su.execute("SELECT ctid FROM pgauth.audit_records LIMIT 3")]
    P["tid"] += ["(0,1)", "(0,0)", "(4294967295,65535)"]
    a.close()

    # generic pools
    P["event"] += ["login_failed", "keys_imported", "", None]
    P["interval"] += ["1 day", "15 minutes", "-1 day", "0", "10000 years", "1 microsecond", "P1D"]
    P["timestamptz"] += ["now", "2000-01-01", "infinity", "-infinity", "2100-01-01 00:00+00"]
    P["inet"] += ["192.0.2.1", "::1", "2001:db8::1/64", "0.0.0.0", "255.255.255.255"]
    P["cidr[]"] += ["{192.0.2.0/24}", "{::/0}", "{}", "{10.0.0.0/8,2001:db8::/32}"]
    P["text[]"] += ["{}", "{reader}", "{read,acme}", "{writer,reader}", "{NULL}", '{"",""}']
    P["int"] += ["1", "2", "3", "0", "-1"]
    P["bool"] += ["true", "false"]
    P["text"] += ["", "a", "x" * 300, "pgauth", "'; DROP TABLE x; --", "ünïcødé 🙂", "%s%n", "\\"]
    P["bytes"] += [b"", b"\x00", b"\x00" * 64, os.urandom(64)]
    P["json"] += ["{}", "[]", "null", "1", '"s"', '{"a":1}']
    return {k: [v for v in vs if v is not None] for k, vs in P.items()}


# ---------------------------------------------------------------------------------------------
# The catalog: every function of the extension


def extension_functions(args):
    with connect(args) as c:
        rows = c.execute("""
            SELECT p.oid, n.nspname, p.proname, p.proretset,
                   format_type(p.prorettype, NULL),
                   coalesce((SELECT array_agg(format_type(t, NULL) ORDER BY o)
                               FROM unnest(p.proargtypes) WITH ORDINALITY u(t, o)), '{}'),
                   coalesce(p.proargnames[1:p.pronargs], '{}'), p.prokind
              FROM pg_depend d
              JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pgauth'
              JOIN pg_proc p ON p.oid = d.objid AND d.classid = 'pg_proc'::regclass
              JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE d.deptype = 'e'
             ORDER BY n.nspname, p.proname, p.oid""").fetchall()
    funcs, skipped = [], []
    for oid, schema, name, retset, rettype, argtypes, argnames, kind in rows:
        sig = f"{schema}.{name}({', '.join(argtypes)})"
        if schema == "tests":
            skipped.append((sig, "a pgrx #[pg_test] function: a test build is installed"))
            continue
        if rettype in ("trigger", "event_trigger"):
            skipped.append((sig, f"returns {rettype}: PostgreSQL refuses a direct call"))
            continue
        if kind != "f":
            skipped.append((sig, f"prokind {kind}"))
            continue
        bad = [t for t in argtypes if t not in TYPE_POOLS]
        if bad:
            skipped.append((sig, f"argument types without a generator: {bad}"))
            continue
        names = list(argnames) + [f"arg{i}" for i in range(len(argnames), len(argtypes))]
        placeholders = ", ".join(f"%s::{t}" for t in argtypes)
        call = f'"{schema}"."{name}"({placeholders})'
        query = f"SELECT * FROM {call}" if retset else f"SELECT {call}"
        funcs.append({"sig": sig, "name": name, "args": list(zip(names, argtypes)), "query": query,
                      "destructive": name in DESTRUCTIVE})
    return funcs, skipped


# ---------------------------------------------------------------------------------------------
# Argument pools by type and name

TYPE_POOLS = {"text": "text", "bytea": "bytes", "jsonb": "json", "uuid": "uuid", "integer": "int",
              "bigint": "int", "interval": "interval", "inet": "inet", "cidr[]": "cidr[]",
              "text[]": "text[]", "name[]": "text[]", "timestamp with time zone": "timestamptz",
              "boolean": "bool", "regclass": "table", "name": "column", "tid": "tid"}

NAME_POOLS = {
    ("text", "password"): "password", ("text", "old_password"): "password",
    ("text", "new_password"): "password", ("text", "hash"): "hash", ("text", "username"): "username",
    ("text", "token"): "token", ("text", "refresh_token"): "refresh_token",
    ("text", "api_key"): "api_key", ("text", "prefix"): "prefix", ("text", "code"): "code",
    ("text", "key_name"): "key_name", ("text", "key"): "signing_key", ("text", "algorithm"): "algorithm",
    ("text", "permission"): "permission", ("text", "write_permission"): "permission",
    ("text", "scope"): "scope", ("text", "role"): "role", ("text", "inherits"): "role",
    ("text", "group_name"): "group_name", ("text", "policy"): "policy",
    ("text", "credential_id"): "credential_id", ("text", "event"): "event",
    ("text", "value"): "text", ("text", "name"): "key_name",
    ("bytea", "ciphertext"): "ciphertext", ("bytea", "aad"): "aad", ("bytea", "head_digest"): "digest",
    ("jsonb", "claims"): "claims", ("jsonb", "export"): "key_export", ("jsonb", "credential"): "credential",
    ("uuid", "user_id"): "user_id", ("uuid", "uid"): "user_id", ("uuid", "id"): "key_id",
    ("uuid", "kid"): "kid", ("integer", "min_aal"): "int", ("integer", "aal"): "int",
    ("bigint", "from_id"): "audit_id", ("bigint", "head_id"): "audit_id",
    ("bigint", "through_position"): "audit_id", ("bigint", "record_id"): "audit_id",
    ("bigint", "id"): "audit_id", ("bigint", "last_id"): "audit_id",
}


def pool_for(P, name, typ):
    key = NAME_POOLS.get((typ, name)) or TYPE_POOLS[typ]
    if key == "uuid":
        return P["user_id"] + P["key_id"] + P["kid"] + [str(uuid.UUID(int=0))]
    if key == "json":
        return P["json"] + P["claims"] + P["credential"] + P["key_export"]
    if key == "text":
        return P["text"] + P["token"] + P["hash"] + P["api_key"]
    if key == "bytes":
        return P["bytes"] + P["ciphertext"]
    return P[key] or P["text"]


# ---------------------------------------------------------------------------------------------
# Mutators

BOUNDARY_INTS = ["0", "-1", "1", "2", "3", "255", "65536", "2147483647", "2147483648", "-2147483648",
                 "-2147483649", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
                 "99999999999999999999999", "1e400", "NaN", "Infinity", "-0", "", " 1", "0x10", "1.5"]
JSON_NUMBERS = [0, -1, 1.5, 2 ** 31, 2 ** 53 + 1, 2 ** 63, 2 ** 64, -(2 ** 63) - 1, 10 ** 30,
                "1e400", "-1e400", "1e-400", "123456789012345678901234567890.5"]
SPECIAL = ["'", "\\", '"', "%", "$", "\u00e9", "\U0001F642", "\u202e", "\n", "\t", " ", ".", "=",
           "$argon2id$", "$2b$", "pbkdf2_sha256$", "$6$", "pgs_", "pga_", "eyJ", "==", "-", "_", "/", "+"]


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


class Mutator:
    def __init__(self, rnd, P):
        self.r = rnd
        self.P = P

    # bytes ------------------------------------------------------------------------------------
    def bytes_(self, b, pool):
        r = self.r
        b = bytearray(b)
        op = r.randrange(9)
        if op == 0 and b:  # bit flips
            for _ in range(r.randint(1, 4)):
                i = r.randrange(len(b))
                b[i] ^= 1 << r.randrange(8)
        elif op == 1:  # truncate
            b = b[:r.randint(0, len(b))]
        elif op == 2:  # extend
            b += os.urandom(r.choice((1, 7, 16, 64, 1000)))
        elif op == 3 and pool:  # splice with another valid value
            o = r.choice(pool)
            o = o if isinstance(o, (bytes, bytearray)) else str(o).encode()
            b = b[:r.randint(0, len(b))] + o[r.randint(0, len(o)):]
        elif op == 4 and b:  # overwrite a byte with a boundary value
            b[r.randrange(len(b))] = r.choice((0, 1, 0x7F, 0x80, 0xFF))
        elif op == 5:  # NUL bytes / invalid UTF-8
            i = r.randint(0, len(b))
            b[i:i] = r.choice((b"\x00", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"))
        elif op == 6:  # huge
            b = bytes(b or b"A") * (r.choice((4096, 4096, 64 * 1024, MAX_VALUE)) // max(1, len(b)) + 1)
            b = b[:MAX_VALUE]
        elif op == 7 and len(b) > 2:  # duplicate or delete a block
            i, j = sorted(r.sample(range(len(b)), 2))
            b = b[:i] + b[i:j] * r.randint(0, 3) + b[j:]
        else:  # random
            b = bytearray(os.urandom(r.choice((0, 1, 12, 28, 29, 60))))
        return bytes(b[:MAX_VALUE])

    # text -------------------------------------------------------------------------------------
    def text(self, s, pool):
        r = self.r
        op = r.randrange(12)
        if op <= 2:
            raw = self.bytes_(s.encode(), pool)
            return raw.replace(b"\x00", b"").decode("utf-8", "replace")
        if op == 3:
            i = r.randint(0, len(s))
            return (s[:i] + r.choice(SPECIAL) * r.choice((1, 1, 2, 100)) + s[i:])[:MAX_VALUE]
        if op == 4 and "." in s and s.count(".") == 2:
            return self.jwt(s)
        if op == 5:
            return self.encoded(s)
        if op == 6:
            return s.upper() if r.random() < 0.5 else s.lower()
        if op == 7:
            return r.choice(["", " ", s + " ", " " + s, s * 2, s[: len(s) // 2]])
        if op == 8 and "$" in s:  # PHC / crypt fields
            parts = s.split("$")
            i = r.randrange(len(parts))
            parts[i] = r.choice(["", "0", "99999999", "m=4294967295,t=1,p=1", "v=16", "m=8,t=0,p=0",
                                 "rounds=999999999", "rounds=1", "A" * 200, parts[i] * 2, "=", "-1"])
            return "$".join(parts)
        if op == 9 and "_" in s:  # prefixed tokens pgs_/pga_/otpauth
            head, _, tail = s.partition("_")
            return head + "_" + self.encoded(tail)
        if op == 10:
            return str(r.choice(BOUNDARY_INTS))
        return "".join(chr(r.choice((r.randrange(32, 127), r.randrange(0x80, 0x800), r.randrange(0x800, 0xD800))))
                       for _ in range(r.choice((1, 8, 32, 300))))

    def encoded(self, s):
        """base64/hex aware: decode, mutate the bytes, encode again."""
        r = self.r
        for dec, enc in ((b64url_decode, b64url), (bytes.fromhex, bytes.hex),
                         (base64.b64decode, lambda b: base64.b64encode(b).decode())):
            try:
                raw = dec(s)
            except Exception:
                continue
            return enc(self.bytes_(raw, None))
        return s[::-1]

    def jwt(self, s):
        r = self.r
        parts = s.split(".")
        op = r.randrange(6)
        if op == 0:
            parts.pop(r.randrange(len(parts)))
        elif op == 1:
            parts.append(r.choice(parts))
        elif op == 2:
            r.shuffle(parts)
        else:
            i = r.randrange(min(2, len(parts)))
            try:
                doc = json.loads(b64url_decode(parts[i]))
                if r.random() < 0.3:
                    doc["alg"] = r.choice(["none", "HS256", "RS256", "ES256", "EdDSA", "", None, 1])
                parts[i] = b64url(self.json_text(doc).encode())
            except Exception:
                parts[i] = self.encoded(parts[i])
            if op == 5:
                parts[2] = self.encoded(parts[2]) if len(parts) > 2 else ""
        return ".".join(parts)

    # json -------------------------------------------------------------------------------------
    def json_value(self, v):
        """One mutation at a random place of the document (any depth)."""
        r = self.r
        slots = []  # (container, key) of every value in the document

        def walk(x, depth):
            if depth > 50:
                return
            items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
            for k, y in items:
                slots.append((x, k))
                walk(y, depth + 1)

        walk(v, 0)
        if not slots or r.random() < 0.05:
            return self.wrong_type(v)
        parent, k = r.choice(slots)
        child = parent[k]
        op = r.randrange(8)
        if op == 0:
            del parent[k]  # a missing key / element
        elif op == 1:
            parent[k] = None
        elif op in (2, 3):
            parent[k] = self.wrong_type(child)
        elif op == 4 and isinstance(parent, dict):
            parent[k + r.choice(["x", "\u0000", k])] = parent.pop(k)
        elif op == 5 and isinstance(parent, list):
            parent.append(child)
        elif isinstance(child, str):
            parent[k] = self.text(child, None)
        elif isinstance(child, (int, float)) and not isinstance(child, bool):
            parent[k] = r.choice(JSON_NUMBERS)
        else:
            parent[k] = self.wrong_type(child)
        return v

    def wrong_type(self, v):
        r = self.r
        return r.choice([None, True, 0, -1, "", "x", [], {}, [v], {"v": v}, r.choice(JSON_NUMBERS),
                         [[[[[[[[v]]]]]]]], "\u0000", "A" * 5000])

    def json_text(self, doc):
        text = json.dumps(doc, ensure_ascii=self.r.random() < 0.5)
        # numbers json cannot write: placeholders as strings, unquoted here
        return re.sub(r'"(-?1e[-]?400|123456789012345678901234567890\.5)"', r"\1", text)

    def json(self, s, pool):
        r = self.r
        op = r.randrange(10)
        try:
            doc = json.loads(s)
        except Exception:
            doc = None
        if op == 0:
            return self.text(s, pool)  # syntax errors
        if op == 1:
            depth = r.choice((10, 100, 1000, 5000))
            return "[" * depth + r.choice(["1e400", "null", s]) + "]" * depth
        if op == 2 and pool:
            return json.dumps({"x": json.loads(r.choice(pool)) if r.random() < 0.5 else None, "y": doc})
        for _ in range(r.randint(1, 4)):
            doc = self.json_value(doc)
        return self.json_text(doc)[:MAX_VALUE]

    # scalars ----------------------------------------------------------------------------------
    def uuid_(self, s, pool):
        r = self.r
        op = r.randrange(8)
        if op == 0:
            return str(uuid.uuid4())
        if op >= 5 and pool:
            return r.choice(pool)  # another valid id (a key id as a user id, ...)
        if op == 1:
            return r.choice(["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"])
        if op == 2:  # flip one hex digit of a valid one
            i = r.randrange(len(s))
            return s[:i] + r.choice("0123456789abcdef") + s[i + 1:]
        return self.text(s, pool)  # mostly malformed: PostgreSQL's 22P02 at the parameter

    def value(self, typ, v, pool):
        if typ == "bytea":
            return self.bytes_(v, pool)
        if typ == "jsonb":
            return self.json(v, pool)
        if typ == "uuid":
            return self.uuid_(v, pool)
        if typ in ("integer", "bigint"):
            return self.r.choice(BOUNDARY_INTS + (pool or []))
        if typ == "boolean":
            return self.r.choice(["true", "false", "yes", "2", ""])
        if typ == "interval":
            return self.r.choice(["1 day", "-178000000 years", "178000000 years", "infinity", "1e400 seconds",
                                  "P1Y2M3DT4H", "0", "", "-1 microsecond", "2147483647 days"])
        if typ == "timestamp with time zone":
            return self.r.choice(["now", "infinity", "-infinity", "294277-01-01", "4714-11-24 BC",
                                  "epoch", "2000-13-01", ""])
        if typ == "inet":
            return self.r.choice(["192.0.2.1", "::ffff:1.2.3.4", "1.2.3.4/33", "::/0", "x", "",
                                  "2001:db8::1/128", "127.0.0.1"])
        return self.text(v, pool)


# ---------------------------------------------------------------------------------------------
# A worker: its own connections, its own share of the calls


def is_parameter_input(context):
    """The error arose converting a bind parameter to the argument's type (PostgreSQL's input
    function, before the call): the outermost CONTEXT line names the parameter and no line is
    inside a function or an SQL statement of one."""
    lines = (context or "").strip().splitlines()
    return bool(lines) and re.match(r"(unnamed portal|portal \S+) parameter \$\d+", lines[-1]) is not None \
        and not any(re.match(r"(SQL statement|PL/pgSQL function|SQL function)", l) for l in lines)


def literal(typ, v):
    if v is None:
        return f"NULL::{typ}"
    if isinstance(v, (bytes, bytearray)):
        return f"'\\x{bytes(v).hex()}'::{typ}"
    return "'" + str(v).replace("'", "''") + f"'::{typ}"


def reproducer(role, fn, values, bound):
    lits = [literal(t, v) for (n, t), v in zip(fn["args"], values)]
    # the query has "%s::type": rebuild it from the literals
    q = fn["query"]
    for (n, t), lit in zip(fn["args"], lits):
        q = q.replace(f"%s::{t}", lit, 1)
    pre = f"SET ROLE {role}; " + (f"BEGIN; SELECT auth_set_session({literal('text', bound)}); " if bound else "")
    return pre + q + ";"


class Worker:
    def __init__(self, args, P, funcs, documented, index):
        self.args = args
        self.P = P
        self.funcs = funcs
        self.documented = documented
        self.r = random.Random(args.seed * 1000 + index)
        self.m = Mutator(self.r, P)
        self.conns = {}
        self.calls = collections.Counter()  # (sig, role) -> n
        self.states = collections.defaultdict(collections.Counter)  # sig -> sqlstate -> n
        self.input_errors = collections.Counter()  # sqlstate -> n accepted as parameter conversion
        self.spent = collections.Counter()  # sig -> seconds
        self.findings = {}
        self.index = index
        self.progress = True

    def conn(self, role):
        c = self.conns.get(role)
        if c is None or c.closed:
            for attempt in range(60):
                try:
                    c = connect(self.args, role)
                    break
                except psycopg.OperationalError:
                    time.sleep(1)
            else:
                raise SystemExit("the server does not accept connections any more")
            self.conns[role] = c
        return c

    def arguments(self, fn):
        values = []
        mutate_all = self.r.random() < 0.3
        target = self.r.randrange(max(1, len(fn["args"])))
        for i, (name, typ) in enumerate(fn["args"]):
            pool = pool_for(self.P, name, typ)
            v = self.r.choice(pool) if pool else ""
            if self.r.random() < 0.04:
                v = None
            elif (mutate_all or i == target) and self.r.random() < 0.85:
                v = self.m.value(typ, v, pool)
            if isinstance(v, str) and "\x00" in v:
                v = v.replace("\x00", "")  # PostgreSQL text cannot hold NUL: bytea only
            values.append(v)
        return values

    def record(self, fn, role, values, bound, kind, code, msg):
        first = (msg or "").splitlines()[0] if msg else ""
        key = (fn["sig"], kind, code, re.sub(r"\"[^\"]*\"|[0-9a-f-]{8,}|\d+", "#", first)[:120])
        size = sum(len(v) if isinstance(v, (str, bytes)) else 0 for v in values)
        old = self.findings.get(key)
        if old is None or size < old["size"]:
            self.findings[key] = {
                "function": fn["sig"], "kind": kind, "sqlstate": code, "message": (msg or "")[:500],
                "role": role, "size": size, "count": (old or {}).get("count", 0),
                "args": [repr(v)[:2000] for v in values], "bound": bound,
                "sql": reproducer(role, fn, values, bound)[:20000],
            }
        self.findings[key]["count"] += 1

    def call(self, fn):
        r = self.r
        role = r.choices(ROLES, ROLE_WEIGHTS)[0]
        values = self.arguments(fn)
        bound = r.choice(self.P["token"][-6:]) if role != "fuzz_admin" and r.random() < 0.15 else None
        c = self.conn(role)
        t0 = time.perf_counter()
        code = msg = None
        try:
            if bound:
                with c.transaction():
                    c.execute("SELECT auth_set_session(%s)", (bound,))
                    c.execute(fn["query"], values).fetchall()
            else:
                c.execute(fn["query"], values).fetchall()
            code = "00000"
        except psycopg.Error as e:
            code, msg = e.sqlstate, str(e).strip()
            diag = e.diag
            if c.closed or c.broken or (code or "").startswith("57P"):
                self.record(fn, role, values, bound, "crash", code, f"connection lost: {msg}")
                self.conns.pop(role, None)
                time.sleep(2)
            elif code is None:  # refused by the client library before sending (none expected)
                self.record(fn, role, values, bound, "client", code, f"{type(e).__name__}: {msg}")
            elif code == "XX000":
                self.record(fn, role, values, bound, "internal", code, msg)
            elif code == "57014":
                self.record(fn, role, values, bound, "timeout", code, msg)
            elif code in self.documented:
                pass
            elif code in GENERIC_INPUT and is_parameter_input(diag.context):
                self.input_errors[code] += 1
                code = code + "(input)"
            else:
                self.record(fn, role, values, bound, "undocumented", code, msg + f" [context: {diag.context}]")
        self.spent[fn["sig"]] += time.perf_counter() - t0
        self.calls[(fn["sig"], role)] += 1
        self.states[fn["sig"]][code] += 1

    def pick(self, funcs, counts):
        # cost-fair: the function with the least time spent so far (slow ones get fewer calls,
        # cheap parsers more), with some randomness; every function is called early on
        if self.r.random() < 0.25:
            return self.r.choice(funcs)
        return min(funcs, key=lambda f: (self.spent[f["sig"]] + 1e-4 * counts[f["sig"]]) / f["weight"])

    def run(self, funcs, calls, deadline):
        counts = collections.Counter()
        n = 0
        last = time.time()
        while n < calls and time.time() < deadline:
            fn = self.pick(funcs, counts)
            counts[fn["sig"]] += 1
            self.call(fn)
            n += 1
            if self.progress and time.time() - last > 30:
                last = time.time()
                print(f"  worker {self.index}: {n} calls, {len(self.findings)} findings so far", flush=True)
        return n


def work(job):
    args, P, funcs, documented, index, calls, deadline = job
    w = Worker(args, P, funcs, documented, index)
    w.run(funcs, calls, deadline)
    for c in w.conns.values():
        c.close()
    return {"calls": dict(w.calls), "states": {k: dict(v) for k, v in w.states.items()},
            "input_errors": dict(w.input_errors), "spent": dict(w.spent), "findings": w.findings}


def run_phase(args, P, funcs, documented, calls, seconds, phase):
    deadline = time.time() + seconds
    per = [calls // args.workers + (1 if i < calls % args.workers else 0) for i in range(args.workers)]
    jobs = [(args, P, funcs, documented, phase * 100 + i, per[i], deadline) for i in range(args.workers)]
    if args.workers == 1:
        return [work(jobs[0])]
    with mp.get_context("fork").Pool(args.workers) as pool:
        return pool.map(work, jobs)


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=int(os.environ.get("FUZZ_SQL_CALLS", 1_000_000)))
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("FUZZ_SQL_SECONDS", 0)) or None,
                    help="stop after this long (the calls still cap the run)")
    ap.add_argument("--workers", type=int, default=int(os.environ.get("FUZZ_SQL_WORKERS", 2)))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SQL_SEED", 1)))
    ap.add_argument("--port", type=int, default=int(os.environ.get("FUZZ_SQL_PORT", 5620)))
    ap.add_argument("--root", default=os.environ.get("FUZZ_SQL_ROOT", "/tmp/sqlfuzz"))
    ap.add_argument("--pg-major", default=os.environ.get("PG_MAJOR", "15"))
    ap.add_argument("--pg-bin", default=os.environ.get("PG_BIN"))
    ap.add_argument("--report", default=os.path.join(REPO, "target/fuzz/sql_report.json"))
    ap.add_argument("--statement-timeout-ms", type=int, default=60000)
    ap.add_argument("--no-cluster", action="store_true", help="use a running cluster at --root/--port")
    ap.add_argument("--keep", action="store_true", help="leave the cluster running")
    ap.add_argument("--only", help="regex: fuzz only the functions whose signature matches")
    ap.add_argument("--undocument", action="append", default=[],
                    help="treat this documented SQLSTATE as undocumented (shows that the check can fail)")
    args = ap.parse_args()
    args.pg_bin = args.pg_bin or f"/usr/lib/postgresql/{args.pg_major}/bin"
    seconds = args.seconds or 365 * 86400

    documented = documented_sqlstates(os.path.join(REPO, "docs/reference.md"))
    documented.discard("XX000")  # documented as "a bug in pgauth": always a finding
    for code in args.undocument:
        documented.discard(code)
    log = os.path.join(args.root, "server.log")
    if not args.no_cluster:
        cluster(args, "start")
    log_start = os.path.getsize(log) if os.path.exists(log) else 0
    started = time.time()
    try:
        P = seed(args)
        funcs, skipped = extension_functions(args)
        if args.only:
            funcs = [f for f in funcs if re.search(args.only, f["sig"])]
        for f in funcs:
            f["weight"] = 1.0
        print(f"{len(funcs)} functions to fuzz, {len(skipped)} skipped:")
        for sig, why in skipped:
            print(f"  skipped {sig}: {why}")
        destructive = [f for f in funcs if f["destructive"]]
        rest = [f for f in funcs if not f["destructive"]]
        print("called last (destroy seeded state): " + ", ".join(sorted({f['name'] for f in destructive})))
        seed_secs = time.time() - started
        # the destructive phase gets a share of calls and time by its number of functions
        share = len(destructive) / max(1, len(funcs))
        results = []
        if rest:
            results += run_phase(args, P, rest, documented, int(args.calls * (1 - share)),
                                 (seconds - seed_secs) * (1 - share), 1)
        if destructive:
            done = sum(sum(r["calls"].values()) for r in results)
            results += run_phase(args, P, destructive, documented, args.calls - done,
                                 max(1.0, seconds - (time.time() - started)), 2)
    finally:
        crash_lines = []
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                f.seek(log_start)
                crash_lines = [l.rstrip() for l in f if LOG_CRASH.search(l)]
        if not args.no_cluster and not args.keep:
            cluster(args, "stop")

    calls = collections.Counter()
    states = collections.defaultdict(collections.Counter)
    input_errors = collections.Counter()
    spent = collections.Counter()
    findings = {}
    for r in results:
        calls.update({tuple(k): v for k, v in r["calls"].items()})
        for sig, st in r["states"].items():
            states[sig].update(st)
        input_errors.update(r["input_errors"])
        spent.update(r["spent"])
        for k, f in r["findings"].items():
            if k not in findings or f["size"] < findings[k]["size"]:
                count = findings.get(k, {}).get("count", 0)
                findings[k] = dict(f, count=count + f["count"])
            else:
                findings[k]["count"] += f["count"]
    for line in crash_lines:
        findings[("server.log", line)] = {"function": None, "kind": "crash", "sqlstate": None,
                                          "message": line, "count": 1}
    elapsed = time.time() - started
    total = sum(calls.values())
    per_role = collections.Counter()
    for (sig, role), n in calls.items():
        per_role[role] += n
    histogram = collections.Counter()
    for st in states.values():
        histogram.update(st)
    report = {
        "total_calls": total, "seconds": round(elapsed, 1), "calls_per_second": round(total / max(elapsed, 1e-9)),
        "workers": args.workers, "seed": args.seed, "calls_per_role": dict(per_role),
        "sqlstate_histogram": dict(histogram.most_common()),
        "documented_sqlstates": sorted(documented), "generic_input_allowed": GENERIC_INPUT,
        "functions": {sig: {"calls": {role: calls[(sig, role)] for role in ROLES},
                            "ms_per_call": round(1000 * spent[sig] / max(1, sum(calls[(sig, r)] for r in ROLES)), 3),
                            "sqlstates": dict(states[sig].most_common())}
                      for sig in sorted(states)},
        "skipped": [{"function": s, "why": w} for s, w in skipped],
        "findings": sorted(findings.values(), key=lambda f: (f["kind"], str(f["function"]))),
    }
    os.makedirs(os.path.dirname(args.report), exist_ok=True)
    with open(args.report, "w") as f:
        json.dump(report, f, indent=1, default=str)

    print(f"\n{total} calls in {elapsed:.0f} s ({report['calls_per_second']}/s), "
          f"{len(report['functions'])} functions; per role: {dict(per_role)}")
    print("SQLSTATEs: " + ", ".join(f"{k} {v}" for k, v in histogram.most_common()))
    print(f"{'function':<75} {'anon':>7} {'admin':>7} {'svc':>7} {'ms':>7}  sqlstates")
    for sig, fr in report["functions"].items():
        c = fr["calls"]
        print(f"{sig[:75]:<75} {c['fuzz_anon']:>7} {c['fuzz_admin']:>7} {c['fuzz_service']:>7} "
              f"{fr['ms_per_call']:>7}  " + " ".join(f"{k}:{v}" for k, v in list(fr["sqlstates"].items())[:8]))
    if findings:
        print(f"\n{len(findings)} FINDINGS (report: {args.report}):")
        for f in report["findings"]:
            print(f"- [{f['kind']}] {f['function']} {f['sqlstate']} x{f['count']}: {f['message'].splitlines()[0][:160]}")
            if f.get("sql"):
                print(f"    reproducer: {f['sql'][:400]}")
        return 1
    print(f"\nno findings (report: {args.report})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
