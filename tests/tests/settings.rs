//! `pgauth.*` settings keep the values a DBA gave them, however they were given: by
//! `ALTER DATABASE … SET` when the library is loaded on first use (no preload), and by
//! postgresql.conf when it is preloaded at server start. Reserving the prefix before every
//! setting was defined made PostgreSQL delete the placeholders of the later ones, values and all.

use pgauth_integration_tests::side_port;
use postgres::{Client, NoTls};
use std::process::Command;

/// Its own port, derived from the test server's (see `side_port`).
fn port() -> String {
    side_port(1)
}

fn root() -> String {
    format!(
        "{}-settings",
        std::env::var("TEST_ROOT").unwrap_or_else(|_| "/tmp/pgauth-test".into())
    )
}

fn cluster(action: &str, preload: &str) {
    let st = Command::new("bash")
        .arg(format!("{}/cluster.sh", env!("CARGO_MANIFEST_DIR")))
        .arg(action)
        .env("TEST_ROOT", root())
        .env("TEST_PORT", port())
        .env("TEST_PRELOAD", preload)
        .status()
        .unwrap();
    assert!(st.success(), "cluster.sh {action}");
}

fn connect(db: &str) -> Client {
    Client::connect(
        &format!("host=127.0.0.1 port={} user=postgres dbname={db}", port()),
        NoTls,
    )
    .unwrap_or_else(|e| panic!("connect to {db}: {e}"))
}

/// Settings defined by every capability (session, login, jwt, webauthn and the general ones),
/// each with a value that is not its default.
const SETTINGS: &[Setting] = &[
    ("pgauth.argon2_iterations", "3", "4"),
    ("pgauth.session_ttl", "1234", "1300"),
    ("pgauth.max_failed_logins", "7", "9"),
    ("pgauth.login_attempts_per_minute", "11", "12"),
    ("pgauth.jwt_audience", "aud-x", "aud-y"),
    ("pgauth.jwt_issuer", "iss-x", "iss-y"),
    ("pgauth.webauthn_rp_id", "example.com", "example.org"),
    (
        "pgauth.webauthn_user_verification",
        "required",
        "discouraged",
    ),
    ("pgauth.webauthn_challenge_ttl", "77", "78"),
];

fn shown(c: &mut Client) -> Vec<(String, String)> {
    SETTINGS
        .iter()
        .map(|(name, _, _)| {
            let v: String = c
                .query_one(&format!("SHOW {name}"), &[])
                .unwrap_or_else(|e| panic!("SHOW {name}: {e}"))
                .get(0);
            (name.to_string(), v.trim_end_matches('s').to_string())
        })
        .collect()
}

type Setting = (&'static str, &'static str, &'static str);

fn expected(pick: fn(&'static Setting) -> &'static str) -> Vec<(String, String)> {
    SETTINGS
        .iter()
        .map(|s| (s.0.to_string(), pick(s).to_string()))
        .collect()
}

fn server_log() -> String {
    String::from_utf8_lossy(&std::fs::read(format!("{}/server.log", root())).unwrap_or_default())
        .into_owned()
}

/// Stops the test's cluster however the test ends.
struct StopAtEnd;
impl Drop for StopAtEnd {
    fn drop(&mut self) {
        cluster("stop", "");
    }
}

#[test]
fn settings_survive_alter_database_without_preload_and_postgresql_conf_with_preload() {
    cluster("stop", "");
    let _stop = StopAtEnd;
    let _ = std::fs::remove_dir_all(root());

    // 1. No preload: values from ALTER DATABASE … SET, the library loaded by the first call.
    cluster("start", "");
    let mut admin = connect("postgres");
    admin
        .batch_execute("DROP DATABASE IF EXISTS app WITH (FORCE)")
        .unwrap();
    admin.batch_execute("CREATE DATABASE app").unwrap();
    for (name, value, _) in SETTINGS {
        admin
            .batch_execute(&format!("ALTER DATABASE app SET {name} = '{value}'"))
            .unwrap();
    }
    connect("app")
        .batch_execute("CREATE EXTENSION pgauth")
        .unwrap();
    let mut app = connect("app");
    let preloaded: bool = app
        .query_one(
            "SELECT 'pgauth' = ANY (string_to_array(current_setting('shared_preload_libraries'), ','))",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!preloaded, "this part runs without preload");
    // The first pgauth call loads the library and defines the settings.
    app.batch_execute("SELECT auth_digest('load')").unwrap();
    assert_eq!(
        shown(&mut app),
        expected(|s| s.1),
        "ALTER DATABASE values without preload"
    );
    // Without preload there are no attempt counters: sign-in is refused, never unprotected.
    for call in [
        "SELECT * FROM auth_login('someone', 'password')",
        "SELECT auth_totp_verify(gen_random_uuid(), '123456')",
    ] {
        let err = app.query(call, &[]).unwrap_err();
        assert_eq!(
            pgauth_integration_tests::sqlstate(&err),
            Some("55000"),
            "{call}: {err}"
        );
    }

    // 2. Preload: values from postgresql.conf, read at server start before the library is loaded.
    let conf: String = SETTINGS
        .iter()
        .map(|(name, _, value)| format!("{name} = '{value}'\n"))
        .collect();
    admin.batch_execute("ALTER DATABASE app RESET ALL").unwrap();
    drop((admin, app));
    let path = format!("{}/data/postgresql.conf", root());
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("shared_preload_libraries = 'pgauth'\n");
    text.push_str(&conf);
    std::fs::write(&path, text).unwrap();
    let mark = server_log().len();
    cluster("start", "pgauth"); // restarts
    let mut app = connect("app");
    assert_eq!(
        shown(&mut app),
        expected(|s| s.2),
        "postgresql.conf values with preload"
    );
    // A reload keeps them too, and nothing was reported as invalid.
    app.batch_execute("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut app = connect("app");
    assert_eq!(shown(&mut app), expected(|s| s.2), "after a reload");
    let log = server_log();
    let since = log.get(mark..).unwrap_or("");
    assert!(
        !since.contains("invalid configuration parameter"),
        "server log: {since}"
    );
    cluster("stop", "");
}
