//! Session identity: opaque session tokens (stored only as SHA-256) and the binding of a pgauth
//! user to the current transaction.
//!
//! The binding lives in a hidden setting (`pgauth.session_binding`) that only this code can
//! change: its check hook refuses every `SET`, `set_config` or `RESET` from SQL, superusers
//! included. It is set with transaction-local scope, so it is gone at COMMIT or ROLLBACK (a
//! transaction-pooling pgbouncer never hands it to another client), and PostgreSQL copies it to
//! parallel workers, so checks in parallel plans see the same user.

pub mod api_keys;
pub(crate) mod sql;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::net::IpAddr;

use crate::error::{AuthError, AuthResult};
use crate::rbac::model::parse_uuid;

pub const TOKEN_PREFIX: &str = "pgs_";

/// A new session token: "pgs_" + 32 random bytes, base64url.
pub fn new_token() -> AuthResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| AuthError::Internal(format!("OS random generator failed: {e}")))?;
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

/// The bound user, the client address seen when binding, the assurance level of the binding
/// (1: password or API key; 2: multi-factor, a passkey with user verification, or a step-up) and
/// the session it came from (None for `auth_bind_user`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub user_id: [u8; 16],
    pub client: Option<IpAddr>,
    pub aal: u8,
    pub session: Option<[u8; 16]>,
}

impl Binding {
    /// `user aal session|- client|-`: the hidden setting's value.
    pub fn encode(&self) -> String {
        let id = crate::rbac::model::format_uuid(&self.user_id);
        let session = self
            .session
            .as_ref()
            .map_or_else(|| "-".to_string(), crate::rbac::model::format_uuid);
        let client = self
            .client
            .map_or_else(|| "-".to_string(), |ip| ip.to_string());
        format!("{id} {} {session} {client}", self.aal)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(' ');
        let user_id = parse_uuid(parts.next()?)?;
        let aal = parts
            .next()?
            .parse::<u8>()
            .ok()
            .filter(|a| (1..=3).contains(a))?;
        let session = match parts.next()? {
            "-" => None,
            s => Some(parse_uuid(s)?),
        };
        let client = match parts.next()? {
            "-" => None,
            ip => Some(ip.parse::<IpAddr>().ok()?),
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            user_id,
            client,
            aal,
            session,
        })
    }
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
    fn binding_round_trip() {
        let id = parse_uuid("0f8fad5b-d9cb-469f-a165-70867728950e").unwrap();
        let sid = parse_uuid("1f8fad5b-d9cb-469f-a165-70867728950e").unwrap();
        for client in [
            None,
            Some("10.1.2.3".parse().unwrap()),
            Some("2001:db8::7".parse().unwrap()),
        ] {
            for (aal, session) in [(1, None), (2, Some(sid))] {
                let b = Binding {
                    user_id: id,
                    client,
                    aal,
                    session,
                };
                assert_eq!(Binding::decode(&b.encode()), Some(b));
            }
        }
        assert_eq!(Binding::decode("garbage"), None);
        assert_eq!(Binding::decode(""), None);
        assert_eq!(
            Binding::decode("0f8fad5b-d9cb-469f-a165-70867728950e 4 - -"),
            None,
            "aal out of range"
        );
        assert_eq!(
            Binding::decode("0f8fad5b-d9cb-469f-a165-70867728950e 1 - - extra"),
            None
        );
    }

    #[test]
    fn refresh_tokens_have_their_own_prefix() {
        let r = new_refresh_token().unwrap();
        assert!(looks_like_refresh_token(&r), "{r}");
        assert!(!looks_like_token(&r));
        assert!(!looks_like_refresh_token(&new_token().unwrap()));
    }
}
