//! The SQL functions of the audit log that pgrx declares (`#[pg_extern]`), as thin wrappers
//! over the phase that does the work, and the backend's callbacks. The C functions that
//! sql/audit.sql declares by hand live with their phase: `capture` (`pgauth.audit_capture`),
//! `events` (`pgauth.record_event`, `pgauth.audit_direct_write`, `pgauth.audit_direct_change`),
//! `record` (`pgauth.audit_record_digest`, `pgauth.audit_db_user`,
//! `pgauth.audit_refuse_change`) and `read` (`pgauth.audit_record_events`).
//!
//! Work on pgauth's objects runs as the owner of schema pgauth (`as_owner`, or
//! `as_owner_unpinned` for C-level work that runs no SQL), while the functions themselves run
//! as the caller.

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::raw::{register_syscache_callback, register_xact_callback};
use super::{admin, capture, seal, verify, Head};
use crate::error::{AuthError, OrRaise};
use crate::pg::regclass::RegclassArg;
use crate::pg::roles::{as_owner, require_or, Who};

/// From `_PG_init`: seal at commit, and forget stored shapes when a schema or type changes
/// (they carry schema and type names).
pub(crate) fn install_xact_callback() {
    register_xact_callback(seal::audit_xact_callback);
    for cache in [
        pg_sys::SysCacheIdentifier::NAMESPACEOID,
        pg_sys::SysCacheIdentifier::TYPEOID,
    ] {
        register_syscache_callback(cache, capture::forget_shapes);
    }
}

/// Chain every audit record of the transactions that have finished (the sealer also runs at
/// commit, at most every `pgauth.audit_seal_interval`); waits for a sealer at work. Returns the
/// number of transactions chained. pgauth_admin.
#[pg_extern(volatile, parallel_unsafe)]
fn auth_audit_seal() -> i64 {
    require_or(
        Who::Admin,
        "auth_audit_seal",
        AuthError::AuditPermissionDenied,
    )
    .or_raise();
    seal::seal(true).or_raise().0
}

/// The latest chain position and its digest, after sealing what has finished: keep them
/// outside the database, and pass them to auth_audit_verify() later to detect a removed tail.
#[pg_extern(volatile, parallel_unsafe)]
fn auth_audit_head() -> TableIterator<'static, (name!(id, i64), name!(digest, Vec<u8>))> {
    require_or(
        Who::Admin,
        "auth_audit_head",
        AuthError::AuditPermissionDenied,
    )
    .or_raise();
    TableIterator::new(verify::head().or_raise())
}

/// Recompute every row digest, every transaction digest and the chain; report the first bad
/// audit id and why. `from_id` verifies only from that id on (the transactions it falls in are
/// checked whole); a stored head (`auth_audit_head()` kept elsewhere) also detects a cut tail.
#[pg_extern(stable, parallel_restricted)]
fn auth_audit_verify(
    from_id: default!(Option<i64>, "NULL"),
    head_id: default!(Option<i64>, "NULL"),
    head_digest: default!(Option<&[u8]>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(ok, bool),
        name!(checked, i64),
        name!(first_bad_id, Option<i64>),
        name!(reason, Option<String>),
    ),
> {
    require_or(
        Who::Admin,
        "auth_audit_verify",
        AuthError::AuditPermissionDenied,
    )
    .or_raise();
    let head = match (head_id, head_digest) {
        (Some(position), Some(digest)) => Some(Head {
            position,
            digest: digest.to_vec(),
        }),
        (None, None) => None,
        _ => AuthError::InvalidRequest(
            "pass both head_id and head_digest (from auth_audit_head()), or neither".into(),
        )
        .raise(),
    };
    let v = as_owner(|| verify::verify(from_id, head)).or_raise();
    TableIterator::once((v.ok, v.checked, v.first_bad_id, v.reason))
}

/// Audit INSERT, UPDATE, DELETE and TRUNCATE on `tbl` into pgauth.audit_log. The columns in
/// `exclude_columns` are never stored (password hashes, ciphertexts).
#[pg_extern(volatile, parallel_unsafe)]
fn auth_audit_enable(tbl: RegclassArg, exclude_columns: default!(Vec<Option<String>>, "'{}'")) {
    admin::enable(tbl.0, exclude_columns)
}

/// Stop auditing `tbl`. Its audit rows stay.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_audit_disable(tbl: RegclassArg) {
    admin::disable(tbl.0)
}

/// Remove the chain entries up to `through_position` and all their audit records, after checking
/// them, leaving a checkpoint (position and chain digest) from which the rest stays verifiable.
/// Superuser only. Export the rows first (README, "Retention").
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_audit_purge(through_position: i64) -> i64 {
    admin::purge(through_position)
}
