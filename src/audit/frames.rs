//! The stored form of a statement's changed rows: a *shape* (the columns, as JSON) and *frames*
//! (each row as PostgreSQL's own tuple bytes). Plain Rust; `capture.rs` makes the tuples and
//! `decode.rs` reads them.
//!
//! ```text
//! rows  = event*                      event = frame(old) || frame(new)
//! frame = u32(0xFFFFFFFF)             absent (no old row for INSERT, no new row for DELETE)
//!       | u32(len) || bytes[len]      a heap tuple from its t_infomask2 on (the 18 bytes
//!                                     before it are never stored: datum fields and ctid)
//! shape = {"columns": [[name, type, typmod, key, value, type_oid(, stored)], …]}
//!         type: the column's type, qualified name (format_type), key: part of the primary
//!         key, value: shown in old/new values (false for a key column the DBA excluded),
//!         type_oid: the OID of the type whose bytes are stored; stored, when present:
//!           true      the column is stored as its text form (type text), for types whose
//!                     stored bytes the reader cannot check or that depend on this cluster's
//!                     OIDs (enums), made by the type's output function at capture
//!           "text[]"  an array stored as text[], each element its text form (arrays of
//!                     enums and of types stored as text)
//! ```
//!
//! Values stored as bytes are of built-in types only (a
//! domain's values as its base type's, with the base type's OID, an array of domains as an
//! array of the base type): nothing a record needs to be read depends on this cluster's OIDs,
//! so it reads the same after a `pg_dump` restore into another cluster. Records written by
//! earlier builds may hold enum label OIDs and domain OIDs, and read only where those still exist (the same
//! cluster, or one made by pg_upgrade, which keeps them).
//!
//! Event ids are the record's `id` and the following ones, in order.

use serde_json::Value;

const ABSENT: u32 = u32::MAX;

/// Append one frame (a tuple's bytes, or an absent row).
pub fn push_frame(buf: &mut Vec<u8>, tuple: Option<&[u8]>) {
    match tuple {
        None => buf.extend_from_slice(&ABSENT.to_be_bytes()),
        Some(t) => {
            let len = u32::try_from(t.len()).unwrap_or(ABSENT - 1);
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(t);
        }
    }
}

/// One event's (old row, new row) tuple bytes.
pub type Event<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// The events of a `rows` value: (old, new) frame pairs. Stops with an error at the first
/// malformed frame.
pub fn events(buf: &[u8]) -> Result<Vec<Event<'_>>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let frame = |pos: &mut usize| -> Result<Option<&[u8]>, String> {
        let head = buf
            .get(*pos..*pos + 4)
            .ok_or_else(|| format!("audit rows end inside a frame header at byte {pos}"))?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        *pos += 4;
        if len == ABSENT {
            return Ok(None);
        }
        let body = buf
            .get(*pos..*pos + len as usize)
            .ok_or_else(|| format!("audit rows end inside a frame at byte {pos}"))?;
        *pos += len as usize;
        Ok(Some(body))
    };
    while pos < buf.len() {
        let old = frame(&mut pos)?;
        let new = frame(&mut pos)?;
        out.push((old, new));
    }
    Ok(out)
}

/// How a column's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// PostgreSQL's bytes of the type `type_oid` names.
    Bytes,
    /// The value's text form (type text).
    Text,
    /// An array as text[]: each element's text form, dimensions and NULLs kept.
    TextArray,
}

/// One stored column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The column's qualified type name, as `format_type` writes it.
    pub type_name: String,
    pub typmod: i32,
    pub key: bool,
    pub value: bool,
    pub type_oid: u32,
    pub stored: Stored,
}

/// The JSON text of a shape (stable: it is hashed with the record).
pub fn shape_json(columns: &[Column]) -> String {
    let cols: Vec<Value> = columns
        .iter()
        .map(|c| {
            let mut a = vec![
                Value::from(c.name.as_str()),
                Value::from(c.type_name.as_str()),
                Value::from(c.typmod),
                Value::from(c.key),
                Value::from(c.value),
                Value::from(c.type_oid),
            ];
            match c.stored {
                Stored::Bytes => {}
                Stored::Text => a.push(Value::from(true)),
                Stored::TextArray => a.push(Value::from("text[]")),
            }
            Value::Array(a)
        })
        .collect();
    serde_json::json!({ "columns": cols }).to_string()
}

pub fn parse_shape(text: &str) -> Result<Vec<Column>, String> {
    let bad = || format!("malformed audit record shape: {text}");
    let v: Value = serde_json::from_str(text).map_err(|_| bad())?;
    let cols = v.get("columns").and_then(Value::as_array).ok_or_else(bad)?;
    cols.iter()
        .map(|c| {
            let a = c
                .as_array()
                .filter(|a| a.len() == 6 || a.len() == 7)
                .ok_or_else(bad)?;
            Ok(Column {
                name: a[0].as_str().ok_or_else(bad)?.to_string(),
                type_name: a[1].as_str().ok_or_else(bad)?.to_string(),
                typmod: a[2]
                    .as_i64()
                    .and_then(|m| i32::try_from(m).ok())
                    .ok_or_else(bad)?,
                key: a[3].as_bool().ok_or_else(bad)?,
                value: a[4].as_bool().ok_or_else(bad)?,
                type_oid: a[5]
                    .as_u64()
                    .and_then(|o| u32::try_from(o).ok())
                    .ok_or_else(bad)?,
                stored: match a.get(6) {
                    None => Stored::Bytes,
                    Some(Value::Bool(true)) => Stored::Text,
                    Some(Value::String(s)) if s == "text[]" => Stored::TextArray,
                    Some(_) => return Err(bad()),
                },
            })
        })
        .collect()
}

