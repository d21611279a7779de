//! SQL functions for passkeys: settings, challenges, credential storage, audit events. The
//! checks are in `mod.rs`.
//!
//! Who may call what:
//! - `auth_webauthn_login_begin` / `_login_finish`: PUBLIC, like `auth_login` (they prove
//!   identity themselves). `_login_finish` never raises for a failed sign-in: the failure, its
//!   lockout counter, the consumed challenge and the audit row commit. It raises 22023 only when
//!   its argument is not shaped like a browser's credential JSON.
//! - registering, listing, renaming and revoking a user's passkeys: members of pgauth_admin or
//!   pgauth_service, or the user themself in a transaction bound with `auth_set_session` (or
//!   `auth_bind_user`). PostgREST claims are not enough to add a credential. Registering and
//!   revoking change the user's second factors, so they also pass
//!   `mfa::authorize_factor_change` (aal 2 once the user has a factor).
//!
//! Tables are read and written inside `as_owner`; PUBLIC has no access to them.

use std::ffi::{c_char, c_void, CStr, CString};

use hmac::{Hmac, KeyInit, Mac};
use pgrx::datum::{Inet, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::{pg_sys, GucContext, GucFlags, GucRegistry, GucSetting, JsonB, PostgresGucEnum, Uuid};
use serde_json::{json, Value};
use sha2::Sha256;

use super::{
    base64url_encode, check_rp_id, client_data_challenge, parse_assertion, parse_origins,
    parse_registration, verify_assertion, verify_registration, AssertionOutcome, CoseAlgorithm,
    RelyingParty, StoredCredential, UserVerification, WebauthnError,
};
use crate::backend::{
    as_owner, caller, has_role, read_one, record_event, record_failure_event, spi_err,
};
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::login::attempts::Kind;
use crate::login::sql::{
    begin_attempt, client_key, find_account, issue_login_tokens, rate_limit_allows, record_failure,
    record_success, settings, Account,
};
use crate::login::{status_reason, Reason};
use crate::mfa::authorize_factor_change;

static mut RP_ID: *mut c_char = std::ptr::null_mut();
static mut ORIGINS: *mut c_char = std::ptr::null_mut();
pub static RP_NAME: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static USER_VERIFICATION: GucSetting<UvSetting> =
    GucSetting::<UvSetting>::new(UvSetting::Preferred);
pub static CHALLENGE_TTL_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(300);
pub static PENDING_PER_CLIENT: GucSetting<i32> = GucSetting::<i32>::new(20);

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

/// Called from `_PG_init`. Superuser-only (like the login limits): the relying party's identity
/// and the accepted origins are security policy, not something an application role may change.
pub fn register_settings() {
    unsafe {
        pg_sys::DefineCustomStringVariable(
            c"pgauth.webauthn_rp_id".as_ptr(),
            c"The WebAuthn relying party id: the site's host name, e.g. example.com.".as_ptr(),
            c"Passkeys are bound to it; changing it makes every registered passkey unusable."
                .as_ptr(),
            std::ptr::addr_of_mut!(RP_ID),
            std::ptr::null(),
            pg_sys::GucContext::PGC_SUSET,
            0,
            Some(check_rp_id_setting),
            None,
            None,
        );
        pg_sys::DefineCustomStringVariable(
            c"pgauth.webauthn_origins".as_ptr(),
            c"Comma-separated origins whose pages may register and use passkeys.".as_ptr(),
            c"https://host[:port], http://localhost[:port] or android:apk-key-hash:...; empty means https://<pgauth.webauthn_rp_id>.".as_ptr(),
            std::ptr::addr_of_mut!(ORIGINS),
            std::ptr::null(),
            pg_sys::GucContext::PGC_SUSET,
            0,
            Some(check_origins_setting),
            None,
            None,
        );
    }
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

fn string_setting(ptr: *mut c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    let s = unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .trim()
        .to_string();
    (!s.is_empty()).then_some(s)
}

fn user_verification() -> UserVerification {
    match USER_VERIFICATION.get() {
        UvSetting::Required => UserVerification::Required,
        UvSetting::Preferred => UserVerification::Preferred,
        UvSetting::Discouraged => UserVerification::Discouraged,
    }
}

fn relying_party() -> AuthResult<RelyingParty> {
    let Some(rp_id) = string_setting(unsafe { RP_ID }) else {
        return Err(AuthError::WebAuthnNotConfigured(
            "pgauth.webauthn_rp_id is not set".into(),
        ));
    };
    let origins = match string_setting(unsafe { ORIGINS }) {
        Some(list) => parse_origins(&list).map_err(AuthError::WebAuthnNotConfigured)?,
        None => Vec::new(),
    };
    let origins = if origins.is_empty() {
        vec![format!("https://{rp_id}")]
    } else {
        origins
    };
    Ok(RelyingParty {
        rp_id,
        origins,
        require_user_verification: user_verification() == UserVerification::Required,
    })
}

fn webauthn_err(e: WebauthnError) -> AuthError {
    AuthError::WebAuthn(e.to_string())
}

fn random_bytes<const N: usize>() -> AuthResult<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out)
        .map_err(|e| AuthError::Internal(format!("OS random generator failed: {e}")))?;
    Ok(out)
}

