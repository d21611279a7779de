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

    /// Neither `pgauth.master_key_file` nor `pgauth.master_key_command` gives a master key. Hashing
    /// and RBAC keep working; every key operation fails with this.
    #[error("no master key is configured")]
    MasterKeyMissing,

    /// A master key was found but cannot be used: wrong encoding or length, or a key file with
    /// loose permissions or the wrong owner. The text says what is expected, never what was read.
    #[error("invalid master key: {0}")]
    MasterKeyInvalid(String),

    /// The bytes are not an envelope pgauth can read: truncated, or an unknown format byte. The
    /// text gives lengths and the format byte only.
    #[error("malformed ciphertext: {0}")]
    MalformedCiphertext(String),

    /// AES-GCM authentication failed. Deliberately one error for every cause, so a caller cannot
    /// tell a wrong key from a wrong AAD from a flipped bit.
    #[error("ciphertext failed authentication: wrong key, wrong associated data, or tampered")]
    DecryptionFailed,

    /// A ciphertext or wrapped key names a key id that is not in `pgauth.keys` (e.g. data restored
    /// without its keys). 22000 like `DecryptionFailed`: the value cannot be decrypted, and the SQL
    /// contract groups "unknown or revoked key id" with the authentication failures. The text is the key id
    /// or key name, never key material.
    #[error("unknown encryption key {0}")]
    UnknownKey(String),

    /// `auth_encrypt`, `auth_blind_index` or `auth_hmac` was given a key name that does not exist.
    /// 42704 (undefined_object), like naming a role that does not exist: it is a mistake in the
    /// call, not in stored data.
    #[error("encryption key \"{0}\" does not exist")]
    NoSuchKeyName(String),

    /// The key version was revoked. 22000 for the same reason as `UnknownKey`: for a caller
    /// holding a ciphertext, "cannot decrypt" is the one actionable fact, whatever the cause.
    #[error("encryption key {0} has been revoked")]
    KeyRevoked(String),

    /// A wrapped data key failed authentication under the configured master key: the master key
    /// changed, or the wrapped key (or its id) was altered.
    #[error("data key cannot be unwrapped with the configured master key")]
    KeyWrapFailed,

    /// The plaintext would make an envelope larger than a bytea can hold.
    #[error("plaintext is longer than the maximum of {max} bytes")]
    PlaintextTooLong { max: usize },

    /// The caller lacks a pgauth privilege (administration, or the use of a key).
    #[error("permission denied: {0}")]
    PermissionDenied(String),

    /// An administrative request that contradicts the current state (e.g. a key that exists).
    #[error("{0}")]
    InvalidRequest(String),

    /// UPDATE, DELETE or TRUNCATE of an audit table: refused for everyone, owner included.
    #[error("{0}")]
    AuditAppendOnly(String),

    /// Audit administration without the privilege (pgauth_admin, table ownership).
    #[error("permission denied: {0}")]
    AuditPermissionDenied(String),

    /// An audit event written by someone other than pgauth's own code (a direct call of
    /// `pgauth.record_event` by pgauth_admin, or by another superuser than pgauth's owner).
    #[error("permission denied: {0}")]
    AuditEventNotPgauths(String),

    /// `auth_audit_enable` on something that is not an auditable table.
    #[error("{0}")]
    AuditWrongObject(String),

    /// Stored audit data that cannot be read back (damaged or forged bytes).
    #[error("{0}")]
    AuditCorrupted(String),

    /// A column type pgauth cannot store safely, or that changed since a record was written.
    #[error("{0}")]
    AuditUnsupportedType(String),

    #[error("table {0} is already audited")]
    AuditAlreadyEnabled(String),

    #[error("table {0} is not audited")]
    AuditNotEnabled(String),

    #[error("table {0} has no primary key")]
    AuditNoPrimaryKey(String),

    /// A passkey (WebAuthn) request or response that pgauth refuses; the text names the check,
    /// never a challenge or key.
    #[error("{0}")]
    WebAuthn(String),

    /// Managing another user's passkeys without pgauth_admin or pgauth_service.
    #[error("permission denied: {0}")]
    WebAuthnPermissionDenied(String),

    /// Passkeys need `pgauth.webauthn_rp_id`.
    #[error("passkeys are not configured: {0}")]
    WebAuthnNotConfigured(String),
    /// A JWT or refresh token that cannot be accepted: malformed, wrong signature, unknown key,
    /// wrong algorithm or audience. One message whatever the cause, so a client learns nothing
    /// about which part was wrong.
    #[error("invalid token")]
    InvalidToken,

    /// A JWT past its `exp` (or before its `nbf`): the one cause a client needs to tell apart,
    /// to refresh.
    #[error("token expired or not yet valid")]
    TokenExpired,

    /// `auth_step_up` (or another call that acts on the bound session) without a binding.
    #[error("no pgauth user is bound to this transaction")]
    NoSession,

    /// A JWT signing key name that does not exist. 42704 like an unknown encryption key name.
    #[error("signing key \"{0}\" does not exist")]
    NoSuchSigningKey(String),

    /// auth_jwt_sign with the access-token key: only pgauth's sign-in and refresh sign with it.
    #[error("permission denied: signing key \"{0}\" signs pgauth's access tokens; only sign-in and auth_refresh sign with it")]
    AccessKeyReserved(String),

    /// pgauth.jwt_key names a general-purpose signing key (made by auth_create_signing_key or
    /// imported), whose tokens auth_jwt_sign can make: pgauth signs no access token with it.
    #[error("signing key \"{0}\" is not an access-token key")]
    NotAccessKey(String),

    /// A write in a read-only transaction, which every transaction on a hot standby is: pgauth
    /// writes its audit records itself, so it checks what the executor would have.
    #[error("this pgauth call writes (a session, attempt events, the audit log), and the transaction is read-only")]
    ReadOnly,

    /// A client address holds the most unexpired passkey sign-in challenges it may.
    #[error("too many pending passkey sign-in challenges from this client address")]
    TooManyChallenges,

    /// A permission that needs a higher authentication assurance level than the session has.
    #[error("permission denied: {0}")]
    StepUpRequired(String),

    /// A function whose attempt limits live in shared memory, called while pgauth is not in
    /// `shared_preload_libraries`: refused rather than unprotected.
    #[error("{0} needs pgauth in shared_preload_libraries")]
    NotPreloaded(String),

    /// Adding or removing a second factor of a user who has one, in a session of that user
    /// below aal 2.
    #[error("permission denied: {0}")]
    FactorChangeNeedsStepUp(String),

    /// A regclass argument given as the OID of no relation.
    #[error("{0}")]
    NoSuchRelation(String),

    /// A jsonb argument serde_json cannot represent (a number beyond an f64, such as 1e400).
    #[error("{0}")]
    JsonArgument(String),

    /// `auth_import_keys` with a document that is not what `auth_export_keys` produces.
    #[error("{0}")]
    BadKeyExport(String),

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
            MasterKeyMissing | MasterKeyInvalid(_) | KeyWrapFailed => {
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            MalformedCiphertext(_) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            DecryptionFailed | UnknownKey(_) | KeyRevoked(_) => {
                PgSqlErrorCode::ERRCODE_DATA_EXCEPTION
            }
            NoSuchKeyName(_) => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            PlaintextTooLong { .. } => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            PermissionDenied(_) => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            NoSuchRelation(_) => PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            InvalidRequest(_) | JsonArgument(_) | BadKeyExport(_) => {
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
            }
            AuditAppendOnly(_) | AuditPermissionDenied(_) | AuditEventNotPgauths(_) => {
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE
            }
            AuditWrongObject(_) => PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            AuditCorrupted(_) => PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            AuditUnsupportedType(_) => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            AuditAlreadyEnabled(_) => PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            AuditNotEnabled(_) | AuditNoPrimaryKey(_) => {
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            WebAuthn(_) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            WebAuthnPermissionDenied(_) => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            WebAuthnNotConfigured(_) => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            InvalidToken | TokenExpired => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            StepUpRequired(_) | FactorChangeNeedsStepUp(_) => {
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE
            }
            NoSession => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            TooManyChallenges => PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            NoSuchSigningKey(_) => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            NotAccessKey(_) => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            AccessKeyReserved(_) => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            NotPreloaded(_) => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            ReadOnly => PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
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
            MasterKeyMissing => Some(
                "Set pgauth.master_key_file to a file holding 32 random bytes, e.g. \
                 openssl rand -hex 32 > /etc/postgresql/pgauth.key; \
                 chown postgres: /etc/postgresql/pgauth.key; chmod 600 /etc/postgresql/pgauth.key \
                 (or set pgauth.master_key_command to a command that prints the key), \
                 then reload the server configuration.",
            ),
            MasterKeyInvalid(_) => Some(
                "The master key must be 32 bytes written as 64 hexadecimal characters or as \
                 base64, e.g. from openssl rand -hex 32; a key file must be owned by the server's \
                 operating system user and have mode 600.",
            ),
            MalformedCiphertext(_) => {
                Some("auth_decrypt() accepts only values produced by auth_encrypt().")
            }
            DecryptionFailed => Some(
                "Pass the same associated data (aad) that was given when the value was encrypted.",
            ),
            UnknownKey(_) => Some(
                "The value was encrypted under a key that is not in pgauth.keys; restore the \
                 keys together with the data.",
            ),
            NoSuchKeyName(_) => Some(
                "Create it with auth_create_key() (a member of pgauth_admin); the key \"default\" \
                 is created by the first auth_encrypt() outside a parallel query.",
            ),
            PermissionDenied(_) => Some(
                "Key administration is for members of pgauth_admin; a key's use is granted with \
                 auth_grant_key_usage(key_name, role).",
            ),
            KeyWrapFailed => Some(
                "The data keys were wrapped under a different master key; configure the master \
                 key they were created with.",
            ),
            AuditUnsupportedType(_) => Some(
                "Exclude the column (auth_audit_disable, then auth_audit_enable with \
                 exclude_columns), or read records of a changed type from an export (docs/audit.md, \
                 \"What is recorded\").",
            ),
            AuditCorrupted(_) => Some(
                "The stored audit record was changed outside pgauth: auth_audit_verify() names \
                 the first bad record.",
            ),
            AuditAppendOnly(_) => Some(
                "The audit log and its chain only grow. Archive old events with \
                 auth_audit_purge() (docs/audit.md, \"Retention\").",
            ),
            AuditPermissionDenied(_) => Some(
                "Audit administration is for members of pgauth_admin who own the table \
                 (or superusers); reading the log needs SELECT on pgauth.audit_log.",
            ),
            AuditEventNotPgauths(_) => Some(
                "Security events are written by pgauth's own functions, which run as the owner of \
                 schema pgauth; make the change through them (docs/security.md).",
            ),
            AuditAlreadyEnabled(_) => Some(
                "To change the excluded columns, call auth_audit_disable() and then \
                 auth_audit_enable() again.",
            ),
            AuditNoPrimaryKey(_) => Some(
                "Audit rows identify a row by its primary key; add one (ALTER TABLE … ADD PRIMARY \
                 KEY) first.",
            ),
            WebAuthn(_) => Some(
                "Pass the JSON of the browser's PublicKeyCredential (credential.toJSON()) for the \
                 options of the matching auth_webauthn_*_begin() call, unchanged.",
            ),
            WebAuthnPermissionDenied(_) => Some(
                "A user manages their own passkeys in a transaction where auth_set_session() bound \
                 their token; for other users the caller needs pgauth_admin or pgauth_service.",
            ),
            WebAuthnNotConfigured(_) => Some(
                "Set pgauth.webauthn_rp_id to the site's host name (e.g. ALTER DATABASE app SET \
                 pgauth.webauthn_rp_id = 'example.com', as a superuser) and, when pages are served \
                 from other origins than https://<rp id>, pgauth.webauthn_origins.",
            ),
            InvalidToken => Some("Sign in again (auth_login) to get a new token."),
            TokenExpired => {
                Some("Get a new access token with auth_refresh(refresh_token), or sign in again.")
            }
            TooManyChallenges => Some(
                "Finish or abandon the pending sign-ins; challenges expire after \
                 pgauth.webauthn_challenge_ttl (limit: pgauth.webauthn_pending_challenges).",
            ),
            NoSession => Some("Bind the signed-in user first with auth_set_session(access_token)."),
            NotPreloaded(_) => Some(
                "Failed attempts are counted in shared memory, so that no rollback can undo them: \
                 add pgauth to shared_preload_libraries in postgresql.conf and restart the server \
                 (make install does this).",
            ),
            NoSuchSigningKey(_) => Some(
                "Create it with auth_create_signing_key(name, algorithm) (a member of \
                 pgauth_admin); the access-token key (pgauth.jwt_key, default \"jwt\") is \
                 created by the first sign-in.",
            ),
            ReadOnly => Some(
                "On a hot standby only reads work (auth_verify, auth_decrypt, auth_set_session, \
                 auth_has_permission, auth_jwt_verify); sign in and make changes on the primary.",
            ),
            AccessKeyReserved(_) => Some(
                "Access tokens come from auth_login, auth_refresh and passkey sign-in. To sign \
                 tokens of your own, create a key with auth_create_signing_key(name, algorithm).",
            ),
            NotAccessKey(_) => Some(
                "pgauth.jwt_key names a key made with auth_create_signing_key or \
                 auth_import_signing_key, which auth_jwt_sign may use. Point pgauth.jwt_key at the \
                 access-token key, or at a name no key has yet (pgauth creates the key at the next \
                 sign-in).",
            ),
            StepUpRequired(_) => Some(
                "This permission needs a stronger sign-in: call auth_step_up(code) with a TOTP \
                 or recovery code (or sign in with a passkey) and retry.",
            ),
            FactorChangeNeedsStepUp(_) => Some(
                "Step up first, in this transaction or while the session's step-up lasts: \
                 auth_step_up(code) with a TOTP or recovery code, or auth_webauthn_step_up(credential) \
                 with one of the user's passkeys.",
            ),
            JsonArgument(_) => Some(
                "pgauth reads JSON numbers as 64-bit integers or doubles (up to about 1.8e308); \
                 pass larger numbers as strings.",
            ),
            BadKeyExport(_) => Some(
                "Pass the document auth_export_keys() produced, unchanged; nothing was imported.",
            ),
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
pub(crate) const ERROR_ORIGIN: &str = "pgauth";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_errors_map_to_the_documented_sqlstates() {
        use AuthError::*;
        let cases = [
            (MasterKeyMissing, "55000"),
            (MasterKeyInvalid("x".into()), "55000"),
            (KeyWrapFailed, "55000"),
            (MalformedCiphertext("x".into()), "22023"),
            (DecryptionFailed, "22000"),
            (UnknownKey("x".into()), "22000"),
            (KeyRevoked("x".into()), "22000"),
            (NoSuchKeyName("x".into()), "42704"),
            (PlaintextTooLong { max: 1 }, "54000"),
            (NotPreloaded("auth_login".into()), "55000"),
            (NotAccessKey("jwt".into()), "55000"),
            (AccessKeyReserved("jwt".into()), "42501"),
            (ReadOnly, "25006"),
            (AuditEventNotPgauths("x".into()), "42501"),
            (JsonArgument("x".into()), "22023"),
            (NoSuchRelation("x".into()), "42P01"),
            (BadKeyExport("x".into()), "22023"),
        ];
        for (err, sqlstate) in cases {
            let code = err.sqlstate() as isize;
            // Unpack PostgreSQL's MAKE_SQLSTATE: five 6-bit characters, first in the low bits.
            let text: String = (0..5)
                .map(|i| char::from(((code >> (6 * i)) & 0x3f) as u8 + b'0'))
                .collect();
            assert_eq!(text, sqlstate, "{err:?}");
        }
    }

    #[test]
    fn factor_change_refusal_is_42501_and_points_at_step_up() {
        let err = AuthError::FactorChangeNeedsStepUp("x".into());
        assert_eq!(
            err.sqlstate() as isize,
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as isize
        );
        let hint = err.hint().unwrap();
        assert!(hint.contains("auth_step_up(") && hint.contains("auth_webauthn_step_up("));
    }

    #[test]
    fn key_errors_have_actionable_hints() {
        let hint = AuthError::MasterKeyMissing.hint().unwrap();
        assert!(hint.contains("pgauth.master_key_file"));
        assert!(hint.contains("pgauth.master_key_command"));
        assert!(hint.contains("chmod 600"));
        assert!(AuthError::DecryptionFailed.hint().is_some());
        assert!(AuthError::KeyWrapFailed.hint().is_some());
        assert_eq!(
            AuthError::DecryptionFailed.to_string(),
            "ciphertext failed authentication: wrong key, wrong associated data, or tampered"
        );
    }
}
