//! Capture: the statement-level trigger `pgauth.audit_capture()` that `auth_audit_enable` puts
//! on an audited table — AFTER INSERT/UPDATE/DELETE (with transition tables) or TRUNCATE, FOR
//! EACH STATEMENT; its arguments are the attribute numbers of the columns never to store.
//!
//! A statement's changed rows are read straight from the transition tables, copied into tuple
//! bytes of the audited columns (`frames`), hashed once, and written as one record per
//! `RECORD_EVENTS` events (or `RECORD_BYTES`) by `record::write_record`. How a table's rows are
//! stored (its "shape") is worked out once per table and kept for the backend (`STATE.shapes`).
//!
//! Everything here works on the trigger's relation, its tuple descriptor and the transition
//! tuplestores, which PostgreSQL hands the trigger for the duration of the call: that is the
//! `unsafe` of this file.

use std::ffi::CStr;
use std::hash::{Hash, Hasher};

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::decode::value_kind;
use super::frames::Stored;
use super::raw::{cstr_owned, finfo_v1, qualified_name, trigger_data};
use super::record::{new_record, reserve_ids, statement_facts, write_record};
use super::state::STATE;
use super::RECORD_EVENTS;
use crate::error::AuthError;
use crate::pg::roles::as_owner_unpinned;

finfo_v1!(pg_finfo_pgauth_audit_capture);

/// A record closes when its rows reach this many bytes (statements with large values).
const RECORD_BYTES: usize = 64 << 20;

/// Bytes of a heap tuple header before t_infomask2 (datum fields and t_ctid): not stored.
const STORED_FROM: usize = 18;

/// Everything the stored shape depends on: a change to any of these needs a new shape.
///
/// # Safety
/// `rel` is an open relation.
unsafe fn table_shape(rel: pg_sys::Relation, pk_index: pg_sys::Oid) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let desc = (*rel).rd_att;
    (*rel).rd_id.to_u32().hash(&mut h);
    (*(*rel).rd_rel).relnamespace.to_u32().hash(&mut h);
    CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()).hash(&mut h);
    pk_index.to_u32().hash(&mut h);
    for i in 0..(*desc).natts as usize {
        let att = crate::pg::compat::tuple_desc_attr(desc, i);
        CStr::from_ptr((*att).attname.data.as_ptr()).hash(&mut h);
        (*att).atttypid.to_u32().hash(&mut h);
        (*att).atttypmod.hash(&mut h);
        (*att).attisdropped.hash(&mut h);
    }
    h.finish()
}