/// Members of pgauth_admin or pgauth_service, or `user_id` bound to this transaction.
fn may_manage(user_id: &Uuid) -> bool {
    let me = caller();
    has_role(me, "pgauth_admin")
        || has_role(me, "pgauth_service")
        || crate::session::sql::current_binding().is_some_and(|b| &b.user_id == user_id.as_bytes())
}

fn require_manage(user_id: &Uuid, action: &str) -> AuthResult<()> {
    if may_manage(user_id) {
        Ok(())
    } else {
        Err(AuthError::WebAuthnPermissionDenied(format!(
            "{action} requires membership in pgauth_admin or pgauth_service, or a session of that user bound with auth_set_session()"
        )))
    }
}

fn username_of(user_id: &Uuid) -> AuthResult<String> {
    as_owner(|| {
        read_one::<String>(
            "SELECT username FROM pgauth.users WHERE id = $1",
            &[(*user_id).into()],
        )
    })
    .map_err(spi_err)?
    .ok_or_else(|| AuthError::InvalidRequest(format!("user {user_id} does not exist")))
}

/// A new challenge row; old ones are cleared as we go (a few at a time, skipping rows in use).
fn store_challenge(
    ceremony: &str,
    user_id: Option<Uuid>,
    discoverable: bool,
    client_key: Option<&str>,
) -> AuthResult<[u8; 32]> {
    let challenge = random_bytes::<32>()?;
    let ttl = i64::from(CHALLENGE_TTL_SECONDS.get().max(1));
    as_owner(|| {
        Spi::connect_mut(|client| {
            client.update(
                "DELETE FROM pgauth.webauthn_challenges WHERE ctid = ANY (ARRAY(
                     SELECT ctid FROM pgauth.webauthn_challenges
                      WHERE expires_at < pg_catalog.now() LIMIT 100 FOR UPDATE SKIP LOCKED))",
                None,
                &[],
            )?;
            client.update(
                "INSERT INTO pgauth.webauthn_challenges
                        (challenge, ceremony, user_id, discoverable, expires_at, client)
                 VALUES ($1, $2, $3, $4,
                         pg_catalog.now() + pg_catalog.make_interval(secs => $5::double precision),
                         $6::inet)",
                None,
                &[
                    challenge.as_slice().into(),
                    ceremony.into(),
                    user_id.into(),
                    discoverable.into(),
                    ttl.into(),
                    client_key.into(),
                ],
            )?;
            Ok::<(), pgrx::spi::Error>(())
        })
    })
    .map_err(spi_err)?;
    Ok(challenge)
}

/// A challenge as it was stored, taken out of the table: it is used once whatever follows.
struct Challenge {
    user_id: Option<Uuid>,
    discoverable: bool,
    fresh: bool,
}

fn consume_challenge(challenge: &[u8], ceremony: &str) -> AuthResult<Option<Challenge>> {
    as_owner(|| {
        Spi::connect_mut(|client| {
            let rows = client.update(
                "DELETE FROM pgauth.webauthn_challenges WHERE challenge = $1 AND ceremony = $2
                 RETURNING user_id, discoverable, expires_at > pg_catalog.now()",
                None,
                &[challenge.into(), ceremony.into()],
            )?;
            if rows.is_empty() {
                return Ok(None);
            }
            let row = rows.first();
            Ok(Some(Challenge {
                user_id: row.get::<Uuid>(1)?,
                discoverable: row.get::<bool>(2)?.unwrap_or(false),
                fresh: row.get::<bool>(3)?.unwrap_or(false),
            }))
        })
    })
    .map_err(spi_err)
}

/// The user's random WebAuthn user handle, made on first use.
fn user_handle(user_id: &Uuid) -> AuthResult<Vec<u8>> {
    let fresh = random_bytes::<32>()?;
    as_owner(|| {
        Spi::run_with_args(
            "INSERT INTO pgauth.webauthn_user_handles (user_id, handle) VALUES ($1, $2)
             ON CONFLICT (user_id) DO NOTHING",
            &[(*user_id).into(), fresh.as_slice().into()],
        )?;
        read_one::<Vec<u8>>(
            "SELECT handle FROM pgauth.webauthn_user_handles WHERE user_id = $1",
            &[(*user_id).into()],
        )
    })
    .map_err(spi_err)?
    .ok_or_else(|| AuthError::Internal("user handle missing".into()))
}

