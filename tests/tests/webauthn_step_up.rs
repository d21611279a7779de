//! Passkeys and assurance level 2: a passkey step-up opens what needs aal 2, and adding or
//! removing a second factor needs it. Same software authenticator as tests/webauthn.rs.

use pgauth_integration_tests::webauthn::*;
use pgauth_integration_tests::*;
use postgres::Client;

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
