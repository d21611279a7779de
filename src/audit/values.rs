//! Checks of stored value bytes before anything reads them. Plain Rust, no pgrx types.
//!
//! A record's rows are PostgreSQL tuple bytes, and a record can be forged (by whoever can write
//! `pgauth.audit_records` with its triggers off, or edit its files, or hand over a dump). Type
//! output functions trust their input, so a forged array header, jsonb container or TOAST
//! pointer would make them read past the value (printing memory, or crashing), or read another
//! table's TOAST data. The reader therefore only hands a stored value to PostgreSQL after it
//! passed the check here for its type, and only for the types listed in `Kind`; other types are
//! stored as their text form at capture time (`frames::Column::text`).
//!
//! Every check takes a value as it lies in a stored tuple or array: the value's bytes for a
//! fixed-length type, the whole varlena (header included) otherwise. Out-of-line (TOAST) and
//! compressed values are refused: the capture stores every value inline and uncompressed.

/// How a stored value of one type is checked and shown. The allow-list: anything else is
/// never read from stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int2,
    Int4,
    Int8,
    /// A fixed-length built-in type whose output function accepts any bytes of that length
    /// (floats, money, oid, uuid, date, time, timetz, timestamp, timestamptz, interval; an
    /// output function may still raise an error, e.g. a timestamp out of range).
    Fixed {
        oid: u32,
        len: usize,
        byval: bool,
    },
    /// `name`: 64 bytes holding a NUL-terminated string.
    Name,
    /// text, varchar, bpchar, json, and text-stored columns: any bytes in the server encoding.
    Text {
        oid: u32,
    },
    /// bytea: any bytes.
    Bytea,
    Numeric,
    Jsonb,
    /// inet or cidr.
    Inet {
        oid: u32,
    },
    /// An enum: the OID of one of its labels, shown by pgauth from pg_enum.
    Enum {
        oid: u32,
    },
    Array {
        elem_oid: u32,
        elem_len: i16,
        elem_align: u8,
        elem: Box<Kind>,
    },
}

/// `name`'s length (NAMEDATALEN).
const NAME_LEN: usize = 64;
/// Most dimensions an array may have (MAXDIM).
const MAX_DIMS: usize = 6;
/// Most elements an array may have (MaxArraySize).
const MAX_ITEMS: u64 = 0x3FFF_FFFF / 8;

fn bad<T>(why: &str) -> Result<T, String> {
    Err(format!("malformed audit value: {why}"))
}

/// The payload of a varlena (after its 1- or 4-byte header), refusing out-of-line and
/// compressed values. `v` is exactly the value (its header's length was checked by the reader
/// of the tuple or array).
pub fn payload(v: &[u8]) -> Result<&[u8], String> {
    let Some(&b0) = v.first() else {
        return bad("empty varlena");
    };
    if b0 == 0x01 {
        return bad("an out-of-line (TOAST) pointer");
    }
    if b0 & 0x01 == 1 {
        return Ok(&v[1..]);
    }
    if b0 & 0x03 == 0x02 {
        return bad("a compressed value");
    }
    if v.len() < 4 {
        return bad("a varlena shorter than its header");
    }
    Ok(&v[4..])
}

/// The length of the varlena starting at `data[off]` (header included), or an error when it
/// is not an inline, uncompressed value inside `data`.
pub fn varlena_len(data: &[u8], off: usize) -> Result<usize, String> {
    let Some(&b0) = data.get(off) else {
        return bad("value outside its container");
    };
    let len = if b0 == 0x01 {
        return bad("an out-of-line (TOAST) pointer");
    } else if b0 & 0x01 == 1 {
        ((b0 >> 1) & 0x7F) as usize
    } else if b0 & 0x03 == 0x02 {
        return bad("a compressed value");
    } else {
        let Some(h) = data.get(off..off + 4) else {
            return bad("value outside its container");
        };
        ((u32::from_le_bytes([h[0], h[1], h[2], h[3]]) >> 2) & 0x3FFF_FFFF) as usize
    };
    let min = if b0 & 0x01 == 1 { 1 } else { 4 };
    if len < min || off.checked_add(len).is_none_or(|end| end > data.len()) {
        return bad("value outside its container");
    }
    Ok(len)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    u32_at(b, at).map(|u| u as i32)
}

