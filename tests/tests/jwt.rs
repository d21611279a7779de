//! JWT interop with an independent implementation (PyJWT with `cryptography`), in both
//! directions and for every algorithm; malformed and hostile tokens made by a real library; and
//! step-up with a TOTP code computed by PyOTP.

use pgauth_integration_tests::*;

/// Run a Python snippet with `input` on stdin; its stdout, trimmed.
fn python(script: &str, input: &str) -> String {
    run_python(&["-c", script], input).trim().to_string()
}

const ALGORITHMS: [&str; 6] = ["HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA"];

/// Tokens signed by pgauth verify in PyJWT with the public key from auth_jwks() (the secret for
/// HMAC keys, imported into pgauth from Python).
#[test]
fn pgauth_tokens_verify_in_pyjwt() {
    let mut db = fresh_database("pgauth_it_jwt_out");
    let secret =
        "cHlqd3QtaW50ZXJvcC1zZWNyZXQtb2YtNjQtYnl0ZXMtcGFkZGluZy1wYWRkaW5nLXBhZGRpbmctcGFkZGluZy0";
    for alg in ALGORITHMS {
        let name = format!("out-{}", alg.to_lowercase());
        if alg.starts_with("HS") {
            db.execute(
                "SELECT auth_import_signing_key($1, $2, $3)",
                &[&name, &alg, &secret],
            )
            .unwrap();
        } else {
            db.execute("SELECT auth_create_signing_key($1, $2)", &[&name, &alg])
                .unwrap();
        }
        let row = db
            .query_one(
                "SELECT auth_jwt_sign('{\"sub\": \"u-42\", \"aud\": \"api\"}', $1),
                        coalesce(auth_jwks($1)::text, '')",
                &[&name],
            )
            .unwrap();
        let (token, jwks): (String, String) = (row.get(0), row.get(1));
        let input = format!("{alg}\n{token}\n{jwks}\n{secret}\n");
        let sub = python(
            r#"
import sys, json, base64, jwt
alg, token, jwks, secret = sys.stdin.read().split("\n")[:4]
if alg.startswith("HS"):
    key = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
else:
    key = jwt.PyJWK(json.loads(jwks)["keys"][0]).key
claims = jwt.decode(token, key, algorithms=[alg], audience="api")
assert jwt.get_unverified_header(token)["kid"]
print(claims["sub"])
"#,
            &input,
        );
        assert_eq!(sub, "u-42", "{alg}");
    }
}

