//! SQL layer of the audit log: the statement-level capture trigger, the per-row digest function,
//! the commit-time chain append, verification, and enabling/disabling audit on a table.
//!
//! Hot paths are C-ABI functions declared by hand in sql/audit.sql (`LANGUAGE c`): they read
//! their arguments as raw datums, so a row costs one jsonb-to-text conversion and one SHA3-512,
//! with no conversion through Rust types. Audit rows are written as the owner of schema pgauth
//! (`as_owner`), while the functions themselves run as the caller.
//!
//! Never write audit rows any other way than through `pgauth.audit_row_digest` in an INSERT:
//! that call is what tells this backend that the transaction needs a chain entry at commit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::hash::{Hash, Hasher};

use pgrx::prelude::*;
use pgrx::{pg_sys, FromDatum, IntoDatum, PgRelation};

use super::{
    chain_digest, row_digest, AuditDigest, AuditRow, ChainEntry, Head, RowFields, TxnHasher,
    Verdict, Verifier, GENESIS,
};
use crate::backend::{as_owner, caller, json_string, record_event};
use crate::error::{AuthError, AuthResult, OrRaise};

/// Key of the transaction-level advisory lock that orders chain appends (per database):
/// "pgauth" in ASCII followed by 0x0001.
pub const CHAIN_LOCK_KEY: i64 = 0x7067_6175_7468_0001;

/// Rows of one transaction are read back in batches of this many at commit.
const FETCH_BATCH: i64 = 10_000;

/// The audit rows this transaction wrote so far, hashed as they were written (ids only grow
/// within a backend, so write order is id order).
struct Pending {
    txid: u64,
    hasher: TxnHasher,
    /// (subtransaction, hasher state before its first audit row): restored if it aborts.
    checkpoints: Vec<(pg_sys::SubTransactionId, TxnHasher)>,
}

#[derive(Default)]
struct AuditState {
    /// Some means "append to the chain at commit".
    pending: Option<Pending>,
    /// True only while pgauth itself inserts audit rows: only those rows are chained.
    capturing: bool,
    record_plan: Option<SavedPlan>,
    /// Capture plans by trigger and table shape.
    capture_plans: HashMap<(pg_sys::Oid, u64), SavedPlan>,
    commit_plans: Option<CommitPlans>,
    /// Set only while auth_audit_purge deletes archived rows.
    purging: bool,
}

#[derive(Clone, Copy)]
struct SavedPlan(pg_sys::SPIPlanPtr);

#[derive(Clone, Copy)]
struct CommitPlans {
    head: SavedPlan,
    /// Only when the chain is empty: after a purge of everything, the chain goes on from there.
    checkpoint: SavedPlan,
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
    // Whatever reading a batch allocates (detoasted values) is freed with the batch.
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
        }
        pg_sys::MemoryContextSwitchTo(previous);
        pg_sys::MemoryContextReset(batch_cx);
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
// The per-row digest: pgauth.audit_row_digest(bigint, timestamptz, xid8, text, uuid, inet, text,
// text, jsonb, jsonb, jsonb) → bytea

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

finfo_v1!(pg_finfo_pgauth_audit_row_digest);
finfo_v1!(pg_finfo_pgauth_audit_capture);
finfo_v1!(pg_finfo_pgauth_audit_refuse_change);
finfo_v1!(pg_finfo_pgauth_audit_db_user);

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

/// Add audit row `id` to this transaction's digest, if pgauth is the one writing it.
fn note_audit_row(id: i64, txid: u64, digest: &AuditDigest) {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if !s.capturing {
            return;
        }
        let pending = s.pending.get_or_insert_with(|| Pending {
            txid,
            hasher: TxnHasher::new(txid),
            checkpoints: Vec::new(),
        });
        if pending.txid != txid {
            // Cannot happen: the state is cleared at the end of every transaction.
            *pending = Pending {
                txid,
                hasher: TxnHasher::new(txid),
                checkpoints: Vec::new(),
            };
        }
        let sub = unsafe { pg_sys::GetCurrentSubTransactionId() };
        // TopSubTransactionId: rows of the top level go only when the whole transaction does.
        let top_level = sub == 1;
        if !top_level
            && pending
                .checkpoints
                .last()
                .is_none_or(|(last, _)| sub > *last)
        {
            let before = pending.hasher.clone();
            pending.checkpoints.push((sub, before));
        }
        pending.hasher.add(id, digest);
    });
}

