//! Every `pgauth.*` setting, in one place: defined here, one section per capability, read
//! through typed accessors (`settings::login().max_failed_logins()`), and the prefix reserved
//! last, after every setting exists (reserving it deletes the placeholders of settings not yet
//! defined, values and all).
//!
//! Nearly all are superuser-only (PGC_SUSET): they are security policy, which the roles whose
//! requests pgauth checks must not be able to change. PostgreSQL refuses out-of-range values with
//! an error naming the valid range; string settings with a format are checked by hooks here.

use std::ffi::{c_char, c_void, CStr, CString};

use pgrx::prelude::*;
use pgrx::{pg_sys, GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};

use crate::password::limits::*;
use crate::password::Argon2Settings;
use crate::webauthn::{check_rp_id, parse_origins};

/// Define every setting, then reserve the prefix. From `_PG_init`, before anything reads one.
pub fn define_all() {
    define_binding();
    define_password();
    define_crypto();
    define_audit();
    define_session();
    define_login();
    define_jwt();
    define_webauthn();
    // Last: reserving the prefix deletes every placeholder not defined by now.
    reserve_prefix();
}

/// Reserve the `pgauth` prefix: a misspelled `pgauth.*` name becomes an error instead of a
/// silently ignored placeholder. PostgreSQL deletes every placeholder under the prefix that is
/// not defined at this moment, with the value it carried (from `ALTER DATABASE/ROLE … SET`,
/// postgresql.conf or a SET before the library was loaded): only `define_all` calls it, last.
fn reserve_prefix() {
    unsafe { pg_sys::MarkGUCPrefixReserved(c"pgauth".as_ptr()) };
}

