//! The raw PostgreSQL calls that the audit phases share besides SPI (`spi.rs`), each behind a
//! function whose contract it checks itself where it can, so that `seal`, `verify` and `admin`
//! need no `unsafe`:
//!
//! - pgauth's advisory locks, in a tag SQL cannot build (`pgauth_lock_tag`, `lock_chain`);
//! - an internal subtransaction that turns any error into `Err(message)` (`in_subtransaction`);
//! - transaction ids, roles, the clock, callbacks, relation lookup, identifier quoting;
//! - the helpers of the C functions SQL calls (`finfo_v1!`, `arg`, `varlena_bytes`,
//!   `inet_text`, `jsonb_text`, `trigger_data`, `cstr_owned`), which stay `unsafe fn`: their
//!   contract is about the call PostgreSQL made.
//!
//! The files that work on tuples themselves (`capture`, `events`, `record`, `read`, `decode`)
//! keep their own `unsafe` next to the tuple they work on.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::AuthError;

/// Key of the transaction-level lock held by the sealer (per database): "pgauth" in ASCII
/// followed by 0x0001, in a tag SQL cannot build (`pgauth_lock_tag`).
pub const CHAIN_LOCK_KEY: i64 = 0x7067_6175_7468_0001;

/// Key of the lock that makes a range of event ids contiguous: "pgauth" then 0x0002.
pub(super) const ID_LOCK_KEY: i64 = 0x7067_6175_7468_0002;

// ---------------------------------------------------------------------------------------------
// Locks

/// pgauth's advisory lock tags (`crate::pg::lock_tag`), under the name the audit phases use.
pub(super) use crate::pg::lock_tag as pgauth_lock_tag;

/// Take the sealer's chain lock until the end of the transaction. `wait`: wait for it;
/// otherwise return false at once when another backend holds it.
pub(super) fn lock_chain(wait: bool) -> bool {
    let tag = pgauth_lock_tag(CHAIN_LOCK_KEY);
    // SAFETY: a valid advisory tag; transaction-level (sessionLock false), released by the
    // transaction's end.
    let got = unsafe {
        pg_sys::LockAcquire(
            &tag,
            pg_sys::ExclusiveLock as pg_sys::LOCKMODE,
            false,
            !wait,
        )
    };
    got != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL
}

// ---------------------------------------------------------------------------------------------
// Subtransactions

/// Run `f` in an internal subtransaction: released when `f` returns Ok, rolled back when it
/// returns Err or raises an ERROR, which becomes `Err(message)`. The caller's memory context
/// and resource owner are restored either way.
pub(super) fn in_subtransaction<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    // SAFETY: the subtransaction begun here is ended here on every path (an ERROR inside `f`
    // is caught by PgTryBuilder), and the saved context and owner outlive it.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let result = PgTryBuilder::new(std::panic::AssertUnwindSafe(f))
            .catch_others(|e| {
                Err(match e {
                    pgrx::pg_sys::panic::CaughtError::PostgresError(r)
                    | pgrx::pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_string(),
                    _ => "unexpected error".to_string(),
                })
            })
            .execute();
        match result {
            Ok(_) => pg_sys::ReleaseCurrentSubTransaction(),
            Err(_) => pg_sys::RollbackAndReleaseCurrentSubTransaction(),
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
        result
    }
}

// ---------------------------------------------------------------------------------------------
// Transaction ids, roles, the clock, callbacks

/// The top transaction's full id, if it has one.
pub(super) fn top_txid() -> Option<u64> {
    // SAFETY: reads the current transaction's state; assigns nothing.
    let full = unsafe { pg_sys::GetTopFullTransactionIdIfAny() };
    (full.value != 0).then_some(full.value)
}

/// A 32-bit transaction id that is at most 2^31 older than `next`, as a full (xid8) id.
pub(super) fn full_xid(next: u64, xid: u32) -> u64 {
    let epoch = next >> 32;
    let epoch = if xid > next as u32 {
        epoch.saturating_sub(1)
    } else {
        epoch
    };
    (epoch << 32) | u64::from(xid)
}

/// The next transaction id to be assigned (xid8): every existing transaction is below it.
pub(super) fn next_full_xid() -> u64 {
    // SAFETY: reads shared state under its own lock.
    unsafe { pg_sys::ReadNextFullTransactionId().value }
}

/// Whether this server is a standby (or still replaying WAL).
pub(super) fn recovery_in_progress() -> bool {
    // SAFETY: reads shared state.
    unsafe { pg_sys::RecoveryInProgress() }
}

/// Now, in µs since 2000-01-01.
pub(super) fn now() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// Whether the current transaction is SERIALIZABLE.
pub(super) fn serializable() -> bool {
    // SAFETY: XactIsoLevel is the backend's own, read only.
    unsafe { pg_sys::XactIsoLevel == pg_sys::XACT_SERIALIZABLE as i32 }
}

/// Call `callback` at every transaction event of this backend.
pub(super) fn register_xact_callback(
    callback: unsafe extern "C-unwind" fn(pg_sys::XactEvent::Type, *mut std::ffi::c_void),
) {
    // SAFETY: the callback is a static function that ignores its NULL argument.
    unsafe { pg_sys::RegisterXactCallback(Some(callback), std::ptr::null_mut()) }
}

/// Call `callback` whenever an entry of the system cache `cache` is invalidated.
pub(super) fn register_syscache_callback(
    cache: pg_sys::SysCacheIdentifier::Type,
    callback: unsafe extern "C-unwind" fn(pg_sys::Datum, std::ffi::c_int, u32),
) {
    // SAFETY: a valid cache id and a static function that ignores its argument.
    unsafe {
        pg_sys::CacheRegisterSyscacheCallback(cache as i32, Some(callback), pg_sys::Datum::from(0))
    }
}

