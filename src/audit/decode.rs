//! Decoding: a stored record's events as the rows of `pgauth.audit_log` — (id, row_key,
//! old_values, new_values) as jsonb.
//!
//! A record's `rows` are PostgreSQL tuple bytes of the shape it names (`frames`). Every stored
//! value is checked (`values`) before PostgreSQL reads it, and shown by pgauth or by a built-in
//! output function (never a cast or operator looked up by type, which the owner of a type
//! could define). Which types are read from stored bytes at all is the allow-list
//! `value_kind`; capture stores every other type as its text form.
//!
//! The `unsafe` here hands checked bytes to built-in output functions and reads catalog
//! entries (types, enum labels); every byte slice has been checked by `values::check` first.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;

use super::frames::{Column, Layout, Stored};
use super::raw::cstr_owned;
use super::values::{self, Kind};

/// The allow-list: how the stored values of type `oid` are checked and shown, or why they are
/// not read from stored bytes (such columns are stored as their text form at capture).
///
/// # Safety
/// In a transaction (catalog lookups by type OID).
pub(super) unsafe fn value_kind(oid: pg_sys::Oid) -> Result<Kind, String> {
    let o = oid.to_u32();
    let not_readable = || Err(format!("type {o} is not read from stored bytes"));
    if o >= pg_sys::FirstNormalObjectId {
        return match pg_sys::get_typtype(oid) as u8 {
            b'e' => Ok(Kind::Enum { oid: o }),
            b'd' => value_kind(pg_sys::getBaseType(oid)),
            b'b' => match pg_sys::get_element_type(oid) {
                e if e == pg_sys::InvalidOid => not_readable(),
                e => array_kind(e),
            },
            _ => not_readable(),
        };
    }
    let fixed = || {
        let (mut len, mut byval) = (0i16, false);
        pg_sys::get_typlenbyval(oid, &mut len, &mut byval);
        Ok(Kind::Fixed {
            oid: o,
            len: len as usize,
            byval,
        })
    };
    match oid {
        pg_sys::BOOLOID => Ok(Kind::Bool),
        pg_sys::INT2OID => Ok(Kind::Int2),
        pg_sys::INT4OID => Ok(Kind::Int4),
        pg_sys::INT8OID => Ok(Kind::Int8),
        pg_sys::FLOAT4OID
        | pg_sys::FLOAT8OID
        | pg_sys::OIDOID
        | pg_sys::MONEYOID
        | pg_sys::DATEOID
        | pg_sys::TIMEOID
        | pg_sys::TIMETZOID
        | pg_sys::TIMESTAMPOID
        | pg_sys::TIMESTAMPTZOID
        | pg_sys::INTERVALOID
        | pg_sys::UUIDOID => fixed(),
        pg_sys::NAMEOID => Ok(Kind::Name),
        pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID | pg_sys::JSONOID => {
            Ok(Kind::Text { oid: o })
        }
        pg_sys::BYTEAOID => Ok(Kind::Bytea),
        pg_sys::NUMERICOID => Ok(Kind::Numeric),
        pg_sys::JSONBOID => Ok(Kind::Jsonb),
        pg_sys::INETOID | pg_sys::CIDROID => Ok(Kind::Inet { oid: o }),
        _ => match pg_sys::get_element_type(oid) {
            e if e == pg_sys::InvalidOid => not_readable(),
            e => array_kind(e),
        },
    }
}

/// # Safety
/// As `value_kind`.
unsafe fn array_kind(elem: pg_sys::Oid) -> Result<Kind, String> {
    let kind = value_kind(elem)?;
    if matches!(kind, Kind::Array { .. }) {
        return Err("arrays of arrays are not read from stored bytes".into());
    }
    let (mut len, mut byval, mut align) = (0i16, false, 0 as std::ffi::c_char);
    pg_sys::get_typlenbyvalalign(elem, &mut len, &mut byval, &mut align);
    Ok(Kind::Array {
        elem_oid: elem.to_u32(),
        elem_len: len,
        elem_align: align as u8,
        elem: Box::new(kind),
    })
}

/// A stored column as the reader needs it.
struct ReadColumn {
    name: String,
    key: bool,
    value: bool,
    kind: Kind,
}

