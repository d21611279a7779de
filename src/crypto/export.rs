//! The document `auth_export_keys()` produces (`"format": "pgauth-keys/1"`), checked before
//! `auth_import_keys` inserts anything: every key and grant must have each field, of its type
//! and within the table's constraints, so that a damaged or hostile document is refused as a
//! whole with 22023 instead of failing in the INSERT (a NOT NULL, CHECK or cast error) or
//! importing half of it. [`check`] returns the same document in canonical form (base64 without
//! line breaks, lower-case hex, no duplicates) for the SQL layer to insert.

use crate::error::AuthError;
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::HashSet;

pub const FORMAT: &str = "pgauth-keys/1";
/// Bytes of a wrapped data key (nonce, 32-byte key, tag) and of a master-key fingerprint.
const WRAPPED_LEN: usize = 60;
const FINGERPRINT_LEN: usize = 8;
/// PostgreSQL's `name`: at most 63 bytes.
const NAME_MAX: usize = 63;

fn bad(what: String) -> AuthError {
    AuthError::BadKeyExport(format!("not a valid pgauth key export: {what}"))
}

/// The canonical document, or why it is not an export (the message names a field and an index,
/// never a value: a wrapped key is not secret, but nothing here needs to show it).
pub fn check(doc: &Value) -> Result<Value, AuthError> {
    let doc = doc
        .as_object()
        .ok_or_else(|| bad("the document is not a JSON object".into()))?;
    if doc.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(bad(format!("expected \"format\": \"{FORMAT}\"")));
    }
    let mut keys = Vec::new();
    let (mut ids, mut versions, mut active) = (HashSet::new(), HashSet::new(), HashSet::new());
    for (i, key) in array(doc, "keys")?.iter().enumerate() {
        let key = check_key(key).map_err(|e| bad(format!("keys[{i}]: {e}")))?;
        let name = key["name"].as_str().unwrap_or_default().to_string();
        if !ids.insert(key["id"].as_str().unwrap_or_default().to_string()) {
            return Err(bad(format!("keys[{i}]: the id appears twice")));
        }
        if !versions.insert((name.clone(), key["version"].as_i64())) {
            return Err(bad(format!("keys[{i}]: the name and version appear twice")));
        }
        if key["status"] == "active" && !active.insert(name) {
            return Err(bad(format!(
                "keys[{i}]: a second active version of the key"
            )));
        }
        keys.push(key);
    }
    let mut grants = Vec::new();
    let mut seen = HashSet::new();
    for (i, grant) in array(doc, "grants")?.iter().enumerate() {
        let g = grant
            .as_object()
            .ok_or_else(|| bad(format!("grants[{i}] is not an object")))?;
        let key_name =
            string(g, "key_name", 1, 128).map_err(|e| bad(format!("grants[{i}]: {e}")))?;
        let grantee =
            string(g, "grantee", 1, NAME_MAX).map_err(|e| bad(format!("grants[{i}]: {e}")))?;
        if seen.insert((key_name.to_string(), grantee.to_string())) {
            grants.push(json!({"key_name": key_name, "grantee": grantee}));
        }
    }
    Ok(json!({"format": FORMAT, "keys": keys, "grants": grants}))
}

fn array<'a>(doc: &'a Map<String, Value>, field: &str) -> Result<&'a [Value], AuthError> {
    match doc.get(field) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(bad(format!("\"{field}\" is not an array"))),
    }
}

fn string<'a>(
    o: &'a Map<String, Value>,
    field: &str,
    min: usize,
    max: usize,
) -> Result<&'a str, String> {
    let s = o
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("\"{field}\" is missing or not a string"))?;
    if s.len() < min || s.len() > max {
        return Err(format!("\"{field}\" must be {min} to {max} bytes long"));
    }
    Ok(s)
}

