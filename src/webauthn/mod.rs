//! Passkeys (WebAuthn Level 2/3 relying-party checks): the browser's JSON for a registration
//! (`navigator.credentials.create`) or a sign-in (`navigator.credentials.get`), parsed and
//! verified against the stored challenge, the relying party's id and origins, and the stored
//! public key.
//!
//! Plain Rust, no pgrx types: every check is a function of bytes, settings and stored values,
//! unit-tested without a database. `sql.rs` stores challenges and credentials and calls these.
//! Every input is untrusted: sizes are capped before anything is decoded, CBOR nesting is
//! limited, and every malformed or unexpected value is an error, never a panic. Signatures are
//! verified by aws-lc-rs; CBOR is decoded by ciborium.

pub mod attestation;
pub mod authdata;
pub mod cose;
#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;
pub(crate) mod sql;
#[cfg(test)]
mod tests;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use attestation::verify_attestation;
pub use authdata::AuthenticatorData;
pub use cose::{CoseAlgorithm, CoseKey};

/// The browser's credential JSON as text (jsonb arguments are checked against this).
pub const MAX_CREDENTIAL_JSON: usize = 64 * 1024;
/// clientDataJSON: a few hundred bytes in practice.
pub const MAX_CLIENT_DATA: usize = 8 * 1024;
/// attestationObject: authenticator data plus a statement with a certificate chain.
pub const MAX_ATTESTATION_OBJECT: usize = 32 * 1024;
/// authenticatorData of an assertion (37 bytes plus extensions).
pub const MAX_AUTHENTICATOR_DATA: usize = 8 * 1024;
/// An RSA-8192 signature is 1024 bytes; ECDSA and Ed25519 are far shorter.
pub const MAX_SIGNATURE: usize = 1024;
/// WebAuthn: credential ids are at most 1023 bytes.
pub const MAX_CREDENTIAL_ID: usize = 1023;
/// WebAuthn: user handles are at most 64 bytes.
pub const MAX_USER_HANDLE: usize = 64;
/// CBOR nesting: COSE keys and attestation statements are two or three levels deep.
pub const MAX_CBOR_DEPTH: usize = 8;
/// Transports listed with a credential, and the length of each name.
pub const MAX_TRANSPORTS: usize = 8;

/// Why a WebAuthn response was not accepted. Messages name the check that failed and sizes or
/// algorithm numbers, never key material or challenges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebauthnError {
    /// Not a WebAuthn response: wrong shape, bad base64url, oversized, malformed CBOR, wrong
    /// lengths, unknown algorithms.
    Malformed(String),
    /// Well formed, but a check failed: challenge, origin, rp id, flags, signature.
    Refused(String),
    /// A valid signature with a sign counter that did not increase: a possible cloned
    /// authenticator.
    CounterRollback { stored: u32, received: u32 },
}

impl std::fmt::Display for WebauthnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebauthnError::Malformed(m) => write!(f, "malformed WebAuthn response: {m}"),
            WebauthnError::Refused(m) => write!(f, "WebAuthn response refused: {m}"),
            WebauthnError::CounterRollback { stored, received } => write!(
                f,
                "WebAuthn response refused: sign counter {received} is not above the stored {stored} (possible cloned authenticator)"
            ),
        }
    }
}

impl std::error::Error for WebauthnError {}

pub type WebauthnResult<T> = Result<T, WebauthnError>;

pub(crate) fn malformed<T>(message: impl Into<String>) -> WebauthnResult<T> {
    Err(WebauthnError::Malformed(message.into()))
}

pub(crate) fn refused<T>(message: impl Into<String>) -> WebauthnResult<T> {
    Err(WebauthnError::Refused(message.into()))
}

/// base64url as browsers write it (`toJSON()`: no padding); padding is tolerated.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub fn base64url_encode(bytes: &[u8]) -> String {
    BASE64URL.encode(bytes)
}

/// Decode `text` (the field `what`), refusing anything whose decoded size exceeds `max`.
pub fn base64url_decode(text: &str, what: &str, max: usize) -> WebauthnResult<Vec<u8>> {
    // 4 characters carry 3 bytes: refuse before decoding anything oversized.
    if text.len() > max.saturating_mul(4) / 3 + 4 {
        return malformed(format!("{what} is longer than {max} bytes"));
    }
    let bytes = BASE64URL
        .decode(text.as_bytes())
        .or_else(|_| malformed(format!("{what} is not base64url")))?;
    if bytes.len() > max {
        return malformed(format!("{what} is longer than {max} bytes"));
    }
    Ok(bytes)
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The relying party's side of every check: from `pgauth.webauthn_rp_id`,
/// `pgauth.webauthn_origins` and `pgauth.webauthn_user_verification`.
#[derive(Debug, Clone)]
pub struct RelyingParty {
    pub rp_id: String,
    pub origins: Vec<String>,
    pub require_user_verification: bool,
}

/// `pgauth.webauthn_user_verification`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserVerification {
    Required,
    Preferred,
    Discouraged,
}

