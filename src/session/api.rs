//! The session capability's Rust API for other capabilities (inside PostgreSQL): opening a
//! session for a sign-in that succeeded, raising the bound session after a second factor, and
//! the current user id (binding, or trusted PostgREST claims).

use super::sql::store_refresh_token;
use crate::error::{AuthError, AuthResult};
use crate::pg::binding::{bind, Binding};
use crate::pg::event;
use crate::pg::roles::as_owner;
use crate::pg::spi::spi_err;
use pgrx::prelude::*;
use pgrx::Uuid;
use serde_json::json;

/// After a second factor of the bound user was verified (`method`: "otp" for TOTP or recovery
/// code, "hwk" for a passkey with user verification): aal 2 for this transaction's binding at
/// once and for the session during `pgauth.step_up_ttl`. Records `step_up_succeeded`.
pub(crate) fn raise_bound_session(binding: &Binding, method: &str) -> AuthResult<()> {
    if let Some(sid) = binding.session {
        as_owner(|| {
            crate::pg::spi::run_with_args(
                "UPDATE pgauth.sessions
                    SET step_up_until = pg_catalog.now() + pg_catalog.make_interval(secs => $2),
                        amr = CASE WHEN $3 = ANY (amr) THEN amr ELSE amr || $3 END
                  WHERE id = $1",
                &[
                    Uuid::from_bytes(sid).into(),
                    f64::from(crate::settings::session().step_up_ttl()).into(),
                    method.into(),
                ],
            )
        })
        .map_err(spi_err)?;
    }
    bind(binding.user_id, binding.aal.max(2), binding.session);
    let details = json!({
        "session_id": binding.session.map(|s| Uuid::from_bytes(s).to_string()),
        "ttl_seconds": crate::settings::session().step_up_ttl(),
        "method": method,
    });
    event::record(
        "step_up_succeeded",
        &Uuid::from_bytes(binding.user_id).to_string(),
        details,
    )
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
        crate::pg::spi::connect_mut(|client| {
            let rows = client.update(
                "INSERT INTO pgauth.sessions (user_id, expires_at, aal, amr)
                 VALUES ($1, pg_catalog.now() + pg_catalog.make_interval(secs => $2), $3, $4)
                 RETURNING id",
                None,
                &[
                    user_id.into(),
                    f64::from(crate::settings::session().refresh_token_ttl()).into(),
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
    let access = crate::jwt::api::sign_access_token(user_id, sid, aal, &amr)?;
    event::record(
        "session_created",
        &user_id.to_string(),
        json!({"session_id": sid.to_string(), "aal": aal, "amr": amr}),
    )?;
    Ok((access, refresh))
}

/// The pgauth user bound to this transaction (`auth_current_user_id()`); with
/// `pgauth.trust_request_jwt_claims` on, else the `sub` of PostgREST's verified claims.
pub(crate) fn current_user_id() -> Option<[u8; 16]> {
    if let Some(b) = crate::pg::binding::current() {
        return Some(b.user_id);
    }
    if !crate::settings::session().trust_request_jwt_claims() {
        return None;
    }
    // SAFETY: GetConfigOption returns the setting's own string (or NULL); copied at once.
    let claims = unsafe { pg_sys::GetConfigOption(c"request.jwt.claims".as_ptr(), true, false) };
    if claims.is_null() {
        return None;
    }
    let text = unsafe { std::ffi::CStr::from_ptr(claims) }.to_string_lossy();
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let sub = value.get("sub")?.as_str()?;
    crate::ids::parse_uuid(sub)
}
