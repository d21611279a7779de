//! `pgauth.check_role_passwords`: a replacement for contrib's passwordcheck. When pgauth is in
//! shared_preload_libraries, cleartext passwords given to CREATE/ALTER ROLE are checked against
//! the built-in `default` policy (the hook may run in a database without the extension, so it
//! does not read pgauth.password_policies).

use std::ffi::{c_char, CStr};

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::policy::{problems, Context, Policy};
use crate::error::AuthError;

static mut PREVIOUS_HOOK: pg_sys::check_password_hook_type = None;

pub(crate) fn install() {
    unsafe {
        PREVIOUS_HOOK = pg_sys::check_password_hook;
        pg_sys::check_password_hook = Some(check_role_password);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_role_password(
    username: *const c_char,
    shadow_pass: *const c_char,
    password_type: pg_sys::PasswordType::Type,
    validuntil_time: pg_sys::Datum,
    validuntil_null: bool,
) {
    if let Some(previous) = PREVIOUS_HOOK {
        previous(
            username,
            shadow_pass,
            password_type,
            validuntil_time,
            validuntil_null,
        );
    }
    // Pre-hashed (md5/SCRAM) passwords, e.g. from psql's \password, cannot be checked.
    if !crate::settings::password().check_role_passwords()
        || password_type != pg_sys::PasswordType::PASSWORD_TYPE_PLAINTEXT
    {
        return;
    }
    if shadow_pass.is_null() {
        return;
    }
    let password =
        zeroize::Zeroizing::new(CStr::from_ptr(shadow_pass).to_string_lossy().into_owned());
    let username =
        (!username.is_null()).then(|| CStr::from_ptr(username).to_string_lossy().into_owned());
    let found = problems(
        &password,
        &Context {
            username: username.as_deref(),
            database: None,
        },
        &Policy::builtin_default(),
    );
    if !found.is_empty() {
        AuthError::PolicyViolation {
            policy: "default".into(),
            problems: found,
        }
        .raise();
    }
}
