//! PBKDF2 hashes in passlib's `$pbkdf2-sha256$` / `$pbkdf2-sha512$` format (also the PHC variant
//! with `i=` parameters) and Django's `pbkdf2_sha256$iterations$salt$hash`. Verify only.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::limits::{PBKDF2_ITERATIONS, PBKDF2_SALT_BYTES};
use crate::error::{AuthError, AuthResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Sha256,
    Sha512,
}

impl Digest {
    fn output_len(self) -> usize {
        match self {
            Digest::Sha256 => 32,
            Digest::Sha512 => 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pbkdf2Hash {
    pub digest: Digest,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub output: Vec<u8>,
    scheme: &'static str,
}

fn malformed(scheme: &'static str, problem: &str) -> AuthError {
    AuthError::MalformedHash {
        scheme,
        problem: problem.to_string(),
    }
}

fn parse_iterations(scheme: &'static str, text: &str) -> AuthResult<u32> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(scheme, "iteration count is not a decimal number"));
    }
    let value: u64 = text
        .parse()
        .map_err(|_| malformed(scheme, "iteration count is not a decimal number"))?;
    if value < PBKDF2_ITERATIONS.0 || value > PBKDF2_ITERATIONS.1 {
        return Err(AuthError::HostileHashParameter {
            scheme,
            parameter: "iterations",
            value,
            min: PBKDF2_ITERATIONS.0,
            max: PBKDF2_ITERATIONS.1,
        });
    }
    Ok(value as u32)
}

/// passlib's "adapted base64": standard alphabet with '.' for '+', no padding.
fn decode_ab64(scheme: &'static str, field: &str, text: &str) -> AuthResult<Vec<u8>> {
    STANDARD_NO_PAD
        .decode(text.replace('.', "+"))
        .map_err(|_| malformed(scheme, &format!("{field} is not valid base64")))
}

impl Pbkdf2Hash {
    /// `$pbkdf2-sha256$29000$salt$hash` (passlib) or `$pbkdf2-sha256$i=600000,l=32$salt$hash` (PHC).
    pub fn parse_passlib(hash: &str) -> AuthResult<Self> {
        let (digest, scheme, rest) = if let Some(rest) = hash.strip_prefix("$pbkdf2-sha256$") {
            (Digest::Sha256, "pbkdf2-sha256", rest)
        } else if let Some(rest) = hash.strip_prefix("$pbkdf2-sha512$") {
            (Digest::Sha512, "pbkdf2-sha512", rest)
        } else {
            return Err(AuthError::UnknownHashScheme);
        };
        let fields: Vec<&str> = rest.split('$').collect();
        let [params, salt, output] = fields.as_slice() else {
            return Err(malformed(
                scheme,
                "expected $pbkdf2-sha256$iterations$salt$hash",
            ));
        };
        let iterations = if params.starts_with("i=") {
            let mut iterations = None;
            for pair in params.split(',') {
                match pair.split_once('=') {
                    Some(("i", v)) if iterations.is_none() => {
                        iterations = Some(parse_iterations(scheme, v)?)
                    }
                    Some(("l", v)) if v.parse::<usize>().ok() == Some(digest.output_len()) => {}
                    _ => return Err(malformed(scheme, "unsupported parameters")),
                }
            }
            iterations.ok_or_else(|| malformed(scheme, "missing i="))?
        } else {
            parse_iterations(scheme, params)?
        };
        let salt = decode_ab64(scheme, "salt", salt)?;
        let output = decode_ab64(scheme, "hash", output)?;
        Self::new(scheme, digest, iterations, salt, output)
    }

    /// Django: `pbkdf2_sha256$iterations$salt$base64(hash)` (salt is used as its UTF-8 text).
    pub fn parse_django(hash: &str) -> AuthResult<Self> {
        const SCHEME: &str = "django pbkdf2_sha256";
        let Some(rest) = hash.strip_prefix("pbkdf2_sha256$") else {
            return Err(AuthError::UnknownHashScheme);
        };
        let fields: Vec<&str> = rest.split('$').collect();
        let [iterations, salt, output] = fields.as_slice() else {
            return Err(malformed(
                SCHEME,
                "expected pbkdf2_sha256$iterations$salt$hash",
            ));
        };
        let iterations = parse_iterations(SCHEME, iterations)?;
        let output = STANDARD
            .decode(output)
            .map_err(|_| malformed(SCHEME, "hash is not valid base64"))?;
        Self::new(
            SCHEME,
            Digest::Sha256,
            iterations,
            salt.as_bytes().to_vec(),
            output,
        )
    }

    fn new(
        scheme: &'static str,
        digest: Digest,
        iterations: u32,
        salt: Vec<u8>,
        output: Vec<u8>,
    ) -> AuthResult<Self> {
        if salt.len() < PBKDF2_SALT_BYTES.0 || salt.len() > PBKDF2_SALT_BYTES.1 {
            return Err(malformed(scheme, "salt length is out of range"));
        }
        if output.len() != digest.output_len() {
            return Err(malformed(
                scheme,
                "hash has the wrong length for its digest",
            ));
        }
        Ok(Self {
            digest,
            iterations,
            salt,
            output,
            scheme,
        })
    }

    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    pub fn verify(&self, password: &[u8]) -> bool {
        let mut computed = Zeroizing::new(vec![0u8; self.output.len()]);
        match self.digest {
            Digest::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, &self.salt, self.iterations, &mut computed)
            }
            Digest::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, &self.salt, self.iterations, &mut computed)
            }
        }
        computed.as_slice().ct_eq(&self.output).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passlib_format_round_trip() {
        // passlib.hash.pbkdf2_sha256.using(rounds=1000, salt=b"saltsaltsaltsalt").hash("password")
        // is reproduced here with the pbkdf2 crate and the ab64 alphabet.
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(b"password", b"saltsaltsaltsalt", 1000, &mut out);
        let enc = |b: &[u8]| STANDARD_NO_PAD.encode(b).replace('+', ".");
        let h = format!(
            "$pbkdf2-sha256$1000${}${}",
            enc(b"saltsaltsaltsalt"),
            enc(&out)
        );
        let parsed = Pbkdf2Hash::parse_passlib(&h).unwrap();
        assert!(parsed.verify(b"password"));
        assert!(!parsed.verify(b"passwore"));
    }

    #[test]
    fn hostile_and_malformed() {
        assert!(matches!(
            Pbkdf2Hash::parse_passlib("$pbkdf2-sha256$10000000000$c2FsdA$AAAA"),
            Err(AuthError::HostileHashParameter { .. })
        ));
        assert!(matches!(
            Pbkdf2Hash::parse_passlib("$pbkdf2-sha256$0$c2FsdA$AAAA"),
            Err(AuthError::HostileHashParameter { .. })
        ));
        assert!(matches!(
            Pbkdf2Hash::parse_django("pbkdf2_sha256$abc$salt$AAAA"),
            Err(AuthError::MalformedHash { .. })
        ));
        assert!(matches!(
            Pbkdf2Hash::parse_passlib("$pbkdf2-sha256$1000$c2F!sdA$AAAA"),
            Err(AuthError::MalformedHash { .. })
        ));
    }
}
