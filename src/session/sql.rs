//! SQL functions for sessions and the transaction-scoped identity binding.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void, CStr, CString};
use std::net::IpAddr;

use pgrx::prelude::*;
use pgrx::{pg_sys, GucContext, GucFlags, GucRegistry, GucSetting, Uuid};

use super::{
    looks_like_refresh_token, looks_like_token, new_refresh_token, new_token, token_hash, Binding,
};
use crate::backend::{as_owner, has_role, read_one, record_event, record_failure_event, spi_err};
use crate::error::{AuthError, AuthResult, OrRaise};

static mut BINDING_VALUE: *mut c_char = std::ptr::null_mut();
pub static SESSION_TTL_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(600);
pub static LONG_SESSION_TTL_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(86_400);
pub static TRUST_REQUEST_JWT_CLAIMS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static REFRESH_TTL_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(7 * 86_400);
pub static STEP_UP_TTL_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(600);

thread_local! {
    /// Set only while this module changes the binding; the check hook refuses all else.
    static CHANGING_BINDING: Cell<bool> = const { Cell::new(false) };
    /// The last binding string parsed and what it means. Compared by content, never by the
    /// string's address: PostgreSQL frees the old string on every change and malloc hands the
    /// same address to the next one, which once bound another client's identity.
    static PARSED: RefCell<(Vec<u8>, Option<Binding>)> = const { RefCell::new((Vec::new(), None)) };
}

#[pg_guard]
unsafe extern "C-unwind" fn check_binding(
    _newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    if CHANGING_BINDING.with(Cell::get)
        || source == pg_sys::GucSource::PGC_S_DEFAULT
        || pg_sys::InitializingParallelWorker
    {
        return true;
    }
    pg_sys::GUC_check_errcode(pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as i32);
    pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(
        c"the pgauth session binding can only be changed by auth_set_session(), auth_bind_user() and auth_clear_session()".as_ptr(),
    );
    false
}

pub(crate) fn register_settings() {
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

/// The binding of this transaction, if any (also inside parallel workers): the setting's
/// current text, parsed once per distinct text.
pub(crate) fn current_binding() -> Option<Binding> {
    // SAFETY: the GUC machinery of this backend owns the string and keeps it alive and
    // NUL-terminated while it is the setting's value; we only read it here.
    let text: &[u8] = unsafe {
        let ptr = BINDING_VALUE;
        if ptr.is_null() {
            b""
        } else {
            CStr::from_ptr(ptr).to_bytes()
        }
    };
    PARSED.with(|p| {
        let mut p = p.borrow_mut();
        if p.0 != text {
            let binding = std::str::from_utf8(text).ok().and_then(Binding::decode);
            *p = (text.to_vec(), binding);
        }
        p.1.clone()
    })
}

fn set_binding(value: &str) {
    let name = c"pgauth.session_binding";
    let value = CString::new(value).expect("binding has no NUL");
    CHANGING_BINDING.with(|c| c.set(true));
    // Transaction-local, like SET LOCAL: reverted at COMMIT/ROLLBACK (and subtransaction abort).
    let result = PgTryBuilder::new(|| unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            pgrx::PgLogLevel::ERROR as i32,
            false,
        )
    })
    .finally(|| CHANGING_BINDING.with(|c| c.set(false)))
    .execute();
    let _ = result;
}

fn client_address() -> Option<IpAddr> {
    read_one::<String>("SELECT host(pg_catalog.inet_client_addr())", &[])
        .ok()
        .flatten()
        .and_then(|a| a.parse().ok())
}

fn bind(user_id: [u8; 16], aal: u8, session: Option<[u8; 16]>) {
    let binding = Binding {
        user_id,
        client: client_address(),
        aal,
        session,
    };
    set_binding(&binding.encode());
}

fn id_bytes(id: &Uuid) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(id.as_bytes());
    out
}

