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
}
