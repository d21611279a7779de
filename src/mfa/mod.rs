//! Second factors: TOTP (RFC 6238, via totp-rs) with replay protection, and single-use recovery
//! codes stored only as SHA-256. Plain Rust; `sql.rs` stores the TOTP secret encrypted under the
//! `default` data key (the crypto capability) and records every use in the audit log.

pub(crate) mod api;
pub(crate) mod sql;

/// The check every change of a user's second factors passes, passkeys included.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{AuthError, AuthResult};

pub const TOTP_SECRET_BYTES: usize = 20;
pub const RECOVERY_CODES: usize = 8;

pub fn new_totp_secret() -> AuthResult<Zeroizing<Vec<u8>>> {
    let mut s = Zeroizing::new(vec![0u8; TOTP_SECRET_BYTES]);
    crate::random::fill(&mut s)?;
    Ok(s)
}

/// The otpauth label is "issuer:account", so neither may contain a colon (Google's Key URI
/// format): in the label only, a colon becomes U+A789 (modifier letter colon), which looks the
/// same in an authenticator app. The secret and the codes do not depend on the label.
fn label(name: &str) -> String {
    name.replace(':', "\u{A789}")
}

fn totp(secret: &[u8], account: &str, issuer: Option<&str>) -> AuthResult<totp_rs::Totp> {
    let issuer = issuer.map(label);
    totp_rs::Builder::new()
        .with_secret(secret.to_vec())
        .with_account_name(label(account))
        .with_issuer(issuer.as_deref())
        .build()
        .map_err(|e| AuthError::InvalidRequest(format!("cannot set up TOTP: {e}")))
}

/// The otpauth:// URI an authenticator app reads (SHA-1, 6 digits, 30 s: what every app supports).
pub fn totp_uri(secret: &[u8], account: &str, issuer: Option<&str>) -> AuthResult<String> {
    totp(secret, account, issuer)?
        .to_url()
        .map_err(|e| AuthError::InvalidRequest(format!("cannot build the otpauth URI: {e}")))
}

/// The time step `code` is valid for at `unix_time` (±1 step), if it is valid and newer than
/// `last_step` (a code is accepted once: RFC 6238 §5.2).
pub fn check_totp(
    secret: &[u8],
    code: &str,
    unix_time: u64,
    last_step: Option<i64>,
) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = totp(secret, "", None).ok()?;
    let step = t.check(&code, unix_time)?;
    match last_step {
        Some(last) if step as i64 <= last => None,
        _ => Some(step),
    }
}

/// Eight new recovery codes like `k3j9q-xw7pd`: ten characters drawn uniformly from 31
/// (49.5 random bits each).
pub fn new_recovery_codes() -> AuthResult<Vec<String>> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789"; // no 0/o, 1/l/i
                                                                // Bytes of 248 and more are skipped, so every character is equally likely (248 = 8 × 31).
    let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
    let mut out = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let mut chars = String::with_capacity(11);
        while chars.len() < 10 {
            let mut bytes = [0u8; 16];
            crate::random::fill(&mut bytes)?;
            for b in bytes.iter().filter(|b| **b < limit) {
                if chars.len() < 10 {
                    chars.push(ALPHABET[(*b as usize) % ALPHABET.len()] as char);
                }
            }
        }
        out.push(format!("{}-{}", &chars[..5], &chars[5..]));
    }
    Ok(out)
}

/// A recovery code without spaces or dashes, lower case.
fn normalize_recovery_code(code: &str) -> Zeroizing<String> {
    Zeroizing::new(
        code.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect(),
    )
}

/// Domain label of the keyed recovery-code hash.
pub const RECOVERY_CODE_LABEL: &[u8] = b"pgauth recovery code v1";

/// The message whose HMAC (under the `default` data key, see mfa::sql) is stored for a recovery
/// code: label || user id (16 bytes) || normalised code. Keyed, so a copy of the table cannot be
/// searched offline for 49-bit codes; the user id keeps equal codes of two users apart.
pub fn recovery_code_message(user_id: &[u8; 16], code: &str) -> Zeroizing<Vec<u8>> {
    let normalized = normalize_recovery_code(code);
    let mut message = Zeroizing::new(Vec::with_capacity(
        RECOVERY_CODE_LABEL.len() + 16 + normalized.len(),
    ));
    message.extend_from_slice(RECOVERY_CODE_LABEL);
    message.extend_from_slice(user_id);
    message.extend_from_slice(normalized.as_bytes());
    message
}

/// What versions before keyed hashing stored: plain SHA-256 of the normalised code. Still
/// accepted when a code is used, never written.
pub fn legacy_recovery_code_hash(code: &str) -> [u8; 32] {
    Sha256::digest(normalize_recovery_code(code).as_bytes()).into()
}

/// For logs: which code without revealing it.
pub fn fingerprint(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(bytes)[..6])
}

/// Who asks to add or remove a second factor (TOTP, a passkey, recovery codes) of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactorChangeRequest {
    /// The assurance level of this transaction's binding, when it binds that very user.
    pub own_session_aal: Option<u8>,
    /// The caller is a member of pgauth_admin or pgauth_service (or a superuser).
    pub privileged: bool,
    /// The user already has a second factor.
    pub has_factor: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorChangeDecision {
    /// `first_factor`: the user had none (recorded in the audit row).
    Allowed { first_factor: bool },
    /// The user's own session must step up to aal 2 first.
    NeedsStepUp,
    /// Neither the user's own session nor an administrator.
    NotPermitted,
}

