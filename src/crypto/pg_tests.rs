//! `#[pg_test]`s of the encryption SQL layer, inside a real backend. The pg_test cluster's master
//! key comes from `pgauth.master_key_command` (see `pg_test::postgresql_conf_options`).

#[pgrx::pg_schema]
mod tests {
    use crate::pg_test_util::*;
    use pgrx::prelude::*;

    const OTHER_KEY_CMD: &str =
        "echo 1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    #[pg_test]
    fn round_trips_with_and_without_aad() {
        assert!(one_bool(
            "SELECT auth_decrypt_text(auth_encrypt('secret text')) = 'secret text'"
        ));
        assert!(one_bool(
            "SELECT auth_decrypt(auth_encrypt('\\x00ff'::bytea, 'default', 'row 1'), 'row 1') = '\\x00ff'::bytea"
        ));
        assert!(one_bool(
            "SELECT auth_decrypt_text(auth_encrypt('', 'default', 'r'), 'r') = ''"
        ));
        // Header: format byte 1, key id, nonce; 45 bytes of overhead; fresh nonce every time.
        assert!(one_bool(
            "SELECT get_byte(auth_encrypt('x'), 0) = 1 AND length(auth_encrypt('x')) = 46"
        ));
        assert!(one_bool("SELECT auth_encrypt('x') <> auth_encrypt('x')"));
        assert!(one_bool(
            "SELECT auth_decrypt(NULL) IS NULL AND auth_encrypt(NULL::bytea) IS NULL"
        ));
    }

    #[pg_test]
    fn tampering_and_wrong_aad_fail_with_22000() {
        Spi::run(
            "CREATE TEMP TABLE c AS SELECT auth_encrypt('top secret', 'default', 'row 7') AS v",
        )
        .unwrap();
        assert_eq!(
            sqlstate_of("SELECT auth_decrypt(v, 'row 8') FROM c"),
            Some("22000".into())
        );
        assert_eq!(
            sqlstate_of("SELECT auth_decrypt(v) FROM c"),
            Some("22000".into())
        );
        assert_eq!(
            sqlstate_of(
                "SELECT auth_decrypt(set_byte(v, 30, get_byte(v, 30) # 1), 'row 7') FROM c"
            ),
            Some("22000".into())
        );
        assert_eq!(
            sqlstate_of("SELECT auth_decrypt(set_byte(v, length(v) - 1, get_byte(v, length(v) - 1) # 128), 'row 7') FROM c"),
            Some("22000".into())
        );
        assert_eq!(
            sqlstate_of("SELECT auth_decrypt(substring(v from 1 for 20)) FROM c"),
            Some("22023".into())
        );
        assert_eq!(
            sqlstate_of("SELECT auth_decrypt(set_byte(v, 0, 2)) FROM c"),
            Some("22023".into())
        );
        assert_eq!(
            sqlstate_of("SELECT auth_decrypt('\\x'::bytea)"),
            Some("22023".into())
        );
        // An unknown key id (a well-formed envelope under a key this database never had).
        assert_eq!(
            sqlstate_of("SELECT auth_decrypt(set_byte(v, 5, get_byte(v, 5) # 1), 'row 7') FROM c"),
            Some("22000".into())
        );
    }

    #[pg_test]
    fn rotation_reencrypt_and_revocation() {
        Spi::run("SELECT auth_encrypt('warm up')").unwrap();
        Spi::run("CREATE TEMP TABLE c AS SELECT auth_encrypt('payload', 'default', 'k') AS v")
            .unwrap();
        let old_id = Spi::get_one::<pgrx::Uuid>(
            "SELECT id FROM pgauth.keys WHERE name = 'default' AND status = 'active'",
        )
        .unwrap()
        .unwrap();
        Spi::run("SELECT auth_rotate_key('default')").unwrap();
        assert!(one_bool(
            "SELECT count(*) = 2 FROM pgauth.keys WHERE name = 'default'"
        ));
        assert!(one_bool("SELECT status = 'decrypt_only' FROM pgauth.keys WHERE name = 'default' AND version = 1"));
        // Old versions still decrypt; reencrypt moves the value to the active version.
        assert!(one_bool(
            "SELECT auth_decrypt_text(v, 'k') = 'payload' FROM c"
        ));
        Spi::run("UPDATE c SET v = auth_reencrypt(v, 'k')").unwrap();
        assert!(one_bool(
            "SELECT substring(v from 2 for 16) = (SELECT uuid_send(id) FROM pgauth.keys WHERE name = 'default' AND status = 'active') FROM c"
        ));
        assert!(one_bool(
            "SELECT auth_decrypt_text(v, 'k') = 'payload' FROM c"
        ));
        // Revoking a version makes its ciphertexts unusable.
        Spi::run("CREATE TEMP TABLE old AS SELECT auth_encrypt('x') AS v").unwrap();
        Spi::run(&format!("SELECT auth_revoke_key('{old_id}')")).unwrap();
        let active = Spi::get_one::<pgrx::Uuid>(
            "SELECT id FROM pgauth.keys WHERE name = 'default' AND status = 'active'",
        )
        .unwrap()
        .unwrap();
        Spi::run(&format!("SELECT auth_revoke_key('{active}')")).unwrap();
        assert_eq!(
            sqlstate_of("SELECT auth_decrypt(v) FROM old"),
            Some("22000".into())
        );
    }

