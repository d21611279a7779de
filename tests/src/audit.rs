//! Helpers of the audit integration tests (tests/audit.rs, tests/audit_cluster.rs): a verdict of
//! `auth_audit_verify`, sealing, and databases with audited tables.

use crate::fresh_database;
use postgres::Client;

#[derive(Debug)]
pub struct Verdict {
    pub ok: bool,
    pub checked: i64,
    pub first_bad_id: Option<i64>,
    pub reason: Option<String>,
}

/// Chain every finished transaction now (commits seal only every pgauth.audit_seal_interval).
pub fn seal(db: &mut Client) -> i64 {
    db.query_one("SELECT auth_audit_seal()", &[])
        .expect("auth_audit_seal")
        .get(0)
}

pub fn verify(db: &mut Client) -> Verdict {
    verify_sql(db, "SELECT * FROM auth_audit_verify()", &[])
}

pub fn verify_sql(
    db: &mut Client,
    sql: &str,
    args: &[&(dyn postgres::types::ToSql + Sync)],
) -> Verdict {
    let row = db.query_one(sql, args).expect("auth_audit_verify");
    Verdict {
        ok: row.get(0),
        checked: row.get(1),
        first_bad_id: row.get(2),
        reason: row.get(3),
    }
}

/// A fresh database with one audited table `table (id int PRIMARY KEY)`.
pub fn database_with_audited_table(name: &str, table: &str) -> Client {
    let mut db = fresh_database(name);
    db.batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY)"))
        .unwrap();
    db.batch_execute(&format!("SELECT auth_audit_enable('{table}')"))
        .unwrap();
    db
}

/// A database with an audited table and a few transactions of one and of several rows.
pub fn audited_database(name: &str) -> Client {
    let mut db = fresh_database(name);
    // One transaction each (a multi-statement batch would be one transaction).
    for sql in [
        "CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL)",
        "SELECT auth_audit_enable('accounts')",
        "INSERT INTO accounts VALUES (1, 'ann', 10)",
        // One transaction of two statements: records of one event (2) and of four (3..6).
        "INSERT INTO accounts VALUES (2, 'user 2', 2);
         INSERT INTO accounts SELECT g, 'user ' || g, g FROM generate_series(3, 6) g",
        "UPDATE accounts SET balance = balance + 1 WHERE id IN (2, 3)",
        "DELETE FROM accounts WHERE id = 6",
        "INSERT INTO accounts VALUES (7, 'zed', 70)",
    ] {
        db.batch_execute(sql).expect(sql);
        // One chain entry per transaction, so positions below are known.
        seal(&mut db);
    }
    let v = verify(&mut db);
    assert!(v.ok, "{v:?}");
    db
}
