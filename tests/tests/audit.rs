//! The audit log through a real client: tampering by a superuser, a cut tail, concurrent
//! writers with rollbacks, crashes (kill -9 of a backend, immediate shutdown), privileges, and
//! security events of other capabilities.

use pgauth_integration_tests::*;
use postgres::{Client, NoTls};
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Verdict {
    ok: bool,
    checked: i64,
    first_bad_id: Option<i64>,
    reason: Option<String>,
}

/// Chain every finished transaction now (commits seal only every pgauth.audit_seal_interval).
fn seal(db: &mut Client) -> i64 {
    db.query_one("SELECT auth_audit_seal()", &[])
        .expect("auth_audit_seal")
        .get(0)
}

fn verify(db: &mut Client) -> Verdict {
    verify_sql(db, "SELECT * FROM auth_audit_verify()", &[])
}

fn verify_sql(
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
fn database_with_audited_table(name: &str, table: &str) -> Client {
    let mut db = fresh_database(name);
    db.batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY)"))
        .unwrap();
    db.batch_execute(&format!("SELECT auth_audit_enable('{table}')"))
        .unwrap();
    db
}

/// A database with an audited table and a few transactions of one and of several rows.
fn audited_database(name: &str) -> Client {
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

fn id_of(db: &mut Client, event: &str, key: i32) -> i64 {
    db.query_one(
        "SELECT id FROM pgauth.audit_log WHERE event = $1 AND row_key = jsonb_build_object('id', $2::int)",
        &[&event, &key],
    )
    .unwrap_or_else(|e| panic!("audit row {event} {key}: {e}"))
    .get(0)
}

/// Run `tamper` as a superuser with the append-only guards off, check what verify says, and
/// undo it all (the tampering happens inside a transaction that is rolled back).
fn tampered(db: &mut Client, tamper: &str) -> Verdict {
    db.batch_execute("BEGIN").unwrap();
    db.batch_execute(
        "ALTER TABLE pgauth.audit_records DISABLE TRIGGER audit_records_append_only;
         ALTER TABLE pgauth.audit_chain DISABLE TRIGGER audit_chain_append_only;",
    )
    .unwrap();
    db.batch_execute(tamper)
        .unwrap_or_else(|e| panic!("{tamper}: {e}"));
    let v = verify(db);
    db.batch_execute("ROLLBACK").unwrap();
    v
}

#[test]
fn tampering_by_a_superuser_is_found_at_the_right_row() {
    let mut db = audited_database("pgauth_it_audit_tamper");
    let ann = id_of(&mut db, "insert", 1);
    let user3 = id_of(&mut db, "insert", 3);
    let user2 = id_of(&mut db, "insert", 2);
    let deleted6 = id_of(&mut db, "delete", 6);
    let zed = id_of(&mut db, "insert", 7);

    // Bytes of a stored row changed ('user 4' becomes 'user 9', inside the record of users
    // 3..6): found at that record, i.e. its first event.
    let v = tampered(
        &mut db,
        &format!(
            "UPDATE pgauth.audit_records
                SET rows = decode(replace(encode(rows, 'hex'), encode('user 4', 'hex'),
                                          encode('user 9', 'hex')), 'hex')
              WHERE id = {user3}"
        ),
    );
    assert!(!v.ok);
    assert_eq!(v.first_bad_id, Some(user3), "{v:?}");
    assert!(
        v.reason.as_deref().unwrap_or("").contains("modified"),
        "{v:?}"
    );
    // A security event's JSON changed.
    let enabled: i64 = db
        .query_one(
            "SELECT min(id) FROM pgauth.audit_records WHERE event = 'audit_enabled'",
            &[],
        )
        .unwrap()
        .get(0);
    let v = tampered(
        &mut db,
        "UPDATE pgauth.audit_records SET events = replace(events, 'accounts', 'nothing')
          WHERE event = 'audit_enabled'",
    );
    assert_eq!(v.first_bad_id, Some(enabled), "{v:?}");

    // A record deleted: the only record of its transaction, then one of two.
    let v = tampered(
        &mut db,
        &format!("DELETE FROM pgauth.audit_records WHERE id = {deleted6}"),
    );
    assert_eq!(v.first_bad_id, Some(deleted6), "{v:?}");
    let v = tampered(
        &mut db,
        &format!("DELETE FROM pgauth.audit_records WHERE id = {user3}"),
    );
    assert!(!v.ok);
    assert_eq!(
        v.first_bad_id,
        Some(user2),
        "reported at the transaction's first event: {v:?}"
    );
    assert!(
        v.reason
            .as_deref()
            .unwrap_or("")
            .contains("2 audit records, 1 remain"),
        "{v:?}"
    );

    // A forged record with a correct record digest, inserted outside pgauth's capture.
    let v = tampered(
        &mut db,
        "WITH f AS (SELECT (SELECT max(last_id) + 1 FROM pgauth.audit_records) AS id, now() AS ts,
                           '12345'::xid8 AS txid,
                           '[[0, {\"id\": 99}, null, {\"id\": 99, \"owner\": \"ghost\"}]]' AS ev)
         INSERT INTO pgauth.audit_records (id, last_id, event_count, occurred_at, txid, db_user,
                                           event, table_name, events, record_digest)
         SELECT f.id, f.id, 1, f.ts, f.txid, 'postgres', 'insert', 'public.accounts', f.ev,
                pgauth.audit_record_digest(f.id, f.id, 1, f.ts, f.txid, 'postgres', NULL, NULL,
                                           'insert', 'public.accounts', NULL, NULL, f.ev)
           FROM f",
    );
    assert!(!v.ok);
    let forged: i64 = db
        .query_one("SELECT max(last_id) + 1 FROM pgauth.audit_records", &[])
        .unwrap()
        .get(0);
    assert_eq!(v.first_bad_id, Some(forged), "{v:?}");
    // Its ids were never reserved (it also is not covered by the chain).
    assert!(
        v.reason
            .as_deref()
            .unwrap_or("")
            .contains("ids that were never reserved"),
        "{v:?}"
    );

    // Two records' contents swapped (digests included): found at the lower id.
    let v = tampered(
        &mut db,
        &format!(
            "CREATE TEMP TABLE saved AS SELECT * FROM pgauth.audit_records WHERE id IN ({ann}, {zed});
             UPDATE pgauth.audit_records l
                SET occurred_at = s.occurred_at, txid = s.txid, event = s.event, shape = s.shape,
                    rows = s.rows, events = s.events, record_digest = s.record_digest
               FROM saved s
              WHERE (l.id, s.id) IN (({ann}, {zed}), ({zed}, {ann}));"
        ),
    );
    assert_eq!(v.first_bad_id, Some(ann), "{v:?}");

    // A forger who also recomputes the record digest is caught by the transaction digest.
    let v = tampered(
        &mut db,
        &format!(
            "UPDATE pgauth.audit_records
                SET rows = decode(replace(encode(rows, 'hex'), encode('user 4', 'hex'),
                                          encode('user 9', 'hex')), 'hex')
              WHERE id = {user3};
             UPDATE pgauth.audit_records SET record_digest = pgauth.audit_record_digest(id,
                    last_id, event_count, occurred_at, txid, db_user, app_user_id, client_addr,
                    event, table_name, shape, rows, events) WHERE id = {user3};"
        ),
    );
    assert_eq!(v.first_bad_id, Some(user2), "{v:?}");
    assert!(v
        .reason
        .as_deref()
        .unwrap_or("")
        .contains("do not match its digest"));
    // What the forger achieved is visible in the log, and found.
    db.batch_execute("BEGIN").unwrap();
    db.batch_execute(&format!(
        "SET LOCAL session_replication_role = replica;
                  UPDATE pgauth.audit_records
                     SET rows = decode(replace(encode(rows, 'hex'), encode('user 4', 'hex'),
                                               encode('user 9', 'hex')), 'hex')
                   WHERE id = {user3}"
    ))
    .unwrap();
    let owner: String = db
        .query_one(
            "SELECT new_values->>'owner' FROM pgauth.audit_log WHERE event = 'insert' AND row_key = '{\"id\": 4}'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, "user 9");
    db.batch_execute("ROLLBACK").unwrap();

    // Chain entries changed or removed.
    let v = tampered(
        &mut db,
        "UPDATE pgauth.audit_chain SET record_counts[1] = record_counts[1] + 1 WHERE position = 2",
    );
    assert!(!v.ok, "{v:?}");
    // Position 3 is the transaction that inserted users 2..6: its records lose their cover.
    let v = tampered(&mut db, "DELETE FROM pgauth.audit_chain WHERE position = 3");
    assert_eq!(v.first_bad_id, Some(user2), "{v:?}");
    assert!(v.reason.as_deref().unwrap_or("").contains("not covered"));
    // ... and with its records gone too, the gap in the chain shows.
    let v = tampered(
        &mut db,
        "DELETE FROM pgauth.audit_records l USING pgauth.audit_chain_txns c WHERE c.position = 3 AND l.txid = c.txid;
         DELETE FROM pgauth.audit_chain WHERE position = 3;",
    );
    assert!(!v.ok);
    assert!(
        v.reason
            .as_deref()
            .unwrap_or("")
            .contains("follows position 2"),
        "{v:?}"
    );

    // A record committed after the last seal is checked against its own digest.
    db.batch_execute(
        "SET pgauth.audit_seal_interval = '1h'; INSERT INTO accounts VALUES (20, 'first', 1)",
    )
    .unwrap();
    db.batch_execute("INSERT INTO accounts VALUES (21, 'pending', 1)")
        .unwrap();
    let pending = id_of(&mut db, "insert", 21);
    let sealed: i64 = db
        .query_one(
            "SELECT count(*) FROM pgauth.audit_chain_txns c JOIN pgauth.audit_records r USING (txid)
              WHERE r.id = $1",
            &[&pending],
        )
        .unwrap()
        .get(0);
    assert_eq!(sealed, 0, "not sealed yet");
    assert!(verify(&mut db).ok);
    let v = tampered(
        &mut db,
        &format!(
            "UPDATE pgauth.audit_records
                SET rows = decode(replace(encode(rows, 'hex'), encode('pending', 'hex'),
                                          encode('changed', 'hex')), 'hex')
              WHERE id = {pending}"
        ),
    );
    assert_eq!(v.first_bad_id, Some(pending), "{v:?}");
    assert!(
        v.reason.as_deref().unwrap_or("").contains("not sealed yet"),
        "{v:?}"
    );
    // Once sealed, it is in the chain like the others.
    assert!(seal(&mut db) >= 1);
    assert!(verify(&mut db).ok);

    // Nothing above was kept.
    assert!(verify(&mut db).ok);
}

#[test]
fn verification_reads_the_chain_in_chunks_and_finds_tampering_in_any() {
    // 200 transactions, one chain entry each: verification reads them in chunks of 64 entries.
    let mut db = database_with_audited_table("pgauth_it_audit_chunks", "c");
    db.batch_execute("SET pgauth.audit_seal_interval = 0")
        .unwrap();
    for i in 1..=200 {
        db.batch_execute(&format!("INSERT INTO c VALUES ({i})"))
            .unwrap();
    }
    seal(&mut db);
    let entries: i64 = db
        .query_one("SELECT count(*) FROM pgauth.audit_chain", &[])
        .unwrap()
        .get(0);
    assert!(entries > 130, "{entries} entries: more than two chunks");
    let v = verify(&mut db);
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, 201, "200 inserts and audit_enabled");
    let id_of_c = |db: &mut Client, key: i32| -> i64 {
        db.query_one(
            "SELECT id FROM pgauth.audit_log WHERE table_name = 'public.c' AND row_key = jsonb_build_object('id', $1::int)",
            &[&key],
        )
        .unwrap()
        .get(0)
    };
    // A record changed in the third chunk, one deleted in the second: each found at its id.
    let late = id_of_c(&mut db, 170);
    let v = tampered(
        &mut db,
        &format!("UPDATE pgauth.audit_records SET event = 'delete' WHERE id = {late}"),
    );
    assert_eq!(v.first_bad_id, Some(late), "{v:?}");
    let middle = id_of_c(&mut db, 100);
    let v = tampered(
        &mut db,
        &format!("DELETE FROM pgauth.audit_records WHERE id = {middle}"),
    );
    assert_eq!(v.first_bad_id, Some(middle), "{v:?}");
    assert!(
        v.reason.as_deref().unwrap_or("").contains("0 remain"),
        "{v:?}"
    );
    // From an id on: the entries before it are not read, the rest verifies.
    let v = verify_sql(&mut db, "SELECT * FROM auth_audit_verify($1)", &[&middle]);
    assert!(v.ok, "{v:?}");
    assert!(v.checked >= 101 && v.checked < 201, "{v:?}");
}

