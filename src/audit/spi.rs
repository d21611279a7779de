//! SPI as the SQL-level phases (`seal`, `verify`) use it, behind safe functions: a connection
//! (`Spi`), plans kept for the backend's life (`KeptPlan`) with typed arguments (`Arg`), read
//! through a cursor in batches with typed, type-checked columns (`Row`), an INSERT under a
//! given snapshot, and a snapshot pushed for a closure (`with_snapshot`).

use std::ffi::CString;

use pgrx::{pg_sys, FromDatum, IntoDatum};

use super::raw::inet_text;
use crate::error::{AuthError, AuthResult};

/// Records are read back in batches of this many.
const FETCH_BATCH: i64 = 1_000;

fn spi_error(what: &str, code: i32) -> AuthError {
    AuthError::Internal(format!("audit: {what} failed (SPI code {code})"))
}

// ---------------------------------------------------------------------------------------------
// SPI

/// A raw SPI connection; SPI_finish on drop. (An ERROR unwinds past it; the transaction abort
/// cleans SPI up.) Plans are used through it, so they never run unconnected.
pub(super) struct Spi(());

impl Spi {
    pub(super) fn connect() -> AuthResult<Spi> {
        // SAFETY: SPI_connect takes no pointers; a failure is reported by its return code.
        let rc = unsafe { pg_sys::SPI_connect() };
        if rc != pg_sys::SPI_OK_CONNECT as i32 {
            return Err(spi_error("SPI_connect", rc));
        }
        Ok(Spi(()))
    }

    /// Prepare and keep a plan for the life of the backend (or until `KeptPlan::free`).
    pub(super) fn prepare_kept(
        &self,
        sql: &str,
        argtypes: &'static [pg_sys::Oid],
    ) -> AuthResult<KeptPlan> {
        let c = CString::new(sql).map_err(|_| AuthError::Internal("NUL in audit SQL".into()))?;
        // SAFETY: connected (`self`); SPI_prepare copies the NUL-terminated query and the
        // argument types, which live for the call; a NULL plan is reported through SPI_result.
        unsafe {
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
            Ok(KeptPlan { plan, argtypes })
        }
    }

    /// The argument datums for `plan`, checked against the types it was prepared with.
    fn datums(plan: &KeptPlan, args: &[Arg<'_>]) -> AuthResult<Vec<pg_sys::Datum>> {
        if args.len() != plan.argtypes.len()
            || args
                .iter()
                .zip(plan.argtypes)
                .any(|(a, t)| a.type_oid() != *t)
        {
            return Err(AuthError::Internal(
                "audit: a plan was given arguments of other types than it was prepared with".into(),
            ));
        }
        Ok(args.iter().map(Arg::datum).collect())
    }

    /// Run `f` over every row of a kept plan, reading through a cursor under the active
    /// snapshot.
    pub(super) fn for_each_row(
        &self,
        plan: &KeptPlan,
        args: &[Arg<'_>],
        mut f: impl FnMut(&Row),
    ) -> AuthResult<()> {
        let mut datums = Self::datums(plan, args)?;
        let nulls = vec![b' ' as std::ffi::c_char; datums.len()];
        // SAFETY: connected (`self`); the plan is kept and not freed (`free` consumes it); the
        // datums match the plan's argument types (`datums`) and outlive the cursor's opening,
        // which copies them. Rows are handed to `f` only while their batch is alive, and the
        // batch context is reset only after `f` returned.
        unsafe {
            let portal = pg_sys::SPI_cursor_open(
                std::ptr::null(),
                plan.plan,
                datums.as_mut_ptr(),
                nulls.as_ptr(),
                true,
            );
            if portal.is_null() {
                return Err(spi_error("SPI_cursor_open", pg_sys::SPI_result));
            }
            // Whatever reading a row allocates (detoasted values: a record's rows can be
            // 64 MB) is freed after the row.
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
                    f(&Row {
                        tuple: *(*table).vals.add(i),
                        desc: (*table).tupdesc,
                    });
                    pg_sys::MemoryContextReset(batch_cx);
                }
                pg_sys::MemoryContextSwitchTo(previous);
                pg_sys::SPI_freetuptable(table);
            }
            pg_sys::MemoryContextDelete(batch_cx);
            pg_sys::SPI_cursor_close(portal);
        }
        Ok(())
    }

