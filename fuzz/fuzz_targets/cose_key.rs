//! COSE_Key bytes (a stored passkey's public key): parse, then verify a signature with it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgauth::webauthn::cose::CoseKey;

fuzz_target!(|data: &[u8]| {
    let (key, signature) = pgauth_fuzz::split2(data);
    if let Ok(key) = CoseKey::from_cbor_bytes(key) {
        let _ = key.algorithm();
        assert!(key.verify(b"pgauth fuzz message", signature).is_err() || !signature.is_empty());
    }
});
