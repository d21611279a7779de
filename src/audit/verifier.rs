//! The streaming verifier: given the records' ids, the chain entries and the records (read by
//! `verify.rs` from the database), it recomputes every record digest, every transaction digest
//! and the chain, and names the first bad audit event id and why. Plain Rust, no pgrx types.

use std::collections::HashMap;

use super::{
    chain_digest, hex, AuditDigest, AuditRecord, ChainEntry, SealedTxn, TxnHasher, DIGEST_LEN,
    GENESIS,
};

/// What `auth_audit_verify` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub checked: i64,
    pub first_bad_id: Option<i64>,
    pub reason: Option<String>,
}

/// A stored head (`auth_audit_head()` taken earlier and kept outside the database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub position: i64,
    pub digest: Vec<u8>,
}

struct Expected {
    txn: SealedTxn,
    position: i64,
    hasher: TxnHasher,
    /// A record of this transaction was already reported; its digest failing too adds nothing.
    explained: bool,
}

/// Streaming verifier, in three passes:
///
/// 1. `check_ids` for every record, in id order (ids and counts only);
/// 2. in chunks: `add_entry` for some chain entries (in position order), `add_record` for every
///    record whose txid lies in those entries' horizons (in id order), then `end_chunk`;
/// 3. `add_record` for the records outside every entry's horizons (not sealed yet, or forged),
///    then `finish`.
///
/// Memory is one small entry per transaction of the current chunk.
///
/// Every problem is attached to an audit event id; the verdict names the smallest. A record
/// that fails its own digest is reported at its first event's id (exact for single-row
/// statements and security events). When records were removed (or a forger recomputed a
/// record's digest) only the transaction's digest fails, and the problem is reported at the
/// transaction's first id.
pub struct Verifier {
    /// The chain digest the first fed entry must follow.
    anchor: AuditDigest,
    previous: Option<(i64, AuditDigest)>,
    /// The horizon of the previous entry fed: the next one starts there.
    previous_horizon: Option<u64>,
    /// The transactions of the current chunk.
    by_txid: HashMap<u64, Expected>,
    /// Records below this id belong to entries before the verified range and are not checked.
    from_id: Option<i64>,
    /// Transaction of the verifying session: its records are not chained until it commits.
    own_txid: Option<u64>,
    /// Transactions from here up to `next_txid` are not sealed yet: their records are checked
    /// against their own digests only.
    sealed_below: u64,
    next_txid: u64,
    checked: i64,
    worst: Option<(i64, String)>,
    /// A problem that has no audit id (e.g. the tail was cut off).
    unplaced: Option<String>,
    /// The position of a stored head, and what the chain has there: its digest and first id.
    watched: Option<i64>,
    at_watched: Option<(AuditDigest, Option<i64>)>,
    /// The last event id of the previous record (`check_ids` takes them in id order).
    previous_last_id: Option<i64>,
    /// Records (id, last_id, txid) whose ids are wrong: reported once, left out of the chain.
    misnumbered: std::collections::HashSet<(i64, i64, u64)>,
    /// The highest event id reserved so far: no genuine record goes beyond it.
    max_id: i64,
}

fn to_digest(bytes: &[u8]) -> Option<AuditDigest> {
    bytes.try_into().ok()
}

impl Verifier {
    pub fn new(anchor: AuditDigest, from_id: Option<i64>, own_txid: Option<u64>) -> Self {
        Verifier {
            anchor,
            previous: None,
            previous_horizon: None,
            by_txid: HashMap::new(),
            from_id,
            own_txid,
            sealed_below: u64::MAX,
            next_txid: u64::MAX,
            previous_last_id: None,
            misnumbered: std::collections::HashSet::new(),
            max_id: i64::MAX,
            checked: 0,
            worst: None,
            unplaced: None,
            watched: None,
            at_watched: None,
        }
    }

    /// Records of transactions from `sealed_below` (the last seal's horizon) up to `next_txid`
    /// (the next transaction id the server will assign) are not chained yet.
    pub fn with_unsealed(mut self, sealed_below: u64, next_txid: u64) -> Self {
        self.sealed_below = sealed_below;
        self.next_txid = next_txid;
        self
    }

    /// The highest event id reserved so far (the id sequence's last value).
    pub fn with_max_id(mut self, max_id: i64) -> Self {
        self.max_id = max_id;
        self
    }

    /// The position of a stored head that `finish` will be given.
    pub fn watching(mut self, position: i64) -> Self {
        self.watched = Some(position);
        self
    }

    /// Record a problem that has no audit id (e.g. a stored head that does not match).
    pub fn report_unplaced(&mut self, reason: String) {
        self.unplaced = Some(reason);
    }

