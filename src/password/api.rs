//! The password capability's Rust API for other capabilities (inside PostgreSQL): verifying
//! a stored hash interruptibly within the memory limits, and loading a password policy.

use super::policy::Policy;
use super::sql::ensure_helper_joined_at_exit;
use super::sql::{wait_for_previous_helper, HELPER};
use crate::error::{AuthError, AuthResult};

use crate::pg::spi::read_row;
use zeroize::Zeroizing;

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
    let budget = crate::settings::password().verify_memory_budget_kib();
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

/// Read one policy row. Runs inside the SECURITY DEFINER functions below, so callers need no
/// privilege on pgauth's tables.
pub(crate) fn load_policy(name: &str) -> AuthResult<(Policy, String)> {
    read_row(
        "SELECT min_length, require_upper, require_lower, require_digit, require_special,
                min_strength, history, max_age_days, pg_catalog.current_database()::text
           FROM pgauth.password_policies WHERE name = $1",
        &[name.into()],
        |row| {
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
            Ok((policy, row.get::<String>(9)?.unwrap_or_default()))
        },
    )
    .map_err(|e| AuthError::Internal(format!("reading the policy failed: {e}")))?
    .ok_or_else(|| AuthError::UnknownPolicy(name.to_string()))
}
