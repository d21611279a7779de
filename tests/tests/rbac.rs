//! RBAC and session identity through real clients: revocation across connections, a
//! search_path hijack attempt, and no identity leaks through a transaction-pooling pgbouncer.

use pgauth_integration_tests::*;
use postgres::{Client, NoTls, SimpleQueryMessage};
use std::process::Command;

fn simple_value(client: &mut Client, sql: &str) -> Option<String> {
    client
        .simple_query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        })
        .flatten()
}

fn setup_model(db: &mut Client) -> (String, String) {
    db.batch_execute(
        "SELECT auth_create_role('reader');
         SELECT auth_grant_permission('reader', 'doc.read');
         SELECT auth_create_user('ann'); SELECT auth_create_user('ben');",
    )
    .unwrap();
    let ann = simple_value(db, "SELECT id FROM pgauth.users WHERE username = 'ann'").unwrap();
    let ben = simple_value(db, "SELECT id FROM pgauth.users WHERE username = 'ben'").unwrap();
    db.batch_execute(&format!(
        "SELECT auth_assign_role('{ann}', 'reader', 'tenant-1')"
    ))
    .unwrap();
    (ann, ben)
}

#[test]
fn revocation_is_seen_by_another_connection_at_its_next_transaction() {
    let mut admin = fresh_database("pgauth_it_rbac_revoke");
    let (ann, _) = setup_model(&mut admin);
    let mut app = connect_to("pgauth_it_rbac_revoke");
    let q = format!("SELECT auth_user_has_permission('{ann}', 'doc.read', 'tenant-1')");
    assert_eq!(simple_value(&mut app, &q).as_deref(), Some("t"));
    // Inside an open transaction of `app`, a committed revocation elsewhere …
    app.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    assert_eq!(simple_value(&mut app, &q).as_deref(), Some("t"));
    admin
        .batch_execute(&format!(
            "SELECT auth_unassign_role('{ann}', 'reader', 'tenant-1')"
        ))
        .unwrap();
    // … is seen at its next transaction at the latest.
    app.batch_execute("COMMIT").unwrap();
    assert_eq!(simple_value(&mut app, &q).as_deref(), Some("f"));
    // Locking a user is seen the same way.
    admin
        .batch_execute(&format!(
            "SELECT auth_assign_role('{ann}', 'reader', 'tenant-1')"
        ))
        .unwrap();
    assert_eq!(simple_value(&mut app, &q).as_deref(), Some("t"));
    admin
        .batch_execute(&format!(
            "UPDATE pgauth.users SET status = 'locked' WHERE id = '{ann}'"
        ))
        .unwrap();
    assert_eq!(simple_value(&mut app, &q).as_deref(), Some("f"));
}

#[test]
fn a_callers_search_path_cannot_hijack_pgauths_internal_queries() {
    let mut admin = fresh_database("pgauth_it_hijack");
    let (ann, _) = setup_model(&mut admin);
    admin
        .batch_execute(
            "DROP ROLE IF EXISTS pgauth_it_evil;
             CREATE ROLE pgauth_it_evil LOGIN;
             GRANT pgauth_service TO pgauth_it_evil;
             CREATE SCHEMA evil AUTHORIZATION pgauth_it_evil;",
        )
        .unwrap();
    let mut evil = Client::connect(
        &format!("{} dbname=pgauth_it_hijack user=pgauth_it_evil", dsn()),
        NoTls,
    )
    .unwrap();
    // Operators and functions that would run with pgauth's owner's rights if pgauth's internal
    // queries resolved names through the caller's search_path.
    evil.batch_execute(
        "CREATE TABLE evil.called (at timestamptz DEFAULT now());
         CREATE FUNCTION evil.uuid_eq(uuid, uuid) RETURNS boolean LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO evil.called DEFAULT VALUES;
                    BEGIN EXECUTE 'ALTER ROLE pgauth_it_evil SUPERUSER'; EXCEPTION WHEN others THEN NULL; END;
                    RETURN $1::text = $2::text; END $$;
         CREATE OPERATOR evil.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = evil.uuid_eq);
         CREATE FUNCTION evil.text_eq(text, text) RETURNS boolean LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO evil.called DEFAULT VALUES; RETURN $1::bytea = $2::bytea; END $$;
         CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_eq);
         CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT 'infinity'::timestamptz $$;
         SET search_path = evil, pg_catalog, public;",
    )
    .unwrap();
    evil.batch_execute(&format!(
        "BEGIN; SELECT public.auth_bind_user('{ann}'); SELECT public.auth_has_permission('doc.read', 'tenant-1');
         SELECT public.auth_user_has_permission('{ann}', 'doc.read'); COMMIT;"
    ))
    .unwrap();
    let _ = evil.batch_execute(
        "SELECT public.auth_set_session('pgs_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')",
    );
    let calls: i64 = evil
        .query_one("SELECT count(*) FROM evil.called", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        calls, 0,
        "an operator from the caller's search_path ran inside pgauth"
    );
    let superuser: bool = admin
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'pgauth_it_evil'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!superuser);
    drop(evil);
    admin.batch_execute("DROP SCHEMA evil CASCADE").unwrap();
    let mut root = Client::connect(&dsn(), NoTls).unwrap();
    root.batch_execute("DROP DATABASE pgauth_it_hijack WITH (FORCE)")
        .unwrap();
    root.batch_execute("DROP ROLE pgauth_it_evil").unwrap();
}