/// Check a value of `kind` (see the module doc for what `v` is). Arrays are checked element by
/// element.
pub fn check(kind: &Kind, v: &[u8]) -> Result<(), String> {
    match kind {
        Kind::Bool => fixed(v, 1),
        Kind::Int2 => fixed(v, 2),
        Kind::Int4 | Kind::Enum { .. } => fixed(v, 4),
        Kind::Int8 => fixed(v, 8),
        Kind::Fixed { len, .. } => fixed(v, *len),
        Kind::Name => {
            fixed(v, NAME_LEN)?;
            if v.contains(&0) {
                Ok(())
            } else {
                bad("a name without its terminating NUL")
            }
        }
        Kind::Text { .. } => {
            if payload(v)?.contains(&0) {
                bad("a NUL byte in text")
            } else {
                Ok(())
            }
        }
        Kind::Bytea => payload(v).map(|_| ()),
        Kind::Numeric => check_numeric(payload(v)?),
        Kind::Jsonb => check_jsonb(payload(v)?),
        Kind::Inet { .. } => check_inet(payload(v)?),
        Kind::Array {
            elem_oid,
            elem_len,
            elem_align,
            elem,
        } => {
            let a = parse_array(payload(v)?, *elem_oid, *elem_len, *elem_align)?;
            a.elements.iter().flatten().try_for_each(|e| check(elem, e))
        }
    }
}

fn fixed(v: &[u8], len: usize) -> Result<(), String> {
    if v.len() == len {
        Ok(())
    } else {
        bad("a fixed-length value of the wrong length")
    }
}

/// numeric: a short or long header, base-10000 digits (each 0..9999), or NaN / ±Infinity.
pub fn check_numeric(p: &[u8]) -> Result<(), String> {
    let Some(h) = u16_at(p, 0) else {
        return bad("numeric without a header");
    };
    let digits_from = match h & 0xC000 {
        0xC000 => {
            // NaN, +Infinity, -Infinity: a header and nothing else.
            return if matches!(h, 0xC000 | 0xD000 | 0xF000) && p.len() == 2 {
                Ok(())
            } else {
                bad("numeric with an unknown special value")
            };
        }
        0x8000 => 2,
        _ => {
            if p.len() < 4 {
                return bad("numeric shorter than its header");
            }
            4
        }
    };
    let digits = &p[digits_from..];
    if !digits.len().is_multiple_of(2) {
        return bad("numeric with half a digit");
    }
    if digits
        .chunks_exact(2)
        .any(|d| !(0..10_000).contains(&i16::from_le_bytes([d[0], d[1]])))
    {
        return bad("numeric digit out of range");
    }
    Ok(())
}

/// inet / cidr: family, bits and an address of exactly the family's size.
pub fn check_inet(p: &[u8]) -> Result<(), String> {
    // PGSQL_AF_INET = AF_INET + 0, PGSQL_AF_INET6 = AF_INET + 1 (AF_INET is 2 on Linux).
    let (size, max_bits) = match p.first() {
        Some(2) => (4, 32),
        Some(3) => (16, 128),
        _ => return bad("inet of an unknown family"),
    };
    if p.len() != 2 + size || p[1] > max_bits {
        return bad("inet of the wrong size or prefix length");
    }
    Ok(())
}

const JB_CMASK: u32 = 0x0FFF_FFFF;
const JB_FSCALAR: u32 = 0x1000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;
const JB_FARRAY: u32 = 0x4000_0000;
const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_TYPEMASK: u32 = 0x7000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISSTRING: u32 = 0x0000_0000;
const JENTRY_ISNUMERIC: u32 = 0x1000_0000;
const JENTRY_ISBOOL_FALSE: u32 = 0x2000_0000;
const JENTRY_ISNULL: u32 = 0x4000_0000;
const JENTRY_ISCONTAINER: u32 = 0x5000_0000;