/// A string setting's text, None when unset or empty.
fn text(value: Option<CString>) -> Option<String> {
    value
        .map(|c| c.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------------------------
// The transaction's binding (internal; `crate::pg::binding`)

fn define_binding() {
    use crate::pg::binding::{check_binding, BINDING_VALUE};
    unsafe {
        pg_sys::DefineCustomStringVariable(
            c"pgauth.session_binding".as_ptr(),
            c"Internal: the pgauth user bound to the current transaction.".as_ptr(),
            c"Set only by auth_set_session() and auth_bind_user(); cannot be SET.".as_ptr(),
            std::ptr::addr_of_mut!(BINDING_VALUE),
            c"".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            (pg_sys::GUC_NO_SHOW_ALL
                | pg_sys::GUC_NOT_IN_SAMPLE
                | pg_sys::GUC_DISALLOW_IN_FILE
                | pg_sys::GUC_DISALLOW_IN_AUTO_FILE) as i32,
            Some(check_binding),
            None,
            None,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// password

static ARGON2_MEMORY_KIB: GucSetting<i32> =
    GucSetting::<i32>::new(Argon2Settings::OWASP.memory_kib as i32);
static ARGON2_ITERATIONS: GucSetting<i32> =
    GucSetting::<i32>::new(Argon2Settings::OWASP.iterations as i32);
static ARGON2_PARALLELISM: GucSetting<i32> =
    GucSetting::<i32>::new(Argon2Settings::OWASP.parallelism as i32);
static MAX_VERIFY_MEMORY_KIB: GucSetting<i32> = GucSetting::<i32>::new(65536);
static VERIFY_MEMORY_BUDGET_KIB: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);
static CHECK_ROLE_PASSWORDS: GucSetting<bool> = GucSetting::<bool>::new(false);

fn define_password() {
    // Superuser-only: a session must not be able to lower the cost of new hashes or make
    // auth_needs_rehash() accept weaker ones.
    GucRegistry::define_int_guc(
        c"pgauth.argon2_memory_kib",
        c"Argon2id memory cost in KiB for new password hashes.",
        c"OWASP recommends 19456 KiB (19 MiB) with 2 iterations and 1 lane.",
        &ARGON2_MEMORY_KIB,
        ARGON2_MIN_MEMORY_KIB as i32,
        ARGON2_MAX_MEMORY_KIB as i32,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"pgauth.argon2_iterations",
        c"Argon2id iterations (time cost) for new password hashes.",
        c"",
        &ARGON2_ITERATIONS,
        ARGON2_MIN_ITERATIONS as i32,
        ARGON2_MAX_ITERATIONS as i32,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pgauth.argon2_parallelism",
        c"Argon2id lanes for new password hashes (computed on one core).",
        c"",
        &ARGON2_PARALLELISM,
        ARGON2_MIN_PARALLELISM as i32,
        ARGON2_MAX_PARALLELISM as i32,
        GucContext::Suset,
        GucFlags::default(),
    );
    // Superuser-only: any role may call auth_verify with a hash of its own making, and each
    // verification allocates the memory the hash asks for.
    GucRegistry::define_int_guc(
        c"pgauth.max_verify_memory_kib",
        c"Largest Argon2 memory cost (KiB) auth_verify accepts in a hash; larger ones are refused (22023).",
        c"Keep it near pgauth.argon2_memory_kib: every concurrent verification allocates this much.",
        &MAX_VERIFY_MEMORY_KIB,
        ARGON2_MIN_MEMORY_KIB as i32,
        ARGON2_MAX_MEMORY_KIB as i32,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"pgauth.verify_memory_budget",
        c"Argon2 memory that all password verifications running at once may use, server-wide.",
        c"A verification waits (cancellable) while the budget is used up; needs shared_preload_libraries.",
        &VERIFY_MEMORY_BUDGET_KIB,
        ARGON2_MIN_MEMORY_KIB as i32,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_bool_guc(
        c"pgauth.check_role_passwords",
        c"Check cleartext passwords of CREATE/ALTER ROLE against the default password policy.",
        c"Takes effect only when pgauth is in shared_preload_libraries.",
        &CHECK_ROLE_PASSWORDS,
        GucContext::Suset,
        GucFlags::default(),
    );
}

pub struct Password;

pub fn password() -> Password {
    Password
}

impl Password {
    /// The Argon2 parameters of new hashes (`pgauth.argon2_*`).
    pub fn argon2(&self) -> Argon2Settings {
        Argon2Settings {
            memory_kib: ARGON2_MEMORY_KIB.get() as u32,
            iterations: ARGON2_ITERATIONS.get() as u32,
            parallelism: ARGON2_PARALLELISM.get() as u32,
        }
    }

    /// Largest Argon2 memory cost (KiB) of a hash given to auth_verify.
    pub fn max_verify_memory_kib(&self) -> u32 {
        MAX_VERIFY_MEMORY_KIB.get().max(0) as u32
    }

    /// Argon2 memory (KiB) that all password verifications running at once may use.
    pub fn verify_memory_budget_kib(&self) -> u64 {
        VERIFY_MEMORY_BUDGET_KIB.get().max(0) as u64
    }

    /// Check cleartext passwords of CREATE/ALTER ROLE (with preload).
    pub fn check_role_passwords(&self) -> bool {
        CHECK_ROLE_PASSWORDS.get()
    }
}

// ---------------------------------------------------------------------------------------------
// crypto

static MASTER_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static MASTER_KEY_COMMAND: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static PREVIOUS_MASTER_KEY_FILE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
static PREVIOUS_MASTER_KEY_COMMAND: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);

fn define_crypto() {
    // Where the master key comes from. Superuser-only to set and to read (GUC_SUPERUSER_ONLY):
    // the path or command is not the key, but it tells where the key is.
    for (name, short, setting) in [
        (c"pgauth.master_key_file", c"File holding the 32-byte master key (hex or base64), mode 600, owned by the server's user.", &MASTER_KEY_FILE),
        (c"pgauth.master_key_command", c"Command whose standard output is the master key; takes precedence over master_key_file.", &MASTER_KEY_COMMAND),
        (c"pgauth.previous_master_key_file", c"The master key before a change, for auth_rewrap_keys().", &PREVIOUS_MASTER_KEY_FILE),
        (c"pgauth.previous_master_key_command", c"Command printing the master key before a change, for auth_rewrap_keys().", &PREVIOUS_MASTER_KEY_COMMAND),
    ] {
        GucRegistry::define_string_guc(
            name,
            short,
            c"",
            setting,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY,
        );
    }
}

pub struct Crypto;

pub fn crypto() -> Crypto {
    Crypto
}

/// Where a master key comes from: (file, command), as the settings say.
pub type MasterKeySource = [Option<CString>; 2];

impl Crypto {
    /// `pgauth.master_key_file` and `pgauth.master_key_command`, as values (caches compare them
    /// to notice a change).
    pub fn master_key(&self) -> MasterKeySource {
        [MASTER_KEY_FILE.get(), MASTER_KEY_COMMAND.get()]
    }

    /// `pgauth.previous_master_key_file` and `_command` (for auth_rewrap_keys).
    pub fn previous_master_key(&self) -> MasterKeySource {
        [
            PREVIOUS_MASTER_KEY_FILE.get(),
            PREVIOUS_MASTER_KEY_COMMAND.get(),
        ]
    }
}

/// The file and command of a master-key source as text (None when unset or empty).
pub fn source_text(source: &MasterKeySource) -> (Option<String>, Option<String>) {
    (text(source[0].clone()), text(source[1].clone()))
}

// ---------------------------------------------------------------------------------------------
// audit

static AUDIT_SEAL_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);

fn define_audit() {
    GucRegistry::define_int_guc(
        c"pgauth.audit_seal_interval",
        c"How often (ms) a committing transaction that wrote audit records tries to seal the audit chain.",
        c"0 seals at every such commit. Sealing never waits: if another transaction is sealing, this one skips.",
        &AUDIT_SEAL_INTERVAL_MS,
        0,
        3_600_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
}

pub struct Audit;

pub fn audit() -> Audit {
    Audit
}

impl Audit {
    /// Milliseconds between a backend's attempts to seal the audit chain at commit.
    pub fn seal_interval_ms(&self) -> i32 {
        AUDIT_SEAL_INTERVAL_MS.get()
    }
}

// ---------------------------------------------------------------------------------------------
// session

static SESSION_TTL_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(600);
static LONG_SESSION_TTL_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(86_400);
static TRUST_REQUEST_JWT_CLAIMS: GucSetting<bool> = GucSetting::<bool>::new(false);
static REFRESH_TTL_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(7 * 86_400);
static STEP_UP_TTL_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(600);

fn define_session() {
    GucRegistry::define_int_guc(
        c"pgauth.session_ttl",
        c"Lifetime of a session from auth_create_session() without a ttl.",
        c"",
        &SESSION_TTL_SECONDS,
        30,
        31 * 86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pgauth.long_session_ttl",
        c"Lifetime of a long session (auth_create_session(user, long => true)).",
        c"",
        &LONG_SESSION_TTL_SECONDS,
        60,
        366 * 86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pgauth.refresh_token_ttl",
        c"Lifetime of a refresh token (auth_login, auth_refresh); each use issues a new one.",
        c"",
        &REFRESH_TTL_SECONDS,
        60,
        366 * 86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pgauth.step_up_ttl",
        c"How long auth_step_up() raises a session to assurance level 2.",
        c"",
        &STEP_UP_TTL_SECONDS,
        10,
        86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"pgauth.trust_request_jwt_claims",
        c"Let auth_current_user_id() fall back to the sub claim of request.jwt.claims (PostgREST).",
        c"Only for servers where request.jwt.claims is set by PostgREST after verifying the JWT.",
        &TRUST_REQUEST_JWT_CLAIMS,
        GucContext::Suset,
        GucFlags::default(),
    );
}

pub struct Session;

pub fn session() -> Session {
    Session
}

impl Session {
    /// Lifetime (s) of a session from auth_create_session() without a ttl.
    pub fn session_ttl(&self) -> i32 {
        SESSION_TTL_SECONDS.get()
    }

    /// Lifetime (s) of a long session.
    pub fn long_session_ttl(&self) -> i32 {
        LONG_SESSION_TTL_SECONDS.get()
    }

    /// Lifetime (s) of a refresh token.
    pub fn refresh_token_ttl(&self) -> i32 {
        REFRESH_TTL_SECONDS.get()
    }

    /// How long (s) a step-up keeps a session at assurance level 2.
    pub fn step_up_ttl(&self) -> i32 {
        STEP_UP_TTL_SECONDS.get()
    }

    /// May auth_current_user_id() fall back to PostgREST's request.jwt.claims?
    pub fn trust_request_jwt_claims(&self) -> bool {
        TRUST_REQUEST_JWT_CLAIMS.get()
    }
}

// ---------------------------------------------------------------------------------------------
// login

static MAX_FAILED_LOGINS: GucSetting<i32> = GucSetting::<i32>::new(5);
static LOCKOUT_DURATION_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(900);
static LOGIN_ATTEMPTS_PER_MINUTE: GucSetting<i32> = GucSetting::<i32>::new(5);

fn define_login() {
    // Superuser-only: PUBLIC calls auth_login, and must not be able to lift its own limits.
    GucRegistry::define_int_guc(
        c"pgauth.max_failed_logins",
        c"Consecutive failed logins after which a user is locked out (0 = never).",
        c"The lockout lasts pgauth.lockout_duration; auth_unlock_user() ends it early.",
        &MAX_FAILED_LOGINS,
        0,
        1000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pgauth.lockout_duration",
        c"How long a user stays locked out after pgauth.max_failed_logins failures.",
        c"",
        &LOCKOUT_DURATION_SECONDS,
        1,
        30 * 86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pgauth.login_attempts_per_minute",
        c"Login attempts allowed per client address (IPv4 address or IPv6 /64) and minute (0 = no limit).",
        c"Pass the end user's address as auth_login's client_ip; without it the connection's address is used.",
        &LOGIN_ATTEMPTS_PER_MINUTE,
        0,
        100_000,
        GucContext::Suset,
        GucFlags::default(),
    );
}

pub struct Login;

pub fn login() -> Login {
    Login
}

impl Login {
    /// Consecutive failed logins after which a user is locked out (0 = never).
    pub fn max_failed_logins(&self) -> u32 {
        MAX_FAILED_LOGINS.get().max(0) as u32
    }

    /// How long (s) a lockout lasts.
    pub fn lockout_seconds(&self) -> i64 {
        i64::from(LOCKOUT_DURATION_SECONDS.get())
    }

    /// Login attempts per client address and minute (0 = no limit).
    pub fn attempts_per_minute(&self) -> u32 {
        LOGIN_ATTEMPTS_PER_MINUTE.get().max(0) as u32
    }
}

// ---------------------------------------------------------------------------------------------
// jwt

static JWT_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"jwt"));
static JWT_ALGORITHM: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"ES256"));
static JWT_ISSUER: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"pgauth"));
static JWT_AUDIENCE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static ACCESS_TTL_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(900);

