//! One stored value checked as each allowed kind (the first byte picks the kind): numeric,
//! jsonb containers, inet, arrays of each, name, text, fixed widths.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgauth::audit::values;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, value)) = data.split_first() else {
        return;
    };
    let kinds = pgauth_fuzz::audit_kinds();
    let kind = &kinds[pick as usize % kinds.len()];
    if values::check(kind, value).is_ok() {
        if let values::Kind::Array {
            elem_oid,
            elem_len,
            elem_align,
            ..
        } = kind
        {
            let a = values::parse_array(
                values::payload(value).unwrap(),
                *elem_oid,
                *elem_len,
                *elem_align,
            )
            .unwrap();
            let n: usize = if a.dims.is_empty() {
                0
            } else {
                a.dims.iter().product()
            };
            assert_eq!(n, a.elements.len());
        }
    }
});
