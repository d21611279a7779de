//! Passkeys end to end: a software authenticator in Python (`fido2` + `cryptography`,
//! tests/webauthn/soft_authenticator.py) plays browser and authenticator. It gets the options
//! JSON from auth_webauthn_*_begin and answers with the JSON a browser's
//! `PublicKeyCredential.toJSON()` gives, which goes to auth_webauthn_*_finish unchanged.
//! Every refusal is checked for its reason in the audit log, so a refusal for the wrong
//! reason fails the test.

use pgauth_integration_tests::webauthn::*;

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
    // Its event names the account like a wrong password's does (it was once empty).
    let subject: String = db
        .query_one(
            "SELECT row_key->>'subject' FROM pgauth.audit_log
              WHERE event = 'webauthn_login_failed' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(subject, "alice");
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
