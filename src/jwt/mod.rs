//! JSON Web Tokens: signing keys, signing and verification with the `jsonwebtoken` crate on its
//! aws-lc-rs backend (no `rsa` crate: RUSTSEC-2023-0071 does not apply), and the public JWKS.
//!
//! Pure Rust, no pgrx types: the SQL layer (`sql.rs`) stores the private material sealed under a
//! pgauth data key, caches the parsed keys per backend and maps errors to SQLSTATEs.
//!
//! # Key material
//! - HS256/384/512: 32/48/64 random bytes.
//! - RS256 (2048-bit), ES256 (P-256), EdDSA (Ed25519): the private key as PKCS#8 PEM text
//!   (the form `openssl genpkey` and Python's `cryptography` write, and what can be imported).
//!   Public keys are kept as a JWK (RFC 7517), so the JWKS is a read, not a computation.

pub(crate) mod api;
mod provider;
pub(crate) mod sql;

use aws_lc_rs::encoding::AsDer;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::error::{AuthError, AuthResult};

/// Install pgauth's `jsonwebtoken` crypto provider (see `provider.rs`); done by `_PG_init`.
pub fn install_provider() {
    provider::install();
}

/// Longest token `verify` looks at: refused before any decoding (headers included).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Largest claims object `sign` accepts, as JSON text.
pub const MAX_CLAIMS_LEN: usize = 8 * 1024;
/// Clock skew allowed on `exp` and `nbf`, seconds.
pub const LEEWAY_SECONDS: u64 = 30;
/// Longest lifetime a token may be given: one year.
pub const MAX_TTL_SECONDS: i64 = 366 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    Hs256,
    Hs384,
    Hs512,
    Rs256,
    Es256,
    EdDsa,
}

pub const ALL: [Alg; 6] = [
    Alg::Hs256,
    Alg::Hs384,
    Alg::Hs512,
    Alg::Rs256,
    Alg::Es256,
    Alg::EdDsa,
];

impl Alg {
    pub fn parse(name: &str) -> AuthResult<Self> {
        ALL.into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                AuthError::InvalidRequest(format!(
                    "unsupported JWT algorithm \"{}\"; use HS256, HS384, HS512, RS256, ES256 or EdDSA",
                    name.chars().take(32).collect::<String>()
                ))
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    pub fn algorithm(self) -> Algorithm {
        match self {
            Alg::Hs256 => Algorithm::HS256,
            Alg::Hs384 => Algorithm::HS384,
            Alg::Hs512 => Algorithm::HS512,
            Alg::Rs256 => Algorithm::RS256,
            Alg::Es256 => Algorithm::ES256,
            Alg::EdDsa => Algorithm::EdDSA,
        }
    }

    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::Hs256 | Alg::Hs384 | Alg::Hs512)
    }

    fn secret_len(self) -> usize {
        match self {
            Alg::Hs384 => 48,
            Alg::Hs512 => 64,
            _ => 32,
        }
    }
}

fn internal(what: &str) -> AuthError {
    AuthError::Internal(format!("JWT key operation failed: {what}"))
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// New private material for `alg` (see the module documentation for its form).
pub fn generate(alg: Alg) -> AuthResult<Zeroizing<Vec<u8>>> {
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let der: Zeroizing<Vec<u8>> = match alg {
        a if a.is_hmac() => {
            let mut secret = Zeroizing::new(vec![0u8; a.secret_len()]);
            crate::random::fill(&mut secret)?;
            return Ok(secret);
        }
        Alg::Es256 => Zeroizing::new(
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| internal("P-256 key generation"))?
                .as_ref()
                .to_vec(),
        ),
        Alg::EdDsa => Zeroizing::new(
            Ed25519KeyPair::generate_pkcs8v1(&rng)
                .map_err(|_| internal("Ed25519 key generation"))?
                .as_ref()
                .to_vec(),
        ),
        _ => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| internal("RSA key generation"))?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der =
                pair.as_der().map_err(|_| internal("RSA key encoding"))?;
            Zeroizing::new(der.as_ref().to_vec())
        }
    };
    Ok(Zeroizing::new(pem("PRIVATE KEY", &der).into_bytes()))
}

