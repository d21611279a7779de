//! Who is calling, the switch to pgauth's owner, and the one privilege check every capability
//! uses: a security check written once cannot drift.

use std::ffi::CString;

use pgrx::pg_sys;

use crate::error::{AuthError, AuthResult};

/// Who may do something.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    /// Members of pgauth_admin (and superusers).
    Admin,
    /// Members of pgauth_service (and superusers).
    Service,
    /// Members of either.
    AdminOrService,
    /// Members of either, or a transaction that auth_set_session()/auth_bind_user() bound to
    /// this user.
    SelfOr(&'a [u8; 16]),
    /// Superusers only.
    Superuser,
}

impl Who<'_> {
    /// Does the caller (`current_user`, and the bound user for `SelfOr`) qualify?
    pub fn allows_caller(self) -> bool {
        let me = caller();
        match self {
            Who::Admin => has_role(me, "pgauth_admin"),
            Who::Service => has_role(me, "pgauth_service"),
            Who::AdminOrService => has_role(me, "pgauth_admin") || has_role(me, "pgauth_service"),
            Who::SelfOr(user) => {
                Who::AdminOrService.allows_caller()
                    || crate::pg::binding::current().is_some_and(|b| &b.user_id == user)
            }
            Who::Superuser => unsafe { pg_sys::superuser_arg(me) },
        }
    }

    /// The refusal of `action` to a caller `self` does not allow (42501).
    pub fn refused(self, action: &str) -> AuthError {
        AuthError::PermissionDenied(self.refusal_message(action))
    }

    fn refusal_message(self, action: &str) -> String {
        format!("{action} requires {}", self.requirement())
    }

    /// What the refusal says `action` requires.
    fn requirement(self) -> &'static str {
        match self {
            Who::Admin => "membership in pgauth_admin",
            Who::Service => "membership in pgauth_service",
            Who::AdminOrService => "membership in pgauth_admin or pgauth_service",
            Who::SelfOr(_) => {
                "membership in pgauth_admin or pgauth_service, or a session of that user bound with auth_set_session()"
            }
            Who::Superuser => "a superuser",
        }
    }
}

/// Refuse `action` (42501, `PermissionDenied`) unless `who` allows the caller.
pub fn require(who: Who<'_>, action: &str) -> AuthResult<()> {
    require_or(who, action, AuthError::PermissionDenied)
}

/// As [`require`], refusing with the capability's own variant of 42501 (its own hint).
pub fn require_or(
    who: Who<'_>,
    action: &str,
    refusal: impl FnOnce(String) -> AuthError,
) -> AuthResult<()> {
    if who.allows_caller() {
        Ok(())
    } else {
        Err(refusal(who.refusal_message(action)))
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

/// Does the caller have the privileges of `role` (a member with INHERIT, or a superuser)? For
/// checks against a role found in data: a table's owner, a key grant's grantee.
pub fn caller_has_privileges_of(role: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups on two role OIDs.
    unsafe { pg_sys::has_privs_of_role(caller(), role) }
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