/// Run an INSERT of audit rows; their digests are added to this transaction's.
unsafe fn insert_audit_rows(
    plan: SavedPlan,
    args: &mut [pg_sys::Datum],
    nulls: &[std::ffi::c_char],
) {
    STATE.with(|s| s.borrow_mut().capturing = true);
    let rc = pg_sys::SPI_execute_plan(
        plan.0,
        if args.is_empty() {
            std::ptr::null_mut()
        } else {
            args.as_mut_ptr()
        },
        if nulls.is_empty() {
            std::ptr::null()
        } else {
            nulls.as_ptr()
        },
        false,
        0,
    );
    STATE.with(|s| s.borrow_mut().capturing = false);
    if rc != pg_sys::SPI_OK_INSERT as i32 {
        spi_error("writing audit rows", rc).raise();
    }
}

#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn pgauth_audit_row_digest(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let id = arg(fcinfo, 0).map(|d| d.value() as i64);
    let Some(id) = id else {
        AuthError::InvalidRequest("audit row id must not be NULL".into()).raise()
    };
    let text = |n| arg(fcinfo, n).map(|d| varlena_bytes(d));
    let jsonb = |n| arg(fcinfo, n).map(|d| jsonb_text(d));
    let fields = RowFields {
        id,
        occurred_at: arg(fcinfo, 1).map_or(0, |d| d.value() as i64),
        txid: arg(fcinfo, 2).map_or(0, |d| d.value() as u64),
        db_user: text(3),
        app_user_id: arg(fcinfo, 4)
            .map(|d| std::slice::from_raw_parts(d.cast_mut_ptr::<u8>().cast_const(), 16)),
        client_addr: arg(fcinfo, 5).map(|d| inet_text(d)),
        event: text(6),
        table_name: text(7),
        row_key: jsonb(8),
        old_values: jsonb(9),
        new_values: jsonb(10),
    };
    let digest = row_digest(&fields);
    note_audit_row(id, fields.txid, &digest);
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
// Append-only guard: BEFORE UPDATE OR DELETE OR TRUNCATE ... FOR EACH STATEMENT

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
        AuthError::AuditAppendOnly(format!("pgauth.{name} is append-only: {op} is not allowed"))
            .raise();
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

/// Everything a capture plan's SQL depends on: a change to any of these needs a new plan.
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
        (*att).attisdropped.hash(&mut h);
    }
    h.finish()
}

fn primary_key_columns(pk_index: pg_sys::Oid) -> AuthResult<Vec<String>> {
    if pk_index == pg_sys::Oid::INVALID {
        return Ok(Vec::new());
    }
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT a.attname::text FROM pg_catalog.pg_index i
               JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) ON true
               JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              WHERE i.indexrelid = $1 ORDER BY k.n",
            None,
            &[pk_index.into()],
        )?;
        let mut cols = Vec::new();
        for row in rows {
            if let Some(name) = row.get::<String>(1)? {
                cols.push(name);
            }
        }
        Ok::<_, pgrx::spi::Error>(cols)
    })
    .map_err(|e| AuthError::Internal(format!("audit: reading the primary key failed: {e}")))
}

