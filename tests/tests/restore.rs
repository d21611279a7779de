//! `pg_dump -Fc` → `pg_restore` of a database that uses every pgauth feature, into a fresh
//! cluster with the same master key: data decrypts, passwords and API keys verify, sessions and
//! tokens behave, TOTP, recovery codes and a passkey work, permissions answer as before (and can
//! still be changed), password policies apply, and the audit log (with enum and extension-type
//! columns, and arrays of them) reads as before, verifies, and goes on.
//!
//! Also: every pgauth table and sequence that holds state is registered with
//! `pg_extension_config_dump`, so that pg_dump keeps it.

use pgauth_integration_tests::audit::{seal, verify, verify_sql};
use pgauth_integration_tests::webauthn::{login_begin, register, sign_in_works, Passkey};
use pgauth_integration_tests::*;
use postgres::{Client, NoTls};
use std::process::Command;

const DB: &str = "pgauth_it_restore";
const PASSWORD: &str = "Tr4vel-Quartz-Mango-71";
const APP_ROLE: &str = "pgauth_it_restore_app";

/// pgauth's relations that pg_dump does not keep, and why (docs/development.md, "Dump and
/// restore"): derived or in flight, remade by a restore.
const NOT_DUMPED: &[&str] = &[
    // Cache generations: backends compare them to drop cached keys and permissions. A restored
    // database starts with new ones (no backend has cached anything from it).
    "pgauth.key_generation_seq",
    "pgauth.key_state",
    "pgauth.rbac_generation_seq",
    "pgauth.rbac_state",
    // UNLOGGED, single-use ceremonies in progress (a crash forgets them too).
    "pgauth.webauthn_challenges",
];

/// Settings of the connections that sign in (superuser-only settings; the test connects as a
/// superuser). No rate limit: the test signs in several times from one address.
fn session_settings(db: &mut Client) {
    db.batch_execute(&format!(
        "SET pgauth.webauthn_rp_id = '{}';
         SET pgauth.webauthn_origins = '{}';
         SET pgauth.webauthn_rp_name = 'pgauth restore test';
         SET pgauth.login_attempts_per_minute = 0;",
        pgauth_integration_tests::webauthn::RP_ID,
        pgauth_integration_tests::webauthn::ORIGIN
    ))
    .unwrap();
}