// ---------------------------------------------------------------------------------------------
// Names

/// An owned copy of a C string (empty for NULL).
///
/// # Safety
/// `p` is NULL or a NUL-terminated string.
pub(super) unsafe fn cstr_owned(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: non-NULL and NUL-terminated (the caller's contract).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// A relation's schema-qualified, quoted name (`schema.table`), as audit records name tables.
///
/// # Safety
/// `rel` is an open relation, in a transaction (catalog lookup of its schema).
pub(super) unsafe fn qualified_name(rel: pg_sys::Relation) -> String {
    format!(
        "{}.{}",
        quote_ident(&cstr_owned(pg_sys::get_namespace_name(
            (*(*rel).rd_rel).relnamespace
        ))),
        quote_ident(&cstr_owned((*(*rel).rd_rel).relname.data.as_ptr()))
    )
}

pub(super) fn quote_ident(name: &str) -> String {
    match CString::new(name) {
        // SAFETY: quote_identifier reads a NUL-terminated string and returns one.
        Ok(c) => unsafe { cstr_owned(pg_sys::quote_identifier(c.as_ptr())) },
        Err(_) => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

pub(super) fn quote_literal(value: &str) -> String {
    // standard_conforming_strings is on in every supported PostgreSQL unless turned off; E''
    // quoting is correct either way.
    let mut out = String::from("E'");
    for ch in value.chars() {
        match ch {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The OID of the relation `pgauth.<name>`; an ERROR when it is missing.
pub(super) fn pgauth_relid(name: &str) -> pg_sys::Oid {
    let c = CString::new(name).unwrap_or_default();
    // SAFETY: catalog lookups with NUL-terminated names; missing_ok false raises an ERROR for
    // a missing schema.
    let oid = unsafe {
        let ns = pg_sys::get_namespace_oid(c"pgauth".as_ptr(), false);
        pg_sys::get_relname_relid(c.as_ptr(), ns)
    };
    if oid == pg_sys::Oid::INVALID {
        AuthError::Internal(format!("pgauth.{name} is missing")).raise();
    }
    oid
}

// ---------------------------------------------------------------------------------------------
// The C functions SQL calls (declared by hand in sql/audit.sql)

/// The version-1 calling convention record of a C function.
macro_rules! finfo_v1 {
    ($finfo:ident) => {
        #[no_mangle]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pgrx::pg_sys::Pg_finfo_record {
            const V1: pgrx::pg_sys::Pg_finfo_record =
                pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}
pub(super) use finfo_v1;

/// Argument `n`, or None when it is NULL.
///
/// # Safety
/// `fcinfo` is the call's, with at least `n + 1` arguments.
pub(super) unsafe fn arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Option<pg_sys::Datum> {
    // SAFETY: the caller's contract.
    unsafe {
        (!pgrx::fcinfo::pg_arg_is_null(fcinfo, n))
            .then(|| pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, n))
    }
}

/// The bytes of a text or bytea datum (detoasted in the current memory context).
///
/// # Safety
/// `d` is a non-NULL varlena datum.
pub(super) unsafe fn varlena_bytes<'a>(d: pg_sys::Datum) -> &'a [u8] {
    // SAFETY: the caller's contract; the detoasted copy lives in the current memory context.
    unsafe {
        let v = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
        pgrx::varlena::varlena_to_byte_slice(v)
    }
}

/// An inet's text form, from its output function.
///
/// # Safety
/// `d` is a non-NULL inet datum.
pub(super) unsafe fn inet_text<'a>(d: pg_sys::Datum) -> &'a [u8] {
    // SAFETY: the caller's contract; inet_out returns a palloc'd C string.
    unsafe {
        match pgrx::fcinfo::direct_function_call_as_datum(pg_sys::inet_out, &[Some(d)]) {
            Some(out) => CStr::from_ptr(out.cast_mut_ptr::<std::ffi::c_char>()).to_bytes(),
            None => b"",
        }
    }
}

/// jsonb's text form, as `value::text` gives it.
///
/// # Safety
/// `d` is a non-NULL jsonb datum.
pub(super) unsafe fn jsonb_text<'a>(d: pg_sys::Datum) -> &'a [u8] {
    // SAFETY: the caller's contract; JsonbToCString returns a palloc'd C string.
    unsafe {
        let jb = pg_sys::pg_detoast_datum(d.cast_mut_ptr()).cast::<pg_sys::Jsonb>();
        let len = pgrx::varlena::varsize_any(jb.cast()) as i32;
        let out = pg_sys::JsonbToCString(std::ptr::null_mut(), &mut (*jb).root, len);
        CStr::from_ptr(out).to_bytes()
    }
}

/// The trigger data of a call; an ERROR when the function was not called as a trigger.
///
/// # Safety
/// `fcinfo` is the call's.
pub(super) unsafe fn trigger_data(fcinfo: pg_sys::FunctionCallInfo) -> *mut pg_sys::TriggerData {
    // SAFETY: the caller's contract; the context is checked to be TriggerData before the cast.
    unsafe {
        let ctx = (*fcinfo).context;
        if ctx.is_null() || (*ctx).type_ != pg_sys::NodeTag::T_TriggerData {
            AuthError::InvalidRequest("this function can only be called as a trigger".into())
                .raise();
        }
        ctx.cast()
    }
}
