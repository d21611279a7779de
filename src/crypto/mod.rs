//! Encryption: the master key, data keys and their wrapping, the ciphertext envelope, digests,
//! keyed MACs and blind indexes, and the per-backend cache of unwrapped keys.
//!
//! Everything here is plain Rust with no pgrx types; `sql.rs` (tables, GUCs, loading the master
//! key, SPI) is built on top. All cryptography comes from RustCrypto crates (aes-gcm, sha3, hmac,
//! sha2); keys from the OS CSPRNG via getrandom, nonces from a per-process ChaCha20
//! generator seeded from it (`keys::fill_nonce`).
//!
//! Nothing in this folder logs or formats key bytes, plaintext, or the text a key was read from.
//! Secrets are held in zeroizing buffers.
//!
//! Typical flows for the SQL layer:
//! - create a key: [`keys::DataKey::generate`], [`keys::wrap_data_key`], store the wrapped bytes
//!   with [`keys::master_key_fingerprint`];
//! - encrypt: find the active key id of the name (or [`cache::KeyCache::get_active`]),
//!   [`keys::unwrap_data_key`] on a miss, then [`envelope::seal`];
//! - decrypt: [`envelope::parse_header`] for the key id, look the key up and check its status,
//!   then [`envelope::open`].

pub(crate) mod api;
pub mod cache;
pub mod digest;
pub mod envelope;
pub mod export;
pub mod keys;
pub mod master_source;
pub(crate) mod sql;
mod store;

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

pub use cache::KeyCache;
pub use digest::{blind_index, digest_sha3_512, hmac_sha3_256, keyed_hmac};
pub use envelope::{open, parse_header, seal, Header};
pub use keys::{
    check_key_file_mode, master_key_fingerprint, parse_master_key, unwrap_data_key, wrap_data_key,
    DataKey, KeyId, MasterKey,
};
