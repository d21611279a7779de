//! pgauth: authentication and authorization inside PostgreSQL.
//!
//! Each capability is a folder with a pure-Rust core and a thin `sql.rs`; its hand-written DDL is
//! `sql/<capability>.sql`. See docs/reference.md for the SQL reference.

use pgrx::prelude::*;

pub mod audit;
mod compat;
pub mod crypto;
pub mod error;
pub mod ids;
pub mod jwt;
pub mod login;
pub mod mfa;
pub mod password;
pub mod pg;
pub mod random;
pub mod rbac;
pub mod session;
pub mod settings;
pub mod webauthn;

#[cfg(any(test, feature = "pg_test"))]
pub mod pg_test_util;

::pgrx::pg_module_magic!(name, version);

// Hand-written DDL, one file per capability holding the tables that capability's Rust reads and
// writes. bootstrap.sql (schema, roles) comes first; finalize.sql (privileges on the generated
// functions, the direct-write audit triggers) last.
extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!(
    "../sql/audit.sql",
    name = "audit",
    requires = ["bootstrap", auth_current_user_id]
);
extension_sql_file!(
    "../sql/crypto.sql",
    name = "crypto",
    requires = ["bootstrap", "audit"]
);
extension_sql_file!(
    "../sql/password.sql",
    name = "password",
    requires = ["bootstrap"]
);
extension_sql_file!(
    "../sql/login.sql",
    name = "login",
    requires = ["password", "audit", auth_check_password, auth_hash_password]
);
extension_sql_file!("../sql/rbac.sql", name = "rbac", requires = ["login"]);
extension_sql_file!("../sql/session.sql", name = "session", requires = ["login"]);
extension_sql_file!("../sql/mfa.sql", name = "mfa", requires = ["login"]);
extension_sql_file!("../sql/jwt.sql", name = "jwt", requires = ["crypto"]);
extension_sql_file!(
    "../sql/webauthn.sql",
    name = "webauthn",
    requires = ["login"]
);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Every setting, the prefix reserved last (src/settings.rs).
    settings::define_all();
    jwt::install_provider();
    error::install_log_hook();
    audit::sql::install_xact_callback();
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        pg::shmem::install();
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
