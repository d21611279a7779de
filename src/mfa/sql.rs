//! SQL functions for TOTP and recovery codes. For pgauth_admin and pgauth_service (the
//! application server that runs the sign-in flow). Also the one check every change of a user's
//! second factors passes (`authorize_factor_change`, used by the passkey functions too).

use pgrx::prelude::*;
use pgrx::Uuid;

use serde_json::{json, Value};

use super::{
    check_totp, decide_factor_change, legacy_recovery_code_hash, new_recovery_codes,
    new_totp_secret, recovery_code_message, totp_uri, FactorChangeDecision, FactorChangeRequest,
};
use crate::backend::{
    as_owner, caller, has_role, read_one, record_event, record_failure_event, spi_err,
};
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::login::attempts::{Begin, Kind, Limits};
use crate::login::shared;

fn require_service(action: &str) {
    let me = caller();
    if !has_role(me, "pgauth_admin") && !has_role(me, "pgauth_service") {
        AuthError::PermissionDenied(format!(
            "{action} requires membership in pgauth_admin or pgauth_service"
        ))
        .raise();
    }
}

/// A permitted change of a user's second factors, for its audit row.
pub(crate) struct FactorChange {
    first_factor: bool,
    /// The level of the user's own bound session; None when an administrator or service acted
    /// without binding the user.
    aal: Option<u8>,
}

impl FactorChange {
    /// `details` with `first_factor` and `aal` added.
    pub(crate) fn audit(&self, mut details: Value) -> Value {
        if let Some(map) = details.as_object_mut() {
            map.insert("first_factor".into(), self.first_factor.into());
            map.insert("aal".into(), self.aal.map_or(Value::Null, Value::from));
        }
        details
    }
}

/// Before adding or removing a second factor (TOTP, a passkey, recovery codes) of `user_id`:
/// a transaction bound to that user needs aal 2 unless the user has no factor yet (42501 with
/// a hint to step up); otherwise the caller must be pgauth_admin or pgauth_service. Locks the
/// user's row until the transaction ends, so two concurrent first enrollments cannot both be
/// the first.
pub(crate) fn authorize_factor_change(user_id: &Uuid, action: &str) -> AuthResult<FactorChange> {
    let own_session_aal = crate::session::sql::current_binding()
        .filter(|b| &b.user_id == user_id.as_bytes())
        .map(|b| b.aal);
    let me = caller();
    let privileged = has_role(me, "pgauth_admin") || has_role(me, "pgauth_service");
    let has_factor = as_owner(|| {
        Spi::connect_mut(|client| {
            client.update(
                "SELECT 1 FROM pgauth.users WHERE id = $1 FOR NO KEY UPDATE",
                None,
                &[(*user_id).into()],
            )?;
            let rows = client.update(
                "SELECT EXISTS (SELECT 1 FROM pgauth.totp WHERE user_id = $1)
                     OR EXISTS (SELECT 1 FROM pgauth.webauthn_credentials WHERE user_id = $1)
                     OR EXISTS (SELECT 1 FROM pgauth.recovery_codes
                                 WHERE user_id = $1 AND used_at IS NULL)",
                None,
                &[(*user_id).into()],
            )?;
            rows.first().get::<bool>(1)
        })
    })
    .map_err(spi_err)?
    .unwrap_or(true);
    let request = FactorChangeRequest {
        own_session_aal,
        privileged,
        has_factor,
    };
    match decide_factor_change(request) {
        FactorChangeDecision::Allowed { first_factor } => Ok(FactorChange {
            first_factor,
            aal: own_session_aal,
        }),
        FactorChangeDecision::NeedsStepUp => Err(AuthError::FactorChangeNeedsStepUp(format!(
            "{action} changes the second factors of a user who has one, which needs \
             authentication assurance level 2 of that user's session (this one is at level {})",
            own_session_aal.unwrap_or(1)
        ))),
        FactorChangeDecision::NotPermitted => Err(AuthError::PermissionDenied(format!(
            "{action} requires membership in pgauth_admin or pgauth_service, or a session of that user"
        ))),
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

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Start (or restart) TOTP for `user_id`: a new 160-bit secret, stored encrypted under the
/// `default` key (associated data: the user id), returned once as an otpauth:// URI.
#[pg_extern(volatile, parallel_unsafe)]
fn auth_totp_enroll(
    user_id: Option<Uuid>,
    issuer: default!(Option<&str>, "NULL"),
) -> Option<String> {
    let user_id = user_id?;
    require_service("auth_totp_enroll");
    let username = username_of(&user_id).or_raise();
    let change = authorize_factor_change(&user_id, "auth_totp_enroll").or_raise();
    let secret = new_totp_secret().or_raise();
    // Encrypted with pgauth's own rights: the application role need not be granted the key.
    let sealed =
        as_owner(|| crate::crypto::sql::encrypt(&secret, "default", Some(user_id.as_bytes())))
            .or_raise();
    as_owner(|| {
        Spi::run_with_args(
            "INSERT INTO pgauth.totp (user_id, secret, issuer) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE
                SET secret = EXCLUDED.secret, issuer = EXCLUDED.issuer, last_step = NULL,
                    enrolled_at = pg_catalog.now()",
            &[user_id.into(), sealed.as_slice().into(), issuer.into()],
        )
    })
    .map_err(spi_err)
    .or_raise();
    let details = change.audit(json!({}));
    record_event("totp_enrolled", &user_id.to_string(), &details.to_string()).or_raise();
    Some(totp_uri(&secret, &username, issuer).or_raise())
}

/// Is `code` the user's current TOTP code? Each code is accepted once.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_totp_verify(user_id: Uuid, code: &str) -> bool {
    require_service("auth_totp_verify");
    verify_totp(user_id, code).or_raise()
}

/// A TOTP code or a recovery code of `user_id` (six to eight digits: TOTP; else a recovery
/// code). For auth_step_up; privileges are the caller's business.
pub(crate) fn verify_second_factor(user_id: Uuid, code: &str) -> AuthResult<bool> {
    let code = code.trim();
    if (6..=8).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit()) {
        verify_totp(user_id, code)
    } else {
        use_recovery_code(user_id, code)
    }
}

