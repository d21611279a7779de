//! SQL layer of the audit log: the statement-level capture trigger, the record writer, the
//! sealer that appends the hash chain, verification, decoding for the view pgauth.audit_log, and
//! enabling/disabling audit on a table.
//!
//! A statement's changed rows are read straight from the transition tables, copied into tuple
//! bytes of the audited columns (`frames`), hashed once, and written as one record per 10,000
//! events (or 64 MB) into pgauth.audit_records with a direct heap and index insert. Commits
//! write nothing else; the sealer chains finished transactions later (see `seal`). Work on
//! pgauth's objects runs as the owner of schema pgauth (`as_owner`, or `as_owner_unpinned` for
//! C-level work that runs no SQL), while the functions themselves run as the caller.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::hash::{Hash, Hasher};

use pgrx::prelude::*;
use pgrx::{pg_sys, FromDatum, IntoDatum, PgRelation};

use super::{
    chain_digest, record_digest, AuditDigest, AuditRecord, ChainEntry, Head, RecordFields,
    SealedTxn, Verdict, Verifier, GENESIS, RECORD_EVENTS,
};
use crate::backend::{
    as_owner, as_owner_unpinned, caller, json_string, pgauth_owner, record_event,
};
use crate::error::{AuthError, AuthResult, OrRaise};

/// Key of the transaction-level lock held by the sealer (per database): "pgauth" in ASCII
/// followed by 0x0001, in a tag SQL cannot build (`pgauth_lock_tag`).
pub const CHAIN_LOCK_KEY: i64 = 0x7067_6175_7468_0001;

/// A record closes when its rows reach this many bytes (statements with large values).
const RECORD_BYTES: usize = 64 << 20;

/// A commit-time seal reads at most this many records.
const SEAL_BATCH: i64 = 10_000;

/// Records are read back in batches of this many.
const FETCH_BATCH: i64 = 1_000;

#[derive(Default)]
struct AuditState {
    /// This transaction wrote audit records: try to seal at commit (every
    /// `pgauth.audit_seal_interval`).
    wrote: bool,
    /// When this backend last tried to seal (µs since 2000-01-01).
    last_seal_attempt: i64,
    /// Stored shapes by trigger and table shape.
    shapes: HashMap<(pg_sys::Oid, u64), std::rc::Rc<StoredShape>>,
    seal_plans: Option<SealPlans>,
    /// Set only while auth_audit_purge deletes archived records.
    purging: bool,
}

#[derive(Clone, Copy)]
struct SavedPlan(pg_sys::SPIPlanPtr);

#[derive(Clone, Copy)]
struct SealPlans {
    /// The last chain entry, or the last checkpoint when the chain is empty (after a purge of
    /// everything the chain goes on from there): (position, chain_digest, horizon).
    head: SavedPlan,
    /// The records of the transactions in [$1, $2), by transaction and id.
    records: SavedPlan,
    append: SavedPlan,
}