/// `{type, id, transports}` of a user's credentials (excludeCredentials / allowCredentials).
fn descriptors(user_id: &Uuid) -> AuthResult<Vec<Value>> {
    as_owner(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT credential_id, transports FROM pgauth.webauthn_credentials
                      WHERE user_id = $1 ORDER BY created_at, id",
                    None,
                    &[(*user_id).into()],
                )?
                .map(|row| {
                    let id = row.get::<Vec<u8>>(1)?.unwrap_or_default();
                    let transports = row.get::<Vec<String>>(2)?.unwrap_or_default();
                    Ok(json!({"type": "public-key", "id": base64url_encode(&id), "transports": transports}))
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .map_err(spi_err)
}

/// The key that makes stand-in credential ids for names without passkeys.
fn decoy_key() -> AuthResult<Vec<u8>> {
    let fresh = random_bytes::<32>()?;
    as_owner(|| {
        Spi::run_with_args(
            "INSERT INTO pgauth.webauthn_decoy_key (singleton, key) VALUES (true, $1)
             ON CONFLICT (singleton) DO NOTHING",
            &[fresh.as_slice().into()],
        )?;
        read_one::<Vec<u8>>("SELECT key FROM pgauth.webauthn_decoy_key", &[])
    })
    .map_err(spi_err)?
    .ok_or_else(|| AuthError::Internal("decoy key missing".into()))
}

/// One credential descriptor derived from the name: the same every time, so that an unknown
/// name (or a user without passkeys) looks like a user with one passkey.
fn decoy_descriptors(username: &str) -> AuthResult<Vec<Value>> {
    let key = decoy_key()?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
        .map_err(|_| AuthError::Internal("decoy key".into()))?;
    mac.update(username.to_lowercase().as_bytes());
    let id = mac.finalize().into_bytes();
    Ok(vec![json!({
        "type": "public-key",
        "id": base64url_encode(&id),
        "transports": ["hybrid", "internal"],
    })])
}

fn timeout_millis() -> i64 {
    i64::from(CHALLENGE_TTL_SECONDS.get().max(1)) * 1000
}

/// PublicKeyCredentialCreationOptions (JSON form: binary values base64url) for
/// `navigator.credentials.create({publicKey: ...})`.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_webauthn_register_begin(user_id: Uuid) -> JsonB {
    JsonB(register_begin(user_id).or_raise())
}

fn register_begin(user_id: Uuid) -> AuthResult<Value> {
    require_manage(&user_id, "auth_webauthn_register_begin")?;
    authorize_factor_change(&user_id, "auth_webauthn_register_begin")?;
    let rp = relying_party()?;
    let username = username_of(&user_id)?;
    let handle = user_handle(&user_id)?;
    let exclude = descriptors(&user_id)?;
    let challenge = store_challenge("register", Some(user_id), false, None)?;
    let rp_name = RP_NAME
        .get()
        .and_then(|n| n.to_str().ok().map(str::to_string))
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| rp.rp_id.clone());
    let params: Vec<Value> = CoseAlgorithm::ALL
        .iter()
        .map(|a| json!({"type": "public-key", "alg": a.id()}))
        .collect();
    Ok(json!({
        "challenge": base64url_encode(&challenge),
        "rp": {"id": rp.rp_id, "name": rp_name},
        "user": {"id": base64url_encode(&handle), "name": username, "displayName": username},
        "pubKeyCredParams": params,
        "timeout": timeout_millis(),
        "excludeCredentials": exclude,
        "authenticatorSelection": {
            "residentKey": "preferred",
            "requireResidentKey": false,
            "userVerification": user_verification().as_str(),
        },
        "attestation": "none",
    }))
}

/// Verify the browser's response to `auth_webauthn_register_begin` and store the passkey;
/// returns its id. Raises 22023 when the response is refused (the transaction, and with it the
/// consumption of the challenge, rolls back: the challenge stays usable until it expires, and
/// only to someone who may register passkeys for this user).
#[pg_extern(volatile, parallel_unsafe)]
fn auth_webauthn_register_finish(
    user_id: Option<Uuid>,
    credential: Option<JsonB>,
    name: default!(Option<&str>, "NULL"),
) -> Option<Uuid> {
    let (user_id, credential) = (user_id?, credential?);
    Some(register_finish(user_id, &credential.0, name).or_raise())
}

