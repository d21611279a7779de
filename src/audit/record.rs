//! Record writing: every row of `pgauth.audit_records` is written here, by `write_record`,
//! with a direct heap and index insert (`insert_record_tuple`) instead of an executed INSERT —
//! an audited statement pays for one `heap_insert` and the index entries, not for planning and
//! running a query. Also here: the statement's facts a record carries (`statement_facts`), the
//! reservation of contiguous event ids (`reserve_ids`), the C functions
//! `pgauth.audit_record_digest()` and `pgauth.audit_db_user()`, and the append-only guard on
//! the audit tables (`pgauth.audit_refuse_change()`).
//!
//! # What the direct insert skips (SAFETY of `insert_record_tuple`)
//!
//! `simple_heap_insert` + `ExecInsertIndexTuples` is what the executor's INSERT does after all
//! its checks; compared with `INSERT INTO pgauth.audit_records …` it skips:
//!
//! - **triggers** of every kind (BEFORE/AFTER/INSTEAD OF, row and statement, transition tables,
//!   constraint triggers): none fire;
//! - **rules**: the query rewriter never sees the insert;
//! - **row-level security**: no policy (and no `WITH CHECK`) is applied, whatever
//!   `relrowsecurity`/`relforcerowsecurity` say; nor any privilege check (it runs as the owner);
//! - **constraints**: no CHECK constraint, no domain constraint, no foreign key (those are
//!   triggers), no partition constraint. NOT NULL only in part: a NOT NULL column pgauth does
//!   not know refuses the insert, but the values pgauth gives are not checked (it gives every
//!   NOT NULL column of today's table a value). Unique and exclusion constraints that are
//!   checked immediately are enforced (by the index insertion, as for INSERT); deferred ones
//!   are never re-checked (the recheck list `ExecInsertIndexTuples` returns is dropped). The
//!   table has neither: its indexes are two BRIN indexes and one plain btree;
//! - **defaults, identity and generated columns**: a column not filled is NULL, never its
//!   default or generated value;
//! - **partitions and inheritance**: no tuple routing (a partitioned table has no heap to
//!   insert into) and no partition constraint; inheritance children are never written, yet
//!   `SELECT … FROM pgauth.audit_records` (sealer, verifier, the view) would read their rows
//!   too, while `read::read_record` reads only this table's heap by tid.
//!
//! It does not skip: TOAST (`heap_insert` toasts `rows` as the table's storage says), WAL
//! (and so physical and logical replication: a publication that includes the table decodes
//! the row like any insert), the table's statistics, or the maintenance of its indexes.
//!
//! The regress test `pg_regress/sql/audit_heap_insert.sql` pins every catalog fact this relies on
//! (no trigger but the append-only guard, no rule, no policy, no RLS, no constraint, no
//! default, not partitioned, no parent or child); a change to any of them fails it, and this
//! list must be read again before its expected output is updated.

use std::ffi::{CStr, CString};

use pgrx::prelude::*;
use pgrx::{pg_sys, IntoDatum};

use super::raw::{
    arg, cstr_owned, finfo_v1, inet_text, pgauth_lock_tag, pgauth_relid, trigger_data,
    varlena_bytes, ID_LOCK_KEY,
};
use super::state::STATE;
use super::{record_digest, AuditRecord, RecordFields};
use crate::error::AuthError;

finfo_v1!(pg_finfo_pgauth_audit_record_digest);
finfo_v1!(pg_finfo_pgauth_audit_refuse_change);
finfo_v1!(pg_finfo_pgauth_audit_db_user);

/// Reserve `n` consecutive event ids; returns the first. Every reservation holds a short lock
/// (not to the end of the transaction) so that ranges never interleave.
///
/// # Safety
/// Called in a transaction that may write (nextval refuses otherwise), as the owner of
/// schema pgauth.
pub(super) unsafe fn reserve_ids(n: i64) -> i64 {
    let seq = pgauth_relid("audit_event_id_seq");
    let tag = pgauth_lock_tag(ID_LOCK_KEY);
    let lockmode = pg_sys::ExclusiveLock as pg_sys::LOCKMODE;
    pg_sys::LockAcquire(&tag, lockmode, false, false);
    let first = pgrx::fcinfo::direct_function_call_as_datum(
        pg_sys::nextval_oid,
        &[Some(pg_sys::Datum::from(seq))],
    )
    .map_or(0, |d| d.value() as i64);
    if n > 1 {
        pgrx::fcinfo::direct_function_call_as_datum(
            pg_sys::setval_oid,
            &[
                Some(pg_sys::Datum::from(seq)),
                Some(pg_sys::Datum::from(first + n - 1)),
            ],
        );
    }
    pg_sys::LockRelease(&tag, lockmode, false);
    first
}

/// The pgauth user bound to the session, as uuid bytes: what `auth_current_user_id()` returns
/// (and `pgauth.audit_app_user()`, which sql/audit.sql defines as a call of it).
fn app_user() -> Option<[u8; 16]> {
    crate::session::api::current_user_id()
}

