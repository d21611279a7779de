//! The mfa capability's Rust API for other capabilities (inside PostgreSQL): the one check
//! every change of a user's second factors passes, and verifying a second factor under its
//! attempt limit.

use super::sql::use_recovery_code;
use super::sql::verify_totp;
use super::{decide_factor_change, FactorChangeDecision, FactorChangeRequest};
use crate::error::{AuthError, AuthResult};
use crate::pg::binding;
use crate::pg::roles::{as_owner, Who};
use crate::pg::spi::spi_err;
use pgrx::Uuid;
use serde_json::Value;

/// A permitted change of a user's second factors, for its audit row.
pub(crate) struct FactorChange {
    first_factor: bool,
    /// The level of the user's own bound session; None when an administrator or service acted
    /// without binding the user.
    aal: Option<u8>,
}

/// Before adding or removing a second factor (TOTP, a passkey, recovery codes) of `user_id`:
/// a transaction bound to that user needs aal 2 unless the user has no factor yet (42501 with
/// a hint to step up); otherwise the caller must be pgauth_admin or pgauth_service. Locks the
/// user's row until the transaction ends, so two concurrent first enrollments cannot both be
/// the first.
pub(crate) fn authorize_factor_change(user_id: &Uuid, action: &str) -> AuthResult<FactorChange> {
    let own_session_aal = binding::current()
        .filter(|b| &b.user_id == user_id.as_bytes())
        .map(|b| b.aal);
    let privileged = Who::AdminOrService.allows_caller();
    let has_factor = as_owner(|| {
        crate::pg::spi::connect_mut(|client| {
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
        FactorChangeDecision::NotPermitted => Err(Who::SelfOr(user_id.as_bytes()).refused(action)),
    }
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