fn register_finish(user_id: Uuid, credential: &Value, name: Option<&str>) -> AuthResult<Uuid> {
    require_manage(&user_id, "auth_webauthn_register_finish")?;
    let change = authorize_factor_change(&user_id, "auth_webauthn_register_finish")?;
    let name = check_name(name.unwrap_or("passkey"))?;
    let rp = relying_party()?;
    let username = username_of(&user_id)?;
    let response = parse_registration(credential).map_err(webauthn_err)?;
    let challenge = client_data_challenge(&response.client_data_json).map_err(webauthn_err)?;
    let stored = consume_challenge(&challenge, "register")?;
    let refuse = |m: &str| {
        Err(AuthError::WebAuthn(format!(
            "WebAuthn response refused: {m}"
        )))
    };
    let Some(stored) = stored else {
        return refuse("unknown or already used challenge");
    };
    if stored.user_id != Some(user_id) {
        return refuse("the challenge was issued for another user");
    }
    if !stored.fresh {
        return refuse("the challenge has expired");
    }
    let new = verify_registration(&response, &challenge, &rp).map_err(webauthn_err)?;
    let taken = as_owner(|| {
        read_one::<bool>(
            "SELECT true FROM pgauth.webauthn_credentials WHERE credential_id = $1",
            &[new.credential_id.as_slice().into()],
        )
    })
    .map_err(spi_err)?;
    if taken.is_some() {
        return refuse("this passkey is already registered");
    }
    let aaguid = Uuid::from_bytes(new.aaguid);
    let id = as_owner(|| {
        read_one::<Uuid>(
            "INSERT INTO pgauth.webauthn_credentials
                    (user_id, credential_id, public_key, algorithm, sign_count, transports, aaguid,
                     attestation_format, backup_eligible, backed_up, user_verified, name)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             RETURNING id",
            &[
                user_id.into(),
                new.credential_id.as_slice().into(),
                new.public_key.as_slice().into(),
                (new.algorithm.id() as i32).into(),
                i64::from(new.sign_count).into(),
                response.transports.clone().into(),
                aaguid.into(),
                new.format.as_str().into(),
                new.backup_eligible.into(),
                new.backed_up.into(),
                new.user_verified.into(),
                name.as_str().into(),
            ],
        )
    })
    .map_err(spi_err)?
    .ok_or_else(|| AuthError::Internal("credential insert returned nothing".into()))?;
    let details = json!({
        "user_id": user_id.to_string(),
        "credential": id.to_string(),
        "credential_id": base64url_encode(&new.credential_id),
        "algorithm": new.algorithm.name(),
        "format": new.format,
        "aaguid": aaguid.to_string(),
        "user_verified": new.user_verified,
        "backup_eligible": new.backup_eligible,
    });
    let details = change.audit(details);
    record_event("webauthn_registered", &username, &details.to_string())?;
    Ok(id)
}

fn check_name(name: &str) -> AuthResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AuthError::InvalidRequest(
            "a passkey name must be 1 to 100 printable characters".into(),
        ));
    }
    Ok(name.to_string())
}

/// PublicKeyCredentialRequestOptions for `navigator.credentials.get({publicKey: ...})`. With a
/// username: that user's passkeys in allowCredentials (a name without passkeys, known or not,
/// gets a stand-in, so the answer does not tell whether it exists). NULL: discoverable
/// credentials (passkeys the authenticator offers by itself), allowCredentials empty.
#[pg_extern(volatile, parallel_unsafe)]
fn auth_webauthn_login_begin(
    username: default!(Option<&str>, "NULL"),
    client_ip: default!(Option<Inet>, "NULL"),
) -> JsonB {
    JsonB(login_begin(username, client_ip.as_ref()).or_raise())
}

/// Anyone may ask for sign-in challenges, and each is a row until it expires: one client
/// address (`client_ip`, else the connection's; IPv6 by /64, as for the login rate limit) may
/// hold at most `pgauth.webauthn_pending_challenges` unexpired ones.
fn check_pending(key: &str) -> AuthResult<()> {
    let limit = PENDING_PER_CLIENT.get();
    if limit == 0 {
        return Ok(());
    }
    let pending = as_owner(|| {
        read_one::<i64>(
            "SELECT count(*) FROM (SELECT 1 FROM pgauth.webauthn_challenges
                                     WHERE client = $1::inet AND ceremony = 'login'
                                       AND expires_at > pg_catalog.now() LIMIT $2) p",
            &[key.into(), i64::from(limit).into()],
        )
    })
    .map_err(spi_err)?
    .unwrap_or(0);
    if pending >= i64::from(limit) {
        return Err(AuthError::TooManyChallenges);
    }
    Ok(())
}