    #[pg_test]
    fn no_master_key_means_55000() {
        Spi::run("SET pgauth.master_key_command = ''").unwrap();
        assert_eq!(
            sqlstate_of("SELECT auth_encrypt('x')"),
            Some("55000".into())
        );
        assert_eq!(
            sqlstate_of("SELECT auth_create_key('tenant:1')"),
            Some("55000".into())
        );
        // Hashing keeps working without a master key.
        assert!(one_bool("SELECT auth_verify('a', auth_hash_password('a'))"));
        Spi::run("SET pgauth.master_key_command = 'echo tooshort'").unwrap();
        assert_eq!(
            sqlstate_of("SELECT auth_encrypt('x')"),
            Some("55000".into())
        );
    }

    #[pg_test]
    fn key_usage_is_granted_to_roles() {
        Spi::run("SELECT auth_create_key('tenant:42')").unwrap();
        Spi::run("CREATE TEMP TABLE c AS SELECT auth_encrypt('for tenant 42', 'tenant:42') AS v")
            .unwrap();
        Spi::run("GRANT SELECT ON c TO PUBLIC").unwrap();
        Spi::run("CREATE ROLE pgauth_test_app; CREATE ROLE pgauth_test_other").unwrap();
        Spi::run("SET ROLE pgauth_test_app").unwrap();
        assert_eq!(
            sqlstate_of("SELECT auth_decrypt(v) FROM c"),
            Some("42501".into())
        );
        assert_eq!(
            sqlstate_of("SELECT auth_encrypt('x', 'tenant:42')"),
            Some("42501".into())
        );
        assert_eq!(
            sqlstate_of("SELECT auth_create_key('mine')"),
            Some("42501".into())
        );
        assert_eq!(
            sqlstate_of("SELECT * FROM pgauth.keys"),
            Some("42501".into())
        );
        Spi::run("RESET ROLE").unwrap();
        Spi::run("SELECT auth_grant_key_usage('tenant:42', 'pgauth_test_app')").unwrap();
        Spi::run("SET ROLE pgauth_test_app").unwrap();
        assert!(one_bool(
            "SELECT auth_decrypt_text(v) = 'for tenant 42' FROM c"
        ));
        Spi::run("RESET ROLE").unwrap();
        Spi::run("SET ROLE pgauth_test_other").unwrap();
        assert_eq!(
            sqlstate_of("SELECT auth_decrypt(v) FROM c"),
            Some("42501".into())
        );
        Spi::run("RESET ROLE").unwrap();
    }

    #[pg_test]
    fn digests_and_blind_indexes() {
        assert!(one_bool(
            "SELECT auth_digest('abc') = decode('b751850b1a57168a5693cd924b6b096e08f621827444f70d884f5d0240d2712e10e116e9192af3c91a7ec57647e3934057340b4cf408d5a56592f8274eec53f0', 'hex')"
        ));
        assert!(one_bool(
            "SELECT auth_digest('abc'::bytea) = auth_digest('abc')"
        ));
        Spi::run("SELECT auth_encrypt('make the default key')").unwrap();
        Spi::run("SELECT auth_create_key('other')").unwrap();
        assert!(one_bool(
            "SELECT length(auth_blind_index('a@example.com')) = 16"
        ));
        assert!(one_bool(
            "SELECT auth_blind_index('a@example.com') = auth_blind_index('a@example.com')"
        ));
        assert!(one_bool(
            "SELECT auth_blind_index('a@example.com') <> auth_blind_index('b@example.com')"
        ));
        assert!(one_bool("SELECT auth_blind_index('a@example.com') <> auth_blind_index('a@example.com', 'other')"));
        assert!(one_bool("SELECT length(auth_hmac('x', 'default')) = 32"));
        // Rotation does not change blind indexes or HMACs (they use version 1 of the name).
        Spi::run("CREATE TEMP TABLE b AS SELECT auth_blind_index('a@example.com') AS i, auth_hmac('x', 'default') AS h").unwrap();
        Spi::run("SELECT auth_rotate_key('default')").unwrap();
        assert!(one_bool(
            "SELECT i = auth_blind_index('a@example.com') AND h = auth_hmac('x', 'default') FROM b"
        ));
        assert_eq!(
            sqlstate_of("SELECT auth_blind_index('x', 'no such key')"),
            Some("42704".into())
        );
    }