/// A column as the tuple layout needs it: `attlen` (-1 varlena, -2 cstring, else fixed) and
/// `attalign` (`c`, `s`, `i`, `d`).
pub type Layout = (i16, u8);

/// The values of stored tuple bytes (from t_infomask2 on) for columns `layout`, each as it lies
/// in the tuple (None: NULL, or a column the row predates), after checking that the bytes are
/// well formed:
/// the header, the null bitmap, and every value's length stay inside the bytes, no value is an
/// out-of-line pointer, and a row with a variable-width value says so in its header
/// (HEAP_HASVARWIDTH; without it PostgreSQL would read values at cached fixed offsets). Run before PostgreSQL reads a stored row, so damaged or forged bytes
/// give an error rather than a read past the end. Little-endian varlena headers (x86-64,
/// AArch64).
pub fn tuple_values<'a>(
    bytes: &'a [u8],
    layout: &[Layout],
) -> Result<Vec<Option<&'a [u8]>>, String> {
    const SKIPPED: usize = 18; // t_choice and t_ctid, not stored
    let bad = |why: &str| Err(format!("malformed audit row: {why}"));
    if bytes.len() < 5 {
        return bad("too short");
    }
    let natts = (u16::from_le_bytes([bytes[0], bytes[1]]) & 0x07FF) as usize;
    let infomask = u16::from_le_bytes([bytes[2], bytes[3]]);
    let hoff = bytes[4] as usize;
    if natts > layout.len() {
        return bad("more columns than its shape");
    }
    if hoff < SKIPPED + 5 || hoff - SKIPPED > bytes.len() {
        return bad("header offset outside the row");
    }
    let has_nulls = infomask & 0x0001 != 0;
    if has_nulls && 5 + natts.div_ceil(8) > hoff - SKIPPED {
        return bad("null bitmap outside the header");
    }
    let data = &bytes[hoff - SKIPPED..];
    let varwidth_flag = infomask & 0x0002 != 0;
    if infomask & 0x0004 != 0 {
        return bad("out-of-line values");
    }
    let mut off = 0usize;
    let mut values = vec![None; layout.len()];
    for (i, &(attlen, attalign)) in layout.iter().enumerate().take(natts) {
        if has_nulls && bytes[5 + i / 8] & (1 << (i % 8)) == 0 {
            continue;
        }
        let start;
        let align = match attalign {
            b'd' => 8,
            b'i' => 4,
            b's' => 2,
            _ => 1,
        };
        let aligned = |off: usize| off.div_ceil(align) * align;
        if attlen < 0 && !varwidth_flag {
            return bad("variable-width value in a row marked fixed-width");
        }
        match attlen {
            -1 => {
                // A one-byte header is never aligned; a four-byte one (first byte 0) is.
                if data.get(off).copied().unwrap_or(0) == 0 {
                    off = aligned(off);
                }
                let Some(&b0) = data.get(off) else {
                    return bad("value outside the row");
                };
                let len = if b0 == 0x01 {
                    return bad("out-of-line value");
                } else if b0 & 0x01 == 1 {
                    ((b0 >> 1) & 0x7F) as usize
                } else {
                    let Some(h) = data.get(off..off + 4) else {
                        return bad("value outside the row");
                    };
                    ((u32::from_le_bytes([h[0], h[1], h[2], h[3]]) >> 2) & 0x3FFF_FFFF) as usize
                };
                if len < if b0 & 0x01 == 1 { 1 } else { 4 } || off + len > data.len() {
                    return bad("value outside the row");
                }
                start = off;
                off += len;
            }
            -2 => {
                let Some(end) = data.get(off..).and_then(|d| d.iter().position(|&b| b == 0)) else {
                    return bad("unterminated string");
                };
                start = off;
                off += end + 1;
            }
            n if n > 0 => {
                off = aligned(off);
                if off + n as usize > data.len() {
                    return bad("value outside the row");
                }
                start = off;
                off += n as usize;
            }
            _ => return bad("unknown column layout"),
        }
        values[i] = Some(&data[start..off]);
    }
    Ok(values)
}

