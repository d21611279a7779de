//! bcrypt `$2a$` / `$2b$` / `$2y$` hashes (pgcrypto's `crypt(.., gen_salt('bf'))`, PHP, Python
//! bcrypt, OpenBSD). Verify only: pgauth writes Argon2id.

use super::limits::BCRYPT_COST;
use crate::error::{AuthError, AuthResult};

const SCHEME: &str = "bcrypt";
const BCRYPT_ALPHABET: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn malformed(problem: &str) -> AuthError {
    AuthError::MalformedHash {
        scheme: SCHEME,
        problem: problem.to_string(),
    }
}

/// A bcrypt hash that passed every structural and cost check.
pub struct BcryptHash<'a> {
    text: &'a str,
}

impl<'a> BcryptHash<'a> {
    pub fn parse(hash: &'a str) -> AuthResult<Self> {
        let bytes = hash.as_bytes();
        if !(hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$")) {
            return Err(AuthError::UnknownHashScheme);
        }
        if bytes.len() != 60 {
            return Err(malformed(
                "expected 60 characters: $2b$NN$ then 53 of [./A-Za-z0-9]",
            ));
        }
        if bytes[6] != b'$' || !bytes[4].is_ascii_digit() || !bytes[5].is_ascii_digit() {
            return Err(malformed("cost must be two digits followed by $"));
        }
        if !bytes[7..].iter().all(|b| BCRYPT_ALPHABET.contains(b)) {
            return Err(malformed(
                "salt and hash must use the bcrypt base64 alphabet",
            ));
        }
        let cost = u32::from(bytes[4] - b'0') * 10 + u32::from(bytes[5] - b'0');
        if cost < BCRYPT_COST.0 || cost > BCRYPT_COST.1 {
            return Err(AuthError::HostileHashParameter {
                scheme: SCHEME,
                parameter: "cost",
                value: u64::from(cost),
                min: u64::from(BCRYPT_COST.0),
                max: u64::from(BCRYPT_COST.1),
            });
        }
        Ok(Self { text: hash })
    }

    pub fn verify(&self, password: &[u8]) -> AuthResult<bool> {
        // bcrypt::verify compares in constant time; it uses only the first 72 bytes of the
        // password, exactly as every other bcrypt implementation does.
        bcrypt::verify(password, self.text).map_err(|_| malformed("cannot be decoded"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_all_prefixes() {
        let b = bcrypt::hash_with_salt("hunter2", 4, [7u8; 16]).unwrap();
        for version in [
            bcrypt::Version::TwoA,
            bcrypt::Version::TwoB,
            bcrypt::Version::TwoY,
        ] {
            let text = b.format_for_version(version);
            let parsed = BcryptHash::parse(&text).unwrap();
            assert!(parsed.verify(b"hunter2").unwrap());
            assert!(!parsed.verify(b"hunter3").unwrap());
        }
    }

    #[test]
    fn refuses_bad_costs_and_shapes() {
        let good = bcrypt::hash_with_salt("x", 4, [1u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoB);
        let cost31 = format!("$2b$31{}", &good[6..]);
        assert!(matches!(
            BcryptHash::parse(&cost31),
            Err(AuthError::HostileHashParameter { .. })
        ));
        let cost03 = format!("$2b$03{}", &good[6..]);
        assert!(matches!(
            BcryptHash::parse(&cost03),
            Err(AuthError::HostileHashParameter { .. })
        ));
        assert!(matches!(
            BcryptHash::parse(&good[..59]),
            Err(AuthError::MalformedHash { .. })
        ));
        let bad_char = format!("{}!", &good[..59]);
        assert!(matches!(
            BcryptHash::parse(&bad_char),
            Err(AuthError::MalformedHash { .. })
        ));
        assert!(matches!(
            BcryptHash::parse("$2x$10$abc"),
            Err(AuthError::UnknownHashScheme)
        ));
    }
}
