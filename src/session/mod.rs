//! Session identity: opaque session tokens and refresh tokens (stored only as SHA-256) and API
//! keys. Binding a user to the current transaction is the shared layer's (`crate::pg::binding`):
//! this capability's SQL functions decide *whom* to bind.

pub(crate) mod api;
pub mod api_keys;
pub(crate) mod sql;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::AuthResult;

pub const TOKEN_PREFIX: &str = "pgs_";

/// A new session token: "pgs_" + 32 random bytes, base64url.
pub fn new_token() -> AuthResult<String> {
    let mut bytes = [0u8; 32];
    crate::random::fill(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// What is stored: SHA-256 of the whole token text.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A well-formed token has the prefix and 43 base64url characters; anything else is refused
/// before a lookup.
pub fn looks_like_token(token: &str) -> bool {
    token.len() == TOKEN_PREFIX.len() + 43
        && token.starts_with(TOKEN_PREFIX)
        && token[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new refresh token: "pgr_" + 32 random bytes, base64url; stored only as SHA-256.
pub fn new_refresh_token() -> AuthResult<String> {
    Ok(new_token()?.replacen(TOKEN_PREFIX, REFRESH_PREFIX, 1))
}

pub const REFRESH_PREFIX: &str = "pgr_";

/// A well-formed refresh token: the prefix and 43 base64url characters.
pub fn looks_like_refresh_token(token: &str) -> bool {
    token.starts_with(REFRESH_PREFIX)
        && looks_like_token(&token.replacen(REFRESH_PREFIX, TOKEN_PREFIX, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_well_formed_and_hashed() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(looks_like_token(&a), "{a}");
        assert!(!looks_like_token("pgs_short"));
        assert!(!looks_like_token(&a.replace("pgs_", "xyz_")));
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn refresh_tokens_have_their_own_prefix() {
        let r = new_refresh_token().unwrap();
        assert!(looks_like_refresh_token(&r), "{r}");
        assert!(!looks_like_token(&r));
        assert!(!looks_like_refresh_token(&new_token().unwrap()));
    }
}
