//! The ciphertext envelope (`auth_decrypt`'s input): header parse and authenticated open.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgauth::crypto::envelope;

fuzz_target!(|data: &[u8]| {
    let (value, aad) = pgauth_fuzz::split2(data);
    if let Ok(header) = envelope::parse_header(value) {
        assert_eq!(header.format, value[0]);
        let key = pgauth_fuzz::data_key();
        let aad = (!aad.is_empty()).then_some(aad);
        if let Ok(plain) = envelope::open(&key, value, aad) {
            // Only a value sealed under this key opens: the seeds, and what keeps their bytes.
            assert!(plain.len() < value.len());
        }
    }
});