/// The INSERT … SELECT that turns one statement's transition table(s) into audit rows.
fn capture_sql(event: u32, table: &str, pk: &[String], excluded: &[String]) -> String {
    let key = |alias: &str| {
        if pk.is_empty() {
            "NULL::jsonb".to_string()
        } else {
            let pairs: Vec<String> = pk
                .iter()
                .map(|c| format!("{}, {alias}.{}", quote_literal(c), quote_ident(c)))
                .collect();
            format!("pg_catalog.jsonb_build_object({})", pairs.join(", "))
        }
    };
    let values = |alias: &str| {
        if excluded.is_empty() {
            format!("pg_catalog.to_jsonb({alias}.*)")
        } else {
            let list: Vec<String> = excluded.iter().map(|c| quote_literal(c)).collect();
            format!(
                "(pg_catalog.to_jsonb({alias}.*) OPERATOR(pg_catalog.-) ARRAY[{}]::text[])",
                list.join(", ")
            )
        }
    };
    let (name, source) = match event {
        pg_sys::TRIGGER_EVENT_INSERT => (
            "insert",
            format!(
                "SELECT pg_catalog.nextval('pgauth.audit_log_id_seq'::pg_catalog.regclass) AS id,
                        {} AS k, NULL::jsonb AS o, {} AS v
                   FROM pgauth_new n OFFSET 0",
                key("n"),
                values("n")
            ),
        ),
        pg_sys::TRIGGER_EVENT_DELETE => (
            "delete",
            format!(
                "SELECT pg_catalog.nextval('pgauth.audit_log_id_seq'::pg_catalog.regclass) AS id,
                        {} AS k, {} AS o, NULL::jsonb AS v
                   FROM pgauth_old o OFFSET 0",
                key("o"),
                values("o")
            ),
        ),
        pg_sys::TRIGGER_EVENT_UPDATE => (
            "update",
            // Old and new transition rows are stored pairwise in the same order; row_number()
            // over each scan pairs them, also when the primary key itself changed.
            format!(
                "SELECT pg_catalog.nextval('pgauth.audit_log_id_seq'::pg_catalog.regclass) AS id,
                        u.k, pgauth.audit_changed(u.oj, u.nj) AS o,
                        pgauth.audit_changed(u.nj, u.oj) AS v
                   FROM (SELECT nn.k, oo.j AS oj, nn.j AS nj
                           FROM (SELECT pg_catalog.row_number() OVER () AS rn, {} AS j
                                   FROM pgauth_old o) oo
                           JOIN (SELECT pg_catalog.row_number() OVER () AS rn, {} AS k, {} AS j
                                   FROM pgauth_new n) nn ON oo.rn OPERATOR(pg_catalog.=) nn.rn
                          ORDER BY nn.rn) u
                 OFFSET 0",
                values("o"),
                key("n"),
                values("n")
            ),
        ),
        _ => (
            "truncate",
            "SELECT pg_catalog.nextval('pgauth.audit_log_id_seq'::pg_catalog.regclass) AS id,
                    NULL::jsonb AS k, NULL::jsonb AS o, NULL::jsonb AS v OFFSET 0"
                .to_string(),
        ),
    };
    let table = quote_literal(table);
    // $1 occurred_at, $2 txid, $3 db_user, $4 client_addr: fixed for the statement, computed
    // once by the trigger. The bound application user is an InitPlan: evaluated once.
    format!(
        "INSERT INTO pgauth.audit_log (id, occurred_at, txid, db_user, app_user_id, client_addr,
                                       event, table_name, row_key, old_values, new_values,
                                       row_digest)
         OVERRIDING SYSTEM VALUE
         SELECT r.id, $1, $2, $3, r.app_user, $4, '{name}', {table}, r.k, r.o, r.v,
                pgauth.audit_row_digest(r.id, $1, $2, $3, r.app_user, $4, '{name}', {table}, r.k,
                                        r.o, r.v)
           FROM (SELECT s.*, (SELECT pgauth.audit_app_user()) AS app_user
                   FROM ({source}) s OFFSET 0) r"
    )
}

/// The statement-level facts of an audit row, as SPI arguments $1..$4 (occurred_at, txid,
/// db_user, client_addr) and their null flags.
unsafe fn statement_facts() -> ([pg_sys::Datum; 4], [std::ffi::c_char; 4]) {
    let ts = pg_sys::GetCurrentStatementStartTimestamp();
    let txid = pg_sys::GetTopFullTransactionId().value;
    let user = cstr_owned(pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), false));
    let addr = pgrx::fcinfo::direct_function_call_as_datum(pg_sys::inet_client_addr, &[]);
    let zero = pg_sys::Datum::from(0);
    (
        [
            pg_sys::Datum::from(ts),
            pg_sys::Datum::from(txid),
            user.into_datum().unwrap_or(zero),
            addr.unwrap_or(zero),
        ],
        [
            b' ' as std::ffi::c_char,
            b' ' as std::ffi::c_char,
            b' ' as std::ffi::c_char,
            if addr.is_some() { b' ' } else { b'n' } as std::ffi::c_char,
        ],
    )
}

