//! Security events and direct writes to pgauth's own tables, both written as one-event
//! records by `record::write_record`:
//!
//! - `pgauth.record_event(event, subject, details)`: the one function every capability reports
//!   security events through; only pgauth's own code (running as the owner of schema pgauth)
//!   may call it;
//! - `pgauth.audit_direct_change()`: the row trigger on pgauth's state tables that records a
//!   write made by anyone but pgauth's code (`direct.rs` turns the row into the event), with
//!   `pgauth.audit_direct_write()` as its cheap `WHEN` condition.
//!
//! These are C functions working on the call's arguments and the trigger's tuples: that is the
//! `unsafe` of this file.

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::capture::primary_key_attnums;
use super::raw::{arg, cstr_owned, finfo_v1, jsonb_text, qualified_name, varlena_bytes};
use super::record::{new_record, reserve_ids, statement_facts, write_record};
use serde_json::json;

use crate::error::{AuthError, AuthResult, OrRaise};
use crate::pg::roles::{as_owner, as_owner_unpinned, caller, pgauth_owner};

// ---------------------------------------------------------------------------------------------
// pgauth.record_event(event text, subject text, details jsonb DEFAULT '{}'): the one function
// every capability reports security events through.

finfo_v1!(pg_finfo_pgauth_record_event);

/// `pgauth.record_event(event, subject, details)`.
///
/// # Safety
/// Called by PostgreSQL with the three arguments sql/audit.sql declares (text, text, jsonb).
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn pgauth_record_event(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    require_pgauth_code("pgauth.record_event()").or_raise();
    let Some(event) = arg(fcinfo, 0) else {
        AuthError::InvalidRequest("audit event name must not be NULL".into()).raise()
    };
    let event = String::from_utf8_lossy(varlena_bytes(event)).into_owned();
    let subject = arg(fcinfo, 1).map(|d| String::from_utf8_lossy(varlena_bytes(d)).into_owned());
    let details = match arg(fcinfo, 2) {
        Some(d) => String::from_utf8_lossy(jsonb_text(d)).into_owned(),
        None => "{}".to_string(),
    };
    let key = match &subject {
        Some(s) => json!({"subject": s}).to_string(),
        None => json!({"subject": null}).to_string(),
    };
    // Records are written without the executor: refuse a read-only transaction by name here
    // (the id reservation would refuse too, but as "nextval()"). A capture runs in a statement
    // that already passed the executor's check.
    pg_sys::PreventCommandIfReadOnly(c"pgauth.record_event()".as_ptr());
    as_owner(|| {
        let facts = statement_facts();
        let id = reserve_ids(1);
        let mut record = new_record(&facts, &event, None);
        record.id = id;
        record.last_id = id;
        record.event_count = 1;
        record.events = Some(format!("[[{id}, {key}, null, {details}]]"));
        write_record(&record, None);
    });
    pg_sys::Datum::from(0)
}

