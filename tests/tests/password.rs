//! Passwords through a real client: fixtures from real tools, hostile input, secrets kept out of
//! messages and logs, interop with other Argon2 implementations, the role-password check.

use pgauth_integration_tests::*;
use std::process::Command;

#[test]
fn fixtures_from_real_tools_verify_through_sql() {
    let mut db = fresh_database("pgauth_it_passwords");
    let rows = fixture_rows("hashes.tsv");
    assert!(rows.len() >= 30);
    for row in &rows {
        let (tool, scheme, password, hash) = (&row[0], &row[1], &row[2], &row[3]);
        let ok: bool = db
            .query_one("SELECT auth_verify($1, $2)", &[password, hash])
            .unwrap_or_else(|e| panic!("{tool} {scheme}: {e}"))
            .get(0);
        assert!(ok, "{tool} {scheme} should verify");
        let wrong = format!("{password}!");
        let bad: bool = db
            .query_one("SELECT auth_verify($1, $2)", &[&wrong, hash])
            .unwrap()
            .get(0);
        // bcrypt reads only the first 72 bytes, so appending to a longer password changes nothing.
        assert_eq!(
            bad,
            scheme == "bcrypt-long",
            "{tool} {scheme} with a wrong password"
        );
        let rehash: bool = db
            .query_one("SELECT auth_needs_rehash($1)", &[hash])
            .unwrap()
            .get(0);
        assert!(
            rehash || scheme.starts_with("argon2id"),
            "{tool} {scheme}: only argon2id may skip a rehash"
        );
    }
}

#[test]
fn bad_hashes_raise_invalid_parameter_value() {
    let mut db = fresh_database("pgauth_it_bad_hashes");
    for row in fixture_rows("bad_hashes.tsv") {
        let why = &row[0];
        let hash = row.get(1).cloned().unwrap_or_default();
        let err = db
            .query_one("SELECT auth_verify('password', $1)", &[&hash])
            .expect_err(why);
        assert_eq!(sqlstate(&err), Some("22023"), "{why}: {err}");
        // The session is still usable: nothing crashed.
        let one: i32 = db.query_one("SELECT 1", &[]).unwrap().get(0);
        assert_eq!(one, 1);
    }
}

#[test]
fn other_argon2_implementations_verify_pgauth_hashes() {
    let mut db = fresh_database("pgauth_it_interop");
    let password = "pässwörd with spaces & ünïcode";
    let hash: String = db
        .query_one("SELECT auth_hash_password($1)", &[&password])
        .unwrap()
        .get(0);
    // libargon2 (argon2-cffi) and libsodium (PyNaCl) must both accept what pgauth writes.
    let script = r#"
import sys, argon2, nacl.pwhash
h, pw = sys.argv[1], sys.argv[2]
assert argon2.PasswordHasher().verify(h, pw)
assert nacl.pwhash.verify(h.encode(), pw.encode())
try:
    argon2.PasswordHasher().verify(h, pw + "x"); sys.exit("wrong password accepted")
except argon2.exceptions.VerifyMismatchError:
    pass
print("ok")
"#;
    let out = Command::new("python3")
        .args(["-c", script, &hash, password])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python interop failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn secrets_stay_out_of_messages_and_the_server_log() {
    let mut db = fresh_database("pgauth_it_secrets");
    let mark = server_log_mark();
    let secret = "Zebra-Secret-4471";
    let long_secret = format!("{secret}{}", "y".repeat(1100));
    let mut messages = Vec::new();
    for (query, params) in [
        ("SELECT auth_check_password($1)", vec![secret.to_string()]),
        (
            "SELECT auth_check_password($1, $2)",
            vec![format!("{secret}aaaa"), "bob".into()],
        ),
        ("SELECT auth_hash_password($1)", vec![long_secret.clone()]),
        (
            "SELECT auth_verify($1, $2)",
            vec![
                secret.into(),
                format!("$argon2id$v=19$m=1,t=1,p=1${secret}$x"),
            ],
        ),
        (
            "SELECT auth_verify($1, $2)",
            vec![
                long_secret.clone(),
                "$2b$04$KOEPW6zqvF2xZBsBvBO9UO7nAtMuwWmEBmKUwqPyHvhyuIMO9Umc2".into(),
            ],
        ),
    ] {
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn postgres::types::ToSql + Sync))
            .collect();
        let err = db.query_one(query, &refs).expect_err(query);
        assert_eq!(sqlstate(&err), Some("22023"), "{query}");
        let db_err = err.as_db_error().unwrap();
        let text = format!(
            "{} {:?} {:?}",
            db_err.message(),
            db_err.detail(),
            db_err.hint()
        );
        assert!(!text.contains(secret), "{query} leaked: {text}");
        messages.push(db_err.message().to_string());
    }
    // Even a password written as a literal stays out of the log: PostgreSQL logs the text of a
    // failed statement, and pgauth hides it for the errors it raises.
    let literal = "Literal-Secret-9921";
    let err = db
        .batch_execute(&format!("SELECT auth_check_password('{literal}', 'bob')"))
        .expect_err("policy violation");
    assert_eq!(sqlstate(&err), Some("22023"));
    let log = server_log_since(mark);
    assert!(
        log.contains(&messages[0]),
        "the error should be in the server log"
    );
    assert!(!log.contains(secret), "the server log contains a password");
    assert!(
        !log.contains(literal),
        "the server log contains a literal password"
    );
}

