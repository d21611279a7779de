//! The audit log through a real client: tampering by a superuser, a cut tail, concurrent
//! writers with rollbacks, privileges, and security events of other capabilities. Crashes,
//! standbys and restores into other clusters are in audit_cluster.rs.

use pgauth_integration_tests::audit::*;
use pgauth_integration_tests::*;
use postgres::{Client, NoTls};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::thread;

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