/// A live session's user and current assurance level (its sign-in level, or 2 during a
/// step-up), when it is not revoked or expired and its user is active. `condition` selects the
/// session by `$1`.
fn live_session(
    condition: &str,
    key: pgrx::datum::DatumWithOid,
) -> AuthResult<Option<(Uuid, Uuid, u8)>> {
    let query = format!(
        "SELECT s.id, s.user_id,
                (CASE WHEN s.step_up_until > pg_catalog.now() THEN greatest(s.aal, 2) ELSE s.aal END)::int4
           FROM pgauth.sessions s JOIN pgauth.users u ON u.id = s.user_id
          WHERE {condition} AND s.revoked_at IS NULL AND s.expires_at > pg_catalog.now()
            AND u.status = 'active'"
    );
    as_owner(|| {
        Spi::connect(|client| {
            let rows = client.select(&query, Some(1), &[key])?;
            if rows.is_empty() {
                return Ok(None);
            }
            let row = rows.first();
            Ok(
                match (row.get::<Uuid>(1)?, row.get::<Uuid>(2)?, row.get::<i32>(3)?) {
                    (Some(sid), Some(user), Some(aal)) => Some((sid, user, aal.clamp(1, 3) as u8)),
                    _ => None,
                },
            )
        })
    })
    .map_err(spi_err)
}

/// The session an access JWT names, after its signature and lifetime were checked.
fn session_of_access_token(token: &str) -> AuthResult<(Uuid, Uuid, u8)> {
    let claims = crate::jwt::sql::verify_access_token(token)?;
    let claim_uuid = |name: &str| {
        claims
            .get(name)
            .and_then(|v| v.as_str())
            .and_then(crate::rbac::model::parse_uuid)
            .map(Uuid::from_bytes)
            .ok_or(AuthError::InvalidToken)
    };
    let (sub, sid) = (claim_uuid("sub")?, claim_uuid("sid")?);
    let (sid, user, aal) = live_session("s.id = $1", sid.into())?.ok_or(AuthError::InvalidToken)?;
    if user != sub {
        return Err(AuthError::InvalidToken);
    }
    Ok((sid, user, aal))
}

fn user_is_active(user: &Uuid) -> bool {
    as_owner(|| {
        read_one::<bool>(
            "SELECT status = 'active' FROM pgauth.users WHERE id = $1",
            &[(*user).into()],
        )
    })
    .map_err(spi_err)
    .or_raise()
    .unwrap_or(false)
}

/// The pgauth user bound to this transaction; NULL when none. With
/// `pgauth.trust_request_jwt_claims` on, falls back to the `sub` of PostgREST's verified claims.
#[pg_extern(stable, parallel_safe)]
pub(crate) fn auth_current_user_id() -> Option<Uuid> {
    if let Some(b) = current_binding() {
        return Some(Uuid::from_bytes(b.user_id));
    }
    if !TRUST_REQUEST_JWT_CLAIMS.get() {
        return None;
    }
    let claims = unsafe { pg_sys::GetConfigOption(c"request.jwt.claims".as_ptr(), true, false) };
    if claims.is_null() {
        return None;
    }
    let text = unsafe { CStr::from_ptr(claims) }.to_string_lossy();
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let sub = value.get("sub")?.as_str()?;
    crate::rbac::model::parse_uuid(sub).map(Uuid::from_bytes)
}

/// Verify a session token (from `auth_create_session`) or an access JWT (from `auth_login`,
/// `auth_refresh`, passkey sign-in) and bind its user, with the session's assurance level, to
/// the current transaction only.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_set_session(token: &str) -> Uuid {
    let (sid, user, aal) = if looks_like_token(token) {
        let hash = token_hash(token);
        live_session("s.token_hash = $1", hash.as_slice().into())
            .or_raise()
            .unwrap_or_else(|| {
                AuthError::InvalidRequest("invalid or expired session token".into()).raise()
            })
    } else {
        session_of_access_token(token).or_raise()
    };
    bind(id_bytes(&user), aal, Some(id_bytes(&sid)));
    user
}

