//! Passwords: Argon2id hashing, verification of the hashes other systems already store, and the
//! password policy.
//!
//! Everything here except `sql.rs` and `role_check.rs` is plain Rust with no pgrx types, so it is
//! unit-tested and fuzzable without a database. This folder never logs or formats a password or a
//! full hash; errors carry only scheme names and limits.

pub(crate) mod api;
pub mod argon2;
pub mod bcrypt;
pub mod crypt;
pub mod limits;
pub mod pbkdf2;
pub mod policy;
pub(crate) mod role_check;
pub(crate) mod sql;

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

pub use self::argon2::{hash_password, Argon2Settings};

use crate::error::{AuthError, AuthResult};
use limits::MAX_PASSWORD_BYTES;

/// A stored hash, parsed and checked against every limit, ready to verify.
pub enum StoredHash<'a> {
    Argon2(self::argon2::Argon2Hash),
    Bcrypt(self::bcrypt::BcryptHash<'a>),
    Pbkdf2(self::pbkdf2::Pbkdf2Hash),
    Crypt(self::crypt::CryptHash<'a>),
}

impl<'a> StoredHash<'a> {
    /// Recognise the scheme by its prefix and parse it. Unknown → `UnknownHashScheme`.
    pub fn parse(hash: &'a str) -> AuthResult<Self> {
        if hash.starts_with("$argon2") {
            Ok(Self::Argon2(self::argon2::Argon2Hash::parse(hash)?))
        } else if hash.starts_with("$2") {
            Ok(Self::Bcrypt(self::bcrypt::BcryptHash::parse(hash)?))
        } else if hash.starts_with("$pbkdf2-") {
            Ok(Self::Pbkdf2(self::pbkdf2::Pbkdf2Hash::parse_passlib(hash)?))
        } else if hash.starts_with("pbkdf2_sha256$") {
            Ok(Self::Pbkdf2(self::pbkdf2::Pbkdf2Hash::parse_django(hash)?))
        } else if hash.starts_with("$1$") || hash.starts_with("$5$") || hash.starts_with("$6$") {
            Ok(Self::Crypt(self::crypt::CryptHash::parse(hash)?))
        } else {
            Err(AuthError::UnknownHashScheme)
        }
    }

    pub fn verify(&self, password: &[u8]) -> AuthResult<bool> {
        check_password_length(password)?;
        match self {
            Self::Argon2(h) => h.verify(password),
            Self::Bcrypt(h) => h.verify(password),
            Self::Pbkdf2(h) => Ok(h.verify(password)),
            Self::Crypt(h) => h.verify(password),
        }
    }

    pub fn needs_rehash(&self, settings: &Argon2Settings) -> bool {
        match self {
            Self::Argon2(h) => h.needs_rehash(settings),
            _ => true,
        }
    }
}

pub fn check_password_length(password: &[u8]) -> AuthResult<()> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::PasswordTooLong {
            max: MAX_PASSWORD_BYTES,
        });
    }
    Ok(())
}

/// Verify `password` against any supported stored hash, in constant time for the comparison.
pub fn verify(password: &[u8], hash: &str) -> AuthResult<bool> {
    check_password_length(password)?;
    StoredHash::parse(hash)?.verify(password)
}

/// As [`verify`], refusing (before any work) an Argon2 hash that asks for more than
/// `max_memory_kib` of memory: the bound for hashes a caller supplies (`pgauth.max_verify_memory_kib`).
pub fn verify_bounded(password: &[u8], hash: &str, max_memory_kib: u32) -> AuthResult<bool> {
    check_password_length(password)?;
    bounded(StoredHash::parse(hash)?, max_memory_kib)?.verify(password)
}

