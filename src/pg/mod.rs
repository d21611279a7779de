//! The shared SQL-side layer: what every capability's `sql.rs` needs from PostgreSQL, in one
//! place, so that no capability reaches into another's `sql.rs`.
//!
//! - [`spi`]: read-only SPI reads (one value, one typed row) and the SPI error mapping;
//! - [`roles`]: who is calling, the owner switch [`roles::as_owner`], and the one privilege check
//!   [`roles::require`] (`Admin | Service | AdminOrService | SelfOr(user) | Superuser`);
//! - [`event`]: the one writer of security events (a `serde_json::Value`), and failure events
//!   kept after a rollback;
//! - [`binding`]: the pgauth user bound to the transaction (user, aal, session), with a change
//!   counter that caches key on;
//! - [`shmem`]: the shared-memory regions reserved at server start;
//! - [`jsonb`]: `jsonb` arguments that raise 22023, not XX000, when serde_json cannot read them;
//! - [`regclass`]: `regclass` arguments that raise 42P01, not XX000, for an OID of no relation;
//! - [`compat`]: what differs between PostgreSQL majors (15 to 18).
//!
//! The rule: a capability calls another only through that capability's public Rust API (its
//! pure core or its `api.rs`), never through its `sql.rs`; what several need lives here.

pub mod binding;
pub mod compat;
pub mod event;
pub mod jsonb;
pub mod regclass;
pub mod roles;
pub(crate) mod shmem;
pub mod spi;

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

use pgrx::pg_sys;

/// Transaction, command within it, and statement start. Caches look for changes whenever this
/// moves: never per row, but at every statement and after every modifying command.
pub fn current_position() -> (u32, u32, i64) {
    // SAFETY: MyProc is set for every backend and parallel worker before any SQL runs.
    unsafe {
        (
            compat::local_transaction_id(),
            pg_sys::GetCurrentCommandId(false),
            pg_sys::GetCurrentStatementStartTimestamp(),
        )
    }
}

/// Refuse (25006) in a read-only transaction, which every transaction on a hot standby is.
/// pgauth writes some of its rows past the executor's own check (the audit records) or through
/// SPI calls that assign a transaction id first (an internal error on a standby): what writes
/// asks here before it starts.
pub fn require_writable() -> crate::error::AuthResult<()> {
    // SAFETY: a backend-local flag, set at every transaction start.
    if unsafe { pg_sys::XactReadOnly } {
        return Err(crate::error::AuthError::ReadOnly);
    }
    Ok(())
}

/// An advisory lock tag that SQL cannot build: `pg_advisory_lock` uses field4 1 (one bigint)
/// or 2 (two ints); pgauth's locks use 0x7067 ("pg"), so no role can take them from SQL and
/// stall pgauth (the audit's writes and sealer, key creation).
pub fn lock_tag(key: i64) -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        // SAFETY: MyDatabaseId is set at backend start and only read here.
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: (key >> 32) as u32,
        locktag_field3: key as u32,
        locktag_field4: 0x7067,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    }
}

/// What [`serialize_on`] serializes: one lock space per kind of named object.
#[derive(Clone, Copy)]
pub enum LockSpace {
    /// `pgauth.keys` by key name: creation (also on first use) and rotation.
    EncryptionKey = 1,
    /// `pgauth.signing_keys` by key name: creation (also on first use) and rotation.
    SigningKey = 2,
}

/// Wait for, then hold until the end of the transaction, the lock of `name` in `space`: the
/// check-then-insert of a named object's versions runs one transaction at a time, so two first
/// uses, rotations or creations at once do not both insert (which failed with 23505 on the
/// one-active-version index: found by the soak). A later statement of the transaction sees what
/// the other committed (READ COMMITTED). Only those administrative paths and the one first use
/// of a key take it: no sign-in or encryption waits on it once the key exists. The tag is a
/// [`lock_tag`], which no `pg_advisory_*` call from SQL can build.
pub fn serialize_on(space: LockSpace, name: &str) {
    // FNV-1a: the same in every backend (unlike std's seeded hasher). The space fills the high
    // half of the key, so no name's lock is one of the audit's ("pgau…" keys).
    let hash = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let tag = lock_tag((space as i64) << 32 | i64::from(hash));
    // SAFETY: a valid advisory tag; transaction-level (sessionLock false), released at the
    // transaction's end; waits (dontWait false), so it always acquires or raises.
    unsafe {
        pg_sys::LockAcquire(
            &tag,
            pg_sys::ExclusiveLock as pg_sys::LOCKMODE,
            false,
            false,
        );
    }
}