/// The statement-level facts of an audit record.
pub(super) struct Facts {
    occurred_at: i64,
    txid: u64,
    db_user: String,
    app_user: Option<[u8; 16]>,
    client_addr: Option<String>,
}

/// Refuses (25006) in a read-only transaction, as the executor would refuse an INSERT: the
/// record is written past the executor, and a hot standby cannot assign a transaction id.
///
/// # Safety
/// Called in a transaction (it assigns the top transaction an id).
pub(super) unsafe fn statement_facts() -> Facts {
    if let Err(e) = crate::pg::require_writable() {
        e.raise();
    }
    let addr = pgrx::fcinfo::direct_function_call_as_datum(pg_sys::inet_client_addr, &[]);
    Facts {
        occurred_at: pg_sys::GetCurrentStatementStartTimestamp(),
        txid: pg_sys::GetTopFullTransactionId().value,
        db_user: cstr_owned(pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), false)),
        app_user: app_user(),
        client_addr: addr.map(|d| String::from_utf8_lossy(inet_text(d)).into_owned()),
    }
}

/// A record with the statement's facts and no events yet.
pub(super) fn new_record(facts: &Facts, event: &str, table: Option<String>) -> AuditRecord {
    AuditRecord {
        occurred_at: facts.occurred_at,
        txid: facts.txid,
        db_user: Some(facts.db_user.clone()),
        app_user_id: facts.app_user,
        client_addr: facts.client_addr.clone(),
        event: event.to_string(),
        table_name: table,
        ..AuditRecord::default()
    }
}

/// Insert one record (its digest computed here) and add it to this transaction's digest.
/// `prefix`: the hash state after the record's table name and shape, when known.
///
/// # Safety
/// As `insert_record_tuple`: in a transaction that may write, as the owner of schema pgauth.
pub(super) unsafe fn write_record(record: &AuditRecord, prefix: Option<&sha3::Sha3_512>) {
    let digest = match prefix {
        Some(p) => super::record_digest_after(p, &record.fields()),
        None => record.digest(),
    };
    let zero = pg_sys::Datum::from(0);
    let text = |v: Option<&str>| v.and_then(|t| t.into_datum());
    let uuid = record
        .app_user_id
        .map(|u| pgrx::Uuid::from_bytes(u).into_datum().unwrap_or(zero));
    let inet = record.client_addr.as_deref().and_then(|a| {
        let c = CString::new(a).ok()?;
        pgrx::fcinfo::direct_function_call_as_datum(
            pg_sys::inet_in,
            &[Some(pg_sys::Datum::from(c.as_ptr()))],
        )
    });
    // By column name, so the layout of the table is not assumed.
    let fields: [(&CStr, Option<pg_sys::Datum>); 14] = [
        (c"id", Some(pg_sys::Datum::from(record.id))),
        (c"last_id", Some(pg_sys::Datum::from(record.last_id))),
        (
            c"event_count",
            Some(pg_sys::Datum::from(record.event_count as i32)),
        ),
        (
            c"occurred_at",
            Some(pg_sys::Datum::from(record.occurred_at)),
        ),
        (c"txid", Some(pg_sys::Datum::from(record.txid))),
        (c"db_user", text(record.db_user.as_deref())),
        (c"app_user_id", uuid),
        (c"client_addr", inet),
        (c"event", text(Some(&record.event))),
        (c"table_name", text(record.table_name.as_deref())),
        (c"shape", text(record.shape.as_deref())),
        (c"rows", record.rows.as_deref().and_then(|r| r.into_datum())),
        (c"events", text(record.events.as_deref())),
        (c"record_digest", digest.as_slice().into_datum()),
    ];
    insert_record_tuple(&fields);
    STATE.with(|s| s.borrow_mut().wrote = true);
}

/// Insert one row into pgauth.audit_records directly (heap and indexes, as an INSERT would,
/// without planning one). Every column is given by name; a column pgauth does not know must
/// be nullable and is left NULL.
///
/// # Safety
/// In a transaction that may write, as the owner of schema pgauth; every datum is of its
/// column's type (`write_record` makes them). What this skips compared with an INSERT, and
/// why that is sound for this table, is the module comment above; the regress test
/// `audit_heap_insert` fails when the table no longer is as it describes.
unsafe fn insert_record_tuple(fields: &[(&CStr, Option<pg_sys::Datum>)]) {
    let lockmode = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
    let rel = pg_sys::table_open(pgauth_relid("audit_records"), lockmode);
    let desc = (*rel).rd_att;
    let natts = (*desc).natts as usize;
    let mut values = vec![pg_sys::Datum::from(0); natts];
    let mut nulls = vec![true; natts];
    for i in 0..natts {
        let att = crate::pg::compat::tuple_desc_attr(desc, i);
        if (*att).attisdropped {
            continue;
        }
        let name = CStr::from_ptr((*att).attname.data.as_ptr());
        match fields.iter().find(|(n, _)| *n == name) {
            Some((_, Some(v))) => {
                values[i] = *v;
                nulls[i] = false;
            }
            Some((_, None)) => {}
            None if (*att).attnotnull => AuthError::Internal(format!(
                "pgauth.audit_records has a column {} that pgauth does not fill",
                name.to_string_lossy()
            ))
            .raise(),
            None => {}
        }
    }
    let tuple = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
    let estate = pg_sys::CreateExecutorState();
    let rri = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>())
        .cast::<pg_sys::ResultRelInfo>();
    (*rri).type_ = pg_sys::NodeTag::T_ResultRelInfo;
    pg_sys::InitResultRelInfo(rri, rel, 1, std::ptr::null_mut(), 0);
    pg_sys::ExecOpenIndices(rri, false);
    let slot = pg_sys::ExecInitExtraTupleSlot(estate, desc, &pg_sys::TTSOpsHeapTuple);
    pg_sys::simple_heap_insert(rel, tuple);
    pg_sys::ExecStoreHeapTuple(tuple, slot, false);
    crate::pg::compat::insert_index_tuples(rri, slot, estate);
    pg_sys::ExecCloseIndices(rri);
    pg_sys::ExecResetTupleTable((*estate).es_tupleTable, false);
    pg_sys::FreeExecutorState(estate);
    pg_sys::heap_freetuple(tuple);
    pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
}