/// jsonb: every container's header and entries, every child inside its container (offsets and
/// lengths computed as jsonb's reader computes them), numbers as numerics, object keys as
/// strings. Iterative: nesting depth costs no stack.
pub fn check_jsonb(root: &[u8]) -> Result<(), String> {
    let mut pending: Vec<(&[u8], bool)> = vec![(root, true)];
    while let Some((c, is_root)) = pending.pop() {
        let Some(header) = u32_at(c, 0) else {
            return bad("jsonb container without a header");
        };
        let count = (header & JB_CMASK) as usize;
        let (object, array, scalar) = (
            header & JB_FOBJECT != 0,
            header & JB_FARRAY != 0,
            header & JB_FSCALAR != 0,
        );
        if header & 0x8000_0000 != 0
            || object == array
            || (scalar && (!array || count != 1 || !is_root))
        {
            return bad("jsonb container of an unknown kind");
        }
        let children = if object { count * 2 } else { count };
        let base = children
            .checked_mul(4)
            .and_then(|n| n.checked_add(4))
            .filter(|&b| b <= c.len());
        let Some(base) = base else {
            return bad("jsonb entries outside their container");
        };
        let data = &c[base..];
        let mut end = 0usize;
        for i in 0..children {
            let entry = u32_at(c, 4 + 4 * i).unwrap_or(0);
            let offlen = (entry & JENTRY_OFFLENMASK) as usize;
            let start = end;
            end = if entry & JENTRY_HAS_OFF != 0 {
                offlen
            } else {
                start + offlen
            };
            if end < start || end > data.len() {
                return bad("jsonb value outside its container");
            }
            let kind = entry & JENTRY_TYPEMASK;
            if object && i < count && kind != JENTRY_ISSTRING {
                return bad("jsonb object key that is not a string");
            }
            let aligned = start.div_ceil(4) * 4;
            match kind {
                JENTRY_ISSTRING => {}
                JENTRY_ISNUMERIC => {
                    if aligned > end {
                        return bad("jsonb number outside its container");
                    }
                    let n = varlena_len(&data[..end], aligned)?;
                    check_numeric(payload(&data[aligned..aligned + n])?)?;
                }
                JENTRY_ISCONTAINER => {
                    if aligned > end {
                        return bad("jsonb container outside its parent");
                    }
                    pending.push((&data[aligned..end], false));
                }
                k if (JENTRY_ISBOOL_FALSE..=JENTRY_ISNULL).contains(&k) => {}
                _ => return bad("jsonb value of an unknown kind"),
            }
        }
    }
    Ok(())
}

/// A checked array: its dimensions and its elements (None = NULL), each as it lies in the
/// array (fixed bytes, or a whole inline varlena).
#[derive(Debug, PartialEq, Eq)]
pub struct ArrayValue<'a> {
    pub dims: Vec<usize>,
    pub elements: Vec<Option<&'a [u8]>>,
}

/// An array (`p`: the payload after a 4-byte varlena header): dimensions, element type (must
/// be `elem_oid`: no array can claim another element type, such as `record`), null bitmap,
/// data offset, and every element inside the array, laid out as PostgreSQL lays them out.
pub fn parse_array(
    p: &[u8],
    elem_oid: u32,
    elem_len: i16,
    elem_align: u8,
) -> Result<ArrayValue<'_>, String> {
    // Offsets inside ArrayType count the 4-byte varlena header.
    const HDR: usize = 4;
    let (Some(ndim), Some(dataoffset), Some(elemtype)) = (i32_at(p, 0), i32_at(p, 4), u32_at(p, 8))
    else {
        return bad("array shorter than its header");
    };
    if !(0..=MAX_DIMS as i32).contains(&ndim) {
        return bad("array with an impossible number of dimensions");
    }
    if elemtype != elem_oid {
        return bad("array of another element type than its column's");
    }
    let ndim = ndim as usize;
    let mut dims = Vec::with_capacity(ndim);
    let mut items: u64 = if ndim == 0 { 0 } else { 1 };
    for d in 0..ndim {
        let (Some(dim), Some(lb)) = (i32_at(p, 12 + 4 * d), i32_at(p, 12 + 4 * (ndim + d))) else {
            return bad("array shorter than its dimensions");
        };
        if dim < 1 || lb as i64 + dim as i64 - 1 > i32::MAX as i64 {
            return bad("array dimension out of range");
        }
        items = items.saturating_mul(dim as u64);
        if items > MAX_ITEMS {
            return bad("array with too many elements");
        }
        dims.push(dim as usize);
    }
    let items = items as usize;
    let maxalign = |n: usize| n.div_ceil(8) * 8;
    let bitmap_at = 12 + 8 * ndim;
    let (data_at, bitmap) = if dataoffset == 0 {
        (maxalign(HDR + bitmap_at) - HDR, None)
    } else {
        let bitmap_len = items.div_ceil(8);
        if dataoffset as usize != maxalign(HDR + bitmap_at + bitmap_len) {
            return bad("array data offset does not follow its header");
        }
        let Some(bits) = p.get(bitmap_at..bitmap_at + bitmap_len) else {
            return bad("array null bitmap outside the array");
        };
        (dataoffset as usize - HDR, Some(bits))
    };
    if data_at > p.len() {
        return bad("array data outside the array");
    }
    let align = match elem_align {
        b'd' => 8,
        b'i' => 4,
        b's' => 2,
        _ => 1,
    };
    let aligned = |at: usize| (HDR + at).div_ceil(align) * align - HDR;
    // Without a null bitmap every element takes at least a byte: a count beyond the bytes left
    // is forged. With one, the bitmap itself (inside the value) bounds it. Either way the count
    // comes from the value, so nothing is reserved for it up front beyond the value's size.
    if bitmap.is_none() && items > p.len() - data_at {
        return bad("array with more elements than bytes");
    }
    let mut elements = Vec::with_capacity(items.min(p.len()));
    let mut at = data_at;
    for i in 0..items {
        if bitmap.is_some_and(|b| b[i / 8] & (1 << (i % 8)) == 0) {
            elements.push(None);
            continue;
        }
        at = aligned(at);
        let len = match elem_len {
            -1 => varlena_len(p, at)?,
            n if n > 0 => n as usize,
            _ => return bad("array of an unknown element layout"),
        };
        let Some(e) = p.get(at..at + len) else {
            return bad("array element outside the array");
        };
        elements.push(Some(e));
        at += len;
    }
    Ok(ArrayValue { dims, elements })
}

