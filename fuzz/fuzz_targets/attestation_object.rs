//! attestationObject bytes: the CBOR map, its authenticator data, and the attestation statement
//! (none, packed self and x5c) checked against a fixed client data hash.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgauth::webauthn::attestation::{verify_attestation, AttestationObject};
use pgauth::webauthn::authdata::AuthenticatorData;

fuzz_target!(|data: &[u8]| {
    let Ok(object) = AttestationObject::parse(data) else {
        return;
    };
    if let Ok(auth) = AuthenticatorData::parse(&object.auth_data) {
        let _ = verify_attestation(&object, &auth, &[7u8; 32]);
    }
});
