//! The stored form of a statement's changed rows: a *shape* (the columns, as JSON) and *frames*
//! (each row as PostgreSQL's own tuple bytes). Plain Rust; `sql.rs` makes and reads the tuples.
//!
//! ```text
//! rows  = event*                      event = frame(old) || frame(new)
//! frame = u32(0xFFFFFFFF)             absent (no old row for INSERT, no new row for DELETE)
//!       | u32(len) || bytes[len]      a heap tuple from its t_infomask2 on (the 18 bytes
//!                                     before it are never stored: datum fields and ctid)
//! shape = {"columns": [[name, type, typmod, key, value], …]}
//!         type: the type's qualified name (format_type), key: part of the primary key,
//!         value: shown in old/new values (false for a key column the DBA excluded)
//! ```
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

/// One stored column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The qualified type name, as `format_type` writes it.
    pub type_name: String,
    pub typmod: i32,
    pub key: bool,
    pub value: bool,
}

/// The JSON text of a shape (stable: it is hashed with the record).
pub fn shape_json(columns: &[Column]) -> String {
    let cols: Vec<Value> = columns
        .iter()
        .map(|c| {
            Value::Array(vec![
                Value::from(c.name.as_str()),
                Value::from(c.type_name.as_str()),
                Value::from(c.typmod),
                Value::from(c.key),
                Value::from(c.value),
            ])
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
            let a = c.as_array().filter(|a| a.len() == 5).ok_or_else(bad)?;
            Ok(Column {
                name: a[0].as_str().ok_or_else(bad)?.to_string(),
                type_name: a[1].as_str().ok_or_else(bad)?.to_string(),
                typmod: a[2]
                    .as_i64()
                    .and_then(|m| i32::try_from(m).ok())
                    .ok_or_else(bad)?,
                key: a[3].as_bool().ok_or_else(bad)?,
                value: a[4].as_bool().ok_or_else(bad)?,
            })
        })
        .collect()
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

    #[test]
    fn shapes_round_trip() {
        let cols = vec![
            Column {
                name: "id".into(),
                type_name: "bigint".into(),
                typmod: -1,
                key: true,
                value: true,
            },
            Column {
                name: "we\"ird\n".into(),
                type_name: "public.mood".into(),
                typmod: 7,
                key: false,
                value: false,
            },
        ];
        let text = shape_json(&cols);
        assert_eq!(
            text,
            r#"{"columns":[["id","bigint",-1,true,true],["we\"ird\n","public.mood",7,false,false]]}"#
        );
        assert_eq!(parse_shape(&text).unwrap(), cols);
        assert!(parse_shape("{}").is_err());
        assert!(parse_shape(r#"{"columns":[["id","bigint",-1,true]]}"#).is_err());
    }
}