/// Append `s` to `out` as a JSON string (escaping as PostgreSQL's escape_json does); bytes
/// above 0x7F are copied (the text is in the server encoding, checked by the caller).
pub fn json_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0C => out.extend_from_slice(b"\\f"),
            c if c < 0x20 => out.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
            c => out.push(c),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A varlena with a 4-byte header around `p`.
    fn v4(p: &[u8]) -> Vec<u8> {
        let mut v = (((p.len() + 4) as u32) << 2).to_le_bytes().to_vec();
        v.extend_from_slice(p);
        v
    }

    fn int8_array(ndim: i32, dims: &[i32], values: &[i64]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&ndim.to_le_bytes());
        p.extend_from_slice(&0i32.to_le_bytes());
        p.extend_from_slice(&20u32.to_le_bytes());
        for d in dims {
            p.extend_from_slice(&d.to_le_bytes());
        }
        for _ in dims {
            p.extend_from_slice(&1i32.to_le_bytes());
        }
        while !(p.len() + 4).is_multiple_of(8) {
            p.push(0);
        }
        for v in values {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p
    }

    const INT8S: fn() -> Kind = || Kind::Array {
        elem_oid: 20,
        elem_len: 8,
        elem_align: b'd',
        elem: Box::new(Kind::Int8),
    };

    #[test]
    fn arrays_are_checked_against_their_bytes() {
        let ok = int8_array(1, &[2], &[7, 8]);
        let a = parse_array(&ok, 20, 8, b'd').unwrap();
        assert_eq!(a.dims, vec![2]);
        assert_eq!(a.elements.len(), 2);
        assert_eq!(check(&INT8S(), &v4(&ok)), Ok(()));
        // The header claims more elements than the array carries.
        let more = int8_array(1, &[1000], &[7, 8]);
        assert!(parse_array(&more, 20, 8, b'd').is_err());
        // Found by fuzzing (fuzz/seeds/audit_values/crash-*): a count under MAX_ITEMS but far
        // beyond the bytes, with no null bitmap, made the reader reserve memory for every
        // claimed element (up to 2 GiB) before finding the first one missing.
        let claimed = int8_array(1, &[100_000_000], &[7, 8]);
        assert_eq!(
            parse_array(&claimed, 20, 8, b'd'),
            bad("array with more elements than bytes")
        );
        let huge = int8_array(2, &[1 << 30, 1 << 30], &[7, 8]);
        assert!(parse_array(&huge, 20, 8, b'd').is_err());
        // Another element type (e.g. record, 2249) than the column's.
        let mut record = ok.clone();
        record[8..12].copy_from_slice(&2249u32.to_le_bytes());
        assert!(parse_array(&record, 20, 8, b'd').is_err());
        // Negative dimension, too many dimensions, every cut.
        assert!(parse_array(&int8_array(1, &[-1], &[]), 20, 8, b'd').is_err());
        assert!(parse_array(&int8_array(7, &[1; 7], &[1]), 20, 8, b'd').is_err());
        for cut in 0..ok.len() {
            assert!(
                parse_array(&ok[..cut], 20, 8, b'd').is_err(),
                "cut at {cut}"
            );
        }
        // An empty array.
        assert_eq!(
            parse_array(&int8_array(0, &[], &[]), 20, 8, b'd')
                .unwrap()
                .elements
                .len(),
            0
        );
    }

    #[test]
    fn array_elements_may_not_be_toast_pointers() {
        // text[] with one element: an out-of-line pointer (0x01, tag 18, 16 bytes).
        let mut p = Vec::new();
        p.extend_from_slice(&1i32.to_le_bytes());
        p.extend_from_slice(&0i32.to_le_bytes());
        p.extend_from_slice(&25u32.to_le_bytes());
        p.extend_from_slice(&1i32.to_le_bytes());
        p.extend_from_slice(&1i32.to_le_bytes());
        let mut pointer = vec![0x01, 18];
        pointer.extend_from_slice(&[0; 16]);
        let mut toast = p.clone();
        toast.extend_from_slice(&pointer);
        let refused = parse_array(&toast, 25, -1, b'i').unwrap_err();
        assert!(refused.contains("TOAST"), "{refused}");
        let mut fine = p.clone();
        fine.extend_from_slice(&[0x07, b'a', b'b']);
        let a = parse_array(&fine, 25, -1, b'i').unwrap();
        assert_eq!(a.elements, vec![Some(&[0x07, b'a', b'b'][..])]);
    }

    #[test]
    fn numerics_are_checked() {
        // 12.5: long header (weight 0, dscale 1), digits 12, 5000.
        let mut n = vec![];
        n.extend_from_slice(&1u16.to_le_bytes());
        n.extend_from_slice(&0i16.to_le_bytes());
        n.extend_from_slice(&12i16.to_le_bytes());
        n.extend_from_slice(&5000i16.to_le_bytes());
        assert_eq!(check_numeric(&n), Ok(()));
        assert_eq!(check_numeric(&0xC000u16.to_le_bytes()), Ok(()));
        assert!(check_numeric(&0xE000u16.to_le_bytes()).is_err());
        assert!(check_numeric(&[0x00]).is_err());
        let mut big_digit = n.clone();
        big_digit[6..8].copy_from_slice(&10_000i16.to_le_bytes());
        assert!(check_numeric(&big_digit).is_err());
        assert!(check_numeric(&n[..5]).is_err());
    }

    #[test]
    fn jsonb_containers_are_checked() {
        // {"a": 1} as jsonb: object of 1 pair: key "a" (string, len 1), value numeric 1.
        let num = v4(&[0x00, 0x80, 0x01, 0x00]); // short numeric, one digit 1
        let mut c = Vec::new();
        c.extend_from_slice(&(JB_FOBJECT | 1).to_le_bytes());
        c.extend_from_slice(&1u32.to_le_bytes()); // key: string, length 1
        c.extend_from_slice(&(JENTRY_ISNUMERIC | (3 + num.len() as u32)).to_le_bytes());
        c.push(b'a');
        c.extend_from_slice(&[0, 0, 0]); // pad to 4
        c.extend_from_slice(&num);
        assert_eq!(check_jsonb(&c), Ok(()));
        // A value claiming more bytes than there are.
        let mut long = c.clone();
        long[8..12].copy_from_slice(&(JENTRY_ISNUMERIC | 4000).to_le_bytes());
        assert!(check_jsonb(&long).is_err());
        // An end offset before the start.
        let mut back = c.clone();
        back[8..12].copy_from_slice(&(JENTRY_ISNUMERIC | JENTRY_HAS_OFF).to_le_bytes());
        assert!(check_jsonb(&back).is_err());
        // A count the entries cannot hold, and every cut.
        let mut many = c.clone();
        many[0..4].copy_from_slice(&(JB_FOBJECT | 1_000_000).to_le_bytes());
        assert!(check_jsonb(&many).is_err());
        for cut in 0..c.len() {
            assert!(check_jsonb(&c[..cut]).is_err(), "cut at {cut}");
        }
        // A non-string key.
        let mut key = c.clone();
        key[4..8].copy_from_slice(&(JENTRY_ISNULL | 1).to_le_bytes());
        assert!(check_jsonb(&key).is_err());
    }

    #[test]
    fn other_values_are_checked() {
        assert_eq!(check_inet(&[2, 32, 127, 0, 0, 1]), Ok(()));
        assert!(check_inet(&[2, 33, 127, 0, 0, 1]).is_err());
        assert!(check_inet(&[3, 64, 1, 2]).is_err());
        assert!(check_inet(&[9, 0]).is_err());
        assert!(check(&Kind::Name, &[b'a'; 64]).is_err());
        assert!(check(&Kind::Int8, &[0; 4]).is_err());
        assert!(check(&Kind::Text { oid: 25 }, &[0x01, 18, 0, 0]).is_err());
        assert!(check(&Kind::Text { oid: 25 }, &[0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert_eq!(check(&Kind::Text { oid: 25 }, &[0x07, b'a', b'b']), Ok(()));
        let mut s = Vec::new();
        json_string(&mut s, b"a\"\\\n\x01");
        assert_eq!(s, b"\"a\\\"\\\\\\n\\u0001\"");
    }
}
