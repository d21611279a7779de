//! Read paths on a hot standby (a real streaming replica on loopback): password verification,
//! decryption, permission checks, JWT verification and binding a session by session token or
//! access JWT all work there; what has to write refuses with the standby's own error (25006).

use pgauth_integration_tests::standby::*;
use pgauth_integration_tests::*;

const PASSWORD: &str = "Quill-Harbor-Tangent-84";

#[test]
fn read_paths_work_on_a_hot_standby_and_writes_refuse() {
    let name = "pgauth_it_standby";
    let mut db = fresh_database(name);
    db.batch_execute(
        "SET pgauth.login_attempts_per_minute = 0;
         SELECT auth_create_role('reader');
         SELECT auth_grant_permission('reader', 'doc.read');
         SELECT auth_create_signing_key('svc', 'HS256');
         CREATE TABLE secrets (id int PRIMARY KEY, value bytea);
         INSERT INTO secrets VALUES (1, auth_encrypt('standby-secret', 'default', int4send(1)));",
    )
    .unwrap();
    let alice: String = db
        .query_one("SELECT auth_create_user('alice', $1)::text", &[&PASSWORD])
        .unwrap()
        .get(0);
    db.execute(
        "SELECT auth_assign_role($1::text::uuid, 'reader', scope => '7')",
        &[&alice],
    )
    .unwrap();
    let hash: String = db
        .query_one("SELECT auth_hash_password($1)", &[&PASSWORD])
        .unwrap()
        .get(0);
    let row = db
        .query_one(
            "SELECT access_token FROM auth_login('alice', $1) WHERE ok",
            &[&PASSWORD],
        )
        .unwrap();
    let access: String = row.get(0);
    let session: String = db
        .query_one("SELECT auth_create_session($1::text::uuid)", &[&alice])
        .unwrap()
        .get(0);
    let svc_token: String = db
        .query_one(
            "SELECT auth_jwt_sign('{\"sub\": \"svc\"}', 'svc', '1 hour')",
            &[],
        )
        .unwrap()
        .get(0);

    with_standby("standby-reads", &side_port(8), name, |replica| {
        wait_for_replay(&mut db, replica);
        let one_bool = |c: &mut postgres::Client,
                        sql: &str,
                        p: &[&(dyn postgres::types::ToSql + Sync)]|
         -> bool {
            c.query_one(sql, p)
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get(0)
        };
        assert!(one_bool(
            replica,
            "SELECT auth_verify($1, $2)",
            &[&PASSWORD, &hash]
        ));
        assert!(!one_bool(
            replica,
            "SELECT auth_verify('wrong', $1)",
            &[&hash]
        ));
        let plain: String = replica
            .query_one(
                "SELECT auth_decrypt_text(value, int4send(id)) FROM secrets WHERE id = 1",
                &[],
            )
            .expect("auth_decrypt on a standby")
            .get(0);
        assert_eq!(plain, "standby-secret");
        let sub: String = replica
            .query_one("SELECT auth_jwt_verify($1, 'svc')->>'sub'", &[&svc_token])
            .expect("auth_jwt_verify on a standby")
            .get(0);
        assert_eq!(sub, "svc");
        // Binding by access JWT and by session token, then the permission check RLS uses.
        for token in [&access, &session] {
            let mut tx = replica.transaction().unwrap();
            let bound: String = tx
                .query_one("SELECT auth_set_session($1)::text", &[token])
                .unwrap_or_else(|e| panic!("auth_set_session on a standby: {e}"))
                .get(0);
            assert_eq!(bound, alice);
            let (inside, outside): (bool, bool) = {
                let r = tx
                    .query_one(
                        "SELECT auth_has_permission('doc.read', '7'), auth_has_permission('doc.read', '8')",
                        &[],
                    )
                    .unwrap();
                (r.get(0), r.get(1))
            };
            assert!(inside && !outside);
            tx.rollback().unwrap();
        }
        // Writes refuse with PostgreSQL's read-only error, not an internal one.
        for (what, sql) in [
            ("auth_create_user", "SELECT auth_create_user('bob')"),
            (
                "auth_login",
                "SELECT * FROM auth_login('alice', 'Quill-Harbor-Tangent-84')",
            ),
            ("auth_rotate_key", "SELECT auth_rotate_key('default')"),
        ] {
            let err = replica
                .query(sql, &[])
                .expect_err(&format!("{what} must refuse on a standby"));
            assert_eq!(sqlstate(&err), Some("25006"), "{what}: {err:?}");
        }
    });
}

/// In a read-only transaction on the primary a sign-in refuses the same way (25006, with the
/// hint), and charges nothing.
#[test]
fn a_read_only_transaction_writes_no_audit_record() {
    let mut db = fresh_database("pgauth_it_read_only");
    db.batch_execute("SET pgauth.login_attempts_per_minute = 0")
        .unwrap();
    let mut tx = db.build_transaction().read_only(true).start().unwrap();
    let err = tx
        .query("SELECT * FROM auth_login('nobody', 'wrong')", &[])
        .expect_err("a sign-in writes its event: refused in a read-only transaction");
    assert_eq!(sqlstate(&err), Some("25006"), "{err:?}");
    let hint = err.as_db_error().and_then(|e| e.hint()).unwrap_or("");
    assert!(hint.contains("primary"), "{hint}");
    tx.rollback().unwrap();
}
