//! Helpers for pgauth's integration tests: they talk to an installed server through the
//! `postgres` crate, as an application would. `make integration` starts the server
//! (tests/cluster.sh) and sets PGAUTH_TEST_DSN.

pub mod audit;
pub mod standby;
pub mod webauthn;

use postgres::{Client, NoTls};

pub fn dsn() -> String {
    std::env::var("PGAUTH_TEST_DSN")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5499 user=postgres dbname=postgres".into())
}

pub fn connect_to(dbname: &str) -> Client {
    let dsn = format!("{} dbname={dbname}", dsn());
    Client::connect(&dsn, NoTls).unwrap_or_else(|e| panic!("cannot connect ({dsn}): {e}"))
}

/// A new, empty database with pgauth installed; dropped first if a previous run left it.
pub fn fresh_database(name: &str) -> Client {
    let mut admin = Client::connect(&dsn(), NoTls).expect("connect to the test cluster");
    // Separate statements: DROP/CREATE DATABASE cannot run in a multi-statement batch.
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .expect("drop old test database");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create test database");
    let mut client = connect_to(name);
    client
        .batch_execute("CREATE EXTENSION pgauth")
        .expect("CREATE EXTENSION pgauth");
    client
}

/// The server log of the throwaway cluster, if readable.
pub fn server_log() -> Option<String> {
    let root = std::env::var("TEST_ROOT").unwrap_or_else(|_| "/tmp/pgauth-test".into());
    std::fs::read(format!("{root}/server.log"))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Where the server log ends now; pass it to `server_log_since` to read what a test caused.
pub fn server_log_mark() -> usize {
    server_log().map(|l| l.len()).unwrap_or(0)
}

pub fn server_log_since(mark: usize) -> String {
    let log = server_log().expect("the test cluster's server log is readable");
    log.get(mark..).unwrap_or("").to_string()
}

pub fn sqlstate(err: &postgres::Error) -> Option<&str> {
    err.as_db_error().map(|e| e.code().code())
}

/// The server's message of an error ("" when it is not a server error).
pub fn db_message(err: &postgres::Error) -> &str {
    err.as_db_error().map_or("", |e| e.message())
}

/// Rows of a TSV fixture below tests/fixtures, header skipped.
pub fn fixture_rows(file: &str) -> Vec<Vec<String>> {
    let path = format!("{}/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// The port of the test server, from PGAUTH_TEST_DSN.
pub fn dsn_port() -> String {
    dsn()
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("port=").map(str::to_string))
        .unwrap_or_else(|| "5499".into())
}

/// The test cluster's root folder (tests/cluster.sh), from TEST_ROOT.
pub fn test_root() -> String {
    std::env::var("TEST_ROOT").unwrap_or_else(|_| "/tmp/pgauth-test".into())
}

/// A port for a side server of one test (a standby, a restore cluster, a pooler), derived from
/// the test server's port so that two test runs on one machine (other TEST_PORTs) never collide.
/// Offsets in use: settings 1, audit standby 2, crypto restore 3, rbac pgbouncer 4, restore of
/// every feature 5, upgrade test 6 and package test 7 (Makefile), read paths on a standby 8.
pub fn side_port(offset: u16) -> String {
    let base: u16 = dsn_port().parse().expect("numeric test port");
    (base + 1000 + offset).to_string()
}

/// A client program of the test server's PostgreSQL build (PG_BIN, as tests/cluster.sh uses it).
pub fn pg_program(name: &str) -> String {
    format!("{}/{name}", pg_bin())
}

/// The binaries folder of the major under test, from PG_BIN (the Makefile passes
/// `pg_config --bindir`); Debian's PostgreSQL 15 when unset.
pub fn pg_bin() -> String {
    std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into())
}

/// `pg_dump -Fc` of `dbname` on the test server into a temporary file; returns its path.
pub fn dump_database(dbname: &str) -> String {
    let path = format!(
        "{}/pgauth-{dbname}-{}.dump",
        std::env::temp_dir().display(),
        std::process::id()
    );
    let ok = std::process::Command::new(pg_program("pg_dump"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &dsn_port(),
            "-U",
            "postgres",
            "-Fc",
            "-f",
            &path,
            dbname,
        ])
        .status()
        .expect("pg_dump")
        .success();
    assert!(ok, "pg_dump of {dbname} failed");
    path
}

/// `pg_restore --exit-on-error` of `dump` into the existing database `dbname` on `port`.
pub fn restore_database(dump: &str, port: &str, dbname: &str) {
    let ok = std::process::Command::new(pg_program("pg_restore"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-U",
            "postgres",
            "-d",
            dbname,
            "--exit-on-error",
            dump,
        ])
        .status()
        .expect("pg_restore")
        .success();
    assert!(ok, "pg_restore into {dbname} failed");
}

/// Run `python3 args…` with `input` on stdin (independent implementations: PyJWT, PyOTP, the
/// fido2 software authenticator); its stdout. Panics with the program's stderr when it fails.
pub fn run_python(args: &[&str], input: &str) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("python3")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3 {:?}: {}",
        args.first(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