fn define_jwt() {
    GucRegistry::define_string_guc(
        c"pgauth.jwt_key",
        c"Name of the signing key of access tokens (auth_login, auth_refresh, passkey sign-in).",
        c"Created on the first sign-in with pgauth.jwt_algorithm when it does not exist.",
        &JWT_KEY,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pgauth.jwt_algorithm",
        c"Algorithm of the access-token key when pgauth creates it: HS256, HS384, HS512, RS256, ES256 or EdDSA.",
        c"",
        &JWT_ALGORITHM,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pgauth.jwt_issuer",
        c"The iss claim of tokens pgauth signs (when the claims have none); empty for none.",
        c"",
        &JWT_ISSUER,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pgauth.jwt_audience",
        c"The aud claim of access tokens; when set, auth_set_session requires it.",
        c"",
        &JWT_AUDIENCE,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pgauth.jwt_access_ttl",
        c"Lifetime of an access token.",
        c"",
        &ACCESS_TTL_SECONDS,
        10,
        86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
}

pub struct Jwt;

pub fn jwt() -> Jwt {
    Jwt
}

impl Jwt {
    /// Name of the access-token signing key (default "jwt").
    pub fn key_name(&self) -> String {
        text(JWT_KEY.get()).unwrap_or_else(|| "jwt".into())
    }

    /// Algorithm of the access-token key when pgauth creates it (default ES256).
    pub fn algorithm(&self) -> String {
        text(JWT_ALGORITHM.get()).unwrap_or_else(|| "ES256".into())
    }

    /// The iss claim of tokens pgauth signs; None for none.
    pub fn issuer(&self) -> Option<String> {
        text(JWT_ISSUER.get())
    }

    /// The aud claim of access tokens; None for none.
    pub fn audience(&self) -> Option<String> {
        text(JWT_AUDIENCE.get())
    }

    /// Lifetime (s) of an access token.
    pub fn access_ttl(&self) -> i32 {
        ACCESS_TTL_SECONDS.get()
    }
}

// ---------------------------------------------------------------------------------------------
// webauthn

static mut RP_ID: *mut c_char = std::ptr::null_mut();
static mut ORIGINS: *mut c_char = std::ptr::null_mut();
static RP_NAME: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static USER_VERIFICATION: GucSetting<UvSetting> =
    GucSetting::<UvSetting>::new(UvSetting::Preferred);
static CHALLENGE_TTL_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(300);
static PENDING_PER_CLIENT: GucSetting<i32> = GucSetting::<i32>::new(20);

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum UvSetting {
    #[name = c"required"]
    Required,
    #[name = c"preferred"]
    Preferred,
    #[name = c"discouraged"]
    Discouraged,
}

/// Refuse a setting value with a descriptive message (22023).
unsafe fn refuse_setting(message: &str) -> bool {
    pg_sys::GUC_check_errcode(pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE as i32);
    let text = CString::new(message.replace('\0', "")).unwrap_or_default();
    pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(text.as_ptr());
    false
}

unsafe fn new_value(newval: *mut *mut c_char) -> Option<String> {
    if newval.is_null() || (*newval).is_null() {
        return None;
    }
    Some(CStr::from_ptr(*newval).to_string_lossy().into_owned())
}

#[pg_guard]
unsafe extern "C-unwind" fn check_rp_id_setting(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    match new_value(newval) {
        None => true,
        Some(v) if v.is_empty() => true,
        Some(v) => match check_rp_id(&v) {
            Ok(()) => true,
            Err(problem) => refuse_setting(&format!("pgauth.webauthn_rp_id {problem}")),
        },
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_origins_setting(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    match new_value(newval) {
        None => true,
        Some(v) => match parse_origins(&v) {
            Ok(_) => true,
            Err(problem) => refuse_setting(&format!("pgauth.webauthn_origins: {problem}")),
        },
    }
}

/// A superuser-only string setting whose values `check` validates (pgrx's GucRegistry takes no
/// check hook).
fn define_checked_string(
    name: &CStr,
    short: &CStr,
    long: &CStr,
    value: *mut *mut c_char,
    check: unsafe extern "C-unwind" fn(
        *mut *mut c_char,
        *mut *mut c_void,
        pg_sys::GucSource::Type,
    ) -> bool,
) {
    // SAFETY: `value` is a static that PostgreSQL's GUC machinery owns from now on.
    unsafe {
        pg_sys::DefineCustomStringVariable(
            name.as_ptr(),
            short.as_ptr(),
            long.as_ptr(),
            value,
            std::ptr::null(),
            pg_sys::GucContext::PGC_SUSET,
            0,
            Some(check),
            None,
            None,
        );
    }
}

/// Superuser-only (like the login limits): the relying party's identity and the accepted
/// origins are security policy, not something an application role may change.
fn define_webauthn() {
    define_checked_string(
        c"pgauth.webauthn_rp_id",
        c"The WebAuthn relying party id: the site's host name, e.g. example.com.",
        c"Passkeys are bound to it; changing it makes every registered passkey unusable.",
        &raw mut RP_ID,
        check_rp_id_setting,
    );
    define_checked_string(
        c"pgauth.webauthn_origins",
        c"Comma-separated origins whose pages may register and use passkeys.",
        c"https://host[:port], http://localhost[:port] or android:apk-key-hash:...; empty means https://<pgauth.webauthn_rp_id>.",
        &raw mut ORIGINS,
        check_origins_setting,
    );
    GucRegistry::define_string_guc(
        c"pgauth.webauthn_rp_name",
        c"The relying party name shown by authenticators when a passkey is created.",
        c"Defaults to pgauth.webauthn_rp_id.",
        &RP_NAME,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"pgauth.webauthn_user_verification",
        c"Whether passkeys must verify the user (PIN or biometrics): required, preferred or discouraged.",
        c"required refuses responses without the UV flag; only a verified passkey sign-in is assurance level 2.",
        &USER_VERIFICATION,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pgauth.webauthn_challenge_ttl",
        c"How long a passkey registration or sign-in challenge stays valid.",
        c"",
        &CHALLENGE_TTL_SECONDS,
        1,
        3600,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pgauth.webauthn_pending_challenges",
        c"Unexpired passkey sign-in challenges one client address may hold (0 = no limit).",
        c"auth_webauthn_login_begin is open to everyone and stores a challenge per call.",
        &PENDING_PER_CLIENT,
        0,
        100_000,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// A string setting stored as a C pointer, trimmed; None when unset or blank.
fn trimmed(ptr: *mut c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the GUC machinery keeps the string alive while it is the setting's value.
    let s = unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .trim()
        .to_string();
    (!s.is_empty()).then_some(s)
}

pub struct Webauthn;

pub fn webauthn() -> Webauthn {
    Webauthn
}

impl Webauthn {
    /// The relying party id (checked by the hook when set); None when unset.
    pub fn rp_id(&self) -> Option<String> {
        trimmed(unsafe { RP_ID })
    }

    /// The accepted origins as written (checked by the hook when set); None when unset.
    pub fn origins(&self) -> Option<String> {
        trimmed(unsafe { ORIGINS })
    }

    /// The relying party name shown by authenticators; None when unset or blank.
    pub fn rp_name(&self) -> Option<String> {
        text(RP_NAME.get()).filter(|n| !n.trim().is_empty())
    }

    pub fn user_verification(&self) -> UvSetting {
        USER_VERIFICATION.get()
    }

    /// How long (s) a challenge stays valid (at least 1).
    pub fn challenge_ttl(&self) -> i32 {
        CHALLENGE_TTL_SECONDS.get().max(1)
    }

    /// Unexpired sign-in challenges one client address may hold (0 = no limit).
    pub fn pending_challenges(&self) -> i32 {
        PENDING_PER_CLIENT.get()
    }
}
