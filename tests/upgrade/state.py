"""What a database holds when it uses every pgauth feature, made and checked through SQL: shared
by the upgrade test (tests/upgrade/upgrade.py) and the pg_upgrade test (tests/upgrade/pg_upgrade.py).

`fill` uses only functions that version 0.1.0 already had, so the upgrade test can run it against
the 0.1.0 build; `check` uses what it made through the current version.
"""
import json
import os
import subprocess

import psycopg
import pyotp

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RP_ID = "login.example.test"
ORIGIN = "https://login.example.test"
PASSWORD = "Tr4vel-Quartz-Mango-71"
SETTINGS = (
    f"SET pgauth.webauthn_rp_id = '{RP_ID}'; SET pgauth.webauthn_origins = '{ORIGIN}';"
    " SET pgauth.webauthn_rp_name = 'upgrade test';"
)


def step(text):
    print(f"-- {text}", flush=True)


def connect_to(port, dbname):
    return psycopg.connect(
        f"host=127.0.0.1 port={port} user=postgres dbname={dbname}", autocommit=True
    )


def one(db, sql, *params):
    return db.execute(sql, params).fetchone()[0]


def authenticator(command, state, options):
    out = subprocess.run(
        ["python3", os.path.join(REPO, "tests", "webauthn", "soft_authenticator.py"), command,
         "--state", state, "--origin", ORIGIN],
        input=json.dumps(options) if not isinstance(options, str) else options,
        capture_output=True, text=True, check=True,
    )
    return out.stdout


def audit_rows(db):
    return db.execute(
        "SELECT id, event, table_name, row_key, old_values, new_values, record_digest"
        "  FROM pgauth.audit_log ORDER BY id"
    ).fetchall()


def fill(db, state):
    """Every kind of state, made by 0.1.0. Returns what the checks need."""
    s = {}
    db.execute(SETTINGS)
    db.execute("SET pgauth.login_attempts_per_minute = 0")
    s["alice"] = str(one(db, "SELECT auth_create_user('alice', %s)", PASSWORD))
    s["bob"] = str(one(db, "SELECT auth_create_user('bob', %s)", PASSWORD))
    db.execute("SELECT auth_create_group('staff')")
    db.execute("SELECT auth_add_member('staff', %s)", (s["bob"],))
    db.execute("SELECT auth_create_role('reader')")
    db.execute("SELECT auth_create_role('editor', ARRAY['reader'])")
    db.execute("SELECT auth_grant_permission('reader', 'doc.read')")
    db.execute("SELECT auth_grant_permission('editor', 'doc.write')")
    db.execute("SELECT auth_assign_role(%s, 'editor', scope => '1')", (s["alice"],))
    db.execute("SELECT auth_assign_group_role('staff', 'reader', scope => '2')")
    # Data keys, a usage grant, encrypted columns (a rotated key: two versions in use).
    db.execute("DROP ROLE IF EXISTS pgauth_upgrade_app")
    db.execute("CREATE ROLE pgauth_upgrade_app")
    db.execute("SELECT auth_create_key('pii')")
    db.execute("SELECT auth_grant_key_usage('pii', 'pgauth_upgrade_app')")
    db.execute("CREATE TABLE patients (id int PRIMARY KEY, ssn bytea, note bytea)")
    db.execute(
        "INSERT INTO patients SELECT i, auth_encrypt('ssn-' || i, 'pii', int4send(i)),"
        " auth_encrypt('note-' || i) FROM generate_series(1, 5) i"
    )
    db.execute("SELECT auth_rotate_key('pii')")
    db.execute(
        "INSERT INTO patients SELECT i, auth_encrypt('ssn-' || i, 'pii', int4send(i)),"
        " auth_encrypt('note-' || i) FROM generate_series(6, 10) i"
    )
    s["blind"] = one(db, "SELECT encode(auth_blind_index('ssn-1', 'pii'), 'hex')")
    # Signing keys: a general-purpose one signs a token; logins create the access key.
    db.execute("SELECT auth_create_signing_key('svc', 'EdDSA')")
    s["svc_token"] = one(db, "SELECT auth_jwt_sign('{\"sub\": \"svc\"}', 'svc', '1 day')")
    # Sessions and tokens.
    row = db.execute(
        "SELECT ok, access_token, refresh_token FROM auth_login('alice', %s)", (PASSWORD,)
    ).fetchone()
    assert row[0], "0.1.0 login"
    s["access"], s["refresh"] = row[1], row[2]
    s["session"] = one(db, "SELECT auth_create_session(%s)", s["alice"])
    s["api_key"] = one(
        db, "SELECT auth_create_api_key(%s, 'ci', ARRAY['doc.read'])", s["alice"]
    )
    # TOTP and recovery codes for bob.
    uri = one(db, "SELECT auth_totp_enroll(%s, 'pgauth')", s["bob"])
    s["totp"] = pyotp.parse_uri(uri).secret
    s["codes"] = [r[0] for r in db.execute("SELECT auth_recovery_codes(%s)", (s["bob"],))]
    # A passkey for alice.
    options = one(db, "SELECT auth_webauthn_register_begin(%s)::text", s["alice"])
    credential = authenticator("create", state, options)
    db.execute(
        "SELECT auth_webauthn_register_finish(%s, %s::jsonb, 'laptop')", (s["alice"], credential)
    )
    # Row-level security the 0.1.0 way (one FOR ALL policy).
    db.execute("CREATE TABLE docs (id int PRIMARY KEY, tenant_id bigint, title text)")
    db.execute("SELECT auth_rls_enable('docs', 'doc.read', 'tenant_id')")
    # An audited table, written, sealed.
    db.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, customer text, amount numeric(10,2),"
        " placed timestamptz DEFAULT '2026-01-02 03:04:05+00', tags text[], meta jsonb)"
    )
    db.execute("SELECT auth_audit_enable('orders')")
    db.execute(
        "INSERT INTO orders (id, customer, amount, tags, meta) SELECT i, 'c' || i, i * 1.5,"
        " ARRAY['a', 'b'], jsonb_build_object('n', i) FROM generate_series(1, 20) i"
    )
    db.execute("UPDATE orders SET amount = amount + 1 WHERE id <= 5")
    db.execute("DELETE FROM orders WHERE id = 20")
    db.execute("SELECT auth_audit_seal()")
    ok = db.execute("SELECT ok FROM auth_audit_verify()").fetchone()[0]
    assert ok, "0.1.0 chain verifies"
    s["audit"] = audit_rows(db)
    s["events_total"] = len(s["audit"])
    s["decrypted"] = db.execute(
        "SELECT id, auth_decrypt_text(ssn, int4send(id)), auth_decrypt_text(note)"
        "  FROM patients ORDER BY id"
    ).fetchall()
    return s


