//! The ciphertext envelope `auth_encrypt` returns and `auth_decrypt` reads.
//!
//! # Format 1, byte for byte
//!
//! ```text
//! offset  length  field
//!      0       1  format byte, 0x01
//!      1      16  key id: the data key's UUID in RFC 4122 byte order (as uuid_send / bytea cast)
//!     17      12  nonce, random per encryption (OS CSPRNG)
//!     29       n  ciphertext, n = plaintext length (0 allowed)
//!   29+n      16  GCM tag
//! ```
//!
//! Total length = plaintext length + 45 ([`OVERHEAD`]). The cipher is AES-256-GCM (NIST SP
//! 800-38D) with the 32-byte data key, the 12-byte nonce above, and a 16-byte tag. Its associated
//! data is the first 17 bytes of the envelope followed by the caller's AAD:
//!
//! ```text
//! associated data = 0x01 || key id (16 bytes) || user AAD (0 or more bytes)
//! ```
//!
//! so the format byte, the key id and the AAD are all authenticated. No AAD and an empty AAD are
//! the same thing. The header has a fixed length, so the concatenation is unambiguous.
//!
//! To decrypt elsewhere, e.g. Python `cryptography`:
//!
//! ```text
//! header, nonce, ct_and_tag = env[:17], env[17:29], env[29:]
//! plaintext = AESGCM(data_key).decrypt(nonce, ct_and_tag, header + aad)
//! ```
//!
//! # Guarantees
//!
//! [`open`] returns the plaintext only after the tag has been verified over everything, so no
//! partial plaintext ever leaves it; any altered, truncated or extended envelope, wrong key or
//! wrong AAD is an error. Malformed input (too short, unknown format) is
//! [`AuthError::MalformedCiphertext`]; everything else is [`AuthError::DecryptionFailed`].
//! Neither error carries plaintext or key bytes.

use aes_gcm::aead::AeadInOut;
use aes_gcm::Nonce;
use zeroize::{Zeroize, Zeroizing};

use super::keys::{aes256gcm, fill_nonce, DataKey, KeyId, KEY_ID_LEN, NONCE_LEN, TAG_LEN};
use crate::error::{AuthError, AuthResult};

/// The one envelope format this version writes and reads.
pub const FORMAT_V1: u8 = 0x01;
/// Format byte + key id: the part of the envelope readable without a key.
pub const HEADER_LEN: usize = 1 + KEY_ID_LEN;
/// Bytes an envelope adds to its plaintext: header, nonce and tag.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
/// Shortest valid envelope: that of an empty plaintext.
pub const MIN_ENVELOPE_LEN: usize = OVERHEAD;
/// Largest envelope a bytea can hold: a varlena is at most 2^30 - 1 bytes including its 4-byte
/// header.
pub const MAX_ENVELOPE_LEN: usize = (1 << 30) - 1 - 4;
/// Largest plaintext [`seal`] accepts, so that its envelope still fits in a bytea.
pub const MAX_PLAINTEXT_LEN: usize = MAX_ENVELOPE_LEN - OVERHEAD;

/// What can be read from an envelope before decrypting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Always [`FORMAT_V1`] today.
    pub format: u8,
    /// The data key that sealed it; look it up, then call [`open`].
    pub key_id: KeyId,
}

/// Read the format and key id so the caller can fetch the right data key. Checks the format
/// byte and the minimum length for that format, nothing else: the tag is checked by [`open`].
pub fn parse_header(envelope: &[u8]) -> AuthResult<Header> {
    let Some(&format) = envelope.first() else {
        return Err(AuthError::MalformedCiphertext("the value is empty".into()));
    };
    if format != FORMAT_V1 {
        return Err(AuthError::MalformedCiphertext(format!(
            "unknown envelope format 0x{format:02x} (this version of pgauth reads format 0x01)"
        )));
    }
    if envelope.len() < MIN_ENVELOPE_LEN {
        return Err(AuthError::MalformedCiphertext(format!(
            "envelope is {} bytes; a format 0x01 envelope is at least {MIN_ENVELOPE_LEN} bytes",
            envelope.len()
        )));
    }
    let key_id = envelope[1..HEADER_LEN]
        .try_into()
        .expect("length checked above");
    Ok(Header { format, key_id })
}