#[test]
fn role_passwords_are_checked_when_enabled() {
    let mut db = fresh_database("pgauth_it_roles");
    let mark = server_log_mark();
    db.batch_execute("DROP ROLE IF EXISTS pgauth_it_weak; DROP ROLE IF EXISTS pgauth_it_ok")
        .unwrap();
    db.batch_execute("SET pgauth.check_role_passwords = on")
        .unwrap();
    let err = db
        .batch_execute("CREATE ROLE pgauth_it_weak LOGIN PASSWORD 'pgauth_it_weak1'")
        .expect_err("weak role password must be refused");
    assert_eq!(sqlstate(&err), Some("22023"));
    let msg = err.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("user name"), "{msg}");
    assert!(!msg.contains("pgauth_it_weak1"), "{msg}");
    let log = server_log_since(mark);
    assert!(
        log.contains("password does not meet"),
        "the refusal should be logged"
    );
    assert!(
        !log.contains("pgauth_it_weak1"),
        "the refused CREATE ROLE statement was logged"
    );
    db.batch_execute("CREATE ROLE pgauth_it_ok LOGIN PASSWORD 'xT7#qLm9!vRw2Zp'")
        .unwrap();
    db.batch_execute(
        "SET pgauth.check_role_passwords = off; CREATE ROLE pgauth_it_weak PASSWORD 'password'",
    )
    .unwrap();
    db.batch_execute("DROP ROLE pgauth_it_weak; DROP ROLE pgauth_it_ok")
        .unwrap();
}