#[test]
fn a_cut_tail_is_found_against_a_stored_head() {
    let mut db = audited_database("pgauth_it_audit_tail");
    let head = db
        .query_one("SELECT id, digest FROM auth_audit_head()", &[])
        .unwrap();
    let (head_id, head_digest): (i64, Vec<u8>) = (head.get(0), head.get(1));
    db.batch_execute("INSERT INTO accounts VALUES (8, 'later', 8)")
        .unwrap();
    let with_head = "SELECT * FROM auth_audit_verify(NULL, $1, $2)";
    assert!(verify_sql(&mut db, with_head, &[&head_id, &head_digest]).ok);

    // Remove the last two transactions (records and chain entries): the chain itself is intact.
    db.batch_execute("BEGIN").unwrap();
    db.batch_execute(
        "SET LOCAL session_replication_role = replica;
         DELETE FROM pgauth.audit_records l USING pgauth.audit_chain_txns c
          WHERE l.txid = c.txid AND c.position > (SELECT max(position) - 2 FROM pgauth.audit_chain);
         DELETE FROM pgauth.audit_chain
          WHERE position > (SELECT max(position) - 2 FROM pgauth.audit_chain);",
    )
    .unwrap();
    assert!(
        verify(&mut db).ok,
        "without a stored head a cut tail is invisible"
    );
    let v = verify_sql(&mut db, with_head, &[&head_id, &head_digest]);
    assert!(!v.ok);
    assert!(v.reason.as_deref().unwrap_or("").contains("tail"), "{v:?}");
    db.batch_execute("ROLLBACK").unwrap();

    // A head from another database's chain does not match.
    let mut wrong = head_digest.clone();
    wrong[0] ^= 1;
    assert!(!verify_sql(&mut db, with_head, &[&head_id, &wrong]).ok);
}

