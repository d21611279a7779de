//! The attempt table (`attempts.rs`) in shared memory: reserved at server start when pgauth is
//! in `shared_preload_libraries`, one lightweight lock held only while a counter is read and
//! changed (never across a password check or a transaction). Without preload the table does
//! not exist and every function that needs it raises 55000: refused, never unprotected.

use std::mem::size_of;

use std::sync::atomic::{AtomicU64, Ordering};

use pgrx::prelude::*;
use pgrx::{pg_sys, Uuid};
use sha2::{Digest, Sha256};

use super::attempts::{AttemptTable, Begin, Key, Kind, Limits, Slot, WAYS};
use super::RATE_WINDOW_MICROS;
use crate::error::{AuthError, AuthResult};

/// 4096 sets of 8: 32,768 counters (about 2.3 MB).
const SETS: usize = 4096;
const SLOTS: usize = SETS * WAYS;
const NAME: &std::ffi::CStr = c"pgauth attempt counters";

#[repr(C)]
struct Shared {
    lock: *mut pg_sys::LWLock,
    seed: [u8; 16],
    /// Argon2 memory (KiB) held by password verifications running now, server-wide.
    verify_memory_kib: AtomicU64,
    slots: [Slot; SLOTS],
}

static mut SHARED: *mut Shared = std::ptr::null_mut();
/// The region of the table (see crate::pg::shmem).
pub(crate) const REGION: crate::pg::shmem::Region = crate::pg::shmem::Region {
    name: NAME,
    size: size_of::<Shared>(),
    attach,
};

unsafe fn attach(memory: *mut u8, lock: *mut pg_sys::LWLock, fresh: bool) {
    unsafe {
        let shared = memory.cast::<Shared>();
        if fresh {
            // All zeros is an empty table (Slot's layout promises it).
            (*shared).lock = lock;
            let mut seed = [0u8; 16];
            if getrandom::fill(&mut seed).is_err() {
                // Still a working table; only the set a key lands in becomes predictable.
                seed = (pg_sys::GetCurrentTimestamp() as u128).to_le_bytes();
            }
            (*shared).seed = seed;
        }
        SHARED = shared;
    }
}

/// Run `f` on the table under its lock. `what` names the caller for the 55000 error.
fn with_table<R>(what: &str, f: impl FnOnce(&mut AttemptTable<'_>) -> R) -> AuthResult<R> {
    let shared = unsafe { SHARED };
    if shared.is_null() {
        return Err(AuthError::NotPreloaded(what.to_string()));
    }
    // SAFETY: the struct was mapped at server start and lives as long as the server; the lock
    // serialises every access to it; `f` is plain Rust on the table.
    unsafe {
        crate::pg::shmem::exclusive((*shared).lock, || {
            let slots: &mut [Slot] = &mut (*shared).slots;
            let mut table = AttemptTable::new((*shared).seed, RATE_WINDOW_MICROS, slots);
            Ok(f(&mut table))
        })
    }
}

/// Verification memory taken from the server-wide budget; given back when dropped (on the
/// helper thread that did the work: a plain atomic, no PostgreSQL call).
pub(crate) struct MemoryReservation {
    kib: u64,
}

impl Drop for MemoryReservation {
    fn drop(&mut self) {
        let shared = unsafe { SHARED };
        if self.kib > 0 && !shared.is_null() {
            // SAFETY: the struct lives as long as the server; the field is an atomic.
            let used = unsafe { &(*shared).verify_memory_kib };
            let _ = used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(self.kib))
            });
        }
    }
}

/// Take `kib` from the budget of `budget_kib` KiB, or None while it is used up. A request larger
/// than the whole budget is granted only when nothing else is running. Without preload there is
/// no budget (always granted).
pub(crate) fn reserve_memory(kib: u64, budget_kib: u64) -> Option<MemoryReservation> {
    let shared = unsafe { SHARED };
    if kib == 0 || shared.is_null() {
        return Some(MemoryReservation { kib: 0 });
    }
    // SAFETY: as above.
    let used = unsafe { &(*shared).verify_memory_kib };
    used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        (v == 0 || v.saturating_add(kib) <= budget_kib).then(|| v.saturating_add(kib))
    })
    .ok()
    .map(|_| MemoryReservation { kib })
}

