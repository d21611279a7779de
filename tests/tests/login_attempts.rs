//! Failed attempts count whatever the caller's transaction does afterwards. Each guess is made
//! inside a savepoint that is rolled back, a plpgsql exception block that undoes it, or a whole
//! transaction that is aborted after reading the answer; the limits must hold all the same, and
//! the right secret must then be refused. Also: an open transaction never holds up another
//! caller's sign-in.

use pgauth_integration_tests::*;
use postgres::{Client, SimpleQueryMessage};
use std::time::{Duration, Instant};

/// The three ways a caller undoes what a guess wrote.
const WRAPPERS: [&str; 3] = ["savepoint", "exception block", "aborted transaction"];

fn undone(wrapper: &str, guess: &str) -> String {
    match wrapper {
        "savepoint" => format!("BEGIN; SAVEPOINT s; {guess}; ROLLBACK TO SAVEPOINT s; COMMIT"),
        "exception block" => format!(
            "DO $$ BEGIN PERFORM * FROM ({guess}) g; RAISE EXCEPTION 'undo'; \
             EXCEPTION WHEN raise_exception THEN NULL; END $$"
        ),
        _ => format!("BEGIN; {guess}; ROLLBACK"),
    }
}

fn value(db: &mut Client, sql: &str) -> Option<String> {
    db.simple_query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        })
        .last()
        .flatten()
}

