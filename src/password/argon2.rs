//! Argon2 PHC strings: writing new Argon2id hashes and verifying argon2id/argon2i/argon2d hashes
//! from any standard implementation (reference CLI, libargon2 bindings, libsodium).

use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::limits::*;
use crate::error::{AuthError, AuthResult};

const SCHEME: &str = "argon2";

/// Cost settings for new hashes (the `pgauth.argon2_*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Settings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Argon2Settings {
    /// OWASP's recommended Argon2id configuration.
    pub const OWASP: Self = Self {
        memory_kib: 19456,
        iterations: 2,
        parallelism: 1,
    };
}

/// A parsed Argon2 PHC string. Parsing checks every bound before any hashing happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argon2Hash {
    pub algorithm: Algorithm,
    pub version: Version,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub salt: Vec<u8>,
    pub output: Vec<u8>,
}

fn malformed(problem: impl Into<String>) -> AuthError {
    AuthError::MalformedHash {
        scheme: SCHEME,
        problem: problem.into(),
    }
}

fn check_range(parameter: &'static str, value: u64, min: u64, max: u64) -> AuthResult<()> {
    if value < min || value > max {
        return Err(AuthError::HostileHashParameter {
            scheme: SCHEME,
            parameter,
            value,
            min,
            max,
        });
    }
    Ok(())
}

fn parse_number(name: &str, text: &str) -> AuthResult<u64> {
    // Plain decimal only: no sign, no leading zeros beyond "0", at most 10 digits (fits u32 checks).
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!(
            "parameter {name} is not a decimal number"
        )));
    }
    text.parse::<u64>()
        .map_err(|_| malformed(format!("parameter {name} is not a decimal number")))
}

fn decode_b64(field: &'static str, text: &str) -> AuthResult<Vec<u8>> {
    STANDARD_NO_PAD
        .decode(text)
        .map_err(|_| malformed(format!("{field} is not valid unpadded base64")))
}

impl Argon2Hash {
    pub fn parse(hash: &str) -> AuthResult<Self> {
        let mut fields = hash.split('$');
        if fields.next() != Some("") {
            return Err(AuthError::UnknownHashScheme);
        }
        let algorithm = match fields.next() {
            Some("argon2id") => Algorithm::Argon2id,
            Some("argon2i") => Algorithm::Argon2i,
            Some("argon2d") => Algorithm::Argon2d,
            _ => return Err(AuthError::UnknownHashScheme),
        };
        let rest: Vec<&str> = fields.collect();
        // With version: v=NN $ params $ salt $ hash; the original 1.0 format has no version field.
        let (version, params, salt, output) = match rest.as_slice() {
            [v, params, salt, output] if v.starts_with("v=") => {
                let version = match parse_number("v", &v[2..])? {
                    0x13 => Version::V0x13,
                    0x10 => Version::V0x10,
                    _ => return Err(malformed("unsupported version (expected v=19 or v=16)")),
                };
                (version, *params, *salt, *output)
            }
            [params, salt, output] if params.starts_with("m=") => {
                (Version::V0x10, *params, *salt, *output)
            }
            _ => {
                return Err(malformed(
                    "expected $argon2id$v=19$m=..,t=..,p=..$salt$hash",
                ))
            }
        };

        let (mut m, mut t, mut p) = (None, None, None);
        for pair in params.split(',') {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| malformed("parameters must be name=value pairs"))?;
            let slot = match name {
                "m" => &mut m,
                "t" => &mut t,
                "p" => &mut p,
                _ => {
                    return Err(malformed(format!(
                        "unsupported parameter \"{}\"",
                        name.escape_default()
                    )))
                }
            };
            if slot.is_some() {
                return Err(malformed(format!("parameter {name} given twice")));
            }
            *slot = Some(parse_number(name, value)?);
        }
        let (Some(m), Some(t), Some(p)) = (m, t, p) else {
            return Err(malformed("parameters m, t and p are all required"));
        };

        check_range("p", p, 1, ARGON2_MAX_STORED_PARALLELISM as u64)?;
        check_range("m", m, 8 * p, ARGON2_MAX_MEMORY_KIB as u64)?;
        check_range("t", t, 1, ARGON2_MAX_ITERATIONS as u64)?;
        check_range("m*t", m * t, 1, ARGON2_MAX_WORK)?;

        let salt = decode_b64("salt", salt)?;
        let output = decode_b64("hash", output)?;
        if salt.len() < ARGON2_SALT_BYTES.0 || salt.len() > ARGON2_SALT_BYTES.1 {
            return Err(malformed(format!(
                "salt is {} bytes, expected {} to {}",
                salt.len(),
                ARGON2_SALT_BYTES.0,
                ARGON2_SALT_BYTES.1
            )));
        }
        if output.len() < ARGON2_OUTPUT_BYTES.0 || output.len() > ARGON2_OUTPUT_BYTES.1 {
            return Err(malformed(format!(
                "hash is {} bytes, expected {} to {}",
                output.len(),
                ARGON2_OUTPUT_BYTES.0,
                ARGON2_OUTPUT_BYTES.1
            )));
        }