const FACT_TYPES: [pg_sys::Oid; 4] = [
    pg_sys::TIMESTAMPTZOID,
    pg_sys::XID8OID,
    pg_sys::TEXTOID,
    pg_sys::INETOID,
];

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
    let pk_index = pg_sys::RelationGetPrimaryKeyIndex(rel);
    let key = ((*trigger).tgoid, table_shape(rel, pk_index));
    as_owner(|| {
        let _spi = RawSpi::connect().or_raise();
        if pg_sys::SPI_register_trigger_data(trigdata) != pg_sys::SPI_OK_TD_REGISTER as i32 {
            spi_error("SPI_register_trigger_data", 0).raise();
        }
        let cached = STATE.with(|s| s.borrow().capture_plans.get(&key).copied());
        let plan = match cached {
            Some(plan) => plan,
            None => {
                let excluded: Vec<String> = (0..(*trigger).tgnargs as usize)
                    .map(|i| cstr_owned(*(*trigger).tgargs.add(i)))
                    .collect();
                let table = format!(
                    "{}.{}",
                    quote_ident(&cstr_owned(pg_sys::get_namespace_name(
                        (*(*rel).rd_rel).relnamespace
                    ))),
                    quote_ident(&cstr_owned((*(*rel).rd_rel).relname.data.as_ptr()))
                );
                let pk = primary_key_columns(pk_index).or_raise();
                let sql = capture_sql(event, &table, &pk, &excluded);
                let plan = prepare_kept(&sql, &FACT_TYPES).or_raise();
                STATE.with(|s| {
                    let mut s = s.borrow_mut();
                    // Plans of a table whose shape changed are dropped with the cache, rarely.
                    if s.capture_plans.len() > 1000 {
                        for (_, p) in s.capture_plans.drain() {
                            pg_sys::SPI_freeplan(p.0);
                        }
                    }
                    s.capture_plans.insert(key, plan);
                });
                plan
            }
        };
        let (mut facts, nulls) = statement_facts();
        insert_audit_rows(plan, &mut facts, &nulls);
    });
    pg_sys::Datum::from(0)
}

// ---------------------------------------------------------------------------------------------
// The chain append, at pre-commit of every transaction that wrote audit rows.

pub(crate) fn install_xact_callback() {
    unsafe {
        pg_sys::RegisterXactCallback(Some(audit_xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(audit_subxact_callback), std::ptr::null_mut());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn audit_xact_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT => {
            if let Some(pending) = STATE.with(|s| s.borrow_mut().pending.take()) {
                append_to_chain(pending).or_raise();
            }
        }
        pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE
            if STATE.with(|s| s.borrow().pending.is_some()) =>
        {
            AuthError::InvalidRequest(
                "cannot PREPARE a transaction that wrote pgauth audit rows".into(),
            )
            .raise();
        }
        pg_sys::XactEvent::XACT_EVENT_COMMIT
        | pg_sys::XactEvent::XACT_EVENT_ABORT
        | pg_sys::XactEvent::XACT_EVENT_PREPARE => {
            STATE.with(|s| {
                let mut s = s.borrow_mut();
                s.pending = None;
                s.purging = false;
                s.capturing = false;
            });
        }
        _ => {}
    }
}

/// A rolled-back subtransaction takes its audit rows with it: restore the transaction digest
/// to what it was before the subtransaction's (or its children's) first audit row.
#[pg_guard]
unsafe extern "C-unwind" fn audit_subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    sub: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event != pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        return;
    }
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.capturing = false;
        let Some(pending) = s.pending.as_mut() else {
            return;
        };
        let keep = pending.checkpoints.partition_point(|(id, _)| *id < sub);
        if keep < pending.checkpoints.len() {
            let mut dropped = pending.checkpoints.drain(keep..);
            if let Some((_, before)) = dropped.next() {
                pending.hasher = before;
            }
        }
    });
}

unsafe fn commit_plans() -> AuthResult<CommitPlans> {
    if let Some(p) = STATE.with(|s| s.borrow().commit_plans) {
        return Ok(p);
    }
    let plans = CommitPlans {
        head: prepare_kept(
            "SELECT position, chain_digest FROM pgauth.audit_chain ORDER BY position DESC LIMIT 1",
            &[],
        )?,
        checkpoint: prepare_kept(
            "SELECT position, chain_digest FROM pgauth.audit_checkpoints
              ORDER BY position DESC LIMIT 1",
            &[],
        )?,
        append: prepare_kept(
            "INSERT INTO pgauth.audit_chain
                 (position, txid, first_id, last_id, row_count, txn_digest, chain_digest)
             VALUES ($1, $2::text::xid8, $3, $4, $5, $6, $7)",
            &[
                pg_sys::INT8OID,
                pg_sys::TEXTOID,
                pg_sys::INT8OID,
                pg_sys::INT8OID,
                pg_sys::INT8OID,
                pg_sys::BYTEAOID,
                pg_sys::BYTEAOID,
            ],
        )?,
    };
    STATE.with(|s| s.borrow_mut().commit_plans = Some(plans));
    Ok(plans)
}