fn text(db: &mut Client, sql: &str, args: &[&(dyn postgres::types::ToSql + Sync)]) -> String {
    db.query_one(sql, args)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

fn flag(db: &mut Client, sql: &str, args: &[&(dyn postgres::types::ToSql + Sync)]) -> bool {
    db.query_one(sql, args)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Every row of pgauth.audit_log, each as its whole row in JSON.
fn audit_log(db: &mut Client) -> Vec<(i64, String)> {
    db.query(
        "SELECT l.id, to_jsonb(l)::text FROM pgauth.audit_log l ORDER BY l.id",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn unreadable_audit_rows(db: &mut Client) -> Vec<String> {
    db.query(
        "SELECT id || ': ' || (new_values->>'pgauth_audit_error') FROM pgauth.audit_log
          WHERE new_values ? 'pgauth_audit_error' ORDER BY id",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The diary's audit rows (event, row_key, old_values, new_values) as text, in id order.
fn diary_rows(db: &mut Client) -> Vec<(String, String, Option<String>, Option<String>)> {
    db.query(
        "SELECT event, row_key::text, old_values::text, new_values::text FROM pgauth.audit_log
          WHERE table_name IN ('public.diary', 'public.moods_seen') ORDER BY id",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
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

/// What the checks after the restore compare with.
struct Before {
    alice: String,
    bob: String,
    access: String,
    refresh: String,
    session: String,
    api_key: String,
    revoked_api_key: String,
    svc_token: String,
    jwks: String,
    totp_uri: String,
    codes: Vec<String>,
    decrypted: Vec<(i32, String, String)>,
    blind: Vec<u8>,
    policies: String,
    problems: Vec<String>,
    decoy: String,
    audit: Vec<(i64, String)>,
    diary: Vec<(String, String, Option<String>, Option<String>)>,
    head: (i64, Vec<u8>),
}

/// Every kind of pgauth state, in database `DB` of the test cluster.
fn fill(db: &mut Client, key: &Passkey) -> Before {
    session_settings(db);
    db.batch_execute(&format!(
        "DO $$ BEGIN CREATE ROLE {APP_ROLE}; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    ))
    .unwrap();
    let user = |db: &mut Client, name: &str| -> String {
        text(
            db,
            "SELECT auth_create_user($1, $2)::text",
            &[&name, &PASSWORD],
        )
    };
    let (alice, bob, carol) = (user(db, "alice"), user(db, "bob"), user(db, "carol"));
    db.execute("SELECT auth_block_user($1::text::uuid)", &[&carol])
        .unwrap();
    // RBAC: groups, inheritance, scoped grants, a network-limited and an expiring grant.
    db.batch_execute(
        "SELECT auth_create_group('staff');
         SELECT auth_create_role('reader');
         SELECT auth_create_role('editor', ARRAY['reader']);
         SELECT auth_create_role('ops');
         SELECT auth_grant_permission('reader', 'doc.read');
         SELECT auth_grant_permission('editor', 'doc.write');
         SELECT auth_grant_permission('ops', 'ops.run');
         SELECT auth_assign_group_role('staff', 'reader', scope => '2');",
    )
    .unwrap();
    db.execute("SELECT auth_add_member('staff', $1::text::uuid)", &[&bob])
        .unwrap();
    db.execute(
        "SELECT auth_assign_role($1::text::uuid, 'editor', scope => '1')",
        &[&alice],
    )
    .unwrap();
    db.execute(
        "SELECT auth_assign_role($1::text::uuid, 'ops', allowed_ips => '{10.0.0.0/8}',
                                 expires_at => now() + interval '30 days')",
        &[&alice],
    )
    .unwrap();
    // Data keys (one rotated: two versions in use), a usage grant, encrypted columns.
    db.batch_execute(&format!(
        "SELECT auth_create_key('pii');
         SELECT auth_grant_key_usage('pii', '{APP_ROLE}');
         CREATE TABLE patients (id int PRIMARY KEY, ssn bytea, note bytea, ssn_index bytea);
         GRANT SELECT ON patients TO {APP_ROLE};
         INSERT INTO patients SELECT i, auth_encrypt('ssn-' || i, 'pii', int4send(i)),
                                     auth_encrypt('note-' || i), auth_blind_index('ssn-' || i, 'pii')
           FROM generate_series(1, 5) i;
         SELECT auth_rotate_key('pii');
         INSERT INTO patients SELECT i, auth_encrypt('ssn-' || i, 'pii', int4send(i)),
                                     auth_encrypt('note-' || i), auth_blind_index('ssn-' || i, 'pii')
           FROM generate_series(6, 10) i;"
    ))
    .unwrap();
    let decrypted = decrypt_patients(db);
    let blind: Vec<u8> = db
        .query_one("SELECT auth_blind_index('ssn-3', 'pii')", &[])
        .unwrap()
        .get(0);
    // Signing keys: a general-purpose one signs a service token; logins create the access key.
    db.batch_execute("SELECT auth_create_signing_key('svc', 'EdDSA')")
        .unwrap();
    let svc_token = text(
        db,
        "SELECT auth_jwt_sign('{\"sub\": \"svc\"}', 'svc', '1 day')",
        &[],
    );
    // Sessions and tokens.
    let row = db
        .query_one(
            "SELECT ok, access_token, refresh_token FROM auth_login('alice', $1)",
            &[&PASSWORD],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0), "login before the dump");
    let (access, refresh): (String, String) = (row.get(1), row.get(2));
    let session = text(
        db,
        "SELECT auth_create_session($1::text::uuid, '1 day')",
        &[&alice],
    );
    let api_key = text(
        db,
        "SELECT auth_create_api_key($1::text::uuid, 'ci', ARRAY['doc.read'])",
        &[&alice],
    );
    let revoked_api_key = text(
        db,
        "SELECT auth_create_api_key($1::text::uuid, 'old')",
        &[&alice],
    );
    let revoked: bool = db
        .query_one(
            "SELECT auth_revoke_api_key(prefix) FROM pgauth.api_keys WHERE name = 'old'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(revoked, "the second API key is revoked");
    let jwks = text(db, "SELECT auth_jwks()::text", &[]);
    // TOTP and recovery codes for bob; one code used before the dump.
    let totp_uri = text(
        db,
        "SELECT auth_totp_enroll($1::text::uuid, 'pgauth')",
        &[&bob],
    );
    let codes: Vec<String> = db
        .query("SELECT auth_recovery_codes($1::text::uuid)", &[&bob])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(flag(
        db,
        "SELECT auth_use_recovery_code($1::text::uuid, $2)",
        &[&bob, &codes[1]]
    ));
    // A passkey for alice; the stand-in credential a name without an account is shown.
    register(db, &alice, key, &[]);
    let decoy = decoy_credentials(db);
    // Password policies: an edited built-in and a new one.
    db.batch_execute(
        "UPDATE pgauth.password_policies SET min_length = 10, history = 3 WHERE name = 'default';
         INSERT INTO pgauth.password_policies (name, min_length, require_digit, min_strength)
              VALUES ('restore_pol', 16, true, 2);",
    )
    .unwrap();
    let policies = password_policies(db);
    let problems = policy_problems(db);
    // Audited tables with an enum (also as the key), a domain over it, extension types
    // (citext, hstore) and arrays of all of these.
    db.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS citext;
         CREATE EXTENSION IF NOT EXISTS hstore;
         CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE DOMAIN good_mood AS mood CHECK (VALUE <> 'sad');
         CREATE DOMAIN stars AS int CHECK (VALUE BETWEEN 0 AND 5);
         CREATE TABLE diary (id int PRIMARY KEY, mood mood, moods mood[], best good_mood,
                             author citext, tags citext[], attrs hstore, attr_list hstore[],
                             rating stars, ratings stars[], note text);
         CREATE TABLE moods_seen (m mood PRIMARY KEY, n int);
         SELECT auth_audit_enable('diary');
         SELECT auth_audit_enable('moods_seen');",
    )
    .unwrap();
    for sql in [
        "INSERT INTO diary VALUES
           (1, 'happy', '{sad,happy}', 'ok', 'Ada', '{X,y}', 'a=>1, b=>2', ARRAY['k=>v'::hstore],
            4, '{1,NULL,5}', 'one'),
           (2, 'ok', '{}', NULL, 'Bo', NULL, NULL, NULL, NULL, '{{1,2},{3,4}}', 'two'),
           (3, NULL, '{NULL,ok}', 'happy', NULL, '{Z}', '', '{}', 0, '{}', 'three')",
        "UPDATE diary SET mood = 'sad', moods = moods || 'ok'::mood, tags = '{X,Y}', rating = 5
          WHERE id = 1",
        "DELETE FROM diary WHERE id = 3",
        "INSERT INTO moods_seen VALUES ('happy', 1), ('sad', 2)",
        "UPDATE moods_seen SET m = 'ok' WHERE m = 'sad'",
    ] {
        db.batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    seal(db);
    let v = verify(db);
    assert!(v.ok, "{v:?}");
    assert_eq!(unreadable_audit_rows(db), Vec::<String>::new());
    let diary = diary_rows(db);
    assert_eq!(diary.len(), 8, "{diary:#?}");
    // Values as row_to_json shows them; arrays of enums and of extension types as arrays.
    let first = diary[0].3.as_deref().unwrap();
    for shown in [
        r#""mood": "happy""#,
        r#""moods": ["sad", "happy"]"#,
        r#""best": "ok""#,
        r#""author": "Ada""#,
        r#""tags": ["X", "y"]"#,
        r#""attrs": "\"a\"=>\"1\", \"b\"=>\"2\"""#,
        r#""attr_list": ["\"k\"=>\"v\""]"#,
        r#""rating": 4"#,
        r#""ratings": [1, null, 5]"#,
    ] {
        assert!(first.contains(shown), "{shown} in {first}");
    }
    assert!(
        diary[1]
            .3
            .as_deref()
            .unwrap()
            .contains(r#""ratings": [[1, 2], [3, 4]]"#),
        "{:?}",
        diary[1]
    );
    let head = db
        .query_one("SELECT id, digest FROM auth_audit_head()", &[])
        .unwrap();
    Before {
        alice,
        bob,
        access,
        refresh,
        session,
        api_key,
        revoked_api_key,
        svc_token,
        jwks,
        totp_uri,
        codes,
        decrypted,
        blind,
        policies,
        problems,
        decoy,
        audit: audit_log(db),
        diary,
        head: (head.get(0), head.get(1)),
    }
}

fn decrypt_patients(db: &mut Client) -> Vec<(i32, String, String)> {
    db.query(
        "SELECT id, auth_decrypt_text(ssn, int4send(id)), auth_decrypt_text(note)
           FROM patients ORDER BY id",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn decoy_credentials(db: &mut Client) -> String {
    text(
        db,
        "SELECT (auth_webauthn_login_begin('nobody-here')->'allowCredentials')::text",
        &[],
    )
}

fn password_policies(db: &mut Client) -> String {
    text(
        db,
        "SELECT string_agg(format('%s %s %s %s %s %s %s %s %s', name, min_length, require_upper,
                                  require_lower, require_digit, require_special, min_strength,
                                  history, max_age_days), '; ' ORDER BY name)
           FROM pgauth.password_policies",
        &[],
    )
}

fn policy_problems(db: &mut Client) -> Vec<String> {
    db.query_one(
        "SELECT auth_password_problems('Quartz-Mango', NULL, 'restore_pol')
             || auth_password_problems('Mango-71', NULL, 'default')",
        &[],
    )
    .unwrap()
    .get(0)
}

/// A throwaway cluster beside the test server (tests/cluster.sh, same binaries) with the test
/// server's master key; `run` gets its port. Stopped however `run` ends.
fn with_restore_cluster(run: impl FnOnce(&str)) {
    let root = format!("{}-restore-all", test_root());
    let port = side_port(5);
    let sh = |cmd: &str| {
        let st = Command::new("bash").args(["-c", cmd]).status().unwrap();
        assert!(st.success(), "{cmd}");
    };
    let cluster = |action: &str| {
        format!(
            "TEST_ROOT={root} TEST_PORT={port} bash {}/cluster.sh {action}",
            env!("CARGO_MANIFEST_DIR")
        )
    };
    sh(&cluster("stop"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    sh(&format!(
        "chown postgres: {root} && install -o postgres -m 600 {}/master.key {root}/master.key",
        test_root()
    ));
    sh(&cluster("start"));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&port)));
    sh(&cluster("stop"));
    match result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&root);
        }
        Err(e) => std::panic::resume_unwind(e),
    }
}

#[test]
fn every_pgauth_table_with_state_is_dumped() {
    let mut db = fresh_database("pgauth_it_restore_config");
    let not_dumped: Vec<String> = db
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c
               JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
                               AND d.deptype = 'e'
               JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pgauth'
              WHERE c.relkind IN ('r', 'p', 'S')
                AND c.oid <> ALL (coalesce(e.extconfig, '{}'))
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut expected: Vec<String> = NOT_DUMPED.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        not_dumped, expected,
        "pgauth relations that pg_dump does not keep (state must be registered with pg_extension_config_dump)"
    );
}

#[test]
fn everything_survives_dump_and_restore_into_a_new_cluster() {
    let mut db = fresh_database(DB);
    let key = Passkey::new("restore");
    let before = fill(&mut db, &key);
    drop(db);
    let dump = dump_database(DB);
    with_restore_cluster(|port| {
        let admin_dsn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
        let mut admin = Client::connect(&admin_dsn, NoTls).unwrap();
        // One statement each: DROP/CREATE DATABASE cannot run in a multi-statement batch.
        for sql in [
            format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
            format!("DO $$ BEGIN CREATE ROLE {APP_ROLE}; EXCEPTION WHEN duplicate_object THEN NULL; END $$"),
            format!("CREATE DATABASE {DB}"),
        ] {
            admin.batch_execute(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        restore_database(&dump, port, DB);
        let mut db = Client::connect(
            &format!("host=127.0.0.1 port={port} user=postgres dbname={DB}"),
            NoTls,
        )
        .unwrap();
        check(&mut db, &before, &key);
    });
    let _ = std::fs::remove_file(&dump);
}

/// Everything `fill` made, used in the restored database.
fn check(db: &mut Client, b: &Before, key: &Passkey) {
    session_settings(db);
    // The audit log first, before anything here writes to it.
    assert_eq!(
        unreadable_audit_rows(db),
        Vec::<String>::new(),
        "every restored audit record reads"
    );
    assert_eq!(diary_rows(db), b.diary, "the audited rows read as before");
    assert!(audit_log(db) == b.audit, "pgauth.audit_log reads as before");
    let v = verify_sql(
        db,
        "SELECT * FROM auth_audit_verify(NULL, $1, $2)",
        &[&b.head.0, &b.head.1],
    );
    assert!(
        v.ok,
        "the restored chain verifies against the head taken before the dump: {v:?}"
    );

    // Encryption: every value decrypts, blind indexes match, the granted role uses its key.
    assert_eq!(
        decrypt_patients(db),
        b.decrypted,
        "values decrypt as before"
    );
    let blind: Vec<u8> = db
        .query_one("SELECT auth_blind_index('ssn-3', 'pii')", &[])
        .unwrap()
        .get(0);
    assert_eq!(blind, b.blind);
    let found: i32 = db
        .query_one(
            "SELECT id FROM patients WHERE ssn_index = auth_blind_index('ssn-7', 'pii')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(found, 7);
    db.batch_execute(&format!("SET ROLE {APP_ROLE}")).unwrap();
    let ssn = text(
        db,
        "SELECT auth_decrypt_text(ssn, int4send(id)) FROM patients WHERE id = 9",
        &[],
    );
    assert_eq!(ssn, "ssn-9", "the granted role decrypts with its key");
    db.batch_execute("RESET ROLE").unwrap();
    db.batch_execute("UPDATE patients SET ssn = auth_reencrypt(ssn, int4send(id))")
        .unwrap();
    assert_eq!(
        decrypt_patients(db),
        b.decrypted,
        "re-encrypted values decrypt"
    );

    // Passwords and account status.
    let login = |db: &mut Client, name: &str, password: &str| -> (bool, String) {
        let row = db
            .query_one(
                "SELECT ok, reason FROM auth_login($1, $2)",
                &[&name, &password],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(login(db, "alice", PASSWORD), (true, "ok".to_string()));
    assert_eq!(login(db, "bob", PASSWORD), (true, "ok".to_string()));
    assert!(!login(db, "alice", "wrong").0);
    assert!(
        !login(db, "carol", PASSWORD).0,
        "a blocked account stays blocked"
    );

    // Tokens: the access token and the session token bind, with the permissions they had.
    {
        let mut tx = db.transaction().unwrap();
        let bound: String = tx
            .query_one("SELECT auth_set_session($1)::text", &[&b.access])
            .unwrap()
            .get(0);
        assert_eq!(bound, b.alice);
        for (perm, scope, expected) in [
            ("doc.write", "1", true),
            ("doc.read", "1", true),
            ("doc.read", "2", false),
        ] {
            let has: bool = tx
                .query_one("SELECT auth_has_permission($1, $2)", &[&perm, &scope])
                .unwrap()
                .get(0);
            assert_eq!(has, expected, "{perm} in scope {scope}");
        }
        tx.rollback().unwrap();
    }
    {
        let mut tx = db.transaction().unwrap();
        let bound: String = tx
            .query_one("SELECT auth_set_session($1)::text", &[&b.session])
            .unwrap()
            .get(0);
        assert_eq!(bound, b.alice, "the session token binds");
        tx.rollback().unwrap();
    }
    let rotated = db
        .query("SELECT * FROM auth_refresh($1)", &[&b.refresh])
        .unwrap();
    assert_eq!(rotated.len(), 1, "the refresh token rotates");
    let reused = db
        .query("SELECT * FROM auth_refresh($1)", &[&b.refresh])
        .unwrap();
    assert!(reused.is_empty(), "a used refresh token gives no row");
    let sub = text(
        db,
        "SELECT auth_jwt_verify($1, 'svc')->>'sub'",
        &[&b.svc_token],
    );
    assert_eq!(sub, "svc");
    // Compared before anything signs with a new key.
    assert_eq!(text(db, "SELECT auth_jwks()::text", &[]), b.jwks);
    let owner: Option<String> = db
        .query_one("SELECT auth_verify_api_key($1)::text", &[&b.api_key])
        .unwrap()
        .get(0);
    assert_eq!(
        owner.as_deref(),
        Some(b.alice.as_str()),
        "the API key verifies"
    );
    let revoked: Option<String> = db
        .query_one(
            "SELECT auth_verify_api_key($1)::text",
            &[&b.revoked_api_key],
        )
        .unwrap()
        .get(0);
    assert_eq!(revoked, None, "a revoked API key stays revoked");

    // Permissions: group grants, network limits; and RBAC can still be changed.
    let user_has =
        |db: &mut Client, user: &str, perm: &str, scope: Option<&str>, ip: Option<&str>| {
            flag(
                db,
                "SELECT auth_user_has_permission($1::text::uuid, $2, $3, $4::text::inet)",
                &[&user, &perm, &scope, &ip],
            )
        };
    assert!(user_has(db, &b.bob, "doc.read", Some("2"), None));
    assert!(!user_has(db, &b.bob, "doc.write", Some("2"), None));
    assert!(user_has(db, &b.alice, "ops.run", None, Some("10.1.2.3")));
    assert!(!user_has(db, &b.alice, "ops.run", None, Some("192.0.2.1")));
    db.execute(
        "SELECT auth_assign_role($1::text::uuid, 'editor', scope => '3')",
        &[&b.bob],
    )
    .expect("a new role assignment after the restore");
    assert!(user_has(db, &b.bob, "doc.write", Some("3"), None));
    db.batch_execute("SELECT auth_create_group('night-shift')")
        .expect("a new group after the restore");

    // TOTP, recovery codes (the one used before the dump stays used).
    assert!(flag(
        db,
        "SELECT auth_totp_verify($1::text::uuid, $2)",
        &[&b.bob, &totp_now(&b.totp_uri)]
    ));
    assert!(flag(
        db,
        "SELECT auth_use_recovery_code($1::text::uuid, $2)",
        &[&b.bob, &b.codes[0]]
    ));
    assert!(!flag(
        db,
        "SELECT auth_use_recovery_code($1::text::uuid, $2)",
        &[&b.bob, &b.codes[1]]
    ));

    // The passkey signs in; a name without an account gets the same stand-in as before.
    sign_in_works(db, key, &b.alice, Some("alice"));
    assert_eq!(
        decoy_credentials(db),
        b.decoy,
        "the stand-in credential of an unknown name does not change with a restore"
    );
    let _ = login_begin(db, Some("alice"));

    // Password policies.
    assert_eq!(password_policies(db), b.policies);
    assert_eq!(policy_problems(db), b.problems);

    // New users, keys and writes work.
    db.batch_execute(
        "SELECT auth_create_user('dave', 'Another-Quartz-Mango-82');
         SELECT auth_create_key('after');
         SELECT auth_decrypt_text(auth_encrypt('x', 'after'));",
    )
    .expect("new state after the restore");

    // The audit log goes on: new audited writes are captured with this cluster's types and
    // read back; the chain continues (from a checkpoint: docs/audit.md, "Retention").
    db.batch_execute(
        "INSERT INTO diary VALUES
           (4, 'happy', '{ok}', 'ok', 'Cy', '{Q}', 'c=>3', ARRAY['z=>1'::hstore], 3, '{2}', 'four');
         UPDATE diary SET mood = 'happy' WHERE id = 1;",
    )
    .unwrap();
    let sealed = db.query_one("SELECT auth_audit_seal()", &[]);
    if let Err(e) = sealed {
        assert!(
            db_message(&e).contains("restored from another cluster"),
            "{e:?}"
        );
        let last: i64 = db
            .query_one("SELECT max(position) FROM pgauth.audit_chain", &[])
            .unwrap()
            .get(0);
        db.query_one("SELECT auth_audit_purge($1)", &[&last])
            .expect("purge the restored chain through its last position");
        assert!(seal(db) >= 1, "the new records are chained");
    }
    db.batch_execute("INSERT INTO moods_seen VALUES ('sad', 3)")
        .unwrap();
    seal(db);
    let v = verify(db);
    assert!(v.ok, "the chain goes on after the restore: {v:?}");
    assert_eq!(unreadable_audit_rows(db), Vec::<String>::new());
    let new_row = text(
        db,
        "SELECT new_values::text FROM pgauth.audit_log
          WHERE table_name = 'public.diary' AND row_key = '{\"id\": 4}' AND event = 'insert'",
        &[],
    );
    assert!(
        new_row.contains(r#""mood": "happy""#)
            && new_row.contains(r#""moods": ["ok"]"#)
            && new_row.contains(r#""tags": ["Q"]"#)
            && new_row.contains(r#""ratings": [2]"#),
        "{new_row}"
    );
    let last = text(
        db,
        "SELECT row_key::text FROM pgauth.audit_log WHERE table_name = 'public.moods_seen'
          ORDER BY id DESC LIMIT 1",
        &[],
    );
    assert_eq!(last, r#"{"m": "sad"}"#);
}