fn login_begin(username: Option<&str>, client_ip: Option<&Inet>) -> AuthResult<Value> {
    let rp = relying_party()?;
    let (_, key) = client_key(client_ip);
    check_pending(&key)?;
    let client = Some(key.as_str());
    let (challenge, allow) = match username {
        None => (store_challenge("login", None, true, client)?, Vec::new()),
        Some(name) => {
            let name: String = name.chars().take(256).collect();
            let account = if name.is_empty() {
                None
            } else {
                find_account(
                    "pg_catalog.lower(u.username) = pg_catalog.lower($1)",
                    name.as_str().into(),
                )?
            };
            let (user, mut allow) = match account {
                Some(a) => (Some(a.id), descriptors(&a.id)?),
                None => (None, Vec::new()),
            };
            if allow.is_empty() {
                allow = decoy_descriptors(&name)?;
            }
            (store_challenge("login", user, false, client)?, allow)
        }
    };
    Ok(json!({
        "challenge": base64url_encode(&challenge),
        "rpId": rp.rp_id,
        "timeout": timeout_millis(),
        "userVerification": user_verification().as_str(),
        "allowCredentials": allow,
    }))
}

/// ok, user_id, reason, access_token, refresh_token.
type LoginRow = (bool, Option<Uuid>, String, Option<String>, Option<String>);

fn failed(reason: Reason) -> LoginRow {
    (false, None, reason.as_str().to_string(), None, None)
}

struct StoredRow {
    id: Uuid,
    user_id: Uuid,
    public_key: Vec<u8>,
    sign_count: u32,
    backup_eligible: bool,
    handle: Option<Vec<u8>>,
}

impl StoredRow {
    fn stored(&self) -> StoredCredential<'_> {
        StoredCredential {
            public_key: &self.public_key,
            sign_count: self.sign_count,
            backup_eligible: self.backup_eligible,
        }
    }
}

/// A verified assertion: its sign counter, backup state and time of use are stored.
fn record_use(cred: &StoredRow, outcome: &AssertionOutcome) -> AuthResult<()> {
    as_owner(|| {
        Spi::run_with_args(
            "UPDATE pgauth.webauthn_credentials
                SET sign_count = $2, backed_up = $3, last_used_at = pg_catalog.now()
              WHERE id = $1",
            &[
                cred.id.into(),
                i64::from(outcome.sign_count).into(),
                outcome.backed_up.into(),
            ],
        )
    })
    .map_err(spi_err)
}

fn find_credential(credential_id: &[u8]) -> AuthResult<Option<StoredRow>> {
    as_owner(|| {
        Spi::connect_mut(|client| {
            // Locked until the end of the transaction: concurrent sign-ins with one passkey
            // take turns, so each sees the counter the previous one stored.
            let rows = client.update(
                "SELECT c.id, c.user_id, c.public_key, c.sign_count, c.backup_eligible, h.handle
                   FROM pgauth.webauthn_credentials c
                   LEFT JOIN pgauth.webauthn_user_handles h ON h.user_id = c.user_id
                  WHERE c.credential_id = $1
                    FOR UPDATE OF c",
                None,
                &[credential_id.into()],
            )?;
            if rows.is_empty() {
                return Ok(None);
            }
            let row = rows.first();
            let (Some(id), Some(user_id)) = (row.get::<Uuid>(1)?, row.get::<Uuid>(2)?) else {
                return Ok(None);
            };
            Ok(Some(StoredRow {
                id,
                user_id,
                public_key: row.get::<Vec<u8>>(3)?.unwrap_or_default(),
                sign_count: row
                    .get::<i64>(4)?
                    .unwrap_or(0)
                    .clamp(0, i64::from(u32::MAX)) as u32,
                backup_eligible: row.get::<bool>(5)?.unwrap_or(false),
                handle: row.get::<Vec<u8>>(6)?,
            }))
        })
    })
    .map_err(spi_err)
}

