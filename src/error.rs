//! The crate's one error type and the one place that maps it to SQLSTATEs.
//!
//! Messages must never carry a password, key, token, plaintext or full hash: variants hold only
//! scheme names, limits and other facts that are safe to show to any caller and to the server log.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The stored hash does not start with a scheme pgauth knows.
    #[error("unrecognised password hash format")]
    UnknownHashScheme,

    /// The scheme is known but the string is not well formed.
    #[error("malformed {scheme} hash: {problem}")]
    MalformedHash {
        scheme: &'static str,
        problem: String,
    },

    /// The hash is well formed but asks for work beyond what pgauth will do.
    #[error(
        "{scheme} hash parameter {parameter} = {value} is outside the accepted range {min}..{max}"
    )]
    HostileHashParameter {
        scheme: &'static str,
        parameter: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },

    #[error("password is longer than the maximum of {max} bytes")]
    PasswordTooLong { max: usize },

    #[error("unknown password policy \"{0}\"")]
    UnknownPolicy(String),

    /// A password failed `auth_check_password` / the role password check.
    #[error("password does not meet the \"{policy}\" password policy: {}", problems.join("; "))]
    PolicyViolation {
        policy: String,
        problems: Vec<String>,
    },

    #[error("internal error in pgauth: {0}")]
    Internal(String),
}

impl AuthError {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use AuthError::*;
        match self {
            UnknownHashScheme
            | MalformedHash { .. }
            | HostileHashParameter { .. }
            | PasswordTooLong { .. }
            | UnknownPolicy(_)
            | PolicyViolation { .. } => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            Internal(_) => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        }
    }

    pub fn hint(&self) -> Option<&'static str> {
        use AuthError::*;
        match self {
            UnknownHashScheme => Some(
                "pgauth verifies argon2id/argon2i/argon2d, bcrypt ($2a$/$2b$/$2y$), PBKDF2 \
                 ($pbkdf2-sha256$, $pbkdf2-sha512$, Django pbkdf2_sha256$), md5-crypt ($1$) and \
                 sha-crypt ($5$, $6$) hashes.",
            ),
            HostileHashParameter { .. } => Some(
                "The stored hash asks for more work than pgauth allows; it was not computed. \
                 Re-hash the password with auth_hash_password().",
            ),
            PasswordTooLong { .. } => Some("Use a shorter password or passphrase."),
            UnknownPolicy(_) => Some("Policies are listed in pgauth.password_policies."),
            PolicyViolation { .. } => {
                Some("Choose a longer password that is not based on words or names.")
            }
            _ => None,
        }
    }

    /// Raise this error as a PostgreSQL ERROR. Never returns.
    #[track_caller]
    pub fn raise(&self) -> ! {
        let mut report = ErrorReport::new(self.sqlstate(), self.to_string(), ERROR_ORIGIN);
        if let Some(hint) = self.hint() {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR-level reports do not return")
    }
}

pub type AuthResult<T> = Result<T, AuthError>;

/// The function name every pgauth error carries; `hide_failed_statement` looks for it.
const ERROR_ORIGIN: &str = "pgauth";

static mut PREVIOUS_EMIT_LOG_HOOK: pgrx::pg_sys::emit_log_hook_type = None;

/// Keep the text of statements that pgauth rejected out of the server log. PostgreSQL logs a
/// failed statement's text (log_min_error_statement = error), and a statement that fails in
/// pgauth has a password in it more often than not: `auth_verify('…', …)`,
/// `CREATE ROLE … PASSWORD '…'`. The error itself is still logged.
pub(crate) fn install_log_hook() {
    unsafe {
        PREVIOUS_EMIT_LOG_HOOK = pgrx::pg_sys::emit_log_hook;
        pgrx::pg_sys::emit_log_hook = Some(hide_failed_statement);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn hide_failed_statement(edata: *mut pgrx::pg_sys::ErrorData) {
    if let Some(edata) = edata.as_mut() {
        if !edata.funcname.is_null()
            && std::ffi::CStr::from_ptr(edata.funcname).to_bytes() == ERROR_ORIGIN.as_bytes()
        {
            edata.hide_stmt = true;
        }
    }
    if let Some(previous) = PREVIOUS_EMIT_LOG_HOOK {
        previous(edata);
    }
}

/// Unwrap a core result at the SQL boundary, raising the mapped ERROR on failure.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for AuthResult<T> {
    #[track_caller]
    fn or_raise(self) -> T {
        match self {
            Ok(value) => value,
            Err(err) => err.raise(),
        }
    }
}