    #[pg_test]
    fn export_import_and_rewrap() {
        Spi::run("CREATE TEMP TABLE c AS SELECT auth_encrypt('keep me', 'default', 'a') AS v")
            .unwrap();
        Spi::run("CREATE TEMP TABLE e AS SELECT auth_export_keys() AS doc").unwrap();
        assert!(one_bool("SELECT jsonb_array_length(doc->'keys') = 1 AND doc->>'format' = 'pgauth-keys/1' FROM e"));
        // The export holds only wrapped material: 60 bytes per key.
        assert!(one_bool(
            "SELECT length(decode(doc->'keys'->0->>'wrapped_key', 'base64')) = 60 FROM e"
        ));
        Spi::run("DELETE FROM pgauth.keys").unwrap();
        assert_eq!(
            sqlstate_of("SELECT auth_decrypt(v, 'a') FROM c"),
            Some("22000".into())
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT auth_import_keys(doc) FROM e").unwrap(),
            Some(1)
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT auth_import_keys(doc) FROM e").unwrap(),
            Some(0)
        );
        assert!(one_bool(
            "SELECT auth_decrypt_text(v, 'a') = 'keep me' FROM c"
        ));
        // A new master key: keys wrapped by the old one are re-wrapped; data is untouched.
        let current = Spi::get_one::<String>("SELECT current_setting('pgauth.master_key_command')")
            .unwrap()
            .unwrap();
        Spi::run(&format!(
            "SET pgauth.previous_master_key_command = '{current}'"
        ))
        .unwrap();
        Spi::run(&format!(
            "SET pgauth.master_key_command = '{OTHER_KEY_CMD}'"
        ))
        .unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT auth_rewrap_keys()").unwrap(),
            Some(1)
        );
        Spi::run("RESET pgauth.previous_master_key_command").unwrap();
        assert!(one_bool(
            "SELECT auth_decrypt_text(v, 'a') = 'keep me' FROM c"
        ));
        assert!(one_bool(
            "SELECT bool_and(wrapped_by_current_master_key) FROM auth_key_status()"
        ));
        // Back on the old master key alone, the re-wrapped keys cannot be unwrapped.
        Spi::run(&format!("SET pgauth.master_key_command = '{current}'")).unwrap();
        assert_eq!(
            sqlstate_of("SELECT auth_decrypt(v, 'a') FROM c"),
            Some("55000".into())
        );
    }

    /// Found by the SQL fuzzer (tests/fuzz/sql_fuzz.py): a number jsonb holds but serde_json
    /// cannot (XX000 from pgrx's JsonB) and fields missing or of the wrong type (23502, 22P02,
    /// 23514 from the INSERT). Now 22023 with a hint, and nothing imported.
    #[pg_test]
    fn damaged_key_exports_are_invalid_arguments() {
        // The key first (made on first use), then an export that holds it.
        Spi::run("SELECT auth_encrypt('x')").unwrap();
        Spi::run("CREATE TEMP TABLE d AS SELECT auth_export_keys() AS doc").unwrap();
        assert_eq!(
            Spi::get_one::<i32>("SELECT jsonb_array_length(doc->'keys') FROM d").unwrap(),
            Some(1)
        );
        let before = Spi::get_one::<i64>("SELECT count(*) FROM pgauth.keys").unwrap();
        for doc in [
            "jsonb_set(doc, '{keys,0,version}', '1e400')",
            "'{\"format\": \"pgauth-keys/1\", \"keys\": [-1e400]}'::jsonb",
            "jsonb_set(doc, '{keys,0,id}', 'null')",
            "jsonb_set(doc, '{keys,0,id}', to_jsonb(gen_random_uuid()::text)) #- '{keys,0,wrapped_key}'",
            "jsonb_set(doc, '{keys,0,id}', '\"x\"')",
            "jsonb_set(doc, '{keys,0,version}', '1.5')",
            "jsonb_set(doc, '{keys,0,created_at}', '\"2026-02-30T00:00:00\"')",
            "jsonb_set(doc, '{grants}', '[{\"key_name\": null, \"grantee\": \"public\"}]')",
            "jsonb_set(doc, '{format}', '1')",
        ] {
            assert_eq!(
                sqlstate_of(&format!("SELECT auth_import_keys({doc}) FROM d")),
                Some("22023".into()),
                "{doc}"
            );
        }
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM pgauth.keys").unwrap(),
            before
        );
        // The same goes for every function with a jsonb argument.
        assert_eq!(
            sqlstate_of("SELECT auth_jwt_sign('{\"n\": 1e400}', 'jwt')"),
            Some("22023".into())
        );
    }
}