/// Attribute numbers (1-based) of the primary key's columns.
///
/// # Safety
/// `pk_index` is InvalidOid or the OID of an index the caller's relation holds a lock on.
pub(super) unsafe fn primary_key_attnums(pk_index: pg_sys::Oid) -> Vec<i16> {
    if pk_index == pg_sys::Oid::INVALID {
        return Vec::new();
    }
    let index = pg_sys::index_open(pk_index, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
    let form = (*index).rd_index;
    let n = (*form).indnkeyatts as usize;
    let keys = (*form).indkey.values.as_slice(n).to_vec();
    pg_sys::index_close(index, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
    keys
}

/// Whether values of a type can be stored as tuple bytes and read back later safely: built-in
/// types, enums, base types of extensions, and domains and arrays of those. Not user-defined
/// composite, range or multirange types: their layout can change once no table uses them, and
/// old bytes would then be read with the new layout.
pub(super) fn storable_type(oid: pg_sys::Oid) -> bool {
    if oid.to_u32() < pg_sys::FirstNormalObjectId {
        return true;
    }
    // SAFETY: catalog lookups by type OID (an unknown OID raises an ERROR).
    unsafe {
        match pg_sys::get_typtype(oid) as u8 {
            b'e' => true,
            b'd' => storable_type(pg_sys::getBaseType(oid)),
            b'b' => {
                let element = pg_sys::get_element_type(oid);
                element == pg_sys::InvalidOid || storable_type(element)
            }
            _ => false,
        }
    }
}

/// How the values of one column are stored, so that reading a record never depends on an OID of
/// this cluster (a `pg_dump` restore into another cluster gives enums, domains and extension
/// types new OIDs): as bytes only values of built-in types, everything else as text made here,
/// by the type's output function, in the writer's statement.
#[derive(Clone, Copy)]
enum Storage {
    /// The value's own bytes, of the built-in type `oid` (a domain's values are its base
    /// type's: the same bytes).
    Bytes { oid: pg_sys::Oid },
    /// An array of a domain over a built-in type: stored as an array of the base type `elem`
    /// (the same bytes with the base type in the array header), type `array`.
    DomainArray {
        array: pg_sys::Oid,
        elem: pg_sys::Oid,
    },
    /// The value's text form (enums; types whose bytes the reader cannot check).
    Text,
    /// An array as text[] of its elements' text forms (arrays of those), element type `elem`.
    TextArray { elem: pg_sys::Oid },
}

/// Whether values of the built-in type `oid` are stored as bytes.
///
/// # Safety
/// In a transaction (catalog lookups by type OID).
unsafe fn bytes_of_builtin(oid: pg_sys::Oid) -> bool {
    oid.to_u32() < pg_sys::FirstNormalObjectId && value_kind(oid).is_ok()
}

/// How values of the column type `oid` are stored (see `Storage`).
///
/// # Safety
/// In a transaction (catalog lookups by type OID).
unsafe fn storage_of(oid: pg_sys::Oid) -> Storage {
    let base = pg_sys::getBaseType(oid);
    if bytes_of_builtin(base) {
        return Storage::Bytes { oid: base };
    }
    let elem = pg_sys::get_element_type(base);
    if elem == pg_sys::InvalidOid {
        return Storage::Text;
    }
    let elem_base = pg_sys::getBaseType(elem);
    if pg_sys::get_element_type(elem_base) != pg_sys::InvalidOid {
        // An array of a domain over an array: shown whole, as text.
        return Storage::Text;
    }
    let array = pg_sys::get_array_type(elem_base);
    if elem_base != elem && array != pg_sys::InvalidOid && bytes_of_builtin(array) {
        return Storage::DomainArray {
            array,
            elem: elem_base,
        };
    }
    Storage::TextArray { elem }
}

/// What the capture needs to turn a value into its stored form.
enum Convert {
    /// Stored as it is (out-of-line and compressed values are fetched).
    Keep,
    /// A copy of the array with this element type in its header.
    ElementType(pg_sys::Oid),
    /// The output function's text.
    Text(*mut pg_sys::FmgrInfo),
    /// Each element through the output function, into a text[].
    TextArray {
        output: *mut pg_sys::FmgrInfo,
        elem: pg_sys::Oid,
        len: i16,
        byval: bool,
        align: std::ffi::c_char,
    },
}

/// How one audited table's rows are stored: the stored columns' descriptor (in
/// TopMemoryContext, kept for the backend's life), where each comes from, and the shape text.
pub(super) struct StoredShape {
    desc: pg_sys::TupleDesc,
    /// 0-based attribute index in the table for each stored column.
    source: Vec<usize>,
    /// Stored columns that may hold out-of-line (TOASTed) or compressed values.
    varlena: Vec<bool>,
    /// How each stored column's values are converted (output functions in TopMemoryContext).
    convert: Vec<Convert>,
    shape: String,
    table: String,
    /// Hash state after this shape's digest prefix (table name and shape).
    prefix: sha3::Sha3_512,
}

/// The stored shape for a table: every live column not excluded, plus the primary key's
/// columns (an excluded key column is stored for the key but not shown in the values).
///
/// # Safety
/// `rel` is the trigger's open relation and `pk_index` its primary key index (or InvalidOid).
unsafe fn stored_shape(
    rel: pg_sys::Relation,
    pk_index: pg_sys::Oid,
    excluded: &[i16],
) -> StoredShape {
    let desc = (*rel).rd_att;
    let key = primary_key_attnums(pk_index);
    let mut source = Vec::new();
    let mut storages = Vec::new();
    let mut columns = Vec::new();
    for i in 0..(*desc).natts as usize {
        let att = crate::pg::compat::tuple_desc_attr(desc, i);
        if (*att).attisdropped {
            continue;
        }
        let name = cstr_owned((*att).attname.data.as_ptr());
        let is_key = key.contains(&((i + 1) as i16));
        let value = !excluded.contains(&((i + 1) as i16));
        if !is_key && !value {
            continue;
        }
        if !storable_type((*att).atttypid) {
            AuthError::AuditUnsupportedType(format!(
                "column \"{name}\" of {} has a user-defined composite or range type, which audit records cannot store safely",
                cstr_owned((*(*rel).rd_rel).relname.data.as_ptr())
            ))
            .raise();
        }
        let storage = storage_of((*att).atttypid);
        source.push(i);
        storages.push(storage);
        columns.push(super::frames::Column {
            name,
            type_name: cstr_owned(pg_sys::format_type_be_qualified((*att).atttypid)),
            typmod: (*att).atttypmod,
            key: is_key,
            value,
            type_oid: match storage {
                Storage::Bytes { oid } => oid.to_u32(),
                Storage::DomainArray { array, .. } => array.to_u32(),
                Storage::Text | Storage::TextArray { .. } => (*att).atttypid.to_u32(),
            },
            stored: match storage {
                Storage::Bytes { .. } | Storage::DomainArray { .. } => Stored::Bytes,
                Storage::Text => Stored::Text,
                Storage::TextArray { .. } => Stored::TextArray,
            },
        });
    }
    let output_of = |oid: pg_sys::Oid| {
        let (mut func, mut varlena) = (pg_sys::InvalidOid, false);
        pg_sys::getTypeOutputInfo(oid, &mut func, &mut varlena);
        let finfo =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::FmgrInfo>()).cast::<pg_sys::FmgrInfo>();
        pg_sys::fmgr_info_cxt(func, finfo, pg_sys::TopMemoryContext);
        finfo
    };
    let old = pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
    let stored = pg_sys::CreateTemplateTupleDesc(source.len() as i32);
    let mut convert = Vec::with_capacity(source.len());
    for (n, &i) in source.iter().enumerate() {
        let att = crate::pg::compat::tuple_desc_attr(desc, i);
        let as_type = |oid: pg_sys::Oid| {
            pg_sys::TupleDescInitEntry(
                stored,
                (n + 1) as i16,
                (*att).attname.data.as_ptr(),
                oid,
                -1,
                0,
            )
        };
        match storages[n] {
            Storage::Bytes { .. } => {
                // A domain's values have its base type's layout.
                pg_sys::TupleDescCopyEntry(stored, (n + 1) as i16, desc, (i + 1) as i16);
                convert.push(Convert::Keep);
            }
            Storage::DomainArray { elem, .. } => {
                pg_sys::TupleDescCopyEntry(stored, (n + 1) as i16, desc, (i + 1) as i16);
                convert.push(Convert::ElementType(elem));
            }
            Storage::Text => {
                as_type(pg_sys::TEXTOID);
                convert.push(Convert::Text(output_of((*att).atttypid)));
            }
            Storage::TextArray { elem } => {
                as_type(pg_sys::TEXTARRAYOID);
                let (mut len, mut byval, mut align) = (0i16, false, 0 as std::ffi::c_char);
                pg_sys::get_typlenbyvalalign(elem, &mut len, &mut byval, &mut align);
                convert.push(Convert::TextArray {
                    output: output_of(elem),
                    elem,
                    len,
                    byval,
                    align,
                });
            }
        }
    }
    pg_sys::MemoryContextSwitchTo(old);
    let varlena = source
        .iter()
        .map(|&i| (*crate::pg::compat::tuple_desc_attr(desc, i)).attlen == -1)
        .collect();
    let table = qualified_name(rel);
    let shape = super::frames::shape_json(&columns);
    let prefix = super::prefix_hasher(Some(table.as_bytes()), Some(shape.as_bytes()));
    StoredShape {
        desc: stored,
        source,
        varlena,
        convert,
        shape,
        table,
        prefix,
    }
}

/// Stored shapes carry schema and type names: forgotten when any of those change
/// (registered by `sql::install_xact_callback`).
#[pg_guard]
pub(super) extern "C-unwind" fn forget_shapes(
    _arg: pg_sys::Datum,
    _cache: std::ffi::c_int,
    _hash: u32,
) {
    // Their descriptors stay allocated (a capture may hold one); this is rare.
    STATE.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            s.shapes.clear();
        }
    });
}