/// For application servers that authenticate users themselves (members of pgauth_service):
/// bind `user_id` to the current transaction, at the assurance level the server vouches for.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_bind_user(user_id: Uuid, aal: default!(i32, 1)) -> Uuid {
    if !has_role(crate::backend::caller(), "pgauth_service") {
        AuthError::PermissionDenied("auth_bind_user requires membership in pgauth_service".into())
            .raise();
    }
    if !(1..=3).contains(&aal) {
        AuthError::InvalidRequest("aal must be 1, 2 or 3".into()).raise();
    }
    if !user_is_active(&user_id) {
        AuthError::InvalidRequest(format!("user {user_id} does not exist or is not active"))
            .raise();
    }
    bind(id_bytes(&user_id), aal as u8, None);
    user_id
}

/// The assurance level of this transaction's binding (NULL when none is bound).
#[pg_extern(stable, parallel_safe)]
fn auth_current_aal() -> Option<i32> {
    current_binding().map(|b| i32::from(b.aal))
}

/// Step up: verify a TOTP code or a recovery code of the bound user and raise the session (and
/// the access tokens `auth_refresh` issues) to assurance level 2 for `pgauth.step_up_ttl`, and
/// this transaction's binding at once. False for a wrong code (the attempt is recorded and
/// counts towards the TOTP attempt limit).
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_step_up(code: &str) -> bool {
    let Some(binding) = current_binding() else {
        AuthError::NoSession.raise();
    };
    let user = Uuid::from_bytes(binding.user_id);
    let ok = crate::mfa::sql::verify_second_factor(user, code).or_raise();
    let subject = user.to_string();
    if !ok {
        record_failure_event("step_up_failed", &subject, "{}").or_raise();
        return false;
    }
    raise_bound_session(&binding, "otp").or_raise();
    true
}

/// After a second factor of the bound user was verified (`method`: "otp" for TOTP or recovery
/// code, "hwk" for a passkey with user verification): aal 2 for this transaction's binding at
/// once and for the session during `pgauth.step_up_ttl`. Records `step_up_succeeded`.
pub(crate) fn raise_bound_session(binding: &Binding, method: &str) -> AuthResult<()> {
    if let Some(sid) = binding.session {
        as_owner(|| {
            Spi::run_with_args(
                "UPDATE pgauth.sessions
                    SET step_up_until = pg_catalog.now() + pg_catalog.make_interval(secs => $2),
                        amr = CASE WHEN $3 = ANY (amr) THEN amr ELSE amr || $3 END
                  WHERE id = $1",
                &[
                    Uuid::from_bytes(sid).into(),
                    f64::from(STEP_UP_TTL_SECONDS.get()).into(),
                    method.into(),
                ],
            )
        })
        .map_err(spi_err)?;
    }
    bind(binding.user_id, binding.aal.max(2), binding.session);
    let details = serde_json::json!({
        "session_id": binding.session.map(|s| Uuid::from_bytes(s).to_string()),
        "ttl_seconds": STEP_UP_TTL_SECONDS.get(),
        "method": method,
    });
    record_event(
        "step_up_succeeded",
        &Uuid::from_bytes(binding.user_id).to_string(),
        &details.to_string(),
    )
}

/// Forget the binding of the current transaction.
#[pg_extern(volatile, parallel_unsafe)]
fn auth_clear_session() {
    set_binding("");
}

/// A new session for `user_id` (pgauth_admin or pgauth_service): an opaque token, stored only as
/// its SHA-256, valid for `ttl` (default `pgauth.session_ttl`, or `pgauth.long_session_ttl`
/// with `long => true`).
#[pg_extern(volatile, parallel_unsafe)]
fn auth_create_session(
    user_id: Option<Uuid>,
    ttl: default!(Option<pgrx::datum::Interval>, "NULL"),
    long: default!(bool, false),
) -> Option<String> {
    let user_id = user_id?;
    let caller = crate::backend::caller();
    if !has_role(caller, "pgauth_admin") && !has_role(caller, "pgauth_service") {
        AuthError::PermissionDenied(
            "auth_create_session requires membership in pgauth_admin or pgauth_service".into(),
        )
        .raise();
    }
    if !user_is_active(&user_id) {
        AuthError::InvalidRequest(format!("user {user_id} does not exist or is not active"))
            .raise();
    }
    Some(issue_session(user_id, ttl, long).or_raise())
}