/// A password alone must not reach aal 2: a session of the user below aal 2 may enroll the
/// first factor only. Administrators and application servers acting without binding the user
/// vouch for the change themselves.
pub fn decide_factor_change(request: FactorChangeRequest) -> FactorChangeDecision {
    let first_factor = !request.has_factor;
    match request.own_session_aal {
        Some(aal) if aal >= 2 || first_factor => FactorChangeDecision::Allowed { first_factor },
        Some(_) => FactorChangeDecision::NeedsStepUp,
        None if request.privileged => FactorChangeDecision::Allowed { first_factor },
        None => FactorChangeDecision::NotPermitted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_changes_need_aal_2_once_the_user_has_a_factor() {
        use FactorChangeDecision::*;
        let ask = |own_session_aal, privileged, has_factor| {
            decide_factor_change(FactorChangeRequest {
                own_session_aal,
                privileged,
                has_factor,
            })
        };
        // The user's own session: aal 1 only for the first factor; aal 2 always.
        assert_eq!(ask(Some(1), false, false), Allowed { first_factor: true });
        assert_eq!(ask(Some(1), false, true), NeedsStepUp);
        assert_eq!(
            ask(Some(2), false, true),
            Allowed {
                first_factor: false
            }
        );
        assert_eq!(ask(Some(3), false, false), Allowed { first_factor: true });
        // A privileged caller that binds the user is held to the user's level all the same.
        assert_eq!(ask(Some(1), true, true), NeedsStepUp);
        // Without binding the user: administrators and services only.
        assert_eq!(
            ask(None, true, true),
            Allowed {
                first_factor: false
            }
        );
        assert_eq!(ask(None, true, false), Allowed { first_factor: true });
        assert_eq!(ask(None, false, false), NotPermitted);
        assert_eq!(ask(None, false, true), NotPermitted);
    }

    // RFC 6238 appendix B, SHA-1 secret "12345678901234567890": at T=59 the 8-digit code is
    // 94287082, so the 6-digit code is 287082; at T=1111111109 it is 07081804 → 081804.
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc6238_vectors() {
        assert_eq!(check_totp(RFC_SECRET, "287082", 59, None), Some(1));
        assert_eq!(
            check_totp(RFC_SECRET, "081804", 1_111_111_109, None),
            Some(37_037_036)
        );
        assert_eq!(check_totp(RFC_SECRET, "287083", 59, None), None);
        assert_eq!(check_totp(RFC_SECRET, "28708", 59, None), None);
        assert_eq!(check_totp(RFC_SECRET, "abcdef", 59, None), None);
    }

    #[test]
    fn one_step_of_clock_skew_either_way() {
        // 287082 is the code of step 1 (30 s to 59 s).
        assert_eq!(check_totp(RFC_SECRET, "287082", 29, None), Some(1)); // a step early
        assert_eq!(check_totp(RFC_SECRET, "287082", 89, None), Some(1)); // a step late
        assert_eq!(check_totp(RFC_SECRET, "287082", 119, None), None); // two steps late
        assert_eq!(check_totp(RFC_SECRET, "287082", 0, None), Some(1));
        assert_eq!(check_totp(RFC_SECRET, "287082", 90, None), None);
    }

    #[test]
    fn a_code_is_accepted_once() {
        assert_eq!(check_totp(RFC_SECRET, "287082", 59, Some(0)), Some(1));
        assert_eq!(check_totp(RFC_SECRET, "287082", 59, Some(1)), None);
    }

    #[test]
    fn uri_names_account_issuer_and_secret() {
        let uri = totp_uri(RFC_SECRET, "alice", Some("pgauth demo")).unwrap();
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(
            uri.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            "{uri}"
        );
        assert!(uri.contains("alice"), "{uri}");
    }

    #[test]
    fn a_colon_in_the_account_or_issuer_does_not_break_the_uri() {
        let uri = totp_uri(RFC_SECRET, "corp:alice", Some("acme:eu")).unwrap();
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(
            uri.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            "{uri}"
        );
        // One label separator only; the names are still recognisable.
        let label = uri["otpauth://totp/".len()..].split('?').next().unwrap();
        assert_eq!(
            label.matches(':').count() + label.matches("%3A").count(),
            1,
            "{uri}"
        );
        assert!(label.contains("alice") && label.contains("corp"), "{uri}");
    }

    #[test]
    fn recovery_codes_are_distinct_and_normalised() {
        let codes = new_recovery_codes().unwrap();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), RECOVERY_CODES);
        let c = &codes[0];
        let user = [7u8; 16];
        assert_eq!(
            recovery_code_message(&user, c),
            recovery_code_message(&user, &c.to_uppercase().replace('-', " "))
        );
        assert_ne!(
            recovery_code_message(&user, c),
            recovery_code_message(&user, &codes[1])
        );
        assert_ne!(
            recovery_code_message(&user, c),
            recovery_code_message(&[8u8; 16], c)
        );
        assert_eq!(
            legacy_recovery_code_hash(c),
            legacy_recovery_code_hash(&c.to_uppercase().replace('-', " "))
        );
    }
}
