//! SQL functions for TOTP and recovery codes. For pgauth_admin and pgauth_service (the
//! application server that runs the sign-in flow). Also the one check every change of a user's
//! second factors passes (`authorize_factor_change`, used by the passkey functions too).

use pgrx::prelude::*;
use pgrx::Uuid;

use serde_json::json;

use super::api::authorize_factor_change;
use super::{
    check_totp, legacy_recovery_code_hash, new_recovery_codes, new_totp_secret,
    recovery_code_message, totp_uri,
};
use crate::error::{AuthResult, OrRaise};
use crate::login::api::username_of;
use crate::login::attempts::{Begin, Kind, Limits};
use crate::login::shared;
use crate::pg::event;
use crate::pg::roles::{as_owner, require, Who};
use crate::pg::spi::{read_row, spi_err};

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
    require(Who::AdminOrService, "auth_totp_enroll").or_raise();
    let username = username_of(&user_id).or_raise();
    let change = authorize_factor_change(&user_id, "auth_totp_enroll").or_raise();
    let secret = new_totp_secret().or_raise();
    // Encrypted with pgauth's own rights: the application role need not be granted the key.
    let sealed =
        as_owner(|| crate::crypto::api::encrypt(&secret, "default", Some(user_id.as_bytes())))
            .or_raise();
    as_owner(|| {
        crate::pg::spi::run_with_args(
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
    event::record("totp_enrolled", &user_id.to_string(), details).or_raise();
    Some(totp_uri(&secret, &username, issuer).or_raise())
}

/// Is `code` the user's current TOTP code? Each code is accepted once.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_totp_verify(user_id: Uuid, code: &str) -> bool {
    require(Who::AdminOrService, "auth_totp_verify").or_raise();
    verify_totp(user_id, code).or_raise()
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
        event::record_failure(
            &format!("{event_prefix}_rate_limited"),
            &user_id.to_string(),
            json!({}),
        )?;
        return Ok(false);
    }
    // Whatever `check` does (also when it raises), the charge stays until it says "right".
    if check()? {
        shared::succeeded(what, &key)?;
        Ok(true)
    } else {
        let (failures, newly_locked) = shared::failed(what, &key, SECOND_FACTOR_LIMITS)?;
        let details = json!({"failed_count": failures, "blocked": newly_locked});
        event::record_failure(
            &format!("{event_prefix}_failed"),
            &user_id.to_string(),
            details,
        )?;
        Ok(false)
    }
}

pub(crate) fn verify_totp(user_id: Uuid, code: &str) -> AuthResult<bool> {
    shared::require("auth_totp_verify")?;
    // No row lock: that a code is used once is decided in shared memory (claim_step), so an
    // open transaction that verified a code holds up no other verification.
    let row = as_owner(|| {
        read_row(
            "SELECT secret, last_step FROM pgauth.totp WHERE user_id = $1",
            &[user_id.into()],
            |r| {
                Ok(r.get::<Vec<u8>>(1)?
                    .map(|s| (s, r.get::<i64>(2).ok().flatten())))
            },
        )
        .map(Option::flatten)
    })
    .map_err(spi_err)?;
    let Some((sealed, last_step)) = row else {
        return Ok(false);
    };
    limited("auth_totp_verify", user_id, "totp", || {
        let secret = as_owner(|| crate::crypto::api::decrypt(&sealed, Some(user_id.as_bytes())))?;
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
            crate::pg::spi::run_with_args(
                "UPDATE pgauth.totp SET last_step = $2
                  WHERE user_id = $1 AND ctid = ANY (ARRAY(
                        SELECT ctid FROM pgauth.totp
                         WHERE user_id = $1 AND (last_step IS NULL OR last_step < $2)
                           FOR UPDATE SKIP LOCKED))",
                &[user_id.into(), (step as i64).into()],
            )
        })
        .map_err(spi_err)?;
        event::record("totp_verified", &user_id.to_string(), json!({}))?;
        Ok(true)
    })
}

#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_recovery_codes(user_id: Uuid) -> SetOfIterator<'static, String> {
    require(Who::AdminOrService, "auth_recovery_codes").or_raise();
    username_of(&user_id).or_raise();
    let change = authorize_factor_change(&user_id, "auth_recovery_codes").or_raise();
    let codes = new_recovery_codes().or_raise();
    let hashes = codes
        .iter()
        .map(|code| recovery_code_hash(&user_id, code))
        .collect::<AuthResult<Vec<_>>>()
        .or_raise();
    as_owner(|| {
        crate::pg::spi::run_with_args(
            "DELETE FROM pgauth.recovery_codes WHERE user_id = $1",
            &[user_id.into()],
        )?;
        for hash in &hashes {
            crate::pg::spi::run_with_args(
                "INSERT INTO pgauth.recovery_codes (user_id, code_hash) VALUES ($1, $2)",
                &[user_id.into(), hash.as_slice().into()],
            )?;
        }
        Ok::<_, pgrx::spi::Error>(())
    })
    .map_err(spi_err)
    .or_raise();
    let details = change.audit(json!({}));
    event::record("recovery_codes_generated", &user_id.to_string(), details).or_raise();
    SetOfIterator::new(codes)
}

/// Remove `user_id`'s TOTP; false when none was enrolled. Recovery codes and passkeys stay.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_totp_disable(user_id: Uuid) -> bool {
    require(Who::AdminOrService, "auth_totp_disable").or_raise();
    username_of(&user_id).or_raise();
    let change = authorize_factor_change(&user_id, "auth_totp_disable").or_raise();
    let removed = as_owner(|| {
        crate::pg::spi::connect_mut(|client| {
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
        event::record("totp_disabled", &user_id.to_string(), details).or_raise();
    }
    removed
}

/// Use one recovery code: true once per code.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_use_recovery_code(user_id: Uuid, code: &str) -> bool {
    require(Who::AdminOrService, "auth_use_recovery_code").or_raise();
    use_recovery_code(user_id, code).or_raise()
}

/// What is stored for a recovery code of `user_id`: HMAC-SHA3-256 under the `default` data key
/// (auth_hmac's derivation) of `recovery_code_message`. Needs the master key, like TOTP.
fn recovery_code_hash(user_id: &Uuid, code: &str) -> AuthResult<[u8; 32]> {
    let message = recovery_code_message(user_id.as_bytes(), code);
    as_owner(|| crate::crypto::api::hmac(&message, "default"))
}

pub(crate) fn use_recovery_code(user_id: Uuid, code: &str) -> AuthResult<bool> {
    limited("auth_use_recovery_code", user_id, "recovery_code", || {
        let keyed = recovery_code_hash(&user_id, code)?;
        // Rows written before keyed hashing hold plain SHA-256; they keep working until used.
        let legacy = legacy_recovery_code_hash(code);
        let used = as_owner(|| {
            crate::pg::spi::connect_mut(|client| {
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
            event::record("recovery_code_used", &user_id.to_string(), json!({}))?;
        }
        Ok(used)
    })
}