fn database() -> u32 {
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// The counter of a user.
pub(crate) fn user_key(kind: Kind, user: &Uuid) -> Key {
    let mut id = [0u8; 16];
    id.copy_from_slice(user.as_bytes());
    Key {
        database: database(),
        kind,
        id,
    }
}

/// The counter of a text key (a client address bucket, an API key prefix).
pub(crate) fn text_key(kind: Kind, text: &str) -> Key {
    let digest = Sha256::digest(text.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    Key {
        database: database(),
        kind,
        id,
    }
}

/// The clock of the counters: the wall clock, not the transaction's start (`now()`), which a
/// caller can hold back by keeping a transaction open, and which differs between the backends
/// that share a counter.
fn clock() -> i64 {
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// Refuse (55000) when the table is missing: for functions that must not run unprotected even
/// on paths that touch no counter (an unknown user, a user without TOTP).
pub(crate) fn require(what: &str) -> AuthResult<()> {
    with_table(what, |_| ())
}

/// Charge an attempt on a lockout counter; `Begin::Locked` refuses it.
pub(crate) fn begin(what: &str, key: &Key, limits: Limits) -> AuthResult<Begin> {
    with_table(what, |t| t.begin(key, clock(), limits))
}

/// The charged attempt failed: (failures, whether this one started a lockout).
pub(crate) fn failed(what: &str, key: &Key, limits: Limits) -> AuthResult<(u32, bool)> {
    with_table(what, |t| t.failed(key, clock(), limits))
}

/// The charged attempt succeeded.
pub(crate) fn succeeded(what: &str, key: &Key) -> AuthResult<()> {
    with_table(what, |t| t.succeeded(key, clock()))
}

/// Claim TOTP time step `step` for the user of `key` (once per step, steps only increase).
pub(crate) fn claim_step(what: &str, key: &Key, step: i64) -> AuthResult<bool> {
    with_table(what, |t| t.claim_step(key, clock(), step))
}

/// One attempt in a rate window; false when over the limit.
pub(crate) fn rate(what: &str, key: &Key, per_window: u32) -> AuthResult<bool> {
    with_table(what, |t| {
        t.rate(key, clock(), RATE_WINDOW_MICROS, per_window)
    })
}

/// Events of one kind written individually per minute in a database before only every
/// power-of-two occurrence is written (with its count).
pub const EVENTS_PER_MINUTE: u32 = 100;

/// Flood control for events an attacker can cause at will (refusals by the rate limit, failures
/// of unknown users, with a caller-chosen address): Some(n), the occurrence's number in this
/// minute, when it should be written; None when it is only counted. The first
/// [`EVENTS_PER_MINUTE`] of a minute are written, then the 128th, 256th, … so the log grows by
/// at most about a hundred and a logarithm per minute, and every written event says how many
/// occurred. Without the table (not preloaded) every event is written.
pub(crate) fn event_number(event: &str) -> Option<u32> {
    let key = text_key(Kind::Events, event);
    let n = with_table("audit", |t| t.count(&key, clock(), RATE_WINDOW_MICROS)).unwrap_or(1);
    (n <= EVENTS_PER_MINUTE || n.is_power_of_two()).then_some(n)
}

/// Forget every counter of a user (an administrator's unlock).
pub(crate) fn reset_user(what: &str, user: &Uuid) -> AuthResult<()> {
    with_table(what, |t| {
        for kind in [Kind::Password, Kind::SecondFactor, Kind::Passkey] {
            t.reset(&user_key(kind, user));
        }
    })
}

fn timestamp(micros: i64) -> Option<pgrx::datum::TimestampWithTimeZone> {
    (micros != 0)
        .then(|| pgrx::datum::TimestampWithTimeZone::try_from(micros).ok())
        .flatten()
}

/// The password and second-factor counters of this database's users, for `pgauth.login_state`.
/// Declared by hand in sql/login.sql, in schema pgauth (symbol `attempt_counters_wrapper`).
#[pg_extern(sql = false)]
#[allow(clippy::type_complexity)] // the row type is spelled out for pgrx's SQL generation
fn attempt_counters() -> TableIterator<
    'static,
    (
        name!(kind, String),
        name!(user_id, Uuid),
        name!(failed_count, i32),
        name!(locked_until, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(last_failure_at, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(last_success_at, Option<pgrx::datum::TimestampWithTimeZone>),
    ),
> {
    use crate::error::OrRaise;
    let db = database();
    let rows = with_table("pgauth.login_state", |t| {
        let mut rows = Vec::new();
        for (kind, name) in [
            (Kind::Password, "password"),
            (Kind::SecondFactor, "second_factor"),
            (Kind::Passkey, "passkey"),
        ] {
            for s in t.entries(db, kind) {
                rows.push((
                    name.to_string(),
                    Uuid::from_bytes(s.id),
                    s.failures.min(i32::MAX as u32) as i32,
                    s.locked_until,
                    s.last_failure,
                    s.last_success,
                ));
            }
        }
        rows
    })
    .or_raise();
    TableIterator::new(
        rows.into_iter()
            .map(|(k, u, f, l, lf, ls)| (k, u, f, timestamp(l), timestamp(lf), timestamp(ls))),
    )
}

/// End a user's temporary lockouts (password and second factor). Used by auth_unlock_user.
/// Declared by hand in sql/login.sql (symbol `attempt_counters_reset_wrapper`).
#[pg_extern(sql = false)]
fn attempt_counters_reset(user_id: Uuid) {
    use crate::error::OrRaise;
    reset_user("auth_unlock_user", &user_id).or_raise();
}
