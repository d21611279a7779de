//! The attestation object (WebAuthn §6.5) and the statement formats pgauth verifies: `none`
//! and `packed` self attestation (signed with the credential's own key).
//!
//! `packed` with a certificate chain (`x5c`) and the other formats (`fido-u2f`, `tpm`,
//! `android-key`, `apple`, ...) are refused: pgauth asks browsers for `attestation: "none"`, and
//! an attestation certificate is only worth checking against a trust store of authenticator
//! vendors (FIDO Metadata Service), which pgauth does not keep. A browser that honours "none"
//! sends format `none` for them.

use ciborium::Value;

use super::{cbor_item, cbor_map, malformed, refused, AuthenticatorData, WebauthnResult};

#[derive(Debug, Clone, PartialEq)]
pub struct AttestationObject {
    pub format: String,
    pub statement: Vec<(Value, Value)>,
    pub auth_data: Vec<u8>,
}

fn text_key(value: &Value) -> Option<&str> {
    value.as_text()
}

impl AttestationObject {
    pub fn parse(bytes: &[u8]) -> WebauthnResult<Self> {
        let (value, used) = cbor_item(bytes, "attestationObject")?;
        if used != bytes.len() {
            return malformed("attestationObject has trailing bytes");
        }
        let entries = cbor_map(&value, "attestationObject")?;
        let (mut format, mut statement, mut auth_data) = (None, None, None);
        for (key, val) in entries {
            match text_key(key) {
                Some("fmt") => format = val.as_text().map(str::to_string),
                Some("attStmt") => {
                    statement = Some(cbor_map(val, "attStmt")?.to_vec());
                }
                Some("authData") => auth_data = val.as_bytes().cloned(),
                _ => return malformed("attestationObject has an unexpected key"),
            }
        }
        match (format, statement, auth_data) {
            (Some(format), Some(statement), Some(auth_data)) => Ok(AttestationObject {
                format,
                statement,
                auth_data,
            }),
            _ => {
                malformed("attestationObject needs fmt (text), attStmt (map) and authData (bytes)")
            }
        }
    }
}

/// WebAuthn §7.1 steps 19–21 for the supported formats.
pub fn verify_attestation(
    object: &AttestationObject,
    auth: &AuthenticatorData,
    client_data_hash: &[u8; 32],
) -> WebauthnResult<()> {
    let Some(attested) = auth.attested.as_ref() else {
        return malformed("authenticatorData has no attested credential data");
    };
    match object.format.as_str() {
        "none" => {
            if !object.statement.is_empty() {
                return malformed("attestation format none must have an empty attStmt");
            }
            Ok(())
        }
        "packed" => {
            let (mut alg, mut sig, mut x5c) = (None, None, false);
            for (key, val) in &object.statement {
                match text_key(key) {
                    Some("alg") => alg = val.as_integer().and_then(|i| i64::try_from(i).ok()),
                    Some("sig") => sig = val.as_bytes(),
                    Some("x5c") => x5c = true,
                    Some("ecdaaKeyId") => return malformed("ECDAA attestation is not supported"),
                    _ => return malformed("packed attStmt has an unexpected key"),
                }
            }
            let (Some(alg), Some(sig)) = (alg, sig) else {
                return malformed("packed attStmt needs alg (integer) and sig (bytes)");
            };
            if x5c {
                return malformed(
                    "packed attestation with a certificate (x5c) is not supported; request attestation \"none\"",
                );
            }
            // Self attestation: signed by the new credential's own key, with its algorithm.
            if alg != attested.key.algorithm().id() {
                return refused("packed self attestation alg differs from the credential key's");
            }
            let mut signed = Vec::with_capacity(object.auth_data.len() + 32);
            signed.extend_from_slice(&object.auth_data);
            signed.extend_from_slice(client_data_hash);
            attested
                .key
                .verify(&signed, sig)
                .or_else(|_| refused("the packed self-attestation signature does not verify"))
        }
        other => {
            let shown: String = other
                .chars()
                .take(32)
                .filter(|c| c.is_ascii_graphic())
                .collect();
            malformed(format!(
                "attestation format \"{shown}\" is not supported (none, packed self attestation); request attestation \"none\""
            ))
        }
    }
}
