//! Authenticator data (WebAuthn §6.1): rpIdHash, flags, sign count, and for registrations the
//! attested credential data (AAGUID, credential id, COSE public key), then extensions.

use super::{cbor_item, cose::CoseKey, malformed, WebauthnResult, MAX_CREDENTIAL_ID};

pub const FLAG_UP: u8 = 0x01;
pub const FLAG_UV: u8 = 0x04;
pub const FLAG_BE: u8 = 0x08;
pub const FLAG_BS: u8 = 0x10;
pub const FLAG_AT: u8 = 0x40;
pub const FLAG_ED: u8 = 0x80;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedCredential {
    pub aaguid: [u8; 16],
    pub credential_id: Vec<u8>,
    /// The COSE_Key bytes exactly as they appear in authenticatorData.
    pub public_key_cbor: Vec<u8>,
    pub key: CoseKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatorData {
    pub rp_id_hash: [u8; 32],
    pub flags: u8,
    pub sign_count: u32,
    pub attested: Option<AttestedCredential>,
}

impl AuthenticatorData {
    pub fn user_present(&self) -> bool {
        self.flags & FLAG_UP != 0
    }
    pub fn user_verified(&self) -> bool {
        self.flags & FLAG_UV != 0
    }
    pub fn backup_eligible(&self) -> bool {
        self.flags & FLAG_BE != 0
    }
    pub fn backed_up(&self) -> bool {
        self.flags & FLAG_BS != 0
    }

    pub fn parse(bytes: &[u8]) -> WebauthnResult<Self> {
        if bytes.len() < 37 {
            return malformed(format!(
                "authenticatorData is {} bytes, at least 37 expected",
                bytes.len()
            ));
        }
        let mut rp_id_hash = [0u8; 32];
        rp_id_hash.copy_from_slice(&bytes[..32]);
        let flags = bytes[32];
        let sign_count = u32::from_be_bytes([bytes[33], bytes[34], bytes[35], bytes[36]]);
        if flags & FLAG_BS != 0 && flags & FLAG_BE == 0 {
            return malformed("authenticatorData says backed up but not backup eligible");
        }
        let mut rest = &bytes[37..];
        let attested = if flags & FLAG_AT != 0 {
            if rest.len() < 18 {
                return malformed("attested credential data is truncated");
            }
            let mut aaguid = [0u8; 16];
            aaguid.copy_from_slice(&rest[..16]);
            let id_len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
            rest = &rest[18..];
            if id_len == 0 || id_len > MAX_CREDENTIAL_ID {
                return malformed(format!(
                    "credential id length {id_len} is outside 1..{MAX_CREDENTIAL_ID}"
                ));
            }
            if rest.len() < id_len {
                return malformed("attested credential data is truncated");
            }
            let credential_id = rest[..id_len].to_vec();
            rest = &rest[id_len..];
            let (key_value, used) = cbor_item(rest, "the credential public key")?;
            let key = CoseKey::from_cbor(&key_value)?;
            let public_key_cbor = rest[..used].to_vec();
            rest = &rest[used..];
            Some(AttestedCredential {
                aaguid,
                credential_id,
                public_key_cbor,
                key,
            })
        } else {
            None
        };
        if flags & FLAG_ED != 0 {
            let (extensions, used) = cbor_item(rest, "authenticator extensions")?;
            if extensions.as_map().is_none() {
                return malformed("authenticator extensions are not a CBOR map");
            }
            rest = &rest[used..];
        }
        if !rest.is_empty() {
            return malformed(format!(
                "authenticatorData has {} unexpected trailing bytes",
                rest.len()
            ));
        }
        Ok(AuthenticatorData {
            rp_id_hash,
            flags,
            sign_count,
            attested,
        })
    }
}
