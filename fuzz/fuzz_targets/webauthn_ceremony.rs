//! A whole passkey ceremony as the browser's JSON: `{"registration": …, "assertion": …}` (the
//! shape of tests/fixtures/webauthn). The challenges are taken from the client data itself, so
//! mutations get past the challenge check into attestation, authenticator data and COSE keys;
//! the assertion is verified against the credential the registration produced.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgauth::webauthn::{self as wa, StoredCredential};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let rp = pgauth_fuzz::relying_party();
    let credential = doc
        .get("registration")
        .and_then(|r| wa::parse_registration(r).ok())
        .and_then(|reg| {
            let challenge = wa::client_data_challenge(&reg.client_data_json).ok()?;
            wa::verify_registration(&reg, &challenge, &rp).ok()
        });
    let Some(assertion) = doc
        .get("assertion")
        .and_then(|a| wa::parse_assertion(a).ok())
    else {
        return;
    };
    let Ok(challenge) = wa::client_data_challenge(&assertion.client_data_json) else {
        return;
    };
    if let Some(credential) = credential {
        let stored = StoredCredential {
            public_key: &credential.public_key,
            sign_count: 0,
            backup_eligible: credential.backup_eligible,
        };
        let _ = wa::verify_assertion(&assertion, &challenge, &rp, &stored);
    }
});