thread_local! {
    static STATE: RefCell<AuditState> = RefCell::new(AuditState::default());
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn spi_error(what: &str, code: i32) -> AuthError {
    AuthError::Internal(format!("audit: {what} failed (SPI code {code})"))
}

/// A raw SPI connection; SPI_finish on drop. (An ERROR unwinds past it; the transaction abort
/// cleans SPI up.)
struct RawSpi;

impl RawSpi {
    fn connect() -> AuthResult<RawSpi> {
        let rc = unsafe { pg_sys::SPI_connect() };
        if rc != pg_sys::SPI_OK_CONNECT as i32 {
            return Err(spi_error("SPI_connect", rc));
        }
        Ok(RawSpi)
    }
}

impl Drop for RawSpi {
    fn drop(&mut self) {
        unsafe {
            pg_sys::SPI_finish();
        }
    }
}

/// Prepare and keep a plan for the life of the backend.
unsafe fn prepare_kept(sql: &str, argtypes: &[pg_sys::Oid]) -> AuthResult<SavedPlan> {
    let c = CString::new(sql).map_err(|_| AuthError::Internal("NUL in audit SQL".into()))?;
    let plan = pg_sys::SPI_prepare(
        c.as_ptr(),
        argtypes.len() as i32,
        argtypes.as_ptr().cast_mut(),
    );
    if plan.is_null() {
        return Err(spi_error("SPI_prepare", pg_sys::SPI_result));
    }
    let rc = pg_sys::SPI_keepplan(plan);
    if rc != 0 {
        return Err(spi_error("SPI_keepplan", rc));
    }
    Ok(SavedPlan(plan))
}

unsafe fn column(
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
    n: i32,
) -> Option<pg_sys::Datum> {
    let mut isnull = false;
    let d = pg_sys::SPI_getbinval(tuple, desc, n, &mut isnull);
    (!isnull).then_some(d)
}

unsafe fn col_i64(t: pg_sys::HeapTuple, d: pg_sys::TupleDesc, n: i32) -> Option<i64> {
    column(t, d, n).map(|v| v.value() as i64)
}

unsafe fn col_text(t: pg_sys::HeapTuple, d: pg_sys::TupleDesc, n: i32) -> Option<String> {
    column(t, d, n).and_then(|v| String::from_datum(v, false))
}

unsafe fn col_bytes(t: pg_sys::HeapTuple, d: pg_sys::TupleDesc, n: i32) -> Option<Vec<u8>> {
    column(t, d, n).and_then(|v| Vec::<u8>::from_datum(v, false))
}

/// Run `f` over every row of a saved plan, reading through a cursor under the active snapshot.
unsafe fn for_each_row(
    plan: SavedPlan,
    args: &mut [pg_sys::Datum],
    mut f: impl FnMut(pg_sys::HeapTuple, pg_sys::TupleDesc),
) -> AuthResult<()> {
    let nulls = vec![b' ' as std::ffi::c_char; args.len()];
    let portal = pg_sys::SPI_cursor_open(
        std::ptr::null(),
        plan.0,
        args.as_mut_ptr(),
        nulls.as_ptr(),
        true,
    );
    if portal.is_null() {
        return Err(spi_error("SPI_cursor_open", pg_sys::SPI_result));
    }
    // Whatever reading a row allocates (detoasted values: a record's rows can be 64 MB) is
    // freed after the row.
    let batch_cx = pg_sys::AllocSetContextCreateExtended(
        pg_sys::CurrentMemoryContext,
        c"pgauth audit batch".as_ptr(),
        pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
        pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
        pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
    );
    loop {
        pg_sys::SPI_cursor_fetch(portal, true, FETCH_BATCH as std::ffi::c_long);
        let n = pg_sys::SPI_processed;
        if n == 0 || pg_sys::SPI_tuptable.is_null() {
            break;
        }
        let table = pg_sys::SPI_tuptable;
        let previous = pg_sys::MemoryContextSwitchTo(batch_cx);
        for i in 0..n as usize {
            f(*(*table).vals.add(i), (*table).tupdesc);
            pg_sys::MemoryContextReset(batch_cx);
        }
        pg_sys::MemoryContextSwitchTo(previous);
        pg_sys::SPI_freetuptable(table);
    }
    pg_sys::MemoryContextDelete(batch_cx);
    pg_sys::SPI_cursor_close(portal);
    Ok(())
}

fn top_txid() -> Option<u64> {
    let full = unsafe { pg_sys::GetTopFullTransactionIdIfAny() };
    (full.value != 0).then_some(full.value)
}

fn role_oid(name: &CStr) -> Option<pg_sys::Oid> {
    let oid = unsafe { pg_sys::get_role_oid(name.as_ptr(), true) };
    (oid != pg_sys::Oid::INVALID).then_some(oid)
}

fn is_audit_admin(role: pg_sys::Oid) -> bool {
    unsafe {
        pg_sys::superuser_arg(role)
            || role_oid(c"pgauth_admin").is_some_and(|admin| pg_sys::has_privs_of_role(role, admin))
    }
}

fn require_audit_admin(action: &str) -> AuthResult<()> {
    if is_audit_admin(caller()) {
        Ok(())
    } else {
        Err(AuthError::AuditPermissionDenied(format!(
            "{action} requires membership in pgauth_admin"
        )))
    }
}

unsafe fn cstr_owned(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

fn quote_ident(name: &str) -> String {
    match CString::new(name) {
        Ok(c) => unsafe { cstr_owned(pg_sys::quote_identifier(c.as_ptr())) },
        Err(_) => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

fn quote_literal(value: &str) -> String {
    // standard_conforming_strings is on in every supported PostgreSQL unless turned off; E''
    // quoting is correct either way.
    let mut out = String::from("E'");
    for ch in value.chars() {
        match ch {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

// ---------------------------------------------------------------------------------------------
// The record digest: pgauth.audit_record_digest(bigint, bigint, integer, timestamptz, xid8, text,
// uuid, inet, text, text, text) → bytea

macro_rules! finfo_v1 {
    ($finfo:ident) => {
        #[no_mangle]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}

finfo_v1!(pg_finfo_pgauth_audit_record_digest);
finfo_v1!(pg_finfo_pgauth_audit_capture);
finfo_v1!(pg_finfo_pgauth_audit_refuse_change);
finfo_v1!(pg_finfo_pgauth_audit_db_user);
finfo_v1!(pg_finfo_pgauth_audit_record_events);

unsafe fn arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Option<pg_sys::Datum> {
    (!pgrx::fcinfo::pg_arg_is_null(fcinfo, n)).then(|| pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, n))
}

unsafe fn varlena_bytes<'a>(d: pg_sys::Datum) -> &'a [u8] {
    let v = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
    pgrx::varlena::varlena_to_byte_slice(v)
}

unsafe fn inet_text<'a>(d: pg_sys::Datum) -> &'a [u8] {
    match pgrx::fcinfo::direct_function_call_as_datum(pg_sys::inet_out, &[Some(d)]) {
        Some(out) => CStr::from_ptr(out.cast_mut_ptr::<std::ffi::c_char>()).to_bytes(),
        None => b"",
    }
}

/// jsonb's text form, as `value::text` gives it.
unsafe fn jsonb_text<'a>(d: pg_sys::Datum) -> &'a [u8] {
    let jb = pg_sys::pg_detoast_datum(d.cast_mut_ptr()).cast::<pg_sys::Jsonb>();
    let len = pgrx::varlena::varsize_any(jb.cast()) as i32;
    let out = pg_sys::JsonbToCString(std::ptr::null_mut(), &mut (*jb).root, len);
    CStr::from_ptr(out).to_bytes()
}

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

unsafe fn trigger_data(fcinfo: pg_sys::FunctionCallInfo) -> *mut pg_sys::TriggerData {
    let ctx = (*fcinfo).context;
    if ctx.is_null() || (*ctx).type_ != pg_sys::NodeTag::T_TriggerData {
        AuthError::InvalidRequest("this function can only be called as a trigger".into()).raise();
    }
    ctx.cast()
}

// ---------------------------------------------------------------------------------------------
// The capture trigger: AFTER INSERT/UPDATE/DELETE (with transition tables) or TRUNCATE,
// FOR EACH STATEMENT. Arguments: the columns never to store.

/// Everything the stored shape depends on: a change to any of these needs a new shape.
unsafe fn table_shape(rel: pg_sys::Relation, pk_index: pg_sys::Oid) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let desc = (*rel).rd_att;
    (*rel).rd_id.to_u32().hash(&mut h);
    (*(*rel).rd_rel).relnamespace.to_u32().hash(&mut h);
    CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()).hash(&mut h);
    pk_index.to_u32().hash(&mut h);
    for i in 0..(*desc).natts as usize {
        let att = (*desc).attrs.as_ptr().add(i);
        CStr::from_ptr((*att).attname.data.as_ptr()).hash(&mut h);
        (*att).atttypid.to_u32().hash(&mut h);
        (*att).atttypmod.hash(&mut h);
        (*att).attisdropped.hash(&mut h);
    }
    h.finish()
}

/// Attribute numbers (1-based) of the primary key's columns.
unsafe fn primary_key_attnums(pk_index: pg_sys::Oid) -> Vec<i16> {
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
fn storable_type(oid: pg_sys::Oid) -> bool {
    if oid.to_u32() < pg_sys::FirstNormalObjectId {
        return true;
    }
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

/// How one audited table's rows are stored: the stored columns' descriptor (in
/// TopMemoryContext, kept for the backend's life), where each comes from, and the shape text.
struct StoredShape {
    desc: pg_sys::TupleDesc,
    /// 0-based attribute index in the table for each stored column.
    source: Vec<usize>,
    /// Stored columns that may hold out-of-line (TOASTed) or compressed values.
    varlena: Vec<bool>,
    /// For columns stored as their text form: the type's output function (in
    /// TopMemoryContext).
    text_output: Vec<Option<*mut pg_sys::FmgrInfo>>,
    shape: String,
    table: String,
    /// Hash state after this shape's digest prefix (table name and shape).
    prefix: sha3::Sha3_512,
}

/// The stored shape for a table: every live column not excluded, plus the primary key's
/// columns (an excluded key column is stored for the key but not shown in the values).
unsafe fn stored_shape(
    rel: pg_sys::Relation,
    pk_index: pg_sys::Oid,
    excluded: &[i16],
) -> StoredShape {
    let desc = (*rel).rd_att;
    let key = primary_key_attnums(pk_index);
    let mut source = Vec::new();
    let mut columns = Vec::new();
    for i in 0..(*desc).natts as usize {
        let att = (*desc).attrs.as_ptr().add(i);
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
        source.push(i);
        columns.push(super::frames::Column {
            name,
            type_name: cstr_owned(pg_sys::format_type_be_qualified((*att).atttypid)),
            typmod: (*att).atttypmod,
            key: is_key,
            value,
            type_oid: (*att).atttypid.to_u32(),
            // Types whose stored bytes the reader cannot check are stored as text.
            text: value_kind((*att).atttypid).is_err(),
        });
    }
    let old = pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
    let stored = pg_sys::CreateTemplateTupleDesc(source.len() as i32);
    let mut text_output = Vec::with_capacity(source.len());
    for (n, &i) in source.iter().enumerate() {
        if columns[n].text {
            let att = (*desc).attrs.as_ptr().add(i);
            pg_sys::TupleDescInitEntry(
                stored,
                (n + 1) as i16,
                (*att).attname.data.as_ptr(),
                pg_sys::TEXTOID,
                -1,
                0,
            );
            let (mut func, mut varlena) = (pg_sys::InvalidOid, false);
            pg_sys::getTypeOutputInfo((*att).atttypid, &mut func, &mut varlena);
            let finfo =
                pg_sys::palloc0(std::mem::size_of::<pg_sys::FmgrInfo>()).cast::<pg_sys::FmgrInfo>();
            pg_sys::fmgr_info_cxt(func, finfo, pg_sys::TopMemoryContext);
            text_output.push(Some(finfo));
        } else {
            pg_sys::TupleDescCopyEntry(stored, (n + 1) as i16, desc, (i + 1) as i16);
            text_output.push(None);
        }
    }
    pg_sys::MemoryContextSwitchTo(old);
    let varlena = source
        .iter()
        .map(|&i| (*(*desc).attrs.as_ptr().add(i)).attlen == -1)
        .collect();
    let table = format!(
        "{}.{}",
        quote_ident(&cstr_owned(pg_sys::get_namespace_name(
            (*(*rel).rd_rel).relnamespace
        ))),
        quote_ident(&cstr_owned((*(*rel).rd_rel).relname.data.as_ptr()))
    );
    let shape = super::frames::shape_json(&columns);
    let prefix = super::prefix_hasher(Some(table.as_bytes()), Some(shape.as_bytes()));
    StoredShape {
        desc: stored,
        source,
        varlena,
        text_output,
        shape,
        table,
        prefix,
    }
}

/// Key of the lock that makes a range of event ids contiguous: "pgauth" then 0x0002.
const ID_LOCK_KEY: i64 = 0x7067_6175_7468_0002;

/// An advisory lock tag that SQL cannot build: `pg_advisory_lock` uses field4 1 (one bigint)
/// or 2 (two ints); pgauth's locks use 0x7067 ("pg"), so no role can take them from SQL and
/// stall the audited writes or the sealer.
fn pgauth_lock_tag(key: i64) -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: (key >> 32) as u32,
        locktag_field3: key as u32,
        locktag_field4: 0x7067,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    }
}

unsafe fn pgauth_relid(name: &str) -> pg_sys::Oid {
    let ns = pg_sys::get_namespace_oid(c"pgauth".as_ptr(), false);
    let c = CString::new(name).unwrap_or_default();
    let oid = pg_sys::get_relname_relid(c.as_ptr(), ns);
    if oid == pg_sys::Oid::INVALID {
        AuthError::Internal(format!("pgauth.{name} is missing")).raise();
    }
    oid
}

/// Reserve `n` consecutive event ids; returns the first. Every reservation holds a short lock
/// (not to the end of the transaction) so that ranges never interleave.
unsafe fn reserve_ids(n: i64) -> i64 {
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
/// (and `pgauth.audit_app_user()`, which RBAC defines as it).
fn app_user() -> Option<[u8; 16]> {
    crate::session::sql::auth_current_user_id().map(|u| *u.as_bytes())
}

/// The statement-level facts of an audit record.
struct Facts {
    occurred_at: i64,
    txid: u64,
    db_user: String,
    app_user: Option<[u8; 16]>,
    client_addr: Option<String>,
}

unsafe fn statement_facts() -> Facts {
    let addr = pgrx::fcinfo::direct_function_call_as_datum(pg_sys::inet_client_addr, &[]);
    Facts {
        occurred_at: pg_sys::GetCurrentStatementStartTimestamp(),
        txid: pg_sys::GetTopFullTransactionId().value,
        db_user: cstr_owned(pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), false)),
        app_user: app_user(),
        client_addr: addr.map(|d| String::from_utf8_lossy(inet_text(d)).into_owned()),
    }
}

/// Insert one record (its digest computed here) and add it to this transaction's digest.
/// `prefix`: the hash state after the record's table name and shape, when known.
unsafe fn write_record(record: &AuditRecord, prefix: Option<&sha3::Sha3_512>) {
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
/// without planning one): the table has no insert triggers, rules or policies, and every
/// column is given.
unsafe fn insert_record_tuple(fields: &[(&CStr, Option<pg_sys::Datum>)]) {
    let lockmode = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
    let rel = pg_sys::table_open(pgauth_relid("audit_records"), lockmode);
    let desc = (*rel).rd_att;
    let natts = (*desc).natts as usize;
    let mut values = vec![pg_sys::Datum::from(0); natts];
    let mut nulls = vec![true; natts];
    for i in 0..natts {
        let att = (*desc).attrs.as_ptr().add(i);
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
    pg_sys::ExecInsertIndexTuples(
        rri,
        slot,
        estate,
        false,
        false,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    );
    pg_sys::ExecCloseIndices(rri);
    pg_sys::ExecResetTupleTable((*estate).es_tupleTable, false);
    pg_sys::FreeExecutorState(estate);
    pg_sys::heap_freetuple(tuple);
    pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
}

/// A record with the statement's facts and no events yet.
fn new_record(facts: &Facts, event: &str, table: Option<String>) -> AuditRecord {
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

/// A reader of one transition table, with its own read pointer.
struct TransitionReader {
    store: *mut pg_sys::Tuplestorestate,
    slot: *mut pg_sys::TupleTableSlot,
    pointer: i32,
}

impl TransitionReader {
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
    unsafe fn next(&mut self) -> Option<(*mut pg_sys::Datum, *mut bool)> {
        pg_sys::tuplestore_select_read_pointer(self.store, self.pointer);
        if !pg_sys::tuplestore_gettupleslot(self.store, true, false, self.slot) {
            return None;
        }
        pg_sys::slot_getallattrs(self.slot);
        Some(((*self.slot).tts_values, (*self.slot).tts_isnull))
    }

    unsafe fn close(self) {
        pg_sys::ExecDropSingleTupleTableSlot(self.slot);
        pg_sys::tuplestore_select_read_pointer(self.store, 0);
    }
}

/// One transition row as a stored tuple's bytes (from t_infomask2 on), appended as a frame.
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
        } else if let Some(output) = shape.text_output[n] {
            v = pg_sys::Datum::from(pg_sys::cstring_to_text(pg_sys::OutputFunctionCall(
                output, v,
            )));
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

/// Bytes of a heap tuple header before t_infomask2 (datum fields and t_ctid): not stored.
const STORED_FROM: usize = 18;

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
    let pk_index = pg_sys::RelationGetPrimaryKeyIndex(rel);
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

// ---------------------------------------------------------------------------------------------
// The sealer: chains the transactions that finished since the last seal.
//
// A transaction that writes audit records only inserts them; nothing orders writers or their
// commits. Sealing takes the chain lock without waiting (another sealer means this one has
// nothing to do), reads the head with a fresh snapshot, and takes that snapshot's xmin as the
// new horizon: every transaction below it has finished, so the records of the committed ones
// are all visible and no more can appear. It appends one chain entry for the transactions in
// [previous horizon, new horizon) that wrote records, in transaction id order.

pub(crate) fn install_xact_callback() {
    unsafe {
        pg_sys::RegisterXactCallback(Some(audit_xact_callback), std::ptr::null_mut());
        // Stored shapes carry schema and type names: forget them when any of those change.
        for cache in [
            pg_sys::SysCacheIdentifier::NAMESPACEOID,
            pg_sys::SysCacheIdentifier::TYPEOID,
        ] {
            pg_sys::CacheRegisterSyscacheCallback(
                cache as i32,
                Some(forget_shapes),
                pg_sys::Datum::from(0),
            );
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_shapes(
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

#[pg_guard]
unsafe extern "C-unwind" fn audit_xact_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT => {
            let (wrote, last) = STATE.with(|s| {
                let s = s.borrow();
                (s.wrote, s.last_seal_attempt)
            });
            let now = pg_sys::GetCurrentTimestamp();
            let interval = i64::from(crate::guc::AUDIT_SEAL_INTERVAL_MS.get()) * 1000;
            // Not under SERIALIZABLE: reading with a newer snapshot than the transaction's
            // would add serialization conflicts to the application's transaction.
            if wrote
                && now - last >= interval
                && pg_sys::XactIsoLevel != pg_sys::XACT_SERIALIZABLE as i32
            {
                STATE.with(|s| s.borrow_mut().last_seal_attempt = now);
                seal_at_commit();
            }
        }
        pg_sys::XactEvent::XACT_EVENT_COMMIT
        | pg_sys::XactEvent::XACT_EVENT_ABORT
        | pg_sys::XactEvent::XACT_EVENT_PREPARE => {
            STATE.with(|s| {
                let mut s = s.borrow_mut();
                s.wrote = false;
                s.purging = false;
            });
        }
        _ => {}
    }
}

/// Seal in an internal subtransaction: a failing seal (a damaged chain head, say) must not
/// fail the application's commit. It is logged as a WARNING; auth_audit_seal() and
/// auth_audit_verify() report it.
unsafe fn seal_at_commit() {
    let context = pg_sys::CurrentMemoryContext;
    let owner = pg_sys::CurrentResourceOwner;
    pg_sys::BeginInternalSubTransaction(std::ptr::null());
    pg_sys::MemoryContextSwitchTo(context);
    let (failure, complete) = PgTryBuilder::new(|| (None, seal(false).or_raise().1))
        .catch_others(|e| {
            let message = match e {
                pgrx::pg_sys::panic::CaughtError::PostgresError(r)
                | pgrx::pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_string(),
                _ => "unexpected error".to_string(),
            };
            (Some(message), true)
        })
        .execute();
    if !complete {
        // Behind (more finished than one entry takes): the next commit seals again, so
        // sealing keeps up with any commit rate.
        STATE.with(|s| s.borrow_mut().last_seal_attempt = 0);
    }
    match failure {
        None => pg_sys::ReleaseCurrentSubTransaction(),
        Some(message) => {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pgrx::warning!("pgauth: sealing the audit chain at commit failed: {message}");
        }
    }
    pg_sys::MemoryContextSwitchTo(context);
    pg_sys::CurrentResourceOwner = owner;
}

unsafe fn seal_plans() -> AuthResult<SealPlans> {
    if let Some(p) = STATE.with(|s| s.borrow().seal_plans) {
        return Ok(p);
    }
    let plans = SealPlans {
        head: prepare_kept(
            "SELECT h.position, h.chain_digest, h.horizon::text FROM (
                 (SELECT position, chain_digest, horizon FROM pgauth.audit_chain
                   ORDER BY position DESC LIMIT 1)
                 UNION ALL
                 (SELECT position, chain_digest, horizon FROM pgauth.audit_checkpoints
                   ORDER BY position DESC LIMIT 1)) h
              ORDER BY h.position DESC LIMIT 1",
            &[],
        )?,
        // In the txid index's order, so a batch reads only what it takes. (Not `txid::text`:
        // ordered as text, 1000 would come before 999.)
        records: prepare_kept(
            "SELECT r.txid, r.id, r.last_id, r.record_digest FROM pgauth.audit_records r
              WHERE r.txid >= $1::text::xid8 AND r.txid < $2::text::xid8
              ORDER BY r.txid LIMIT $3",
            &[pg_sys::TEXTOID, pg_sys::TEXTOID, pg_sys::INT8OID],
        )?,
        append: prepare_kept(
            "INSERT INTO pgauth.audit_chain
                 (position, from_horizon, horizon, first_id, last_id, txids, first_ids, last_ids,
                  record_counts, txn_digests, chain_digest)
             VALUES ($1, $2::text::xid8, $3::text::xid8, $4, $5, $6::text::xid8[], $7, $8, $9,
                     $10, $11)",
            &[
                pg_sys::INT8OID,
                pg_sys::TEXTOID,
                pg_sys::TEXTOID,
                pg_sys::INT8OID,
                pg_sys::INT8OID,
                pg_sys::INT8ARRAYOID,
                pg_sys::INT8ARRAYOID,
                pg_sys::INT8ARRAYOID,
                pg_sys::INT8ARRAYOID,
                pg_sys::BYTEAARRAYOID,
                pg_sys::BYTEAOID,
            ],
        )?,
    };
    STATE.with(|s| s.borrow_mut().seal_plans = Some(plans));
    Ok(plans)
}

/// A 32-bit transaction id that is at most 2^31 older than `next`, as a full (xid8) id.
fn full_xid(next: u64, xid: u32) -> u64 {
    let epoch = next >> 32;
    let epoch = if xid > next as u32 {
        epoch.saturating_sub(1)
    } else {
        epoch
    };
    (epoch << 32) | u64::from(xid)
}

/// The next transaction id to be assigned (xid8): every existing transaction is below it.
fn next_full_xid() -> u64 {
    unsafe { pg_sys::ReadNextFullTransactionId().value }
}

unsafe fn chain_is_empty() -> AuthResult<bool> {
    let p = prepare_kept("SELECT 1 FROM pgauth.audit_chain LIMIT 1", &[])?;
    let mut empty = true;
    let r = for_each_row(p, &mut [], |_, _| empty = false);
    pg_sys::SPI_freeplan(p.0);
    r.map(|_| empty)
}

fn restored_chain_error() -> AuthError {
    AuthError::InvalidRequest(
        "the audit chain was restored from another cluster (its horizon is above this cluster's transaction ids): verify it, export it, and purge it through its last position; the chain then goes on from that checkpoint (README, \"Retention\")".into(),
    )
}

/// Chain every transaction that finished since the last seal. `wait`: wait for a concurrent
/// sealer instead of leaving the work to it, and seal everything; otherwise (at commit) seal at
/// most `SEAL_BATCH` records. Returns the number of transactions chained and whether everything
/// that had finished was sealed.
unsafe fn seal(wait: bool) -> AuthResult<(i64, bool)> {
    let mut total = 0;
    loop {
        let (chained, complete) = seal_entry(wait)?;
        total += chained;
        if complete || !wait {
            return Ok((total, complete));
        }
    }
}

/// Append one chain entry for the transactions that finished since the last one (at most
/// `SEAL_BATCH` records' worth).
unsafe fn seal_entry(wait: bool) -> AuthResult<(i64, bool)> {
    as_owner(|| {
        // Transaction-level: released when the sealing transaction ends.
        let tag = pgauth_lock_tag(CHAIN_LOCK_KEY);
        let got = pg_sys::LockAcquire(
            &tag,
            pg_sys::ExclusiveLock as pg_sys::LOCKMODE,
            false,
            !wait,
        );
        if got == pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL {
            return Ok((0, true));
        }
        let _spi = RawSpi::connect()?;
        // Taken after the lock: sees every chain entry committed before, whatever the
        // isolation level of this transaction.
        let snapshot = pg_sys::GetLatestSnapshot();
        pg_sys::PushActiveSnapshot(snapshot);
        let snapshot = pg_sys::GetActiveSnapshot();
        let horizon = full_xid(next_full_xid(), (*snapshot).xmin.into_inner());
        let result = seal_range(snapshot, horizon, wait);
        pg_sys::PopActiveSnapshot();
        result
    })
}

/// A record as the sealer reads it: (id, last_id, record_digest).
type RecordRef = (i64, i64, AuditDigest);

/// The committed transactions in [from, to) with their records' digests, in txid order, reading
/// at most `limit` records. When the limit was reached, the transaction read last is left out
/// (it may be incomplete) and its txid is returned.
unsafe fn read_txns(
    plan: SavedPlan,
    from: u64,
    to: u64,
    limit: i64,
) -> AuthResult<(Vec<SealedTxn>, Option<u64>)> {
    let zero = pg_sys::Datum::from(0);
    let (from_text, to_text) = (from.to_string(), to.to_string());
    let mut args = [
        from_text.as_str().into_datum().unwrap_or(zero),
        to_text.as_str().into_datum().unwrap_or(zero),
        pg_sys::Datum::from(limit),
    ];
    let mut read = 0i64;
    // The transaction being read: its txid and its records (id, last_id, digest).
    let mut current: Option<(u64, Vec<RecordRef>)> = None;
    let mut txns: Vec<SealedTxn> = Vec::new();
    let sealed =
        |(txid, mut records): (u64, Vec<RecordRef>)| SealedTxn::of_records(txid, &mut records);
    for_each_row(plan, &mut args, |t, d| {
        read += 1;
        // xid8 is a 64-bit pass-by-value type.
        let txid = column(t, d, 1).map_or(0, |v| v.value() as u64);
        let id = col_i64(t, d, 2).unwrap_or(0);
        let last = col_i64(t, d, 3).unwrap_or(id);
        let digest = col_bytes(t, d, 4)
            .and_then(|b| <AuditDigest>::try_from(b.as_slice()).ok())
            .unwrap_or(GENESIS);
        if current.as_ref().is_none_or(|(x, _)| *x != txid) {
            if let Some(c) = current.take() {
                txns.push(sealed(c));
            }
            current = Some((txid, Vec::new()));
        }
        if let Some((_, records)) = current.as_mut() {
            records.push((id, last, digest));
        }
    })?;
    if read < limit {
        txns.extend(current.map(sealed));
        Ok((txns, None))
    } else {
        Ok((txns, current.map(|(x, _)| x)))
    }
}

unsafe fn seal_range(
    snapshot: pg_sys::Snapshot,
    mut horizon: u64,
    wait: bool,
) -> AuthResult<(i64, bool)> {
    let plans = seal_plans()?;
    let mut head: Option<(i64, Vec<u8>, u64)> = None;
    for_each_row(plans.head, &mut [], |t, d| {
        head = (|| {
            Some((
                col_i64(t, d, 1)?,
                col_bytes(t, d, 2)?,
                col_text(t, d, 3)?.parse().ok()?,
            ))
        })();
    })?;
    let (position, previous, mut from) = match head {
        Some((p, digest, h)) => (
            p,
            <AuditDigest>::try_from(digest.as_slice()).map_err(|_| {
                AuthError::Internal(format!("audit chain position {p} has a malformed digest"))
            })?,
            h,
        ),
        None => (0, GENESIS, 0),
    };
    if from > next_full_xid() {
        // A horizon above every transaction id of this cluster: the log was restored from
        // another cluster (pg_dump). Its chain can go on here only from a checkpoint, once
        // the restored entries are archived and purged (README, "Retention").
        if chain_is_empty()? {
            from = 0;
        } else if wait {
            return Err(restored_chain_error());
        } else {
            return Ok((0, true));
        }
    }
    if horizon <= from {
        return Ok((0, true));
    }
    let zero = pg_sys::Datum::from(0);
    let (mut txns, cut) = read_txns(plans.records, from, horizon, SEAL_BATCH)?;
    let complete = cut.is_none();
    if let Some(cut) = cut {
        // The last transaction read may be cut off: leave it, and everything after it, for
        // the next entry; but one transaction bigger than a batch is sealed whole.
        horizon = match txns.last() {
            Some(t) => t.txid + 1,
            None => {
                txns = read_txns(plans.records, cut, cut + 1, i64::MAX)?.0;
                cut + 1
            }
        };
    }
    if txns.is_empty() {
        return Ok((0, true));
    }
    let position = position + 1;
    let link = chain_digest(&previous, position, from, horizon, &txns)
        .ok_or_else(|| AuthError::Internal("audit: a transaction digest is malformed".into()))?;
    let first_id = txns.iter().map(|t| t.first_id).min().unwrap_or(0);
    let last_id = txns.iter().map(|t| t.last_id).max().unwrap_or(0);
    let chained = txns.len() as i64;
    let datum = |d: Option<pg_sys::Datum>| d.unwrap_or(zero);
    // One int8[] of a field of every transaction.
    let ints = |field: fn(&SealedTxn) -> i64| {
        datum(txns.iter().map(field).collect::<Vec<_>>().into_datum())
    };
    let (from_text, horizon_text) = (from.to_string(), horizon.to_string());
    let mut args = [
        pg_sys::Datum::from(position),
        datum(from_text.as_str().into_datum()),
        datum(horizon_text.as_str().into_datum()),
        pg_sys::Datum::from(first_id),
        pg_sys::Datum::from(last_id),
        ints(|t| t.txid as i64),
        ints(|t| t.first_id),
        ints(|t| t.last_id),
        ints(|t| t.record_count),
        datum(
            txns.iter()
                .map(|t| t.txn_digest.as_slice())
                .collect::<Vec<_>>()
                .into_datum(),
        ),
        datum(link.as_slice().into_datum()),
    ];
    let nulls = [b' ' as std::ffi::c_char; 11];
    let rc = pg_sys::SPI_execute_snapshot(
        plans.append.0,
        args.as_mut_ptr(),
        nulls.as_ptr(),
        snapshot,
        std::ptr::null_mut(),
        false,
        false,
        0,
    );
    if rc != pg_sys::SPI_OK_INSERT as i32 {
        return Err(spi_error("appending to the audit chain", rc));
    }
    Ok((chained, complete))
}

/// Chain every audit record of the transactions that have finished (the sealer also runs at
/// commit, at most every `pgauth.audit_seal_interval`); waits for a sealer at work. Returns the
/// number of transactions chained. pgauth_admin.
#[pg_extern(volatile, parallel_unsafe)]
fn auth_audit_seal() -> i64 {
    require_audit_admin("auth_audit_seal").or_raise();
    unsafe { seal(true) }.or_raise().0
}

// ---------------------------------------------------------------------------------------------
// pgauth.record_event(event text, subject text, details jsonb DEFAULT '{}'): the one function
// every capability reports security events through.

finfo_v1!(pg_finfo_pgauth_record_event);

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
        Some(s) => format!("{{\"subject\": {}}}", json_string(s)),
        None => "{\"subject\": null}".to_string(),
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
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn pgauth_audit_direct_write(
    _fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    pg_sys::Datum::from(caller() != pgauth_owner().or_raise())
}

/// A row of a pgauth table as a JSON object (`row_to_json`: built-in types only).
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
    let table = format!(
        "{}.{}",
        quote_ident(&cstr_owned(pg_sys::get_namespace_name(
            (*(*rel).rd_rel).relnamespace
        ))),
        quote_ident(&cstr_owned((*(*rel).rd_rel).relname.data.as_ptr()))
    );
    let (event, parts) = if op == pg_sys::TRIGGER_EVENT_TRUNCATE {
        let null = serde_json::Value::Null;
        ("truncate", (null.clone(), null.clone(), null))
    } else {
        let key: Vec<String> = primary_key_attnums(pg_sys::RelationGetPrimaryKeyIndex(rel))
            .into_iter()
            .filter(|&n| n > 0)
            .map(|n| {
                let att = (*desc).attrs.as_ptr().add(n as usize - 1);
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

// ---------------------------------------------------------------------------------------------
// Verification and the head

/// The latest chain position and its digest, after sealing what has finished: keep them
/// outside the database, and pass them to auth_audit_verify() later to detect a removed tail.
#[pg_extern(volatile, parallel_unsafe)]
fn auth_audit_head() -> TableIterator<'static, (name!(id, i64), name!(digest, Vec<u8>))> {
    require_audit_admin("auth_audit_head").or_raise();
    // A hot standby cannot write: it reports the head the primary sealed.
    if !unsafe { pg_sys::RecoveryInProgress() } {
        unsafe { seal(true) }.or_raise();
    }
    // Read with a snapshot taken now (after the seal, and after any sealer it waited for),
    // not the statement's: the head must include every entry committed before.
    let head = as_owner(|| unsafe {
        let _spi = RawSpi::connect()?;
        pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot());
        let plans = seal_plans()?;
        let mut head: Option<(i64, Vec<u8>)> = None;
        let result = for_each_row(plans.head, &mut [], |t, d| {
            head = col_i64(t, d, 1).zip(col_bytes(t, d, 2));
        });
        pg_sys::PopActiveSnapshot();
        result.map(|_| head)
    })
    .or_raise();
    TableIterator::new(head)
}

struct VerifyPlans {
    start: SavedPlan,
    anchor: SavedPlan,
    chain: SavedPlan,
    ids: SavedPlan,
    records_in: SavedPlan,
    records_out: SavedPlan,
    horizon: SavedPlan,
}

unsafe fn verify_plans() -> AuthResult<VerifyPlans> {
    // Verification is rare: plans are kept only for the call.
    Ok(VerifyPlans {
        start: prepare_kept(
            "SELECT coalesce(
                 (SELECT min(position) FROM pgauth.audit_chain WHERE last_id >= $1),
                 (SELECT max(position) + 1 FROM pgauth.audit_chain),
                 (SELECT max(position) + 1 FROM pgauth.audit_checkpoints), 1)",
            &[pg_sys::INT8OID],
        )?,
        anchor: prepare_kept(
            "SELECT chain_digest FROM pgauth.audit_chain WHERE position = $1
             UNION ALL
             SELECT chain_digest FROM pgauth.audit_checkpoints WHERE position = $1 LIMIT 1",
            &[pg_sys::INT8OID],
        )?,
        // A chunk of entries (at most $2), one row per sealed transaction.
        chain: prepare_kept(
            "SELECT c.position, c.from_horizon::text, c.horizon::text, c.chain_digest,
                    t.txid::text, t.first_id, t.last_id, t.record_count, t.txn_digest, t.n
               FROM (SELECT * FROM pgauth.audit_chain WHERE position >= $1
                      ORDER BY position LIMIT $2) c
               LEFT JOIN LATERAL unnest(c.txids, c.first_ids, c.last_ids, c.record_counts,
                                        c.txn_digests)
                    WITH ORDINALITY t(txid, first_id, last_id, record_count, txn_digest, n)
                 ON true
              ORDER BY c.position, t.n",
            &[pg_sys::INT8OID, pg_sys::INT8OID],
        )?,
        ids: prepare_kept(
            "SELECT id, last_id, event_count, txid FROM pgauth.audit_records
              WHERE last_id >= $1 ORDER BY id, txid",
            &[pg_sys::INT8OID],
        )?,
        horizon: prepare_kept(
            "SELECT coalesce(
                 (SELECT horizon::text FROM pgauth.audit_chain ORDER BY position DESC LIMIT 1),
                 (SELECT horizon::text FROM pgauth.audit_checkpoints
                   ORDER BY position DESC LIMIT 1),
                 '0')",
            &[],
        )?,
        // The records of the transactions in a chunk's horizons [$1, $2).
        records_in: prepare_kept(
            &format!(
                "SELECT {RECORD_COLUMNS} FROM pgauth.audit_records
                  WHERE txid >= $1::text::xid8 AND txid < $2::text::xid8 ORDER BY id"
            ),
            &[pg_sys::TEXTOID, pg_sys::TEXTOID],
        )?,
        // The records outside every verified entry's horizons: not sealed yet, or forged.
        records_out: prepare_kept(
            &format!(
                "SELECT {RECORD_COLUMNS} FROM pgauth.audit_records
                  WHERE (txid < $1::text::xid8 OR txid >= $2::text::xid8) AND last_id >= $3
                  ORDER BY id"
            ),
            &[pg_sys::TEXTOID, pg_sys::TEXTOID, pg_sys::INT8OID],
        )?,
    })
}

/// Every column a record digest covers, and the stored digest (`stored_record`).
const RECORD_COLUMNS: &str = "id, last_id, event_count, occurred_at, txid, db_user, app_user_id,
    client_addr, event, table_name, shape, rows, events, record_digest";

/// A record read with RECORD_COLUMNS, and its stored digest. The same conversions as
/// audit_record_digest: xid8 as u64, inet through its output function, text as stored.
unsafe fn stored_record(t: pg_sys::HeapTuple, d: pg_sys::TupleDesc) -> (AuditRecord, Vec<u8>) {
    let app_user_id = column(t, d, 7).map(|v| {
        let mut u = [0u8; 16];
        u.copy_from_slice(std::slice::from_raw_parts(v.cast_mut_ptr::<u8>(), 16));
        u
    });
    let owned = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let record = AuditRecord {
        id: col_i64(t, d, 1).unwrap_or(0),
        last_id: col_i64(t, d, 2).unwrap_or(0),
        event_count: column(t, d, 3).map_or(0, |v| i64::from(v.value() as i32)),
        occurred_at: col_i64(t, d, 4).unwrap_or(0),
        txid: column(t, d, 5).map_or(0, |v| v.value() as u64),
        db_user: col_text(t, d, 6),
        app_user_id,
        client_addr: column(t, d, 8).map(|v| owned(inet_text(v))),
        event: col_text(t, d, 9).unwrap_or_default(),
        table_name: col_text(t, d, 10),
        shape: col_text(t, d, 11),
        rows: col_bytes(t, d, 12),
        events: col_text(t, d, 13),
    };
    (record, col_bytes(t, d, 14).unwrap_or_default())
}

/// Chain entries verified together: their transactions are kept in memory until their records
/// have been read.
const VERIFY_CHUNK_ENTRIES: i64 = 64;

unsafe fn free_plans(p: VerifyPlans) {
    for plan in [
        p.start,
        p.anchor,
        p.chain,
        p.ids,
        p.records_in,
        p.records_out,
        p.horizon,
    ] {
        pg_sys::SPI_freeplan(plan.0);
    }
}

fn verify(from_id: Option<i64>, mut head: Option<Head>) -> AuthResult<Verdict> {
    unsafe {
        let _spi = RawSpi::connect()?;
        let plans = verify_plans()?;
        // One snapshot for every read: the chain and the rows must agree.
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        // The last checkpoint: nothing before it can be checked any more (archived), and a
        // stored head taken at its position is checked against its digest.
        let mut checkpoint: Option<(i64, Vec<u8>)> = None;
        let p = prepare_kept(
            "SELECT position, chain_digest FROM pgauth.audit_checkpoints
              ORDER BY position DESC LIMIT 1",
            &[],
        )?;
        for_each_row(p, &mut [], |t, d| {
            checkpoint = col_i64(t, d, 1).zip(col_bytes(t, d, 2));
        })?;
        pg_sys::SPI_freeplan(p.0);
        let mut head_problem = None;
        if let (Some(h), Some((cp, cd))) = (&head, &checkpoint) {
            if h.position == *cp && h.digest != *cd {
                head_problem = Some(format!(
                    "the checkpoint at audit chain position {cp} does not have the stored head digest: the chain before it was rewritten"
                ));
            }
            if h.position <= *cp {
                // Archived: what remains is checked from the checkpoint.
                head = None;
            }
        }
        let mut max_id = i64::MAX;
        let p = prepare_kept("SELECT last_value FROM pgauth.audit_event_id_seq", &[])?;
        for_each_row(p, &mut [], |t, d| {
            max_id = col_i64(t, d, 1).unwrap_or(i64::MAX)
        })?;
        pg_sys::SPI_freeplan(p.0);
        let mut start = 1i64;
        let from_arg = from_id.unwrap_or(i64::MIN);
        for_each_row(plans.start, &mut [pg_sys::Datum::from(from_arg)], |t, d| {
            start = col_i64(t, d, 1).unwrap_or(1);
        })?;
        if from_id.is_none() {
            // Everything that is still there, from the oldest entry.
            let mut oldest = None;
            let p = prepare_kept("SELECT min(position) FROM pgauth.audit_chain", &[])?;
            for_each_row(p, &mut [], |t, d| oldest = col_i64(t, d, 1))?;
            pg_sys::SPI_freeplan(p.0);
            start = oldest.unwrap_or(start);
        }
        if let Some(h) = &head {
            start = start.min(h.position.max(1));
        }
        if let Some((cp, _)) = &checkpoint {
            start = start.max(cp + 1);
        }
        let mut anchor: Option<AuditDigest> = (start == 1).then_some(GENESIS);
        if anchor.is_none() {
            for_each_row(
                plans.anchor,
                &mut [pg_sys::Datum::from(start - 1)],
                |t, d| {
                    anchor = col_bytes(t, d, 1).and_then(|b| b.as_slice().try_into().ok());
                },
            )?;
        }
        let own = top_txid();
        let mut sealed_below = 0u64;
        for_each_row(plans.horizon, &mut [], |t, d| {
            sealed_below = col_text(t, d, 1).and_then(|h| h.parse().ok()).unwrap_or(0);
        })?;
        let next = next_full_xid();
        if sealed_below > next {
            // Restored from another cluster: the restored entries verify as they were, and
            // this cluster's records, not chained yet, by their own digests.
            sealed_below = 0;
        }
        let mut verifier = Verifier::new(anchor.unwrap_or(GENESIS), from_id, own)
            .with_unsealed(sealed_below, next)
            .with_max_id(max_id);
        if let Some(reason) = head_problem {
            verifier.report_unplaced(reason);
        }
        if let Some(h) = &head {
            verifier = verifier.watching(h.position);
        }
        let from_arg = pg_sys::Datum::from(from_id.unwrap_or(i64::MIN));
        // Pass 1: ids only, in id order.
        for_each_row(plans.ids, &mut [from_arg], |t, d| {
            verifier.check_ids(
                col_i64(t, d, 1).unwrap_or(0),
                col_i64(t, d, 2).unwrap_or(0),
                column(t, d, 3).map_or(0, |v| i64::from(v.value() as i32)),
                column(t, d, 4).map_or(0, |v| v.value() as u64),
            );
        })?;
        // Pass 2: the chain in chunks of entries, each with the records in its horizons.
        let mut first_entry_id: Option<i64> = None;
        let mut malformed = None;
        let mut covered: Option<(u64, u64)> = None;
        let mut position = start;
        loop {
            let mut entries: Vec<ChainEntry> = Vec::new();
            let mut args = [
                pg_sys::Datum::from(position),
                pg_sys::Datum::from(VERIFY_CHUNK_ENTRIES),
            ];
            // One row per sealed transaction (or one with NULLs for an entry without any).
            for_each_row(plans.chain, &mut args, |t, d| {
                let Some(p) = col_i64(t, d, 1) else {
                    malformed = Some(0);
                    return;
                };
                if entries.last().is_none_or(|e| e.position != p) {
                    entries.push(ChainEntry {
                        position: p,
                        from_horizon: col_text(t, d, 2).and_then(|h| h.parse().ok()).unwrap_or(0),
                        horizon: col_text(t, d, 3).and_then(|h| h.parse().ok()).unwrap_or(0),
                        txns: Vec::new(),
                        chain_digest: col_bytes(t, d, 4).unwrap_or_default(),
                    });
                }
                let txn = (|| {
                    Some(SealedTxn {
                        txid: col_text(t, d, 5)?.parse().ok()?,
                        first_id: col_i64(t, d, 6)?,
                        last_id: col_i64(t, d, 7)?,
                        record_count: col_i64(t, d, 8)?,
                        txn_digest: col_bytes(t, d, 9)?,
                    })
                })();
                match (txn, entries.last_mut()) {
                    (Some(txn), Some(entry)) => entry.txns.push(txn),
                    // An entry with no transactions at all is one row of NULLs; it fails its
                    // chain digest. Anything else with NULLs is malformed.
                    (None, _) if col_i64(t, d, 10).unwrap_or(0) > 0 => malformed = Some(p),
                    _ => {}
                }
            })?;
            let Some(last) = entries.last() else {
                break;
            };
            position = last.position + 1;
            let low = entries.iter().map(|e| e.from_horizon.min(e.horizon)).min();
            let high = entries.iter().map(|e| e.horizon.max(e.from_horizon)).max();
            let (low, high) = (low.unwrap_or(0), high.unwrap_or(0));
            covered = Some(match covered {
                None => (low, high),
                Some((l, h)) => (l.min(low), h.max(high)),
            });
            for e in entries {
                if let Some(first) = e.first_id() {
                    first_entry_id.get_or_insert(first);
                }
                verifier.add_entry(e);
            }
            let (low, high) = (low.to_string(), high.to_string());
            let zero = pg_sys::Datum::from(0);
            let mut args = [
                low.as_str().into_datum().unwrap_or(zero),
                high.as_str().into_datum().unwrap_or(zero),
            ];
            for_each_row(plans.records_in, &mut args, |t, d| {
                let (record, stored) = stored_record(t, d);
                verifier.add_record(&record, &stored);
            })?;
            verifier.end_chunk();
        }
        if let Some(position) = malformed {
            verifier.report(
                first_entry_id.unwrap_or(0),
                format!("audit chain entry at position {position} has NULL fields"),
            );
        }
        if anchor.is_none() {
            verifier.report(
                first_entry_id.unwrap_or(i64::MAX),
                format!(
                    "audit chain entries before position {start} were removed without a checkpoint (auth_audit_purge)"
                ),
            );
        }
        // Pass 3: the records outside every verified entry's horizons.
        let (low, high) = covered.unwrap_or((sealed_below, sealed_below));
        let (low, high) = (low.to_string(), high.to_string());
        let zero = pg_sys::Datum::from(0);
        let mut args = [
            low.as_str().into_datum().unwrap_or(zero),
            high.as_str().into_datum().unwrap_or(zero),
            from_arg,
        ];
        for_each_row(plans.records_out, &mut args, |t, d| {
            let (record, stored) = stored_record(t, d);
            verifier.add_record(&record, &stored);
        })?;
        pg_sys::PopActiveSnapshot();
        free_plans(plans);
        Ok(verifier.finish(head.as_ref()))
    }
}

/// Recompute every row digest, every transaction digest and the chain; report the first bad
/// audit id and why. `from_id` verifies only from that id on (the transactions it falls in are
/// checked whole); a stored head (`auth_audit_head()` kept elsewhere) also detects a cut tail.
#[pg_extern(stable, parallel_restricted)]
fn auth_audit_verify(
    from_id: default!(Option<i64>, "NULL"),
    head_id: default!(Option<i64>, "NULL"),
    head_digest: default!(Option<&[u8]>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(ok, bool),
        name!(checked, i64),
        name!(first_bad_id, Option<i64>),
        name!(reason, Option<String>),
    ),
> {
    require_audit_admin("auth_audit_verify").or_raise();
    let head = match (head_id, head_digest) {
        (Some(position), Some(digest)) => Some(Head {
            position,
            digest: digest.to_vec(),
        }),
        (None, None) => None,
        _ => AuthError::InvalidRequest(
            "pass both head_id and head_digest (from auth_audit_head()), or neither".into(),
        )
        .raise(),
    };
    let v = as_owner(|| verify(from_id, head)).or_raise();
    TableIterator::once((v.ok, v.checked, v.first_bad_id, v.reason))
}

// ---------------------------------------------------------------------------------------------
// Enabling and disabling audit on a table

const TRIGGERS: [(&str, &str, &str); 4] = [
    (
        "pgauth_audit_insert",
        "INSERT",
        "REFERENCING NEW TABLE AS pgauth_new",
    ),
    (
        "pgauth_audit_update",
        "UPDATE",
        "REFERENCING OLD TABLE AS pgauth_old NEW TABLE AS pgauth_new",
    ),
    (
        "pgauth_audit_delete",
        "DELETE",
        "REFERENCING OLD TABLE AS pgauth_old",
    ),
    ("pgauth_audit_truncate", "TRUNCATE", ""),
];

struct TableInfo {
    name: String,
    relkind: u8,
    in_pgauth: bool,
    owner: pg_sys::Oid,
    has_pk: bool,
    audited: bool,
    columns: Vec<String>,
}

fn table_info(tbl: pg_sys::Oid) -> AuthResult<TableInfo> {
    Spi::connect(|client| {
        let row = client
            .select(
                "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), c.relkind::text, n.nspname = 'pgauth', c.relowner,
                        EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                                 WHERE i.indrelid = c.oid AND i.indisprimary),
                        EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                                 WHERE t.tgrelid = c.oid AND t.tgname LIKE 'pgauth_audit_%'),
                        ARRAY(SELECT attname::text FROM pg_catalog.pg_attribute
                               WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped)
                   FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = $1",
                None,
                &[tbl.into()],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>(TableInfo {
            name: row.get::<String>(1)?.unwrap_or_default(),
            relkind: row
                .get::<String>(2)?
                .unwrap_or_default()
                .bytes()
                .next()
                .unwrap_or(0),
            in_pgauth: row.get::<bool>(3)?.unwrap_or(false),
            owner: row.get::<pg_sys::Oid>(4)?.unwrap_or(pg_sys::Oid::INVALID),
            has_pk: row.get::<bool>(5)?.unwrap_or(false),
            audited: row.get::<bool>(6)?.unwrap_or(false),
            columns: row.get::<Vec<String>>(7)?.unwrap_or_default(),
        })
    })
    .map_err(|e| AuthError::Internal(format!("audit: reading the table failed: {e}")))
}

fn check_table_admin(info: &TableInfo, action: &str) -> AuthResult<()> {
    require_audit_admin(action)?;
    let me = caller();
    let owns = unsafe { pg_sys::superuser_arg(me) || pg_sys::has_privs_of_role(me, info.owner) };
    if !owns {
        return Err(AuthError::AuditPermissionDenied(format!(
            "{action} on {} requires owning the table",
            info.name
        )));
    }
    if info.in_pgauth {
        return Err(AuthError::AuditWrongObject(format!(
            "{} belongs to pgauth and cannot be audited with triggers",
            info.name
        )));
    }
    Ok(())
}

/// Audit INSERT, UPDATE, DELETE and TRUNCATE on `tbl` into pgauth.audit_log. The columns in
/// `exclude_columns` are never stored (password hashes, ciphertexts).
#[pg_extern(volatile, parallel_unsafe)]
fn auth_audit_enable(tbl: PgRelation, exclude_columns: default!(Vec<Option<String>>, "'{}'")) {
    let relid = tbl.oid();
    let info = table_info(relid).or_raise();
    drop(tbl);
    check_table_admin(&info, "auth_audit_enable").or_raise();
    if !matches!(info.relkind, b'r' | b'p') {
        AuthError::AuditWrongObject(format!(
            "{} is not a table: only tables and partitioned tables can be audited",
            info.name
        ))
        .raise();
    }
    if info.audited {
        AuthError::AuditAlreadyEnabled(info.name.clone()).raise();
    }
    if !info.has_pk {
        AuthError::AuditNoPrimaryKey(info.name.clone()).raise();
    }
    let mut excluded = Vec::new();
    for c in exclude_columns {
        let Some(c) = c else {
            AuthError::InvalidRequest("exclude_columns must not contain NULL".into()).raise()
        };
        if !info.columns.contains(&c) {
            AuthError::InvalidRequest(format!("column \"{c}\" of {} does not exist", info.name))
                .raise();
        }
        if !excluded.contains(&c) {
            excluded.push(c);
        }
    }
    let types: Vec<(String, pg_sys::Oid, i16)> = Spi::connect(|client| {
        let rows = client.select(
            "SELECT attname::text, atttypid, attnum FROM pg_catalog.pg_attribute
              WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            None,
            &[relid.into()],
        )?;
        let mut out = Vec::new();
        for row in rows {
            if let (Some(n), Some(t), Some(a)) = (
                row.get::<String>(1)?,
                row.get::<pg_sys::Oid>(2)?,
                row.get::<i16>(3)?,
            ) {
                out.push((n, t, a));
            }
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .map_err(|e| AuthError::Internal(format!("audit: reading the columns failed: {e}")))
    .or_raise();
    for (column, ty, _) in &types {
        if !excluded.contains(column) && !storable_type(*ty) {
            AuthError::AuditUnsupportedType(format!(
                "column \"{column}\" of {} has a user-defined composite or range type, which audit records cannot store safely",
                info.name
            ))
            .raise();
        }
    }
    // Excluded columns go to the triggers by attribute number, so renaming a column does not
    // stop excluding it.
    let args: Vec<String> = types
        .iter()
        .filter(|(column, _, _)| excluded.contains(column))
        .map(|(_, _, attnum)| quote_literal(&attnum.to_string()))
        .collect();
    as_owner(|| {
        for (name, op, referencing) in TRIGGERS {
            Spi::run(&format!(
                "CREATE TRIGGER {name} AFTER {op} ON {} {referencing}
                 FOR EACH STATEMENT EXECUTE FUNCTION pgauth.audit_capture({})",
                info.name,
                args.join(", ")
            ))?;
        }
        Ok::<_, pgrx::spi::Error>(())
    })
    .map_err(|e| AuthError::Internal(format!("audit: creating the triggers failed: {e}")))
    .or_raise();
    let list: Vec<String> = excluded.iter().map(|c| json_string(c)).collect();
    as_owner(|| {
        record_event(
            "audit_enabled",
            &info.name,
            &format!("{{\"exclude_columns\": [{}]}}", list.join(", ")),
        )
    })
    .or_raise();
}

/// Stop auditing `tbl`. Its audit rows stay.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_audit_disable(tbl: PgRelation) {
    let info = table_info(tbl.oid()).or_raise();
    drop(tbl);
    check_table_admin(&info, "auth_audit_disable").or_raise();
    if !info.audited {
        AuthError::AuditNotEnabled(info.name.clone()).raise();
    }
    as_owner(|| {
        for (name, _, _) in TRIGGERS {
            Spi::run(&format!("DROP TRIGGER IF EXISTS {name} ON {}", info.name))?;
        }
        Ok::<_, pgrx::spi::Error>(())
    })
    .map_err(|e| AuthError::Internal(format!("audit: dropping the triggers failed: {e}")))
    .or_raise();
    as_owner(|| record_event("audit_disabled", &info.name, "{}")).or_raise();
}

// ---------------------------------------------------------------------------------------------
// Retention

/// Remove the chain entries up to `through_position` and all their audit records, after checking
/// them, leaving a checkpoint (position and chain digest) from which the rest stays verifiable.
/// Superuser only. Export the rows first (README, "Retention").
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_audit_purge(through_position: i64) -> i64 {
    if !unsafe { pg_sys::superuser_arg(caller()) } {
        AuthError::AuditPermissionDenied("auth_audit_purge requires a superuser".into()).raise();
    }
    // No sealer appends while the chain is checked and cut (released at the end of the
    // transaction).
    unsafe {
        let tag = pgauth_lock_tag(CHAIN_LOCK_KEY);
        pg_sys::LockAcquire(
            &tag,
            pg_sys::ExclusiveLock as pg_sys::LOCKMODE,
            false,
            false,
        );
    }
    let v = as_owner(|| verify(None, None)).or_raise();
    if !v.ok {
        AuthError::InvalidRequest(format!(
            "the audit log does not verify (first bad id {:?}: {}); nothing was purged",
            v.first_bad_id,
            v.reason.unwrap_or_default()
        ))
        .raise();
    }
    /// Clears the purging flag however the purge ends: also when its error is caught by a
    /// savepoint (a subtransaction abort does not reach the transaction callback).
    struct Purging;
    impl Drop for Purging {
        fn drop(&mut self) {
            STATE.with(|s| s.borrow_mut().purging = false);
        }
    }
    let purged = as_owner(|| {
        STATE.with(|s| s.borrow_mut().purging = true);
        let _purging = Purging;
        Spi::connect_mut(|client| {
            let found = client
                .update(
                    "INSERT INTO pgauth.audit_checkpoints (position, chain_digest, horizon,
                                                           purged_events)
                     SELECT c.position, c.chain_digest, c.horizon,
                            (SELECT coalesce(sum(r.event_count), 0)::bigint
                               FROM pgauth.audit_records r
                               JOIN pgauth.audit_chain_txns t ON t.txid = r.txid
                              WHERE t.position <= $1)
                       FROM pgauth.audit_chain c WHERE c.position = $1
                     RETURNING purged_events",
                    None,
                    &[through_position.into()],
                )?
                .first()
                .get::<i64>(1)?;
            let Some(rows) = found else {
                return Ok(None);
            };
            client.update(
                "DELETE FROM pgauth.audit_records l USING pgauth.audit_chain_txns t
                  WHERE t.position <= $1 AND l.txid = t.txid",
                None,
                &[through_position.into()],
            )?;
            client.update(
                "DELETE FROM pgauth.audit_chain WHERE position <= $1",
                None,
                &[through_position.into()],
            )?;
            Ok::<_, pgrx::spi::Error>(Some(rows))
        })
    })
    .map_err(|e| AuthError::Internal(format!("audit: purge failed: {e}")))
    .or_raise();
    let Some(purged) = purged else {
        AuthError::InvalidRequest(format!(
            "audit chain position {through_position} does not exist"
        ))
        .raise()
    };
    as_owner(|| {
        record_event(
            "audit_purged",
            "pgauth.audit_log",
            &format!("{{\"through_position\": {through_position}, \"events\": {purged}}}"),
        )
    })
    .or_raise();
    purged
}

// ---------------------------------------------------------------------------------------------
// Reading stored records back: pgauth.audit_record_events(record tid, record_id bigint), used by
// the view pgauth.audit_log.
//
// The function reads the record itself, from pgauth.audit_records at the given row, under the
// query's snapshot: no caller can hand it bytes to decode. Every stored value is checked
// (`values`) before PostgreSQL reads it, and shown by pgauth or by a built-in output function
// (never a cast or operator looked up by type, which the owner of a type could define). A record
// that cannot be read (forged, or a type changed under it) becomes one marked row instead of an
// error, so it never hides the rest of the log.

/// The key of the one value a record that could not be read shows in new_values.
const READ_ERROR_KEY: &str = "pgauth_audit_error";

use super::frames::{Column, Layout};
use super::values::{self, Kind};

/// The allow-list: how the stored values of type `oid` are checked and shown, or why they are
/// not read from stored bytes (such columns are stored as their text form at capture).
unsafe fn value_kind(oid: pg_sys::Oid) -> Result<Kind, String> {
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

/// The columns of a shape, with the layout of its stored tuples. A non-built-in type must still
/// exist with the OID and name the record was written with (a type dropped, renamed, or
/// restored under another OID is not guessed at), and be one `value_kind` reads.
unsafe fn read_columns(cols: &[Column]) -> Result<(Vec<ReadColumn>, Vec<Layout>), String> {
    if cols.len() > pg_sys::MaxTupleAttributeNumber as usize {
        return Err("an audit record shape with too many columns".into());
    }
    let mut read = Vec::with_capacity(cols.len());
    let mut layout = Vec::with_capacity(cols.len());
    for c in cols {
        let (kind, l) = if c.text {
            (
                Kind::Text {
                    oid: pg_sys::TEXTOID.to_u32(),
                },
                (-1, b'i'),
            )
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
unsafe fn varlena_datum(payload: &[u8]) -> pg_sys::Datum {
    let total = payload.len() + 4;
    let p = pg_sys::palloc(total).cast::<u8>();
    pgrx::varlena::set_varsize_4b(p.cast(), total as i32);
    std::ptr::copy_nonoverlapping(payload.as_ptr(), p.add(4), payload.len());
    pg_sys::Datum::from(p)
}

/// The text of a checked value from its type's output function, which must be built in.
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
type EventRow = (i64, [Option<pg_sys::Datum>; 3]);

unsafe fn jsonb_datum(text: Vec<u8>) -> Result<pg_sys::Datum, String> {
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
unsafe fn decode_rows(
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
unsafe fn decode_events(events: &[u8]) -> Result<Vec<EventRow>, String> {
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

/// A varlena column of a pgauth.audit_records row, copied out of the buffer: inline, or an
/// on-disk TOAST pointer into audit_records' own TOAST table (never another table's, never an
/// in-memory pointer).
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
            let att = (*desc).attrs.as_ptr().add(i);
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
unsafe fn record_events(
    tid: pg_sys::ItemPointerData,
    record_id: i64,
) -> Result<Vec<EventRow>, String> {
    let context = pg_sys::CurrentMemoryContext;
    let owner = pg_sys::CurrentResourceOwner;
    pg_sys::BeginInternalSubTransaction(std::ptr::null());
    pg_sys::MemoryContextSwitchTo(context);
    let result = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
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
    }))
    .catch_others(|e| {
        Err(match e {
            pgrx::pg_sys::panic::CaughtError::PostgresError(r)
            | pgrx::pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_string(),
            _ => "unexpected error".to_string(),
        })
    })
    .execute();
    match result {
        Ok(_) => pg_sys::ReleaseCurrentSubTransaction(),
        Err(_) => pg_sys::RollbackAndReleaseCurrentSubTransaction(),
    }
    pg_sys::MemoryContextSwitchTo(context);
    pg_sys::CurrentResourceOwner = owner;
    result
}

/// `pgauth.audit_record_events(record tid, record_id bigint)`: the events of the audit record
/// stored at `record` (its ctid) whose id is `record_id`, as (id, row_key, old_values,
/// new_values); no rows when there is none. Only for roles that may read the log (SELECT on
/// pgauth.audit_log or pgauth.audit_records, else 42501). A record that cannot be read gives
/// one row: its id, and new_values {"pgauth_audit_error": why}.
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
