//! Verification: reads the chain and the records under one snapshot and feeds them to the
//! streaming `Verifier` (`verifier.rs`, plain Rust), in its three passes; and the head
//! (`auth_audit_head()`), the latest chain position and digest to keep outside the database.

use pgrx::pg_sys;

use super::raw::{next_full_xid, recovery_in_progress, top_txid};
use super::seal::{seal, seal_plans};
use super::spi::{with_snapshot, Arg, KeptPlan, Row, SnapshotKind, Spi};
use super::{AuditDigest, AuditRecord, ChainEntry, Head, SealedTxn, Verdict, Verifier, GENESIS};
use crate::error::AuthResult;
use crate::pg::roles::as_owner;

/// Every column a record digest covers, and the stored digest (`stored_record`).
const RECORD_COLUMNS: &str = "id, last_id, event_count, occurred_at, txid, db_user, app_user_id,
    client_addr, event, table_name, shape, rows, events, record_digest";

/// Chain entries verified together: their transactions are kept in memory until their records
/// have been read.
const VERIFY_CHUNK_ENTRIES: i64 = 64;

/// The latest chain position and its digest, after sealing what has finished.
pub(super) fn head() -> AuthResult<Option<(i64, Vec<u8>)>> {
    // A hot standby cannot write: it reports the head the primary sealed.
    if !recovery_in_progress() {
        seal(true)?;
    }
    // Read with a snapshot taken now (after the seal, and after any sealer it waited for),
    // not the statement's: the head must include every entry committed before.
    as_owner(|| {
        let spi = Spi::connect()?;
        with_snapshot(SnapshotKind::Latest, |_| {
            let plans = seal_plans(&spi)?;
            let mut head: Option<(i64, Vec<u8>)> = None;
            spi.for_each_row(&plans.head, &[], |row| {
                head = row.i64(1).zip(row.bytea(2));
            })?;
            Ok(head)
        })
    })
}

struct VerifyPlans {
    start: KeptPlan,
    anchor: KeptPlan,
    chain: KeptPlan,
    ids: KeptPlan,
    records_in: KeptPlan,
    records_out: KeptPlan,
    horizon: KeptPlan,
}

impl VerifyPlans {
    fn prepare(spi: &Spi) -> AuthResult<VerifyPlans> {
        // Verification is rare: plans are kept only for the call.
        Ok(VerifyPlans {
            start: spi.prepare_kept(
                "SELECT coalesce(
                     (SELECT min(position) FROM pgauth.audit_chain WHERE last_id >= $1),
                     (SELECT max(position) + 1 FROM pgauth.audit_chain),
                     (SELECT max(position) + 1 FROM pgauth.audit_checkpoints), 1)",
                &[pg_sys::INT8OID],
            )?,
            anchor: spi.prepare_kept(
                "SELECT chain_digest FROM pgauth.audit_chain WHERE position = $1
                 UNION ALL
                 SELECT chain_digest FROM pgauth.audit_checkpoints WHERE position = $1 LIMIT 1",
                &[pg_sys::INT8OID],
            )?,
            // A chunk of entries (at most $2), one row per sealed transaction.
            chain: spi.prepare_kept(
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
            ids: spi.prepare_kept(
                "SELECT id, last_id, event_count, txid FROM pgauth.audit_records
                  WHERE last_id >= $1 ORDER BY id, txid",
                &[pg_sys::INT8OID],
            )?,
            horizon: spi.prepare_kept(
                "SELECT coalesce(
                     (SELECT horizon::text FROM pgauth.audit_chain ORDER BY position DESC LIMIT 1),
                     (SELECT horizon::text FROM pgauth.audit_checkpoints
                       ORDER BY position DESC LIMIT 1),
                     '0')",
                &[],
            )?,
            // The records of the transactions in a chunk's horizons [$1, $2).
            records_in: spi.prepare_kept(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM pgauth.audit_records
                      WHERE txid >= $1::text::xid8 AND txid < $2::text::xid8 ORDER BY id"
                ),
                &[pg_sys::TEXTOID, pg_sys::TEXTOID],
            )?,
            // The records outside every verified entry's horizons: not sealed yet, or forged.
            records_out: spi.prepare_kept(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM pgauth.audit_records
                      WHERE (txid < $1::text::xid8 OR txid >= $2::text::xid8) AND last_id >= $3
                      ORDER BY id"
                ),
                &[pg_sys::TEXTOID, pg_sys::TEXTOID, pg_sys::INT8OID],
            )?,
        })
    }

    fn free(self) {
        for plan in [
            self.start,
            self.anchor,
            self.chain,
            self.ids,
            self.records_in,
            self.records_out,
            self.horizon,
        ] {
            plan.free();
        }
    }
}

/// A record read with RECORD_COLUMNS, and its stored digest. The same conversions as
/// audit_record_digest: xid8 as u64, inet through its output function, text as stored.
fn stored_record(row: &Row) -> (AuditRecord, Vec<u8>) {
    let record = AuditRecord {
        id: row.i64(1).unwrap_or(0),
        last_id: row.i64(2).unwrap_or(0),
        event_count: row.i32(3).map_or(0, i64::from),
        occurred_at: row.timestamptz(4).unwrap_or(0),
        txid: row.xid8(5).unwrap_or(0),
        db_user: row.text(6),
        app_user_id: row.uuid(7),
        client_addr: row.inet_text(8),
        event: row.text(9).unwrap_or_default(),
        table_name: row.text(10),
        shape: row.text(11),
        rows: row.bytea(12),
        events: row.text(13),
    };
    (record, row.bytea(14).unwrap_or_default())
}

