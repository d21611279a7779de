//! API keys: long-lived credentials for programs. The key is shown once; pgauth stores its
//! public prefix and the SHA-256 of the whole key. Format: `pga_<prefix>_<secret>` with an
//! 8-character prefix (for lookup, logs and revocation) and 32 random bytes (base64url).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::AuthResult;

pub const API_KEY_PREFIX: &str = "pga_";
const PREFIX_CHARS: usize = 8;
const SECRET_CHARS: usize = 43;

/// A new key and its prefix.
pub fn new_api_key() -> AuthResult<(String, String)> {
    let mut bytes = [0u8; 38];
    crate::random::fill(&mut bytes)?;
    // 6 bytes → 8 base64url characters of prefix; 32 bytes → 43 characters of secret.
    let prefix = URL_SAFE_NO_PAD.encode(&bytes[..6]).replace(['-', '_'], "x");
    let secret = URL_SAFE_NO_PAD.encode(&bytes[6..]);
    Ok((format!("{API_KEY_PREFIX}{prefix}_{secret}"), prefix))
}

/// The prefix of a well-formed key, or None (then nothing is looked up).
pub fn api_key_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let (prefix, secret) = rest.split_at_checked(PREFIX_CHARS)?;
    let secret = secret.strip_prefix('_')?;
    let ok = prefix.bytes().all(|b| b.is_ascii_alphanumeric())
        && secret.len() == SECRET_CHARS
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(prefix)
}

pub fn api_key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Whether a key with `scopes` (None: created without scopes, usable everywhere) may be used
/// for `wanted` (None: no particular scope asked for).
pub fn scope_allowed(scopes: Option<&[Option<String>]>, wanted: Option<&str>) -> bool {
    match (scopes, wanted) {
        (_, None) | (None, Some(_)) => true,
        (Some(list), Some(w)) => list.iter().flatten().any(|s| s == w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_well_formed_and_distinct() {
        let (a, pa) = new_api_key().unwrap();
        let (b, pb) = new_api_key().unwrap();
        assert_ne!(a, b);
        assert_ne!(pa, pb);
        assert_eq!(api_key_prefix(&a), Some(pa.as_str()));
        assert_eq!(a.len(), 4 + 8 + 1 + 43);
        assert_ne!(api_key_hash(&a), api_key_hash(&b));
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        let (a, _) = new_api_key().unwrap();
        assert_eq!(api_key_prefix(&a[..a.len() - 1]), None);
        assert_eq!(api_key_prefix(&a.replacen("pga_", "pgz_", 1)), None);
        assert_eq!(api_key_prefix("pga_short"), None);
        assert_eq!(api_key_prefix(""), None);
    }

    #[test]
    fn scopes_limit_what_a_key_is_for() {
        let deploy = [Some("deploy".to_string()), None];
        assert!(scope_allowed(Some(&deploy), Some("deploy")));
        assert!(!scope_allowed(Some(&deploy), Some("admin")));
        assert!(!scope_allowed(Some(&[]), Some("deploy")));
        assert!(scope_allowed(Some(&[]), None));
        assert!(scope_allowed(None, Some("anything")));
    }
}