impl UserVerification {
    pub fn as_str(self) -> &'static str {
        match self {
            UserVerification::Required => "required",
            UserVerification::Preferred => "preferred",
            UserVerification::Discouraged => "discouraged",
        }
    }
}

/// Is `rp_id` a host name a browser could use as an RP ID (lower case, no scheme or port)?
pub fn check_rp_id(rp_id: &str) -> Result<(), String> {
    let labels_ok = rp_id.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    if rp_id.is_empty() || rp_id.len() > 253 || !labels_ok {
        return Err(
            "must be a lower-case host name such as example.com (no scheme, port or path)".into(),
        );
    }
    Ok(())
}

/// Parse `pgauth.webauthn_origins`: a comma-separated list of `https://host[:port]`,
/// `http://localhost[:port]` (development) or `android:apk-key-hash:...` (Android apps).
pub fn parse_origins(list: &str) -> Result<Vec<String>, String> {
    let mut origins = Vec::new();
    for raw in list.split(',') {
        let origin = raw.trim();
        if origin.is_empty() {
            continue;
        }
        check_origin(origin)?;
        origins.push(origin.trim_end_matches('/').to_string());
    }
    if origins.len() > 64 {
        return Err("at most 64 origins".into());
    }
    Ok(origins)
}

fn check_origin(origin: &str) -> Result<(), String> {
    if let Some(hash) = origin.strip_prefix("android:apk-key-hash:") {
        if !hash.is_empty() && base64url_decode(hash, "apk key hash", 64).is_ok() {
            return Ok(());
        }
        return Err(format!(
            "\"{origin}\" is not a valid android:apk-key-hash origin"
        ));
    }
    let (scheme, rest) = origin
        .split_once("://")
        .ok_or_else(|| format!("\"{origin}\" is not an origin such as https://example.com"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    let host_ok = check_rp_id(host).is_ok();
    match scheme {
        "https" if host_ok && port_ok => Ok(()),
        "http" if host == "localhost" && port_ok => Ok(()),
        _ => Err(format!(
            "\"{origin}\" is not an origin such as https://example.com (https, or http only for localhost; no path)"
        )),
    }
}

/// What the browser sends back from `navigator.credentials.create()` (`credential.toJSON()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationResponse {
    pub raw_id: Vec<u8>,
    pub client_data_json: Vec<u8>,
    pub attestation_object: Vec<u8>,
    pub transports: Vec<String>,
}

/// What the browser sends back from `navigator.credentials.get()` (`credential.toJSON()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionResponse {
    pub raw_id: Vec<u8>,
    pub client_data_json: Vec<u8>,
    pub authenticator_data: Vec<u8>,
    pub signature: Vec<u8>,
    pub user_handle: Option<Vec<u8>>,
}

fn field<'a>(object: &'a Value, name: &str) -> WebauthnResult<&'a str> {
    match object.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => malformed(format!("{name} must be a string")),
        None => malformed(format!("{name} is missing")),
    }
}

/// `id`, `rawId` and `type`, common to both responses; returns the credential id and `response`.
fn envelope(json: &Value) -> WebauthnResult<(Vec<u8>, &Value)> {
    if !json.is_object() {
        return malformed("the credential must be a JSON object (PublicKeyCredential.toJSON())");
    }
    if serde_json::to_string(json).map_or(true, |s| s.len() > MAX_CREDENTIAL_JSON) {
        return malformed(format!(
            "the credential is longer than {MAX_CREDENTIAL_JSON} bytes"
        ));
    }
    if field(json, "type")? != "public-key" {
        return malformed("type must be \"public-key\"");
    }
    let raw_id = base64url_decode(field(json, "rawId")?, "rawId", MAX_CREDENTIAL_ID)?;
    let id = base64url_decode(field(json, "id")?, "id", MAX_CREDENTIAL_ID)?;
    if raw_id.is_empty() || id != raw_id {
        return malformed("id and rawId must be the same non-empty credential id");
    }
    let response = json
        .get("response")
        .filter(|r| r.is_object())
        .map_or_else(|| malformed("response must be an object"), Ok)?;
    Ok((raw_id, response))
}