/// Store a new session for `user_id` and return its token; records `session_created`. The
/// caller has checked who may ask for it and that the user is active (auth_create_session,
/// auth_login).
pub(crate) fn issue_session(
    user_id: Uuid,
    ttl: Option<pgrx::datum::Interval>,
    long: bool,
) -> AuthResult<String> {
    let token = new_token()?;
    let default_seconds = if long {
        LONG_SESSION_TTL_SECONDS.get()
    } else {
        SESSION_TTL_SECONDS.get()
    };
    as_owner(|| {
        Spi::run_with_args(
            "INSERT INTO pgauth.sessions (token_hash, user_id, expires_at)
             VALUES ($1, $2, pg_catalog.now() + coalesce($3, pg_catalog.make_interval(secs => $4)))",
            &[
                token_hash(&token).as_slice().into(),
                user_id.into(),
                ttl.into(),
                f64::from(default_seconds).into(),
            ],
        )
    })
    .map_err(spi_err)?;
    record_event("session_created", &user_id.to_string(), "{}")?;
    Ok(token)
}

/// Revoke a session (whoever holds one of its tokens may): its opaque token, an access JWT of
/// it (the signature must be valid; an expired one is accepted) or one of its refresh tokens.
/// Every token of the session stops working: sign-out.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_revoke_session(token: &str) {
    let (condition, key): (&str, pgrx::datum::DatumWithOid) = if looks_like_token(token) {
        (
            "token_hash = $1",
            token_hash(token).as_slice().to_vec().into(),
        )
    } else if looks_like_refresh_token(token) {
        (
            "id = (SELECT session_id FROM pgauth.refresh_tokens WHERE token_hash = $1)",
            token_hash(token).as_slice().to_vec().into(),
        )
    } else {
        match crate::jwt::sql::access_token_session(token) {
            Some(sid) => ("id = $1", sid.into()),
            None => return,
        }
    };
    let query = format!(
        "UPDATE pgauth.sessions SET revoked_at = pg_catalog.now()
          WHERE {condition} AND revoked_at IS NULL RETURNING user_id"
    );
    let user = as_owner(|| {
        Spi::connect_mut(|client| {
            let rows = client.update(&query, None, &[key])?;
            if rows.is_empty() {
                Ok(None)
            } else {
                rows.first().get::<Uuid>(1)
            }
        })
    })
    .map_err(spi_err)
    .or_raise();
    if let Some(user) = user {
        record_event("session_revoked", &user.to_string(), "{}").or_raise();
    }
}

/// Open a session for a sign-in that succeeded (password, passkey): the session row with its
/// assurance level and methods, a refresh token (stored as SHA-256) and an access JWT. Records
/// `session_created`. The caller has checked the credentials and that the user is active.
pub(crate) fn open_signed_in_session(
    user_id: Uuid,
    aal: i32,
    amr: &[&str],
) -> AuthResult<(String, String)> {
    let aal = aal.clamp(1, 3);
    let amr: Vec<String> = amr.iter().map(|m| m.to_string()).collect();
    let sid = as_owner(|| {
        Spi::connect_mut(|client| {
            let rows = client.update(
                "INSERT INTO pgauth.sessions (user_id, expires_at, aal, amr)
                 VALUES ($1, pg_catalog.now() + pg_catalog.make_interval(secs => $2), $3, $4)
                 RETURNING id",
                None,
                &[
                    user_id.into(),
                    f64::from(REFRESH_TTL_SECONDS.get()).into(),
                    (aal as i16).into(),
                    amr.clone().into(),
                ],
            )?;
            rows.first().get::<Uuid>(1)
        })
    })
    .map_err(spi_err)?
    .ok_or_else(|| AuthError::Internal("session insert returned nothing".into()))?;
    let refresh = store_refresh_token(sid)?;
    let access = crate::jwt::sql::sign_access_token(user_id, sid, aal, &amr)?;
    record_event(
        "session_created",
        &user_id.to_string(),
        &serde_json::json!({"session_id": sid.to_string(), "aal": aal, "amr": amr}).to_string(),
    )?;
    Ok((access, refresh))
}

