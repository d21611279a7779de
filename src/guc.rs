//! `pgauth.*` settings. The prefix is reserved (by `reserve_prefix`, after every capability has
//! defined its settings) so a typo (`SET pgauth.argon2_memroy_kib`) is an error instead of a
//! silently ignored placeholder.

use std::ffi::CString;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

use crate::password::limits::*;
use crate::password::Argon2Settings;

/// Milliseconds between a backend's attempts to seal the audit chain at commit.
pub static AUDIT_SEAL_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);
pub static ARGON2_MEMORY_KIB: GucSetting<i32> =
    GucSetting::<i32>::new(Argon2Settings::OWASP.memory_kib as i32);
pub static ARGON2_ITERATIONS: GucSetting<i32> =
    GucSetting::<i32>::new(Argon2Settings::OWASP.iterations as i32);
pub static ARGON2_PARALLELISM: GucSetting<i32> =
    GucSetting::<i32>::new(Argon2Settings::OWASP.parallelism as i32);
/// Largest Argon2 memory cost (KiB) of a hash given to auth_verify.
pub static MAX_VERIFY_MEMORY_KIB: GucSetting<i32> = GucSetting::<i32>::new(65536);
/// Argon2 memory (KiB) that all password verifications running at once may use, server-wide.
pub static VERIFY_MEMORY_BUDGET_KIB: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);
pub static CHECK_ROLE_PASSWORDS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static MASTER_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static MASTER_KEY_COMMAND: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static PREVIOUS_MASTER_KEY_FILE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static PREVIOUS_MASTER_KEY_COMMAND: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);

pub fn register() {
    // Superuser-only (PGC_SUSET): a session must not be able to lower the cost of new hashes or
    // make auth_needs_rehash() accept weaker ones. PostgreSQL refuses out-of-range values with an
    // error that names the valid range.
    GucRegistry::define_int_guc(
        c"pgauth.audit_seal_interval",
        c"How often (ms) a committing transaction that wrote audit records tries to seal the audit chain.",
        c"0 seals at every such commit. Sealing never waits: if another transaction is sealing, this one skips.",
        &AUDIT_SEAL_INTERVAL_MS,
        0,
        3_600_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pgauth.argon2_memory_kib",
        c"Argon2id memory cost in KiB for new password hashes.",
        c"OWASP recommends 19456 KiB (19 MiB) with 2 iterations and 1 lane.",
        &ARGON2_MEMORY_KIB,
        ARGON2_MIN_MEMORY_KIB as i32,
        ARGON2_MAX_MEMORY_KIB as i32,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"pgauth.argon2_iterations",
        c"Argon2id iterations (time cost) for new password hashes.",
        c"",
        &ARGON2_ITERATIONS,
        ARGON2_MIN_ITERATIONS as i32,
        ARGON2_MAX_ITERATIONS as i32,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pgauth.argon2_parallelism",
        c"Argon2id lanes for new password hashes (computed on one core).",
        c"",
        &ARGON2_PARALLELISM,
        ARGON2_MIN_PARALLELISM as i32,
        ARGON2_MAX_PARALLELISM as i32,
        GucContext::Suset,
        GucFlags::default(),
    );
    // Superuser-only: any role may call auth_verify with a hash of its own making, and each
    // verification allocates the memory the hash asks for.
    GucRegistry::define_int_guc(
        c"pgauth.max_verify_memory_kib",
        c"Largest Argon2 memory cost (KiB) auth_verify accepts in a hash; larger ones are refused (22023).",
        c"Keep it near pgauth.argon2_memory_kib: every concurrent verification allocates this much.",
        &MAX_VERIFY_MEMORY_KIB,
        ARGON2_MIN_MEMORY_KIB as i32,
        ARGON2_MAX_MEMORY_KIB as i32,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"pgauth.verify_memory_budget",
        c"Argon2 memory that all password verifications running at once may use, server-wide.",
        c"A verification waits (cancellable) while the budget is used up; needs shared_preload_libraries.",
        &VERIFY_MEMORY_BUDGET_KIB,
        ARGON2_MIN_MEMORY_KIB as i32,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_bool_guc(
        c"pgauth.check_role_passwords",
        c"Check cleartext passwords of CREATE/ALTER ROLE against the default password policy.",
        c"Takes effect only when pgauth is in shared_preload_libraries.",
        &CHECK_ROLE_PASSWORDS,
        GucContext::Suset,
        GucFlags::default(),
    );
    // Where the master key comes from. Superuser-only to set and to read (GUC_SUPERUSER_ONLY):
    // the path or command is not the key, but it tells where the key is.
    for (name, short, setting) in [
        (c"pgauth.master_key_file", c"File holding the 32-byte master key (hex or base64), mode 600, owned by the server's user.", &MASTER_KEY_FILE),
        (c"pgauth.master_key_command", c"Command whose standard output is the master key; takes precedence over master_key_file.", &MASTER_KEY_COMMAND),
        (c"pgauth.previous_master_key_file", c"The master key before a change, for auth_rewrap_keys().", &PREVIOUS_MASTER_KEY_FILE),
        (c"pgauth.previous_master_key_command", c"Command printing the master key before a change, for auth_rewrap_keys().", &PREVIOUS_MASTER_KEY_COMMAND),
    ] {
        GucRegistry::define_string_guc(
            name,
            short,
            c"",
            setting,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY,
        );
    }
}

/// Reserve the `pgauth` prefix: a misspelled `pgauth.*` name becomes an error. PostgreSQL deletes
/// every placeholder under the prefix that is not defined at this moment, with the value it
/// carried (from `ALTER DATABASE/ROLE … SET`, postgresql.conf or a SET before the library was
/// loaded), so this must run after every capability has defined its settings: `_PG_init` calls
/// it last.
pub fn reserve_prefix() {
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"pgauth".as_ptr()) };
}

/// The Argon2 settings in force for this session.
pub fn argon2_settings() -> Argon2Settings {
    Argon2Settings {
        memory_kib: ARGON2_MEMORY_KIB.get() as u32,
        iterations: ARGON2_ITERATIONS.get() as u32,
        parallelism: ARGON2_PARALLELISM.get() as u32,
    }
}