/// The signing key for stored private material.
pub fn encoding_key(alg: Alg, private: &[u8]) -> AuthResult<EncodingKey> {
    provider::install();
    let bad = |_| AuthError::InvalidRequest(format!("not a valid {} private key", alg.name()));
    match alg {
        a if a.is_hmac() => {
            if private.len() < a.secret_len() {
                return Err(AuthError::InvalidRequest(format!(
                    "an {} secret must be at least {} bytes",
                    a.name(),
                    a.secret_len()
                )));
            }
            Ok(EncodingKey::from_secret(private))
        }
        Alg::Rs256 => EncodingKey::from_rsa_pem(private).map_err(bad),
        Alg::Es256 => EncodingKey::from_ec_pem(private).map_err(bad),
        _ => EncodingKey::from_ed_pem(private).map_err(bad),
    }
}

/// The public key of stored private material as a JWK with `kid`, `alg` and `use`; None for
/// HMAC keys, which have no public half.
pub fn public_jwk(alg: Alg, kid: &str, private: &[u8]) -> AuthResult<Option<Value>> {
    provider::install();
    if alg.is_hmac() {
        return Ok(None);
    }
    let key = encoding_key(alg, private)?;
    // A key that cannot sign is refused here, at creation or import, not at first use.
    let probe =
        jsonwebtoken::encode(&Header::new(alg.algorithm()), &Map::new(), &key).map_err(|_| {
            AuthError::InvalidRequest(format!("not a valid {} private key", alg.name()))
        })?;
    let _ = probe;
    let jwk = Jwk::from_encoding_key(&key, alg.algorithm()).map_err(|_| {
        AuthError::InvalidRequest(format!("not a valid {} private key", alg.name()))
    })?;
    Ok(Some(finish_jwk(jwk, alg, kid)?))
}

fn finish_jwk(jwk: Jwk, alg: Alg, kid: &str) -> AuthResult<Value> {
    let mut value = serde_json::to_value(jwk).map_err(|_| internal("JWK encoding"))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| internal("JWK encoding"))?;
    object.insert("kid".into(), Value::String(kid.into()));
    object.insert("alg".into(), Value::String(alg.name().into()));
    object.insert("use".into(), Value::String("sig".into()));
    Ok(value)
}

/// A public key given as PEM (`-----BEGIN PUBLIC KEY-----`) as a JWK.
pub fn public_jwk_from_pem(alg: Alg, kid: &str, pem_text: &[u8]) -> AuthResult<Value> {
    provider::install();
    let bad = |_| AuthError::InvalidRequest(format!("not a valid {} public key", alg.name()));
    let key = match alg {
        Alg::Rs256 => DecodingKey::from_rsa_pem(pem_text).map_err(bad)?,
        Alg::Es256 => DecodingKey::from_ec_pem(pem_text).map_err(bad)?,
        Alg::EdDsa => DecodingKey::from_ed_pem(pem_text).map_err(bad)?,
        _ => {
            return Err(AuthError::InvalidRequest(
                "an HMAC key has no public half; import the secret".into(),
            ))
        }
    };
    let jwk = Jwk::from_decoding_key(&key, Some(alg.algorithm()))
        .map_err(|_| AuthError::InvalidRequest(format!("not a valid {} public key", alg.name())))?;
    finish_jwk(jwk, alg, kid)
}

/// The verification key: the secret for HMAC, else the stored public JWK.
pub fn decoding_key(
    alg: Alg,
    secret: Option<&[u8]>,
    jwk: Option<&Value>,
) -> AuthResult<DecodingKey> {
    if alg.is_hmac() {
        let secret = secret.ok_or_else(|| internal("HMAC key without its secret"))?;
        return Ok(DecodingKey::from_secret(secret));
    }
    let jwk: Jwk = serde_json::from_value(jwk.cloned().ok_or_else(|| internal("missing JWK"))?)
        .map_err(|_| internal("stored JWK unreadable"))?;
    DecodingKey::from_jwk(&jwk).map_err(|_| internal("stored JWK unusable"))
}

