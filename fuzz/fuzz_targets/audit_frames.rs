//! A stored audit record's `rows` (frames of tuple bytes) as the reader takes it apart before
//! PostgreSQL reads anything: frames, each tuple's layout, each value's check.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgauth::audit::{frames, values};

fuzz_target!(|data: &[u8]| {
    let columns = pgauth_fuzz::audit_columns();
    let layout: Vec<_> = columns.iter().map(|(l, _)| *l).collect();
    let Ok(events) = frames::events(data) else {
        return;
    };
    for tuple in events.iter().flat_map(|(old, new)| [old, new]).flatten() {
        let Ok(vals) = frames::tuple_values(tuple, &layout) else {
            continue;
        };
        assert_eq!(vals.len(), layout.len());
        for (v, (_, kind)) in vals.iter().zip(&columns) {
            if let Some(v) = v {
                // Every value lies inside its tuple.
                let inside = tuple.as_ptr_range();
                assert!(inside.contains(&v.as_ptr()) || v.is_empty());
                let _ = values::check(kind, v);
            }
        }
    }
});
