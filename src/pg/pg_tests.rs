//! `#[pg_test]`s of the shared SQL-side layer: the one privilege check and the binding's change
//! counter, inside a real backend.

#[pgrx::pg_schema]
mod tests {
    use crate::pg::binding;
    use crate::pg::roles::{require, Who};
    use pgrx::prelude::*;

    fn new_user(name: &str) -> [u8; 16] {
        let id = Spi::get_one::<pgrx::Uuid>(&format!("SELECT auth_create_user('{name}')"))
            .unwrap()
            .unwrap();
        *id.as_bytes()
    }

    #[pg_test]
    fn the_version_moves_with_every_change_of_content() {
        let (a, b) = (new_user("pg_layer_a"), new_user("pg_layer_b"));
        let none = binding::version();
        assert_eq!(binding::version(), none, "reading does not move it");
        binding::bind(a, 1, None);
        let first = binding::version();
        assert_ne!(first, none);
        binding::bind(b, 1, None);
        let second = binding::version();
        assert_ne!(second, first);
        // Back to the first binding's content: a new version, never an old one again.
        binding::bind(a, 1, None);
        let third = binding::version();
        assert!(third > second, "{third} after {second}");
        assert_eq!(binding::current().map(|b| b.user_id), Some(a));
        binding::clear();
        assert!(binding::version() > third);
        assert_eq!(binding::current(), None);
    }

    #[pg_test]
    fn a_rolled_back_binding_moves_the_version_too() {
        let a = new_user("pg_layer_c");
        binding::bind(a, 1, None);
        let bound = binding::version();
        // A subtransaction that rebinds and is rolled back restores the outer binding's text.
        Spi::run(
            "DO $$ BEGIN
               PERFORM auth_bind_user(auth_create_user('pg_layer_d'));
               PERFORM auth_current_user_id();
               RAISE EXCEPTION 'undo';
             EXCEPTION WHEN others THEN NULL; END $$",
        )
        .unwrap();
        assert_eq!(binding::current().map(|b| b.user_id), Some(a));
        assert!(binding::version() > bound, "the inner binding was seen");
    }

    #[pg_test]
    fn require_names_what_is_missing() {
        Spi::run("CREATE ROLE shared_layer_nobody; SET ROLE shared_layer_nobody").unwrap();
        let refused = require(Who::AdminOrService, "doing_it").unwrap_err();
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(
            refused.to_string(),
            "permission denied: doing_it requires membership in pgauth_admin or pgauth_service"
        );
        assert!(require(Who::Superuser, "as_the_test_runner").is_ok());
        assert!(Who::Admin.allows_caller(), "superusers qualify");
    }

    /// Each input the SQL fuzzer (tests/fuzz/sql_fuzz.py) found raising XX000 or a SQLSTATE
    /// docs/reference.md does not list, with the SQLSTATE it raises now (or success).
    #[pg_test]
    fn sql_fuzzer_findings_raise_documented_sqlstates() {
        use crate::pg_test_util::sqlstate_of;
        Spi::run(
            "CREATE TABLE fz (id int PRIMARY KEY, s text);
             CREATE TEMP TABLE u AS SELECT auth_create_user('fuzz_finding') AS id;
             SELECT auth_create_role('fz_reader'); SELECT auth_grant_permission('fz_reader', 'fz.read')",
        )
        .unwrap();
        let cases: &[(&str, Option<&str>)] = &[
            // XX000: a regclass given as the number of no relation (relation_open)
            ("SELECT auth_audit_enable('5'::regclass)", Some("42P01")),
            (
                "SELECT auth_audit_disable('2147483648'::regclass)",
                Some("42P01"),
            ),
            (
                "SELECT auth_rls_enable('5'::regclass, 'fz.read')",
                Some("42P01"),
            ),
            // 42601: a NULL table made the policy DDL malformed
            (
                "SELECT auth_rls_enable(NULL, 'fz.read', NULL, 'fz.write')",
                Some("22023"),
            ),
            // XX000: NULL for a non-Option argument of a function that is not strict
            (
                "SELECT auth_create_session((SELECT id FROM u), '1 hour', NULL)",
                None,
            ),
            ("SELECT auth_require_permission(NULL, 'x')", Some("42501")),
            (
                "SELECT auth_user_has_permission((SELECT id FROM u), 'fz.read', NULL, NULL, NULL)",
                None,
            ),
            // XX000: a NULL element in the scopes
            (
                "SELECT auth_create_api_key((SELECT id FROM u), 'k', '{NULL}')",
                Some("22023"),
            ),
            // 23514: names and levels beyond the tables' CHECK constraints
            (
                "SELECT auth_create_api_key((SELECT id FROM u), '')",
                Some("22023"),
            ),
            ("SELECT auth_create_key('')", Some("22023")),
            ("SELECT auth_create_key('a b')", Some("22023")),
            ("SELECT auth_create_group(repeat('g', 201))", Some("22023")),
            ("SELECT auth_create_role('')", Some("22023")),
            ("SELECT auth_create_user(repeat('u', 257))", Some("22023")),
            ("SELECT auth_create_user(E'a\\tb')", Some("22023")),
            (
                "SELECT auth_grant_permission('fz_reader', 'bad perm')",
                Some("22023"),
            ),
            (
                "SELECT auth_grant_permission('fz_reader', 'fz.x', -1)",
                Some("22023"),
            ),
            (
                "SELECT auth_assign_role((SELECT id FROM u), 'fz_reader', '')",
                Some("22023"),
            ),
            // 22008: now() +/- an interval beyond the timestamp range
            (
                "SELECT auth_create_session((SELECT id FROM u), '2147483647 days')",
                Some("22023"),
            ),
            ("SELECT auth_purge_expired('10000 years')", Some("22023")),
            (
                "SELECT count(*) FROM auth_audit_events(NULL, '178000000 years')",
                None,
            ),
            // XX000: jsonb numbers serde_json cannot hold, in every jsonb argument
            ("SELECT auth_webauthn_step_up('[1e400]')", Some("22023")),
            (
                "SELECT auth_webauthn_register_finish((SELECT id FROM u), '{\"a\": -1e400}')",
                Some("22023"),
            ),
            (
                // One column: sqlstate_of wraps the query in PERFORM (…).
                "SELECT ok FROM auth_webauthn_login_finish('[[1e400]]')",
                Some("22023"),
            ),
            (
                "SELECT auth_import_keys((repeat('[', 200) || repeat(']', 200))::jsonb)",
                Some("22023"),
            ),
        ];
        for (query, expected) in cases {
            assert_eq!(sqlstate_of(query).as_deref(), *expected, "{query}");
        }
        // 0A000 from every permission check of a user with a grant expiring at ±infinity
        Spi::run(
            "SELECT auth_assign_role((SELECT id FROM u), 'fz_reader', 'a', NULL, 'infinity');
             SELECT auth_assign_role((SELECT id FROM u), 'fz_reader', 'b', NULL, '-infinity')",
        )
        .unwrap();
        assert_eq!(
            Spi::get_one::<bool>(
                "SELECT auth_user_has_permission((SELECT id FROM u), 'fz.read', 'a')
                    AND NOT auth_user_has_permission((SELECT id FROM u), 'fz.read', 'b')"
            )
            .unwrap(),
            Some(true)
        );
    }
}