/// Every row of a simple query, first column, in order.
fn simple_values(client: &mut Client, sql: &str) -> Vec<Option<String>> {
    client
        .simple_query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        })
        .collect()
}

/// Rebinding inside one transaction: the identity read afterwards is always the last one bound,
/// also when the new binding string has the length of the old one (PostgreSQL frees the old
/// string and malloc hands its address to the new one; a cache keyed by that address kept
/// answering for the first user).
#[test]
fn rebinding_in_one_transaction_never_answers_for_the_previous_user() {
    let mut db = fresh_database("pgauth_it_rebind");
    let (ann, ben) = setup_model(&mut db);
    for aal in [1, 2] {
        let got = simple_values(
            &mut db,
            &format!(
                "BEGIN;
                 SELECT auth_bind_user('{ann}', {aal})::text;
                 SELECT auth_current_user_id()::text || auth_current_aal() || auth_has_permission('doc.read', 'tenant-1');
                 SELECT auth_bind_user('{ben}', 1)::text;
                 SELECT auth_bind_user('{ben}', 1)::text;
                 SELECT auth_current_user_id()::text || auth_current_aal() || auth_has_permission('doc.read', 'tenant-1');
                 SELECT auth_bind_user('{ben}', 1)::text;
                 SELECT auth_bind_user('{ben}', 1)::text;
                 SELECT count(*)::text FROM (SELECT auth_current_user_id() u FROM generate_series(1, 3)) s WHERE u::text = '{ann}';
                 COMMIT"
            ),
        );
        let got: Vec<String> = got.into_iter().map(Option::unwrap_or_default).collect();
        assert_eq!(got[1], format!("{ann}{aal}true"), "first binding");
        assert_eq!(got[4], format!("{ben}1false"), "after rebinding to ben");
        assert_eq!(got[7], "0", "ann's identity must be gone");
    }
}

/// A grant made and rolled back in one backend is never granted there afterwards, whatever
/// other sessions commit meanwhile (the cache generation used to be `generation + 1`: another
/// commit reached the rolled-back value and the backend kept its cached answer).
#[test]
fn a_rolled_back_grant_is_never_granted_later() {
    let mut admin = fresh_database("pgauth_it_rbac_rollback");
    let (_, ben) = setup_model(&mut admin);
    let mut x = connect_to("pgauth_it_rbac_rollback");
    let q = format!("SELECT auth_user_has_permission('{ben}', 'doc.read', 'tenant-1')");
    // X grants, checks (the answer is cached under the generation its own change made) and
    // rolls back. Then others commit `commits` changes that each move the generation once (a
    // statement-level trigger fires for an UPDATE of no rows), and only then X checks again.
    // With "generation + 1", one value of `commits` lands exactly on X's cached generation.
    for commits in 1..=8 {
        x.batch_execute(&format!(
            "BEGIN; SELECT auth_assign_role('{ben}', 'reader', 'tenant-1')"
        ))
        .unwrap();
        assert_eq!(simple_value(&mut x, &q).as_deref(), Some("t"));
        x.batch_execute("ROLLBACK").unwrap();
        for _ in 0..commits {
            admin
                .batch_execute("UPDATE pgauth.roles SET name = name WHERE false")
                .unwrap();
        }
        assert_eq!(
            simple_value(&mut x, &q).as_deref(),
            Some("f"),
            "rolled-back grant answered after {commits} other commits"
        );
    }
}