/// Chain this transaction: wait for the chain lock (held by other transactions only from their
/// pre-commit to the end of their commit), read the head as of now, append.
unsafe fn append_to_chain(pending: Pending) -> AuthResult<()> {
    let Pending { txid, hasher, .. } = pending;
    if hasher.count() == 0 {
        return Ok(());
    }
    as_owner(|| {
        pgrx::fcinfo::direct_function_call_as_datum(
            pg_sys::pg_advisory_xact_lock_int8,
            &[Some(pg_sys::Datum::from(CHAIN_LOCK_KEY))],
        );
        let _spi = RawSpi::connect()?;
        // A snapshot taken after the lock sees every chain entry committed before, whatever
        // the isolation level of this transaction.
        pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot());
        let plans = commit_plans()?;
        let mut head: Option<(i64, Vec<u8>)> = None;
        for plan in [plans.head, plans.checkpoint] {
            let rc = pg_sys::SPI_execute_snapshot(
                plan.0,
                std::ptr::null_mut(),
                std::ptr::null(),
                pg_sys::GetActiveSnapshot(),
                std::ptr::null_mut(),
                true,
                false,
                1,
            );
            if rc != pg_sys::SPI_OK_SELECT as i32 {
                return Err(spi_error("reading the audit chain head", rc));
            }
            if pg_sys::SPI_processed == 1 {
                let table = pg_sys::SPI_tuptable;
                let (t, d) = (*(*table).vals, (*table).tupdesc);
                head = col_i64(t, d, 1).zip(col_bytes(t, d, 2));
                break;
            }
        }
        let (position, previous) = match head {
            Some((p, d)) => (
                p + 1,
                <AuditDigest>::try_from(d.as_slice()).map_err(|_| {
                    AuthError::Internal(format!("audit chain position {p} has a malformed digest"))
                })?,
            ),
            None => (1, GENESIS),
        };
        let (count, first, last) = (
            hasher.count() as i64,
            hasher.first_id().unwrap_or(0),
            hasher.last_id().unwrap_or(0),
        );
        let txn = hasher.finish();
        let link = chain_digest(&previous, position, &txn);
        let txid_text = txid.to_string();
        let mut args = [
            pg_sys::Datum::from(position),
            txid_text
                .as_str()
                .into_datum()
                .unwrap_or(pg_sys::Datum::from(0)),
            pg_sys::Datum::from(first),
            pg_sys::Datum::from(last),
            pg_sys::Datum::from(count),
            txn.as_slice()
                .into_datum()
                .unwrap_or(pg_sys::Datum::from(0)),
            link.as_slice()
                .into_datum()
                .unwrap_or(pg_sys::Datum::from(0)),
        ];
        let nulls = [b' ' as std::ffi::c_char; 7];
        let rc =
            pg_sys::SPI_execute_plan(plans.append.0, args.as_mut_ptr(), nulls.as_ptr(), false, 0);
        pg_sys::PopActiveSnapshot();
        if rc != pg_sys::SPI_OK_INSERT as i32 {
            return Err(spi_error("appending to the audit chain", rc));
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// pgauth.record_event(event text, subject text, details jsonb DEFAULT '{}'): the one function
// every capability reports security events through.

finfo_v1!(pg_finfo_pgauth_record_event);

const RECORD_EVENT_SQL: &str = "
    WITH r AS MATERIALIZED (
        SELECT pg_catalog.nextval('pgauth.audit_log_id_seq'::pg_catalog.regclass) AS id,
               pg_catalog.statement_timestamp() AS ts, pg_catalog.pg_current_xact_id() AS txid,
               pgauth.audit_db_user() AS db_user, pgauth.audit_app_user() AS app_user,
               pg_catalog.inet_client_addr() AS addr,
               pg_catalog.jsonb_build_object('subject', $2::text) AS k,
               coalesce($3::jsonb, '{}'::jsonb) AS v)
    INSERT INTO pgauth.audit_log (id, occurred_at, txid, db_user, app_user_id, client_addr, event,
                                  table_name, row_key, old_values, new_values, row_digest)
    OVERRIDING SYSTEM VALUE
    SELECT r.id, r.ts, r.txid, r.db_user, r.app_user, r.addr, $1::text, NULL, r.k, NULL, r.v,
           pgauth.audit_row_digest(r.id, r.ts, r.txid, r.db_user, r.app_user, r.addr, $1::text,
                                   NULL, r.k, NULL, r.v)
      FROM r";

#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn pgauth_record_event(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let Some(event) = arg(fcinfo, 0) else {
        AuthError::InvalidRequest("audit event name must not be NULL".into()).raise()
    };
    let subject = arg(fcinfo, 1);
    let details = arg(fcinfo, 2);
    as_owner(|| {
        let _spi = RawSpi::connect().or_raise();
        let plan = match STATE.with(|s| s.borrow().record_plan) {
            Some(plan) => plan,
            None => {
                let plan = prepare_kept(
                    RECORD_EVENT_SQL,
                    &[pg_sys::TEXTOID, pg_sys::TEXTOID, pg_sys::JSONBOID],
                )
                .or_raise();
                STATE.with(|s| s.borrow_mut().record_plan = Some(plan));
                plan
            }
        };
        let zero = pg_sys::Datum::from(0);
        let mut args = [event, subject.unwrap_or(zero), details.unwrap_or(zero)];
        let nulls = [
            b' ' as std::ffi::c_char,
            if subject.is_some() { b' ' } else { b'n' } as std::ffi::c_char,
            if details.is_some() { b' ' } else { b'n' } as std::ffi::c_char,
        ];
        insert_audit_rows(plan, &mut args, &nulls);
    });
    pg_sys::Datum::from(0)
}

// ---------------------------------------------------------------------------------------------
// Verification and the head

fn read_head() -> AuthResult<Option<(i64, Vec<u8>)>> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT h.position, h.chain_digest FROM (
                 (SELECT position, chain_digest FROM pgauth.audit_chain
                   ORDER BY position DESC LIMIT 1)
                 UNION ALL
                 (SELECT position, chain_digest FROM pgauth.audit_checkpoints
                   ORDER BY position DESC LIMIT 1)) h
              ORDER BY h.position DESC LIMIT 1",
            None,
            &[],
        )?;
        let mut head = None;
        for row in rows {
            head = row.get::<i64>(1)?.zip(row.get::<Vec<u8>>(2)?);
        }
        Ok::<_, pgrx::spi::Error>(head)
    })
    .map_err(|e| AuthError::Internal(format!("audit: reading the chain head failed: {e}")))
}