/// Security events are pgauth's own: its code runs as the owner of schema pgauth (Rust inside
/// `as_owner`, SQL functions as SECURITY DEFINER), and only then may one be written. Neither
/// pgauth_admin nor another superuser can forge a `login_succeeded`.
fn require_pgauth_code(what: &str) -> AuthResult<()> {
    if caller() == pgauth_owner()? {
        Ok(())
    } else {
        Err(AuthError::AuditEventNotPgauths(format!(
            "{what} is called by pgauth's own code only"
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// Direct writes to pgauth's state tables (see `direct.rs`): a row trigger on each table,
// `WHEN (pgauth.audit_direct_write())`, so that pgauth's own writes (as the owner) cost one
// cheap function call per row and queue nothing.

finfo_v1!(pg_finfo_pgauth_audit_direct_write);
finfo_v1!(pg_finfo_pgauth_audit_direct_change);

/// `pgauth.audit_direct_write() → boolean`: true when the current user is not the owner of
/// schema pgauth, i.e. the write being made is not pgauth's own code's.
///
/// # Safety
/// Called by PostgreSQL (it reads no argument).
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn pgauth_audit_direct_write(
    _fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    pg_sys::Datum::from(caller() != pgauth_owner().or_raise())
}

/// A row of a pgauth table as a JSON object (`row_to_json`: built-in types only).
///
/// # Safety
/// `tuple` is a valid heap tuple described by `desc` (the trigger's).
unsafe fn row_object(
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
) -> serde_json::Map<String, serde_json::Value> {
    let datum = pg_sys::heap_copy_tuple_as_datum(tuple, desc);
    let json = pgrx::fcinfo::direct_function_call_as_datum(pg_sys::row_to_json, &[Some(datum)])
        .map(|d| varlena_bytes(d).to_vec())
        .unwrap_or_default();
    match serde_json::from_slice(&json) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => AuthError::Internal("a pgauth row did not convert to a JSON object".into()).raise(),
    }
}

/// `pgauth.audit_direct_change()`: AFTER INSERT/UPDATE/DELETE FOR EACH ROW, or AFTER TRUNCATE
/// FOR EACH STATEMENT, on pgauth's state tables. Arguments: the secret columns, never copied.
/// Writes one record per row: event insert/update/delete/truncate, table_name `pgauth.<table>`,
/// row_key the primary key, old/new values as for audited tables (UPDATE: changed columns).
///
/// # Safety
/// Called by PostgreSQL: the context is checked to be a trigger's before it is read, and the
/// relation and tuples the trigger manager hands over stay valid for the call.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn pgauth_audit_direct_change(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let context = (*fcinfo).context;
    if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_TriggerData {
        AuthError::Internal("pgauth.audit_direct_change() must be called as a trigger".into())
            .raise();
    }
    let trigdata = context.cast::<pg_sys::TriggerData>();
    let tg_event = (*trigdata).tg_event;
    let op = tg_event & pg_sys::TRIGGER_EVENT_OPMASK;
    let row_level = tg_event & pg_sys::TRIGGER_EVENT_ROW != 0;
    if tg_event & pg_sys::TRIGGER_EVENT_TIMINGMASK != pg_sys::TRIGGER_EVENT_AFTER
        || row_level == (op == pg_sys::TRIGGER_EVENT_TRUNCATE)
    {
        AuthError::Internal(
            "pgauth.audit_direct_change() must be an AFTER row trigger (AFTER statement for TRUNCATE)"
                .into(),
        )
        .raise();
    }
    let rel = (*trigdata).tg_relation;
    let desc = (*rel).rd_att;
    let trigger = (*trigdata).tg_trigger;
    let secret: Vec<String> = (0..(*trigger).tgnargs as usize)
        .map(|i| cstr_owned(*(*trigger).tgargs.add(i)))
        .collect();
    let table = qualified_name(rel);
    let (event, parts) = if op == pg_sys::TRIGGER_EVENT_TRUNCATE {
        let null = serde_json::Value::Null;
        ("truncate", (null.clone(), null.clone(), null))
    } else {
        let key: Vec<String> = primary_key_attnums(crate::pg::compat::primary_key_index(rel))
            .into_iter()
            .filter(|&n| n > 0)
            .map(|n| {
                let att = crate::pg::compat::tuple_desc_attr(desc, n as usize - 1);
                cstr_owned((*att).attname.data.as_ptr())
            })
            .collect();
        let (old, new, event) = match op {
            pg_sys::TRIGGER_EVENT_INSERT => (
                None,
                Some(row_object((*trigdata).tg_trigtuple, desc)),
                "insert",
            ),
            pg_sys::TRIGGER_EVENT_UPDATE => (
                Some(row_object((*trigdata).tg_trigtuple, desc)),
                Some(row_object((*trigdata).tg_newtuple, desc)),
                "update",
            ),
            _ => (
                Some(row_object((*trigdata).tg_trigtuple, desc)),
                None,
                "delete",
            ),
        };
        (
            event,
            super::direct::direct_change_event(&key, &secret, old.as_ref(), new.as_ref()),
        )
    };
    as_owner_unpinned(|| {
        let facts = statement_facts();
        let id = reserve_ids(1);
        let mut record = new_record(&facts, event, Some(table));
        record.id = id;
        record.last_id = id;
        record.event_count = 1;
        record.events = Some(serde_json::json!([[id, parts.0, parts.1, parts.2]]).to_string());
        write_record(&record, None);
    });
    pg_sys::Datum::from(0)
}