/// `claims` completed for signing: `iat` = now, `exp` = now + ttl (both replace given values),
/// `iss` added when absent and an issuer is configured.
pub fn complete_claims(
    claims: Value,
    now: i64,
    ttl_seconds: i64,
    issuer: Option<&str>,
) -> AuthResult<Value> {
    let Value::Object(mut map) = claims else {
        return Err(AuthError::InvalidRequest(
            "JWT claims must be a JSON object".into(),
        ));
    };
    if !(1..=MAX_TTL_SECONDS).contains(&ttl_seconds) {
        return Err(AuthError::InvalidRequest(format!(
            "a token lifetime must be between 1 second and {} days",
            MAX_TTL_SECONDS / 86_400
        )));
    }
    map.insert("iat".into(), Value::from(now));
    map.insert("exp".into(), Value::from(now + ttl_seconds));
    if let Some(iss) = issuer.filter(|i| !i.is_empty()) {
        map.entry("iss")
            .or_insert_with(|| Value::String(iss.into()));
    }
    let claims = Value::Object(map);
    if claims.to_string().len() > MAX_CLAIMS_LEN {
        return Err(AuthError::InvalidRequest(format!(
            "JWT claims are longer than {MAX_CLAIMS_LEN} bytes"
        )));
    }
    Ok(claims)
}

/// Sign `claims` (already completed) with `kid` in the header.
pub fn sign(alg: Alg, kid: &str, key: &EncodingKey, claims: &Value) -> AuthResult<String> {
    provider::install();
    let mut header = Header::new(alg.algorithm());
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, key).map_err(|_| internal("signing"))
}

/// The `kid` and algorithm a token claims, read without trusting anything else in it.
pub fn peek_header(token: &str) -> AuthResult<(String, Alg)> {
    provider::install();
    if token.len() > MAX_TOKEN_LEN || token.bytes().filter(|b| *b == b'.').count() != 2 {
        return Err(AuthError::InvalidToken);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::InvalidToken)?;
    let alg = ALL
        .into_iter()
        .find(|a| a.algorithm() == header.alg)
        .ok_or(AuthError::InvalidToken)?;
    let kid = header.kid.ok_or(AuthError::InvalidToken)?;
    Ok((kid, alg))
}

/// The claims the verifier looks at; everything else is left unparsed.
#[derive(serde::Deserialize)]
struct TimeClaims {
    exp: Option<f64>,
    nbf: Option<f64>,
    aud: Option<Audience>,
    /// Any JSON: only compared when an issuer is expected (a non-string never matches).
    iss: Option<Value>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What a token must say besides being signed and in date: `aud` (one of its audiences) and
/// `iss`, each when given. A token without the claim is refused when one is expected.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expected<'a> {
    pub audience: Option<&'a str>,
    pub issuer: Option<&'a str>,
}

/// Verify signature (with exactly `alg`: no `none`, no HS/RS confusion — the signature is checked
/// by the `jsonwebtoken` crate), `exp` (required) and `nbf` with [`LEEWAY_SECONDS`], and the
/// audience and issuer when expected. Returns the claims as JSON text, exactly as signed.
///
/// The claims are parsed once, for the few fields checked here (the crate's `decode` parses the
/// header twice and the claims twice, which is most of the cost of a verification).
pub fn verify_raw(
    token: &str,
    alg: Alg,
    key: &DecodingKey,
    expected: Expected<'_>,
) -> AuthResult<Vec<u8>> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    provider::install();
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::InvalidToken);
    }
    let mut parts = token.rsplitn(2, '.');
    let (signature, message) = match (parts.next(), parts.next()) {
        (Some(s), Some(m)) => (s, m),
        _ => return Err(AuthError::InvalidToken),
    };
    let Some((_header, payload)) = message.split_once('.') else {
        return Err(AuthError::InvalidToken);
    };
    if payload.contains('.') {
        return Err(AuthError::InvalidToken);
    }
    let valid = jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, alg.algorithm())
        .map_err(|_| AuthError::InvalidToken)?;
    if !valid {
        return Err(AuthError::InvalidToken);
    }
    let claims = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| AuthError::InvalidToken)?;
    // An object, not an array (which serde would also map onto the struct).
    if claims.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(AuthError::InvalidToken);
    }
    let times: TimeClaims = serde_json::from_slice(&claims).map_err(|_| AuthError::InvalidToken)?;
    let now = unix_now();
    let leeway = LEEWAY_SECONDS as f64;
    let exp = times.exp.ok_or(AuthError::InvalidToken)?;
    if exp < now - leeway || times.nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(AuthError::TokenExpired);
    }
    if let Some(issuer) = expected.issuer {
        if times.iss.as_ref().and_then(Value::as_str) != Some(issuer) {
            return Err(AuthError::InvalidToken);
        }
    }
    if let Some(expected) = expected.audience {
        let ok = match &times.aud {
            Some(Audience::One(a)) => a == expected,
            Some(Audience::Many(list)) => list.iter().any(|a| a == expected),
            None => false,
        };
        if !ok {
            return Err(AuthError::InvalidToken);
        }
    }
    // PostgreSQL's jsonb cannot hold \u0000, a lone surrogate or bytes that are not UTF-8, which
    // the fields read here are not checked for (serde skips the others unchecked); such claims
    // are not a token pgauth hands back (found by fuzzing: fuzz/seeds/jwt_claims/crash-*).
    if !text_fits_jsonb(&claims) {
        return Err(AuthError::InvalidToken);
    }
    Ok(claims)
}