fn check_key(key: &Value) -> Result<Value, String> {
    let k = key.as_object().ok_or("not an object")?;
    let id = string(k, "id", 36, 36)?;
    if !is_uuid(id) {
        return Err("\"id\" is not a uuid".into());
    }
    let name = string(k, "name", 1, 128)?;
    if !super::keys::valid_key_name(name) {
        return Err("\"name\" has characters a key name cannot have".into());
    }
    let version = k
        .get("version")
        .and_then(Value::as_i64)
        .filter(|v| (1..=i64::from(i32::MAX)).contains(v))
        .ok_or("\"version\" is not an integer from 1 to 2147483647")?;
    let status = string(k, "status", 1, 20)?;
    if !["active", "decrypt_only", "revoked"].contains(&status) {
        return Err("\"status\" is not active, decrypt_only or revoked".into());
    }
    let wrapped = string(k, "wrapped_key", 1, 200)?;
    let compact: String = wrapped
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    match base64::engine::general_purpose::STANDARD.decode(&compact) {
        Ok(bytes) if bytes.len() == WRAPPED_LEN => {}
        _ => {
            return Err(format!(
                "\"wrapped_key\" is not {WRAPPED_LEN} bytes in base64"
            ))
        }
    }
    let fingerprint = string(
        k,
        "master_key_fingerprint",
        2 * FINGERPRINT_LEN,
        2 * FINGERPRINT_LEN,
    )?;
    if !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "\"master_key_fingerprint\" is not {FINGERPRINT_LEN} bytes in hex"
        ));
    }
    let created_by = string(k, "created_by", 1, NAME_MAX)?;
    let created_at = string(k, "created_at", 1, 64)?;
    if !is_timestamp(created_at) {
        return Err("\"created_at\" is not a timestamp".into());
    }
    let changed_at = match k.get("status_changed_at") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) if is_timestamp(s) => Value::String(s.clone()),
        Some(_) => return Err("\"status_changed_at\" is not a timestamp or null".into()),
    };
    Ok(json!({
        "id": id.to_ascii_lowercase(), "name": name, "version": version, "status": status,
        "wrapped_key": compact, "master_key_fingerprint": fingerprint.to_ascii_lowercase(),
        "created_by": created_by, "created_at": created_at, "status_changed_at": changed_at,
    }))
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.ffffff][Z|±HH[:MM]]`, as `to_jsonb(timestamptz)` writes it, with a
/// real date (years 1 to 9999) and time: what PostgreSQL's timestamptz input accepts for sure.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    let (Some(year), Some(month), Some(day)) = (num(0, 4), num(5, 2), num(8, 2)) else {
        return false;
    };
    let (Some(hour), Some(minute), Some(second)) = (num(11, 2), num(14, 2), num(17, 2)) else {
        return false;
    };
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return false;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if year == 0 || !(1..=12).contains(&month) || day == 0 || day > days[month as usize - 1] {
        return false;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 6 {
            return false;
        }
        rest = &frac[digits..];
    }
    match rest {
        [] | [b'Z'] => true,
        [b'+' | b'-', h1, h2] => {
            h1.is_ascii_digit() && h2.is_ascii_digit() && (h1 - b'0') * 10 + (h2 - b'0') <= 15
        }
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            h1.is_ascii_digit()
                && h2.is_ascii_digit()
                && (h1 - b'0') * 10 + (h2 - b'0') <= 15
                && matches!(m1, b'0'..=b'5')
                && m2.is_ascii_digit()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export() -> Value {
        json!({"format": FORMAT, "keys": [{
            "id": "0b7c6f3e-4c1a-4f57-9a4e-2f0e3d1c5b6a", "name": "default", "version": 1,
            "status": "active",
            "wrapped_key": format!("{}\n{}", "A".repeat(76), "A".repeat(4)),
            "master_key_fingerprint": "0123456789ABCDEF", "created_by": "postgres",
            "created_at": "2026-12-05T05:33:16.123456+00:00", "status_changed_at": null}],
            "grants": [{"key_name": "default", "grantee": "public"},
                       {"key_name": "default", "grantee": "public"}]})
    }

    #[test]
    fn an_export_is_made_canonical() {
        let doc = check(&export()).unwrap();
        assert_eq!(doc["keys"][0]["wrapped_key"], "A".repeat(80));
        assert_eq!(doc["keys"][0]["master_key_fingerprint"], "0123456789abcdef");
        assert_eq!(doc["grants"].as_array().unwrap().len(), 1);
        assert!(check(&json!({"format": FORMAT})).is_ok());
    }

    /// What the SQL fuzzer found (tests/fuzz/sql_fuzz.py): fields that are missing, null, of
    /// another type or out of range failed in the INSERT with 23502, 22P02, 23514 or 22008.
    #[test]
    fn every_damaged_field_is_refused_with_22023() {
        let fields = [
            "id",
            "name",
            "version",
            "status",
            "wrapped_key",
            "master_key_fingerprint",
            "created_by",
            "created_at",
        ];
        let bad_values = [
            Value::Null,
            json!(1.5),
            json!("x"),
            json!([]),
            json!(-1),
            json!(""),
            json!(2147483648u64),
        ];
        for field in fields {
            let mut doc = export();
            doc["keys"][0].as_object_mut().unwrap().remove(field);
            assert!(
                matches!(check(&doc), Err(AuthError::BadKeyExport(_))),
                "{field} missing"
            );
            for value in &bad_values {
                if value == "x" && (field == "name" || field == "created_by") {
                    continue; // a valid name
                }
                let mut doc = export();
                doc["keys"][0][field] = value.clone();
                assert!(
                    matches!(check(&doc), Err(AuthError::BadKeyExport(_))),
                    "{field} = {value}"
                );
            }
        }
        for (field, value) in [
            ("status_changed_at", json!("2026-02-30T00:00:00Z")),
            ("status_changed_at", json!(0)),
            ("created_at", json!("infinity")),
            ("created_at", json!("0000-01-01T00:00:00")),
            ("created_by", json!("x".repeat(64))),
            ("name", json!("a b")),
            ("status", json!("ACTIVE")),
        ] {
            let mut doc = export();
            doc["keys"][0][field] = value.clone();
            assert!(check(&doc).is_err(), "{field} = {value}");
        }
        for doc in [
            json!([]),
            json!({"format": 1}),
            json!({"format": FORMAT, "keys": {}}),
            json!({"format": FORMAT, "grants": [{"key_name": "k"}]}),
            json!({"format": FORMAT, "grants": [{"key_name": null, "grantee": "r"}]}),
            json!({"format": FORMAT, "keys": [1]}),
        ] {
            assert!(check(&doc).is_err(), "{doc}");
        }
        let mut twice = export();
        let again = twice["keys"][0].clone();
        twice["keys"].as_array_mut().unwrap().push(again);
        assert!(check(&twice).is_err());
    }

    #[test]
    fn timestamps() {
        for ok in [
            "2026-12-05T05:33:16.123456+00:00",
            "2024-02-29 00:00:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59-15:00",
            "2026-01-01T00:00:00+05",
        ] {
            assert!(is_timestamp(ok), "{ok}");
        }
        for bad in [
            "",
            "2026-12-05",
            "2023-02-29T00:00:00",
            "2026-13-01T00:00:00",
            "2026-12-05T24:00:00",
            "2026-12-05T05:33:16.1234567",
            "2026-12-05T05:33:16+16:00",
            "2026-12-05T05:33:16 UTC",
            "+2026-12-05T05:33:1",
            "２026-12-05T05:33:16",
        ] {
            assert!(!is_timestamp(bad), "{bad}");
        }
    }
}
