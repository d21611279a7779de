//! Password login through a real client: lockout and unlock, the per-address rate limit,
//! indistinguishable failures, rehash on login, password changes, expiry, audit events, and
//! concurrent failures from two connections. Passwords are always bind parameters.

use pgauth_integration_tests::*;
use postgres::Client;
use std::time::Duration;

const PASSWORD: &str = "Tr4vel-Quartz-Mango-71";

#[derive(Debug)]
struct Login {
    ok: bool,
    user_id: Option<String>,
    reason: String,
    access_token: Option<String>,
    refresh_token: Option<String>,
}

fn login(db: &mut Client, username: &str, password: &str, ip: &str) -> Login {
    let row = db
        .query_one(
            "SELECT ok, user_id::text, reason, access_token, refresh_token
               FROM auth_login($1, $2, $3::text::inet)",
            &[&username, &password, &ip],
        )
        .expect("auth_login never raises for a failed login");
    Login {
        ok: row.get(0),
        user_id: row.get(1),
        reason: row.get(2),
        access_token: row.get(3),
        refresh_token: row.get(4),
    }
}

fn create_user(db: &mut Client, username: &str, password: Option<&str>) -> String {
    db.query_one(
        "SELECT auth_create_user($1, $2)::text",
        &[&username, &password],
    )
    .expect("auth_create_user")
    .get(0)
}

