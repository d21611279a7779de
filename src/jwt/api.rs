//! The JWT capability's Rust API for other capabilities (inside PostgreSQL): access tokens
//! signed for a session, verified, and mapped back to their session.

use super::sql::{access_key_name, sign_with, signer, verify_access_raw};
use super::sql::{refresh, store_version, verifier, Purpose};
use super::{Alg, Expected};
use crate::error::{AuthError, AuthResult};
use pgrx::Uuid;
use serde_json::{json, Map, Value};

/// Sign the access token of a session: `sub`, `sid`, `aal`, `amr`, `iat`, `exp`, `iss` and, when
/// `pgauth.jwt_audience` is set, `aud`. Creates the access-token key on first use.
pub(crate) fn sign_access_token(
    user: Uuid,
    sid: Uuid,
    aal: i32,
    amr: &[String],
) -> AuthResult<String> {
    let name = access_key_name();
    refresh()?;
    if signer(&name)?.is_none() {
        // Made on first use. Two first sign-ins at once: the second waits here for the first
        // to commit, then signs with its key (before, it failed with 23505: found by the soak).
        crate::pg::serialize_on(crate::pg::LockSpace::SigningKey, &name);
        if signer(&name)?.is_none() {
            let alg = Alg::parse(&crate::settings::jwt().algorithm())?;
            let private = super::generate(alg)?;
            store_version(&name, Purpose::Access, alg, Some(&private), None)?;
        }
    }
    let mut claims = json!({
        "sub": user.to_string(),
        "sid": sid.to_string(),
        "aal": aal,
        "amr": amr,
    });
    if let Some(aud) = crate::settings::jwt().audience() {
        claims["aud"] = Value::String(aud);
    }
    sign_with(
        &name,
        Purpose::Access,
        claims,
        i64::from(crate::settings::jwt().access_ttl()),
    )
}

/// The claims of a valid access token (signed with the access-token key, unexpired, with the
/// configured issuer and audience: whatever a setting names must be in the token).
pub(crate) fn verify_access_token(token: &str) -> AuthResult<Map<String, Value>> {
    let audience = crate::settings::jwt().audience();
    let issuer = crate::settings::jwt().issuer();
    let expected = Expected {
        audience: audience.as_deref(),
        issuer: issuer.as_deref(),
    };
    let raw = verify_access_raw(&access_key_name(), token, expected)?;
    serde_json::from_slice(&raw).map_err(|_| AuthError::InvalidToken)
}

/// The session of an access token whose signature is valid, expired or not (for sign-out).
pub(crate) fn access_token_session(token: &str) -> Option<Uuid> {
    let (kid, alg) = super::peek_header(token).ok()?;
    let key = verifier(&kid).ok()??;
    if key.name != access_key_name() || key.alg != alg || key.purpose != Purpose::Access {
        return None;
    }
    let mut validation = jsonwebtoken::Validation::new(alg.algorithm());
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation).ok()?;
    let sid = data.claims.get("sid")?.as_str()?;
    crate::ids::parse_uuid(sid).map(Uuid::from_bytes)
}
