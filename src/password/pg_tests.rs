//! `#[pg_test]`s of the password SQL layer: they run inside a real PostgreSQL backend.

#[pgrx::pg_schema]
mod tests {
    use crate::pg_test_util::*;
    use pgrx::prelude::*;

    #[pg_test]
    fn hash_then_verify() {
        let ok = Spi::get_one::<bool>(
            "SELECT auth_verify('s3cret pass', auth_hash_password('s3cret pass'))",
        )
        .unwrap()
        .unwrap();
        assert!(ok);
        let wrong = Spi::get_one::<bool>(
            "SELECT auth_verify('s3cret pasS', auth_hash_password('s3cret pass'))",
        )
        .unwrap()
        .unwrap();
        assert!(!wrong);
    }

    #[pg_test]
    fn hash_uses_the_settings() {
        Spi::run("SET pgauth.argon2_memory_kib = 8192; SET pgauth.argon2_iterations = 1").unwrap();
        let hash = Spi::get_one::<String>("SELECT auth_hash_password('x')")
            .unwrap()
            .unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"), "{hash}");
        let rehash =
            Spi::get_one_with_args::<bool>("SELECT auth_needs_rehash($1)", &[hash.as_str().into()])
                .unwrap()
                .unwrap();
        assert!(!rehash);
        Spi::run("RESET pgauth.argon2_memory_kib; RESET pgauth.argon2_iterations").unwrap();
        let rehash =
            Spi::get_one_with_args::<bool>("SELECT auth_needs_rehash($1)", &[hash.as_str().into()])
                .unwrap()
                .unwrap();
        assert!(rehash);
    }

    #[pg_test]
    fn settings_out_of_range_are_refused() {
        assert_eq!(
            sqlstate_of("SELECT set_config('pgauth.argon2_memory_kib', '1024', true)"),
            Some("22023".into())
        );
        assert_eq!(
            sqlstate_of("SELECT set_config('pgauth.argon2_iterations', '0', true)"),
            Some("22023".into())
        );
        assert_eq!(
            sqlstate_of("SELECT set_config('pgauth.argon2_parallelism', '1000', true)"),
            Some("22023".into())
        );
        // The prefix is reserved: a misspelt setting is an error, not a silent placeholder.
        assert!(sqlstate_of("SELECT set_config('pgauth.argon2_memroy_kib', '1', true)").is_some());
    }

    #[pg_test]
    fn malformed_hashes_raise_22023() {
        for hash in [
            "",
            "plain",
            "$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$AAAA",
            "$2b$31$abc",
        ] {
            let q = format!("SELECT auth_verify('pw', '{hash}')");
            assert_eq!(sqlstate_of(&q), Some("22023".into()), "{hash}");
        }
    }

    #[pg_test]
    fn null_in_null_out() {
        assert_eq!(
            Spi::get_one::<bool>("SELECT auth_verify(NULL, 'x')").unwrap(),
            None
        );
        assert_eq!(
            Spi::get_one::<String>("SELECT auth_hash_password(NULL)").unwrap(),
            None
        );
        assert_eq!(
            Spi::get_one::<Vec<String>>("SELECT auth_password_problems(NULL)").unwrap(),
            None
        );
    }

    #[pg_test]
    fn policy_problems_and_check() {
        let problems =
            Spi::get_one::<Vec<String>>("SELECT auth_password_problems('alice2024', 'alice')")
                .unwrap()
                .unwrap();
        assert!(
            problems.iter().any(|p| p.contains("user name")),
            "{problems:?}"
        );
        let none = Spi::get_one::<Vec<String>>("SELECT auth_password_problems('xT7#qLm9!vRw2Zp')")
            .unwrap()
            .unwrap();
        assert!(none.is_empty(), "{none:?}");
        assert_eq!(
            sqlstate_of("SELECT auth_check_password('password')"),
            Some("22023".into())
        );
        assert_eq!(
            sqlstate_of("SELECT auth_check_password('x', NULL, 'no_such_policy')"),
            Some("22023".into())
        );
        // Policies are editable rows.
        Spi::run("UPDATE pgauth.password_policies SET min_length = 30 WHERE name = 'default'")
            .unwrap();
        let problems =
            Spi::get_one::<Vec<String>>("SELECT auth_password_problems('xT7#qLm9!vRw2Zp')")
                .unwrap()
                .unwrap();
        assert!(
            problems.iter().any(|p| p.contains("at least 30")),
            "{problems:?}"
        );
    }

    #[pg_test]
    fn database_name_is_context() {
        let db = Spi::get_one::<String>("SELECT current_database()::text")
            .unwrap()
            .unwrap();
        let q = format!("SELECT auth_password_problems('{db}#Xq91!zZ')");
        let problems = Spi::get_one::<Vec<String>>(&q).unwrap().unwrap();
        assert!(
            problems.iter().any(|p| p.contains("database name")),
            "{problems:?}"
        );
    }
}