def check(db, s, state):
    """What 0.1.0 made, used through 0.2.0."""
    db.execute(SETTINGS)
    db.execute("SET pgauth.login_attempts_per_minute = 0")
    decrypted = db.execute(
        "SELECT id, auth_decrypt_text(ssn, int4send(id)), auth_decrypt_text(note)"
        "  FROM patients ORDER BY id"
    ).fetchall()
    assert decrypted == s["decrypted"], "values decrypt as before"
    assert one(db, "SELECT encode(auth_blind_index('ssn-1', 'pii'), 'hex')") == s["blind"]
    assert one(db, "SELECT count(*) FROM pgauth.key_grants WHERE grantee_oid = "
                   "'pgauth_upgrade_app'::regrole") == 1, "key grant resolved to the role's OID"
    db.execute("UPDATE patients SET ssn = auth_reencrypt(ssn, int4send(id))")
    assert db.execute(
        "SELECT id, auth_decrypt_text(ssn, int4send(id)), auth_decrypt_text(note)"
        "  FROM patients ORDER BY id"
    ).fetchall() == s["decrypted"], "re-encrypted values decrypt"
    # Passwords: a login with the 0.1.0 hash; a wrong password is refused.
    row = db.execute("SELECT ok, reason FROM auth_login('alice', %s)", (PASSWORD,)).fetchone()
    assert row == (True, "ok"), f"login after the update: {row}"
    row = db.execute("SELECT ok, reason FROM auth_login('alice', 'wrong')").fetchone()
    assert row == (False, "invalid_credentials"), row
    # Tokens: the 0.1.0 access token binds (its key is now the access-purpose key); the old
    # refresh token rotates once and is then reuse; the 0.1.0 session token binds.
    with db.transaction():
        assert str(one(db, "SELECT auth_set_session(%s)", s["access"])) == s["alice"]
        assert one(db, "SELECT auth_has_permission('doc.write', '1')") is True
        assert one(db, "SELECT auth_has_permission('doc.read', '1')") is True
        assert one(db, "SELECT auth_has_permission('doc.read', '2')") is False
    assert one(db, "SELECT purpose FROM pgauth.signing_keys WHERE name = 'jwt' LIMIT 1") == "access"
    assert one(db, "SELECT purpose FROM pgauth.signing_keys WHERE name = 'svc'") == "general"
    with db.transaction():
        assert str(one(db, "SELECT auth_set_session(%s)", s["session"])) == s["alice"]
    rotated = db.execute("SELECT * FROM auth_refresh(%s)", (s["refresh"],)).fetchone()
    assert rotated[0] and rotated[1]
    reused = db.execute("SELECT * FROM auth_refresh(%s)", (s["refresh"],)).fetchone()
    assert reused is None, "a used refresh token gives no row"
    claims = one(db, "SELECT auth_jwt_verify(%s, 'svc')", s["svc_token"])
    assert claims["sub"] == "svc", claims
    assert str(one(db, "SELECT auth_verify_api_key(%s)", s["api_key"])) == s["alice"]
    # Group grant: bob reads tenant 2.
    assert one(db, "SELECT auth_user_has_permission(%s, 'doc.read', '2')", s["bob"]) is True
    # TOTP and a recovery code.
    assert one(db, "SELECT auth_totp_verify(%s, %s)", s["bob"], pyotp.TOTP(s["totp"]).now())
    assert one(db, "SELECT auth_use_recovery_code(%s, %s)", s["bob"], s["codes"][0])
    assert not one(db, "SELECT auth_use_recovery_code(%s, %s)", s["bob"], s["codes"][0])
    # The passkey signs in.
    options = one(db, "SELECT auth_webauthn_login_begin('alice')::text")
    assertion = authenticator("get", state, options)
    row = db.execute(
        "SELECT ok, user_id::text FROM auth_webauthn_login_finish(%s::jsonb)", (assertion,)
    ).fetchone()
    assert row == (True, s["alice"]), f"passkey sign-in after the update: {row}"
    # The audit log reads as before, verifies, and goes on.
    assert audit_rows(db)[: s["events_total"]] == s["audit"], "0.1.0 events read as before"
    db.execute("INSERT INTO orders (id, customer, amount) VALUES (100, 'after', 1)")
    db.execute("SELECT auth_audit_seal()")
    verdict = db.execute("SELECT ok, checked, first_bad_id, reason FROM auth_audit_verify()").fetchone()
    assert verdict[0], f"chain after the update: {verdict}"
    assert verdict[1] > s["events_total"], verdict
    last = db.execute(
        "SELECT new_values FROM pgauth.audit_log WHERE table_name = 'public.orders'"
        " ORDER BY id DESC LIMIT 1"
    ).fetchone()[0]
    assert last["customer"] == "after", last