/// Poll `sql` (one bigint) until it reaches `want` or 20 s pass: the event keeper writes
/// undone events in its own transaction, shortly after the rollback.
fn eventually(db: &mut Client, sql: &str, want: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got: i64 = value(db, sql).and_then(|v| v.parse().ok()).unwrap_or(-1);
        if got >= want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kept(event: &str, subject: &str) -> String {
    format!(
        "SELECT count(*) FROM pgauth.audit_log WHERE event = '{event}'
            AND row_key->>'subject' = '{subject}' AND new_values->>'kept_after_rollback' = 'true'"
    )
}

fn totp_now(uri: &str) -> String {
    run_python(
        &[
            "-c",
            "import sys, pyotp; print(pyotp.parse_uri(sys.stdin.read()).now(), end='')",
        ],
        uri,
    )
}

#[test]
fn wrong_passwords_count_when_the_caller_rolls_back() {
    let mut db = fresh_database("pgauth_it_attempts_pw");
    db.batch_execute("SET pgauth.login_attempts_per_minute = 0; SET pgauth.max_failed_logins = 5")
        .unwrap();
    for (n, wrapper) in WRAPPERS.iter().enumerate() {
        let user = format!("victim{n}");
        db.batch_execute(&format!(
            "SELECT auth_create_user('{user}', 'Tr4vel-Quartz-Mango-71')"
        ))
        .unwrap();
        for i in 0..20 {
            db.batch_execute(&undone(
                wrapper,
                &format!("SELECT * FROM auth_login('{user}', 'guess{i}', '192.0.2.10')"),
            ))
            .unwrap();
        }
        let reason = value(
            &mut db,
            &format!(
                "SELECT reason FROM auth_login('{user}', 'Tr4vel-Quartz-Mango-71', '192.0.2.10')"
            ),
        );
        assert_eq!(reason.as_deref(), Some("locked"), "{wrapper}: never locked");
        let failed = value(
            &mut db,
            &format!(
                "SELECT failed_count FROM pgauth.login_state s JOIN pgauth.users u ON u.id = s.user_id
                  WHERE u.username = '{user}'"
            ),
        );
        assert_eq!(failed.as_deref(), Some("5"), "{wrapper}");
        // Every undone failure is in the audit log all the same, and the lockout with them.
        assert_eq!(
            eventually(&mut db, &kept("login_failed", &user), 20),
            20,
            "{wrapper}: login_failed events removed by the rollback"
        );
        assert_eq!(
            eventually(&mut db, &kept("account_locked", &user), 1),
            1,
            "{wrapper}"
        );
    }
    // auth_change_password's wrong old passwords are failures of the same counter.
    let uid = value(
        &mut db,
        "SELECT auth_create_user('changer', 'Tr4vel-Quartz-Mango-71')",
    )
    .unwrap();
    for i in 0..10 {
        db.batch_execute(&undone(
            "savepoint",
            &format!("SELECT auth_change_password('{uid}', 'guess{i}', 'Granite-Otter-Vessel-58')"),
        ))
        .unwrap();
    }
    let changed = value(
        &mut db,
        &format!("SELECT auth_change_password('{uid}', 'Tr4vel-Quartz-Mango-71', 'Granite-Otter-Vessel-58')"),
    );
    assert_eq!(
        changed.as_deref(),
        Some("f"),
        "locked: the right old password is refused"
    );
}

#[test]
fn the_address_rate_limit_counts_rolled_back_attempts() {
    let mut db = fresh_database("pgauth_it_attempts_rate");
    db.batch_execute(
        "SET pgauth.login_attempts_per_minute = 3;
         SELECT auth_create_user('rita', 'Tr4vel-Quartz-Mango-71')",
    )
    .unwrap();
    for wrapper in WRAPPERS {
        db.batch_execute(&undone(
            wrapper,
            "SELECT * FROM auth_login('nobody', 'x', '203.0.113.77')",
        ))
        .unwrap();
    }
    let reason = value(
        &mut db,
        "SELECT reason FROM auth_login('rita', 'Tr4vel-Quartz-Mango-71', '203.0.113.77')",
    );
    assert_eq!(reason.as_deref(), Some("rate_limited"));
}

#[test]
fn second_factor_guesses_count_when_the_caller_rolls_back() {
    let mut db = fresh_database("pgauth_it_attempts_mfa");
    for (n, wrapper) in WRAPPERS.iter().enumerate() {
        // TOTP through auth_totp_verify, and through auth_step_up from a stolen aal-1 token.
        let uid = value(&mut db, &format!("SELECT auth_create_user('t{n}')")).unwrap();
        let uri = value(
            &mut db,
            &format!("SELECT auth_totp_enroll('{uid}', 'pgauth')"),
        )
        .unwrap();
        let token = value(&mut db, &format!("SELECT auth_create_session('{uid}')")).unwrap();
        for i in 0..6 {
            let guess = if i % 2 == 0 {
                format!("SELECT auth_totp_verify('{uid}', '{:06}')", 999_000 + i)
            } else {
                format!(
                    "SELECT auth_set_session('{token}'), auth_step_up('{:06}')",
                    999_000 + i
                )
            };
            db.batch_execute(&undone(wrapper, &guess)).unwrap();
        }
        let right = totp_now(&uri);
        let stepped = value(
            &mut db,
            &format!(
                "BEGIN; SELECT auth_set_session('{token}'); SELECT auth_step_up('{right}'); COMMIT"
            ),
        );
        assert_eq!(
            stepped.as_deref(),
            Some("f"),
            "{wrapper}: TOTP guessed without limit"
        );

        // Recovery codes get the same limit.
        let rid = value(&mut db, &format!("SELECT auth_create_user('r{n}')")).unwrap();
        let code = value(&mut db, &format!("SELECT auth_recovery_codes('{rid}')")).unwrap();
        for i in 0..6 {
            db.batch_execute(&undone(
                wrapper,
                &format!("SELECT auth_use_recovery_code('{rid}', 'wrong-code-{i}')"),
            ))
            .unwrap();
        }
        let used = value(
            &mut db,
            &format!("SELECT auth_use_recovery_code('{rid}', '{code}')"),
        );
        assert_eq!(
            used.as_deref(),
            Some("f"),
            "{wrapper}: recovery codes guessed without limit"
        );
    }
}

/// Wrong API keys are not limited (256 random bits; a lockout would only let anyone block a
/// server's keys) but each is audited, and a rollback does not remove the event.
#[test]
fn wrong_api_keys_are_audited_when_the_caller_rolls_back() {
    let mut db = fresh_database("pgauth_it_attempts_api");
    let uid = value(&mut db, "SELECT auth_create_user('apiuser')").unwrap();
    let key = value(
        &mut db,
        &format!("SELECT auth_create_api_key('{uid}', 'k')"),
    )
    .unwrap();
    for i in 0..21 {
        let wrapper = WRAPPERS[i % 3];
        db.batch_execute(&undone(
            wrapper,
            &format!("SELECT auth_verify_api_key('pgk_wrong{i}')"),
        ))
        .unwrap();
    }
    let kept = eventually(
        &mut db,
        "SELECT count(*) FROM pgauth.audit_log WHERE event = 'api_key_failed'
            AND new_values->>'kept_after_rollback' = 'true'",
        21,
    );
    assert_eq!(kept, 21, "api_key_failed events removed by the rollback");
    let ok = value(
        &mut db,
        &format!("SELECT auth_verify_api_key('{key}')::text"),
    );
    assert_eq!(ok.as_deref(), Some(uid.as_str()), "no lockout of the key");
}

/// `BEGIN; SELECT auth_login('alice', 'x', '10.0.0.5');` left open must not hold up alice's
/// next sign-in, nor anyone's from 10.0.0.5.
#[test]
fn an_open_transaction_does_not_hold_up_other_sign_ins() {
    let mut db = fresh_database("pgauth_it_attempts_open");
    db.batch_execute("SELECT auth_create_user('alice', 'Tr4vel-Quartz-Mango-71')")
        .unwrap();
    let mut holder = connect_to("pgauth_it_attempts_open");
    holder
        .batch_execute(
            "SET pgauth.login_attempts_per_minute = 100;
             BEGIN; SELECT * FROM auth_login('alice', 'wrong', '10.0.0.5');
             SELECT * FROM auth_login('nobody', 'wrong', '10.0.0.5')",
        )
        .unwrap();
    db.batch_execute("SET pgauth.login_attempts_per_minute = 100; SET statement_timeout = '10s'")
        .unwrap();
    let started = Instant::now();
    let reason = value(
        &mut db,
        "SELECT reason FROM auth_login('alice', 'Tr4vel-Quartz-Mango-71', '10.0.0.5')",
    );
    assert_eq!(reason.as_deref(), Some("ok"));
    let reason = value(
        &mut db,
        "SELECT reason FROM auth_login('bob', 'x', '10.0.0.5')",
    );
    assert_eq!(reason.as_deref(), Some("invalid_credentials"));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "sign-ins waited for another caller's open transaction"
    );
    holder.batch_execute("ROLLBACK").unwrap();
}