fn store_refresh_token(sid: Uuid) -> AuthResult<String> {
    let token = new_refresh_token()?;
    as_owner(|| {
        Spi::run_with_args(
            "INSERT INTO pgauth.refresh_tokens (token_hash, session_id, expires_at)
             VALUES ($1, $2, pg_catalog.now() + pg_catalog.make_interval(secs => $3))",
            &[
                token_hash(&token).as_slice().into(),
                sid.into(),
                f64::from(REFRESH_TTL_SECONDS.get()).into(),
            ],
        )
    })
    .map_err(spi_err)?;
    Ok(token)
}

/// What a presented refresh token turned out to be.
enum RefreshOutcome {
    Rotated(String, String),
    /// Unknown, expired, or its session ended: no row.
    Refused,
}

fn refresh(token: &str) -> AuthResult<RefreshOutcome> {
    let hash = token_hash(token);
    // FOR UPDATE: two concurrent uses of one token serialise here, and the second sees it used.
    let row = as_owner(|| {
        Spi::connect_mut(|client| {
            let rows = client.update(
                "SELECT r.session_id, r.used_at IS NOT NULL, r.expires_at > pg_catalog.now(),
                        s.user_id
                   FROM pgauth.refresh_tokens r JOIN pgauth.sessions s ON s.id = r.session_id
                  WHERE r.token_hash = $1
                    FOR UPDATE OF r",
                None,
                &[hash.as_slice().into()],
            )?;
            if rows.is_empty() {
                return Ok(None);
            }
            let r = rows.first();
            Ok(Some((
                r.get::<Uuid>(1)?,
                r.get::<bool>(2)?.unwrap_or(true),
                r.get::<bool>(3)?.unwrap_or(false),
                r.get::<Uuid>(4)?,
            )))
        })
    })
    .map_err(spi_err)?;
    let Some((Some(sid), used, unexpired, Some(user))) = row else {
        return Ok(RefreshOutcome::Refused);
    };
    let subject = user.to_string();
    if used {
        // Reuse: someone holds a copy. End the whole chain (the session and every token of it).
        let revoked = as_owner(|| {
            Spi::connect_mut(|client| {
                let rows = client.update(
                    "UPDATE pgauth.sessions SET revoked_at = pg_catalog.now()
                      WHERE id = $1 AND revoked_at IS NULL RETURNING 1",
                    None,
                    &[sid.into()],
                )?;
                Ok::<_, pgrx::spi::Error>(!rows.is_empty())
            })
        })
        .map_err(spi_err)?;
        record_event(
            "refresh_token_reused",
            &subject,
            &serde_json::json!({"session_id": sid.to_string(), "session_revoked": revoked})
                .to_string(),
        )?;
        return Ok(RefreshOutcome::Refused);
    }
    if !unexpired {
        return Ok(RefreshOutcome::Refused);
    }
    let Some((sid, user, aal)) = live_session("s.id = $1", sid.into())? else {
        return Ok(RefreshOutcome::Refused);
    };
    as_owner(|| {
        Spi::run_with_args(
            "UPDATE pgauth.refresh_tokens SET used_at = pg_catalog.now() WHERE token_hash = $1",
            &[hash.as_slice().into()],
        )?;
        Spi::run_with_args(
            "UPDATE pgauth.sessions
                SET expires_at = greatest(expires_at,
                                          pg_catalog.now() + pg_catalog.make_interval(secs => $2))
              WHERE id = $1",
            &[sid.into(), f64::from(REFRESH_TTL_SECONDS.get()).into()],
        )
    })
    .map_err(spi_err)?;
    let amr = as_owner(|| {
        read_one::<Vec<String>>(
            "SELECT amr FROM pgauth.sessions WHERE id = $1",
            &[sid.into()],
        )
    })
    .map_err(spi_err)?
    .unwrap_or_default();
    let next = store_refresh_token(sid)?;
    let access = crate::jwt::sql::sign_access_token(user, sid, i32::from(aal), &amr)?;
    record_event(
        "token_refreshed",
        &subject,
        &serde_json::json!({"session_id": sid.to_string()}).to_string(),
    )?;
    Ok(RefreshOutcome::Rotated(access, next))
}

