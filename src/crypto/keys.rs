//! Master key and data keys: generation, parsing, wrapping, and the key-file permission check.
//!
//! # Wrapped data key (`pgauth.keys.wrapped_key`), 60 bytes
//!
//! ```text
//! offset  length  field
//!      0      12  nonce, random per wrap
//!     12      32  the data key encrypted with AES-256-GCM under the master key
//!     44      16  GCM tag
//! ```
//!
//! Associated data: the 18 ASCII bytes `pgauth data key v1` followed by the 16-byte key id (UUID
//! in RFC 4122 byte order). Binding the id means a wrapped key copied onto another row of
//! `pgauth.keys` fails to unwrap instead of silently decrypting that row's data.
//!
//! # Master key fingerprint, 8 bytes
//!
//! The first 8 bytes of HMAC-SHA-256(key = master key, message = `pgauth master key fingerprint
//! v1`). Stored next to wrapped keys so the SQL layer can say "these keys were wrapped under a
//! different master key" rather than just "cannot unwrap". It is a PRF output: it identifies the
//! key without revealing anything usable about it.
//!
//! Key bytes live on the heap (moves do not leave copies on the stack) and are zeroed on drop.
//! Nothing here formats key bytes or the text a key was parsed from.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{AuthError, AuthResult};

/// Length of every key pgauth uses (AES-256), bytes.
pub const KEY_LEN: usize = 32;
/// Length of a key id: a UUID in RFC 4122 byte order.
pub const KEY_ID_LEN: usize = 16;
/// AES-GCM nonce length, bytes.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length, bytes.
pub const TAG_LEN: usize = 16;
/// Length of a wrapped data key: nonce || encrypted key || tag.
pub const WRAPPED_KEY_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;
/// Length of [`master_key_fingerprint`].
pub const FINGERPRINT_LEN: usize = 8;

/// Key ids are UUIDs in RFC 4122 byte order (what `uuid_send` and `pgrx::Uuid::as_bytes` give).
pub type KeyId = [u8; KEY_ID_LEN];

const WRAP_AAD_LABEL: &[u8] = b"pgauth data key v1";
const FINGERPRINT_LABEL: &[u8] = b"pgauth master key fingerprint v1";

/// 32 secret bytes on the heap, zeroed on drop. Shared body of [`DataKey`] and [`MasterKey`],
/// which stay distinct types so one cannot be passed where the other is expected.
#[derive(Clone)]
struct SecretBytes(Box<[u8; KEY_LEN]>);

impl SecretBytes {
    fn zeroed() -> Self {
        Self(Box::new([0u8; KEY_LEN]))
    }

    fn random() -> AuthResult<Self> {
        let mut secret = Self::zeroed();
        crate::random::fill(&mut secret.0[..])?;
        Ok(secret)
    }

    fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let mut secret = Self::zeroed();
        secret.0.copy_from_slice(bytes);
        Some(secret)
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A 256-bit data key: encrypts values (AES-256-GCM) and, through derived keys, computes blind
/// indexes and HMACs. Stored only wrapped under the master key.
#[derive(Clone)]
pub struct DataKey(SecretBytes);

impl DataKey {
    /// A new random key from the operating system's CSPRNG.
    pub fn generate() -> AuthResult<Self> {
        SecretBytes::random().map(Self)
    }

    /// A key from raw bytes (tests, known-answer vectors). The caller owns zeroing `bytes`.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let mut secret = SecretBytes::zeroed();
        secret.0.copy_from_slice(bytes);
        Self(secret)
    }

    /// The raw key, for handing to a primitive inside this crate. Never format or store it.
    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0 .0
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl ZeroizeOnDrop for DataKey {}

/// The 256-bit master key, read from `pgauth.master_key_file` / `pgauth.master_key_command`
/// with [`parse_master_key`]. It only wraps and unwraps data keys.
#[derive(Clone)]
pub struct MasterKey(SecretBytes);

impl MasterKey {
    /// A master key from raw bytes (tests). Production keys come from [`parse_master_key`].
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let mut secret = SecretBytes::zeroed();
        secret.0.copy_from_slice(bytes);
        Self(secret)
    }

    fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0 .0
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl ZeroizeOnDrop for MasterKey {}

/// How many nonces one seed may produce before the generator is reseeded from the OS.
const NONCES_PER_SEED: u32 = 1 << 20;

struct NonceSource {
    pid: u32,
    left: u32,
    rng: rand_chacha::ChaCha20Rng,
}

thread_local! {
    static NONCES: std::cell::RefCell<Option<NonceSource>> = const { std::cell::RefCell::new(None) };
}

/// Fill `buf` with a nonce: a ChaCha20 CSPRNG per process, seeded with 256 bits from the OS,
/// reseeded after `NONCES_PER_SEED` nonces and whenever the process id changes (a forked child
/// never continues its parent's stream). A getrandom() system call per row cost about a third
/// of `auth_encrypt`'s time.
pub(crate) fn fill_nonce(buf: &mut [u8]) -> AuthResult<()> {
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    let pid = std::process::id();
    NONCES.with(|n| {
        let mut n = n.borrow_mut();
        if !matches!(&*n, Some(s) if s.pid == pid && s.left > 0) {
            let mut seed = zeroize::Zeroizing::new([0u8; 32]);
            crate::random::fill(&mut seed[..])?;
            *n = Some(NonceSource {
                pid,
                left: NONCES_PER_SEED,
                rng: rand_chacha::ChaCha20Rng::from_seed(*seed),
            });
        }
        let source = n.as_mut().expect("seeded above");
        source.left -= 1;
        source.rng.fill_bytes(buf);
        Ok(())
    })
}

/// An AES-256-GCM instance for `key`. The expanded key schedule is zeroed when it is dropped
/// (aes-gcm's `zeroize` feature).
pub(crate) fn aes256gcm(key: &[u8; KEY_LEN]) -> Aes256Gcm {
    Aes256Gcm::new(key.into())
}

fn wrap_aad(key_id: &KeyId) -> [u8; WRAP_AAD_LABEL.len() + KEY_ID_LEN] {
    let mut aad = [0u8; WRAP_AAD_LABEL.len() + KEY_ID_LEN];
    aad[..WRAP_AAD_LABEL.len()].copy_from_slice(WRAP_AAD_LABEL);
    aad[WRAP_AAD_LABEL.len()..].copy_from_slice(key_id);
    aad
}

/// Encrypt `data_key` under `master` for storage as key `key_id`: `nonce(12) || ct(32) ||
/// tag(16)`, see the module docs. A fresh random nonce each time, so rewrapping the same key gives
/// different bytes.
pub fn wrap_data_key(
    master: &MasterKey,
    key_id: &KeyId,
    data_key: &DataKey,
) -> AuthResult<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    crate::random::fill(&mut nonce)?;
    wrap_with_nonce(master, key_id, data_key, &nonce)
}

fn wrap_with_nonce(
    master: &MasterKey,
    key_id: &KeyId,
    data_key: &DataKey,
    nonce: &[u8; NONCE_LEN],
) -> AuthResult<Vec<u8>> {
    let mut wrapped = Vec::with_capacity(WRAPPED_KEY_LEN);
    wrapped.extend_from_slice(nonce);
    wrapped.extend_from_slice(data_key.expose());
    let tag = aes256gcm(master.expose())
        .encrypt_inout_detached(
            &Nonce::from(*nonce),
            &wrap_aad(key_id),
            (&mut wrapped[NONCE_LEN..]).into(),
        )
        .map_err(|_| {
            wrapped.zeroize();
            AuthError::Internal("AES-GCM refused to wrap a 32-byte key".into())
        })?;
    wrapped.extend_from_slice(&tag);
    Ok(wrapped)
}

/// Decrypt a wrapped data key stored as `key_id`. A wrong length is `MalformedCiphertext`; a
/// wrong master key, a different key id or any altered byte is `KeyWrapFailed`.
pub fn unwrap_data_key(master: &MasterKey, key_id: &KeyId, wrapped: &[u8]) -> AuthResult<DataKey> {
    if wrapped.len() != WRAPPED_KEY_LEN {
        return Err(AuthError::MalformedCiphertext(format!(
            "wrapped data key is {} bytes; expected {WRAPPED_KEY_LEN}",
            wrapped.len()
        )));
    }
    let (nonce, rest) = wrapped.split_at(NONCE_LEN);
    let (encrypted, tag) = rest.split_at(KEY_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
    let tag: [u8; TAG_LEN] = tag.try_into().expect("length checked above");
    let mut key = DataKey(SecretBytes::zeroed());
    key.0 .0.copy_from_slice(encrypted);
    aes256gcm(master.expose())
        .decrypt_inout_detached(
            &Nonce::from(nonce),
            &wrap_aad(key_id),
            (&mut key.0 .0[..]).into(),
            &tag.into(),
        )
        .map_err(|_| AuthError::KeyWrapFailed)?;
    Ok(key)
}

/// Which master key this is: see the module docs. Safe to store and to show.
pub fn master_key_fingerprint(master: &MasterKey) -> [u8; FINGERPRINT_LEN] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(master.expose())
        .expect("HMAC accepts keys of any length");
    mac.update(FINGERPRINT_LABEL);
    let full = mac.finalize().into_bytes();
    let mut fingerprint = [0u8; FINGERPRINT_LEN];
    fingerprint.copy_from_slice(&full[..FINGERPRINT_LEN]);
    fingerprint
}

