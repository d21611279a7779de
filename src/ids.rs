//! Uuids as text: the 36-character form PostgreSQL prints, parsed and formatted without pgrx
//! (the cores keep ids as 16 bytes).

/// "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (any case) → 16 bytes.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 || text.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// 16 bytes → "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
pub fn format_uuid(id: &[u8; 16]) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_in_postgresql_form() {
        let text = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let id = super::parse_uuid(text).unwrap();
        assert_eq!(super::format_uuid(&id), text);
        assert_eq!(super::parse_uuid(&text.to_uppercase()), Some(id));
        assert_eq!(super::parse_uuid("0f8fad5bd9cb469fa16570867728950e"), None);
        assert_eq!(
            super::parse_uuid("0f8fad5b-d9cb-469f-a165-70867728950z"),
            None
        );
    }
}
