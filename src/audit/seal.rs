//! Sealing: chains the transactions that finished since the last seal.
//!
//! A transaction that writes audit records only inserts them; nothing orders writers or their
//! commits. Sealing takes the chain lock without waiting (another sealer means this one has
//! nothing to do), reads the head with a fresh snapshot, and takes that snapshot's xmin as the
//! new horizon: every transaction below it has finished, so the records of the committed ones
//! are all visible and no more can appear. It appends one chain entry for the transactions in
//! [previous horizon, new horizon) that wrote records, in transaction id order.
//!
//! The sealer runs at the commit of a transaction that wrote records (at most every
//! `pgauth.audit_seal_interval`, in a subtransaction that cannot fail the commit), and in
//! `auth_audit_seal()` / `auth_audit_head()`, which wait for a sealer at work.

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::raw::{full_xid, in_subtransaction, lock_chain, next_full_xid, now, serializable};
use super::spi::{with_snapshot, ActiveSnapshot, Arg, KeptPlan, Row, SnapshotKind, Spi};
use super::state::STATE;
use super::{chain_digest, AuditDigest, SealedTxn, GENESIS};
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::pg::roles::as_owner;

/// A commit-time seal reads at most this many records.
const SEAL_BATCH: i64 = 10_000;

pub(super) struct SealPlans {
    /// The last chain entry, or the last checkpoint when the chain is empty (after a purge of
    /// everything the chain goes on from there): (position, chain_digest, horizon).
    pub(super) head: KeptPlan,
    /// The records of the transactions in [$1, $2), by transaction and id.
    records: KeptPlan,
    append: KeptPlan,
}