/// Exchange a refresh token for a new access JWT and a new refresh token (rotation: each
/// refresh token works once). Presenting one that was already used revokes the whole session and
/// records `refresh_token_reused`. An unknown, expired, reused or revoked token gives no row (so
/// that the revocation and its audit row commit); a malformed one raises 22023.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_refresh(
    refresh_token: &str,
) -> TableIterator<'static, (name!(access_token, String), name!(refresh_token, String))> {
    if !looks_like_refresh_token(refresh_token) {
        AuthError::InvalidToken.raise();
    }
    match refresh(refresh_token).or_raise() {
        RefreshOutcome::Rotated(access, next) => TableIterator::once((access, next)),
        RefreshOutcome::Refused => TableIterator::new(std::iter::empty()),
    }
}

/// A new API key for `user_id` (pgauth_admin or pgauth_service). Shown once: pgauth keeps only
/// its prefix and SHA-256. `scopes` is recorded for the application to check.
#[pg_extern(volatile, parallel_unsafe)]
fn auth_create_api_key(
    user_id: Option<Uuid>,
    name: Option<&str>,
    scopes: default!(Option<Vec<String>>, "NULL"),
    expires_at: default!(Option<pgrx::datum::TimestampWithTimeZone>, "NULL"),
) -> Option<String> {
    let (user_id, name) = (user_id?, name?);
    let caller = crate::backend::caller();
    if !has_role(caller, "pgauth_admin") && !has_role(caller, "pgauth_service") {
        AuthError::PermissionDenied(
            "auth_create_api_key requires membership in pgauth_admin or pgauth_service".into(),
        )
        .raise();
    }
    if !user_is_active(&user_id) {
        AuthError::InvalidRequest(format!("user {user_id} does not exist or is not active"))
            .raise();
    }
    let (key, prefix) = super::api_keys::new_api_key().or_raise();
    as_owner(|| {
        Spi::run_with_args(
            "INSERT INTO pgauth.api_keys (prefix, key_hash, user_id, name, scopes, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                prefix.as_str().into(),
                super::api_keys::api_key_hash(&key).as_slice().into(),
                user_id.into(),
                name.into(),
                scopes.into(),
                expires_at.into(),
            ],
        )
    })
    .map_err(spi_err)
    .or_raise();
    record_event(
        "api_key_created",
        &user_id.to_string(),
        &format!(
            "{{\"prefix\": {}, \"name\": {}}}",
            crate::backend::json_string(&prefix),
            crate::backend::json_string(name)
        ),
    )
    .or_raise();
    Some(key)
}

/// The user an API key belongs to; NULL when the key is unknown, malformed, revoked, expired or
/// its user is not active. The stored hash is compared in constant time.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_verify_api_key(api_key: &str) -> Option<Uuid> {
    verify_api_key(api_key, None)
}

/// As `auth_verify_api_key(api_key)`, and NULL unless the key may be used for `scope`: keys
/// created without scopes may be used for every scope.
#[pg_extern(volatile, strict, parallel_unsafe, name = "auth_verify_api_key")]
fn auth_verify_api_key_for_scope(api_key: &str, scope: &str) -> Option<Uuid> {
    verify_api_key(api_key, Some(scope))
}

