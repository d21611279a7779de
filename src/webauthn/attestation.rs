//! The attestation object (WebAuthn §6.5) and the statement formats pgauth verifies: `none`,
//! `packed` self attestation (signed with the credential's own key) and `packed` with an
//! attestation certificate (`x5c`: the signature is verified with the certificate's key, and the
//! certificate must meet §8.2.1: version 3, OU "Authenticator Attestation", not a CA, and a
//! matching AAGUID extension if it has one).
//!
//! The certificate chain is not checked against a trust store: pgauth keeps no list of
//! authenticator vendors' roots (FIDO Metadata Service), so such an attestation is only known to
//! be consistent, which WebAuthn §7.1 step 23 allows treating like self attestation. The other
//! formats (`fido-u2f`, `tpm`, `android-key`, `apple`, ...) are refused by name: pgauth asks
//! browsers for `attestation: "none"`, and browsers then send format `none` for them.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use ciborium::Value;
use x509_cert::certificate::Version;
use x509_cert::der::asn1::{ObjectIdentifier, OctetString};
use x509_cert::der::Decode;
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::Certificate;

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
            let (mut alg, mut sig, mut x5c) = (None, None, None);
            for (key, val) in &object.statement {
                match text_key(key) {
                    Some("alg") => alg = val.as_integer().and_then(|i| i64::try_from(i).ok()),
                    Some("sig") => sig = val.as_bytes(),
                    Some("x5c") => x5c = Some(val),
                    Some("ecdaaKeyId") => return malformed("ECDAA attestation is not supported"),
                    _ => return malformed("packed attStmt has an unexpected key"),
                }
            }
            let (Some(alg), Some(sig)) = (alg, sig) else {
                return malformed("packed attStmt needs alg (integer) and sig (bytes)");
            };
            let mut signed = Vec::with_capacity(object.auth_data.len() + 32);
            signed.extend_from_slice(&object.auth_data);
            signed.extend_from_slice(client_data_hash);
            if let Some(x5c) = x5c {
                let leaf = leaf_certificate(x5c)?;
                return verify_with_certificate(leaf, alg, &signed, sig, &attested.aaguid);
            }
            // Self attestation: signed by the new credential's own key, with its algorithm.
            if alg != attested.key.algorithm().id() {
                return refused("packed self attestation alg differs from the credential key's");
            }
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

/// Certificates in an `x5c` chain, and the size of each.
const MAX_CERTIFICATES: usize = 5;
const MAX_CERTIFICATE: usize = 8 * 1024;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const ID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-fido-gen-ce-aaguid: the authenticator model in an attestation certificate.
const ID_FIDO_GEN_CE_AAGUID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.45724.1.1.4");

/// The attestation certificate: the first of a CBOR array of DER certificates.
fn leaf_certificate(x5c: &Value) -> WebauthnResult<&[u8]> {
    let Some(chain) = x5c.as_array() else {
        return malformed("x5c must be an array of certificates");
    };
    if chain.is_empty() || chain.len() > MAX_CERTIFICATES {
        return malformed(format!(
            "x5c must hold 1 to {MAX_CERTIFICATES} certificates"
        ));
    }
    let mut leaf = None;
    for cert in chain {
        match cert.as_bytes() {
            Some(der) if !der.is_empty() && der.len() <= MAX_CERTIFICATE => {
                leaf.get_or_insert(der.as_slice());
            }
            _ => {
                return malformed(format!(
                    "x5c entries must be DER certificates of at most {MAX_CERTIFICATE} bytes"
                ))
            }
        }
    }
    leaf.map_or_else(|| malformed("x5c is empty"), Ok)
}

/// WebAuthn §8.2 step 2 (x5c present): the signature with the certificate's key, and the
/// certificate requirements of §8.2.1.
fn verify_with_certificate(
    der: &[u8],
    alg: i64,
    signed: &[u8],
    sig: &[u8],
    aaguid: &[u8; 16],
) -> WebauthnResult<()> {
    let Ok(cert) = Certificate::from_der(der) else {
        return malformed("x5c[0] is not a DER X.509 certificate");
    };
    let tbs = cert.tbs_certificate();
    if tbs.version() != Version::V3 {
        return refused("the attestation certificate is not version 3");
    }
    let spki = tbs.subject_public_key_info();
    let Some(key) = spki.subject_public_key.as_bytes() else {
        return malformed(
            "the attestation certificate's public key is not a whole number of bytes",
        );
    };
    let oid = spki.algorithm.oid;
    let algorithm: &'static dyn VerificationAlgorithm = match alg {
        -7 if oid == ID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            if curve != Some(SECP256R1) {
                return malformed("an ES256 attestation certificate must have a P-256 key");
            }
            &signature::ECDSA_P256_SHA256_ASN1
        }
        -8 if oid == ID_ED25519 => &signature::ED25519,
        -257 if oid == RSA_ENCRYPTION => &signature::RSA_PKCS1_2048_8192_SHA256,
        -7 | -8 | -257 => {
            return malformed("the attestation certificate's key does not fit the statement's alg")
        }
        other => {
            return malformed(format!(
                "packed attestation alg {other} is not accepted (ES256 -7, EdDSA -8, RS256 -257)"
            ))
        }
    };
    if UnparsedPublicKey::new(algorithm, key)
        .verify(signed, sig)
        .is_err()
    {
        return refused(
            "the packed attestation signature does not verify with the certificate's key",
        );
    }
    if !tbs
        .subject()
        .to_string()
        .split(',')
        .any(|rdn| rdn == "OU=Authenticator Attestation")
    {
        return refused("the attestation certificate's subject lacks OU=Authenticator Attestation");
    }
    match tbs.get_extension::<BasicConstraints>() {
        Ok(Some((_, constraints))) if constraints.ca => {
            return refused("the attestation certificate is a CA certificate")
        }
        Ok(_) => {}
        Err(_) => {
            return malformed("the attestation certificate's basic constraints are malformed")
        }
    }
    for extension in tbs.extensions().into_iter().flatten() {
        if extension.extn_id != ID_FIDO_GEN_CE_AAGUID {
            continue;
        }
        if extension.critical {
            return malformed("the attestation certificate's AAGUID extension is marked critical");
        }
        let Ok(inner) = OctetString::from_der(extension.extn_value.as_bytes()) else {
            return malformed("the attestation certificate's AAGUID extension is malformed");
        };
        if inner.as_bytes() != aaguid.as_slice() {
            return refused(
                "the attestation certificate's AAGUID differs from authenticatorData's",
            );
        }
    }
    Ok(())
}
