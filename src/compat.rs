//! C symbols that an earlier version's SQL names but this version no longer implements.
//!
//! `CREATE FUNCTION … LANGUAGE c` looks its symbol up when it runs, so every symbol of every
//! released install script must stay in the library: a dump of a database still on an older
//! version is restored with that version's script (pg_upgrade does the same), and a database
//! whose `ALTER EXTENSION pgauth UPDATE` has not run yet still has the old functions. Each stub
//! refuses with 0A000 and says what to do. `tests/upgrade` checks that every symbol of
//! `sql/released/*.sql` is still exported.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// Refuse a call of a function of an earlier version.
fn removed(function: &str) -> ! {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        format!("{function} belongs to an earlier version of pgauth"),
        crate::error::ERROR_ORIGIN,
    )
    .set_hint("Run ALTER EXTENSION pgauth UPDATE in this database.")
    .report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

/// 0.1.0's `pgauth.audit_decode(text, bytea, bigint)`, which the audit log view of 0.1.0 called;
/// 0.2.0 reads records with `pgauth.audit_record_events`.
#[unsafe(no_mangle)]
#[doc(hidden)]
#[pg_guard]
pub unsafe extern "C-unwind" fn audit_decode_wrapper(
    _fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    removed("pgauth.audit_decode")
}

#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_audit_decode_wrapper() -> &'static pg_sys::Pg_finfo_record {
    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1_API
}