/// `stored`, unless it is an Argon2 hash asking for more than `max_memory_kib`.
pub fn bounded(stored: StoredHash<'_>, max_memory_kib: u32) -> AuthResult<StoredHash<'_>> {
    if let StoredHash::Argon2(h) = &stored {
        if h.memory_kib > max_memory_kib {
            return Err(AuthError::HostileHashParameter {
                scheme: "argon2",
                parameter: "m",
                value: u64::from(h.memory_kib),
                min: u64::from(limits::ARGON2_MIN_MEMORY_KIB),
                max: u64::from(max_memory_kib),
            });
        }
    }
    Ok(stored)
}

/// True unless `hash` is Argon2id (v1.3) with at least `settings`.
pub fn needs_rehash(hash: &str, settings: &Argon2Settings) -> AuthResult<bool> {
    Ok(StoredHash::parse(hash)?.needs_rehash(settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_bounded_refuses_hashes_over_the_memory_bound() {
        let settings = Argon2Settings {
            memory_kib: 16384,
            iterations: 1,
            parallelism: 1,
        };
        let hash = hash_password(b"pw", &settings).unwrap();
        assert!(verify_bounded(b"pw", &hash, 16384).unwrap());
        assert!(matches!(
            verify_bounded(b"pw", &hash, 8192),
            Err(AuthError::HostileHashParameter { parameter: "m", .. })
        ));
    }

    /// Every fixture made by a real third-party tool (tests/fixtures/make_fixtures.sh) verifies
    /// with its password and fails with a wrong one.
    #[test]
    fn fixtures_from_real_tools_verify() {
        let fixtures = include_str!("../../tests/fixtures/hashes.tsv");
        let mut count = 0;
        for line in fixtures.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let cols: Vec<&str> = line.split('\t').collect();
            let (tool, scheme, password, hash) = (cols[0], cols[1], cols[2], cols[3]);
            assert_eq!(
                verify(password.as_bytes(), hash),
                Ok(true),
                "{tool} {scheme} should verify"
            );
            let wrong = format!("{password}x");
            let expect_wrong = scheme.contains("long"); // bcrypt ignores bytes past 72
            assert_eq!(
                verify(wrong.as_bytes(), hash),
                Ok(expect_wrong),
                "{tool} {scheme} with a wrong password"
            );
            assert!(needs_rehash(hash, &Argon2Settings::OWASP).is_ok());
            count += 1;
        }
        assert!(count >= 30, "only {count} fixtures");
    }

    #[test]
    fn bad_hash_fixtures_are_errors() {
        let fixtures = include_str!("../../tests/fixtures/bad_hashes.tsv");
        let mut count = 0;
        for line in fixtures.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let (why, hash) = line.split_once('\t').unwrap_or((line, ""));
            let result = verify(b"password", hash);
            assert!(result.is_err(), "{why}: {hash}");
            // Hostile costs are refused by the parser, before any hashing work starts.
            if why.starts_with("hostile") {
                assert!(
                    matches!(result, Err(AuthError::HostileHashParameter { .. })),
                    "{why}: {result:?}"
                );
            }
            count += 1;
        }
        assert!(count >= 20);
    }

    #[test]
    fn too_long_password_is_refused() {
        let long = vec![b'a'; MAX_PASSWORD_BYTES + 1];
        let h = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
        assert!(matches!(
            verify(&long, h),
            Err(AuthError::PasswordTooLong { .. })
        ));
        assert!(matches!(
            hash_password(&long, &Argon2Settings::OWASP),
            Err(AuthError::PasswordTooLong { .. })
        ));
    }

    #[test]
    fn unknown_schemes() {
        for h in [
            "",
            "plaintext",
            "$9$abc",
            "$argon2x$v=19$m=1,t=1,p=1$a$b",
            "{SSHA}abc",
        ] {
            assert_eq!(verify(b"pw", h), Err(AuthError::UnknownHashScheme), "{h}");
        }
    }

    #[test]
    fn error_messages_never_contain_the_password_or_hash() {
        let secret = "Sup3r-Secret-Value";
        let hash = format!("$argon2id$v=19$m=65536,t=2,p=1${secret}$AAAA");
        let err = verify(secret.as_bytes(), &hash).unwrap_err().to_string();
        assert!(!err.contains(secret), "{err}");
    }
}
