//! Encryption through a real client: the envelope decrypted outside Rust, revocation seen by
//! another connection, and keys plus data surviving pg_dump / pg_restore into a new cluster.

use pgauth_integration_tests::*;
use std::process::Command;

#[test]
fn python_decrypts_the_documented_envelope() {
    let mut db = fresh_database("pgauth_it_envelope");
    let plaintext = "card 4111-1111-1111-1111 ✓";
    let aad: &[u8] = b"customer:17";
    let row = db
        .query_one(
            "SELECT auth_encrypt($1::text, 'default', $2) AS v",
            &[&plaintext, &aad],
        )
        .unwrap();
    let envelope: Vec<u8> = row.get(0);
    let key = db
        .query_one(
            "SELECT uuid_send(id), wrapped_key FROM pgauth.keys WHERE name = 'default' AND status = 'active'",
            &[],
        )
        .unwrap();
    let (key_id, wrapped): (Vec<u8>, Vec<u8>) = (key.get(0), key.get(1));
    assert_eq!(
        &envelope[1..17],
        key_id.as_slice(),
        "the envelope names its key"
    );
    let master_file = format!("{}/master.key", test_root());
    // Python's `cryptography` (OpenSSL) unwraps the data key with the master key and opens the
    // envelope, following only the layout documented in docs/crypto.md.
    let script = r#"
import sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
master = bytes.fromhex(open(sys.argv[1]).read().strip())
key_id, wrapped, env, aad = (bytes.fromhex(a) for a in sys.argv[2:6])
data_key = AESGCM(master).decrypt(wrapped[:12], wrapped[12:], b"pgauth data key v1" + key_id)
assert env[0] == 1 and env[1:17] == key_id
print(AESGCM(data_key).decrypt(env[17:29], env[29:], env[:17] + aad).decode(), end="")
"#;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &master_file,
            &hex(&key_id),
            &hex(&wrapped),
            &hex(&envelope),
            &hex(aad),
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), plaintext);
}

#[test]
fn revocation_is_seen_by_another_connection() {
    let mut a = fresh_database("pgauth_it_revoke");
    let mut b = connect_to("pgauth_it_revoke");
    a.batch_execute("CREATE TABLE t AS SELECT auth_encrypt('v') AS v")
        .unwrap();
    let ok: String = a
        .query_one("SELECT auth_decrypt_text(v) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(ok, "v");
    b.batch_execute("SELECT auth_revoke_key(id) FROM pgauth.keys WHERE name = 'default'")
        .unwrap();
    let err = a
        .query_one("SELECT auth_decrypt_text(v) FROM t", &[])
        .expect_err("revoked key must not decrypt");
    assert_eq!(sqlstate(&err), Some("22000"), "{err}");
}

#[test]
fn keys_and_data_survive_dump_and_restore_into_a_new_cluster() {
    let mut db = fresh_database("pgauth_it_dump");
    db.batch_execute(
        "CREATE TABLE secrets (id int PRIMARY KEY, v bytea, bidx bytea);
         INSERT INTO secrets SELECT g, auth_encrypt('secret ' || g, 'default', int4send(g)),
                                    auth_blind_index('secret ' || g)
           FROM generate_series(1, 50) g;
         SELECT auth_create_key('tenant:7');
         SELECT auth_rotate_key('default');
         INSERT INTO secrets VALUES (51, auth_encrypt('after rotation', 'default', int4send(51)), NULL),
                                    (52, auth_encrypt('tenant seven', 'tenant:7', int4send(52)), NULL);",
    )
    .unwrap();
    // Key usage is granted to a role, by OID; the dump names the role, and a restore grants the
    // role of that name in the target cluster (its OID there differs).
    ensure_login_role(&mut db, "pgauth_it_dump_reader");
    db.batch_execute(
        "SELECT auth_grant_key_usage('tenant:7', 'pgauth_it_dump_reader');
         GRANT SELECT ON secrets TO pgauth_it_dump_reader;",
    )
    .unwrap();
    let keys_before: i64 = db
        .query_one("SELECT count(*) FROM pgauth.keys", &[])
        .unwrap()
        .get(0);
    let dump = dump_database("pgauth_it_dump");

    // A second cluster with the same master key file contents.
    let root2 = format!("{}-restore", test_root());
    let port2 = &pgauth_integration_tests::side_port(3);
    let _ = std::fs::create_dir_all(&root2);
    let sh = |cmd: &str| {
        let st = Command::new("bash").args(["-c", cmd]).status().unwrap();
        assert!(st.success(), "{cmd}");
    };
    sh(&format!(
        "chown postgres: {root2} && install -o postgres -m 600 {}/master.key {root2}/master.key",
        test_root()
    ));
    sh(&format!(
        "TEST_ROOT={root2} TEST_PORT={port2} bash {}/cluster.sh start",
        env!("CARGO_MANIFEST_DIR")
    ));
    let dsn2 = format!("host=127.0.0.1 port={port2} user=postgres dbname=postgres");
    let mut admin2 = postgres::Client::connect(&dsn2, postgres::NoTls).unwrap();
    admin2
        .batch_execute("DROP DATABASE IF EXISTS restored WITH (FORCE)")
        .unwrap();
    admin2.batch_execute("CREATE DATABASE restored").unwrap();
    for role in ["pgauth_it_dump_filler", "pgauth_it_dump_reader"] {
        ensure_login_role(&mut admin2, role);
    }
    restore_database(&dump, port2, "restored");
    let mut restored = postgres::Client::connect(
        &format!("host=127.0.0.1 port={port2} user=postgres dbname=restored"),
        postgres::NoTls,
    )
    .unwrap();
    let keys_after: i64 = restored
        .query_one("SELECT count(*) FROM pgauth.keys", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        keys_after, keys_before,
        "the keys table is restored once, no key added"
    );
    let good: i64 = restored
        .query_one(
            "SELECT count(*) FROM secrets
              WHERE auth_decrypt_text(v, int4send(id)) = CASE id WHEN 51 THEN 'after rotation'
                                                              WHEN 52 THEN 'tenant seven'
                                                              ELSE 'secret ' || id END",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        good, 52,
        "every value decrypts to its original plaintext (nothing encrypted twice)"
    );
    let found: i32 = restored
        .query_one(
            "SELECT id FROM secrets WHERE bidx = auth_blind_index('secret 9')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(found, 9, "blind indexes still match after restore");
    let reader_oid_matches: bool = restored
        .query_one(
            "SELECT grantee_oid = 'pgauth_it_dump_reader'::regrole::oid FROM pgauth.key_grants
              WHERE key_name = 'tenant:7' AND grantee = 'pgauth_it_dump_reader'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        reader_oid_matches,
        "the restored grant names the target cluster's role"
    );
    restored
        .batch_execute("SET ROLE pgauth_it_dump_reader")
        .unwrap();
    let tenant: String = restored
        .query_one(
            "SELECT auth_decrypt_text(v, int4send(id)) FROM secrets WHERE id = 52",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        tenant, "tenant seven",
        "the granted role uses the key after restore"
    );
    restored.batch_execute("RESET ROLE").unwrap();
    // New encryptions use the restored active key, not a new one.
    restored
        .batch_execute("SELECT auth_encrypt('new')")
        .unwrap();
    let keys_now: i64 = restored
        .query_one("SELECT count(*) FROM pgauth.keys", &[])
        .unwrap()
        .get(0);
    assert_eq!(keys_now, keys_before);
    drop(restored);
    drop(admin2);
    sh(&format!(
        "TEST_ROOT={root2} TEST_PORT={port2} bash {}/cluster.sh stop",
        env!("CARGO_MANIFEST_DIR")
    ));
    let _ = std::fs::remove_file(&dump);
}

/// `CREATE ROLE name LOGIN` unless it exists (roles are cluster-wide; earlier runs leave them).
fn ensure_login_role(client: &mut postgres::Client, name: &str) {
    client
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {name} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ))
        .unwrap();
}