#[test]
fn concurrent_writers_with_rollbacks_keep_one_verifiable_chain() {
    let mut db = fresh_database("pgauth_it_audit_concurrent");
    db.batch_execute(
        "CREATE TABLE events (id bigint PRIMARY KEY, writer int NOT NULL, n int NOT NULL);
         SELECT auth_audit_enable('events');",
    )
    .unwrap();
    let committed = Arc::new(Mutex::new(BTreeSet::<i64>::new()));
    let writers = 4;
    let mut handles = Vec::new();
    for w in 0..writers {
        let committed = committed.clone();
        handles.push(thread::spawn(move || {
            let mut c = connect_to("pgauth_it_audit_concurrent");
            // Every commit tries to seal: sealers race each other and the writers.
            c.batch_execute("SET pgauth.audit_seal_interval = 0")
                .unwrap();
            for t in 0..40i64 {
                let base = (w as i64) * 1_000_000 + t * 100;
                let mut txn = c.transaction().unwrap();
                txn.execute(
                    "INSERT INTO events SELECT $1::bigint + g, $2, g FROM generate_series(0, 2) g",
                    &[&base, &w],
                )
                .unwrap();
                // Overlap with the other writers' transactions.
                txn.batch_execute("SELECT pg_sleep(0.002)").unwrap();
                txn.batch_execute("SAVEPOINT s").unwrap();
                txn.execute(
                    "INSERT INTO events VALUES ($1::bigint + 50, $2, 50)",
                    &[&base, &w],
                )
                .unwrap();
                if t % 3 == 0 {
                    txn.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
                }
                txn.execute("UPDATE events SET n = n + 1 WHERE id = $1", &[&base])
                    .unwrap();
                if t % 5 == 4 {
                    txn.rollback().unwrap();
                    continue;
                }
                txn.commit().unwrap();
                let mut ids = committed.lock().unwrap();
                ids.extend([base, base + 1, base + 2]);
                if t % 3 != 0 {
                    ids.insert(base + 50);
                }
            }
        }));
    }
    // Verifying while they write and seal: committed-but-unsealed records are fine.
    let mut checks = 0;
    while handles.iter().any(|h| !h.is_finished()) {
        let v = verify(&mut db);
        assert!(v.ok, "verify during the writes: {v:?}");
        checks += 1;
    }
    assert!(checks > 0);
    for h in handles {
        h.join().expect("writer");
    }
    seal(&mut db);
    let v = verify(&mut db);
    assert!(v.ok, "{v:?}");
    let committed = committed.lock().unwrap();
    let inserts: i64 = db
        .query_one(
            "SELECT count(*) FROM pgauth.audit_log WHERE table_name = 'public.events' AND event = 'insert'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        inserts as usize,
        committed.len(),
        "one insert row per committed row"
    );
    let updates: i64 = db
        .query_one(
            "SELECT count(*) FROM pgauth.audit_log WHERE table_name = 'public.events' AND event = 'update'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        updates,
        writers as i64 * 32,
        "one update row per committed transaction"
    );
    let txns: i64 = db
        .query_one(
            "SELECT count(*) FROM pgauth.audit_chain_txns c WHERE EXISTS
               (SELECT 1 FROM pgauth.audit_log l WHERE l.txid = c.txid AND l.table_name = 'public.events')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(txns, updates, "each committed transaction sealed once");
    assert_eq!(
        txns,
        writers as i64 * 32,
        "4 writers × 40 transactions, 8 rolled back each"
    );
    let (sum, records, events): (i64, i64, i64) = {
        let r = db
            .query_one(
                "SELECT (SELECT sum(record_count)::bigint FROM pgauth.audit_chain_txns),
                        (SELECT count(*) FROM pgauth.audit_records),
                        (SELECT count(*) FROM pgauth.audit_log)",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(sum, records, "the chain covers every record exactly");
    // Id ranges reserved concurrently never overlap, and each record's ids are consecutive.
    let (ids, distinct, misfits): (i64, i64, i64) = {
        let r = db
            .query_one(
                "SELECT count(*), count(DISTINCT l.id),
                        count(*) FILTER (WHERE l.id NOT BETWEEN r.id AND r.last_id)
                   FROM pgauth.audit_log l JOIN pgauth.audit_records r ON r.id = l.record_id",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((ids, misfits), (distinct, 0));
    assert_eq!(v.checked, events, "verify counts events");
}

/// The cluster's data directory and binaries (tests/cluster.sh layout).
fn cluster() -> (String, String) {
    let root = std::env::var("TEST_ROOT").unwrap_or_else(|_| "/tmp/pgauth-test".into());
    let bin = std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    (root, bin)
}

/// Run a PostgreSQL binary as the postgres user; panic with its stderr on failure.
fn as_postgres(bin: &str, args: &[&str]) {
    let out = Command::new("sudo")
        .args(["-u", "postgres", bin])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_for_server(db: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Client::connect(&format!("{} dbname={db}", dsn()), NoTls) {
            Ok(mut c) => {
                if c.simple_query("SELECT 1").is_ok() {
                    return c;
                }
            }
            Err(_) if Instant::now() < deadline => {}
            Err(e) => panic!("server did not come back: {e}"),
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// The writers: a stop flag, the committed ids, their threads.
type Writers = (
    Arc<AtomicBool>,
    Arc<Mutex<BTreeSet<i64>>>,
    Vec<thread::JoinHandle<()>>,
);

/// Audited writers that record which ids they saw committed, until told to stop or their
/// connection dies.
fn start_writers(db: &str, n: usize) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(Mutex::new(BTreeSet::new()));
    let mut handles = Vec::new();
    for w in 0..n {
        let (stop, committed, db) = (stop.clone(), committed.clone(), db.to_string());
        handles.push(thread::spawn(move || {
            let Ok(mut c) = Client::connect(&format!("{} dbname={db}", dsn()), NoTls) else {
                return;
            };
            let _ = c.execute(
                "SELECT set_config('application_name', 'pgauth_audit_writer', false)",
                &[],
            );
            let mut next = (w as i64 + 1) * 10_000_000;
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut txn) = c.transaction() else { return };
                let ok = txn
                    .execute(
                        "INSERT INTO crash SELECT $1::bigint + g, repeat('x', 200) FROM generate_series(0, 9) g",
                        &[&next],
                    )
                    .is_ok()
                    && txn.commit().is_ok();
                if !ok {
                    return;
                }
                committed.lock().unwrap().extend(next..next + 10);
                next += 10;
            }
        }));
    }
    (stop, committed, handles)
}

fn assert_every_committed_row_audited(db: &mut Client, committed: &BTreeSet<i64>) {
    let v = verify(db);
    assert!(v.ok, "{v:?}");
    // What committed before the crash and was not sealed yet is sealed now.
    seal(db);
    let v = verify(db);
    assert!(v.ok, "after sealing: {v:?}");
    let unsealed: i64 = db
        .query_one(
            "SELECT count(*) FROM pgauth.audit_records r
              WHERE NOT EXISTS (SELECT 1 FROM pgauth.audit_chain_txns c WHERE c.txid = r.txid)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(unsealed, 0, "every committed record is chained");
    let missing: i64 = db
        .query_one(
            // Set operations (hashed or sorted), not a subquery per row.
            "SELECT count(*) FROM (
                 SELECT c.id FROM unnest($1::bigint[]) c(id)
                 EXCEPT
                 SELECT t.id FROM crash t
                  WHERE t.id IN (SELECT (row_key->>'id')::bigint FROM pgauth.audit_log
                                  WHERE table_name = 'public.crash')) missing",
            &[&committed.iter().copied().collect::<Vec<i64>>()],
        )
        .unwrap()
        .get(0);
    assert_eq!(missing, 0, "every committed row and its audit row survive");
    // And nothing in the table escaped the audit log.
    let unaudited: i64 = db
        .query_one(
            "SELECT count(*) FROM (
                 SELECT t.id FROM crash t
                 EXCEPT
                 SELECT (row_key->>'id')::bigint FROM pgauth.audit_log
                  WHERE table_name = 'public.crash') unaudited",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(unaudited, 0);
}

fn crash_database(name: &str) -> Client {
    let mut db = fresh_database(name);
    db.batch_execute(
        "CREATE TABLE crash (id bigint PRIMARY KEY, pad text);
         SELECT auth_audit_enable('crash');",
    )
    .unwrap();
    db
}

#[test]
fn kill_9_of_a_backend_during_audited_writes() {
    let name = "pgauth_it_audit_kill";
    let mut db = crash_database(name);
    let (stop, committed, handles) = start_writers(name, 3);
    thread::sleep(Duration::from_millis(1500));
    let pid: i32 = db
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgauth_audit_writer' LIMIT 1",
            &[],
        )
        .expect("a writer backend")
        .get(0);
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    drop(db);
    // The postmaster reinitialises after a backend is killed: wait for it.
    let mut db = wait_for_server(name);
    let committed = committed.lock().unwrap();
    assert!(committed.len() > 100, "the writers did write");
    assert_every_committed_row_audited(&mut db, &committed);
}

#[test]
fn immediate_shutdown_under_load() {
    let name = "pgauth_it_audit_immediate";
    let db = crash_database(name);
    let (stop, committed, handles) = start_writers(name, 3);
    thread::sleep(Duration::from_millis(1500));
    let (root, bin) = cluster();
    let data = format!("{root}/data");
    let ctl = format!("{bin}/pg_ctl");
    as_postgres(&ctl, &["-D", &data, "-m", "immediate", "-w", "stop"]);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    drop(db);
    let log = format!("{root}/server.log");
    as_postgres(&ctl, &["-D", &data, "-w", "-t", "60", "-l", &log, "start"]);
    let mut db = wait_for_server(name);
    let committed = committed.lock().unwrap();
    assert!(committed.len() > 100, "the writers did write");
    assert_every_committed_row_audited(&mut db, &committed);
}

#[test]
fn an_unprivileged_role_cannot_touch_the_audit_log() {
    let mut db = audited_database("pgauth_it_audit_privileges");
    db.batch_execute(
        "DROP ROLE IF EXISTS pgauth_it_nobody;
         CREATE ROLE pgauth_it_nobody LOGIN;
         CREATE TABLE mine (id int PRIMARY KEY);
         ALTER TABLE mine OWNER TO pgauth_it_nobody;
         GRANT ALL ON accounts TO pgauth_it_nobody;",
    )
    .unwrap();
    let mut nobody = Client::connect(
        &format!(
            "{} dbname=pgauth_it_audit_privileges user=pgauth_it_nobody",
            dsn()
        ),
        NoTls,
    )
    .expect("connect as pgauth_it_nobody");
    for sql in [
        "SELECT auth_audit_enable('mine')",
        "SELECT auth_audit_disable('accounts')",
        "SELECT * FROM auth_audit_verify()",
        "SELECT * FROM auth_audit_head()",
        "SELECT auth_audit_purge(1)",
        "SELECT count(*) FROM pgauth.audit_log",
        "SELECT count(*) FROM auth_audit_events()",
        "SELECT count(*) FROM pgauth.audit_records",
        "INSERT INTO pgauth.audit_records (id, last_id, event_count, occurred_at, txid, event, record_digest) VALUES (1, 1, 1, now(), '1', 'forged', '\\x00')",
        "SELECT pgauth.record_event('forged', 'x')",
        "DROP TRIGGER pgauth_audit_insert ON accounts",
    ] {
        let err = nobody.batch_execute(sql).expect_err(sql);
        assert_eq!(sqlstate(&err), Some("42501"), "{sql}: {err}");
    }
    // Its writes to an audited table are audited all the same, under its name.
    nobody
        .batch_execute("INSERT INTO accounts VALUES (100, 'nobody', 0)")
        .unwrap();
    let user: String = db
        .query_one(
            "SELECT db_user FROM pgauth.audit_log WHERE row_key = '{\"id\": 100}'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(user, "pgauth_it_nobody");
    assert!(verify(&mut db).ok);
    drop(nobody);
    db.batch_execute(
        "DROP TABLE mine; REVOKE ALL ON accounts FROM pgauth_it_nobody; DROP ROLE pgauth_it_nobody",
    )
    .unwrap();
}

#[test]
fn key_events_are_audit_rows() {
    let mut db = fresh_database("pgauth_it_audit_keys");
    db.batch_execute(
        "SELECT auth_create_key('it_audit_key'); SELECT auth_rotate_key('it_audit_key')",
    )
    .unwrap();
    let rows = db
        .query(
            "SELECT event, row_key->>'subject' FROM pgauth.audit_log WHERE table_name IS NULL ORDER BY id",
            &[],
        )
        .unwrap();
    let events: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        events,
        vec![
            ("key_created".to_string(), "it_audit_key".to_string()),
            ("key_rotated".to_string(), "it_audit_key".to_string()),
        ]
    );
    assert!(verify(&mut db).ok);
}

#[test]
fn repeatable_read_and_serializable_writers_chain_after_later_commits() {
    let mut db = database_with_audited_table("pgauth_it_audit_isolation", "iso");
    let mut a = connect_to("pgauth_it_audit_isolation");
    let mut b = connect_to("pgauth_it_audit_isolation");
    // Both take their snapshots first; a commits; b's snapshot does not see a's chain entry.
    a.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM iso")
        .unwrap();
    b.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT count(*) FROM iso")
        .unwrap();
    a.batch_execute("INSERT INTO iso VALUES (1)").unwrap();
    b.batch_execute("INSERT INTO iso VALUES (2)").unwrap();
    a.batch_execute("COMMIT").unwrap();
    db.batch_execute("INSERT INTO iso VALUES (3)").unwrap();
    b.batch_execute("COMMIT").unwrap();
    seal(&mut db);
    let v = verify(&mut db);
    assert!(v.ok, "{v:?}");
    let sealed: i64 = db
        .query_one("SELECT count(*) FROM pgauth.audit_chain_txns", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        sealed, 4,
        "sealed: the audit_enabled event and three inserts"
    );
}

#[test]
fn writers_wait_neither_for_each_other_nor_for_a_sealer() {
    let mut db = database_with_audited_table("pgauth_it_audit_nowait", "nw");
    let mut a = connect_to("pgauth_it_audit_nowait");
    let mut b = connect_to("pgauth_it_audit_nowait");
    // a: an open transaction that wrote audit records and holds the chain lock (it sealed).
    a.batch_execute("BEGIN; INSERT INTO nw VALUES (1); SELECT auth_audit_seal();")
        .unwrap();
    // b: every commit tries to seal. A wait for a's lock or a's records would hit the timeout.
    b.batch_execute("SET statement_timeout = '3s'; SET pgauth.audit_seal_interval = 0")
        .unwrap();
    for i in 2..=40 {
        b.batch_execute(&format!("INSERT INTO nw VALUES ({i})"))
            .unwrap_or_else(|e| panic!("insert {i} waited or failed: {e}"));
    }
    let chained = |db: &mut Client| -> i64 {
        db.query_one(
            "SELECT count(*) FROM pgauth.audit_chain_txns c
              WHERE EXISTS (SELECT 1 FROM pgauth.audit_records r
                             WHERE r.txid = c.txid AND r.table_name = 'public.nw')",
            &[],
        )
        .unwrap()
        .get(0)
    };
    // b's transactions started after a's: the horizon stays below a until a ends.
    assert_eq!(
        chained(&mut db),
        0,
        "nothing above an open transaction is sealed"
    );
    assert!(
        verify(&mut db).ok,
        "committed, not sealed yet: verified by their own digests"
    );
    a.batch_execute("COMMIT").unwrap();
    seal(&mut db);
    assert_eq!(
        chained(&mut db),
        40,
        "every committed transaction sealed, a's included"
    );
    assert!(verify(&mut db).ok);
}

#[test]
fn a_chain_restored_from_another_cluster_goes_on_from_a_checkpoint() {
    let mut db = database_with_audited_table("pgauth_it_audit_restored", "r");
    db.batch_execute("INSERT INTO r VALUES (1)").unwrap();
    seal(&mut db);
    // What a pg_dump restore into another cluster looks like: a head horizon above this
    // cluster's transaction ids. The horizon is covered by the chain digest, so the last entry's
    // digest is recomputed here by the README's definition (with pgauth's SHA3-512): a
    // restored chain verifies as it was.
    db.batch_execute(
        "BEGIN; SET LOCAL session_replication_role = replica;
         UPDATE pgauth.audit_chain
            SET horizon = (pg_current_xact_id()::text::bigint + 1000000000)::text::xid8
          WHERE position = (SELECT max(position) FROM pgauth.audit_chain);
         UPDATE pgauth.audit_chain c SET chain_digest = auth_digest(
                'pgauth audit chain v2'::bytea
                || coalesce((SELECT p.chain_digest FROM pgauth.audit_chain p
                              WHERE p.position = c.position - 1), decode(repeat('00', 64), 'hex'))
                || int8send(c.position) || int8send(c.from_horizon::text::bigint)
                || int8send(c.horizon::text::bigint) || int8send(cardinality(c.txids)::bigint)
                || (SELECT string_agg(int8send(t.txid::text::bigint) || int8send(t.first_id)
                                      || int8send(t.last_id) || int8send(t.record_count)
                                      || t.txn_digest, ''::bytea ORDER BY t.n)
                      FROM unnest(c.txids, c.first_ids, c.last_ids, c.record_counts, c.txn_digests)
                           WITH ORDINALITY t(txid, first_id, last_id, record_count, txn_digest, n)))
          WHERE position = (SELECT max(position) FROM pgauth.audit_chain);
         COMMIT;",
    )
    .unwrap();
    let v = verify(&mut db);
    assert!(v.ok, "the restored chain verifies: {v:?}");
    let err = db
        .batch_execute("SELECT auth_audit_seal()")
        .expect_err("sealing onto a restored chain");
    assert!(
        db_message(&err).contains("restored from another cluster"),
        "{err:?}"
    );
    // Writes go on (commits skip sealing); the log verifies.
    db.batch_execute("SET pgauth.audit_seal_interval = 0; INSERT INTO r VALUES (2)")
        .unwrap();
    assert!(verify(&mut db).ok, "{:?}", verify(&mut db));
    // Archive and purge the restored chain: the chain goes on from the checkpoint.
    let last: i64 = db
        .query_one("SELECT max(position) FROM pgauth.audit_chain", &[])
        .unwrap()
        .get(0);
    db.query_one("SELECT auth_audit_purge($1)", &[&last])
        .unwrap();
    assert!(seal(&mut db) >= 1, "the new records are chained");
    let v = verify(&mut db);
    assert!(v.ok, "{v:?}");
    let first_new: i64 = db
        .query_one("SELECT min(position) FROM pgauth.audit_chain", &[])
        .unwrap()
        .get(0);
    assert_eq!(first_new, last + 1, "numbered on from the checkpoint");
}

#[test]
fn a_failing_seal_does_not_fail_the_applications_commit() {
    let mut db = database_with_audited_table("pgauth_it_audit_sealfail", "s");
    db.batch_execute("INSERT INTO s VALUES (1)").unwrap();
    seal(&mut db);
    // A damaged chain head (as a superuser could leave it).
    db.batch_execute(
        "BEGIN; SET LOCAL session_replication_role = replica;
         UPDATE pgauth.audit_chain SET chain_digest = '\\x00'
          WHERE position = (SELECT max(position) FROM pgauth.audit_chain);
         COMMIT;",
    )
    .unwrap();
    // Every commit tries to seal, fails, and commits all the same.
    db.batch_execute("SET pgauth.audit_seal_interval = 0")
        .unwrap();
    for i in 2..=5 {
        db.batch_execute(&format!("INSERT INTO s VALUES ({i})"))
            .unwrap_or_else(|e| panic!("commit {i} failed: {e:?}"));
    }
    let rows: i64 = db.query_one("SELECT count(*) FROM s", &[]).unwrap().get(0);
    assert_eq!(rows, 5);
    let audited: i64 = db
        .query_one(
            "SELECT count(*) FROM pgauth.audit_log WHERE table_name = 'public.s'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(audited, 5, "the records were written");
    // The explicit seal and verify report the damage.
    let err = db
        .batch_execute("SELECT auth_audit_seal()")
        .expect_err("sealing onto a damaged head");
    assert!(db_message(&err).contains("malformed digest"), "{err:?}");
    assert!(!verify(&mut db).ok);
}

#[test]
fn a_hot_standby_reports_the_primarys_head_and_verifies() {
    let name = "pgauth_it_audit_standby";
    let mut db = database_with_audited_table(name, "s");
    db.batch_execute("SET pgauth.audit_seal_interval = '1h'; INSERT INTO s VALUES (1)")
        .unwrap();
    let head = db
        .query_one("SELECT id, digest FROM auth_audit_head()", &[])
        .unwrap();
    let (head_id, head_digest): (i64, Vec<u8>) = (head.get(0), head.get(1));
    // Committed after the head: not sealed yet when the standby reads it.
    db.batch_execute("INSERT INTO s VALUES (2)").unwrap();

    // A real streaming standby of the test cluster, on its own port.
    let (root, bin) = cluster();
    let standby = format!("{root}-standby");
    let data = format!("{standby}/data");
    let port = "5496";
    let _ = Command::new("sudo")
        .args([
            "-u",
            "postgres",
            &format!("{bin}/pg_ctl"),
            "-D",
            &data,
            "-m",
            "immediate",
            "stop",
        ])
        .output();
    let _ = std::fs::remove_dir_all(&standby);
    std::fs::create_dir_all(&standby).unwrap();
    Command::new("chown")
        .args(["postgres:", &standby])
        .status()
        .unwrap();
    let primary_port = dsn_port();
    as_postgres(
        &format!("{bin}/pg_basebackup"),
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &primary_port,
            "-U",
            "postgres",
            "-D",
            &data,
            "-R",
            "-X",
            "stream",
            // An immediate checkpoint, not a spread one.
            "-c",
            "fast",
        ],
    );
    let log = format!("{standby}/server.log");
    let options = format!("-p {port} -c unix_socket_directories={standby}");
    as_postgres(
        &format!("{bin}/pg_ctl"),
        &[
            "-D", &data, "-o", &options, "-l", &log, "-w", "-t", "60", "start",
        ],
    );
    let result = std::panic::catch_unwind(|| {
        let mut replica = {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match Client::connect(
                    &format!("host=127.0.0.1 port={port} user=postgres dbname={name}"),
                    NoTls,
                ) {
                    Ok(c) => break c,
                    Err(e) if Instant::now() > deadline => panic!("standby: {e}"),
                    Err(_) => thread::sleep(Duration::from_millis(200)),
                }
            }
        };
        let in_recovery: bool = replica
            .query_one("SELECT pg_is_in_recovery()", &[])
            .unwrap()
            .get(0);
        assert!(in_recovery, "a standby");
        // The standby cannot seal: it reports the head the primary sealed.
        let row = replica
            .query_one("SELECT id, digest FROM auth_audit_head()", &[])
            .expect("auth_audit_head() on a hot standby");
        assert_eq!(
            (row.get::<_, i64>(0), row.get::<_, Vec<u8>>(1)),
            (head_id, head_digest.clone())
        );
        // It verifies, the unsealed record by its own digest, and against the stored head.
        let v = verify_sql(
            &mut replica,
            "SELECT * FROM auth_audit_verify(NULL, $1, $2)",
            &[&head_id, &head_digest],
        );
        assert!(v.ok, "{v:?}");
        assert_eq!(v.checked, 3, "audit_enabled and two inserts");
    });
    as_postgres(
        &format!("{bin}/pg_ctl"),
        &["-D", &data, "-m", "fast", "-w", "stop"],
    );
    let _ = std::fs::remove_dir_all(&standby);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// A security administrator connected as itself (a member of pgauth_admin, not SET ROLE) can
/// neither forge a security event nor change pgauth's state unaudited: its direct writes to
/// sessions, credentials and role grants are table-change events under its name, and no
/// secret (the password hash it wrote, the session's token hash) is stored in the log.
#[test]
fn pgauth_admin_cannot_forge_events_or_change_state_unaudited() {
    let mut db = fresh_database("pgauth_it_audit_forge");
    db.batch_execute(
        "DROP ROLE IF EXISTS pgauth_it_forger;
         CREATE ROLE pgauth_it_forger LOGIN IN ROLE pgauth_admin;",
    )
    .unwrap();
    let victim: String = db
        .query_one(
            "SELECT auth_create_user('victim', 'Tr4vel-Quartz-Mango-71')::text",
            &[],
        )
        .unwrap()
        .get(0);
    db.batch_execute(&format!(
        "SELECT auth_create_role('admin_role');
         SELECT auth_create_session('{victim}')"
    ))
    .unwrap();
    let before: i64 = db
        .query_one("SELECT coalesce(max(id), 0) FROM pgauth.audit_log", &[])
        .unwrap()
        .get(0);
    let mut forger = Client::connect(
        &format!(
            "{} dbname=pgauth_it_audit_forge user=pgauth_it_forger",
            dsn()
        ),
        NoTls,
    )
    .expect("connect as pgauth_it_forger");
    let err = forger
        .batch_execute("SELECT pgauth.record_event('login_succeeded', 'victim', '{}')")
        .expect_err("a forged event");
    assert_eq!(sqlstate(&err), Some("42501"), "{err}");
    // A bcrypt hash of its own choosing, passed as a parameter: it must not reach the log.
    let planted = "$2a$06$ZzjP0Icri5lPJGa8EmvywulUeD9Vw8ZqkwtDbZidtpa4qXYmATzkG";
    forger
        .execute(
            "UPDATE pgauth.credentials SET password_hash = $1 WHERE user_id = $2::text::uuid",
            &[&planted, &victim],
        )
        .unwrap();
    forger
        .batch_execute(&format!(
            "UPDATE pgauth.sessions SET aal = 3 WHERE user_id = '{victim}';
             INSERT INTO pgauth.role_grants (user_id, role_id) VALUES ('{victim}', pgauth.role_id('admin_role'));"
        ))
        .unwrap();
    drop(forger);
    let events: Vec<(String, String, String, String)> = db
        .query(
            "SELECT db_user, event, table_name, new_values::text FROM pgauth.audit_log
              WHERE id > $1 ORDER BY id",
            &[&before],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let summary: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|(u, e, t, _)| (u.as_str(), e.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("pgauth_it_forger", "update", "pgauth.credentials"),
            ("pgauth_it_forger", "update", "pgauth.sessions"),
            ("pgauth_it_forger", "insert", "pgauth.role_grants"),
        ],
        "{events:#?}"
    );
    assert_eq!(events[0].3, r#"{"password_hash": "(redacted)"}"#);
    assert_eq!(events[1].3, r#"{"aal": 3}"#);
    // Neither the planted hash, the user's real hash nor the session's token hash is stored.
    let leaked: i64 = db
        .query_one(
            "SELECT count(*) FROM pgauth.audit_records r
              WHERE r.id > $1 AND (strpos(coalesce(r.events, ''), $2) > 0
                 OR EXISTS (SELECT 1 FROM pgauth.sessions s
                             WHERE strpos(coalesce(r.events, ''), encode(s.token_hash, 'hex')) > 0))",
            &[&before, &planted],
        )
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);
    let verdict = verify(&mut db);
    assert!(verdict.ok, "{verdict:?}");
    db.batch_execute("DROP OWNED BY pgauth_it_forger; DROP ROLE pgauth_it_forger")
        .unwrap();
}