pub fn parse_registration(json: &Value) -> WebauthnResult<RegistrationResponse> {
    let (raw_id, response) = envelope(json)?;
    let client_data_json = base64url_decode(
        field(response, "clientDataJSON")?,
        "clientDataJSON",
        MAX_CLIENT_DATA,
    )?;
    let attestation_object = base64url_decode(
        field(response, "attestationObject")?,
        "attestationObject",
        MAX_ATTESTATION_OBJECT,
    )?;
    let transports = match response.get("transports") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= MAX_TRANSPORTS => items
            .iter()
            .map(|t| match t.as_str() {
                Some(s)
                    if !s.is_empty()
                        && s.len() <= 32
                        && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') =>
                {
                    Ok(s.to_string())
                }
                _ => malformed("transports must be short lower-case names"),
            })
            .collect::<WebauthnResult<Vec<_>>>()?,
        Some(_) => {
            return malformed(format!(
                "transports must be an array of at most {MAX_TRANSPORTS} names"
            ))
        }
    };
    Ok(RegistrationResponse {
        raw_id,
        client_data_json,
        attestation_object,
        transports,
    })
}

pub fn parse_assertion(json: &Value) -> WebauthnResult<AssertionResponse> {
    let (raw_id, response) = envelope(json)?;
    let client_data_json = base64url_decode(
        field(response, "clientDataJSON")?,
        "clientDataJSON",
        MAX_CLIENT_DATA,
    )?;
    let authenticator_data = base64url_decode(
        field(response, "authenticatorData")?,
        "authenticatorData",
        MAX_AUTHENTICATOR_DATA,
    )?;
    let signature = base64url_decode(field(response, "signature")?, "signature", MAX_SIGNATURE)?;
    let user_handle = match response.get("userHandle") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(base64url_decode(s, "userHandle", MAX_USER_HANDLE)?),
        Some(_) => return malformed("userHandle must be a string or null"),
    };
    Ok(AssertionResponse {
        raw_id,
        client_data_json,
        authenticator_data,
        signature,
        user_handle,
    })
}

/// The challenge a clientDataJSON answers (to find the stored one); nothing else is checked.
pub fn client_data_challenge(client_data_json: &[u8]) -> WebauthnResult<Vec<u8>> {
    let data = client_data(client_data_json)?;
    base64url_decode(field(&data, "challenge")?, "challenge", 64)
}

fn client_data(bytes: &[u8]) -> WebauthnResult<Value> {
    if bytes.len() > MAX_CLIENT_DATA {
        return malformed(format!(
            "clientDataJSON is longer than {MAX_CLIENT_DATA} bytes"
        ));
    }
    let value: Value =
        serde_json::from_slice(bytes).or_else(|_| malformed("clientDataJSON is not JSON"))?;
    if !value.is_object() {
        return malformed("clientDataJSON is not a JSON object");
    }
    Ok(value)
}

/// WebAuthn §7.1 steps 7–10 / §7.2 steps 11–14: type, challenge, origin, not cross-origin.
pub fn check_client_data(
    bytes: &[u8],
    expected_type: &str,
    expected_challenge: &[u8],
    rp: &RelyingParty,
) -> WebauthnResult<()> {
    let data = client_data(bytes)?;
    if field(&data, "type")? != expected_type {
        return refused(format!("clientDataJSON.type is not {expected_type}"));
    }
    let challenge = base64url_decode(field(&data, "challenge")?, "challenge", 64)?;
    if !bool::from(challenge.ct_eq(expected_challenge)) {
        return refused("the challenge does not match");
    }
    let origin = field(&data, "origin")?;
    if !rp.origins.iter().any(|o| o == origin) {
        return refused("origin is not in pgauth.webauthn_origins");
    }
    match data.get("crossOrigin") {
        None | Some(Value::Bool(false)) | Some(Value::Null) => Ok(()),
        Some(Value::Bool(true)) => refused("cross-origin (iframe) ceremonies are not accepted"),
        Some(_) => malformed("clientDataJSON.crossOrigin must be a boolean"),
    }
}

/// The flags and rp id of authenticator data, for both ceremonies.
fn check_authenticator_data(auth: &AuthenticatorData, rp: &RelyingParty) -> WebauthnResult<()> {
    if auth.rp_id_hash != sha256(rp.rp_id.as_bytes()) {
        return refused("rpIdHash is not the hash of pgauth.webauthn_rp_id");
    }
    if !auth.user_present() {
        return refused("the user-present flag is not set");
    }
    if rp.require_user_verification && !auth.user_verified() {
        return refused("user verification is required and the user-verified flag is not set");
    }
    Ok(())
}

/// A credential accepted by `verify_registration`, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCredential {
    pub credential_id: Vec<u8>,
    /// The COSE_Key exactly as the authenticator encoded it.
    pub public_key: Vec<u8>,
    pub algorithm: CoseAlgorithm,
    pub sign_count: u32,
    pub aaguid: [u8; 16],
    pub user_verified: bool,
    pub backup_eligible: bool,
    pub backed_up: bool,
    pub format: String,
}