/// A flood of failures anyone can cause (unknown users from made-up addresses) cannot grow the
/// audit log without bound: 100 events a minute are written one by one, then only the 128th,
/// 256th, … with their count.
#[test]
fn a_flood_of_unknown_users_is_aggregated_in_the_audit_log() {
    let mut db = fresh_database("pgauth_it_attempts_flood");
    db.batch_execute("SET pgauth.login_attempts_per_minute = 0")
        .unwrap();
    db.batch_execute(
        "SELECT count(*) FROM generate_series(1, 150) g,
                LATERAL auth_login('nobody' || g, 'x', ('10.9.' || (g / 250) || '.' || (g % 250))::inet)",
    )
    .unwrap();
    let written = value(
        &mut db,
        "SELECT count(*) FROM pgauth.audit_log WHERE event = 'login_failed'
            AND new_values->>'known_user' = 'false'",
    );
    assert_eq!(written.as_deref(), Some("101"));
    let last = value(
        &mut db,
        "SELECT max((new_values->>'occurrence_this_minute')::int) FROM pgauth.audit_log
          WHERE event = 'login_failed'",
    );
    assert_eq!(last.as_deref(), Some("128"));
}

/// A transaction left open after verifying a TOTP code holds up no other verification of the
/// user's codes (the code-used-once rule is kept in shared memory, not by a row lock), and the
/// same code is still accepted only once.
#[test]
fn an_open_totp_verification_does_not_hold_up_the_next() {
    let mut db = fresh_database("pgauth_it_attempts_totp_open");
    let uid = value(&mut db, "SELECT auth_create_user('tom')").unwrap();
    let uri = value(
        &mut db,
        &format!("SELECT auth_totp_enroll('{uid}', 'pgauth')"),
    )
    .unwrap();
    let code_at = |offset: i32| {
        run_python(
            &[
                "-c",
                &format!(
                    "import sys, time, pyotp; print(pyotp.parse_uri(sys.stdin.read()).at(time.time() + {offset}), end='')"
                ),
            ],
            &uri,
        )
    };
    let now = code_at(0);
    let mut holder = connect_to("pgauth_it_attempts_totp_open");
    holder
        .batch_execute(&format!("BEGIN; SELECT auth_totp_verify('{uid}', '{now}')"))
        .unwrap();
    db.batch_execute("SET statement_timeout = '5s'").unwrap();
    // The same code again: refused at once, not after the holder's transaction.
    let again = value(
        &mut db,
        &format!("SELECT auth_totp_verify('{uid}', '{now}')"),
    );
    assert_eq!(again.as_deref(), Some("f"));
    // The next step's code (within the accepted clock skew): accepted without waiting.
    let next = code_at(30);
    let ok = value(
        &mut db,
        &format!("SELECT auth_totp_verify('{uid}', '{next}')"),
    );
    assert_eq!(ok.as_deref(), Some("t"));
    holder.batch_execute("ROLLBACK").unwrap();
}