/// Tokens signed by PyJWT verify in pgauth once their key is imported (private PEM, public PEM
/// or HMAC secret); tampered, expired, not-yet-valid and wrong-key tokens are refused with 22023.
#[test]
fn pyjwt_tokens_verify_in_pgauth() {
    let mut db = fresh_database("pgauth_it_jwt_in");
    for alg in ALGORITHMS {
        // Python makes a key, gives pgauth the verifying half, and signs with a kid that pgauth
        // assigns on import.
        let material = python(
            r#"
import sys, os, base64
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, ec, ed25519
alg = sys.stdin.read().strip()
if alg.startswith("HS"):
    secret = os.urandom(64)
    print(base64.urlsafe_b64encode(secret).decode().rstrip("="))
else:
    key = {"RS256": lambda: rsa.generate_private_key(65537, 2048),
           "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
           "EdDSA": ed25519.Ed25519PrivateKey.generate}[alg]()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    print(base64.b64encode(priv.encode()).decode() + " " + base64.b64encode(pub.encode()).decode())
"#,
            alg,
        );
        let (signing_key, verifying_key) = if alg.starts_with("HS") {
            (material.clone(), material.clone())
        } else {
            let (p, q) = material.split_once(' ').unwrap();
            let decode = |s: &str| {
                python(
                    "import sys, base64; print(base64.b64decode(sys.stdin.read()).decode())",
                    s,
                ) + "\n"
            };
            (decode(p), decode(q))
        };
        let name = format!("in-{}", alg.to_lowercase());
        let kid: String = db
            .query_one(
                "SELECT auth_import_signing_key($1, $2, $3)::text",
                &[&name, &alg, &verifying_key],
            )
            .unwrap()
            .get(0);
        let sign = |claims: &str| {
            python(
                r#"
import sys, json, time, base64, jwt
alg, kid, claims, key = sys.stdin.read().split("\x1f")
if alg.startswith("HS"):
    key = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
claims = json.loads(claims)
now = int(time.time())
for k in ("exp", "nbf", "iat"):
    if k in claims:
        claims[k] = now + claims[k]
print(jwt.encode(claims, key, algorithm=alg, headers={"kid": kid}))
"#,
                &format!("{alg}\x1f{kid}\x1f{claims}\x1f{signing_key}"),
            )
        };
        let verify = |db: &mut postgres::Client, token: &str| {
            db.query_one("SELECT auth_jwt_verify($1, $2)->>'sub'", &[&token, &name])
                .map(|r| r.get::<_, Option<String>>(0))
        };
        let good = sign(r#"{"sub": "py-user", "exp": 300, "iat": 0}"#);
        assert_eq!(
            verify(&mut db, &good).unwrap().as_deref(),
            Some("py-user"),
            "{alg}"
        );
        for (what, claims) in [
            ("expired", r#"{"sub": "x", "exp": -3600}"#),
            ("not yet valid", r#"{"sub": "x", "exp": 7200, "nbf": 3600}"#),
            ("no exp", r#"{"sub": "x"}"#),
        ] {
            let token = sign(claims);
            let err = verify(&mut db, &token).expect_err(what);
            assert_eq!(sqlstate(&err), Some("22023"), "{alg} {what}");
        }
        // A flipped bit in the signature.
        let mut bad = good.clone().into_bytes();
        let i = bad.len() - 3;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        let err = verify(&mut db, &String::from_utf8(bad).unwrap()).unwrap_err();
        assert_eq!(sqlstate(&err), Some("22023"), "{alg} tampered");
        // The same token under another key name.
        let err = db
            .query_one("SELECT auth_jwt_verify($1, 'jwt')", &[&good])
            .unwrap_err();
        assert_eq!(sqlstate(&err), Some("22023"), "{alg} wrong key name");
    }
    // Hostile tokens made by hand: alg none, a huge header, bad base64, wrong segment counts.
    let kid: String = db
        .query_one(
            "SELECT id::text FROM pgauth.signing_keys WHERE name = 'in-hs256'",
            &[],
        )
        .unwrap()
        .get(0);
    let hostile = python(
        r#"
import sys, json, base64, time
kid = sys.stdin.read().strip()
b = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
exp = int(time.time()) + 300
print(b({"alg": "none", "kid": kid}) + "." + b({"sub": "x", "exp": exp}) + ".")
print(b({"alg": "HS256", "kid": kid, "pad": "x" * 100000}) + "." + b({"exp": exp}) + ".c2ln")
print("!!!." + b({"exp": exp}) + ".c2ln")
print(b({"alg": "HS256", "kid": kid}) + "." + b({"exp": exp}))
print(b({"alg": "HS256", "kid": kid}) + ".a.b.c")
print(b({"alg": "HS256", "kid": "00000000-0000-0000-0000-000000000000"}) + "." + b({"exp": exp}) + ".c2ln")
"#,
        &kid,
    );
    for token in hostile.lines() {
        let err = db
            .query_one("SELECT auth_jwt_verify($1, 'in-hs256')", &[&token])
            .unwrap_err();
        assert_eq!(sqlstate(&err), Some("22023"), "{:.60}", token);
        let message = err.as_db_error().unwrap().message().to_string();
        assert_eq!(
            message, "invalid token",
            "no detail about which part failed"
        );
    }
}

/// Sign-in with a password gives aal 1; a permission with min_aal 2 is refused until a TOTP code
/// from PyOTP steps the session up; the level stays with the session and does not leak into a
/// connection's next transaction without a binding.
#[test]
fn totp_step_up_gates_min_aal_permission() {
    let mut db = fresh_database("pgauth_it_stepup");
    let uid: String = db
        .query_one(
            "SELECT auth_create_user('stella', 'Lilac-Harbor-Quince-88')::text",
            &[],
        )
        .unwrap()
        .get(0);
    db.batch_execute(
        "SELECT auth_create_role('payer');
         SELECT auth_grant_permission('payer', 'pay.send', 2);",
    )
    .unwrap();
    db.execute("SELECT auth_assign_role($1::text::uuid, 'payer')", &[&uid])
        .unwrap();
    let uri: String = db
        .query_one("SELECT auth_totp_enroll($1::text::uuid)", &[&uid])
        .unwrap()
        .get(0);
    let access: String = db
        .query_one(
            "SELECT access_token FROM auth_login('stella', 'Lilac-Harbor-Quince-88', '198.51.100.7')",
            &[],
        )
        .unwrap()
        .get(0);
    let mut tx = db.transaction().unwrap();
    tx.execute("SELECT auth_set_session($1)", &[&access])
        .unwrap();
    let allowed: bool = tx
        .query_one("SELECT auth_has_permission('pay.send')", &[])
        .unwrap()
        .get(0);
    assert!(!allowed, "aal 1 must not satisfy min_aal 2");
    let code = python(
        "import sys, pyotp; print(pyotp.parse_uri(sys.stdin.read()).now())",
        &uri,
    );
    let stepped: bool = tx
        .query_one("SELECT auth_step_up($1)", &[&code])
        .unwrap()
        .get(0);
    assert!(stepped);
    let allowed: bool = tx
        .query_one("SELECT auth_has_permission('pay.send')", &[])
        .unwrap()
        .get(0);
    assert!(allowed, "aal 2 after step-up");
    tx.commit().unwrap();
    // Next transaction on the same connection: nothing bound, nothing allowed.
    let row = db
        .query_one(
            "SELECT auth_current_aal(), auth_has_permission('pay.send')",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, Option<i32>>(0), None);
    assert!(!row.get::<_, bool>(1));
    // The same code cannot step up twice (replay).
    let mut tx = db.transaction().unwrap();
    tx.execute("SELECT auth_set_session($1)", &[&access])
        .unwrap();
    let again: bool = tx
        .query_one("SELECT auth_step_up($1)", &[&code])
        .unwrap()
        .get(0);
    assert!(!again, "a TOTP code is accepted once");
    tx.commit().unwrap();
}

/// Five wrong TOTP codes block TOTP verification for a while, so six digits cannot be guessed.
#[test]
fn totp_guessing_is_limited() {
    let mut db = fresh_database("pgauth_it_totp_limit");
    let uid: String = db
        .query_one("SELECT auth_create_user('guess')::text", &[])
        .unwrap()
        .get(0);
    let uri: String = db
        .query_one("SELECT auth_totp_enroll($1::text::uuid)", &[&uid])
        .unwrap()
        .get(0);
    for _ in 0..5 {
        let ok: bool = db
            .query_one("SELECT auth_totp_verify($1::text::uuid, '000000')", &[&uid])
            .unwrap()
            .get(0);
        // 000000 could be the current code once in a million runs: then this test says so.
        assert!(!ok, "000000 happened to be the current code; rerun");
    }
    let code = python(
        "import sys, pyotp; print(pyotp.parse_uri(sys.stdin.read()).now())",
        &uri,
    );
    let ok: bool = db
        .query_one(
            "SELECT auth_totp_verify($1::text::uuid, $2)",
            &[&uid, &code],
        )
        .unwrap()
        .get(0);
    assert!(!ok, "even the right code is refused while blocked");
    let limited: i64 = db
        .query_one(
            "SELECT count(*) FROM pgauth.audit_log WHERE event = 'totp_rate_limited'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(limited, 1);
}