    /// Record a problem found outside the chain and records (e.g. a missing checkpoint).
    pub fn report(&mut self, id: i64, reason: String) {
        self.problem(id, reason);
    }

    fn problem(&mut self, id: i64, reason: String) {
        if self.worst.as_ref().is_none_or(|(w, _)| id < *w) {
            self.worst = Some((id, reason));
        }
    }

    pub fn add_entry(&mut self, e: ChainEntry) {
        let (prev_pos, prev_digest) = match self.previous {
            Some(p) => p,
            None => (e.position - 1, self.anchor),
        };
        // Entry-level problems are reported at the entry's first event id; an entry whose
        // transactions were all removed has none.
        let place = e.first_id();
        let entry_problem = |v: &mut Self, reason: String| match place {
            Some(id) => v.problem(id, reason),
            None => v.unplaced = Some(reason),
        };
        if e.position != prev_pos + 1 {
            entry_problem(
                self,
                format!(
                    "audit chain position {} follows position {}: chain entries were deleted, inserted or reordered",
                    e.position, prev_pos
                ),
            );
        }
        let stored_chain = to_digest(&e.chain_digest);
        let computed = chain_digest(&prev_digest, e.position, e.from_horizon, e.horizon, &e.txns);
        if computed.is_none() || computed != stored_chain {
            entry_problem(
                self,
                format!(
                    "audit chain entry at position {} does not follow from the previous one: the entry was modified, removed or reordered",
                    e.position
                ),
            );
        }
        if self.previous_horizon.is_some_and(|h| h != e.from_horizon) {
            entry_problem(
                self,
                format!(
                    "audit chain entry at position {} starts at transaction {}, not where the previous entry ended ({}): the entry was forged",
                    e.position,
                    e.from_horizon,
                    self.previous_horizon.unwrap_or(0)
                ),
            );
        }
        // Continue from what is stored, so one bad link is reported once.
        let next = stored_chain.unwrap_or(GENESIS);
        self.previous = Some((e.position, next));
        self.previous_horizon = Some(e.horizon);
        if self.watched == Some(e.position) {
            self.at_watched = Some((next, place));
        }
        let mut previous_txid = None;
        for t in e.txns {
            if t.txid < e.from_horizon || t.txid >= e.horizon {
                self.problem(
                    t.first_id,
                    format!(
                        "audit chain entry at position {} chains transaction {} outside its range [{}, {}): the entry was forged",
                        e.position, t.txid, e.from_horizon, e.horizon
                    ),
                );
            }
            if previous_txid.is_some_and(|p| p >= t.txid) {
                self.problem(
                    t.first_id,
                    format!(
                        "audit chain entry at position {} lists transaction {} out of order: the entry was forged",
                        e.position, t.txid
                    ),
                );
            }
            previous_txid = Some(t.txid);
            if self.by_txid.contains_key(&t.txid) {
                self.problem(
                    t.first_id,
                    format!(
                        "transaction {} appears twice in the audit chain (position {})",
                        t.txid, e.position
                    ),
                );
                continue;
            }
            let hasher = TxnHasher::new(t.txid);
            self.by_txid.insert(
                t.txid,
                Expected {
                    txn: t,
                    position: e.position,
                    hasher,
                    explained: false,
                },
            );
        }
    }

    /// Pass 1: one record's ids (records in id order). Ids are reserved in disjoint consecutive
    /// ranges: records never overlap, and none goes beyond what was reserved.
    pub fn check_ids(&mut self, id: i64, last_id: i64, event_count: i64, txid: u64) {
        let overlaps = self.previous_last_id.is_some_and(|p| id <= p);
        self.previous_last_id = Some(last_id.max(self.previous_last_id.unwrap_or(i64::MIN)));
        if overlaps || last_id < id || last_id - id + 1 != event_count || last_id > self.max_id {
            if self.from_id.is_none_or(|from| last_id >= from) {
                self.checked += event_count.max(1);
                self.problem(
                    id,
                    format!(
                        "audit record {id}..{last_id} ({event_count} events) overlaps another record or ids that were never reserved: it was inserted or renumbered"
                    ),
                );
            }
            self.misnumbered.insert((id, last_id, txid));
        }
    }

