//! The one writer of security events. Every capability reports through here, with the details
//! as one `serde_json::Value` (never JSON built as text), to the one internal event function
//! of the audit log (`pgauth.record_event`).

use serde_json::Value;

use super::roles::as_owner;
use super::spi::spi_err;
use crate::error::AuthResult;

/// Record `event` about `subject` (a username, key name, table…) with `details`.
pub fn record(event: &str, subject: &str, details: Value) -> AuthResult<()> {
    super::require_writable()?;
    let details = details.to_string();
    as_owner(|| {
        crate::pg::spi::run_with_args(
            "SELECT pgauth.record_event($1, $2, $3::jsonb)",
            &[event.into(), subject.into(), details.as_str().into()],
        )
    })
    .map_err(spi_err)
}

/// As [`record`], for the events of failed attempts (wrong passwords, codes, keys, lockouts):
/// if the caller's transaction or savepoint is rolled back afterwards, the event is written
/// again by the event keeper (`audit::kept`), so no rollback removes it.
///
/// Remembered first: when writing it fails (a read-only transaction), the abort that follows
/// hands it to the keeper. A hot standby writes nothing, keeper included: refused there first.
pub fn record_failure(event: &str, subject: &str, details: Value) -> AuthResult<()> {
    // SAFETY: reads shared recovery state; callable in any backend.
    if unsafe { pgrx::pg_sys::RecoveryInProgress() } {
        return Err(crate::error::AuthError::ReadOnly);
    }
    crate::audit::kept::remember(event, subject, &details);
    record(event, subject, details)
}