/// Run a query of one row once (prepared, read, freed), handing the row to `f`.
fn read_once(spi: &Spi, sql: &str, f: impl FnMut(&Row)) -> AuthResult<()> {
    let p = spi.prepare_kept(sql, &[])?;
    let r = spi.for_each_row(&p, &[], f);
    p.free();
    r
}

/// Recompute every row digest, every transaction digest and the chain; the first bad audit id
/// and why. `from_id`: only from that id on; `head`: a stored head, to detect a cut tail.
pub(super) fn verify(from_id: Option<i64>, head: Option<Head>) -> AuthResult<Verdict> {
    let spi = Spi::connect()?;
    let plans = VerifyPlans::prepare(&spi)?;
    // One snapshot for every read: the chain and the rows must agree.
    let verdict = with_snapshot(SnapshotKind::Transaction, |_| {
        verify_with(&spi, &plans, from_id, head)
    })?;
    plans.free();
    Ok(verdict)
}

fn verify_with(
    spi: &Spi,
    plans: &VerifyPlans,
    from_id: Option<i64>,
    mut head: Option<Head>,
) -> AuthResult<Verdict> {
    // The last checkpoint: nothing before it can be checked any more (archived), and a
    // stored head taken at its position is checked against its digest.
    let mut checkpoint: Option<(i64, Vec<u8>)> = None;
    read_once(
        spi,
        "SELECT position, chain_digest FROM pgauth.audit_checkpoints
          ORDER BY position DESC LIMIT 1",
        |row| checkpoint = row.i64(1).zip(row.bytea(2)),
    )?;
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
    read_once(
        spi,
        "SELECT last_value FROM pgauth.audit_event_id_seq",
        |row| max_id = row.i64(1).unwrap_or(i64::MAX),
    )?;
    let mut start = 1i64;
    let from_arg = from_id.unwrap_or(i64::MIN);
    spi.for_each_row(&plans.start, &[Arg::Int8(from_arg)], |row| {
        start = row.i64(1).unwrap_or(1);
    })?;
    if from_id.is_none() {
        // Everything that is still there, from the oldest entry.
        let mut oldest = None;
        read_once(spi, "SELECT min(position) FROM pgauth.audit_chain", |row| {
            oldest = row.i64(1)
        })?;
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
        spi.for_each_row(&plans.anchor, &[Arg::Int8(start - 1)], |row| {
            anchor = row.bytea(1).and_then(|b| b.as_slice().try_into().ok());
        })?;
    }
    let own = top_txid();
    let mut sealed_below = 0u64;
    spi.for_each_row(&plans.horizon, &[], |row| {
        sealed_below = row.text(1).and_then(|h| h.parse().ok()).unwrap_or(0);
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
    // Pass 1: ids only, in id order.
    spi.for_each_row(&plans.ids, &[Arg::Int8(from_arg)], |row| {
        verifier.check_ids(
            row.i64(1).unwrap_or(0),
            row.i64(2).unwrap_or(0),
            row.i32(3).map_or(0, i64::from),
            row.xid8(4).unwrap_or(0),
        );
    })?;
    // Pass 2: the chain in chunks of entries, each with the records in its horizons.
    let mut first_entry_id: Option<i64> = None;
    let mut malformed = None;
    let mut covered: Option<(u64, u64)> = None;
    let mut position = start;
    loop {
        let mut entries: Vec<ChainEntry> = Vec::new();
        let args = [Arg::Int8(position), Arg::Int8(VERIFY_CHUNK_ENTRIES)];
        // One row per sealed transaction (or one with NULLs for an entry without any).
        spi.for_each_row(&plans.chain, &args, |row| {
            let Some(p) = row.i64(1) else {
                malformed = Some(0);
                return;
            };
            if entries.last().is_none_or(|e| e.position != p) {
                entries.push(ChainEntry {
                    position: p,
                    from_horizon: row.text(2).and_then(|h| h.parse().ok()).unwrap_or(0),
                    horizon: row.text(3).and_then(|h| h.parse().ok()).unwrap_or(0),
                    txns: Vec::new(),
                    chain_digest: row.bytea(4).unwrap_or_default(),
                });
            }
            let txn = (|| {
                Some(SealedTxn {
                    txid: row.text(5)?.parse().ok()?,
                    first_id: row.i64(6)?,
                    last_id: row.i64(7)?,
                    record_count: row.i64(8)?,
                    txn_digest: row.bytea(9)?,
                })
            })();
            match (txn, entries.last_mut()) {
                (Some(txn), Some(entry)) => entry.txns.push(txn),
                // An entry with no transactions at all is one row of NULLs; it fails its
                // chain digest. Anything else with NULLs is malformed.
                (None, _) if row.i64(10).unwrap_or(0) > 0 => malformed = Some(p),
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
        let args = [Arg::Text(&low), Arg::Text(&high)];
        spi.for_each_row(&plans.records_in, &args, |row| {
            let (record, stored) = stored_record(row);
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
    let args = [Arg::Text(&low), Arg::Text(&high), Arg::Int8(from_arg)];
    spi.for_each_row(&plans.records_out, &args, |row| {
        let (record, stored) = stored_record(row);
        verifier.add_record(&record, &stored);
    })?;
    Ok(verifier.finish(head.as_ref()))
}
