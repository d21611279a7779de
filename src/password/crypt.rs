//! crypt(3)-family hashes as written by pgcrypto and glibc: `$1$` md5-crypt and `$5$` / `$6$`
//! sha-crypt. Verify only: these are legacy schemes that `auth_needs_rehash` always flags.

use sha_crypt::{PasswordVerifier, ShaCrypt};

use super::limits::SHA_CRYPT_ROUNDS;
use crate::error::{AuthError, AuthResult};

const CRYPT_ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn in_alphabet(s: &str) -> bool {
    s.bytes().all(|b| CRYPT_ALPHABET.contains(&b))
}

fn malformed(scheme: &'static str, problem: &str) -> AuthError {
    AuthError::MalformedHash {
        scheme,
        problem: problem.to_string(),
    }
}

pub enum CryptHash<'a> {
    Md5(&'a str),
    Sha(&'a str),
}

impl<'a> CryptHash<'a> {
    pub fn parse(hash: &'a str) -> AuthResult<Self> {
        if let Some(rest) = hash.strip_prefix("$1$") {
            const SCHEME: &str = "md5-crypt";
            let Some((salt, digest)) = rest.split_once('$') else {
                return Err(malformed(SCHEME, "expected $1$salt$hash"));
            };
            if salt.len() > 8 || !in_alphabet(salt) {
                return Err(malformed(
                    SCHEME,
                    "salt must be at most 8 characters of [./0-9A-Za-z]",
                ));
            }
            if digest.len() != 22 || !in_alphabet(digest) {
                return Err(malformed(
                    SCHEME,
                    "hash must be 22 characters of [./0-9A-Za-z]",
                ));
            }
            return Ok(CryptHash::Md5(hash));
        }
        let (scheme, digest_len, rest) = if let Some(rest) = hash.strip_prefix("$5$") {
            ("sha256-crypt", 43, rest)
        } else if let Some(rest) = hash.strip_prefix("$6$") {
            ("sha512-crypt", 86, rest)
        } else {
            return Err(AuthError::UnknownHashScheme);
        };
        let fields: Vec<&str> = rest.split('$').collect();
        let (salt, digest) = match fields.as_slice() {
            [rounds, salt, digest] => {
                let Some(value) = rounds.strip_prefix("rounds=") else {
                    return Err(malformed(scheme, "expected $N$rounds=R$salt$hash"));
                };
                if value.is_empty()
                    || value.len() > 10
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(malformed(scheme, "rounds is not a decimal number"));
                }
                let value: u64 = value
                    .parse()
                    .map_err(|_| malformed(scheme, "rounds is not a decimal number"))?;
                if value < SHA_CRYPT_ROUNDS.0 || value > SHA_CRYPT_ROUNDS.1 {
                    return Err(AuthError::HostileHashParameter {
                        scheme,
                        parameter: "rounds",
                        value,
                        min: SHA_CRYPT_ROUNDS.0,
                        max: SHA_CRYPT_ROUNDS.1,
                    });
                }
                (*salt, *digest)
            }
            [salt, digest] => (*salt, *digest),
            _ => return Err(malformed(scheme, "expected $N$salt$hash")),
        };
        if salt.len() > 16 || salt.starts_with("rounds=") || salt.contains(':') {
            return Err(malformed(scheme, "salt must be at most 16 characters"));
        }
        if digest.len() != digest_len || !in_alphabet(digest) {
            return Err(malformed(scheme, "hash has the wrong length or characters"));
        }
        Ok(CryptHash::Sha(hash))
    }

    pub fn verify(&self, password: &[u8]) -> AuthResult<bool> {
        match self {
            // pwhash compares the recomputed string in constant time.
            CryptHash::Md5(hash) => Ok(pwhash::md5_crypt::verify(password, hash)),
            CryptHash::Sha(hash) => match ShaCrypt::default().verify_password(password, *hash) {
                Ok(()) => Ok(true),
                Err(sha_crypt::password_hash::Error::PasswordInvalid) => Ok(false),
                Err(_) => Err(malformed("sha-crypt", "cannot be decoded")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_vectors() {
        // From glibc's crypt-sha256/sha512 test vectors (Ulrich Drepper's specification).
        let sha512 = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        assert!(CryptHash::parse(sha512)
            .unwrap()
            .verify(b"Hello world!")
            .unwrap());
        assert!(!CryptHash::parse(sha512)
            .unwrap()
            .verify(b"Hello world?")
            .unwrap());
        let sha256 = "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA";
        assert!(CryptHash::parse(sha256)
            .unwrap()
            .verify(b"Hello world!")
            .unwrap());
    }

    #[test]
    fn hostile_rounds_refused() {
        let h = "$6$rounds=999999999$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        assert!(matches!(
            CryptHash::parse(h),
            Err(AuthError::HostileHashParameter { .. })
        ));
        assert!(matches!(
            CryptHash::parse("$1$abc"),
            Err(AuthError::MalformedHash { .. })
        ));
    }
}