fn count(db: &mut Client, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> i64 {
    db.query_one(sql, params)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

fn events(db: &mut Client, event: &str, subject: &str) -> i64 {
    count(
        db,
        "SELECT count(*) FROM pgauth.audit_log WHERE event = $1 AND row_key->>'subject' = $2",
        &[&event, &subject],
    )
}

fn failed_count(db: &mut Client, user: &str) -> i32 {
    db.query_one(
        "SELECT failed_count FROM pgauth.login_state WHERE user_id = $1::text::uuid",
        &[&user],
    )
    .expect("login_state row")
    .get(0)
}

/// A role in pgauth_admin to act as the security administrator.
fn admin_role(db: &mut Client) {
    db.batch_execute(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgauth_it_secadmin') THEN
             CREATE ROLE pgauth_it_secadmin NOLOGIN IN ROLE pgauth_admin;
           END IF;
         END $$;",
    )
    .unwrap();
}

#[test]
fn lockout_after_max_failed_logins_and_unlock() {
    let mut db = fresh_database("pgauth_it_login_lockout");
    admin_role(&mut db);
    db.batch_execute("SET pgauth.login_attempts_per_minute = 0")
        .unwrap();
    let user = create_user(&mut db, "lina", Some(PASSWORD));
    // Default pgauth.max_failed_logins = 5.
    for n in 1..=5 {
        let l = login(&mut db, "lina", "not her password", "192.0.2.10");
        assert_eq!(l.reason, "invalid_credentials", "failure {n}");
        assert!(!l.ok && l.user_id.is_none() && l.access_token.is_none());
    }
    assert_eq!(events(&mut db, "account_locked", "lina"), 1);
    let locked = login(&mut db, "lina", PASSWORD, "192.0.2.11");
    assert_eq!(
        (locked.ok, locked.reason.as_str()),
        (false, "locked"),
        "the right password is refused while locked"
    );
    let until_ok: bool = db
        .query_one(
            "SELECT locked_until BETWEEN now() + interval '14 minutes' AND now() + interval '16 minutes'
               FROM pgauth.login_state WHERE user_id = $1::text::uuid",
            &[&user],
        )
        .unwrap()
        .get(0);
    assert!(until_ok, "default pgauth.lockout_duration is 15 minutes");

    // The security administrator unlocks.
    db.batch_execute("SET ROLE pgauth_it_secadmin").unwrap();
    db.execute("SELECT auth_unlock_user($1::text::uuid)", &[&user])
        .unwrap();
    db.batch_execute("RESET ROLE").unwrap();
    assert_eq!(events(&mut db, "user_unlocked", "lina"), 1);
    let ok = login(&mut db, "lina", PASSWORD, "192.0.2.11");
    assert!(ok.ok, "{ok:?}");
    assert_eq!(ok.user_id.as_deref(), Some(user.as_str()));

    // A lockout ends by itself after pgauth.lockout_duration.
    db.batch_execute("SET pgauth.lockout_duration = '1s'; SET pgauth.max_failed_logins = 2")
        .unwrap();
    login(&mut db, "lina", "nope", "192.0.2.10");
    login(&mut db, "lina", "nope", "192.0.2.10");
    assert_eq!(
        login(&mut db, "lina", PASSWORD, "192.0.2.10").reason,
        "locked"
    );
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(login(&mut db, "lina", PASSWORD, "192.0.2.10").reason, "ok");
    assert_eq!(failed_count(&mut db, &user), 0);
}

#[test]
fn rate_limit_is_per_address_and_is_not_a_failure_of_the_user() {
    let mut db = fresh_database("pgauth_it_login_rate");
    // Default pgauth.login_attempts_per_minute = 5; lockout later than the limit here.
    db.batch_execute("SET pgauth.max_failed_logins = 10")
        .unwrap();
    let mia = create_user(&mut db, "mia", Some(PASSWORD));
    create_user(&mut db, "noah", Some("Granite-Otter-Vessel-58"));
    let reasons: Vec<String> = (0..8)
        .map(|_| login(&mut db, "mia", "guess", "203.0.113.5").reason)
        .collect();
    assert_eq!(&reasons[..5], &["invalid_credentials"; 5]);
    assert_eq!(&reasons[5..], &["rate_limited"; 3]);
    // Refused attempts did not count against mia.
    assert_eq!(failed_count(&mut db, &mia), 5);
    // The limited address cannot log in even with the right password …
    assert_eq!(
        login(&mut db, "mia", PASSWORD, "203.0.113.5").reason,
        "rate_limited"
    );
    // … but another address can, for mia and for anyone else.
    assert_eq!(login(&mut db, "mia", PASSWORD, "203.0.113.6").reason, "ok");
    assert_eq!(
        login(&mut db, "noah", "Granite-Otter-Vessel-58", "203.0.113.6").reason,
        "ok"
    );
    assert_eq!(failed_count(&mut db, &mia), 0);
    let rate_limited = count(
        &mut db,
        "SELECT count(*) FROM pgauth.audit_log WHERE event = 'rate_limited'
            AND new_values->>'client_ip' = '203.0.113.5'",
        &[],
    );
    assert_eq!(rate_limited, 4);
    let stats: i64 = db
        .query_one("SELECT rate_limited FROM pgauth.stats", &[])
        .unwrap()
        .get(0);
    assert_eq!(stats, 4);
}

#[test]
fn unknown_user_and_wrong_password_are_indistinguishable() {
    let mut db = fresh_database("pgauth_it_login_unknown");
    db.batch_execute("SET pgauth.login_attempts_per_minute = 0; SET pgauth.max_failed_logins = 0")
        .unwrap();
    create_user(&mut db, "olga", Some(PASSWORD));
    let wrong = login(&mut db, "olga", "wrong", "192.0.2.20");
    let unknown = login(&mut db, "no-such-user", "wrong", "192.0.2.20");
    for l in [&wrong, &unknown] {
        assert!(!l.ok);
        assert_eq!(l.reason, "invalid_credentials");
        assert!(l.user_id.is_none() && l.access_token.is_none() && l.refresh_token.is_none());
    }
    // That both cost one Argon2id verification is measured by `make bench` (bench_login), not
    // asserted here: timings do not belong in tests.
}

#[test]
fn a_successful_login_upgrades_a_bcrypt_hash_in_the_same_transaction() {
    let mut db = fresh_database("pgauth_it_login_rehash");
    db.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pgcrypto; SET pgauth.login_attempts_per_minute = 0",
    )
    .unwrap();
    let user = create_user(&mut db, "piet", None);
    db.execute(
        "INSERT INTO pgauth.credentials (user_id, password_hash)
         VALUES ($1::text::uuid, crypt($2, gen_salt('bf', 6)))",
        &[&user, &PASSWORD],
    )
    .unwrap();
    let l = login(&mut db, "piet", PASSWORD, "192.0.2.30");
    assert!(l.ok, "{l:?}");
    let (hash_ok, verifies, needs): (bool, bool, bool) = {
        let r = db
            .query_one(
                "SELECT password_hash LIKE '$argon2id$%', auth_verify($2, password_hash),
                        auth_needs_rehash(password_hash)
                   FROM pgauth.credentials WHERE user_id = $1::text::uuid",
                &[&user, &PASSWORD],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert!(hash_ok && verifies && !needs);
    let (rehashed, same_txn, from): (i64, i64, Option<String>) = {
        let r = db
            .query_one(
                "SELECT count(*) FILTER (WHERE event = 'password_rehashed'),
                        count(DISTINCT txid),
                        max(new_values->>'from') FILTER (WHERE event = 'password_rehashed')
                   FROM pgauth.audit_log
                  WHERE event IN ('password_rehashed', 'login_succeeded')
                    AND row_key->>'subject' = 'piet'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(rehashed, 1);
    assert_eq!(same_txn, 1, "rehash and login are one transaction");
    assert_eq!(from.as_deref(), Some("bcrypt"));
    // Once upgraded, logging in again rehashes nothing.
    assert!(login(&mut db, "piet", PASSWORD, "192.0.2.30").ok);
    assert_eq!(events(&mut db, "password_rehashed", "piet"), 1);
}

#[test]
fn change_password_applies_policy_and_history() {
    let mut db = fresh_database("pgauth_it_login_change");
    db.batch_execute(
        "SET pgauth.login_attempts_per_minute = 0;
         UPDATE pgauth.password_policies SET history = 3 WHERE name = 'default'",
    )
    .unwrap();
    let passwords = [
        PASSWORD,
        "Granite-Otter-Vessel-58",
        "Copper-Lantern-Fjord-93",
        "Maple-Orbit-Stanza-26",
    ];
    let user = create_user(&mut db, "quinn", Some(passwords[0]));
    let change = |db: &mut Client, old: &str, new: &str| {
        db.query_one(
            "SELECT auth_change_password($1::text::uuid, $2, $3)",
            &[&user, &old, &new],
        )
        .map(|r| r.get::<_, bool>(0))
    };
    // Wrong old password: false, and it counts as a failed login.
    assert!(!change(&mut db, "wrong", passwords[1]).unwrap());
    assert_eq!(failed_count(&mut db, &user), 1);
    assert_eq!(events(&mut db, "password_change_failed", "quinn"), 1);
    // Policy: the username is context, weak passwords are refused with 22023.
    let err = change(&mut db, passwords[0], "quinn2024").unwrap_err();
    assert_eq!(sqlstate(&err), Some("22023"));
    let text = err.as_db_error().unwrap().message().to_string();
    assert!(
        !text.contains("quinn2024"),
        "the password is not in the message"
    );
    // 0 → 1 → 2, then 0 and 1 are among the last 3 (with the current one, 2).
    assert!(change(&mut db, passwords[0], passwords[1]).unwrap());
    assert!(change(&mut db, passwords[1], passwords[2]).unwrap());
    for reused in [passwords[0], passwords[1], passwords[2]] {
        let err = change(&mut db, passwords[2], reused).unwrap_err();
        assert_eq!(sqlstate(&err), Some("22023"));
        assert!(err
            .as_db_error()
            .unwrap()
            .message()
            .contains("must differ from the last 3 passwords"));
    }
    assert!(change(&mut db, passwords[2], passwords[3]).unwrap());
    // Now 1, 2, 3 are the last three; 0 may come back.
    assert!(change(&mut db, passwords[3], passwords[0]).unwrap());
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM pgauth.password_history WHERE user_id = $1::text::uuid",
            &[&user]
        ),
        2,
        "only history - 1 old hashes are kept"
    );
    assert_eq!(events(&mut db, "password_changed", "quinn"), 4);
    let recent: bool = db
        .query_one(
            "SELECT changed_at > now() - interval '1 minute' FROM pgauth.credentials
              WHERE user_id = $1::text::uuid",
            &[&user],
        )
        .unwrap()
        .get(0);
    assert!(recent);
    assert!(login(&mut db, "quinn", passwords[0], "192.0.2.40").ok);
    assert_eq!(
        login(&mut db, "quinn", passwords[3], "192.0.2.40").reason,
        "invalid_credentials"
    );
}

#[test]
fn an_expired_password_logs_in_no_more_until_changed() {
    let mut db = fresh_database("pgauth_it_login_expiry");
    db.batch_execute(
        "SET pgauth.login_attempts_per_minute = 0;
         UPDATE pgauth.password_policies SET max_age_days = 90 WHERE name = 'default'",
    )
    .unwrap();
    let user = create_user(&mut db, "rosa", Some(PASSWORD));
    assert!(login(&mut db, "rosa", PASSWORD, "192.0.2.50").ok);
    db.execute(
        "UPDATE pgauth.credentials SET changed_at = now() - interval '91 days'
          WHERE user_id = $1::text::uuid",
        &[&user],
    )
    .unwrap();
    let expired = login(&mut db, "rosa", PASSWORD, "192.0.2.50");
    assert_eq!(expired.reason, "password_expired");
    assert!(!expired.ok && expired.access_token.is_none());
    assert_eq!(expired.user_id.as_deref(), Some(user.as_str()));
    assert_eq!(events(&mut db, "password_expired", "rosa"), 1);
    let ok: bool = db
        .query_one(
            "SELECT auth_change_password($1::text::uuid, $2, $3)",
            &[&user, &PASSWORD, &"Harbor-Quill-Meadow-44"],
        )
        .unwrap()
        .get(0);
    assert!(ok);
    assert!(login(&mut db, "rosa", "Harbor-Quill-Meadow-44", "192.0.2.50").ok);
}

#[test]
fn every_outcome_is_an_audit_event_and_no_password_reaches_the_log() {
    let mut db = fresh_database("pgauth_it_login_audit");
    admin_role(&mut db);
    db.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pgcrypto;
         SET pgauth.max_failed_logins = 2; SET pgauth.login_attempts_per_minute = 3",
    )
    .unwrap();
    let mark = server_log_mark();
    let user = create_user(&mut db, "sven", None);
    db.execute(
        "INSERT INTO pgauth.credentials (user_id, password_hash)
         VALUES ($1::text::uuid, crypt($2, gen_salt('bf', 6)))",
        &[&user, &PASSWORD],
    )
    .unwrap();
    assert!(login(&mut db, "sven", PASSWORD, "192.0.2.60").ok); // succeeded + rehashed
    login(&mut db, "sven", "Secret-Wrong-1", "192.0.2.61"); // failed
    login(&mut db, "sven", "Secret-Wrong-2", "192.0.2.61"); // failed + locked
    login(&mut db, "sven", PASSWORD, "192.0.2.61"); // failed (locked)
    login(&mut db, "sven", PASSWORD, "192.0.2.61"); // rate limited
    db.batch_execute("SET ROLE pgauth_it_secadmin").unwrap();
    db.execute("SELECT auth_unlock_user($1::text::uuid)", &[&user])
        .unwrap();
    db.execute("SELECT auth_block_user($1::text::uuid)", &[&user])
        .unwrap();
    db.execute("SELECT auth_unlock_user($1::text::uuid)", &[&user])
        .unwrap();
    db.batch_execute("RESET ROLE").unwrap();
    db.execute(
        "SELECT auth_change_password($1::text::uuid, $2, $3)",
        &[&user, &PASSWORD, &"Granite-Otter-Vessel-58"],
    )
    .unwrap();
    db.batch_execute(
        "UPDATE pgauth.password_policies SET max_age_days = 1 WHERE name = 'default';
         UPDATE pgauth.credentials SET changed_at = now() - interval '2 days'",
    )
    .unwrap();
    assert_eq!(
        login(&mut db, "sven", "Granite-Otter-Vessel-58", "192.0.2.62").reason,
        "password_expired"
    );
    for (event, expected) in [
        ("login_succeeded", 1),
        ("password_rehashed", 1),
        ("login_failed", 3),
        ("account_locked", 1),
        ("rate_limited", 1),
        ("user_unlocked", 2),
        ("user_blocked", 1),
        ("password_changed", 1),
        ("password_expired", 1),
    ] {
        assert_eq!(events(&mut db, event, "sven"), expected, "{event}");
    }
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM pgauth.audit_log WHERE event = 'rate_limited'
                AND new_values->>'client_ip' = '192.0.2.61'",
            &[]
        ),
        1
    );
    // No password anywhere in the audit log or the server log.
    for secret in [
        PASSWORD,
        "Secret-Wrong-1",
        "Secret-Wrong-2",
        "Granite-Otter-Vessel-58",
    ] {
        let in_audit = count(
            &mut db,
            "SELECT count(*) FROM pgauth.audit_log
              WHERE strpos(coalesce(row_key::text, '') || coalesce(new_values::text, ''), $1) > 0",
            &[&secret],
        );
        assert_eq!(in_audit, 0, "a password in the audit log");
        if let Some(log) = server_log() {
            assert!(
                !log[mark.min(log.len())..].contains(secret),
                "a password in the server log"
            );
        }
    }
    let ok: bool = db
        .query_one("SELECT ok FROM auth_audit_verify()", &[])
        .unwrap()
        .get(0);
    assert!(ok);
}