/// Verify a passkey sign-in (the browser's response to `auth_webauthn_login_begin`). One row,
/// like `auth_login`; never raises for a failed sign-in.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)] // the row type is spelled out for pgrx's SQL generation
fn auth_webauthn_login_finish(
    credential: Option<JsonB>,
    client_ip: default!(Option<Inet>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(ok, bool),
        name!(user_id, Option<Uuid>),
        name!(reason, String),
        name!(access_token, Option<String>),
        name!(refresh_token, Option<String>),
    ),
> {
    let Some(credential) = credential else {
        AuthError::WebAuthn("the credential must not be NULL".into()).raise();
    };
    let row = login_finish(&credential.0, client_ip.as_ref()).or_raise();
    TableIterator::once(row)
}

fn login_finish(credential: &Value, client_ip: Option<&Inet>) -> AuthResult<LoginRow> {
    let rp = relying_party()?;
    // Not a credential at all: raise (nothing to count, no challenge known).
    let response = parse_assertion(credential).map_err(webauthn_err)?;
    let (client_text, key) = client_key(client_ip);
    let credential_text = base64url_encode(&response.raw_id);
    let details = |reason: Reason, user: Option<&Account>, problem: Option<&str>| {
        json!({
            "reason": reason.as_str(),
            "user_id": user.map(|a| a.id.to_string()),
            "client_ip": client_text,
            "credential_id": credential_text,
            "problem": problem,
        })
        .to_string()
    };

    // 1. The address's rate limit, shared with auth_login.
    if !rate_limit_allows(
        "auth_webauthn_login_finish",
        &key,
        settings().attempts_per_minute,
    )? {
        if let Some(n) = crate::login::shared::event_number("rate_limited") {
            let mut d: Value =
                serde_json::from_str(&details(Reason::RateLimited, None, None)).unwrap_or_default();
            d["rate_limit_key"] = json!(key);
            d["occurrence_this_minute"] = json!(n);
            record_failure_event("rate_limited", "", &d.to_string())?;
        }
        return Ok(failed(Reason::RateLimited));
    }

    // 2. The challenge is used up whatever happens next.
    let challenge = match client_data_challenge(&response.client_data_json) {
        Ok(c) => c,
        Err(e) => {
            let text = e.to_string();
            if crate::login::shared::event_number("webauthn_login_failed unknown").is_some() {
                record_failure_event(
                    "webauthn_login_failed",
                    "",
                    &details(Reason::InvalidCredentials, None, Some(&text)),
                )?;
            }
            return Ok(failed(Reason::InvalidCredentials));
        }
    };
    let stored_challenge = consume_challenge(&challenge, "login")?;

    // 3. The credential and its user.
    let found = find_credential(&response.raw_id)?;
    let account = match &found {
        Some(c) => find_account("u.id = $1", c.user_id.into())?,
        None => None,
    };
    let (Some(cred), Some(account)) = (found, account) else {
        // Anyone can present made-up credentials: flood-controlled like unknown users.
        if crate::login::shared::event_number("webauthn_login_failed unknown").is_some() {
            record_failure_event(
                "webauthn_login_failed",
                "",
                &details(Reason::InvalidCredentials, None, Some("unknown credential")),
            )?;
        }
        return Ok(failed(Reason::InvalidCredentials));
    };
    let subject = account.username.clone();

    // 4. A temporary lockout refuses without looking further.
    if !begin_attempt("auth_webauthn_login_finish", Kind::Passkey, account.id)? {
        record_failure_event(
            "webauthn_login_failed",
            &subject,
            &details(Reason::Locked, Some(&account), None),
        )?;
        return Ok(failed(Reason::Locked));
    }

    // 5. The challenge belongs to this ceremony and user, then every WebAuthn check.
    let problem: Option<String> = match &stored_challenge {
        None => Some("unknown or already used challenge".into()),
        Some(c) if !c.fresh => Some("the challenge has expired".into()),
        Some(c) if c.user_id.is_some_and(|u| u != cred.user_id) => {
            Some("the challenge was issued for another user".into())
        }
        Some(c) if c.user_id.is_none() && !c.discoverable => {
            Some("the challenge was issued for another user".into())
        }
        Some(c)
            if (c.discoverable || response.user_handle.is_some())
                && response.user_handle.as_deref() != cred.handle.as_deref() =>
        {
            Some("userHandle does not belong to the credential".into())
        }
        Some(_) => None,
    };
    let verified = match problem {
        Some(p) => Err(WebauthnError::Refused(p)),
        None => verify_assertion(&response, &challenge, &rp, &cred.stored()),
    };
    let outcome = match verified {
        Ok(outcome) => outcome,
        Err(e) => {
            if let WebauthnError::CounterRollback { stored, received } = e {
                let d = json!({
                    "user_id": account.id.to_string(),
                    "credential": cred.id.to_string(),
                    "credential_id": credential_text,
                    "stored_count": stored,
                    "received_count": received,
                    "client_ip": client_text,
                });
                record_failure_event("webauthn_counter_rollback", &subject, &d.to_string())?;
            }
            let failed_count =
                record_failure("auth_webauthn_login_finish", Kind::Passkey, &account)?;
            let text = e.to_string();
            let mut d: Value = serde_json::from_str(&details(
                Reason::InvalidCredentials,
                Some(&account),
                Some(&text),
            ))
            .unwrap_or_default();
            d["failed_count"] = json!(failed_count);
            record_failure_event("webauthn_login_failed", &subject, &d.to_string())?;
            return Ok(failed(Reason::InvalidCredentials));
        }
    };
    record_success("auth_webauthn_login_finish", Kind::Passkey, account.id)?;
    record_use(&cred, &outcome)?;

    // 6. Administrative status, only now (it tells nothing to someone without the passkey).
    if let Some(reason) = status_reason(&account.status) {
        record_failure_event(
            "webauthn_login_failed",
            &subject,
            &details(reason, Some(&account), None),
        )?;
        return Ok(failed(reason));
    }

    // 7. Success. A passkey is possession ("hwk"); with user verification it is multi-factor.
    let (aal, amr): (i32, &[&str]) = if outcome.user_verified {
        (2, &["hwk", "user"])
    } else {
        (1, &["hwk"])
    };
    let (access, refresh) = issue_login_tokens(account.id, aal, amr)?;
    let mut d: Value =
        serde_json::from_str(&details(Reason::Ok, Some(&account), None)).unwrap_or_default();
    d["aal"] = json!(aal);
    d["amr"] = json!(amr);
    record_event("webauthn_login_succeeded", &subject, &d.to_string())?;
    Ok((
        true,
        Some(account.id),
        Reason::Ok.as_str().to_string(),
        Some(access),
        refresh,
    ))
}

/// A user's passkeys.
#[pg_extern(stable, strict, parallel_safe)]
#[allow(clippy::type_complexity)]
fn auth_webauthn_credentials(
    user_id: Uuid,
) -> TableIterator<
    'static,
    (
        name!(id, Uuid),
        name!(credential_id, String),
        name!(name, String),
        name!(algorithm, String),
        name!(transports, Vec<String>),
        name!(aaguid, Uuid),
        name!(backup_eligible, bool),
        name!(backed_up, bool),
        name!(sign_count, i64),
        name!(created_at, Option<TimestampWithTimeZone>),
        name!(last_used_at, Option<TimestampWithTimeZone>),
    ),
> {
    require_manage(&user_id, "auth_webauthn_credentials").or_raise();
    let rows = as_owner(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT id, credential_id, name, algorithm, transports, aaguid,
                            backup_eligible, backed_up, sign_count, created_at, last_used_at
                       FROM pgauth.webauthn_credentials WHERE user_id = $1
                      ORDER BY created_at, id",
                    None,
                    &[user_id.into()],
                )?
                .map(|row| {
                    let alg = row.get::<i32>(4)?.unwrap_or(0);
                    let alg = CoseAlgorithm::from_id(i64::from(alg))
                        .map_or_else(|_| alg.to_string(), |a| a.name().to_string());
                    Ok((
                        row.get::<Uuid>(1)?.unwrap_or(Uuid::from_bytes([0; 16])),
                        base64url_encode(&row.get::<Vec<u8>>(2)?.unwrap_or_default()),
                        row.get::<String>(3)?.unwrap_or_default(),
                        alg,
                        row.get::<Vec<String>>(5)?.unwrap_or_default(),
                        row.get::<Uuid>(6)?.unwrap_or(Uuid::from_bytes([0; 16])),
                        row.get::<bool>(7)?.unwrap_or(false),
                        row.get::<bool>(8)?.unwrap_or(false),
                        row.get::<i64>(9)?.unwrap_or(0),
                        row.get::<TimestampWithTimeZone>(10)?,
                        row.get::<TimestampWithTimeZone>(11)?,
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .map_err(spi_err)
    .or_raise();
    TableIterator::new(rows)
}

/// The passkey `credential_id` (base64url, as listed) and its owner; None when unknown.
fn credential_owner(credential_id: &str) -> AuthResult<Option<(Uuid, Uuid, String)>> {
    let Ok(raw) = super::base64url_decode(credential_id, "credential_id", super::MAX_CREDENTIAL_ID)
    else {
        return Err(AuthError::InvalidRequest(
            "credential_id must be a passkey's base64url credential id".into(),
        ));
    };
    as_owner(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT c.id, c.user_id, u.username FROM pgauth.webauthn_credentials c
                   JOIN pgauth.users u ON u.id = c.user_id WHERE c.credential_id = $1",
                Some(1),
                &[raw.as_slice().into()],
            )?;
            if rows.is_empty() {
                return Ok(None);
            }
            let row = rows.first();
            Ok(match (row.get::<Uuid>(1)?, row.get::<Uuid>(2)?) {
                (Some(id), Some(user)) => {
                    Some((id, user, row.get::<String>(3)?.unwrap_or_default()))
                }
                _ => None,
            })
        })
    })
    .map_err(spi_err)
}

/// Rename a passkey; false when there is no such passkey.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_webauthn_rename(credential_id: &str, name: &str) -> bool {
    rename(credential_id, name).or_raise()
}

