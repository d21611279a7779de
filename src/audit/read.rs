//! Reading records back: `pgauth.audit_record_events(record tid, record_id bigint)`, used by
//! the view `pgauth.audit_log`.
//!
//! The function reads the record itself, from pgauth.audit_records at the given row, under the
//! query's snapshot: no caller can hand it bytes to decode (`read_record`). The events are then
//! decoded (`decode`). A record that cannot be read (forged, or a type changed under it) becomes
//! one marked row instead of an error, so it never hides the rest of the log.
//!
//! The `unsafe` here is the heap fetch by tid, the copy of the row's varlena fields out of the
//! buffer, and the set-returning C function's result.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::decode::{decode_events, decode_rows, jsonb_datum, EventRow};
use super::raw::{arg, finfo_v1, in_subtransaction, pgauth_relid};
use crate::error::AuthError;
use crate::pg::roles::caller;

finfo_v1!(pg_finfo_pgauth_audit_record_events);

/// The key of the one value a record that could not be read shows in new_values.
const READ_ERROR_KEY: &str = "pgauth_audit_error";

/// A varlena column of a pgauth.audit_records row, copied out of the buffer: inline, or an
/// on-disk TOAST pointer into audit_records' own TOAST table (never another table's, never an
/// in-memory pointer).
///
/// # Safety
/// `datum` is a non-NULL varlena field of a pgauth.audit_records tuple whose buffer is pinned,
/// and `toast` is that table's TOAST relation.
unsafe fn own_varlena(datum: pg_sys::Datum, toast: pg_sys::Oid) -> Result<Vec<u8>, String> {
    let p = datum.cast_mut_ptr::<u8>();
    if *p == 0x01 {
        if *p.add(1) != 18 {
            return Err("malformed audit record: a TOAST pointer that is not on disk".into());
        }
        let ext = std::ptr::read_unaligned(p.add(2).cast::<pg_sys::varatt_external>());
        if ext.va_toastrelid != toast {
            return Err("malformed audit record: a TOAST pointer into another table".into());
        }
    }
    let full = pg_sys::pg_detoast_datum_packed(p.cast());
    Ok(pgrx::varlena::varlena_to_byte_slice(full).to_vec())
}