/// Whether JSON text (already parsed once, for the fields read here) is text jsonb takes in
/// full: UTF-8, no raw control character inside a string, no `\u0000`, surrogate escapes only in
/// high-low pairs. serde skips the fields it does not read without these checks, so such claims
/// passed verification and then failed as jsonb (found by fuzzing: fuzz/seeds/jwt_claims/).
fn text_fits_jsonb(json: &[u8]) -> bool {
    if std::str::from_utf8(json).is_err() {
        return false;
    }
    let (mut in_string, mut high) = (false, false);
    let mut i = 0;
    while let Some(&b) = json.get(i) {
        if high && b != b'\\' {
            return false;
        }
        match b {
            b'"' => in_string = !in_string,
            b'\\' if in_string => match json.get(i + 1) {
                Some(b'u') => {
                    let Some(code) = json
                        .get(i + 2..i + 6)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                        .and_then(|h| u16::from_str_radix(h, 16).ok())
                    else {
                        return false;
                    };
                    match code {
                        0 => return false,
                        0xD800..=0xDBFF if high => return false,
                        0xD800..=0xDBFF => high = true,
                        0xDC00..=0xDFFF if !high => return false,
                        0xDC00..=0xDFFF => high = false,
                        _ if high => return false,
                        _ => {}
                    }
                    i += 6;
                    continue;
                }
                Some(_) if !high => i += 1,
                _ => return false,
            },
            0 => return false,
            c if c < 0x20 && in_string => return false,
            _ => {}
        }
        i += 1;
    }
    !high && !in_string
}