// ---------------------------------------------------------------------------------------------
// The record digest: pgauth.audit_record_digest(bigint, bigint, integer, timestamptz, xid8, text,
// uuid, inet, text, text, text) → bytea

/// `pgauth.audit_record_digest(…)`: only computes (for verifiers outside pgauth).
///
/// # Safety
/// Called by PostgreSQL with the 13 arguments sql/audit.sql declares, of those types.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn pgauth_audit_record_digest(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let (Some(id), Some(last_id), Some(count)) = (arg(fcinfo, 0), arg(fcinfo, 1), arg(fcinfo, 2))
    else {
        AuthError::InvalidRequest("audit record ids and count must not be NULL".into()).raise()
    };
    let text = |n| arg(fcinfo, n).map(|d| varlena_bytes(d));
    let fields = RecordFields {
        id: id.value() as i64,
        last_id: last_id.value() as i64,
        event_count: i64::from(count.value() as i32),
        occurred_at: arg(fcinfo, 3).map_or(0, |d| d.value() as i64),
        txid: arg(fcinfo, 4).map_or(0, |d| d.value() as u64),
        db_user: text(5),
        app_user_id: arg(fcinfo, 6)
            .map(|d| std::slice::from_raw_parts(d.cast_mut_ptr::<u8>().cast_const(), 16)),
        client_addr: arg(fcinfo, 7).map(|d| inet_text(d)),
        event: text(8),
        table_name: text(9),
        shape: text(10),
        rows: text(11),
        events: text(12),
    };
    // Only computes: records are chained when pgauth writes them (write_record), not when
    // someone computes a digest.
    let digest = record_digest(&fields);
    pgrx::rust_byte_slice_to_bytea(&digest)
        .into_datum()
        .unwrap_or(pg_sys::Datum::from(0))
}

/// `pgauth.audit_db_user()`: the role the session acts as — the login role, or the one chosen
/// with SET ROLE — unchanged inside SECURITY DEFINER functions (and inside pgauth's own).
///
/// # Safety
/// Called by PostgreSQL, in a transaction (a catalog lookup).
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn pgauth_audit_db_user(
    _fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let name = cstr_owned(pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), false));
    name.into_datum().unwrap_or(pg_sys::Datum::from(0))
}

// ---------------------------------------------------------------------------------------------
// Append-only guard: BEFORE UPDATE OR DELETE OR TRUNCATE ... FOR EACH STATEMENT on the tables,
// INSTEAD OF INSERT OR UPDATE OR DELETE ... FOR EACH ROW on the view pgauth.audit_log

/// `pgauth.audit_refuse_change()`: refuses every change but the DELETE of auth_audit_purge.
///
/// # Safety
/// Called by PostgreSQL's trigger manager (`trigger_data` refuses any other call).
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn pgauth_audit_refuse_change(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let trigdata = trigger_data(fcinfo);
    let event = (*trigdata).tg_event & pg_sys::TRIGGER_EVENT_OPMASK;
    let op = match event {
        pg_sys::TRIGGER_EVENT_UPDATE => "UPDATE",
        pg_sys::TRIGGER_EVENT_DELETE => "DELETE",
        pg_sys::TRIGGER_EVENT_TRUNCATE => "TRUNCATE",
        _ => "INSERT",
    };
    let purging = STATE.with(|s| s.borrow().purging);
    if !(purging && event == pg_sys::TRIGGER_EVENT_DELETE) {
        let rel = (*trigdata).tg_relation;
        let name = cstr_owned((*(*rel).rd_rel).relname.data.as_ptr());
        let msg = if op == "INSERT" {
            format!("pgauth.{name} is written only by pgauth: INSERT is not allowed")
        } else {
            format!("pgauth.{name} is append-only: {op} is not allowed")
        };
        AuthError::AuditAppendOnly(msg).raise();
    }
    pg_sys::Datum::from(0)
}
