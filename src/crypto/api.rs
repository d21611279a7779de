//! The crypto capability's Rust API for other capabilities (inside PostgreSQL): encrypt and
//! decrypt with a named key, keyed HMAC, and the master-key settings as values (for caches that
//! must notice a change).

use super::envelope;
use super::store::*;
use crate::error::{AuthError, AuthResult};
use crate::pg::roles::caller;

/// `pgauth.master_key_file` and `pgauth.master_key_command`, as set now.
/// The master key's settings as values, for caches that must notice a change.
pub(crate) fn master_settings() -> MasterSettings {
    crate::settings::crypto().master_key()
}

pub(crate) use crate::settings::MasterKeySource as MasterSettings;

pub(crate) fn encrypt(plaintext: &[u8], key_name: &str, aad: Option<&[u8]>) -> AuthResult<Vec<u8>> {
    // Per-row fast path: seal with the cached key in place (no copy of the key).
    refresh_key_state()?;
    require_key_usage(key_name)?;
    let sealed = STATE.with(|s| {
        s.borrow()
            .cache
            .get_active(key_name)
            .map(|(id, key)| envelope::seal(key, id, plaintext, aad))
    });
    if let Some(sealed) = sealed {
        return sealed;
    }
    let (id, key) = active_key(key_name, true)?;
    envelope::seal(&key, id, plaintext, aad)
}

pub(crate) fn decrypt(
    ciphertext: &[u8],
    aad: Option<&[u8]>,
) -> AuthResult<zeroize::Zeroizing<Vec<u8>>> {
    let header = envelope::parse_header(ciphertext)?;
    // Per-row fast path: key cached and its use already allowed in this statement — open with
    // the cached key in place, without copying key or name.
    refresh_key_state()?;
    let role = caller();
    let opened = STATE.with(|s| {
        let s = s.borrow();
        let name = s.key_names.get(&header.key_id)?;
        let allowed = s
            .usage
            .get(&role)
            .and_then(|names| names.get(name.as_str()))?;
        let key = s.cache.get(&header.key_id)?;
        allowed.then(|| envelope::open(key, ciphertext, aad))
    });
    if let Some(opened) = opened {
        return opened;
    }
    let key = key_by_id(&header.key_id)?;
    envelope::open(&key, ciphertext, aad)
}

/// auth_hmac for pgauth's own use (keyed recovery codes): the caller's key usage is checked,
/// and the `default` key is made on first use, as auth_encrypt makes it.
pub(crate) fn hmac(data: &[u8], key_name: &str) -> AuthResult<[u8; 32]> {
    let key = match first_version_key(key_name) {
        Err(AuthError::NoSuchKeyName(_)) if key_name == DEFAULT_KEY => {
            active_key(DEFAULT_KEY, true)?;
            first_version_key(key_name)?
        }
        other => other?,
    };
    Ok(super::digest::keyed_hmac(&key, data))
}

/// The key generation, moved by every change to data keys, signing keys and grants (also by
/// other sessions): what the signing-key cache compares once per statement.
pub(crate) fn key_generation() -> AuthResult<i64> {
    super::store::key_generation()
}