/// A real pgbouncer in transaction pooling mode with ONE server connection shared by three
/// clients. A victim binds with its session token; the others bind with session tokens, access
/// JWTs and auth_bind_user (binding strings of different lengths), clear and rebind, or bind
/// nobody, in thousands of interleaved transactions. Every transaction asserts its own identity,
/// assurance level and permission answer.
#[test]
fn no_identity_leaks_through_a_transaction_pooling_pgbouncer() {
    let mut admin = fresh_database("pgauth_it_pool");
    let (ann, ben) = setup_model(&mut admin);
    admin
        .batch_execute(
            "SELECT auth_create_user('cyd', 'Tr4vel-Quartz-Mango-71');
             ALTER DATABASE pgauth_it_pool SET pgauth.login_attempts_per_minute = 0;",
        )
        .unwrap();
    let cyd = simple_value(
        &mut admin,
        "SELECT id FROM pgauth.users WHERE username = 'cyd'",
    )
    .unwrap();
    let token = |c: &mut Client, user: &str| {
        simple_value(c, &format!("SELECT auth_create_session('{user}')")).unwrap()
    };
    let (ann_token, ben_token, cyd_token) = (
        token(&mut admin, &ann),
        token(&mut admin, &ben),
        token(&mut admin, &cyd),
    );
    let mut fresh = connect_to("pgauth_it_pool");
    let cyd_jwt = simple_value(
        &mut fresh,
        "SELECT access_token FROM auth_login('cyd', 'Tr4vel-Quartz-Mango-71', '10.1.2.3') WHERE ok",
    )
    .expect("cyd signs in");

    let dir = &format!("{}-pgbouncer", test_root());
    let port = dsn_port();
    // 'static: each client thread reads it.
    let pool_port: &'static str = Box::leak(side_port(4).into_boxed_str());
    let sh = |cmd: &str| {
        let out = Command::new("bash").args(["-c", cmd]).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(&format!(
        "mkdir -p {dir} && chown postgres: {dir} && (test -f {dir}/pgbouncer.pid && kill $(cat {dir}/pgbouncer.pid) 2>/dev/null; sleep 0.3; true)"
    ));
    std::fs::write(format!("{dir}/users.txt"), "\"postgres\" \"\"\n").unwrap();
    std::fs::write(
        format!("{dir}/pgbouncer.ini"),
        format!(
            "[databases]\n* = host=127.0.0.1 port={port}\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {pool_port}\nunix_socket_dir = {dir}\nauth_type = trust\nauth_file = {dir}/users.txt\n\
             pool_mode = transaction\ndefault_pool_size = 1\nmax_client_conn = 20\n\
             logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n"
        ),
    )
    .unwrap();
    sh(&format!(
        "chown postgres: {dir}/*; sudo -u postgres pgbouncer -d {dir}/pgbouncer.ini"
    ));
    std::thread::sleep(std::time::Duration::from_millis(500));

    // What a transaction reads about itself: user, aal, doc.read in tenant-1.
    const WHO: &str = "SELECT coalesce(auth_current_user_id()::text, 'nobody') || '/' || coalesce(auth_current_aal()::text, '-') || '/' || auth_has_permission('doc.read', 'tenant-1')";
    let rounds = 1200;
    // (label, the statements that bind, the expected answer) by round.
    type Plan = Box<dyn Fn(usize) -> (String, String) + Send>;
    let run = |plan: Plan| {
        std::thread::spawn(move || {
            let mut c = Client::connect(
                &format!("host=127.0.0.1 port={pool_port} user=postgres dbname=pgauth_it_pool"),
                NoTls,
            )
            .expect("connect through pgbouncer");
            let mut wrong = Vec::new();
            for i in 0..rounds {
                let (bind, expected) = plan(i);
                let got = simple_values(&mut c, &format!("BEGIN; {bind}; {WHO}; COMMIT"));
                let got = got.last().cloned().flatten().unwrap_or_default();
                if got != expected && wrong.len() < 5 {
                    wrong.push(format!("round {i}: {bind} -> {got}, expected {expected}"));
                }
            }
            wrong
        })
    };
    // The victim: ann, bound by her session token every time.
    let victim = {
        let (t, a) = (ann_token.clone(), ann.clone());
        run(Box::new(move |_| {
            (
                format!("SELECT auth_set_session('{t}')"),
                format!("{a}/1/true"),
            )
        }))
    };
    // ben: set/clear/set with his session token, auth_bind_user at aal 2, nobody.
    let other = {
        let (t, b) = (ben_token.clone(), ben.clone());
        run(Box::new(move |i| {
            match i % 3 {
            0 => (
                format!("SELECT auth_set_session('{t}'); SELECT auth_clear_session(); SELECT auth_set_session('{t}')"),
                format!("{b}/1/false"),
            ),
            1 => (
                format!("SELECT auth_bind_user('{b}', 2); SELECT auth_bind_user('{b}', 2)"),
                format!("{b}/2/false"),
            ),
            _ => ("SELECT 1".to_string(), "nobody/-/false".to_string()),
        }
        }))
    };
    // cyd: a session token (a binding as long as ann's), an access JWT, cleared.
    let third = {
        let (t, j, c) = (cyd_token.clone(), cyd_jwt.clone(), cyd.clone());
        run(Box::new(move |i| {
            match i % 3 {
            0 => (
                format!("SELECT auth_set_session('{t}'); SELECT auth_clear_session(); SELECT auth_set_session('{t}')"),
                format!("{c}/1/false"),
            ),
            1 => (
                format!("SELECT auth_set_session('{j}'); SELECT auth_clear_session(); SELECT auth_set_session('{j}')"),
                format!("{c}/1/false"),
            ),
            _ => ("SELECT auth_clear_session()".to_string(), "nobody/-/false".to_string()),
        }
        }))
    };
    let mut wrong = victim.join().unwrap();
    wrong.extend(other.join().unwrap());
    wrong.extend(third.join().unwrap());
    sh(&format!("kill $(cat {dir}/pgbouncer.pid)"));
    assert!(
        wrong.is_empty(),
        "identity leaked across pooled transactions: {wrong:#?}"
    );
}

/// Users, groups, roles, assignments, credentials and the audit chain are extension
/// configuration data: pg_dump keeps them and a restore gives the same permissions.
#[test]
fn rbac_and_audit_survive_dump_and_restore() {
    let mut src = fresh_database("pgauth_it_rbac_dump");
    src.batch_execute(
        "SELECT auth_create_role('reader'); SELECT auth_create_role('editor', '{reader}');
         SELECT auth_grant_permission('reader', 'doc.read');
         SELECT auth_create_group('g');
         SELECT auth_add_member('g', auth_create_user('ann', 'Tr4vel-Quartz-Mango-71'));
         SELECT auth_assign_group_role('g', 'editor', 't1', '{10.0.0.0/8}');
         CREATE TABLE t (id int PRIMARY KEY, v text);
         SELECT auth_audit_enable('t');
         INSERT INTO t VALUES (1, 'a');",
    )
    .unwrap();
    let count = |c: &mut Client, q: &str| simple_value(c, q).unwrap_or_default();
    let facts = "SELECT (SELECT count(*) FROM pgauth.users) || '/' || (SELECT count(*) FROM pgauth.credentials)
                 || '/' || (SELECT count(*) FROM pgauth.role_grants) || '/' || (SELECT count(*) FROM pgauth.role_inherits)
                 || '/' || (SELECT count(*) FROM pgauth.audit_log)";
    let before = count(&mut src, facts);
    let dump = dump_database("pgauth_it_rbac_dump");
    let mut root = Client::connect(&dsn(), NoTls).unwrap();
    root.batch_execute("DROP DATABASE IF EXISTS pgauth_it_rbac_restored WITH (FORCE)")
        .unwrap();
    root.batch_execute("CREATE DATABASE pgauth_it_rbac_restored")
        .unwrap();
    restore_database(&dump, &dsn_port(), "pgauth_it_rbac_restored");
    let _ = std::fs::remove_file(&dump);
    let mut dst = connect_to("pgauth_it_rbac_restored");
    assert_eq!(count(&mut dst, facts), before);
    assert_eq!(
        count(
            &mut dst,
            "SELECT string_agg(p, ',') FROM pgauth.users u, auth_user_permissions(u.id) p"
        ),
        "doc.read@t1"
    );
    assert_eq!(
        count(&mut dst, "SELECT ok::text FROM auth_audit_verify()"),
        "true"
    );
    let ann = count(
        &mut dst,
        "SELECT id FROM pgauth.users WHERE username = 'ann'",
    );
    assert_eq!(
        count(
            &mut dst,
            &format!("SELECT auth_user_has_permission('{ann}', 'doc.read', 't1', '10.9.8.7')")
        ),
        "t"
    );
}

/// A schema where other roles may create objects is refused at CREATE EXTENSION: there, a
/// `public.auth_verify(varchar, varchar)` overload of an attacker would win for JDBC's calls
/// and capture passwords.
#[test]
fn pgauth_refuses_a_schema_others_can_create_in() {
    let mut root = Client::connect(&dsn(), NoTls).unwrap();
    root.batch_execute("DROP DATABASE IF EXISTS pgauth_it_schema WITH (FORCE)")
        .unwrap();
    root.batch_execute("CREATE DATABASE pgauth_it_schema")
        .unwrap();
    let mut db = connect_to("pgauth_it_schema");
    db.batch_execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        .unwrap();
    let err = db.batch_execute("CREATE EXTENSION pgauth").unwrap_err();
    assert_eq!(sqlstate(&err), Some("55000"), "{err}");
    assert!(db_message(&err).contains("PUBLIC"), "{err}");
    // The safe installation from the hint works.
    db.batch_execute("CREATE SCHEMA auth; CREATE EXTENSION pgauth SCHEMA auth")
        .unwrap();
    assert_eq!(
        simple_value(
            &mut db,
            "SELECT auth.auth_verify('x', auth.auth_hash_password('x'))"
        )
        .as_deref(),
        Some("t")
    );
}
