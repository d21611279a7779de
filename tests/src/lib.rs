//! Helpers for pgauth's integration tests: they talk to an installed server through the
//! `postgres` crate, as an application would. `make integration` starts the server
//! (tests/cluster.sh) and sets PGAUTH_TEST_DSN.

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
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE); CREATE DATABASE {name}"))
        .expect("create test database");
    let mut client = connect_to(name);
    client.batch_execute("CREATE EXTENSION pgauth").expect("CREATE EXTENSION pgauth");
    client
}

/// The server log of the throwaway cluster, if readable.
pub fn server_log() -> Option<String> {
    let root = std::env::var("TEST_ROOT").unwrap_or_else(|_| "/tmp/pgauth-test".into());
    std::fs::read_to_string(format!("{root}/server.log")).ok()
}

pub fn sqlstate(err: &postgres::Error) -> Option<&str> {
    err.as_db_error().map(|e| e.code().code())
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