/// The stored fields the reader needs: id, event, shape, rows, events.
type StoredForRead = (
    i64,
    String,
    Option<String>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

/// The record at `tid` in pgauth.audit_records, if it is visible to the query's snapshot and
/// its id is `record_id`.
///
/// # Safety
/// In a transaction with an active snapshot. `tid` may be anything: a block beyond the
/// relation is refused before the fetch, and heap_fetch checks the offset and visibility.
unsafe fn read_record(
    tid: pg_sys::ItemPointerData,
    record_id: i64,
) -> Result<Option<StoredForRead>, String> {
    let rel = pg_sys::table_open(
        pgauth_relid("audit_records"),
        pg_sys::AccessShareLock as pg_sys::LOCKMODE,
    );
    let blocks = pg_sys::RelationGetNumberOfBlocksInFork(rel, pg_sys::ForkNumber::MAIN_FORKNUM);
    let block = ((tid.ip_blkid.bi_hi as u32) << 16) | tid.ip_blkid.bi_lo as u32;
    let mut tuple = pg_sys::HeapTupleData {
        t_len: 0,
        t_self: tid,
        t_tableOid: pg_sys::InvalidOid,
        t_data: std::ptr::null_mut(),
    };
    let mut buffer: pg_sys::Buffer = 0;
    if block >= blocks
        || !pg_sys::heap_fetch(
            rel,
            pg_sys::GetActiveSnapshot(),
            &mut tuple,
            &mut buffer,
            false,
        )
    {
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        return Ok(None);
    }
    let desc = (*rel).rd_att;
    let toast = (*(*rel).rd_rel).reltoastrelid;
    let natts = (*desc).natts as usize;
    let mut values = vec![pg_sys::Datum::from(0); natts];
    let mut nulls = vec![true; natts];
    pg_sys::heap_deform_tuple(&mut tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
    let field = |name: &CStr| -> Result<Option<pg_sys::Datum>, String> {
        for i in 0..natts {
            let att = crate::pg::compat::tuple_desc_attr(desc, i);
            if !(*att).attisdropped && CStr::from_ptr((*att).attname.data.as_ptr()) == name {
                return Ok((!nulls[i]).then_some(values[i]));
            }
        }
        Err(format!(
            "pgauth.audit_records has no column {}",
            name.to_string_lossy()
        ))
    };
    let read = (|| {
        let id = field(c"id")?.map_or(0, |d| d.value() as i64);
        if id != record_id {
            return Ok(None);
        }
        let text = |d: Option<pg_sys::Datum>| -> Result<Option<Vec<u8>>, String> {
            d.map(|d| own_varlena(d, toast)).transpose()
        };
        let event = text(field(c"event")?)?.unwrap_or_default();
        let shape = text(field(c"shape")?)?;
        let rows = text(field(c"rows")?)?;
        let events = text(field(c"events")?)?;
        let utf8 = |b: Vec<u8>| {
            String::from_utf8(b).map_err(|_| "malformed audit record: text that is not UTF-8")
        };
        Ok(Some((
            id,
            utf8(event)?,
            shape.map(utf8).transpose()?,
            rows,
            events,
        )))
    })();
    pg_sys::ReleaseBuffer(buffer);
    pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
    read
}

/// The events of the record at `tid`, read in an internal subtransaction: any error (checked
/// bytes refused, or one raised by PostgreSQL while reading) becomes `Err(message)`.
fn record_events(tid: pg_sys::ItemPointerData, record_id: i64) -> Result<Vec<EventRow>, String> {
    in_subtransaction(|| {
        // SAFETY: reads the row at `tid` of pgauth.audit_records (any tid: `read_record` checks
        // it against the relation's size and the snapshot), and decodes its bytes, each value
        // checked before it is read.
        unsafe {
            let Some((id, event, shape, rows, events)) = read_record(tid, record_id)? else {
                return Ok(Vec::new());
            };
            let mut out = match events {
                Some(e) => decode_events(&e)?,
                None => Vec::new(),
            };
            if let Some(rows) = rows {
                let shape = shape.ok_or("malformed audit record: rows without a shape")?;
                out.extend(decode_rows(&shape, &rows, id, event == "update")?);
            }
            Ok(out)
        }
    })
}

/// `pgauth.audit_record_events(record tid, record_id bigint)`: the events of the audit record
/// stored at `record` (its ctid) whose id is `record_id`, as (id, row_key, old_values,
/// new_values); no rows when there is none. Only for roles that may read the log (SELECT on
/// pgauth.audit_log or pgauth.audit_records, else 42501). A record that cannot be read gives
/// one row: its id, and new_values {"pgauth_audit_error": why}.
///
/// # Safety
/// Called by PostgreSQL with the two arguments sql/audit.sql declares (tid, bigint), as a
/// set-returning function in materialize mode (`InitMaterializedSRF` checks it).
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn pgauth_audit_record_events(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let user = caller();
    let may_read = ["audit_log", "audit_records"].iter().any(|t| {
        pg_sys::pg_class_aclcheck(pgauth_relid(t), user, pg_sys::ACL_SELECT as pg_sys::AclMode)
            == pg_sys::AclResult::ACLCHECK_OK
    });
    if !may_read {
        AuthError::AuditPermissionDenied(
            "reading audit records requires SELECT on pgauth.audit_log".into(),
        )
        .raise();
    }
    let (Some(tid), Some(record_id)) = (arg(fcinfo, 0), arg(fcinfo, 1)) else {
        return pg_sys::Datum::from(0);
    };
    let tid = *tid.cast_mut_ptr::<pg_sys::ItemPointerData>();
    let record_id = record_id.value() as i64;
    pg_sys::InitMaterializedSRF(fcinfo, 0);
    let rsinfo = (*fcinfo).resultinfo.cast::<pg_sys::ReturnSetInfo>();
    let rows = record_events(tid, record_id).unwrap_or_else(|why| {
        let marker = serde_json::json!({ READ_ERROR_KEY: why }).to_string();
        let datum = jsonb_datum(marker.into_bytes()).ok();
        vec![(record_id, [None, None, datum])]
    });
    for (id, parts) in rows {
        let mut values = [
            pg_sys::Datum::from(id),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        ];
        let mut nulls = [false; 4];
        for (n, part) in parts.iter().enumerate() {
            match part {
                Some(d) => values[n + 1] = *d,
                None => nulls[n + 1] = true,
            }
        }
        pg_sys::tuplestore_putvalues(
            (*rsinfo).setResult,
            (*rsinfo).setDesc,
            values.as_mut_ptr(),
            nulls.as_mut_ptr(),
        );
    }
    pg_sys::Datum::from(0)
}
