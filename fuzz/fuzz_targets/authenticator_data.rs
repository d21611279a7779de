//! authenticatorData bytes: rp id hash, flags, counter, attested credential data (with its COSE
//! key) and extensions.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgauth::webauthn::authdata::AuthenticatorData;

fuzz_target!(|data: &[u8]| {
    if let Ok(auth) = AuthenticatorData::parse(data) {
        let _ = (auth.user_present(), auth.user_verified(), auth.backed_up());
        if let Some(attested) = &auth.attested {
            assert!(attested.public_key_cbor.len() < data.len());
        }
    }
});
