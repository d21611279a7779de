//! The master key file's text (64 hex digits, optional whitespace).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pgauth::crypto::keys::parse_master_key(data);
});