/// Check stored tuple bytes without keeping their values (`tuple_values`).
pub fn check_tuple(bytes: &[u8], layout: &[Layout]) -> Result<(), String> {
    tuple_values(bytes, layout).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        push_frame(&mut buf, None);
        push_frame(&mut buf, Some(b"abc"));
        push_frame(&mut buf, Some(b""));
        push_frame(&mut buf, None);
        assert_eq!(buf[..4], [0xff; 4]);
        let ev = events(&buf).unwrap();
        assert_eq!(ev, vec![(None, Some(&b"abc"[..])), (Some(&b""[..]), None)]);
        assert!(events(&[]).unwrap().is_empty());
    }

    #[test]
    fn truncated_frames_are_errors() {
        let mut buf = Vec::new();
        push_frame(&mut buf, Some(b"abcdef"));
        push_frame(&mut buf, None);
        for cut in 1..buf.len() {
            assert!(events(&buf[..cut]).is_err(), "cut at {cut}");
        }
        // One frame without its pair.
        let mut one = Vec::new();
        push_frame(&mut one, None);
        assert!(events(&one).is_err());
    }

    /// Stored bytes of a row (from t_infomask2 on) with `natts` columns, no nulls, t_hoff 24.
    fn row(natts: u16, data: &[u8]) -> Vec<u8> {
        let mut b = natts.to_le_bytes().to_vec();
        b.extend_from_slice(&0x0002u16.to_le_bytes()); // HEAP_HASVARWIDTH
        b.push(24);
        b.push(0); // padding to t_hoff
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn well_formed_rows_pass_the_check() {
        let int_text: [Layout; 2] = [(4, b'i'), (-1, b'i')];
        // int4 7, then text "hi" with a one-byte header (length 3).
        let ok = row(2, &[7, 0, 0, 0, 0x07, b'h', b'i']);
        assert_eq!(check_tuple(&ok, &int_text), Ok(()));
        // A four-byte varlena header, aligned to 4: length 6 (header + "hi").
        let four = row(2, &[7, 0, 0, 0, 6 << 2, 0, 0, 0, b'h', b'i']);
        assert_eq!(check_tuple(&four, &int_text), Ok(()));
        // A text value in a row whose header says it has none.
        let mut flagless = ok.clone();
        flagless[2] = 0;
        assert!(check_tuple(&flagless, &int_text).is_err());
        // Nulls: bitmap says only column 1 is present.
        let mut nulls = vec![2, 0, 0x01, 0, 24, 0b01];
        nulls.extend_from_slice(&[7, 0, 0, 0]);
        assert_eq!(check_tuple(&nulls, &int_text), Ok(()));
    }

    #[test]
    fn damaged_rows_fail_the_check() {
        let int_text: [Layout; 2] = [(4, b'i'), (-1, b'i')];
        let ok = row(2, &[7, 0, 0, 0, 0x07, b'h', b'i']);
        for cut in 0..ok.len() {
            assert!(check_tuple(&ok[..cut], &int_text).is_err(), "cut at {cut}");
        }
        // A text claiming 127 bytes.
        assert!(check_tuple(&row(2, &[7, 0, 0, 0, 0xFF, b'h']), &int_text).is_err());
        // A four-byte header claiming 1 GB.
        assert!(check_tuple(&row(2, &[7, 0, 0, 0, 0, 0, 0, 0x40]), &int_text).is_err());
        // An out-of-line (TOAST) pointer.
        assert!(check_tuple(&row(2, &[7, 0, 0, 0, 0x01, 18]), &int_text).is_err());
        // More columns than the shape; a header offset past the end.
        assert!(check_tuple(&row(3, &[7, 0, 0, 0, 0x03, b'h', 0]), &int_text).is_err());
        let mut far = ok.clone();
        far[4] = 200;
        assert!(check_tuple(&far, &int_text).is_err());
    }

    #[test]
    fn shapes_round_trip() {
        let cols = vec![
            Column {
                name: "id".into(),
                type_name: "bigint".into(),
                typmod: -1,
                key: true,
                value: true,
                type_oid: 20,
                stored: Stored::Bytes,
            },
            Column {
                name: "we\"ird\n".into(),
                type_name: "public.mood".into(),
                typmod: 7,
                key: false,
                value: false,
                type_oid: 16500,
                stored: Stored::Text,
            },
            Column {
                name: "moods".into(),
                type_name: "public.mood[]".into(),
                typmod: -1,
                key: false,
                value: true,
                type_oid: 16499,
                stored: Stored::TextArray,
            },
        ];
        let text = shape_json(&cols);
        assert_eq!(
            text,
            r#"{"columns":[["id","bigint",-1,true,true,20],["we\"ird\n","public.mood",7,false,false,16500,true],["moods","public.mood[]",-1,false,true,16499,"text[]"]]}"#
        );
        assert_eq!(parse_shape(&text).unwrap(), cols);
        assert!(parse_shape("{}").is_err());
        assert!(parse_shape(r#"{"columns":[["id","bigint",-1,true,true]]}"#).is_err());
        // Only the two markings are known.
        assert!(parse_shape(r#"{"columns":[["id","bigint",-1,true,true,20,false]]}"#).is_err());
        assert!(parse_shape(r#"{"columns":[["id","bigint",-1,true,true,20,"int[]"]]}"#).is_err());
    }
}
