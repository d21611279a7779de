//! Passkeys end to end: a software authenticator in Python (`fido2` + `cryptography`,
//! tests/webauthn/soft_authenticator.py) plays browser and authenticator. It gets the options
//! JSON from auth_webauthn_*_begin and answers with the JSON a browser's
//! `PublicKeyCredential.toJSON()` gives, which goes to auth_webauthn_*_finish unchanged.
//! Every refusal is checked for its reason in the audit log, so a refusal for the wrong
//! reason fails the test.

use pgauth_integration_tests::*;
use postgres::Client;

const RP_ID: &str = "login.example.test";
const ORIGIN: &str = "https://login.example.test";

fn script() -> String {
    format!(
        "{}/webauthn/soft_authenticator.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Run the software authenticator with `options` on stdin; its JSON answer.
fn authenticator(args: &[&str], options: &str) -> String {
    let script = script();
    let mut all = vec![script.as_str()];
    all.extend_from_slice(args);
    run_python(&all, options)
}

struct Passkey {
    state: String,
}

impl Passkey {
    fn new(name: &str) -> Passkey {
        let state = format!(
            "{}/pgauth-webauthn-{name}-{}.json",
            std::env::temp_dir().display(),
            std::process::id()
        );
        Passkey { state }
    }

    fn create(&self, options: &str, extra: &[&str]) -> String {
        let mut args = vec!["create", "--state", &self.state, "--origin", ORIGIN];
        args.extend_from_slice(extra);
        authenticator(&args, options)
    }

    fn get(&self, options: &str, extra: &[&str]) -> String {
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

fn setup(name: &str) -> (Client, String, String) {
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

fn register_begin(db: &mut Client, user: &str) -> String {
    db.query_one(
        "SELECT auth_webauthn_register_begin($1::text::uuid)::text",
        &[&user],
    )
    .unwrap()
    .get(0)
}

fn register_finish(db: &mut Client, user: &str, credential: &str) -> Result<String, String> {
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

fn register(db: &mut Client, user: &str, key: &Passkey, extra: &[&str]) -> String {
    let options = register_begin(db, user);
    let credential = key.create(&options, extra);
    register_finish(db, user, &credential).expect("registration")
}

fn login_begin(db: &mut Client, username: Option<&str>) -> String {
    db.query_one("SELECT auth_webauthn_login_begin($1)::text", &[&username])
        .unwrap()
        .get(0)
}

struct Outcome {
    ok: bool,
    user_id: Option<String>,
    reason: String,
    access_token: Option<String>,
}

fn login_finish(db: &mut Client, assertion: &str) -> Outcome {
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
fn last_problem(db: &mut Client) -> String {
    db.query_one(
        "SELECT coalesce(new_values->>'problem', new_values->>'reason') FROM pgauth.audit_log
          WHERE event = 'webauthn_login_failed' ORDER BY id DESC LIMIT 1",
        &[],
    )
    .unwrap()
    .get(0)
}

fn assert_refused(db: &mut Client, outcome: &Outcome, problem: &str) {
    assert!(!outcome.ok, "expected a refusal for: {problem}");
    assert_eq!(outcome.reason, "invalid_credentials");
    assert!(outcome.access_token.is_none());
    let logged = last_problem(db);
    assert!(
        logged.contains(problem),
        "refused for \"{logged}\", expected \"{problem}\""
    );
}

fn sign_in_works(db: &mut Client, key: &Passkey, user: &str, username: Option<&str>) {
    sign_in_at(db, key, user, username, &[], 2);
}

/// Sign in and check the assurance level the access token binds: 2 with user verification,
/// 1 without.
fn sign_in_at(
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

#[test]
fn es256_and_eddsa_register_and_sign_in() {
    let (mut db, alice, bob) = setup("pgauth_it_webauthn");
    for alg in ["ES256", "EdDSA"] {
        let key = Passkey::new(&format!("alice-{alg}"));
        let fmt = if alg == "ES256" { "none" } else { "packed" };
        let id = register(&mut db, &alice, &key, &["--alg", alg, "--fmt", fmt]);
        let (stored_alg, format): (String, String) = db
            .query_one(
                "SELECT c.algorithm, w.attestation_format
                   FROM auth_webauthn_credentials($1::text::uuid) c
                   JOIN pgauth.webauthn_credentials w ON w.id = c.id
                  WHERE c.id = $2::text::uuid",
                &[&alice, &id],
            )
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!((stored_alg.as_str(), format.as_str()), (alg, fmt));
        // With the username (allowCredentials), and as a discoverable credential.
        sign_in_works(&mut db, &key, &alice, Some("alice"));
        sign_in_works(&mut db, &key, &alice, None);
        let count: i64 = db
            .query_one(
                "SELECT sign_count FROM pgauth.webauthn_credentials WHERE id = $1::text::uuid",
                &[&id],
            )
            .unwrap()
            .get(0);
        assert_eq!(count, 2, "the sign counter follows the authenticator's");
    }
    let bob_key = Passkey::new("bob");
    register(&mut db, &bob, &bob_key, &[]);
    sign_in_works(&mut db, &bob_key, &bob, Some("bob"));
    // Without user verification (allowed while pgauth.webauthn_user_verification is
    // preferred): assurance level 1.
    sign_in_at(&mut db, &bob_key, &bob, Some("bob"), &["--no-uv"], 1);
    let events: Vec<(String, i64)> = db
        .query(
            "SELECT event, count(*) FROM pgauth.audit_log WHERE event LIKE 'webauthn%'
              GROUP BY 1 ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        events,
        vec![
            ("webauthn_login_succeeded".to_string(), 6),
            ("webauthn_registered".to_string(), 3)
        ]
    );
    // The audit rows say which level each sign-in got.
    let aal: String = db
        .query_one(
            "SELECT string_agg(new_values->>'aal', ',' ORDER BY id) FROM pgauth.audit_log
              WHERE event = 'webauthn_login_succeeded'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(aal, "2,2,2,2,2,1");
}

#[test]
fn sign_in_refusals() {
    let (mut db, alice, _bob) = setup("pgauth_it_webauthn_refusals");
    let key = Passkey::new("refusals");
    register(&mut db, &alice, &key, &["--alg", "ES256"]);
    let bob_key = Passkey::new("refusals-bob");
    register(&mut db, &_bob, &bob_key, &["--alg", "EdDSA"]);

    // Replayed: a response that was accepted once is refused the second time.
    let options = login_begin(&mut db, Some("alice"));
    let assertion = key.get(&options, &[]);
    assert!(login_finish(&mut db, &assertion).ok);
    let replay = login_finish(&mut db, &assertion);
    assert_refused(&mut db, &replay, "unknown or already used challenge");

    // A failed attempt also uses up its challenge: a good answer to it comes too late.
    let options = login_begin(&mut db, Some("alice"));
    let outcome = login_finish(&mut db, &key.get(&options, &["--flip-signature"]));
    assert_refused(&mut db, &outcome, "signature does not verify");
    let outcome = login_finish(&mut db, &key.get(&options, &[]));
    assert_refused(&mut db, &outcome, "unknown or already used challenge");

    // Wrong origin, wrong rp id.
    let options = login_begin(&mut db, Some("alice"));
    let outcome = login_finish(
        &mut db,
        &key.get(
            &options,
            &["--origin", "https://login.example.test.evil.example"],
        ),
    );
    assert_refused(
        &mut db,
        &outcome,
        "origin is not in pgauth.webauthn_origins",
    );
    let options = login_begin(&mut db, Some("alice"));
    let outcome = login_finish(&mut db, &key.get(&options, &["--rp-id", "example.test"]));
    assert_refused(&mut db, &outcome, "rpIdHash");

    // Expired: the stored expiry is moved into the past (no waiting in tests).
    let options = login_begin(&mut db, Some("alice"));
    db.execute(
        "UPDATE pgauth.webauthn_challenges SET expires_at = now() - interval '1 second'",
        &[],
    )
    .unwrap();
    let outcome = login_finish(&mut db, &key.get(&options, &[]));
    assert_refused(&mut db, &outcome, "the challenge has expired");

    // Wrong user: a challenge issued for bob answered with alice's passkey, and bob's passkey
    // claiming alice's user handle for a discoverable sign-in.
    let options = login_begin(&mut db, Some("bob"));
    let outcome = login_finish(&mut db, &key.get(&options, &[]));
    assert_refused(&mut db, &outcome, "issued for another user");
    let options = login_begin(&mut db, None);
    let mut forged: serde_like::Json = serde_like::parse(&bob_key.get(&options, &[]));
    let alice_handle: String = db
        .query_one(
            "SELECT translate(encode(handle, 'base64'), '+/=', '-_')
               FROM pgauth.webauthn_user_handles WHERE user_id = $1::text::uuid",
            &[&alice],
        )
        .unwrap()
        .get(0);
    forged.set_user_handle(&alice_handle);
    let outcome = login_finish(&mut db, &forged.text);
    assert_refused(
        &mut db,
        &outcome,
        "userHandle does not belong to the credential",
    );

    // Counter rollback: a valid signature with a counter below the stored one.
    let stored: i64 = db
        .query_one(
            "SELECT sign_count FROM pgauth.webauthn_credentials c JOIN pgauth.users u
                 ON u.id = c.user_id WHERE u.username = 'alice'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(stored >= 1);
    let options = login_begin(&mut db, Some("alice"));
    let outcome = login_finish(&mut db, &key.get(&options, &["--counter", "1"]));
    assert_refused(&mut db, &outcome, "possible cloned authenticator");
    let rollback: (String, String) = db
        .query_one(
            "SELECT new_values->>'stored_count', new_values->>'received_count' FROM pgauth.audit_log
              WHERE event = 'webauthn_counter_rollback' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(rollback, (stored.to_string(), "1".to_string()));

    // User verification required: a response without UV is refused.
    db.batch_execute("SET pgauth.webauthn_user_verification = required")
        .unwrap();
    let options = login_begin(&mut db, Some("alice"));
    assert!(options.contains("\"userVerification\": \"required\""));
    let outcome = login_finish(
        &mut db,
        &key.get(&options, &["--no-uv", "--counter", "1000"]),
    );
    assert_refused(&mut db, &outcome, "user-verified flag is not set");
    db.batch_execute("RESET pgauth.webauthn_user_verification")
        .unwrap();

    // After all that, the genuine authenticator still gets in.
    let options = login_begin(&mut db, Some("alice"));
    let outcome = login_finish(&mut db, &key.get(&options, &["--counter", "2000"]));
    assert!(outcome.ok, "{}", last_problem(&mut db));
}

#[test]
fn registration_refusals() {
    let (mut db, alice, bob) = setup("pgauth_it_webauthn_register");
    let key = Passkey::new("register-refusals");

    // Replayed registration: the same response twice.
    let options = register_begin(&mut db, &alice);
    let credential = key.create(&options, &[]);
    register_finish(&mut db, &alice, &credential).unwrap();
    let err = register_finish(&mut db, &alice, &credential).unwrap_err();
    assert!(err.contains("unknown or already used challenge"), "{err}");

    // Wrong origin, wrong rp id, wrong user, expired.
    let options = register_begin(&mut db, &alice);
    let credential = key.create(&options, &["--origin", "https://evil.example"]);
    let err = register_finish(&mut db, &alice, &credential).unwrap_err();
    assert!(err.contains("origin"), "{err}");
    let credential = key.create(&options, &["--rp-id", "evil.example"]);
    let err = register_finish(&mut db, &alice, &credential).unwrap_err();
    assert!(err.contains("rpIdHash"), "{err}");
    let credential = key.create(&options, &[]);
    let err = register_finish(&mut db, &bob, &credential).unwrap_err();
    assert!(err.contains("issued for another user"), "{err}");
    db.execute(
        "UPDATE pgauth.webauthn_challenges SET expires_at = now() - interval '1 second'",
        &[],
    )
    .unwrap();
    let err = register_finish(&mut db, &alice, &credential).unwrap_err();
    assert!(err.contains("expired"), "{err}");

    // A registered passkey cannot be registered again (also not for another user).
    let existing = Passkey::new("register-existing");
    register(&mut db, &alice, &existing, &[]);
    let options = register_begin(&mut db, &bob);
    let again = existing.create(&options, &["--reuse"]);
    let err = register_finish(&mut db, &bob, &again).unwrap_err();
    assert!(err.contains("already registered"), "{err}");

    // UV required at registration.
    db.batch_execute("SET pgauth.webauthn_user_verification = required")
        .unwrap();
    let options = register_begin(&mut db, &alice);
    let credential = Passkey::new("register-no-uv").create(&options, &["--no-uv"]);
    let err = register_finish(&mut db, &alice, &credential).unwrap_err();
    assert!(err.contains("user verification is required"), "{err}");
    db.batch_execute("RESET pgauth.webauthn_user_verification")
        .unwrap();

    // Only the successful registrations are stored and audited.
    let (stored, audited): (i64, i64) = db
        .query_one(
            "SELECT (SELECT count(*) FROM pgauth.webauthn_credentials),
                    (SELECT count(*) FROM pgauth.audit_log WHERE event = 'webauthn_registered')",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((stored, audited), (2, 2));
}

#[test]
fn lockout_applies_to_passkeys() {
    let (mut db, alice, _bob) = setup("pgauth_it_webauthn_lockout");
    db.batch_execute("SET pgauth.max_failed_logins = 3")
        .unwrap();
    let key = Passkey::new("lockout");
    register(&mut db, &alice, &key, &[]);
    for _ in 0..3 {
        let options = login_begin(&mut db, Some("alice"));
        let outcome = login_finish(&mut db, &key.get(&options, &["--flip-signature"]));
        assert_refused(&mut db, &outcome, "signature does not verify");
    }
    let options = login_begin(&mut db, Some("alice"));
    let outcome = login_finish(&mut db, &key.get(&options, &[]));
    assert!(!outcome.ok);
    assert_eq!(outcome.reason, "locked");
    db.execute("SELECT auth_unlock_user($1::text::uuid)", &[&alice])
        .unwrap();
    let options = login_begin(&mut db, Some("alice"));
    assert!(login_finish(&mut db, &key.get(&options, &[])).ok);
}

/// Tiny JSON edits without a JSON crate (the tests package depends only on `postgres`).
mod serde_like {
    pub struct Json {
        pub text: String,
    }

    pub fn parse(text: &str) -> Json {
        Json {
            text: text.trim().to_string(),
        }
    }

    impl Json {
        pub fn set_user_handle(&mut self, handle: &str) {
            let key = "\"userHandle\": \"";
            let start = self.text.find(key).expect("userHandle") + key.len();
            let end = self.text[start..].find('"').unwrap() + start;
            self.text.replace_range(start..end, handle);
        }
    }
}

#[test]
fn packed_attestation_with_a_certificate() {
    let (mut db, alice, _bob) = setup("pgauth_it_webauthn_x5c");
    for alg in ["ES256", "EdDSA"] {
        let key = Passkey::new(&format!("x5c-{alg}"));
        register(
            &mut db,
            &alice,
            &key,
            &["--alg", alg, "--fmt", "packed-x5c"],
        );
        sign_in_works(&mut db, &key, &alice, Some("alice"));
    }
    let formats: Vec<String> = db
        .query(
            "SELECT attestation_format FROM pgauth.webauthn_credentials ORDER BY created_at",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(formats, vec!["packed", "packed"]);
}

/// Step-up with a passkey: a password sign-in (aal 1) is raised to aal 2 by a user-verified
/// assertion of the bound user's passkey, which opens a min_aal 2 permission; an assertion
/// without user verification, or another user's passkey, does not.
#[test]
fn passkey_step_up_opens_min_aal_2() {
    let (mut db, _alice, bob) = setup("pgauth_it_webauthn_stepup");
    let carol: String = db
        .query_one(
            "SELECT auth_create_user('carol', 'Saffron-Kettle-Orbit-52')::text",
            &[],
        )
        .unwrap()
        .get(0);
    db.batch_execute(
        "SELECT auth_create_role('approver');
         SELECT auth_grant_permission('approver', 'pay.approve', 2);",
    )
    .unwrap();
    db.execute(
        "SELECT auth_assign_role($1::text::uuid, 'approver')",
        &[&carol],
    )
    .unwrap();
    let carol_key = Passkey::new("stepup-carol");
    register(&mut db, &carol, &carol_key, &[]);
    let bob_key = Passkey::new("stepup-bob");
    register(&mut db, &bob, &bob_key, &[]);
    let access: String = db
        .query_one(
            "SELECT access_token FROM auth_login('carol', 'Saffron-Kettle-Orbit-52') WHERE ok",
            &[],
        )
        .unwrap()
        .get(0);
    let step_up =
        |db: &mut Client, key: &Passkey, username: &str, extra: &[&str]| -> (bool, bool) {
            let options = login_begin(db, Some(username));
            let assertion = key.get(&options, extra);
            let mut tx = db.transaction().unwrap();
            tx.execute("SELECT auth_set_session($1)", &[&access])
                .unwrap();
            let before: bool = tx
                .query_one("SELECT auth_has_permission('pay.approve')", &[])
                .unwrap()
                .get(0);
            assert!(!before, "aal 1 must not open a min_aal 2 permission");
            let stepped: bool = tx
                .query_one(
                    "SELECT auth_webauthn_step_up($1::text::jsonb)",
                    &[&assertion],
                )
                .unwrap()
                .get(0);
            let after: bool = tx
                .query_one("SELECT auth_has_permission('pay.approve')", &[])
                .unwrap()
                .get(0);
            tx.commit().unwrap();
            (stepped, after)
        };
    assert_eq!(
        step_up(&mut db, &bob_key, "bob", &[]),
        (false, false),
        "bob's passkey"
    );
    assert_eq!(
        step_up(&mut db, &carol_key, "carol", &["--no-uv"]),
        (false, false),
        "no user verification"
    );
    assert_eq!(step_up(&mut db, &carol_key, "carol", &[]), (true, true));
    let events: Vec<String> = db
        .query(
            "SELECT event || ':' || coalesce(new_values->>'method', '') FROM pgauth.audit_log
              WHERE event LIKE 'step_up%' ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        events,
        [
            "step_up_failed:hwk",
            "step_up_failed:hwk",
            "step_up_succeeded:hwk"
        ]
    );
}

/// One statement in a transaction bound with `token` (committed when it succeeds); its first
/// column as text.
fn in_session(
    db: &mut Client,
    token: &str,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<Option<String>, postgres::Error> {
    let mut tx = db.transaction().unwrap();
    tx.execute("SELECT auth_set_session($1)", &[&token])
        .unwrap();
    match tx.query_one(sql, params) {
        Ok(row) => {
            let value = row.get::<_, Option<String>>(0);
            tx.commit().unwrap();
            Ok(value)
        }
        Err(e) => {
            tx.rollback().unwrap();
            Err(e)
        }
    }
}

/// Refused with 42501 and a hint to step up first.
fn assert_needs_step_up(result: Result<Option<String>, postgres::Error>, what: &str) {
    let err = result.expect_err(&format!("{what} at aal 1 must be refused"));
    assert_eq!(sqlstate(&err), Some("42501"), "{what}: {err:?}");
    let hint = err.as_db_error().and_then(|e| e.hint()).unwrap_or("");
    assert!(
        hint.contains("auth_step_up") && hint.contains("auth_webauthn_step_up"),
        "{what}: hint {hint:?}"
    );
}

fn password_sign_in(db: &mut Client, username: &str, password: &str) -> String {
    db.query_one(
        "SELECT access_token FROM auth_login($1, $2) WHERE ok",
        &[&username, &password],
    )
    .unwrap()
    .get(0)
}

/// Adding or removing a second factor of a user who has one needs assurance level 2 of that
/// user's session. The attack: with only dave's password (aal 1), register a user-verified
/// passkey (which would then sign in at aal 2 and step up), revoke his passkey, replace his
/// recovery codes, re-enroll or disable his TOTP. All refused; after a step-up with his TOTP
/// code all allowed. A user's first factor may be enrolled at aal 1, and the audit row says so.
#[test]
fn second_factor_changes_need_aal_2() {
    let (mut db, _alice, _bob) = setup("pgauth_it_webauthn_factors");
    let password = "Quill-Harbor-Tangent-84";
    let dave: String = db
        .query_one("SELECT auth_create_user('dave', $1)::text", &[&password])
        .unwrap()
        .get(0);
    // Dave's factors, set up by the administrator: TOTP and a passkey.
    let uri: String = db
        .query_one(
            "SELECT auth_totp_enroll($1::text::uuid, 'pgauth')",
            &[&dave],
        )
        .unwrap()
        .get(0);
    let old_key = Passkey::new("factors-dave-old");
    let old_id = register(&mut db, &dave, &old_key, &[]);
    let old_credential: String = db
        .query_one(
            "SELECT credential_id FROM auth_webauthn_credentials($1::text::uuid)
              WHERE id = $2::text::uuid",
            &[&dave, &old_id],
        )
        .unwrap()
        .get(0);
    let access = password_sign_in(&mut db, "dave", password);

    // aal 1: every change of dave's factors is refused, and nothing changes.
    let register_begin_sql = "SELECT auth_webauthn_register_begin($1::text::uuid)::text";
    let r = in_session(&mut db, &access, register_begin_sql, &[&dave]);
    assert_needs_step_up(r, "registering a passkey");
    let r = in_session(
        &mut db,
        &access,
        "SELECT auth_webauthn_revoke($1)::text",
        &[&old_credential],
    );
    assert_needs_step_up(r, "revoking a passkey");
    let r = in_session(
        &mut db,
        &access,
        "SELECT count(*)::text FROM auth_recovery_codes($1::text::uuid)",
        &[&dave],
    );
    assert_needs_step_up(r, "replacing the recovery codes");
    let r = in_session(
        &mut db,
        &access,
        "SELECT auth_totp_disable($1::text::uuid)::text",
        &[&dave],
    );
    assert_needs_step_up(r, "disabling TOTP");
    let r = in_session(
        &mut db,
        &access,
        "SELECT auth_totp_enroll($1::text::uuid)",
        &[&dave],
    );
    assert_needs_step_up(r, "re-enrolling TOTP");
    let (passkeys, totp, codes): (i64, i64, i64) = db
        .query_one(
            "SELECT (SELECT count(*) FROM pgauth.webauthn_credentials WHERE user_id = $1::text::uuid),
                    (SELECT count(*) FROM pgauth.totp WHERE user_id = $1::text::uuid),
                    (SELECT count(*) FROM pgauth.recovery_codes WHERE user_id = $1::text::uuid)",
            &[&dave],
        )
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .unwrap();
    assert_eq!((passkeys, totp, codes), (1, 1, 0));

    // Step up with the TOTP code an authenticator app shows (PyOTP): aal 2 for the session.
    let code = run_python(
        &[
            "-c",
            "import sys, pyotp; print(pyotp.parse_uri(sys.argv[1]).now(), end='')",
            &uri,
        ],
        "",
    );
    let stepped = in_session(&mut db, &access, "SELECT auth_step_up($1)::text", &[&code]);
    assert_eq!(stepped.unwrap().as_deref(), Some("true"));

    // aal 2: the same changes are allowed.
    let new_key = Passkey::new("factors-dave-new");
    let options = in_session(&mut db, &access, register_begin_sql, &[&dave])
        .unwrap()
        .unwrap();
    let credential = new_key.create(&options, &[]);
    let finished = in_session(
        &mut db,
        &access,
        "SELECT auth_webauthn_register_finish($1::text::uuid, $2::text::jsonb, 'new')::text",
        &[&dave, &credential],
    );
    assert!(finished.unwrap().is_some());
    sign_in_works(&mut db, &new_key, &dave, Some("dave"));
    let revoked = in_session(
        &mut db,
        &access,
        "SELECT auth_webauthn_revoke($1)::text",
        &[&old_credential],
    );
    assert_eq!(revoked.unwrap().as_deref(), Some("true"));
    let codes = in_session(
        &mut db,
        &access,
        "SELECT count(*)::text FROM auth_recovery_codes($1::text::uuid)",
        &[&dave],
    );
    assert_eq!(codes.unwrap().as_deref(), Some("8"));
    let disabled = in_session(
        &mut db,
        &access,
        "SELECT auth_totp_disable($1::text::uuid)::text",
        &[&dave],
    );
    assert_eq!(disabled.unwrap().as_deref(), Some("true"));

    // Erin has no second factor: her first passkey may be registered at aal 1 ...
    let erin: String = db
        .query_one("SELECT auth_create_user('erin', $1)::text", &[&password])
        .unwrap()
        .get(0);
    let erin_access = password_sign_in(&mut db, "erin", password);
    let first_key = Passkey::new("factors-erin-first");
    let options = in_session(&mut db, &erin_access, register_begin_sql, &[&erin])
        .unwrap()
        .unwrap();
    let credential = first_key.create(&options, &[]);
    let finished = in_session(
        &mut db,
        &erin_access,
        "SELECT auth_webauthn_register_finish($1::text::uuid, $2::text::jsonb)::text",
        &[&erin, &credential],
    );
    assert!(finished.unwrap().is_some());
    // ... but not a second one, until she steps up with the first.
    let r = in_session(&mut db, &erin_access, register_begin_sql, &[&erin]);
    assert_needs_step_up(r, "registering a second passkey");
    let options = login_begin(&mut db, Some("erin"));
    let assertion = first_key.get(&options, &[]);
    let stepped = in_session(
        &mut db,
        &erin_access,
        "SELECT auth_webauthn_step_up($1::text::jsonb)::text",
        &[&assertion],
    );
    assert_eq!(stepped.unwrap().as_deref(), Some("true"));
    assert!(in_session(&mut db, &erin_access, register_begin_sql, &[&erin]).is_ok());

    // The audit rows of the registrations say whether each was a first factor and at which
    // level of the user's session it was made (none: the administrator, no session bound).
    let registered: Vec<(String, String, Option<String>)> = db
        .query(
            "SELECT a.new_values->>'user_id', a.new_values->>'first_factor', a.new_values->>'aal'
               FROM pgauth.audit_log a WHERE a.event = 'webauthn_registered' ORDER BY a.id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        registered,
        vec![
            (dave.clone(), "false".to_string(), None),
            (dave.clone(), "false".to_string(), Some("2".to_string())),
            (erin.clone(), "true".to_string(), Some("1".to_string())),
        ]
    );
}