/// At every transaction event of the backend (registered by `sql::install_xact_callback`):
/// seal before a commit that wrote records, forget the transaction's flags at its end.
#[pg_guard]
pub(super) extern "C-unwind" fn audit_xact_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT => {
            let (wrote, last) = STATE.with(|s| {
                let s = s.borrow();
                (s.wrote, s.last_seal_attempt)
            });
            let now = now();
            let interval = i64::from(crate::settings::audit().seal_interval_ms()) * 1000;
            // Not under SERIALIZABLE: reading with a newer snapshot than the transaction's
            // would add serialization conflicts to the application's transaction.
            if wrote && now - last >= interval && !serializable() {
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
fn seal_at_commit() {
    let (failure, complete) = match in_subtransaction(|| Ok(seal(false).or_raise().1)) {
        Ok(complete) => (None, complete),
        Err(message) => (Some(message), true),
    };
    if !complete {
        // Behind (more finished than one entry takes): the next commit seals again, so
        // sealing keeps up with any commit rate.
        STATE.with(|s| s.borrow_mut().last_seal_attempt = 0);
    }
    if let Some(message) = failure {
        pgrx::warning!("pgauth: sealing the audit chain at commit failed: {message}");
    }
}

/// The sealer's plans, prepared once per backend.
pub(super) fn seal_plans(spi: &Spi) -> AuthResult<&'static SealPlans> {
    if let Some(p) = STATE.with(|s| s.borrow().seal_plans) {
        return Ok(p);
    }
    let plans = SealPlans {
        head: spi.prepare_kept(
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
        records: spi.prepare_kept(
            "SELECT r.txid, r.id, r.last_id, r.record_digest FROM pgauth.audit_records r
              WHERE r.txid >= $1::text::xid8 AND r.txid < $2::text::xid8
              ORDER BY r.txid LIMIT $3",
            &[pg_sys::TEXTOID, pg_sys::TEXTOID, pg_sys::INT8OID],
        )?,
        append: spi.prepare_kept(
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
    // Kept for the backend's life: never freed, so a shared reference is safe to hand out.
    let plans: &'static SealPlans = Box::leak(Box::new(plans));
    STATE.with(|s| s.borrow_mut().seal_plans = Some(plans));
    Ok(plans)
}

fn chain_is_empty(spi: &Spi) -> AuthResult<bool> {
    let p = spi.prepare_kept("SELECT 1 FROM pgauth.audit_chain LIMIT 1", &[])?;
    let mut empty = true;
    let r = spi.for_each_row(&p, &[], |_| empty = false);
    p.free();
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
pub(super) fn seal(wait: bool) -> AuthResult<(i64, bool)> {
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
fn seal_entry(wait: bool) -> AuthResult<(i64, bool)> {
    as_owner(|| {
        // Transaction-level: released when the sealing transaction ends.
        if !lock_chain(wait) {
            return Ok((0, true));
        }
        let spi = Spi::connect()?;
        // Taken after the lock: sees every chain entry committed before, whatever the
        // isolation level of this transaction.
        with_snapshot(SnapshotKind::Latest, |snapshot| {
            let horizon = full_xid(next_full_xid(), snapshot.xmin());
            seal_range(&spi, snapshot, horizon, wait)
        })
    })
}

/// A record as the sealer reads it: (id, last_id, record_digest).
type RecordRef = (i64, i64, AuditDigest);

/// The committed transactions in [from, to) with their records' digests, in txid order, reading
/// at most `limit` records. When the limit was reached, the transaction read last is left out
/// (it may be incomplete) and its txid is returned.
fn read_txns(
    spi: &Spi,
    plan: &KeptPlan,
    from: u64,
    to: u64,
    limit: i64,
) -> AuthResult<(Vec<SealedTxn>, Option<u64>)> {
    let (from_text, to_text) = (from.to_string(), to.to_string());
    let args = [Arg::Text(&from_text), Arg::Text(&to_text), Arg::Int8(limit)];
    let mut read = 0i64;
    // The transaction being read: its txid and its records (id, last_id, digest).
    let mut current: Option<(u64, Vec<RecordRef>)> = None;
    let mut txns: Vec<SealedTxn> = Vec::new();
    let sealed =
        |(txid, mut records): (u64, Vec<RecordRef>)| SealedTxn::of_records(txid, &mut records);
    spi.for_each_row(plan, &args, |row: &Row| {
        read += 1;
        let txid = row.xid8(1).unwrap_or(0);
        let id = row.i64(2).unwrap_or(0);
        let last = row.i64(3).unwrap_or(id);
        let digest = row
            .bytea(4)
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

fn seal_range(
    spi: &Spi,
    snapshot: &ActiveSnapshot,
    mut horizon: u64,
    wait: bool,
) -> AuthResult<(i64, bool)> {
    let plans = seal_plans(spi)?;
    let mut head: Option<(i64, Vec<u8>, u64)> = None;
    spi.for_each_row(&plans.head, &[], |row| {
        head = (|| Some((row.i64(1)?, row.bytea(2)?, row.text(3)?.parse().ok()?)))();
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
        if chain_is_empty(spi)? {
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
    let (mut txns, cut) = read_txns(spi, &plans.records, from, horizon, SEAL_BATCH)?;
    let complete = cut.is_none();
    if let Some(cut) = cut {
        // The last transaction read may be cut off: leave it, and everything after it, for
        // the next entry; but one transaction bigger than a batch is sealed whole.
        horizon = match txns.last() {
            Some(t) => t.txid + 1,
            None => {
                txns = read_txns(spi, &plans.records, cut, cut + 1, i64::MAX)?.0;
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
    // One int8[] of a field of every transaction.
    let ints = |field: fn(&SealedTxn) -> i64| Arg::Int8Array(txns.iter().map(field).collect());
    let (from_text, horizon_text) = (from.to_string(), horizon.to_string());
    let args = [
        Arg::Int8(position),
        Arg::Text(&from_text),
        Arg::Text(&horizon_text),
        Arg::Int8(first_id),
        Arg::Int8(last_id),
        ints(|t| t.txid as i64),
        ints(|t| t.first_id),
        ints(|t| t.last_id),
        ints(|t| t.record_count),
        Arg::ByteaArray(txns.iter().map(|t| t.txn_digest.as_slice()).collect()),
        Arg::Bytea(link.as_slice()),
    ];
    spi.insert_with_snapshot(
        &plans.append,
        &args,
        snapshot,
        "appending to the audit chain",
    )?;
    Ok((chained, complete))
}
