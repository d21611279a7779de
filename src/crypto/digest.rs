//! Digests and keyed MACs: `auth_digest`, `auth_hmac` and `auth_blind_index`.
//!
//! # Constructions
//!
//! HMAC is RFC 2104 HMAC over SHA3-256 (block size 136 bytes), written HMAC-SHA3-256(key, msg).
//! A data key is never used directly as a MAC key: each purpose gets its own key derived from it,
//! so a blind index, an HMAC and a ciphertext under the same data key are unrelated.
//!
//! ```text
//! blind-index key = HMAC-SHA3-256(data key, "pgauth blind index v1")     (21 ASCII bytes)
//! blind index     = first 16 bytes of HMAC-SHA3-256(blind-index key, value)
//!
//! hmac key        = HMAC-SHA3-256(data key, "pgauth hmac v1")            (14 ASCII bytes)
//! keyed hmac      = HMAC-SHA3-256(hmac key, data)                        (all 32 bytes)
//!
//! digest          = SHA3-512(data)                                       (FIPS 202, 64 bytes)
//! ```
//!
//! The blind index is truncated to 128 bits: it keeps the index small while collisions stay out
//! of reach (2^64 values before one is likely). A blind index reveals which rows hold equal
//! values under the same key; that is its purpose, and the reason it uses a key of its own.

use hmac::{KeyInit, Mac, SimpleHmac};
use sha3::{Digest, Sha3_256, Sha3_512};
use zeroize::Zeroizing;

use super::keys::DataKey;

/// Length of [`blind_index`] output, bytes.
pub const BLIND_INDEX_LEN: usize = 16;

const BLIND_INDEX_LABEL: &[u8] = b"pgauth blind index v1";
const HMAC_LABEL: &[u8] = b"pgauth hmac v1";

/// SHA3-512 of `data`.
pub fn digest_sha3_512(data: &[u8]) -> [u8; 64] {
    Sha3_512::digest(data).into()
}

/// HMAC-SHA3-256 of `data` under `key` (any length, per RFC 2104).
pub fn hmac_sha3_256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <SimpleHmac<Sha3_256> as KeyInit>::new_from_slice(key)
        .expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn derive_key(data_key: &DataKey, label: &[u8]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(hmac_sha3_256(data_key.expose(), label))
}

/// Deterministic 16-byte tag of `value` for equality search over an encrypted column; see the
/// module docs for the construction. Equal values give equal tags under the same data key only.
pub fn blind_index(data_key: &DataKey, value: &[u8]) -> [u8; BLIND_INDEX_LEN] {
    let key = derive_key(data_key, BLIND_INDEX_LABEL);
    let full = Zeroizing::new(hmac_sha3_256(&key[..], value));
    let mut index = [0u8; BLIND_INDEX_LEN];
    index.copy_from_slice(&full[..BLIND_INDEX_LEN]);
    index
}

/// `auth_hmac`: HMAC-SHA3-256 of `data` under the data key's HMAC key; see the module docs.
pub fn keyed_hmac(data_key: &DataKey, data: &[u8]) -> [u8; 32] {
    let key = derive_key(data_key, HMAC_LABEL);
    hmac_sha3_256(&key[..], data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::KEY_LEN;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn key(byte: u8) -> DataKey {
        DataKey::from_bytes(&[byte; KEY_LEN])
    }

    #[test]
    fn sha3_512_nist_vectors() {
        assert_eq!(
            hex(&digest_sha3_512(b"abc")),
            "b751850b1a57168a5693cd924b6b096e08f621827444f70d884f5d0240d2712e\
             10e116e9192af3c91a7ec57647e3934057340b4cf408d5a56592f8274eec53f0"
        );
        assert_eq!(
            hex(&digest_sha3_512(b"")),
            "a69f73cca23a9ac5c8b567dc185a756e97c982164fe25859e0d1dcc1475c80a6\
             15b2123af1f5f94c11e3e9402c3ac558f500199d95b6d3e301758586281dcd26"
        );
    }

    /// Cross-checked with Python: `hmac.new(bytes(range(32)), b"pgauth", hashlib.sha3_256)`.
    #[test]
    fn hmac_sha3_256_known_answer() {
        let k: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(hex(&hmac_sha3_256(&k, b"pgauth")), HMAC_KAT);
    }
    const HMAC_KAT: &str = "a7ea6f54f1e3457aa0cb834e3ef2fe59e10f73a5549ad90464f57641c057e349";

    /// Cross-checked with Python:
    /// `bk = hmac.new(bytes([1]*32), b"pgauth blind index v1", hashlib.sha3_256).digest()`,
    /// `hmac.new(bk, b"alice@example.com", hashlib.sha3_256).digest()[:16]`, and the same with
    /// `b"pgauth hmac v1"` (untruncated) for `keyed_hmac`.
    #[test]
    fn blind_index_and_keyed_hmac_known_answers() {
        assert_eq!(
            hex(&blind_index(&key(1), b"alice@example.com")),
            BLIND_INDEX_KAT
        );
        assert_eq!(
            hex(&keyed_hmac(&key(1), b"alice@example.com")),
            KEYED_HMAC_KAT
        );
    }
    const BLIND_INDEX_KAT: &str = "2f1a0ad4ae55c6912fda95d68a603607";
    const KEYED_HMAC_KAT: &str = "fb0ba5705d735626b16989b9d099071a89524af9056922af253440d56c5af9fe";

    #[test]
    fn blind_index_is_deterministic_per_key_and_differs_across_keys() {
        let a = blind_index(&key(1), b"alice@example.com");
        assert_eq!(a, blind_index(&key(1), b"alice@example.com"));
        assert_ne!(a, blind_index(&key(2), b"alice@example.com"));
        assert_ne!(a, blind_index(&key(1), b"bob@example.com"));
        assert_ne!(blind_index(&key(1), b""), blind_index(&key(2), b""));
    }

    #[test]
    fn purposes_are_separated() {
        let k = key(1);
        let value = b"alice@example.com";
        let index = blind_index(&k, value);
        let mac = keyed_hmac(&k, value);
        let raw = hmac_sha3_256(&[1u8; KEY_LEN], value);
        assert_ne!(index[..], mac[..BLIND_INDEX_LEN]);
        assert_ne!(mac, raw, "the data key must not be used directly");
        assert_ne!(index[..], raw[..BLIND_INDEX_LEN]);
        assert_eq!(keyed_hmac(&k, value), mac);
        assert_ne!(keyed_hmac(&key(2), value), mac);
    }
}