/// WebAuthn §7.1 "Registering a New Credential", steps 7–22 (not the trust decision about an
/// attestation certificate, see `attestation`).
pub fn verify_registration(
    response: &RegistrationResponse,
    expected_challenge: &[u8],
    rp: &RelyingParty,
) -> WebauthnResult<NewCredential> {
    check_client_data(
        &response.client_data_json,
        "webauthn.create",
        expected_challenge,
        rp,
    )?;
    let client_data_hash = sha256(&response.client_data_json);
    let object = attestation::AttestationObject::parse(&response.attestation_object)?;
    let auth = AuthenticatorData::parse(&object.auth_data)?;
    check_authenticator_data(&auth, rp)?;
    let Some(attested) = auth.attested.as_ref() else {
        return malformed("authenticatorData has no attested credential data");
    };
    if attested.credential_id != response.raw_id {
        return refused("the credential id in authenticatorData is not rawId");
    }
    verify_attestation(&object, &auth, &client_data_hash)?;
    Ok(NewCredential {
        credential_id: attested.credential_id.clone(),
        public_key: attested.public_key_cbor.clone(),
        algorithm: attested.key.algorithm(),
        sign_count: auth.sign_count,
        aaguid: attested.aaguid,
        user_verified: auth.user_verified(),
        backup_eligible: auth.backup_eligible(),
        backed_up: auth.backed_up(),
        format: object.format.clone(),
    })
}

/// A stored credential, as a sign-in needs it.
#[derive(Debug, Clone)]
pub struct StoredCredential<'a> {
    pub public_key: &'a [u8],
    pub sign_count: u32,
    pub backup_eligible: bool,
}

/// A sign-in that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssertionOutcome {
    pub sign_count: u32,
    pub user_verified: bool,
    pub backed_up: bool,
}

/// WebAuthn §7.2 "Verifying an Authentication Assertion", steps 11–22. The caller has matched
/// the credential id and the user handle to the stored credential.
pub fn verify_assertion(
    response: &AssertionResponse,
    expected_challenge: &[u8],
    rp: &RelyingParty,
    stored: &StoredCredential<'_>,
) -> WebauthnResult<AssertionOutcome> {
    check_client_data(
        &response.client_data_json,
        "webauthn.get",
        expected_challenge,
        rp,
    )?;
    let auth = AuthenticatorData::parse(&response.authenticator_data)?;
    check_authenticator_data(&auth, rp)?;
    if auth.attested.is_some() {
        return malformed("an assertion must not carry attested credential data");
    }
    if auth.backup_eligible() != stored.backup_eligible {
        return refused("the backup-eligible flag differs from the registered credential");
    }
    let key = CoseKey::from_cbor_bytes(stored.public_key)?;
    let mut signed = Vec::with_capacity(response.authenticator_data.len() + 32);
    signed.extend_from_slice(&response.authenticator_data);
    signed.extend_from_slice(&sha256(&response.client_data_json));
    key.verify(&signed, &response.signature)?;
    // Only a valid signature says the counter came from the authenticator.
    if (auth.sign_count != 0 || stored.sign_count != 0) && auth.sign_count <= stored.sign_count {
        return Err(WebauthnError::CounterRollback {
            stored: stored.sign_count,
            received: auth.sign_count,
        });
    }
    Ok(AssertionOutcome {
        sign_count: auth.sign_count,
        user_verified: auth.user_verified(),
        backed_up: auth.backed_up(),
    })
}

/// Decode one CBOR item from the front of `bytes`; returns it and the bytes it took.
pub(crate) fn cbor_item(bytes: &[u8], what: &str) -> WebauthnResult<(ciborium::Value, usize)> {
    let mut rest = bytes;
    let value: ciborium::Value =
        ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_CBOR_DEPTH)
            .or_else(|_| malformed(format!("{what} is not well-formed CBOR")))?;
    Ok((value, bytes.len() - rest.len()))
}

/// The entries of a CBOR map, refusing duplicate keys (a parser differential waiting to happen).
pub(crate) fn cbor_map<'a>(
    value: &'a ciborium::Value,
    what: &str,
) -> WebauthnResult<&'a [(ciborium::Value, ciborium::Value)]> {
    let Some(entries) = value.as_map() else {
        return malformed(format!("{what} is not a CBOR map"));
    };
    for (i, (key, _)) in entries.iter().enumerate() {
        if entries[..i].iter().any(|(k, _)| k == key) {
            return malformed(format!("{what} has a duplicate key"));
        }
    }
    Ok(entries)
}