/// The columns of a shape, with the layout of its stored tuples. Columns stored as bytes are of
/// built-in types in records of this build; in older records a non-built-in type (an enum, a
/// domain) must still exist with the OID and name the record was written with (a type dropped,
/// renamed, or restored under another OID is not guessed at), and be one `value_kind` reads.
///
/// # Safety
/// As `value_kind`.
unsafe fn read_columns(cols: &[Column]) -> Result<(Vec<ReadColumn>, Vec<Layout>), String> {
    if cols.len() > pg_sys::MaxTupleAttributeNumber as usize {
        return Err("an audit record shape with too many columns".into());
    }
    let mut read = Vec::with_capacity(cols.len());
    let mut layout = Vec::with_capacity(cols.len());
    for c in cols {
        let text = || Kind::Text {
            oid: pg_sys::TEXTOID.to_u32(),
        };
        let (kind, l) = if c.stored == Stored::Text {
            (text(), (-1, b'i'))
        } else if c.stored == Stored::TextArray {
            let kind = Kind::Array {
                elem_oid: pg_sys::TEXTOID.to_u32(),
                elem_len: -1,
                elem_align: b'i',
                elem: Box::new(text()),
            };
            (kind, (-1, b'i'))
        } else {
            let oid = pg_sys::Oid::from(c.type_oid);
            let same = oid.to_u32() < pg_sys::FirstNormalObjectId
                || (pg_sys::SearchSysCacheExists(
                    pg_sys::SysCacheIdentifier::TYPEOID as i32,
                    pg_sys::Datum::from(oid),
                    pg_sys::Datum::from(0),
                    pg_sys::Datum::from(0),
                    pg_sys::Datum::from(0),
                ) && cstr_owned(pg_sys::format_type_be_qualified(oid)) == c.type_name);
            if !same {
                return Err(format!(
                    "column \"{}\" of this audit record has type {}, which no longer exists under that name (dropped, renamed, or restored into another cluster)",
                    c.name, c.type_name
                ));
            }
            let kind = value_kind(oid).map_err(|_| {
                format!(
                    "column \"{}\" of this audit record has type {}, which pgauth does not read from stored bytes",
                    c.name, c.type_name
                )
            })?;
            let (mut len, mut byval, mut align) = (0i16, false, 0 as std::ffi::c_char);
            pg_sys::get_typlenbyvalalign(oid, &mut len, &mut byval, &mut align);
            (kind, (len, align as u8))
        };
        layout.push(l);
        read.push(ReadColumn {
            name: c.name.clone(),
            key: c.key,
            value: c.value,
            kind,
        });
    }
    Ok((read, layout))
}

/// A copy of a varlena payload with a 4-byte header, in the current memory context.
///
/// # Safety
/// In a backend (palloc).
unsafe fn varlena_datum(payload: &[u8]) -> pg_sys::Datum {
    let total = payload.len() + 4;
    let p = pg_sys::palloc(total).cast::<u8>();
    pgrx::varlena::set_varsize_4b(p.cast(), total as i32);
    std::ptr::copy_nonoverlapping(payload.as_ptr(), p.add(4), payload.len());
    pg_sys::Datum::from(p)
}

/// The text of a checked value from its type's output function, which must be built in.
///
/// # Safety
/// `datum` is a value of type `oid` whose bytes were checked (`values::check`).
unsafe fn builtin_output(oid: u32, datum: pg_sys::Datum) -> Result<Vec<u8>, String> {
    let (mut func, mut varlena) = (pg_sys::InvalidOid, false);
    pg_sys::getTypeOutputInfo(pg_sys::Oid::from(oid), &mut func, &mut varlena);
    if func.to_u32() >= pg_sys::FirstNormalObjectId {
        return Err(format!(
            "type {oid} has an output function that is not built in"
        ));
    }
    Ok(CStr::from_ptr(pg_sys::OidOutputFunctionCall(func, datum))
        .to_bytes()
        .to_vec())
}

fn is_json_number(text: &[u8]) -> bool {
    !matches!(text, b"NaN" | b"Infinity" | b"-Infinity")
}