const MASTER_KEY_FORMAT: &str = "the master key must be 32 bytes written as 64 hexadecimal \
                                 characters or as base64 (43 characters, or 44 with '=' padding)";

/// Parse the contents of a master key file or the output of `pgauth.master_key_command`:
/// exactly 32 bytes written as 64 hex digits (either case) or standard base64 (padded or not),
/// with surrounding whitespace and newlines ignored. An all-zero key is refused (a placeholder,
/// never a random key). Errors say what is expected and how many characters were found; they
/// never contain the input.
pub fn parse_master_key(text: &[u8]) -> AuthResult<MasterKey> {
    let text = text.trim_ascii();
    let invalid =
        |problem: &str| AuthError::MasterKeyInvalid(format!("{problem}; {MASTER_KEY_FORMAT}"));
    if text.is_empty() {
        return Err(invalid("the master key is empty"));
    }
    let key = if text.len() == 2 * KEY_LEN {
        decode_hex_key(text)
            .ok_or_else(|| invalid("found 64 characters that are not all hexadecimal"))?
    } else if text.len() == 43 || text.len() == 44 {
        decode_base64_key(text).ok_or_else(|| {
            invalid(&format!(
                "found {} characters that are not base64 of 32 bytes",
                text.len()
            ))
        })?
    } else {
        return Err(invalid(&format!("found {} characters", text.len())));
    };
    if key.0.iter().all(|&b| b == 0) {
        return Err(AuthError::MasterKeyInvalid(
            "the master key is all zero bytes; generate one with openssl rand -hex 32".into(),
        ));
    }
    Ok(MasterKey(key))
}

fn decode_hex_key(text: &[u8]) -> Option<SecretBytes> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let mut key = SecretBytes::zeroed();
    for (byte, pair) in key.0.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(key)
}

fn decode_base64_key(text: &[u8]) -> Option<SecretBytes> {
    const STANDARD_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    // Room for the decoder's worst-case estimate, allocated once so nothing is left behind by
    // a reallocation.
    let mut decoded = Zeroizing::new(Vec::with_capacity(KEY_LEN + 3));
    STANDARD_ANY_PADDING.decode_vec(text, &mut decoded).ok()?;
    SecretBytes::from_slice(&decoded)
}

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;