/// A reader of one transition table, with its own read pointer.
struct TransitionReader {
    store: *mut pg_sys::Tuplestorestate,
    slot: *mut pg_sys::TupleTableSlot,
    pointer: i32,
}

impl TransitionReader {
    /// # Safety
    /// `store` is NULL or a transition table of the current trigger call, `desc` its rows'.
    unsafe fn open(store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) -> Option<Self> {
        if store.is_null() {
            return None;
        }
        let pointer = pg_sys::tuplestore_alloc_read_pointer(store, pg_sys::EXEC_FLAG_REWIND as i32);
        pg_sys::tuplestore_select_read_pointer(store, pointer);
        pg_sys::tuplestore_rescan(store);
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
        Some(TransitionReader {
            store,
            slot,
            pointer,
        })
    }

    /// The next row's values and nulls (valid until the next call).
    ///
    /// # Safety
    /// Called during the trigger call that opened the reader.
    unsafe fn next(&mut self) -> Option<(*mut pg_sys::Datum, *mut bool)> {
        pg_sys::tuplestore_select_read_pointer(self.store, self.pointer);
        if !pg_sys::tuplestore_gettupleslot(self.store, true, false, self.slot) {
            return None;
        }
        pg_sys::slot_getallattrs(self.slot);
        Some(((*self.slot).tts_values, (*self.slot).tts_isnull))
    }

