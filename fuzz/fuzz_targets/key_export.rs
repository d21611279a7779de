//! A key export (`auth_import_keys`' document): the check that runs before anything is
//! inserted. What it accepts, it returns in canonical form, which it accepts again unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgauth::crypto::export;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(canonical) = export::check(&doc) {
        assert_eq!(export::check(&canonical).unwrap(), canonical);
    }
});
