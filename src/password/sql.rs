//! SQL functions for passwords: argument conversion, settings, SPI and error mapping only.

use pgrx::prelude::*;
use zeroize::Zeroizing;

use super::policy::{problems, Context, Policy};
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::guc::argon2_settings;

/// Argon2id PHC string of `password` with the `pgauth.argon2_*` settings and a fresh salt.
#[pg_extern(volatile, strict, parallel_safe)]
fn auth_hash_password(password: &str) -> String {
    super::hash_password(password.as_bytes(), &argon2_settings()).or_raise()
}

/// Does `password` match `hash`? Any supported scheme; malformed or hostile hashes raise 22023.
/// Stable, not immutable: `pgauth.max_verify_memory_kib` decides which hashes are refused.
#[pg_extern(stable, strict, parallel_safe)]
fn auth_verify(password: &str, hash: &str) -> bool {
    let bound = crate::guc::MAX_VERIFY_MEMORY_KIB.get().max(0) as u32;
    verify_interruptibly(password, hash, bound).or_raise()
}

thread_local! {
    /// The verification helper this backend started last, until it is known to have finished.
    static HELPER: std::cell::RefCell<Option<std::thread::JoinHandle<()>>> =
        const { std::cell::RefCell::new(None) };
}

/// A backend that exits while its helper still hashes waits for it, so the helper's share of
/// the memory budget is given back (a killed thread would never give it back).
fn ensure_helper_joined_at_exit() {
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

fn wait_for_previous_helper() {
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

/// Verify on a helper thread while this backend keeps answering query cancel and
/// `statement_timeout` (every 50 ms): a long hash ends the statement at once instead of when
/// the hash is done. The helper runs pure Rust only (no palloc, no elog, no backend state) and,
/// after a cancel, finishes its hash and exits on its own. Argon2 hashes over
/// `pgauth.max_verify_memory_kib` are refused before any work.
pub(crate) fn verify_interruptibly(
    password: &str,
    hash: &str,
    max_memory: u32,
) -> AuthResult<bool> {
    use std::sync::mpsc::{channel, RecvTimeoutError};
    // One helper per backend at most: a helper left running by a cancelled call is waited for
    // (still answering cancel) before the next starts, so a caller who cancels in a loop cannot
    // pile up threads and their memory.
    wait_for_previous_helper();
    // Malformed and hostile hashes are refused here, before a thread is started for them.
    super::check_password_length(password.as_bytes())?;
    let memory_kib = match super::bounded(super::StoredHash::parse(hash)?, max_memory)? {
        super::StoredHash::Argon2(h) => u64::from(h.memory_kib),
        _ => 0,
    };
    // The server-wide budget: wait (answering cancel) while other verifications hold it.
    let budget = crate::guc::VERIFY_MEMORY_BUDGET_KIB.get().max(0) as u64;
    let reservation = loop {
        if let Some(r) = crate::login::shared::reserve_memory(memory_kib, budget) {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        pgrx::check_for_interrupts!();
    };
    ensure_helper_joined_at_exit();
    let password = Zeroizing::new(password.as_bytes().to_vec());
    let hash = hash.to_string();
    let (tx, rx) = channel();
    // The helper must never run PostgreSQL's signal handlers: it starts with every signal
    // blocked (a new thread inherits the mask), and this thread's mask is restored at once.
    let spawned = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let spawned = std::thread::Builder::new()
            .name("pgauth verify".into())
            .spawn(move || {
                let result = super::verify_bounded(&password, &hash, max_memory);
                drop(reservation);
                let _ = tx.send(result);
            });
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        spawned
    };
    let handle = spawned.map_err(|e| AuthError::Internal(format!("cannot start a thread: {e}")))?;
    HELPER.with(|h| *h.borrow_mut() = Some(handle));
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(result) => {
                HELPER.with(|h| h.borrow_mut().take().map(|h| h.join()));
                return result;
            }
            Err(RecvTimeoutError::Timeout) => {
                pgrx::check_for_interrupts!();
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(AuthError::Internal("password verification failed".into()))
            }
        }
    }
}

/// True unless `hash` is Argon2id with at least the current `pgauth.argon2_*` settings.
#[pg_extern(stable, strict, parallel_safe)]
fn auth_needs_rehash(hash: &str) -> bool {
    super::needs_rehash(hash, &argon2_settings()).or_raise()
}

/// Read one policy row. Runs inside the SECURITY DEFINER functions below, so callers need no
/// privilege on pgauth's tables.
pub(crate) fn load_policy(name: &str) -> AuthResult<(Policy, String)> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT min_length, require_upper, require_lower, require_digit, require_special,
                    min_strength, history, max_age_days, pg_catalog.current_database()::text
               FROM pgauth.password_policies WHERE name = $1",
            Some(1),
            &[name.into()],
        )?;
        if rows.is_empty() {
            return Ok(Err(AuthError::UnknownPolicy(name.to_string())));
        }
        let row = rows.first();
        let int = |i: usize| -> Result<u32, pgrx::spi::Error> {
            Ok(row.get::<i32>(i)?.unwrap_or(0).max(0) as u32)
        };
        let flag = |i: usize| -> Result<bool, pgrx::spi::Error> {
            Ok(row.get::<bool>(i)?.unwrap_or(false))
        };
        let policy = Policy {
            name: name.to_string(),
            min_length: int(1)?,
            require_upper: flag(2)?,
            require_lower: flag(3)?,
            require_digit: flag(4)?,
            require_special: flag(5)?,
            min_strength: int(6)?.min(4) as u8,
            history: int(7)?,
            max_age_days: int(8)?,
        };
        let database = row.get::<String>(9)?.unwrap_or_default();
        Ok(Ok((policy, database)))
    })
    .unwrap_or_else(|e: pgrx::spi::Error| {
        Err(AuthError::Internal(format!(
            "reading the policy failed: {e}"
        )))
    })
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