    /// # Safety
    /// Called during the trigger call that opened the reader.
    unsafe fn close(self) {
        pg_sys::ExecDropSingleTupleTableSlot(self.slot);
        pg_sys::tuplestore_select_read_pointer(self.store, 0);
    }
}

/// An array value as text[]: each element through the element type's output function, the
/// dimensions, lower bounds and NULLs kept.
///
/// # Safety
/// `v` is a non-NULL array value whose elements are of type `elem` (`len`, `byval`, `align`
/// its layout) and `output` that type's output function.
unsafe fn text_array(
    v: pg_sys::Datum,
    output: *mut pg_sys::FmgrInfo,
    elem: pg_sys::Oid,
    len: i16,
    byval: bool,
    align: std::ffi::c_char,
) -> pg_sys::Datum {
    let array = pg_sys::pg_detoast_datum(v.cast_mut_ptr()).cast::<pg_sys::ArrayType>();
    let (mut items, mut nulls, mut count) = (std::ptr::null_mut(), std::ptr::null_mut(), 0);
    pg_sys::deconstruct_array(
        array, elem, len as i32, byval, align, &mut items, &mut nulls, &mut count,
    );
    for k in 0..count as usize {
        if !*nulls.add(k) {
            let text = pg_sys::OutputFunctionCall(output, *items.add(k));
            *items.add(k) = pg_sys::Datum::from(pg_sys::cstring_to_text(text));
        }
    }
    // ARR_DIMS and ARR_LBOUND: after the header (varlena header, ndim, dataoffset, elemtype).
    let ndim = (*array).ndim;
    let dims = array.cast::<u8>().add(16).cast::<i32>();
    let lbounds = dims.add(ndim.max(0) as usize);
    let text = pg_sys::construct_md_array(
        items,
        nulls,
        ndim,
        dims,
        lbounds,
        pg_sys::TEXTOID,
        -1,
        false,
        b'i' as std::ffi::c_char,
    );
    pg_sys::Datum::from(text)
}

