//! `#[pg_test]`s of the passkey SQL layer inside a real backend: settings, options, privileges
//! and a full registration and sign-in with a fixed vector (tests/fixtures/webauthn).

#[pgrx::pg_schema]
mod tests {
    use crate::pg_test_util::*;
    use pgrx::prelude::*;

    const VECTOR: &str = include_str!("../../tests/fixtures/webauthn/eddsa_packed.json");

    fn configure() {
        Spi::run(
            "SET pgauth.webauthn_rp_id = 'example.com';
             SET pgauth.login_attempts_per_minute = 0;",
        )
        .unwrap();
    }

    #[pg_test]
    fn settings_are_checked_and_required() {
        assert_eq!(
            sqlstate_of("SELECT auth_webauthn_login_begin()").as_deref(),
            Some("55000")
        );
        for (name, value) in [
            ("pgauth.webauthn_rp_id", "https://example.com"),
            ("pgauth.webauthn_origins", "http://example.com"),
            ("pgauth.webauthn_user_verification", "always"),
        ] {
            let query = format!("SELECT pg_catalog.set_config('{name}', '{value}', true)");
            assert_eq!(sqlstate_of(&query).as_deref(), Some("22023"), "{name}");
        }
        configure();
        assert!(one_bool(
            "SELECT auth_webauthn_login_begin()->>'rpId' = 'example.com'"
        ));
    }

    #[pg_test]
    fn vector_registers_and_signs_in_once() {
        configure();
        let v: serde_json::Value = serde_json::from_str(VECTOR).unwrap();
        let uid = Spi::get_one::<pgrx::Uuid>("SELECT auth_create_user('pgt_passkey')")
            .unwrap()
            .unwrap();
        let plant = |challenge: &str, ceremony: &str, user: Option<pgrx::Uuid>| {
            Spi::run_with_args(
                "INSERT INTO pgauth.webauthn_challenges (challenge, ceremony, user_id, discoverable, expires_at)
                 VALUES (decode(translate($1, '-_', '+/') || '=', 'base64'), $2, $3, $3 IS NULL, now() + interval '1 minute')",
                &[challenge.into(), ceremony.into(), user.into()],
            )
            .unwrap();
        };
        // The vector's authenticator knows this user handle.
        Spi::run_with_args(
            "INSERT INTO pgauth.webauthn_user_handles (user_id, handle)
             VALUES ($1, decode(translate($2, '-_', '+/') || '==', 'base64'))",
            &[
                uid.into(),
                v["assertion"]["response"]["userHandle"]
                    .as_str()
                    .unwrap()
                    .into(),
            ],
        )
        .unwrap();
        plant(
            v["registration_challenge"].as_str().unwrap(),
            "register",
            Some(uid),
        );
        let id = Spi::get_one_with_args::<pgrx::Uuid>(
            "SELECT auth_webauthn_register_finish($1, $2::jsonb)",
            &[uid.into(), v["registration"].to_string().into()],
        )
        .unwrap();
        assert!(id.is_some());
        plant(v["assertion_challenge"].as_str().unwrap(), "login", None);
        let assertion = v["assertion"].to_string();
        let ok = |assertion: &str| {
            Spi::get_one_with_args::<bool>(
                "SELECT ok FROM auth_webauthn_login_finish($1::jsonb)",
                &[assertion.into()],
            )
            .unwrap()
            .unwrap()
        };
        let problem = || {
            Spi::get_one::<String>(
                "SELECT coalesce(new_values->>'problem', new_values->>'reason', '')
                   FROM pgauth.audit_log WHERE event LIKE 'webauthn%' ORDER BY id DESC LIMIT 1",
            )
            .unwrap()
            .unwrap_or_default()
        };
        assert!(ok(&assertion), "refused: {}", problem());
        assert!(!ok(&assertion), "the challenge is used up");
        assert!(one_bool(
            "SELECT sign_count = 7 FROM pgauth.webauthn_credentials"
        ));
    }
}