#[test]
fn app_role_cannot_change_hash_settings_or_read_policies() {
    let mut db = fresh_database("pgauth_it_privs");
    db.batch_execute(
        "DROP ROLE IF EXISTS pgauth_it_app; CREATE ROLE pgauth_it_app LOGIN;
         GRANT CONNECT ON DATABASE pgauth_it_privs TO pgauth_it_app",
    )
    .unwrap();
    let mut app = postgres::Client::connect(
        &format!("{} dbname=pgauth_it_privs user=pgauth_it_app", dsn()),
        postgres::NoTls,
    )
    .unwrap();
    let err = app
        .batch_execute("SET pgauth.argon2_memory_kib = 8192")
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"));
    let err = app
        .query("SELECT * FROM pgauth.password_policies", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"));
    let problems: Vec<String> = app
        .query_one("SELECT auth_password_problems('password')", &[])
        .unwrap()
        .get(0);
    assert!(!problems.is_empty());
    drop(app);
    let mut admin = postgres::Client::connect(&dsn(), postgres::NoTls).unwrap();
    admin
        .batch_execute("DROP DATABASE pgauth_it_privs WITH (FORCE)")
        .unwrap();
    admin.batch_execute("DROP ROLE pgauth_it_app").unwrap();
}

/// An Argon2id hash of 'pw' made by pgauth at `memory_kib` and `iterations`.
fn argon2_hash_of_pw(db: &mut postgres::Client, memory_kib: i32, iterations: i32) -> String {
    db.batch_execute(&format!(
        "SET pgauth.argon2_memory_kib = {memory_kib}; SET pgauth.argon2_iterations = {iterations}"
    ))
    .unwrap();
    let hash: String = db
        .query_one("SELECT auth_hash_password('pw')", &[])
        .unwrap()
        .get(0);
    db.batch_execute("RESET pgauth.argon2_memory_kib; RESET pgauth.argon2_iterations")
        .unwrap();
    hash
}

/// A hash of the caller's making cannot ask for unbounded memory (refused before any work,
/// 22023), and a long verification ends at statement_timeout instead of when the hash is done.
#[test]
fn hostile_hashes_are_bounded_and_cancellable() {
    let mut db = fresh_database("pgauth_it_hostile_hash");
    // 256 MiB, 4 passes: made by pgauth itself, so well formed.
    let big = argon2_hash_of_pw(&mut db, 262144, 4);
    // The default bound (64 MiB) refuses it before any work.
    let err = db
        .query_one("SELECT auth_verify('pw', $1)", &[&big])
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("22023"), "{err}");
    // A superuser may raise the bound; the full verification is the yardstick …
    db.batch_execute("SET pgauth.max_verify_memory_kib = '1GB'")
        .unwrap();
    let started = std::time::Instant::now();
    let ok: bool = db
        .query_one("SELECT auth_verify('pw', $1)", &[&big])
        .unwrap()
        .get(0);
    let full = started.elapsed();
    assert!(ok);
    assert!(
        full > std::time::Duration::from_millis(300),
        "the hash is too cheap to show cancellation ({full:?})"
    );
    // … and statement_timeout ends the statement well before the hash would be done.
    db.batch_execute("SET statement_timeout = '50ms'").unwrap();
    let started = std::time::Instant::now();
    let err = db
        .query_one("SELECT auth_verify('pw', $1)", &[&big])
        .unwrap_err();
    let cancelled = started.elapsed();
    assert_eq!(sqlstate(&err), Some("57014"), "{err}");
    assert!(
        cancelled < full / 2,
        "cancelled after {cancelled:?}, a full verification takes {full:?}"
    );
}

/// Verifications running at once share a server-wide memory budget: while one holds most of it,
/// another waits (and can be cancelled while it waits) instead of allocating more.
#[test]
fn concurrent_verifications_share_a_memory_budget() {
    let mut db = fresh_database("pgauth_it_hash_budget");
    let big = argon2_hash_of_pw(&mut db, 262144, 16);
    let small: String = db
        .query_one("SELECT auth_hash_password('pw')", &[])
        .unwrap()
        .get(0);
    // One connection verifies the 256 MiB hash (seconds) …
    let holder = {
        let big = big.clone();
        std::thread::spawn(move || {
            let mut c = connect_to("pgauth_it_hash_budget");
            c.batch_execute("SET pgauth.max_verify_memory_kib = '1GB'")
                .unwrap();
            let ok: bool = c
                .query_one("SELECT auth_verify('pw', $1)", &[&big])
                .unwrap()
                .get(0);
            ok
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(400));
    // … so a 19 MiB verification does not fit in a 260 MiB budget: it waits, and ends at the
    // statement timeout instead of allocating.
    db.batch_execute("SET pgauth.verify_memory_budget = '260MB'; SET statement_timeout = '500ms'")
        .unwrap();
    let err = db
        .query_one("SELECT auth_verify('pw', $1)", &[&small])
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("57014"), "{err}");
    // With room in the budget it goes ahead at once.
    db.batch_execute("SET pgauth.verify_memory_budget = '1GB'")
        .unwrap();
    let ok: bool = db
        .query_one("SELECT auth_verify('pw', $1)", &[&small])
        .unwrap()
        .get(0);
    assert!(ok);
    assert!(holder.join().unwrap());
}