/// One transition row as a stored tuple's bytes (from t_infomask2 on), appended as a frame.
///
/// # Safety
/// `row` is the values and nulls of a row of the table `shape` was made for, as
/// `TransitionReader::next` returns them; `values` and `nulls` have the shape's width.
unsafe fn push_row(
    buf: &mut Vec<u8>,
    shape: &StoredShape,
    row: Option<(*mut pg_sys::Datum, *mut bool)>,
    values: &mut [pg_sys::Datum],
    nulls: &mut [bool],
) {
    let Some((src_values, src_nulls)) = row else {
        super::frames::push_frame(buf, None);
        return;
    };
    for (n, &i) in shape.source.iter().enumerate() {
        let null = *src_nulls.add(i);
        let mut v = *src_values.add(i);
        if null {
        } else if let Convert::Text(output) = shape.convert[n] {
            v = pg_sys::Datum::from(pg_sys::cstring_to_text(pg_sys::OutputFunctionCall(
                output, v,
            )));
        } else if let Convert::TextArray {
            output,
            elem,
            len,
            byval,
            align,
        } = shape.convert[n]
        {
            v = text_array(v, output, elem, len, byval, align);
        } else if let Convert::ElementType(elem) = shape.convert[n] {
            // A copy (never the table's own value), detoasted and uncompressed, with the base
            // type in the header (ARR_ELEMTYPE: after the varlena header, ndim and dataoffset).
            let copy = pg_sys::pg_detoast_datum_copy(v.cast_mut_ptr()).cast::<u8>();
            std::ptr::write_unaligned(copy.add(12).cast::<u32>(), elem.to_u32());
            v = pg_sys::Datum::from(copy);
        } else if shape.varlena[n] {
            // Out-of-line values point into the table's TOAST relation, and the reader checks
            // only plain bytes: store the value itself, uncompressed (1: an out-of-line
            // pointer; low bits 10: a compressed four-byte header).
            let b0 = *v.cast_mut_ptr::<u8>();
            if b0 == 0x01 || b0 & 0x03 == 0x02 {
                v = pg_sys::Datum::from(pg_sys::detoast_attr(v.cast_mut_ptr()));
            }
        }
        values[n] = v;
        nulls[n] = null;
    }
    let tuple = pg_sys::heap_form_tuple(shape.desc, values.as_mut_ptr(), nulls.as_mut_ptr());
    let len = (*tuple).t_len as usize;
    let bytes = std::slice::from_raw_parts((*tuple).t_data.cast::<u8>(), len);
    super::frames::push_frame(buf, Some(&bytes[STORED_FROM..]));
    pg_sys::heap_freetuple(tuple);
}