/// [`verify_raw`], with the claims parsed.
pub fn verify(
    token: &str,
    alg: Alg,
    key: &DecodingKey,
    expected: Expected<'_>,
) -> AuthResult<Map<String, Value>> {
    let raw = verify_raw(token, alg, key, expected)?;
    serde_json::from_slice(&raw).map_err(|_| AuthError::InvalidToken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_that_are_not_utf8_are_refused() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let secret = [7u8; 32];
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"k"}"#),
            URL_SAFE_NO_PAD.encode(b"{\"exp\":4102444800,\"sub\":\"al\xe9\xe9ice\"}")
        );
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
            Algorithm::HS256,
        )
        .unwrap();
        let key = decoding_key(Alg::Hs256, Some(&secret), None).unwrap();
        let token = format!("{message}.{signature}");
        assert!(matches!(
            verify_raw(&token, Alg::Hs256, &key, Expected::default()),
            Err(AuthError::InvalidToken)
        ));
    }

    #[test]
    fn claims_jsonb_cannot_hold_are_refused() {
        for ok in [
            &br#"{"a":"x"}"#[..],
            br#"{"a":"\u0041\n\\u0000"}"#,
            br#"{"a":"\ud83d\ude00"}"#,
            br#"{"a":"\\"}"#,
            b"{\n\t\"a\" : [1e400, \"\\\"\"]}",
        ] {
            assert!(text_fits_jsonb(ok), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &br#"{"a":"\u0000"}"#[..],
            br#"{"a":"\ud800"}"#,
            br#"{"a":"\ud800x"}"#,
            br#"{"a":"\ud800\u0041"}"#,
            br#"{"a":"\ud800\n"}"#,
            br#"{"a":"\udc00"}"#,
            br#"{"a":"\ud800\ud800\udc00"}"#,
            br#"{"a":"\u00"#,
            br#""\u"#,
            b"{\"a\":\"line\nbreak\"}",
            b"{\"a\":\"nul\0\"}",
            b"{\"a\":\"al\xe9ice\"}",
            br#"{"a":"\u00zz"}"#,
            br#"{"a":"open}"#,
        ] {
            assert!(!text_fits_jsonb(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    struct Key {
        alg: Alg,
        enc: EncodingKey,
        dec: DecodingKey,
    }

    fn key(alg: Alg) -> Key {
        let private = generate(alg).unwrap();
        let jwk = public_jwk(alg, "k1", &private).unwrap();
        assert_eq!(jwk.is_none(), alg.is_hmac());
        if let Some(j) = &jwk {
            assert_eq!(j["kid"], "k1");
            assert_eq!(j["alg"], alg.name());
            assert!(
                j.get("d").is_none(),
                "a public JWK must not carry the private key"
            );
        }
        Key {
            alg,
            enc: encoding_key(alg, &private).unwrap(),
            dec: decoding_key(alg, Some(&private), jwk.as_ref()).unwrap(),
        }
    }

    #[test]
    fn every_algorithm_signs_and_verifies() {
        for alg in ALL {
            let k = key(alg);
            let claims = complete_claims(json!({"sub": "u1"}), now(), 60, Some("pgauth")).unwrap();
            let token = sign(alg, "k1", &k.enc, &claims).unwrap();
            assert_eq!(peek_header(&token).unwrap(), ("k1".to_string(), alg));
            let back = verify(&token, alg, &k.dec, Expected::default()).unwrap();
            assert_eq!(back["sub"], "u1");
            assert_eq!(back["iss"], "pgauth");
            // A flipped signature bit is refused.
            let mut bad = token.clone().into_bytes();
            let i = bad.len() - 5;
            bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
            let bad = String::from_utf8(bad).unwrap();
            assert_eq!(
                verify(&bad, alg, &k.dec, Expected::default()),
                Err(AuthError::InvalidToken),
                "{alg:?}"
            );
            // Another key of the same algorithm does not verify it.
            let other = key(alg);
            assert_eq!(
                verify(&token, alg, &other.dec, Expected::default()),
                Err(AuthError::InvalidToken)
            );
            assert_eq!(k.alg, alg);
        }
    }

    #[test]
    fn algorithm_confusion_and_none_are_refused() {
        let es = key(Alg::Es256);
        let claims = complete_claims(json!({}), now(), 60, None).unwrap();
        let token = sign(Alg::Es256, "k1", &es.enc, &claims).unwrap();
        // Verifying an ES256 token as if the key were HS256 fails.
        let hs = key(Alg::Hs256);
        assert_eq!(
            verify(&token, Alg::Hs256, &hs.dec, Expected::default()),
            Err(AuthError::InvalidToken)
        );
        // alg none: header {"alg":"none","kid":"k1"}, no signature.
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "kid": "k1"})),
            b64(&json!({"exp": now() + 60}))
        );
        assert_eq!(peek_header(&none), Err(AuthError::InvalidToken));
        assert_eq!(
            verify(&none, Alg::Hs256, &hs.dec, Expected::default()),
            Err(AuthError::InvalidToken)
        );
    }

    #[test]
    fn time_claims_and_audience() {
        let k = key(Alg::Hs256);
        let expired = json!({"exp": now() - 3600, "iat": now() - 7200});
        let token = sign(Alg::Hs256, "k1", &k.enc, &expired).unwrap();
        assert_eq!(
            verify(&token, Alg::Hs256, &k.dec, Expected::default()),
            Err(AuthError::TokenExpired)
        );
        let future = json!({"exp": now() + 7200, "nbf": now() + 3600});
        let token = sign(Alg::Hs256, "k1", &k.enc, &future).unwrap();
        assert_eq!(
            verify(&token, Alg::Hs256, &k.dec, Expected::default()),
            Err(AuthError::TokenExpired)
        );
        // Within the leeway: accepted.
        let skewed = json!({"exp": now() - 5});
        let token = sign(Alg::Hs256, "k1", &k.enc, &skewed).unwrap();
        assert!(verify(&token, Alg::Hs256, &k.dec, Expected::default()).is_ok());
        // No exp at all: refused.
        let token = sign(Alg::Hs256, "k1", &k.enc, &json!({"sub": "x"})).unwrap();
        assert_eq!(
            verify(&token, Alg::Hs256, &k.dec, Expected::default()),
            Err(AuthError::InvalidToken)
        );
        // Audience.
        let claims = complete_claims(json!({"aud": "api"}), now(), 60, None).unwrap();
        let token = sign(Alg::Hs256, "k1", &k.enc, &claims).unwrap();
        assert!(verify(&token, Alg::Hs256, &k.dec, aud("api")).is_ok());
        assert_eq!(
            verify(&token, Alg::Hs256, &k.dec, aud("web")),
            Err(AuthError::InvalidToken)
        );
        let claims = complete_claims(json!({}), now(), 60, None).unwrap();
        let token = sign(Alg::Hs256, "k1", &k.enc, &claims).unwrap();
        assert_eq!(
            verify(&token, Alg::Hs256, &k.dec, aud("api")),
            Err(AuthError::InvalidToken)
        );
    }

    fn aud(audience: &str) -> Expected<'_> {
        Expected {
            audience: Some(audience),
            issuer: None,
        }
    }

    fn iss(issuer: &str) -> Expected<'_> {
        Expected {
            audience: None,
            issuer: Some(issuer),
        }
    }

    #[test]
    fn issuer_is_checked_when_expected() {
        let k = key(Alg::Hs256);
        let signed = |claims: Value| {
            let claims = complete_claims(claims, now(), 60, None).unwrap();
            sign(Alg::Hs256, "k1", &k.enc, &claims).unwrap()
        };
        let right = signed(json!({"iss": "pgauth"}));
        assert!(verify(&right, Alg::Hs256, &k.dec, iss("pgauth")).is_ok());
        for wrong in [
            signed(json!({"iss": "https://evil.example"})),
            signed(json!({"iss": "PGAUTH"})),
            signed(json!({"iss": ["pgauth"]})),
            signed(json!({"iss": null})),
            signed(json!({})),
        ] {
            assert_eq!(
                verify(&wrong, Alg::Hs256, &k.dec, iss("pgauth")),
                Err(AuthError::InvalidToken)
            );
            // Not checked when no issuer is expected.
            assert!(verify(&wrong, Alg::Hs256, &k.dec, Expected::default()).is_ok());
        }
    }

    #[test]
    fn malformed_tokens_are_invalid_not_panics() {
        let k = key(Alg::Hs256);
        let huge = format!("{}.e30.sig", "e".repeat(MAX_TOKEN_LEN));
        for t in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "!!!.###.$$$",
            "e30.e30.",
            "eyJhbGciOiJIUzI1NiJ9.e30.sig", // no kid
            huge.as_str(),
        ] {
            assert_eq!(
                peek_header(t).map(|_| ()),
                Err(AuthError::InvalidToken),
                "{t:.40}"
            );
            assert!(verify(t, Alg::Hs256, &k.dec, Expected::default()).is_err());
        }
    }

    #[test]
    fn claims_are_completed_and_bounded() {
        let c = complete_claims(
            json!({"sub": "u", "exp": 1, "iss": "mine"}),
            1000,
            900,
            Some("p"),
        )
        .unwrap();
        assert_eq!(c["exp"], 1900);
        assert_eq!(c["iat"], 1000);
        assert_eq!(c["iss"], "mine");
        assert!(complete_claims(json!([1]), 0, 60, None).is_err());
        assert!(complete_claims(json!({}), 0, 0, None).is_err());
        assert!(complete_claims(json!({"x": "y".repeat(MAX_CLAIMS_LEN)}), 0, 60, None).is_err());
        assert!(Alg::parse("none").is_err());
        assert_eq!(Alg::parse("eddsa").unwrap(), Alg::EdDsa);
    }

    #[test]
    fn public_pem_import_verifies() {
        let private = generate(Alg::Es256).unwrap();
        let enc = encoding_key(Alg::Es256, &private).unwrap();
        // The public key as PEM, the way another system would hand it over.
        let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &STANDARD
                .decode(
                    std::str::from_utf8(&private)
                        .unwrap()
                        .lines()
                        .filter(|l| !l.starts_with("-----"))
                        .collect::<String>(),
                )
                .unwrap(),
        )
        .unwrap();
        use aws_lc_rs::signature::KeyPair;
        let spki: aws_lc_rs::encoding::PublicKeyX509Der = pair.public_key().as_der().unwrap();
        let jwk = public_jwk_from_pem(
            Alg::Es256,
            "ext",
            pem("PUBLIC KEY", spki.as_ref()).as_bytes(),
        )
        .unwrap();
        let dec = decoding_key(Alg::Es256, None, Some(&jwk)).unwrap();
        let claims = complete_claims(json!({}), now(), 60, None).unwrap();
        let token = sign(Alg::Es256, "ext", &enc, &claims).unwrap();
        assert!(verify(&token, Alg::Es256, &dec, Expected::default()).is_ok());
        assert!(public_jwk_from_pem(
            Alg::Es256,
            "x",
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
    }
}
