//! A record's shape (its columns, as JSON text): what parses writes back to the same columns.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgauth::audit::frames::{parse_shape, shape_json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(columns) = parse_shape(text) {
        assert_eq!(parse_shape(&shape_json(&columns)).unwrap(), columns);
    }
});
