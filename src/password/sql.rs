//! SQL functions for passwords: argument conversion, settings, SPI and error mapping only.

use pgrx::prelude::*;
use zeroize::Zeroizing;

use super::api::load_policy;
use super::api::verify_interruptibly;
use super::policy::{problems, Context};
use crate::error::{AuthError, OrRaise};

/// Argon2id PHC string of `password` with the `pgauth.argon2_*` settings and a fresh salt.
#[pg_extern(volatile, strict, parallel_safe)]
fn auth_hash_password(password: &str) -> String {
    super::hash_password(password.as_bytes(), &crate::settings::password().argon2()).or_raise()
}

/// Does `password` match `hash`? Any supported scheme; malformed or hostile hashes raise 22023.
/// Stable, not immutable: `pgauth.max_verify_memory_kib` decides which hashes are refused.
#[pg_extern(stable, strict, parallel_safe)]
fn auth_verify(password: &str, hash: &str) -> bool {
    let bound = crate::settings::password().max_verify_memory_kib();
    verify_interruptibly(password, hash, bound).or_raise()
}

thread_local! {
    /// The verification helper this backend started last, until it is known to have finished.
pub(super)     static HELPER: std::cell::RefCell<Option<std::thread::JoinHandle<()>>> =
        const { std::cell::RefCell::new(None) };
}

/// A backend that exits while its helper still hashes waits for it, so the helper's share of
/// the memory budget is given back (a killed thread would never give it back).
pub(super) fn ensure_helper_joined_at_exit() {
    thread_local! {
        static REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    #[pg_guard]
    unsafe extern "C-unwind" fn join_helper(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
        HELPER.with(|h| {
            if let Ok(mut h) = h.try_borrow_mut() {
                h.take().map(|t| t.join());
            }
        });
    }
    if !REGISTERED.with(|r| r.replace(true)) {
        unsafe { pg_sys::before_shmem_exit(Some(join_helper), pg_sys::Datum::from(0)) };
    }
}

pub(super) fn wait_for_previous_helper() {
    loop {
        let running = HELPER.with(|h| {
            let mut h = h.borrow_mut();
            if h.as_ref().is_some_and(|t| t.is_finished()) {
                h.take().map(|t| t.join());
            }
            h.is_some()
        });
        if !running {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        pgrx::check_for_interrupts!();
    }
}

/// True unless `hash` is Argon2id with at least the current `pgauth.argon2_*` settings.
#[pg_extern(stable, strict, parallel_safe)]
fn auth_needs_rehash(hash: &str) -> bool {
    super::needs_rehash(hash, &crate::settings::password().argon2()).or_raise()
}

fn policy_problems(password: &str, username: Option<&str>, policy: &str) -> (String, Vec<String>) {
    let password = Zeroizing::new(password.to_string());
    let (policy, database) = load_policy(policy).or_raise();
    let context = Context {
        username,
        database: Some(database.as_str()),
    };
    let found = problems(&password, &context, &policy);
    (policy.name, found)
}

/// Every problem of `password` under `policy` (empty array = acceptable). NULL password → NULL.
#[pg_extern(stable, parallel_safe, security_definer)]
#[search_path(pg_catalog, pgauth, pg_temp)]
fn auth_password_problems(
    password: Option<&str>,
    username: default!(Option<&str>, "NULL"),
    policy: default!(Option<&str>, "'default'"),
) -> Option<Vec<String>> {
    let password = password?;
    Some(policy_problems(password, username, policy.unwrap_or("default")).1)
}

/// Raise 22023 listing every problem of `password` under `policy`; return nothing when acceptable.
#[pg_extern(stable, parallel_safe, security_definer)]
#[search_path(pg_catalog, pgauth, pg_temp)]
fn auth_check_password(
    password: Option<&str>,
    username: default!(Option<&str>, "NULL"),
    policy: default!(Option<&str>, "'default'"),
) {
    let Some(password) = password else { return };
    let (policy, found) = policy_problems(password, username, policy.unwrap_or("default"));
    if !found.is_empty() {
        AuthError::PolicyViolation {
            policy,
            problems: found,
        }
        .raise();
    }
}