fn connect_as(role: &str, dbname: &str) -> postgres::Client {
    postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={} user={role} dbname={dbname}",
            dsn_port()
        ),
        postgres::NoTls,
    )
    .unwrap()
}

#[test]
fn a_caller_without_key_usage_never_makes_pgauth_read_the_master_key() {
    let db_name = "pgauth_it_keycmd";
    let mut db = fresh_database(db_name);
    ensure_login_role(&mut db, "pgauth_it_nokey");
    db.batch_execute(
        "CREATE TABLE t AS SELECT auth_encrypt('v') AS v;
         GRANT SELECT ON t TO pgauth_it_nokey;",
    )
    .unwrap();
    // From now on the master key comes from a command that leaves a mark when it runs.
    let marker = format!("{}/keycmd-ran", test_root());
    let _ = std::fs::remove_file(&marker);
    db.batch_execute(&format!(
        "ALTER DATABASE {db_name} SET pgauth.master_key_command = 'touch {marker}; cat {}/master.key'",
        test_root()
    ))
    .unwrap();
    let mut stranger = connect_as("pgauth_it_nokey", db_name);
    for query in [
        "SELECT auth_encrypt('x')",
        "SELECT auth_decrypt_text(v) FROM t",
        "SELECT auth_blind_index('x')",
        "SELECT auth_hmac('x'::bytea, 'default')",
    ] {
        let err = stranger.query_one(query, &[]).expect_err(query);
        assert_eq!(sqlstate(&err), Some("42501"), "{query}: {err}");
    }
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the key command ran for a caller without key usage"
    );
    // The owner of the key still gets it (and the command runs then).
    let mut owner = connect_to(db_name);
    let v: String = owner
        .query_one("SELECT auth_decrypt_text(v) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, "v");
    assert!(std::path::Path::new(&marker).exists());
    let _ = std::fs::remove_file(&marker);
}

#[test]
fn master_key_file_path_is_in_the_server_log_only() {
    let db_name = "pgauth_it_keypath";
    let mut db = fresh_database(db_name);
    ensure_login_role(&mut db, "pgauth_it_keyuser");
    db.batch_execute("SELECT auth_grant_key_usage('default', 'pgauth_it_keyuser')")
        .unwrap();
    let path = format!("{}/no-such-dir-7f3a/pgauth.key", test_root());
    db.batch_execute(&format!(
        "ALTER DATABASE {db_name} SET pgauth.master_key_file = '{path}'"
    ))
    .unwrap();
    let mark = server_log_mark();
    let mut user = connect_as("pgauth_it_keyuser", db_name);
    user.batch_execute("SET client_min_messages = debug5")
        .unwrap();
    let err = user
        .query_one("SELECT auth_encrypt('x')", &[])
        .expect_err("no key file");
    assert_eq!(sqlstate(&err), Some("55000"), "{err}");
    let db_err = err.as_db_error().unwrap();
    let shown = format!(
        "{} {:?} {:?}",
        db_err.message(),
        db_err.detail(),
        db_err.hint()
    );
    assert!(!shown.contains("no-such-dir-7f3a"), "path shown: {shown}");
    let log = server_log_since(mark);
    assert!(log.contains(&path), "the server log names the file");
}
