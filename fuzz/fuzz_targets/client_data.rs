//! clientDataJSON bytes: type, challenge, origin and cross-origin checks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgauth::webauthn as wa;

fuzz_target!(|data: &[u8]| {
    let rp = pgauth_fuzz::relying_party();
    let challenge = wa::client_data_challenge(data).unwrap_or_default();
    for kind in ["webauthn.create", "webauthn.get"] {
        let _ = wa::check_client_data(data, kind, &challenge, &rp);
    }
});