/// Check the metadata of the master key file before reading it: it must be owned by the
/// server's OS user (`server_uid`, i.e. `geteuid()`) and have no group or other permission bits
/// (`mode & 0o077 == 0`). `mode` is `st_mode` (`MetadataExt::mode()`); when it carries file-type
/// bits they must say "regular file". Stricter than PostgreSQL's check of `ssl_key_file`, which
/// also accepts root-owned files with mode 640: this key unlocks every data key.
pub fn check_key_file_mode(mode: u32, file_uid: u32, server_uid: u32) -> AuthResult<()> {
    let file_type = mode & S_IFMT;
    if file_type != 0 && file_type != S_IFREG {
        return Err(AuthError::MasterKeyInvalid(
            "the master key file is not a regular file".into(),
        ));
    }
    if file_uid != server_uid {
        return Err(AuthError::MasterKeyInvalid(format!(
            "the master key file is owned by uid {file_uid}, not by the database server's user \
             (uid {server_uid}); chown it to the server's user and chmod 600 it"
        )));
    }
    if mode & 0o077 != 0 {
        return Err(AuthError::MasterKeyInvalid(format!(
            "the master key file has mode {:04o}, which lets group or others access it; \
             run chmod 600 on it",
            mode & 0o7777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn nonces_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100_000 {
            let mut n = [0u8; 12];
            fill_nonce(&mut n).unwrap();
            assert!(seen.insert(n), "a nonce repeated");
        }
    }

    use super::*;

    const KEY_ID: KeyId = [0x11; KEY_ID_LEN];
    const OTHER_KEY_ID: KeyId = [0x22; KEY_ID_LEN];

    fn master(byte: u8) -> MasterKey {
        MasterKey::from_bytes(&[byte; KEY_LEN])
    }

    #[test]
    fn generated_keys_differ_and_are_not_zero() {
        let a = DataKey::generate().unwrap();
        let b = DataKey::generate().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.expose(), &[0u8; KEY_LEN]);
    }

    #[test]
    fn debug_does_not_print_key_bytes() {
        let key = DataKey::from_bytes(&[0xab; KEY_LEN]);
        let shown = format!("{key:?} {:?}", master(0xab));
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn wrap_unwrap_round_trip() {
        let m = master(7);
        let key = DataKey::generate().unwrap();
        let wrapped = wrap_data_key(&m, &KEY_ID, &key).unwrap();
        assert_eq!(wrapped.len(), WRAPPED_KEY_LEN);
        assert!(!wrapped.windows(KEY_LEN).any(|w| w == key.expose()));
        let unwrapped = unwrap_data_key(&m, &KEY_ID, &wrapped).unwrap();
        assert_eq!(unwrapped.expose(), key.expose());
        // Fresh nonce each time.
        assert_ne!(wrapped, wrap_data_key(&m, &KEY_ID, &key).unwrap());
    }

    #[test]
    fn unwrap_fails_with_another_master_key_or_key_id() {
        let key = DataKey::generate().unwrap();
        let wrapped = wrap_data_key(&master(7), &KEY_ID, &key).unwrap();
        assert_eq!(
            unwrap_data_key(&master(8), &KEY_ID, &wrapped).unwrap_err(),
            AuthError::KeyWrapFailed
        );
        assert_eq!(
            unwrap_data_key(&master(7), &OTHER_KEY_ID, &wrapped).unwrap_err(),
            AuthError::KeyWrapFailed
        );
    }

    #[test]
    fn unwrap_fails_on_any_flipped_bit_and_on_wrong_length() {
        let m = master(7);
        let wrapped = wrap_data_key(&m, &KEY_ID, &DataKey::generate().unwrap()).unwrap();
        for bit in 0..wrapped.len() * 8 {
            let mut bad = wrapped.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                unwrap_data_key(&m, &KEY_ID, &bad).unwrap_err(),
                AuthError::KeyWrapFailed,
                "bit {bit}"
            );
        }
        for len in (0..wrapped.len()).chain([WRAPPED_KEY_LEN + 1]) {
            let mut bad = wrapped.clone();
            bad.resize(len, 0);
            assert!(matches!(
                unwrap_data_key(&m, &KEY_ID, &bad),
                Err(AuthError::MalformedCiphertext(_))
            ));
        }
    }

    /// Cross-checked with Python `cryptography`:
    /// `AESGCM(bytes([7]*32)).encrypt(bytes(range(12)), bytes(range(32)),
    ///  b"pgauth data key v1" + bytes([0x11]*16))`.
    #[test]
    fn wrap_known_answer() {
        let mut data_key = [0u8; KEY_LEN];
        for (i, b) in data_key.iter_mut().enumerate() {
            *b = i as u8;
        }
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| i as u8);
        let wrapped =
            wrap_with_nonce(&master(7), &KEY_ID, &DataKey::from_bytes(&data_key), &nonce).unwrap();
        assert_eq!(hex(&wrapped), WRAP_KAT);
        let unwrapped = unwrap_data_key(&master(7), &KEY_ID, &wrapped).unwrap();
        assert_eq!(unwrapped.expose(), &data_key);
    }
    const WRAP_KAT: &str =
        "000102030405060708090a0b1880eb73190cdf4e7fbbef97ee5562f5f12da49d0c7761260ed779a192ca731a1a7c949b2234aa3504a645f3cfc88682";

    /// Cross-checked with Python: `hmac.new(bytes([7]*32), b"pgauth master key fingerprint v1",
    /// hashlib.sha256).digest()[:8]`.
    #[test]
    fn fingerprint_known_answer_and_distinct() {
        assert_eq!(hex(&master_key_fingerprint(&master(7))), FINGERPRINT_KAT);
        assert_ne!(
            master_key_fingerprint(&master(7)),
            master_key_fingerprint(&master(8))
        );
    }
    const FINGERPRINT_KAT: &str = "202b685439881d16";

    pub(crate) fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    const HEX_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    // base64 of bytes 0..32
    const B64_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn expected_key() -> [u8; KEY_LEN] {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn parses_hex_and_base64_master_keys() {
        let accepted = [
            HEX_KEY.to_string(),
            HEX_KEY.to_uppercase(),
            format!("{HEX_KEY}\n"),
            format!("  {HEX_KEY}\r\n"),
            B64_KEY.to_string(),
            B64_KEY.trim_end_matches('=').to_string(),
            format!("{B64_KEY}\n"),
            format!("\t{}\n\n", B64_KEY.trim_end_matches('=')),
        ];
        for text in accepted {
            let key = parse_master_key(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(key.expose(), &expected_key(), "{text:?}");
        }
    }

    #[test]
    fn rejects_bad_master_keys_without_echoing_them() {
        let raw: Vec<u8> = (100u8..132).collect();
        let rejected: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b" \n".to_vec(),
            HEX_KEY.as_bytes()[..62].to_vec(),
            format!("{HEX_KEY}00").into_bytes(),
            format!("{}zz", &HEX_KEY[..62]).into_bytes(),
            format!("{}-", &HEX_KEY[..63]).into_bytes(),
            // Hex with a space inside.
            format!("{} {}", &HEX_KEY[..32], &HEX_KEY[32..]).into_bytes(),
            // base64 of 31 and of 33 bytes.
            b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==".to_vec(),
            b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g".to_vec(),
            // URL-safe alphabet, wrong padding.
            b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh_-".to_vec(),
            b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh==".to_vec(),
            // Raw 32 bytes are not accepted.
            raw,
            "0".repeat(64).into_bytes(),
            "correct horse battery staple".into(),
            "secretsecretsecretsecretsecretsecretsecretsecretsecretsecret1234".into(),
        ];
        for text in rejected {
            let err = parse_master_key(&text).expect_err(&String::from_utf8_lossy(&text));
            assert!(matches!(err, AuthError::MasterKeyInvalid(_)));
            let message = err.to_string();
            let input = String::from_utf8_lossy(text.trim_ascii()).to_string();
            if input.len() >= 4 {
                assert!(!message.contains(&input), "{message}");
                assert!(!message.contains(&input[..input.len() / 2]), "{message}");
            }
            assert!(
                message.contains("32 bytes") || message.contains("openssl"),
                "{message}"
            );
            assert!(message.contains("hexadecimal") || message.contains("zero"));
        }
    }

    #[test]
    fn key_file_mode_checks() {
        assert_eq!(check_key_file_mode(0o600, 26, 26), Ok(()));
        assert_eq!(check_key_file_mode(0o400, 26, 26), Ok(()));
        assert_eq!(check_key_file_mode(0o100_600, 26, 26), Ok(()));
        for mode in [
            0o640, 0o604, 0o644, 0o660, 0o606, 0o610, 0o601, 0o777, 0o100_644,
        ] {
            let err = check_key_file_mode(mode, 26, 26).unwrap_err();
            assert!(matches!(err, AuthError::MasterKeyInvalid(_)));
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        let err = check_key_file_mode(0o600, 0, 26).unwrap_err();
        assert!(err.to_string().contains("owned by uid 0"), "{err}");
        assert!(err.to_string().contains("chown"), "{err}");
        // A directory or a FIFO, whatever its permission bits.
        assert!(check_key_file_mode(0o040_700, 26, 26).is_err());
        assert!(check_key_file_mode(0o010_600, 26, 26).is_err());
    }
}

/// A data key's name as `pgauth.keys` allows it: 1 to 128 of `A-Z a-z 0-9 _ . : @ / -`.
pub fn valid_key_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:@/-".contains(&b))
}

#[cfg(test)]
mod key_name_tests {
    #[test]
    fn key_names() {
        for ok in ["default", "k2", "billing/2026:eu@x-y_z.1", &"a".repeat(128)] {
            assert!(super::valid_key_name(ok), "{ok}");
        }
        for bad in ["", "a b", "é", "a\u{0}", &"a".repeat(129), "x'"] {
            assert!(!super::valid_key_name(bad), "{bad}");
        }
    }
}