/// Encrypt `plaintext` under `data_key`, which the caller stores as `key_id`, binding `aad` if
/// given. Returns the format 1 envelope described in the module docs.
pub fn seal(
    data_key: &DataKey,
    key_id: KeyId,
    plaintext: &[u8],
    aad: Option<&[u8]>,
) -> AuthResult<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_nonce(&mut nonce)?;
    seal_with_nonce(data_key, key_id, &nonce, plaintext, aad)
}

/// [`seal`] with a chosen nonce. Private: reusing a nonce under one key breaks GCM; only the
/// known-answer tests fix it.
fn seal_with_nonce(
    data_key: &DataKey,
    key_id: KeyId,
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    aad: Option<&[u8]>,
) -> AuthResult<Vec<u8>> {
    check_plaintext_len(plaintext.len())?;
    let mut envelope = Vec::with_capacity(plaintext.len() + OVERHEAD);
    envelope.push(FORMAT_V1);
    envelope.extend_from_slice(&key_id);
    envelope.extend_from_slice(nonce);
    envelope.extend_from_slice(plaintext);
    let associated = associated_data(&envelope[..HEADER_LEN], aad);
    let body_start = HEADER_LEN + NONCE_LEN;
    let tag = aes256gcm(data_key.expose())
        .encrypt_inout_detached(
            &Nonce::from(*nonce),
            &associated,
            (&mut envelope[body_start..]).into(),
        )
        .map_err(|_| {
            // Still plaintext at this point.
            envelope.zeroize();
            AuthError::PlaintextTooLong {
                max: MAX_PLAINTEXT_LEN,
            }
        })?;
    envelope.extend_from_slice(&tag);
    Ok(envelope)
}

/// Verify and decrypt an envelope with `data_key` (the key named by [`parse_header`]) and the
/// same `aad` it was sealed with. The plaintext is zeroed when dropped.
pub fn open(
    data_key: &DataKey,
    envelope: &[u8],
    aad: Option<&[u8]>,
) -> AuthResult<Zeroizing<Vec<u8>>> {
    parse_header(envelope)?;
    let nonce: [u8; NONCE_LEN] = envelope[HEADER_LEN..HEADER_LEN + NONCE_LEN]
        .try_into()
        .expect("parse_header checked the length");
    let (body, tag) = envelope[HEADER_LEN + NONCE_LEN..].split_at(envelope.len() - OVERHEAD);
    let tag: [u8; TAG_LEN] = tag.try_into().expect("split leaves TAG_LEN bytes");
    let associated = associated_data(&envelope[..HEADER_LEN], aad);
    // aes-gcm checks the tag before it decrypts anything, so on failure `plaintext` still holds
    // ciphertext; it is zeroed on drop either way.
    let mut plaintext = Zeroizing::new(body.to_vec());
    aes256gcm(data_key.expose())
        .decrypt_inout_detached(
            &Nonce::from(nonce),
            &associated,
            (&mut plaintext[..]).into(),
            &tag.into(),
        )
        .map_err(|_| AuthError::DecryptionFailed)?;
    Ok(plaintext)
}

fn check_plaintext_len(len: usize) -> AuthResult<()> {
    if len > MAX_PLAINTEXT_LEN {
        return Err(AuthError::PlaintextTooLong {
            max: MAX_PLAINTEXT_LEN,
        });
    }
    Ok(())
}

