//! Backend plumbing shared by the SQL layers: read-only SPI, running a read as the owner of
//! schema `pgauth`, who is calling, and where in the transaction we are (for cache freshness).

use std::ffi::CString;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::{AuthError, AuthResult};

/// A read-only query's first row, first column. pgrx's `Spi::get_one*` run read-write (and with
/// a row limit that skips statement triggers on DML), which a parallel worker may not do; every
/// read must also work inside a parallel query.
pub fn read_one<T: pgrx::FromDatum + pgrx::IntoDatum>(
    query: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Result<Option<T>, pgrx::spi::Error> {
    Spi::connect(|client| {
        let rows = client.select(query, Some(1), args)?;
        if rows.is_empty() {
            Ok(None)
        } else {
            rows.first().get::<T>(1)
        }
    })
}

pub fn spi_err(e: pgrx::spi::Error) -> AuthError {
    AuthError::Internal(format!("pgauth table access failed: {e}"))
}

/// Transaction, command within it, and statement start. Caches look for changes whenever this
/// moves: never per row, but at every statement and after every modifying command.
pub fn current_position() -> (u32, u32, i64) {
    // SAFETY: MyProc is set for every backend and parallel worker before any SQL runs.
    unsafe {
        (
            (*pg_sys::MyProc).lxid,
            pg_sys::GetCurrentCommandId(false),
            pg_sys::GetCurrentStatementStartTimestamp(),
        )
    }
}

/// The role the current function runs as for the caller (`current_user`).
pub fn caller() -> pg_sys::Oid {
    unsafe { pg_sys::GetUserId() }
}

pub fn role_oid(name: &str) -> Option<pg_sys::Oid> {
    let c = CString::new(name).ok()?;
    let oid = unsafe { pg_sys::get_role_oid(c.as_ptr(), true) };
    (oid != pg_sys::Oid::INVALID).then_some(oid)
}

/// Superuser, or has the privileges of `role_name`.
pub fn has_role(role: pg_sys::Oid, role_name: &str) -> bool {
    unsafe {
        pg_sys::superuser_arg(role)
            || role_oid(role_name).is_some_and(|r| pg_sys::has_privs_of_role(role, r))
    }
}

pub fn require_role(role_name: &str, action: &str) -> AuthResult<()> {
    if has_role(caller(), role_name) {
        Ok(())
    } else {
        Err(AuthError::PermissionDenied(format!(
            "{action} requires membership in {role_name}"
        )))
    }
}

/// The owner of schema pgauth, who owns the audit tables.
pub fn pgauth_owner() -> AuthResult<pg_sys::Oid> {
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"pgauth".as_ptr(), true);
        if nsp == pg_sys::Oid::INVALID {
            return Err(AuthError::Internal("schema pgauth is missing".into()));
        }
        let tup = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::NAMESPACEOID as i32,
            pg_sys::Datum::from(nsp),
        );
        if tup.is_null() {
            return Err(AuthError::Internal("schema pgauth is missing".into()));
        }
        let form = (*tup)
            .t_data
            .cast::<u8>()
            .add((*(*tup).t_data).t_hoff as usize)
            as *const pg_sys::FormData_pg_namespace;
        let owner = (*form).nspowner;
        pg_sys::ReleaseSysCache(tup);
        Ok(owner)
    }
}

/// Run `f` as the owner of schema pgauth (who owns pgauth's tables), then switch back. Like a
/// SECURITY DEFINER function, but only for the reads and writes inside `f`, so the caller's
/// identity is still known to the code around it.
pub fn as_owner<R>(f: impl FnOnce() -> R) -> R {
    as_owner_unpinned(|| {
        let nest_level;
        unsafe {
            // The caller's search_path must not pick the operators, functions or types of
            // these queries while they run with the owner's rights: pin it, as `SET
            // search_path` on a SECURITY DEFINER function does (GUC_ACTION_SAVE is allowed in
            // parallel mode too).
            nest_level = pg_sys::NewGUCNestLevel();
            pg_sys::set_config_option(
                c"search_path".as_ptr(),
                c"pg_catalog, pg_temp".as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
        let result = f();
        unsafe { pg_sys::AtEOXact_GUC(true, nest_level) };
        result
    })
}

/// `as_owner` without pinning search_path, for C-level work that runs no SQL and looks up no
/// name through search_path (pinning costs a GUC change per call, on hot paths such as the
/// audit capture). On an ERROR the (sub)transaction abort restores the user, as it does for
/// SECURITY DEFINER functions.
pub fn as_owner_unpinned<R>(f: impl FnOnce() -> R) -> R {
    let owner = pgauth_owner().unwrap_or_else(|e| e.raise());
    let (mut saved_user, mut saved_context) = (pg_sys::Oid::INVALID, 0);
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    let result = f();
    unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_context) };
    result
}

/// Record a security event through the one internal event function (the audit log).
pub fn record_event(event: &str, subject: &str, details: &str) -> AuthResult<()> {
    as_owner(|| {
        Spi::run_with_args(
            "SELECT pgauth.record_event($1, $2, $3::jsonb)",
            &[event.into(), subject.into(), details.into()],
        )
    })
    .map_err(spi_err)
}

/// As [`record_event`], for the events of failed attempts (wrong passwords, codes, keys,
/// lockouts): if the caller's transaction or savepoint is rolled back afterwards, the event is
/// written again by the event keeper (src/audit/kept.rs), so no rollback removes it.
pub fn record_failure_event(event: &str, subject: &str, details: &str) -> AuthResult<()> {
    record_event(event, subject, details)?;
    crate::audit::kept::remember(event, subject, details);
    Ok(())
}

/// The session user's name (the login role), for event details.
pub fn session_user_name() -> Option<String> {
    // SAFETY: the name is palloc'd by PostgreSQL and copied at once.
    unsafe {
        let name = pg_sys::GetUserNameFromId(pg_sys::GetSessionUserId(), true);
        (!name.is_null()).then(|| {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        })
    }
}

/// A random (version 4) UUID in RFC 4122 byte order, for ids made in Rust (key ids, kids).
pub fn random_uuid() -> AuthResult<[u8; 16]> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id)
        .map_err(|e| AuthError::Internal(format!("OS random generator failed: {e}")))?;
    id[6] = (id[6] & 0x0f) | 0x40; // UUID version 4
    id[8] = (id[8] & 0x3f) | 0x80; // RFC 4122 variant
    Ok(id)
}

/// A JSON string literal for `s` (for small event details built by hand).
pub fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