/// The latest chain position and its digest: keep them outside the database, and pass them
/// to auth_audit_verify() later to detect a removed tail.
#[pg_extern(stable, parallel_restricted)]
fn auth_audit_head() -> TableIterator<'static, (name!(id, i64), name!(digest, Vec<u8>))> {
    require_audit_admin("auth_audit_head").or_raise();
    let head = as_owner(read_head).or_raise();
    TableIterator::new(head)
}

struct VerifyPlans {
    start: SavedPlan,
    anchor: SavedPlan,
    chain: SavedPlan,
    rows: SavedPlan,
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
        chain: prepare_kept(
            "SELECT position, txid::text, first_id, last_id, row_count, txn_digest, chain_digest
               FROM pgauth.audit_chain WHERE position >= $1 ORDER BY position",
            &[pg_sys::INT8OID],
        )?,
        rows: prepare_kept(
            "SELECT id, occurred_at, txid, db_user, app_user_id, client_addr, event,
                    table_name, row_key, old_values, new_values, row_digest
               FROM pgauth.audit_log WHERE id >= $1 ORDER BY id",
            &[pg_sys::INT8OID],
        )?,
    })
}

unsafe fn free_plans(p: VerifyPlans) {
    for plan in [p.start, p.anchor, p.chain, p.rows] {
        pg_sys::SPI_freeplan(plan.0);
    }
}