/// `header || aad`. The AAD can be secret-ish (e.g. a row key), so the copy is zeroed too.
fn associated_data(header: &[u8], aad: Option<&[u8]>) -> Zeroizing<Vec<u8>> {
    let aad = aad.unwrap_or_default();
    let mut associated = Vec::with_capacity(header.len() + aad.len());
    associated.extend_from_slice(header);
    associated.extend_from_slice(aad);
    Zeroizing::new(associated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::KEY_LEN;

    const KEY_ID: KeyId = [
        0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30,
        0xc8,
    ];

    fn key(byte: u8) -> DataKey {
        DataKey::from_bytes(&[byte; KEY_LEN])
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn is_malformed_or_auth_failure(result: &AuthResult<Zeroizing<Vec<u8>>>) -> bool {
        matches!(
            result,
            Err(AuthError::MalformedCiphertext(_)) | Err(AuthError::DecryptionFailed)
        )
    }

    #[test]
    fn round_trips_with_and_without_aad() {
        let k = key(1);
        for plaintext in [&b""[..], b"x", b"hello, world", &[0u8; 1000][..]] {
            for aad in [None, Some(&b""[..]), Some(&b"row 42"[..])] {
                let envelope = seal(&k, KEY_ID, plaintext, aad).unwrap();
                assert_eq!(envelope.len(), plaintext.len() + OVERHEAD);
                assert_eq!(envelope[0], FORMAT_V1);
                assert_eq!(&envelope[1..17], &KEY_ID);
                assert_eq!(open(&k, &envelope, aad).unwrap().as_slice(), plaintext);
            }
        }
    }

    #[test]
    fn no_aad_equals_empty_aad() {
        let k = key(1);
        let envelope = seal(&k, KEY_ID, b"secret", None).unwrap();
        assert_eq!(
            open(&k, &envelope, Some(b"")).unwrap().as_slice(),
            b"secret"
        );
    }

    #[test]
    fn nonces_are_fresh() {
        let k = key(1);
        let a = seal(&k, KEY_ID, b"same", None).unwrap();
        let b = seal(&k, KEY_ID, b"same", None).unwrap();
        assert_ne!(a[17..29], b[17..29]);
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_aad_or_key_fails_authentication() {
        let k = key(1);
        let envelope = seal(&k, KEY_ID, b"secret", Some(b"row 1")).unwrap();
        for aad in [
            None,
            Some(&b"row 2"[..]),
            Some(&b"row 1 "[..]),
            Some(&b"row "[..]),
        ] {
            assert_eq!(open(&k, &envelope, aad), Err(AuthError::DecryptionFailed));
        }
        assert_eq!(
            open(&key(2), &envelope, Some(b"row 1")),
            Err(AuthError::DecryptionFailed)
        );
        let no_aad = seal(&k, KEY_ID, b"secret", None).unwrap();
        assert_eq!(
            open(&k, &no_aad, Some(b"x")),
            Err(AuthError::DecryptionFailed)
        );
    }

    #[test]
    fn header_is_authenticated() {
        // Relabelling a ciphertext with another key id fails even under the right key.
        let k = key(1);
        let mut envelope = seal(&k, KEY_ID, b"secret", None).unwrap();
        envelope[1..17].copy_from_slice(&[0x22; 16]);
        assert_eq!(
            parse_header(&envelope).unwrap().key_id,
            [0x22; 16],
            "header still parses"
        );
        assert_eq!(open(&k, &envelope, None), Err(AuthError::DecryptionFailed));
    }

    #[test]
    fn every_single_bit_flip_fails() {
        let k = key(1);
        let aad = Some(&b"aad"[..]);
        let envelope = seal(&k, KEY_ID, b"a short secret value", aad).unwrap();
        for bit in 0..envelope.len() * 8 {
            let mut bad = envelope.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let result = open(&k, &bad, aad);
            if bit < 8 {
                assert!(
                    matches!(result, Err(AuthError::MalformedCiphertext(_))),
                    "bit {bit}"
                );
            } else {
                assert_eq!(result, Err(AuthError::DecryptionFailed), "bit {bit}");
            }
        }
    }

    #[test]
    fn every_truncation_and_extension_fails() {
        let k = key(1);
        let envelope = seal(&k, KEY_ID, b"a short secret value", None).unwrap();
        for len in 0..envelope.len() {
            let result = open(&k, &envelope[..len], None);
            if len < MIN_ENVELOPE_LEN {
                assert!(
                    matches!(result, Err(AuthError::MalformedCiphertext(_))),
                    "len {len}"
                );
            } else {
                assert_eq!(result, Err(AuthError::DecryptionFailed), "len {len}");
            }
        }
        let mut longer = envelope.clone();
        longer.push(0);
        assert_eq!(open(&k, &longer, None), Err(AuthError::DecryptionFailed));
        // Cutting from the front.
        for start in 1..envelope.len() {
            assert!(is_malformed_or_auth_failure(&open(
                &k,
                &envelope[start..],
                None
            )));
        }
    }

    #[test]
    fn parse_header_reads_format_and_key_id() {
        let envelope = seal(&key(1), KEY_ID, b"v", None).unwrap();
        assert_eq!(
            parse_header(&envelope),
            Ok(Header {
                format: FORMAT_V1,
                key_id: KEY_ID
            })
        );
        // The shortest envelope (empty plaintext) has a readable header.
        let empty = seal(&key(1), KEY_ID, b"", None).unwrap();
        assert_eq!(empty.len(), MIN_ENVELOPE_LEN);
        assert_eq!(parse_header(&empty).unwrap().key_id, KEY_ID);
    }

    #[test]
    fn parse_header_rejects_empty_short_and_unknown_format() {
        let envelope = seal(&key(1), KEY_ID, b"v", None).unwrap();
        for len in 0..MIN_ENVELOPE_LEN {
            let err = parse_header(&envelope[..len]).unwrap_err();
            assert!(
                matches!(err, AuthError::MalformedCiphertext(_)),
                "len {len}"
            );
        }
        for format in (0u8..=255).filter(|&f| f != FORMAT_V1) {
            let mut bad = envelope.clone();
            bad[0] = format;
            let err = parse_header(&bad).unwrap_err();
            assert!(
                err.to_string().contains(&format!("0x{format:02x}")),
                "{err}"
            );
            assert!(matches!(
                open(&key(1), &bad, None),
                Err(AuthError::MalformedCiphertext(_))
            ));
        }
    }

    #[test]
    fn errors_do_not_carry_plaintext() {
        let k = key(1);
        let secret = b"TOPSECRETVALUE";
        let envelope = seal(&k, KEY_ID, secret, None).unwrap();
        for err in [
            open(&key(2), &envelope, None).unwrap_err(),
            open(&k, &envelope[..20], None).unwrap_err(),
        ] {
            assert!(!err.to_string().contains("TOPSECRET"));
        }
    }

    #[test]
    fn plaintext_limit_matches_bytea_limit() {
        // A varlena holds at most 2^30 - 1 bytes including its 4-byte length word.
        assert_eq!(MAX_ENVELOPE_LEN, 1_073_741_819);
        assert_eq!(MAX_PLAINTEXT_LEN + OVERHEAD, MAX_ENVELOPE_LEN);
        assert_eq!(check_plaintext_len(MAX_PLAINTEXT_LEN), Ok(()));
        assert_eq!(
            check_plaintext_len(MAX_PLAINTEXT_LEN + 1),
            Err(AuthError::PlaintextTooLong {
                max: MAX_PLAINTEXT_LEN
            })
        );
    }

    /// Random bytes through the parser and `open`: errors only, never a panic. Half the inputs
    /// get a valid format byte so they reach the tag check.
    #[test]
    fn random_inputs_never_panic() {
        let k = key(1);
        let mut seed = [0u8; 4096];
        for round in 0..4000 {
            getrandom::fill(&mut seed).unwrap();
            let len = usize::from(u16::from_le_bytes([seed[0], seed[1]])) % 200;
            let mut input = seed[2..2 + len].to_vec();
            if round % 2 == 0 && !input.is_empty() {
                input[0] = FORMAT_V1;
            }
            let _ = parse_header(&input);
            let result = open(&k, &input, Some(&seed[300..310]));
            assert!(is_malformed_or_auth_failure(&result), "{input:?}");
            let result = open(&k, &input, None);
            assert!(is_malformed_or_auth_failure(&result), "{input:?}");
        }
    }

    /// Cross-checked with Python `cryptography` (48.0):
    /// ```text
    /// key = bytes(range(32)); nonce = bytes(range(0xa0, 0xac))
    /// key_id = bytes.fromhex("6ba7b8109dad11d180b400c04fd430c8")
    /// header = b"\x01" + key_id
    /// header + nonce + AESGCM(key).encrypt(nonce, b"pgauth envelope test", header + b"row 42")
    /// ```
    #[test]
    fn envelope_known_answer() {
        let data_key: [u8; KEY_LEN] = std::array::from_fn(|i| i as u8);
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| 0xa0 + i as u8);
        let k = DataKey::from_bytes(&data_key);
        let envelope =
            seal_with_nonce(&k, KEY_ID, &nonce, b"pgauth envelope test", Some(b"row 42")).unwrap();
        assert_eq!(hex(&envelope), ENVELOPE_KAT_WITH_AAD);
        assert_eq!(
            open(&k, &envelope, Some(b"row 42")).unwrap().as_slice(),
            b"pgauth envelope test"
        );

        let empty = seal_with_nonce(&k, KEY_ID, &nonce, b"", None).unwrap();
        assert_eq!(hex(&empty), ENVELOPE_KAT_EMPTY);
    }
    const ENVELOPE_KAT_WITH_AAD: &str =
        "016ba7b8109dad11d180b400c04fd430c8a0a1a2a3a4a5a6a7a8a9aaab967f1d5831a322da0c13e2bf680aa5fe04c92a6459608656d4652ea8ab41513cafcfd5ca";
    const ENVELOPE_KAT_EMPTY: &str =
        "016ba7b8109dad11d180b400c04fd430c8a0a1a2a3a4a5a6a7a8a9aaab56464ff494d28844afde9b5b37e9cdc6";
}
