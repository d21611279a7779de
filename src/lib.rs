//! pgauth: authentication and authorization inside PostgreSQL.
//!
//! Each capability is a folder with a pure-Rust core and a thin `sql.rs`; hand-written DDL is in
//! `sql/`. See README.md for the SQL reference.

use pgrx::prelude::*;

pub mod audit;
pub mod backend;
pub mod crypto;
pub mod error;
pub mod guc;
pub mod jwt;
pub mod login;
pub mod mfa;
pub mod password;
pub mod rbac;
pub mod session;
mod shmem;
pub mod webauthn;

#[cfg(any(test, feature = "pg_test"))]
pub mod pg_test_util;

::pgrx::pg_module_magic!(name, version);

// Schema, roles and state tables come first; privileges on the generated functions come last.
extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!("../sql/audit.sql", name = "audit", requires = ["bootstrap"]);
extension_sql_file!(
    "../sql/keys.sql",
    name = "keys",
    requires = ["bootstrap", "audit"]
);
extension_sql_file!(
    "../sql/rbac.sql",
    name = "rbac",
    requires = [
        "keys",
        "audit",
        auth_check_password,
        auth_hash_password,
        auth_current_user_id
    ]
);
extension_sql_file!("../sql/login.sql", name = "login", requires = ["rbac"]);
extension_sql_file!(
    "../sql/api_keys.sql",
    name = "api_keys",
    requires = ["rbac"]
);
extension_sql_file!("../sql/mfa.sql", name = "mfa", requires = ["rbac"]);
extension_sql_file!("../sql/jwt.sql", name = "jwt", requires = ["rbac", "keys"]);
extension_sql_file!(
    "../sql/webauthn.sql",
    name = "webauthn",
    requires = ["login"]
);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::register();
    session::sql::register_settings();
    login::sql::register_settings();
    jwt::sql::register_settings();
    jwt::install_provider();
    webauthn::sql::register_settings();
    // Last of the settings: reserving the prefix deletes every placeholder not defined by now.
    guc::reserve_prefix();
    error::install_log_hook();
    audit::sql::install_xact_callback();
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        shmem::install();
        audit::kept::install();
        password::role_check::install();
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // A fixed master key for the #[pg_test] cluster only.
        vec![
            "pgauth.master_key_command = 'echo 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'",
            // Attempt counters live in shared memory (src/login/shared.rs).
            "shared_preload_libraries = 'pgauth'",
        ]
    }
}