fn verify(from_id: Option<i64>, head: Option<Head>) -> AuthResult<Verdict> {
    unsafe {
        let _spi = RawSpi::connect()?;
        let plans = verify_plans()?;
        // One snapshot for every read: the chain and the rows must agree.
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
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
        let mut verifier = Verifier::new(anchor.unwrap_or(GENESIS), from_id, own);
        let mut first_entry_id: Option<i64> = None;
        let mut scan_from = from_id.unwrap_or(i64::MIN);
        let mut malformed = None;
        for_each_row(plans.chain, &mut [pg_sys::Datum::from(start)], |t, d| {
            let entry = (|| {
                Some(ChainEntry {
                    position: col_i64(t, d, 1)?,
                    txid: col_text(t, d, 2)?.parse().ok()?,
                    first_id: col_i64(t, d, 3)?,
                    last_id: col_i64(t, d, 4)?,
                    row_count: col_i64(t, d, 5)?,
                    txn_digest: col_bytes(t, d, 6)?,
                    chain_digest: col_bytes(t, d, 7)?,
                })
            })();
            match entry {
                Some(e) => {
                    first_entry_id.get_or_insert(e.first_id);
                    scan_from = scan_from.min(e.first_id);
                    verifier.add_entry(e);
                }
                None => malformed = col_i64(t, d, 1).or(Some(0)),
            }
        })?;
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
        for_each_row(plans.rows, &mut [pg_sys::Datum::from(scan_from)], |t, d| {
            let app_user_id = column(t, d, 5).map(|v| {
                let mut u = [0u8; 16];
                u.copy_from_slice(std::slice::from_raw_parts(v.cast_mut_ptr::<u8>(), 16));
                u
            });
            // The same conversions as audit_row_digest: xid8 as u64, inet and jsonb through
            // their output functions.
            let owned = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let json = |n| column(t, d, n).map(|v| owned(jsonb_text(v)));
            let row = AuditRow {
                id: col_i64(t, d, 1).unwrap_or(0),
                occurred_at: col_i64(t, d, 2).unwrap_or(0),
                txid: column(t, d, 3).map_or(0, |v| v.value() as u64),
                db_user: col_text(t, d, 4),
                app_user_id,
                client_addr: column(t, d, 6).map(|v| owned(inet_text(v))),
                event: col_text(t, d, 7).unwrap_or_default(),
                table_name: col_text(t, d, 8),
                row_key: json(9),
                old_values: json(10),
                new_values: json(11),
            };
            let stored = col_bytes(t, d, 12).unwrap_or_default();
            verifier.add_row(&row, &stored);
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
    let info = table_info(tbl.oid()).or_raise();
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
    let args: Vec<String> = excluded.iter().map(|c| quote_literal(c)).collect();
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

/// Remove the chain entries up to `through_position` and all their audit rows, after checking
/// them, leaving a checkpoint (position and chain digest) from which the rest stays verifiable.
/// Superuser only. Export the rows first (README, "Retention").
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_audit_purge(through_position: i64) -> i64 {
    if !unsafe { pg_sys::superuser_arg(caller()) } {
        AuthError::AuditPermissionDenied("auth_audit_purge requires a superuser".into()).raise();
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
    let purged = as_owner(|| {
        STATE.with(|s| s.borrow_mut().purging = true);
        let result = Spi::connect_mut(|client| {
            let found = client
                .update(
                    "INSERT INTO pgauth.audit_checkpoints (position, chain_digest, purged_rows)
                     SELECT c.position, c.chain_digest,
                            (SELECT coalesce(sum(row_count), 0) FROM pgauth.audit_chain
                              WHERE position <= $1)
                       FROM pgauth.audit_chain c WHERE c.position = $1
                     RETURNING purged_rows",
                    None,
                    &[through_position.into()],
                )?
                .first()
                .get::<i64>(1)?;
            let Some(rows) = found else {
                return Ok(None);
            };
            client.update(
                "DELETE FROM pgauth.audit_log l USING pgauth.audit_chain c
                  WHERE c.position <= $1 AND l.txid = c.txid",
                None,
                &[through_position.into()],
            )?;
            client.update(
                "DELETE FROM pgauth.audit_chain WHERE position <= $1",
                None,
                &[through_position.into()],
            )?;
            Ok::<_, pgrx::spi::Error>(Some(rows))
        });
        STATE.with(|s| s.borrow_mut().purging = false);
        result
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
            &format!("{{\"through_position\": {through_position}, \"rows\": {purged}}}"),
        )
    })
    .or_raise();
    purged
}