fn rename(credential_id: &str, name: &str) -> AuthResult<bool> {
    let name = check_name(name)?;
    let Some((id, user, username)) = credential_owner(credential_id)? else {
        return Ok(false);
    };
    require_manage(&user, "auth_webauthn_rename")?;
    as_owner(|| {
        Spi::run_with_args(
            "UPDATE pgauth.webauthn_credentials SET name = $2 WHERE id = $1",
            &[id.into(), name.as_str().into()],
        )
    })
    .map_err(spi_err)?;
    let details = json!({"user_id": user.to_string(), "credential": id.to_string(),
                         "credential_id": credential_id, "name": name});
    record_event("webauthn_renamed", &username, &details.to_string())?;
    Ok(true)
}

/// Revoke (delete) a passkey; false when there is no such passkey.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_webauthn_revoke(credential_id: &str) -> bool {
    revoke(credential_id).or_raise()
}

fn revoke(credential_id: &str) -> AuthResult<bool> {
    let Some((id, user, username)) = credential_owner(credential_id)? else {
        return Ok(false);
    };
    require_manage(&user, "auth_webauthn_revoke")?;
    let change = authorize_factor_change(&user, "auth_webauthn_revoke")?;
    as_owner(|| {
        Spi::run_with_args(
            "DELETE FROM pgauth.webauthn_credentials WHERE id = $1",
            &[id.into()],
        )
    })
    .map_err(spi_err)?;
    let details = change.audit(
        json!({"user_id": user.to_string(), "credential": id.to_string(),
                                      "credential_id": credential_id}),
    );
    record_event("webauthn_revoked", &username, &details.to_string())?;
    Ok(true)
}

