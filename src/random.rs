//! Random bytes from the operating system, for every secret and id pgauth makes (tokens, salts,
//! keys, nonces, uuids): one place that says what happens when the generator fails.

use crate::error::{AuthError, AuthResult};

/// Fill `buf` from the OS generator; an error (never a weaker fallback) when it fails.
pub fn fill(buf: &mut [u8]) -> AuthResult<()> {
    getrandom::fill(buf)
        .map_err(|e| AuthError::Internal(format!("OS random generator failed: {e}")))
}

/// A random (version 4) UUID in RFC 4122 byte order, for ids made in Rust (key ids, kids).
pub fn uuid_v4() -> AuthResult<[u8; 16]> {
    let mut id = [0u8; 16];
    fill(&mut id)?;
    id[6] = (id[6] & 0x0f) | 0x40; // UUID version 4
    id[8] = (id[8] & 0x3f) | 0x80; // RFC 4122 variant
    Ok(id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_are_version_4_and_differ() {
        let (a, b) = (super::uuid_v4().unwrap(), super::uuid_v4().unwrap());
        assert_ne!(a, b);
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(a[8] >> 6, 0b10);
    }
}