    /// Feed one stored record with its stored `record_digest` (passes 2 and 3, in id order).
    ///
    /// The transaction digest is built from the *stored* record digests: a record whose
    /// contents no longer match its own digest is reported at its id; a record whose digest was
    /// recomputed by a forger is caught by its transaction's digest.
    pub fn add_record(&mut self, record: &AuditRecord, stored_digest: &[u8]) {
        if self
            .misnumbered
            .contains(&(record.id, record.last_id, record.txid))
        {
            // Reported by check_ids.
            return;
        }
        if Some(record.txid) == self.own_txid {
            return;
        }
        let Some(expected) = self.by_txid.get_mut(&record.txid) else {
            if self.from_id.is_some_and(|from| record.last_id < from) {
                return;
            }
            self.checked += record.event_count.max(1);
            if record.txid >= self.sealed_below && record.txid < self.next_txid {
                // Committed since the last seal: only its own digest can be checked yet.
                if record.digest().as_slice() != stored_digest {
                    self.problem(
                        record.id,
                        format!(
                            "audit record {}..{} (not sealed yet) was modified: its contents do not match its record_digest",
                            record.id, record.last_id
                        ),
                    );
                }
                return;
            }
            self.problem(
                record.id,
                format!(
                    "audit record {} (transaction {}) is not covered by the audit chain: it was inserted outside pgauth",
                    record.id, record.txid
                ),
            );
            return;
        };
        self.checked += record.event_count.max(1);
        let stored = to_digest(stored_digest).unwrap_or(GENESIS);
        expected.hasher.add(record.id, record.last_id, &stored);
        let (first, last, position) = (
            expected.txn.first_id,
            expected.txn.last_id,
            expected.position,
        );
        let mut found = None;
        if record.id < first || record.last_id > last || record.last_id < record.id {
            found = Some(format!(
                "audit record {}..{} lies outside the ids {first}..{last} of its transaction (chain position {position}): it was inserted or renumbered",
                record.id, record.last_id
            ));
        } else if record.digest() != stored || stored_digest.len() != DIGEST_LEN {
            found = Some(format!(
                "audit record {}..{} was modified: its contents do not match its record_digest",
                record.id, record.last_id
            ));
        }
        if let Some(reason) = found {
            expected.explained = true;
            self.problem(record.id, reason);
        }
    }

    /// End of a chunk: every transaction of its entries has had all its records.
    pub fn end_chunk(&mut self) {
        let mut pending: Vec<(i64, String)> = Vec::new();
        for expected in self.by_txid.values() {
            let e = &expected.txn;
            let position = expected.position;
            let h = &expected.hasher;
            if expected.explained {
                continue;
            }
            if h.count() != e.record_count as u64 {
                pending.push((
                    e.first_id,
                    format!(
                        "transaction {} (chain position {position}) committed {} audit records, {} remain: records were deleted or added",
                        e.txid, e.record_count, h.count()
                    ),
                ));
            } else if h.first_id() != Some(e.first_id)
                || h.last_id() != Some(e.last_id)
                || h.clone().finish().as_slice() != e.txn_digest.as_slice()
            {
                pending.push((
                    e.first_id,
                    format!(
                        "the audit records of transaction {} (chain position {position}) do not match its digest: a record was modified, replaced or moved",
                        e.txid
                    ),
                ));
            }
        }
        for (id, reason) in pending {
            self.problem(id, reason);
        }
        self.by_txid.clear();
    }

    /// `head`: a stored head, whose position was given to `watching`.
    pub fn finish(mut self, head: Option<&Head>) -> Verdict {
        self.end_chunk();
        if let Some(head) = head {
            let seen = if self.watched == Some(head.position) {
                self.at_watched
            } else {
                None
            };
            match seen {
                Some((d, _)) if d.as_slice() == head.digest.as_slice() => {}
                Some((_, id)) => {
                    let reason = format!(
                        "audit chain position {} does not have the stored head digest {}…: the chain was rewritten",
                        head.position,
                        &hex(&head.digest)[..16.min(head.digest.len() * 2)]
                    );
                    match id {
                        Some(id) => self.problem(id, reason),
                        None => self.unplaced = Some(reason),
                    }
                }
                None => {
                    let last = self.previous.map(|p| p.0).unwrap_or(0);
                    self.unplaced = Some(format!(
                        "the stored head is at audit chain position {}, but the chain ends at position {last}: the tail of the audit log was removed",
                        head.position
                    ));
                }
            }
        }
        match (self.worst, self.unplaced) {
            (Some((id, reason)), _) => Verdict {
                ok: false,
                checked: self.checked,
                first_bad_id: Some(id),
                reason: Some(reason),
            },
            (None, Some(reason)) => Verdict {
                ok: false,
                checked: self.checked,
                first_bad_id: None,
                reason: Some(reason),
            },
            (None, None) => Verdict {
                ok: true,
                checked: self.checked,
                first_bad_id: None,
                reason: None,
            },
        }
    }
}