#[test]
fn concurrent_attempts_from_two_connections_are_all_counted() {
    let name = "pgauth_it_login_concurrent";
    let mut db = fresh_database(name);
    let user = create_user(&mut db, "tara", Some(PASSWORD));
    let run = |max_failed: i32, attempts: usize| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut c = connect_to(name);
                    c.batch_execute(&format!(
                        "SET pgauth.login_attempts_per_minute = 0;
                         SET pgauth.max_failed_logins = {max_failed}"
                    ))
                    .unwrap();
                    (0..attempts)
                        .map(|_| {
                            login(&mut c, "tara", "wrong", &format!("192.0.2.{}", 70 + i)).reason
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    };
    // No limit reached: every failure of both connections is counted (no lost updates).
    let reasons = run(1000, 10);
    assert!(reasons.iter().all(|r| r == "invalid_credentials"));
    assert_eq!(failed_count(&mut db, &user), 20);

    // With a limit, exactly max_failed_logins attempts get to try a password; the others find
    // the account locked, and it is locked once.
    db.batch_execute("SET pgauth.login_attempts_per_minute = 0")
        .unwrap();
    db.execute(
        "SELECT auth_unlock_user(id) FROM pgauth.users WHERE username = 'tara'",
        &[],
    )
    .unwrap();
    let reasons = run(5, 6);
    let tried = reasons
        .iter()
        .filter(|r| *r == "invalid_credentials")
        .count();
    let locked = reasons.iter().filter(|r| *r == "locked").count();
    assert_eq!((tried, locked), (5, 7), "{reasons:?}");
    assert_eq!(events(&mut db, "account_locked", "tara"), 1);

    // Attempts from one address in two connections: the per-minute limit holds exactly.
    let handles: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = connect_to(name);
                c.batch_execute("SET pgauth.login_attempts_per_minute = 5")
                    .unwrap();
                (0..6)
                    .map(|_| login(&mut c, "no-such-user", "wrong", "198.51.100.99").reason)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let reasons: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let tried = reasons
        .iter()
        .filter(|r| *r == "invalid_credentials")
        .count();
    let limited = reasons.iter().filter(|r| *r == "rate_limited").count();
    assert_eq!((tried, limited), (5, 7), "{reasons:?}");
}