        Ok(Self {
            algorithm,
            version,
            memory_kib: m as u32,
            iterations: t as u32,
            parallelism: p as u32,
            salt,
            output,
        })
    }

    fn compute(&self, password: &[u8]) -> AuthResult<Zeroizing<Vec<u8>>> {
        compute(
            self.algorithm,
            self.version,
            self.memory_kib,
            self.iterations,
            self.parallelism,
            password,
            &self.salt,
            self.output.len(),
        )
    }

    pub fn verify(&self, password: &[u8]) -> AuthResult<bool> {
        let computed = self.compute(password)?;
        Ok(bool::from(computed.as_slice().ct_eq(&self.output)))
    }

    /// True unless this is Argon2id v1.3 with at least the given settings and pgauth's sizes.
    pub fn needs_rehash(&self, settings: &Argon2Settings) -> bool {
        !(self.algorithm == Algorithm::Argon2id
            && self.version == Version::V0x13
            && self.memory_kib >= settings.memory_kib
            && self.iterations >= settings.iterations
            && self.parallelism >= settings.parallelism
            && self.salt.len() >= ARGON2_NEW_SALT_BYTES
            && self.output.len() >= ARGON2_NEW_OUTPUT_BYTES)
    }
}

#[allow(clippy::too_many_arguments)]
fn compute(
    algorithm: Algorithm,
    version: Version,
    m: u32,
    t: u32,
    p: u32,
    password: &[u8],
    salt: &[u8],
    output_len: usize,
) -> AuthResult<Zeroizing<Vec<u8>>> {
    let params = Params::new(m, t, p, Some(output_len))
        .map_err(|e| malformed(format!("parameters rejected: {e}")))?;
    let mut out = Zeroizing::new(vec![0u8; output_len]);
    Argon2::new(algorithm, version, params)
        .hash_password_into(password, salt, &mut out)
        .map_err(|e| malformed(format!("cannot be computed: {e}")))?;
    Ok(out)
}

/// Hash a password as an Argon2id v1.3 PHC string with a fresh 16-byte salt from the OS CSPRNG.
pub fn hash_password(password: &[u8], settings: &Argon2Settings) -> AuthResult<String> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::PasswordTooLong {
            max: MAX_PASSWORD_BYTES,
        });
    }
    let mut salt = [0u8; ARGON2_NEW_SALT_BYTES];
    crate::random::fill(&mut salt)?;
    let output = compute(
        Algorithm::Argon2id,
        Version::V0x13,
        settings.memory_kib,
        settings.iterations,
        settings.parallelism,
        password,
        &salt,
        ARGON2_NEW_OUTPUT_BYTES,
    )?;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        settings.memory_kib,
        settings.iterations,
        settings.parallelism,
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(output.as_slice())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Argon2Settings = Argon2Settings {
        memory_kib: 8192,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn round_trip_and_wrong_password() {
        let hash = hash_password(b"correct horse", &SMALL).unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"));
        let parsed = Argon2Hash::parse(&hash).unwrap();
        assert_eq!(parsed.salt.len(), 16);
        assert_eq!(parsed.output.len(), 32);
        assert!(parsed.verify(b"correct horse").unwrap());
        assert!(!parsed.verify(b"correct horsf").unwrap());
    }

    #[test]
    fn salts_differ() {
        let a = hash_password(b"pw", &SMALL).unwrap();
        let b = hash_password(b"pw", &SMALL).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn rfc9106_style_vector_from_reference_cli() {
        // `echo -n password | argon2 somesalt -id -t 2 -m 16 -p 1` (reference implementation).
        let h = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
        let parsed = Argon2Hash::parse(h).unwrap();
        assert!(parsed.verify(b"password").unwrap());
        assert!(!parsed.verify(b"Password").unwrap());
    }

    #[test]
    fn hostile_parameters_are_refused_before_work() {
        for h in [
            "$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "$argon2id$v=19$m=65536,t=4294967295,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "$argon2id$v=19$m=65536,t=2,p=0$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "$argon2id$v=19$m=1048576,t=64,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        ] {
            assert!(
                matches!(Argon2Hash::parse(h), Err(AuthError::HostileHashParameter { .. })),
                "{h}"
            );
        }
    }

    #[test]
    fn malformed_strings_are_errors() {
        for h in [
            "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ",
            "$argon2id$v=19$m=65536,t=2$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "$argon2id$v=19$m=65536,t=2,p=1$c29t!!!hbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$AAAA",
            "$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "$argon2id$v=18$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
            "$argon2id$v=19$m=-1,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        ] {
            assert!(
                matches!(Argon2Hash::parse(h), Err(AuthError::MalformedHash { .. })),
                "{h}"
            );
        }
    }

    #[test]
    fn needs_rehash_follows_settings() {
        let hash = hash_password(b"pw", &SMALL).unwrap();
        let parsed = Argon2Hash::parse(&hash).unwrap();
        assert!(!parsed.needs_rehash(&SMALL));
        assert!(parsed.needs_rehash(&Argon2Settings::OWASP));
        let argon2i =
            "$argon2i$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
        assert!(Argon2Hash::parse(argon2i).unwrap().needs_rehash(&SMALL));
    }
}
