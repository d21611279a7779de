//! SPI for pgauth's own tables. Reads are read-only: pgrx's `Spi::get_one*` run read-write (and
//! with a row limit that skips statement triggers on DML), which a parallel worker may not do,
//! nor a hot standby; every read here also works inside a parallel query and on a standby.
//! Writes (`write_row`, `run`, `run_with_args`, `connect_mut`) refuse on a standby with 25006.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{SpiError, SpiTupleTable};

use crate::error::AuthError;

/// A query's first row, first column (None without a row).
pub fn read_one<T: pgrx::FromDatum + pgrx::IntoDatum>(
    query: &str,
    args: &[DatumWithOid],
) -> Result<Option<T>, SpiError> {
    read_row(query, args, |row| row.get::<T>(1)).map(Option::flatten)
}

/// A query's first row, read by `f` (None without a row), in a read-only SPI connection.
pub fn read_row<R>(
    query: &str,
    args: &[DatumWithOid],
    f: impl FnOnce(&SpiTupleTable) -> Result<R, SpiError>,
) -> Result<Option<R>, SpiError> {
    Spi::connect(|client| {
        let rows = client.select(query, Some(1), args)?;
        if rows.is_empty() {
            return Ok(None);
        }
        f(&rows.first()).map(Some)
    })
}

/// As [`read_row`] for a statement that writes or locks (`UPDATE … RETURNING`, `FOR UPDATE`).
pub fn write_row<R>(
    query: &str,
    args: &[DatumWithOid],
    f: impl FnOnce(&SpiTupleTable) -> Result<R, SpiError>,
) -> Result<Option<R>, SpiError> {
    connect_mut(|client| {
        let rows = client.update(query, None, args)?;
        if rows.is_empty() {
            return Ok(None);
        }
        f(&rows.first()).map(Some)
    })
}

/// An SPI failure on pgauth's own tables: an internal error (XX000), never the caller's fault.
pub fn spi_err(e: SpiError) -> AuthError {
    AuthError::Internal(format!("pgauth table access failed: {e}"))
}

/// Refuse a write on a hot standby with 25006 and a hint (pgrx's write path first assigns a
/// transaction id, which a standby answers with an internal error). Raises; returns when the
/// server is a primary.
fn refuse_on_standby() {
    // SAFETY: reads shared recovery state; callable in any backend.
    if unsafe { pg_sys::RecoveryInProgress() } {
        AuthError::ReadOnly.raise();
    }
}

/// `Spi::run` for pgauth's writes: refused on a hot standby (25006).
pub fn run(query: &str) -> Result<(), SpiError> {
    refuse_on_standby();
    Spi::run(query)
}

/// `Spi::run_with_args` for pgauth's writes: refused on a hot standby (25006).
pub fn run_with_args(query: &str, args: &[DatumWithOid]) -> Result<(), SpiError> {
    refuse_on_standby();
    Spi::run_with_args(query, args)
}

/// `Spi::connect_mut` for pgauth's writes: refused on a hot standby (25006).
pub fn connect_mut<R, F>(f: F) -> R
where
    F: FnOnce(&mut pgrx::spi::SpiClient<'_>) -> R,
{
    refuse_on_standby();
    Spi::connect_mut(f)
}