/// Wrong API keys are audited (`api_key_failed`, flood-controlled, kept after a rollback) but
/// not refused: a key carries 256 random bits, so guessing is hopeless, while a lockout per
/// address or per key would let anyone block an application server's or a user's keys.
fn verify_api_key(api_key: &str, scope: Option<&str>) -> Option<Uuid> {
    let user = check_api_key(api_key, scope);
    if user.is_none() {
        if let Some(n) = crate::login::shared::event_number("api_key_failed") {
            let (client_text, _) = crate::login::sql::client_key(None);
            let prefix = super::api_keys::api_key_prefix(api_key).unwrap_or_default();
            let details = serde_json::json!({
                "reason": "invalid_credentials",
                "prefix": prefix,
                "client_ip": client_text,
                "occurrence_this_minute": n,
            });
            record_failure_event("api_key_failed", prefix, &details.to_string()).or_raise();
        }
    }
    user
}

fn check_api_key(api_key: &str, scope: Option<&str>) -> Option<Uuid> {
    use subtle::ConstantTimeEq;
    let prefix = super::api_keys::api_key_prefix(api_key)?;
    let row = as_owner(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT k.key_hash, k.user_id, k.scopes FROM pgauth.api_keys k
                   JOIN pgauth.users u ON u.id = k.user_id
                  WHERE k.prefix = $1 AND k.revoked_at IS NULL
                    AND (k.expires_at IS NULL OR k.expires_at > pg_catalog.now())
                    AND u.status = 'active'",
                Some(1),
                &[prefix.into()],
            )?;
            if rows.is_empty() {
                return Ok(None);
            }
            let r = rows.first();
            let scopes = r.get::<Vec<Option<String>>>(3)?;
            Ok(r.get::<Vec<u8>>(1)?
                .zip(r.get::<Uuid>(2)?)
                .map(|(hash, user)| (hash, user, scopes)))
        })
    })
    .map_err(spi_err)
    .or_raise();
    let (stored, user, scopes) = row?;
    let presented = super::api_keys::api_key_hash(api_key);
    // The secret is checked first, so a scope mismatch says nothing about an unknown key.
    if !bool::from(presented.as_slice().ct_eq(&stored)) {
        return None;
    }
    if !super::api_keys::scope_allowed(scopes.as_deref(), scope) {
        return None;
    }
    // SKIP LOCKED: a transaction still open after using this key must not make the next use
    // of it wait (the timestamp is then left to that transaction).
    as_owner(|| {
        Spi::run_with_args(
            "UPDATE pgauth.api_keys SET last_used_at = pg_catalog.now()
              WHERE prefix = $1 AND ctid = ANY (ARRAY(
                    SELECT ctid FROM pgauth.api_keys WHERE prefix = $1 FOR UPDATE SKIP LOCKED))",
            &[prefix.into()],
        )
    })
    .map_err(spi_err)
    .or_raise();
    Some(user)
}

/// Revoke an API key by its prefix (pgauth_admin or pgauth_service).
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_revoke_api_key(prefix: &str) -> bool {
    let caller = crate::backend::caller();
    if !has_role(caller, "pgauth_admin") && !has_role(caller, "pgauth_service") {
        AuthError::PermissionDenied(
            "auth_revoke_api_key requires membership in pgauth_admin or pgauth_service".into(),
        )
        .raise();
    }
    let prefix = prefix
        .strip_prefix(super::api_keys::API_KEY_PREFIX)
        .unwrap_or(prefix);
    let prefix = prefix.split('_').next().unwrap_or(prefix);
    let revoked = as_owner(|| {
        Spi::connect_mut(|client| {
            let rows = client.update(
                "UPDATE pgauth.api_keys SET revoked_at = pg_catalog.now()
                  WHERE prefix = $1 AND revoked_at IS NULL RETURNING user_id",
                None,
                &[prefix.into()],
            )?;
            Ok::<_, pgrx::spi::Error>(!rows.is_empty())
        })
    })
    .map_err(spi_err)
    .or_raise();
    if revoked {
        record_event(
            "api_key_revoked",
            prefix,
            &format!("{{\"prefix\": {}}}", crate::backend::json_string(prefix)),
        )
        .or_raise();
    }
    revoked
}
