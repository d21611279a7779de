//! TOTP against an independent implementation (PyOTP): the code an authenticator app shows
//! is accepted once, and a replay of the same code is refused.

use pgauth_integration_tests::*;
use std::process::Command;

#[test]
fn pyotp_codes_verify_once() {
    let mut db = fresh_database("pgauth_it_mfa");
    let uid: String = db
        .query_one("SELECT auth_create_user('tess')::text", &[])
        .unwrap()
        .get(0);
    let uri: String = db
        .query_one("SELECT auth_totp_enroll($1::text::uuid, 'pgauth')", &[&uid])
        .unwrap()
        .get(0);
    // The authenticator app: PyOTP reads the otpauth URI and computes the current code.
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, pyotp; print(pyotp.parse_uri(sys.argv[1]).now(), end='')",
            &uri,
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pyotp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8(out.stdout).unwrap();
    assert_eq!(code.len(), 6);
    let verify = |db: &mut postgres::Client, code: &str| -> bool {
        db.query_one(
            "SELECT auth_totp_verify($1::text::uuid, $2)",
            &[&uid, &code],
        )
        .unwrap()
        .get(0)
    };
    assert!(verify(&mut db, &code), "the current code is accepted");
    assert!(
        !verify(&mut db, &code),
        "the same code is not accepted twice"
    );
    let events: i64 = db
        .query_one(
            "SELECT count(*) FROM pgauth.audit_log WHERE event IN ('totp_verified', 'totp_failed')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(events, 2);
}