/// Append a checked value of `kind` as JSON, as row_to_json shows it for built-in types, but
/// without looking up casts to json: user types (enums) are shown by pgauth.
///
/// # Safety
/// `v` passed `values::check(kind, v)`.
unsafe fn render(kind: &Kind, v: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    match kind {
        Kind::Bool => out.extend_from_slice(if v[0] != 0 { b"true" } else { b"false" }),
        Kind::Int2 => {
            out.extend_from_slice(i16::from_le_bytes([v[0], v[1]]).to_string().as_bytes())
        }
        Kind::Int4 => out.extend_from_slice(
            i32::from_le_bytes([v[0], v[1], v[2], v[3]])
                .to_string()
                .as_bytes(),
        ),
        Kind::Int8 => out.extend_from_slice(
            i64::from_le_bytes(v.try_into().map_err(|_| "int8 length")?)
                .to_string()
                .as_bytes(),
        ),
        Kind::Fixed { oid, len, byval } => {
            let datum = if *byval {
                let mut b = [0u8; 8];
                b[..*len].copy_from_slice(v);
                pg_sys::Datum::from(u64::from_le_bytes(b))
            } else {
                let p = pg_sys::palloc(*len).cast::<u8>();
                std::ptr::copy_nonoverlapping(v.as_ptr(), p, *len);
                pg_sys::Datum::from(p)
            };
            match pg_sys::Oid::from(*oid) {
                pg_sys::DATEOID | pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID => {
                    let text = pg_sys::JsonEncodeDateTime(
                        std::ptr::null_mut(),
                        datum,
                        pg_sys::Oid::from(*oid),
                        std::ptr::null(),
                    );
                    values::json_string(out, CStr::from_ptr(text).to_bytes());
                }
                pg_sys::FLOAT4OID | pg_sys::FLOAT8OID => {
                    let text = builtin_output(*oid, datum)?;
                    if is_json_number(&text) {
                        out.extend_from_slice(&text);
                    } else {
                        values::json_string(out, &text);
                    }
                }
                _ => values::json_string(out, &builtin_output(*oid, datum)?),
            }
        }
        Kind::Name => {
            let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            values::json_string(out, &v[..end]);
        }
        Kind::Text { oid } => {
            let p = values::payload(v)?;
            let len = i32::try_from(p.len()).map_err(|_| "text too long")?;
            if !pg_sys::pg_verifymbstr(p.as_ptr().cast(), len, true) {
                return Err("malformed audit value: text not in the server encoding".into());
            }
            if pg_sys::Oid::from(*oid) == pg_sys::JSONOID {
                // Checked as JSON when the whole document becomes jsonb.
                out.extend_from_slice(p);
            } else {
                values::json_string(out, p);
            }
        }
        Kind::Bytea => {
            let text = builtin_output(
                pg_sys::BYTEAOID.to_u32(),
                varlena_datum(values::payload(v)?),
            )?;
            values::json_string(out, &text);
        }
        Kind::Numeric => {
            let text = builtin_output(
                pg_sys::NUMERICOID.to_u32(),
                varlena_datum(values::payload(v)?),
            )?;
            if is_json_number(&text) {
                out.extend_from_slice(&text);
            } else {
                values::json_string(out, &text);
            }
        }
        Kind::Jsonb => out.extend_from_slice(&builtin_output(
            pg_sys::JSONBOID.to_u32(),
            varlena_datum(values::payload(v)?),
        )?),
        Kind::Inet { oid } => {
            let text = builtin_output(*oid, varlena_datum(values::payload(v)?))?;
            values::json_string(out, &text);
        }
        Kind::Enum { oid } => {
            let label = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
            let tuple = pg_sys::SearchSysCache1(
                pg_sys::SysCacheIdentifier::ENUMOID as i32,
                pg_sys::Datum::from(label),
            );
            if tuple.is_null() {
                return Err(format!("malformed audit value: no enum label {label}"));
            }
            let form = pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_enum>();
            let found = if (*form).enumtypid.to_u32() == *oid {
                values::json_string(
                    out,
                    CStr::from_ptr((*form).enumlabel.data.as_ptr()).to_bytes(),
                );
                Ok(())
            } else {
                Err(format!(
                    "malformed audit value: enum label {label} of another type"
                ))
            };
            pg_sys::ReleaseSysCache(tuple);
            found?;
        }
        Kind::Array {
            elem_oid,
            elem_len,
            elem_align,
            elem,
        } => {
            let a = values::parse_array(values::payload(v)?, *elem_oid, *elem_len, *elem_align)?;
            if a.elements.is_empty() {
                out.extend_from_slice(b"[]");
                return Ok(());
            }
            let mut next = a.elements.iter();
            render_dims(&a.dims, elem, &mut next, out)?;
        }
    }
    Ok(())
}

/// Nested JSON arrays, one per dimension (as array_to_json).
///
/// # Safety
/// As `render`, for every element.
unsafe fn render_dims<'a>(
    dims: &[usize],
    elem: &Kind,
    next: &mut impl Iterator<Item = &'a Option<&'a [u8]>>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.push(b'[');
    for i in 0..dims[0] {
        if i > 0 {
            out.push(b',');
        }
        if dims.len() > 1 {
            render_dims(&dims[1..], elem, next, out)?;
        } else {
            match next.next() {
                Some(Some(e)) => render(elem, e, out)?,
                _ => out.extend_from_slice(b"null"),
            }
        }
    }
    out.push(b']');
    Ok(())
}