    /// Run an INSERT plan once under `snapshot` (`what` names it in an error).
    pub(super) fn insert_with_snapshot(
        &self,
        plan: &KeptPlan,
        args: &[Arg<'_>],
        snapshot: &ActiveSnapshot,
        what: &str,
    ) -> AuthResult<()> {
        let mut datums = Self::datums(plan, args)?;
        let nulls = vec![b' ' as std::ffi::c_char; datums.len()];
        // SAFETY: connected (`self`); the plan is kept; the datums match its argument types;
        // the snapshot is the active one, pushed by `with_snapshot` for as long as `snapshot`
        // is borrowed.
        let rc = unsafe {
            pg_sys::SPI_execute_snapshot(
                plan.plan,
                datums.as_mut_ptr(),
                nulls.as_ptr(),
                snapshot.0,
                std::ptr::null_mut(),
                false,
                false,
                0,
            )
        };
        if rc != pg_sys::SPI_OK_INSERT as i32 {
            return Err(spi_error(what, rc));
        }
        Ok(())
    }
}

impl Drop for Spi {
    fn drop(&mut self) {
        // SAFETY: this value was made by a successful SPI_connect.
        unsafe {
            pg_sys::SPI_finish();
        }
    }
}

/// A plan kept by SPI_keepplan, and the types of its arguments.
pub(super) struct KeptPlan {
    plan: pg_sys::SPIPlanPtr,
    argtypes: &'static [pg_sys::Oid],
}

impl KeptPlan {
    /// Free a plan kept only for one call.
    pub(super) fn free(self) {
        // SAFETY: a kept plan, freed once (this consumes it).
        unsafe {
            pg_sys::SPI_freeplan(self.plan);
        }
    }
}

/// One argument of a kept plan; never NULL.
pub(super) enum Arg<'a> {
    Int8(i64),
    Text(&'a str),
    Bytea(&'a [u8]),
    Int8Array(Vec<i64>),
    ByteaArray(Vec<&'a [u8]>),
}

impl Arg<'_> {
    fn type_oid(&self) -> pg_sys::Oid {
        match self {
            Arg::Int8(_) => pg_sys::INT8OID,
            Arg::Text(_) => pg_sys::TEXTOID,
            Arg::Bytea(_) => pg_sys::BYTEAOID,
            Arg::Int8Array(_) => pg_sys::INT8ARRAYOID,
            Arg::ByteaArray(_) => pg_sys::BYTEAARRAYOID,
        }
    }

    /// The datum, in the current memory context.
    fn datum(&self) -> pg_sys::Datum {
        let datum = match self {
            Arg::Int8(v) => Some(pg_sys::Datum::from(*v)),
            Arg::Text(v) => v.into_datum(),
            Arg::Bytea(v) => v.into_datum(),
            Arg::Int8Array(v) => v.clone().into_datum(),
            Arg::ByteaArray(v) => v.clone().into_datum(),
        };
        datum.unwrap_or(pg_sys::Datum::from(0))
    }
}

/// One row read by `Spi::for_each_row`, valid during the callback. Columns are numbered from 1;
/// each accessor checks the column's type, so a datum is never read as another type.
pub(super) struct Row {
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
}

impl Row {
    fn datum(&self, n: i32, expected: pg_sys::Oid) -> Option<pg_sys::Datum> {
        // SAFETY: tuple and descriptor come from SPI's tuple table, alive during the callback
        // that borrows this row; SPI_gettypeid checks `n`.
        unsafe {
            let found = pg_sys::SPI_gettypeid(self.desc, n);
            if found != expected {
                AuthError::Internal(format!(
                    "audit: column {n} of an audit query has type {}, not {}",
                    found.to_u32(),
                    expected.to_u32()
                ))
                .raise();
            }
            let mut isnull = false;
            let d = pg_sys::SPI_getbinval(self.tuple, self.desc, n, &mut isnull);
            (!isnull).then_some(d)
        }
    }

    pub(super) fn i64(&self, n: i32) -> Option<i64> {
        self.datum(n, pg_sys::INT8OID).map(|v| v.value() as i64)
    }

    pub(super) fn i32(&self, n: i32) -> Option<i32> {
        self.datum(n, pg_sys::INT4OID).map(|v| v.value() as i32)
    }

    /// Microseconds since 2000-01-01 UTC.
    pub(super) fn timestamptz(&self, n: i32) -> Option<i64> {
        self.datum(n, pg_sys::TIMESTAMPTZOID)
            .map(|v| v.value() as i64)
    }

    /// xid8 is a 64-bit pass-by-value type.
    pub(super) fn xid8(&self, n: i32) -> Option<u64> {
        self.datum(n, pg_sys::XID8OID).map(|v| v.value() as u64)
    }

    pub(super) fn text(&self, n: i32) -> Option<String> {
        let d = self.datum(n, pg_sys::TEXTOID)?;
        // SAFETY: a non-NULL text datum of this row.
        unsafe { String::from_datum(d, false) }
    }

    pub(super) fn bytea(&self, n: i32) -> Option<Vec<u8>> {
        let d = self.datum(n, pg_sys::BYTEAOID)?;
        // SAFETY: a non-NULL bytea datum of this row.
        unsafe { Vec::<u8>::from_datum(d, false) }
    }

    pub(super) fn uuid(&self, n: i32) -> Option<[u8; 16]> {
        let d = self.datum(n, pg_sys::UUIDOID)?;
        let mut u = [0u8; 16];
        // SAFETY: a non-NULL uuid datum points to its 16 bytes.
        u.copy_from_slice(unsafe { std::slice::from_raw_parts(d.cast_mut_ptr::<u8>(), 16) });
        Some(u)
    }

    /// An inet as its output function shows it.
    pub(super) fn inet_text(&self, n: i32) -> Option<String> {
        let d = self.datum(n, pg_sys::INETOID)?;
        // SAFETY: a non-NULL inet datum of this row.
        Some(String::from_utf8_lossy(unsafe { inet_text(d) }).into_owned())
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots

pub(super) enum SnapshotKind {
    /// A snapshot taken now (sees every transaction committed before).
    Latest,
    /// The transaction's snapshot (the statement's, below SERIALIZABLE).
    Transaction,
}

/// The active snapshot, while `with_snapshot` has it pushed.
pub(super) struct ActiveSnapshot(pg_sys::Snapshot);

impl ActiveSnapshot {
    /// The oldest transaction id still running when the snapshot was taken.
    pub(super) fn xmin(&self) -> u32 {
        // SAFETY: the active snapshot, pushed for as long as this value is borrowed.
        unsafe { (*self.0).xmin.into_inner() }
    }
}

/// Run `f` with a snapshot of `kind` pushed as the active one (popped after `f` returns; an
/// ERROR leaves it to the transaction abort).
pub(super) fn with_snapshot<R>(kind: SnapshotKind, f: impl FnOnce(&ActiveSnapshot) -> R) -> R {
    // SAFETY: both functions return a valid snapshot that PushActiveSnapshot copies as needed;
    // it is popped below, after `f`, which cannot keep the borrowed ActiveSnapshot.
    unsafe {
        pg_sys::PushActiveSnapshot(match kind {
            SnapshotKind::Latest => pg_sys::GetLatestSnapshot(),
            SnapshotKind::Transaction => pg_sys::GetTransactionSnapshot(),
        });
        let result = f(&ActiveSnapshot(pg_sys::GetActiveSnapshot()));
        pg_sys::PopActiveSnapshot();
        result
    }
}