/// Consecutive wrong second factors (TOTP codes and recovery codes together) after which
/// verification is refused for [`SECOND_FACTOR_BLOCK_MICROS`]: a six-digit code must not be
/// guessable by trying. The counter is in shared memory (`login::shared`): a rollback, a
/// savepoint or an exception block after a wrong code does not give the attempt back.
const SECOND_FACTOR_LIMITS: Limits = Limits {
    max_failures: 5,
    lockout: SECOND_FACTOR_BLOCK_MICROS,
};
const SECOND_FACTOR_BLOCK_MICROS: i64 = 300 * 1_000_000;

/// Check one second factor of `user_id` under the attempt limit: `check` runs only when the
/// limit allows, its attempt is charged first and given back when it was right. `event_prefix`
/// names the events (`totp` → totp_verified / totp_failed / totp_rate_limited).
fn limited(
    what: &str,
    user_id: Uuid,
    event_prefix: &str,
    check: impl FnOnce() -> AuthResult<bool>,
) -> AuthResult<bool> {
    let key = shared::user_key(Kind::SecondFactor, &user_id);
    if shared::begin(what, &key, SECOND_FACTOR_LIMITS)? == Begin::Locked {
        // Costs the caller nothing (no code is checked): flood-controlled.
        if shared::event_number(&format!("{event_prefix}_rate_limited")).is_none() {
            return Ok(false);
        }
        record_failure_event(
            &format!("{event_prefix}_rate_limited"),
            &user_id.to_string(),
            "{}",
        )?;
        return Ok(false);
    }
    // Whatever `check` does (also when it raises), the charge stays until it says "right".
    if check()? {
        shared::succeeded(what, &key)?;
        Ok(true)
    } else {
        let (failures, newly_locked) = shared::failed(what, &key, SECOND_FACTOR_LIMITS)?;
        let details = serde_json::json!({"failed_count": failures, "blocked": newly_locked});
        record_failure_event(
            &format!("{event_prefix}_failed"),
            &user_id.to_string(),
            &details.to_string(),
        )?;
        Ok(false)
    }
}

pub(crate) fn verify_totp(user_id: Uuid, code: &str) -> AuthResult<bool> {
    shared::require("auth_totp_verify")?;
    // No row lock: that a code is used once is decided in shared memory (claim_step), so an
    // open transaction that verified a code holds up no other verification.
    let row = as_owner(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT secret, last_step FROM pgauth.totp WHERE user_id = $1",
                Some(1),
                &[user_id.into()],
            )?;
            if rows.is_empty() {
                return Ok(None);
            }
            let r = rows.first();
            Ok(r.get::<Vec<u8>>(1)?
                .map(|s| (s, r.get::<i64>(2).ok().flatten())))
        })
    })
    .map_err(spi_err)?;
    let Some((sealed, last_step)) = row else {
        return Ok(false);
    };
    limited("auth_totp_verify", user_id, "totp", || {
        let secret = as_owner(|| crate::crypto::sql::decrypt(&sealed, Some(user_id.as_bytes())))?;
        let Some(step) = check_totp(&secret, code, unix_now(), last_step) else {
            return Ok(false);
        };
        let key = shared::user_key(Kind::SecondFactor, &user_id);
        if !shared::claim_step("auth_totp_verify", &key, step as i64)? {
            return Ok(false);
        }
        // Kept in the row too (for after a restart); skipped when another open transaction
        // holds the row, which then stores a step at least as recent.
        as_owner(|| {
            Spi::run_with_args(
                "UPDATE pgauth.totp SET last_step = $2
                  WHERE user_id = $1 AND ctid = ANY (ARRAY(
                        SELECT ctid FROM pgauth.totp
                         WHERE user_id = $1 AND (last_step IS NULL OR last_step < $2)
                           FOR UPDATE SKIP LOCKED))",
                &[user_id.into(), (step as i64).into()],
            )
        })
        .map_err(spi_err)?;
        record_event("totp_verified", &user_id.to_string(), "{}")?;
        Ok(true)
    })
}

