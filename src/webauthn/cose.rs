//! COSE public keys (RFC 9052/9053, RFC 8230) for the three algorithms pgauth accepts, and
//! signature verification with aws-lc-rs.

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents, VerificationAlgorithm};
use ciborium::Value;

use super::{cbor_item, cbor_map, malformed, refused, WebauthnResult};

/// COSE algorithm identifiers offered in `pubKeyCredParams`, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoseAlgorithm {
    /// ECDSA with P-256 and SHA-256 (-7).
    Es256,
    /// EdDSA with Ed25519 (-8).
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (-257).
    Rs256,
}

impl CoseAlgorithm {
    pub const ALL: [CoseAlgorithm; 3] = [
        CoseAlgorithm::Es256,
        CoseAlgorithm::EdDsa,
        CoseAlgorithm::Rs256,
    ];

    pub fn id(self) -> i64 {
        match self {
            CoseAlgorithm::Es256 => -7,
            CoseAlgorithm::EdDsa => -8,
            CoseAlgorithm::Rs256 => -257,
        }
    }

    pub fn from_id(id: i64) -> WebauthnResult<Self> {
        match id {
            -7 => Ok(CoseAlgorithm::Es256),
            -8 => Ok(CoseAlgorithm::EdDsa),
            -257 => Ok(CoseAlgorithm::Rs256),
            other => malformed(format!(
                "COSE algorithm {other} is not accepted (ES256 -7, EdDSA -8, RS256 -257)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CoseAlgorithm::Es256 => "ES256",
            CoseAlgorithm::EdDsa => "EdDSA",
            CoseAlgorithm::Rs256 => "RS256",
        }
    }
}

/// RSA moduli pgauth accepts: 2048 to 8192 bits (what aws-lc-rs verifies).
const RSA_MIN_MODULUS: usize = 256;
const RSA_MAX_MODULUS: usize = 1024;
const RSA_MAX_EXPONENT: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyMaterial {
    /// Uncompressed SEC1 point: 0x04 || x || y.
    P256(Vec<u8>),
    Ed25519(Vec<u8>),
    /// Big-endian modulus and exponent without leading zero bytes.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoseKey {
    algorithm: CoseAlgorithm,
    material: KeyMaterial,
}

const KTY: i64 = 1;
const ALG: i64 = 3;
const KTY_OKP: i64 = 1;
const KTY_EC2: i64 = 2;
const KTY_RSA: i64 = 3;
const CRV_P256: i64 = 1;
const CRV_ED25519: i64 = 6;

fn int_key(value: &Value) -> Option<i64> {
    value.as_integer().and_then(|i| i64::try_from(i).ok())
}

fn get(entries: &[(Value, Value)], label: i64) -> Option<&Value> {
    entries
        .iter()
        .find(|(k, _)| int_key(k) == Some(label))
        .map(|(_, v)| v)
}

fn get_int(entries: &[(Value, Value)], label: i64, what: &str) -> WebauthnResult<i64> {
    match get(entries, label).and_then(int_key) {
        Some(v) => Ok(v),
        None => malformed(format!("COSE key has no integer {what}")),
    }
}

fn get_bytes<'a>(
    entries: &'a [(Value, Value)],
    label: i64,
    what: &str,
) -> WebauthnResult<&'a [u8]> {
    match get(entries, label).and_then(Value::as_bytes) {
        Some(v) => Ok(v.as_slice()),
        None => malformed(format!("COSE key has no byte string {what}")),
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

impl CoseKey {
    pub fn algorithm(&self) -> CoseAlgorithm {
        self.algorithm
    }

    pub fn from_cbor_bytes(bytes: &[u8]) -> WebauthnResult<Self> {
        let (value, used) = cbor_item(bytes, "the stored public key")?;
        if used != bytes.len() {
            return malformed("the stored public key has trailing bytes");
        }
        Self::from_cbor(&value)
    }

    /// A COSE_Key map; its `alg` must be one pgauth accepts and agree with its key type and
    /// curve, and the key must be a valid point/key for that algorithm.
    pub fn from_cbor(value: &Value) -> WebauthnResult<Self> {
        let entries = cbor_map(value, "the COSE key")?;
        let kty = get_int(entries, KTY, "kty (1)")?;
        let algorithm = CoseAlgorithm::from_id(get_int(entries, ALG, "alg (3)")?)?;
        let material = match (algorithm, kty) {
            (CoseAlgorithm::Es256, KTY_EC2) => {
                if get_int(entries, -1, "crv (-1)")? != CRV_P256 {
                    return malformed("an ES256 key must be on curve P-256 (crv 1)");
                }
                let x = get_bytes(entries, -2, "x (-2)")?;
                let y = get_bytes(entries, -3, "y (-3)")?;
                if x.len() != 32 || y.len() != 32 {
                    return malformed("P-256 coordinates must be 32 bytes each");
                }
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                KeyMaterial::P256(point)
            }
            (CoseAlgorithm::EdDsa, KTY_OKP) => {
                if get_int(entries, -1, "crv (-1)")? != CRV_ED25519 {
                    return malformed("an EdDSA key must be Ed25519 (crv 6)");
                }
                let x = get_bytes(entries, -2, "x (-2)")?;
                if x.len() != 32 {
                    return malformed("an Ed25519 public key must be 32 bytes");
                }
                KeyMaterial::Ed25519(x.to_vec())
            }
            (CoseAlgorithm::Rs256, KTY_RSA) => {
                let n = strip_leading_zeros(get_bytes(entries, -1, "n (-1)")?);
                let e = strip_leading_zeros(get_bytes(entries, -2, "e (-2)")?);
                if !(RSA_MIN_MODULUS..=RSA_MAX_MODULUS).contains(&n.len()) {
                    return malformed("an RS256 modulus must be 2048 to 8192 bits");
                }
                if e.is_empty() || e.len() > RSA_MAX_EXPONENT || e[e.len() - 1] & 1 == 0 {
                    return malformed("an RS256 public exponent must be odd and at most 32 bits");
                }
                KeyMaterial::Rsa { n, e }
            }
            (alg, kty) => {
                return malformed(format!(
                    "COSE key type {kty} does not fit algorithm {}",
                    alg.name()
                ))
            }
        };
        let key = CoseKey {
            algorithm,
            material,
        };
        key.check_key()?;
        Ok(key)
    }

    fn ec_or_ed(&self) -> Option<(&'static dyn VerificationAlgorithm, &[u8])> {
        match &self.material {
            KeyMaterial::P256(point) => Some((&signature::ECDSA_P256_SHA256_ASN1, point)),
            KeyMaterial::Ed25519(x) => Some((&signature::ED25519, x)),
            KeyMaterial::Rsa { .. } => None,
        }
    }

    /// Points off the curve and other invalid keys are refused when they are registered.
    fn check_key(&self) -> WebauthnResult<()> {
        if let Some((alg, bytes)) = self.ec_or_ed() {
            if ParsedPublicKey::new(alg, bytes).is_err() {
                return malformed(format!("not a valid {} public key", self.algorithm.name()));
            }
        }
        Ok(())
    }

    /// Verify `signature` over `message` (WebAuthn signature formats: ASN.1 DER for ES256, raw
    /// 64 bytes for EdDSA, PKCS#1 v1.5 for RS256).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> WebauthnResult<()> {
        let ok = match &self.material {
            KeyMaterial::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            _ => {
                let Some((alg, bytes)) = self.ec_or_ed() else {
                    return refused("the signature does not verify");
                };
                signature::UnparsedPublicKey::new(alg, bytes)
                    .verify(message, signature)
                    .is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            refused("the signature does not verify")
        }
    }
}