/// Step up with a passkey: the browser's response to `auth_webauthn_login_begin(<the bound
/// user's name>)`, made with user verification, raises the bound session to aal 2 like
/// `auth_step_up(code)` does. Only the bound user's own passkeys count, and those were added
/// under `authorize_factor_change` (first factor, aal 2, or an administrator): an aal 1
/// session cannot add the passkey it would step up with. False when the assertion is not the bound user's, is not
/// user-verified, or fails any check (recorded as `step_up_failed`; the challenge is used up).
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_webauthn_step_up(credential: JsonB) -> bool {
    let Some(binding) = crate::session::sql::current_binding() else {
        AuthError::NoSession.raise();
    };
    let user = Uuid::from_bytes(binding.user_id);
    match step_up(&credential.0, user).or_raise() {
        Ok(()) => {
            crate::session::sql::raise_bound_session(&binding, "hwk").or_raise();
            true
        }
        Err(problem) => {
            let d = json!({"method": "hwk", "problem": problem});
            record_failure_event("step_up_failed", &user.to_string(), &d.to_string()).or_raise();
            false
        }
    }
}

/// Ok(Err(problem)) for a refused assertion; Err only for input that is not a credential.
fn step_up(credential: &Value, user: Uuid) -> AuthResult<Result<(), String>> {
    let rp = relying_party()?;
    let response = parse_assertion(credential).map_err(webauthn_err)?;
    let challenge = match client_data_challenge(&response.client_data_json) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let stored_challenge = consume_challenge(&challenge, "login")?;
    let Some(cred) = find_credential(&response.raw_id)?.filter(|c| c.user_id == user) else {
        return Ok(Err("not a passkey of the bound user".into()));
    };
    match &stored_challenge {
        None => return Ok(Err("unknown or already used challenge".into())),
        Some(c) if !c.fresh => return Ok(Err("the challenge has expired".into())),
        Some(c) if c.user_id != Some(user) => {
            return Ok(Err("the challenge was issued for another user".into()))
        }
        Some(_) => {}
    }
    let outcome = match verify_assertion(&response, &challenge, &rp, &cred.stored()) {
        Ok(o) => o,
        Err(e) => {
            if let WebauthnError::CounterRollback { stored, received } = e {
                let d = json!({"credential": cred.id.to_string(), "stored_count": stored,
                               "received_count": received});
                record_event(
                    "webauthn_counter_rollback",
                    &user.to_string(),
                    &d.to_string(),
                )?;
            }
            return Ok(Err(e.to_string()));
        }
    };
    record_use(&cred, &outcome)?;
    if !outcome.user_verified {
        return Ok(Err(
            "the authenticator did not verify the user (UV flag)".into()
        ));
    }
    Ok(Ok(()))
}