#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_recovery_codes(user_id: Uuid) -> SetOfIterator<'static, String> {
    require_service("auth_recovery_codes");
    username_of(&user_id).or_raise();
    let change = authorize_factor_change(&user_id, "auth_recovery_codes").or_raise();
    let codes = new_recovery_codes().or_raise();
    let hashes = codes
        .iter()
        .map(|code| recovery_code_hash(&user_id, code))
        .collect::<AuthResult<Vec<_>>>()
        .or_raise();
    as_owner(|| {
        Spi::run_with_args(
            "DELETE FROM pgauth.recovery_codes WHERE user_id = $1",
            &[user_id.into()],
        )?;
        for hash in &hashes {
            Spi::run_with_args(
                "INSERT INTO pgauth.recovery_codes (user_id, code_hash) VALUES ($1, $2)",
                &[user_id.into(), hash.as_slice().into()],
            )?;
        }
        Ok::<_, pgrx::spi::Error>(())
    })
    .map_err(spi_err)
    .or_raise();
    let details = change.audit(json!({}));
    record_event(
        "recovery_codes_generated",
        &user_id.to_string(),
        &details.to_string(),
    )
    .or_raise();
    SetOfIterator::new(codes)
}

/// Remove `user_id`'s TOTP; false when none was enrolled. Recovery codes and passkeys stay.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_totp_disable(user_id: Uuid) -> bool {
    require_service("auth_totp_disable");
    username_of(&user_id).or_raise();
    let change = authorize_factor_change(&user_id, "auth_totp_disable").or_raise();
    let removed = as_owner(|| {
        Spi::connect_mut(|client| {
            let rows = client.update(
                "DELETE FROM pgauth.totp WHERE user_id = $1 RETURNING 1",
                None,
                &[user_id.into()],
            )?;
            Ok::<_, pgrx::spi::Error>(!rows.is_empty())
        })
    })
    .map_err(spi_err)
    .or_raise();
    if removed {
        let details = change.audit(json!({}));
        record_event("totp_disabled", &user_id.to_string(), &details.to_string()).or_raise();
    }
    removed
}

/// Use one recovery code: true once per code.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_use_recovery_code(user_id: Uuid, code: &str) -> bool {
    require_service("auth_use_recovery_code");
    use_recovery_code(user_id, code).or_raise()
}

/// What is stored for a recovery code of `user_id`: HMAC-SHA3-256 under the `default` data key
/// (auth_hmac's derivation) of `recovery_code_message`. Needs the master key, like TOTP.
fn recovery_code_hash(user_id: &Uuid, code: &str) -> AuthResult<[u8; 32]> {
    let message = recovery_code_message(user_id.as_bytes(), code);
    as_owner(|| crate::crypto::sql::hmac(&message, "default"))
}

pub(crate) fn use_recovery_code(user_id: Uuid, code: &str) -> AuthResult<bool> {
    limited("auth_use_recovery_code", user_id, "recovery_code", || {
        let keyed = recovery_code_hash(&user_id, code)?;
        // Rows written before keyed hashing hold plain SHA-256; they keep working until used.
        let legacy = legacy_recovery_code_hash(code);
        let used = as_owner(|| {
            Spi::connect_mut(|client| {
                let rows = client.update(
                    "UPDATE pgauth.recovery_codes SET used_at = pg_catalog.now()
                      WHERE user_id = $1 AND code_hash IN ($2, $3) AND used_at IS NULL
                      RETURNING 1",
                    None,
                    &[
                        user_id.into(),
                        keyed.as_slice().into(),
                        legacy.as_slice().into(),
                    ],
                )?;
                Ok::<_, pgrx::spi::Error>(!rows.is_empty())
            })
        })
        .map_err(spi_err)?;
        if used {
            record_event("recovery_code_used", &user_id.to_string(), "{}")?;
        }
        Ok(used)
    })
}
