//! Helpers of the passkey integration tests (tests/webauthn.rs, tests/webauthn_step_up.rs): the
//! software authenticator (tests/webauthn/soft_authenticator.py), a database with two users and
//! the relying party set, registration and sign-in round trips, and the refusal reason the audit
//! log gives.

use crate::{fresh_database, run_python, sqlstate};
use postgres::Client;

pub const RP_ID: &str = "login.example.test";
pub const ORIGIN: &str = "https://login.example.test";

pub fn script() -> String {
    format!(
        "{}/webauthn/soft_authenticator.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Run the software authenticator with `options` on stdin; its JSON answer.
pub fn authenticator(args: &[&str], options: &str) -> String {
    let script = script();
    let mut all = vec![script.as_str()];
    all.extend_from_slice(args);
    run_python(&all, options)
}

pub struct Passkey {
    pub state: String,
}

impl Passkey {
    pub fn new(name: &str) -> Passkey {
        let state = format!(
            "{}/pgauth-webauthn-{name}-{}.json",
            std::env::temp_dir().display(),
            std::process::id()
        );
        Passkey { state }
    }

    pub fn create(&self, options: &str, extra: &[&str]) -> String {
        let mut args = vec!["create", "--state", &self.state, "--origin", ORIGIN];
        args.extend_from_slice(extra);
        authenticator(&args, options)
    }

    pub fn get(&self, options: &str, extra: &[&str]) -> String {
        let mut args = vec!["get", "--state", &self.state, "--origin", ORIGIN];
        args.extend_from_slice(extra);
        authenticator(&args, options)
    }
}

impl Drop for Passkey {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.state);
    }
}

pub fn setup(name: &str) -> (Client, String, String) {
    let mut db = fresh_database(name);
    // Settings are superuser-only; the test connects as a superuser. Limits off: this test
    // sends many failures from one address, and looks at lockout on its own.
    db.batch_execute(&format!(
        "SET pgauth.webauthn_rp_id = '{RP_ID}';
         SET pgauth.webauthn_origins = '{ORIGIN}';
         SET pgauth.webauthn_rp_name = 'pgauth integration test';
         SET pgauth.login_attempts_per_minute = 0;
         SET pgauth.max_failed_logins = 0;"
    ))
    .unwrap();
    let alice: String = db
        .query_one("SELECT auth_create_user('alice')::text", &[])
        .unwrap()
        .get(0);
    let bob: String = db
        .query_one("SELECT auth_create_user('bob')::text", &[])
        .unwrap()
        .get(0);
    (db, alice, bob)
}

pub fn register_begin(db: &mut Client, user: &str) -> String {
    db.query_one(
        "SELECT auth_webauthn_register_begin($1::text::uuid)::text",
        &[&user],
    )
    .unwrap()
    .get(0)
}

pub fn register_finish(db: &mut Client, user: &str, credential: &str) -> Result<String, String> {
    db.query_one(
        "SELECT auth_webauthn_register_finish($1::text::uuid, $2::text::jsonb, 'test key')::text",
        &[&user, &credential],
    )
    .map(|row| row.get(0))
    .map_err(|e| {
        assert_eq!(sqlstate(&e), Some("22023"), "{e:?}");
        e.as_db_error().unwrap().message().to_string()
    })
}

pub fn register(db: &mut Client, user: &str, key: &Passkey, extra: &[&str]) -> String {
    let options = register_begin(db, user);
    let credential = key.create(&options, extra);
    register_finish(db, user, &credential).expect("registration")
}

pub fn login_begin(db: &mut Client, username: Option<&str>) -> String {
    db.query_one("SELECT auth_webauthn_login_begin($1)::text", &[&username])
        .unwrap()
        .get(0)
}

pub struct Outcome {
    pub ok: bool,
    pub user_id: Option<String>,
    pub reason: String,
    pub access_token: Option<String>,
}

pub fn login_finish(db: &mut Client, assertion: &str) -> Outcome {
    let row = db
        .query_one(
            "SELECT ok, user_id::text, reason, access_token
               FROM auth_webauthn_login_finish($1::text::jsonb, '198.51.100.7')",
            &[&assertion],
        )
        .unwrap();
    Outcome {
        ok: row.get(0),
        user_id: row.get(1),
        reason: row.get(2),
        access_token: row.get(3),
    }
}

/// The `problem` of the latest failed passkey sign-in.
pub fn last_problem(db: &mut Client) -> String {
    db.query_one(
        "SELECT coalesce(new_values->>'problem', new_values->>'reason') FROM pgauth.audit_log
          WHERE event = 'webauthn_login_failed' ORDER BY id DESC LIMIT 1",
        &[],
    )
    .unwrap()
    .get(0)
}

pub fn assert_refused(db: &mut Client, outcome: &Outcome, problem: &str) {
    assert!(!outcome.ok, "expected a refusal for: {problem}");
    assert_eq!(outcome.reason, "invalid_credentials");
    assert!(outcome.access_token.is_none());
    let logged = last_problem(db);
    assert!(
        logged.contains(problem),
        "refused for \"{logged}\", expected \"{problem}\""
    );
}

pub fn sign_in_works(db: &mut Client, key: &Passkey, user: &str, username: Option<&str>) {
    sign_in_at(db, key, user, username, &[], 2);
}

/// Sign in and check the assurance level the access token binds: 2 with user verification,
/// 1 without.
pub fn sign_in_at(
    db: &mut Client,
    key: &Passkey,
    user: &str,
    username: Option<&str>,
    extra: &[&str],
    aal: i32,
) {
    let options = login_begin(db, username);
    let outcome = login_finish(db, &key.get(&options, extra));
    assert!(outcome.ok, "sign-in refused: {}", last_problem(db));
    assert_eq!(outcome.user_id.as_deref(), Some(user));
    let token = outcome.access_token.expect("an access token");
    // The token binds the user like a password login's, at the passkey's assurance level.
    let mut tx = db.transaction().unwrap();
    let bound: String = tx
        .query_one("SELECT auth_set_session($1)::text", &[&token])
        .unwrap()
        .get(0);
    assert_eq!(bound, user);
    let level: i32 = tx
        .query_one("SELECT auth_current_aal()", &[])
        .unwrap()
        .get(0);
    assert_eq!(level, aal);
    // The token's claims say the same: aal, and amr "hwk" (+ "user" with user verification).
    let (claimed_aal, amr): (String, String) = {
        let row = tx
            .query_one(
                "SELECT c->>'aal', c->>'amr' FROM auth_jwt_verify($1) c",
                &[&token],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(claimed_aal, aal.to_string());
    let expected_amr = if aal == 2 {
        r#"["hwk", "user"]"#
    } else {
        r#"["hwk"]"#
    };
    assert_eq!(amr, expected_amr);
    tx.rollback().unwrap();
}