/// One row of pgauth.audit_log's events: id, row_key, old_values, new_values (jsonb datums).
pub(super) type EventRow = (i64, [Option<pg_sys::Datum>; 3]);

/// A jsonb datum parsed from JSON text (jsonb_in checks it).
///
/// # Safety
/// In a backend (palloc; jsonb_in raises an ERROR on malformed text).
pub(super) unsafe fn jsonb_datum(text: Vec<u8>) -> Result<pg_sys::Datum, String> {
    let c = CString::new(text).map_err(|_| "malformed audit value: a NUL byte in JSON")?;
    pgrx::fcinfo::direct_function_call_as_datum(
        pg_sys::jsonb_in,
        &[Some(pg_sys::Datum::from(c.as_ptr()))],
    )
    .ok_or_else(|| "jsonb_in returned NULL".to_string())
}

/// The JSON object of the chosen columns, from their rendered values.
fn json_object<'a>(cols: impl Iterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut out = vec![b'{'];
    for (n, (name, value)) in cols.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        values::json_string(&mut out, name.as_bytes());
        out.push(b':');
        out.extend_from_slice(value);
    }
    out.push(b'}');
    out
}

/// The events of a record's stored rows: (id, row_key, old_values, new_values); for UPDATE
/// only the columns whose shown value changed.
///
/// # Safety
/// In a transaction; `rows` are any bytes (each value is checked before it is read).
pub(super) unsafe fn decode_rows(
    shape: &str,
    rows: &[u8],
    first_id: i64,
    update: bool,
) -> Result<Vec<EventRow>, String> {
    let cols = super::frames::parse_shape(shape)?;
    let events = super::frames::events(rows)?;
    let (cols, layout) = read_columns(&cols)?;
    let row_values = |bytes: &[u8]| -> Result<Vec<Vec<u8>>, String> {
        let stored = super::frames::tuple_values(bytes, &layout)?;
        let mut shown = Vec::with_capacity(cols.len());
        for (c, v) in cols.iter().zip(stored) {
            let mut out = Vec::new();
            match v {
                None => out.extend_from_slice(b"null"),
                Some(v) => {
                    values::check(&c.kind, v)?;
                    render(&c.kind, v, &mut out)?;
                }
            }
            shown.push(out);
        }
        Ok(shown)
    };
    let mut out = Vec::with_capacity(events.len());
    for (n, (old, new)) in events.into_iter().enumerate() {
        let id = i64::try_from(n)
            .ok()
            .and_then(|n| first_id.checked_add(n))
            .ok_or("audit event id out of range")?;
        let old = old.map(row_values).transpose()?;
        let new = new.map(row_values).transpose()?;
        let object = |row: &Vec<Vec<u8>>, pick: &dyn Fn(usize) -> bool| {
            json_object(
                cols.iter()
                    .enumerate()
                    .filter(|(i, _)| pick(*i))
                    .map(|(i, c)| (c.name.as_str(), row[i].as_slice())),
            )
        };
        let key = match new.as_ref().or(old.as_ref()) {
            Some(row) if cols.iter().any(|c| c.key) => {
                Some(jsonb_datum(object(row, &|i| cols[i].key))?)
            }
            _ => None,
        };
        let changed = |i: usize| match (&old, &new) {
            (Some(o), Some(n)) if update => o[i] != n[i],
            _ => true,
        };
        let values_of = |row: &Option<Vec<Vec<u8>>>| {
            row.as_ref()
                .map(|r| jsonb_datum(object(r, &|i| cols[i].value && changed(i))))
                .transpose()
        };
        out.push((id, [key, values_of(&old)?, values_of(&new)?]));
    }
    Ok(out)
}

/// The events of a TRUNCATE or security event record: the JSON array text
/// [[id, row_key, old_values, new_values], …].
///
/// # Safety
/// As `jsonb_datum`.
pub(super) unsafe fn decode_events(events: &[u8]) -> Result<Vec<EventRow>, String> {
    let bad = || "malformed audit record events".to_string();
    let v: serde_json::Value = serde_json::from_slice(events).map_err(|_| bad())?;
    let mut out = Vec::new();
    for e in v.as_array().ok_or_else(bad)? {
        let e = e.as_array().filter(|e| e.len() == 4).ok_or_else(bad)?;
        let id = e[0].as_i64().ok_or_else(bad)?;
        let mut parts = [None; 3];
        for (part, value) in parts.iter_mut().zip(&e[1..]) {
            if !value.is_null() {
                *part = Some(jsonb_datum(value.to_string().into_bytes())?);
            }
        }
        out.push((id, parts));
    }
    Ok(out)
}