/// `pgauth.audit_capture()`.
///
/// # Safety
/// Called by PostgreSQL's trigger manager (`trigger_data` refuses any other call): the
/// relation, trigger and transition tables it hands over stay valid for the call.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn pgauth_audit_capture(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let trigdata = trigger_data(fcinfo);
    let tg_event = (*trigdata).tg_event;
    if tg_event & pg_sys::TRIGGER_EVENT_ROW != 0 || tg_event & pg_sys::TRIGGER_EVENT_BEFORE != 0 {
        AuthError::InvalidRequest(
            "pgauth.audit_capture() must be an AFTER … FOR EACH STATEMENT trigger; use auth_audit_enable()".into(),
        )
        .raise();
    }
    let event = tg_event & pg_sys::TRIGGER_EVENT_OPMASK;
    let trigger = (*trigdata).tg_trigger;
    let rel = (*trigdata).tg_relation;
    let (old_store, new_store) = ((*trigdata).tg_oldtable, (*trigdata).tg_newtable);
    let rows = [old_store, new_store]
        .iter()
        .filter(|s| !s.is_null())
        .map(|s| pg_sys::tuplestore_tuple_count(*s))
        .max();
    if rows == Some(0) {
        // Nothing changed (e.g. an UPDATE that matched no row): no record.
        return pg_sys::Datum::from(0);
    }
    let pk_index = crate::pg::compat::primary_key_index(rel);
    let key = ((*trigger).tgoid, table_shape(rel, pk_index));
    // Attribute numbers (auth_audit_enable writes those).
    let excluded: Vec<i16> = (0..(*trigger).tgnargs as usize)
        .filter_map(|i| cstr_owned(*(*trigger).tgargs.add(i)).parse().ok())
        .collect();
    as_owner_unpinned(|| {
        let facts = statement_facts();
        let shape = match STATE.with(|s| s.borrow().shapes.get(&key).cloned()) {
            Some(shape) => shape,
            None => {
                let shape = std::rc::Rc::new(stored_shape(rel, pk_index, &excluded));
                STATE.with(|s| {
                    let mut s = s.borrow_mut();
                    if s.shapes.len() > 1000 {
                        // Shapes of tables that changed are dropped with the cache, rarely;
                        // their descriptors stay allocated.
                        s.shapes.clear();
                    }
                    s.shapes.insert(key, shape.clone());
                });
                shape
            }
        };
        let name = match event {
            pg_sys::TRIGGER_EVENT_INSERT => "insert",
            pg_sys::TRIGGER_EVENT_UPDATE => "update",
            pg_sys::TRIGGER_EVENT_DELETE => "delete",
            _ => "truncate",
        };
        let table = shape.table.clone();
        let Some(total) = rows else {
            // TRUNCATE: one event with no row.
            let id = reserve_ids(1);
            let mut record = new_record(&facts, name, Some(table));
            record.id = id;
            record.last_id = id;
            record.event_count = 1;
            record.events = Some(format!("[[{id},null,null,null]]"));
            write_record(&record, None);
            return;
        };
        let first = reserve_ids(total);
        let desc = (*rel).rd_att;
        let mut old = TransitionReader::open(old_store, desc);
        let mut new = TransitionReader::open(new_store, desc);
        {
            let shape = &*shape;
            let width = shape.source.len();
            let mut values = vec![pg_sys::Datum::from(0); width];
            let mut nulls = vec![false; width];
            // Per-row memory, reset after each row; a single row uses the trigger's context
            // (reset by the trigger manager after the call).
            let context = if total > 1 {
                pg_sys::AllocSetContextCreateExtended(
                    pg_sys::CurrentMemoryContext,
                    c"pgauth audit capture".as_ptr(),
                    pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                    pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                    pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
                )
            } else {
                pg_sys::CurrentMemoryContext
            };
            let mut done = 0i64;
            while done < total {
                let mut buf = Vec::with_capacity((total - done).min(RECORD_EVENTS) as usize * 96);
                let mut count = 0i64;
                // A record closes at RECORD_EVENTS events or RECORD_BYTES bytes (large values).
                while count < RECORD_EVENTS && done + count < total && buf.len() < RECORD_BYTES {
                    // Read in the caller's context: a slot frees its previous tuple itself.
                    let o = old.as_mut().and_then(|r| r.next());
                    let n = new.as_mut().and_then(|r| r.next());
                    if event == pg_sys::TRIGGER_EVENT_UPDATE && o.is_some() != n.is_some() {
                        AuthError::Internal(
                            "audit: the old and new rows of an UPDATE do not pair up; the statement is refused rather than recorded wrongly".into(),
                        )
                        .raise();
                    }
                    let caller = pg_sys::MemoryContextSwitchTo(context);
                    push_row(&mut buf, shape, o, &mut values, &mut nulls);
                    push_row(&mut buf, shape, n, &mut values, &mut nulls);
                    pg_sys::MemoryContextSwitchTo(caller);
                    if total > 1 {
                        pg_sys::MemoryContextReset(context);
                    }
                    count += 1;
                }
                let mut record = new_record(&facts, name, Some(shape.table.clone()));
                record.id = first + done;
                record.last_id = first + done + count - 1;
                record.event_count = count;
                record.shape = Some(shape.shape.clone());
                record.rows = Some(buf);
                // The record's datum copies go with the record.
                let caller = pg_sys::MemoryContextSwitchTo(context);
                write_record(&record, Some(&shape.prefix));
                pg_sys::MemoryContextSwitchTo(caller);
                if total > 1 {
                    pg_sys::MemoryContextReset(context);
                }
                done += count;
            }
            if total > 1 {
                pg_sys::MemoryContextDelete(context);
            }
        }
        if let Some(r) = old {
            r.close();
        }
        if let Some(r) = new {
            r.close();
        }
    });
    pg_sys::Datum::from(0)
}
