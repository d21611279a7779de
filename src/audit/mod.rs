//! Audit: the canonical serialisation of audit records, their SHA3-512 digests, the
//! per-transaction digests and the hash chain over them, and the verifier that finds the first
//! bad record.
//!
//! Everything here is plain Rust with no pgrx types; `sql.rs` (triggers, the commit-time chain
//! append, SPI) is built on top. This folder never decides *what* is audited — only how an
//! event is made tamper-evident and how that is checked.
//!
//! # Definitions (stable: changing any byte breaks every stored chain)
//!
//! All integers are big-endian. `field(x)` is `0x00` when x is NULL and
//! `0x01 || u32(len(x)) || x` otherwise, so no two different records serialise to the same bytes.
//!
//! ```text
//! record_digest = SHA3-512("pgauth audit record v3" || field(table_name: UTF-8)
//!                 || field(shape: UTF-8) || field(id: i64) || field(last_id: i64)
//!                 || field(event_count: i64) || field(occurred_at: i64 µs since 2000-01-01 UTC)
//!                 || field(txid: u64) || field(db_user: UTF-8) || field(app_user_id: 16 bytes)
//!                 || field(client_addr: inet text) || field(event: UTF-8) || field(rows: bytes)
//!                 || field(events: UTF-8))
//! txn_digest    = SHA3-512("pgauth audit txn v1" || u64(txid) || record_digest_1 || …
//!                 || record_digest_n || u64(record_count) || i64(first_id) || i64(last_id))
//!                 (records in id order; a record's id is its first event's id; first_id and
//!                 last_id are the transaction's first and last event ids)
//! chain_digest  = SHA3-512("pgauth audit chain v2" || previous chain_digest (64 zero bytes
//!                 before position 1) || i64(position) || u64(from_horizon) || u64(horizon)
//!                 || u64(n) || for each of the entry's n transactions, in txid order:
//!                 u64(txid) || i64(first_id) || i64(last_id) || i64(record_count) || txn_digest)
//! ```
//!
//! A record holds the events of one statement (up to `RECORD_EVENTS` of them; a bigger
//! statement writes several records) or one security event. Changed rows are stored as `shape`
//! and `rows` (PostgreSQL's tuple bytes, see `frames`); security events and TRUNCATE as
//! `events`, the JSON array text `[[id, row_key, old_values, new_values], …]`. The digest
//! covers the bytes as stored, so any change to any event changes it.
//! Events are stored once as text and expanded by the view `pgauth.audit_log` (jsonb).

use std::collections::HashMap;

use sha3::{Digest, Sha3_512};

pub mod direct;
pub mod frames;
pub(crate) mod kept;
pub(crate) mod sql;
pub mod values;

/// Length of every digest in the audit log and chain, bytes.
pub const DIGEST_LEN: usize = 64;
pub type AuditDigest = [u8; DIGEST_LEN];

const RECORD_TAG: &[u8] = b"pgauth audit record v3";
const TXN_TAG: &[u8] = b"pgauth audit txn v1";
const CHAIN_TAG: &[u8] = b"pgauth audit chain v2";

/// The chain digest "before" position 1.
pub const GENESIS: AuditDigest = [0u8; DIGEST_LEN];

/// Events a statement puts in one record at most; bigger statements write several records.
pub const RECORD_EVENTS: i64 = 10_000;

/// One audit record as stored (one statement's events, or one security event), every field
/// that its digest covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditRecord {
    /// The id of its first event.
    pub id: i64,
    /// The id of its last event.
    pub last_id: i64,
    pub event_count: i64,
    /// Microseconds since 2000-01-01 00:00:00 UTC (PostgreSQL's timestamptz).
    pub occurred_at: i64,
    pub txid: u64,
    pub db_user: Option<String>,
    pub app_user_id: Option<[u8; 16]>,
    /// The inet's text form, e.g. `127.0.0.1` or `10.0.0.0/8`.
    pub client_addr: Option<String>,
    pub event: String,
    pub table_name: Option<String>,
    /// The columns of `rows` (`frames::shape_json`).
    pub shape: Option<String>,
    /// Changed rows as tuple frames (`frames`).
    pub rows: Option<Vec<u8>>,
    /// JSON array text: `[[id, row_key, old_values, new_values], …]`.
    pub events: Option<String>,
}

/// Borrowed view of the fields, so the SQL layer can hash datums without copying them.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordFields<'a> {
    pub id: i64,
    pub last_id: i64,
    pub event_count: i64,
    pub occurred_at: i64,
    pub txid: u64,
    pub db_user: Option<&'a [u8]>,
    pub app_user_id: Option<&'a [u8]>,
    pub client_addr: Option<&'a [u8]>,
    pub event: Option<&'a [u8]>,
    pub table_name: Option<&'a [u8]>,
    pub shape: Option<&'a [u8]>,
    pub rows: Option<&'a [u8]>,
    pub events: Option<&'a [u8]>,
}

impl AuditRecord {
    pub fn fields(&self) -> RecordFields<'_> {
        RecordFields {
            id: self.id,
            last_id: self.last_id,
            event_count: self.event_count,
            occurred_at: self.occurred_at,
            txid: self.txid,
            db_user: self.db_user.as_deref().map(str::as_bytes),
            app_user_id: self.app_user_id.as_ref().map(|u| u.as_slice()),
            client_addr: self.client_addr.as_deref().map(str::as_bytes),
            event: Some(self.event.as_bytes()),
            table_name: self.table_name.as_deref().map(str::as_bytes),
            shape: self.shape.as_deref().map(str::as_bytes),
            rows: self.rows.as_deref(),
            events: self.events.as_deref().map(str::as_bytes),
        }
    }

    pub fn digest(&self) -> AuditDigest {
        record_digest(&self.fields())
    }
}

/// Feeds the canonical serialisation to `sink` piece by piece.
fn field(sink: &mut impl FnMut(&[u8]), value: Option<&[u8]>) {
    match value {
        None => sink(&[0]),
        Some(bytes) => {
            // Longer than a PostgreSQL value can be (1 GB); cannot happen, but never wrap.
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            sink(&[1]);
            sink(&len.to_be_bytes());
            sink(bytes);
        }
    }
}

/// The start of the serialisation, the same for every record of one table shape (so its hash
/// state can be kept and cloned): tag, table_name, shape.
pub fn serialise_prefix(
    table_name: Option<&[u8]>,
    shape: Option<&[u8]>,
    sink: &mut impl FnMut(&[u8]),
) {
    sink(RECORD_TAG);
    field(sink, table_name);
    field(sink, shape);
}

/// The rest of the serialisation, after `serialise_prefix`.
pub fn serialise_rest(f: &RecordFields<'_>, sink: &mut impl FnMut(&[u8])) {
    field(sink, Some(&f.id.to_be_bytes()));
    field(sink, Some(&f.last_id.to_be_bytes()));
    field(sink, Some(&f.event_count.to_be_bytes()));
    field(sink, Some(&f.occurred_at.to_be_bytes()));
    field(sink, Some(&f.txid.to_be_bytes()));
    field(sink, f.db_user);
    field(sink, f.app_user_id);
    field(sink, f.client_addr);
    field(sink, f.event);
    field(sink, f.rows);
    field(sink, f.events);
}

/// Feeds the canonical serialisation to `sink` piece by piece.
pub fn serialise_record(f: &RecordFields<'_>, sink: &mut impl FnMut(&[u8])) {
    serialise_prefix(f.table_name, f.shape, sink);
    serialise_rest(f, sink);
}

/// The hash state after a table shape's prefix: clone it for each record of that shape.
pub fn prefix_hasher(table_name: Option<&[u8]>, shape: Option<&[u8]>) -> Sha3_512 {
    let mut h = Sha3_512::new();
    serialise_prefix(table_name, shape, &mut |b| h.update(b));
    h
}

/// `record_digest` of a record whose table_name and shape are those `prefix` was made from.
pub fn record_digest_after(prefix: &Sha3_512, f: &RecordFields<'_>) -> AuditDigest {
    let mut h = prefix.clone();
    serialise_rest(f, &mut |b| h.update(b));
    h.finalize().into()
}

/// The serialisation as one buffer (tests and documentation; hashing streams it).
pub fn canonical_record_bytes(f: &RecordFields<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    serialise_record(f, &mut |b| out.extend_from_slice(b));
    out
}

pub fn record_digest(f: &RecordFields<'_>) -> AuditDigest {
    let mut h = Sha3_512::new();
    serialise_record(f, &mut |b| h.update(b));
    h.finalize().into()
}

/// Digest of one transaction's records, fed in id order; streams, so a transaction of any size
/// needs no memory beyond the hash state.
#[derive(Clone)]
pub struct TxnHasher {
    hash: Sha3_512,
    count: u64,
    first_id: Option<i64>,
    last_id: Option<i64>,
}

impl TxnHasher {
    pub fn new(txid: u64) -> Self {
        let mut hash = Sha3_512::new();
        hash.update(TXN_TAG);
        hash.update(txid.to_be_bytes());
        TxnHasher {
            hash,
            count: 0,
            first_id: None,
            last_id: None,
        }
    }

    /// Add a record: `id` and `last_id` are its first and last event ids.
    pub fn add(&mut self, id: i64, last_id: i64, record_digest: &AuditDigest) {
        self.first_id.get_or_insert(id);
        self.last_id = Some(self.last_id.map_or(last_id, |l| l.max(last_id)));
        self.count += 1;
        self.hash.update(record_digest);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn first_id(&self) -> Option<i64> {
        self.first_id
    }

    pub fn last_id(&self) -> Option<i64> {
        self.last_id
    }

    pub fn finish(self) -> AuditDigest {
        let mut hash = self.hash;
        hash.update(self.count.to_be_bytes());
        hash.update(self.first_id.unwrap_or(0).to_be_bytes());
        hash.update(self.last_id.unwrap_or(0).to_be_bytes());
        hash.finalize().into()
    }
}

/// `txn_digest` of records given as (id, last_id, record_digest) in id order.
pub fn txn_digest<'a>(
    txid: u64,
    records: impl IntoIterator<Item = (i64, i64, &'a AuditDigest)>,
) -> AuditDigest {
    let mut h = TxnHasher::new(txid);
    for (id, last_id, d) in records {
        h.add(id, last_id, d);
    }
    h.finish()
}

/// One transaction sealed in a chain entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedTxn {
    pub txid: u64,
    pub first_id: i64,
    pub last_id: i64,
    pub record_count: i64,
    pub txn_digest: Vec<u8>,
}

impl SealedTxn {
    /// The sealed form of a transaction whose records were all fed to `hasher`.
    pub fn sealed(txid: u64, hasher: TxnHasher) -> Self {
        SealedTxn {
            txid,
            first_id: hasher.first_id().unwrap_or(0),
            last_id: hasher.last_id().unwrap_or(0),
            record_count: hasher.count() as i64,
            txn_digest: hasher.finish().to_vec(),
        }
    }

    /// The sealed form of a transaction from all its records (id, last_id, record_digest), in
    /// any order: the digest takes them in id order.
    pub fn of_records(txid: u64, records: &mut [(i64, i64, AuditDigest)]) -> Self {
        records.sort_unstable_by_key(|r| r.0);
        let mut h = TxnHasher::new(txid);
        for (id, last_id, digest) in records.iter() {
            h.add(*id, *last_id, digest);
        }
        SealedTxn::sealed(txid, h)
    }
}

/// `chain_digest` of an entry; None when a stored transaction digest is not 64 bytes.
pub fn chain_digest(
    previous: &AuditDigest,
    position: i64,
    from_horizon: u64,
    horizon: u64,
    txns: &[SealedTxn],
) -> Option<AuditDigest> {
    let mut h = Sha3_512::new();
    h.update(CHAIN_TAG);
    h.update(previous);
    h.update(position.to_be_bytes());
    h.update(from_horizon.to_be_bytes());
    h.update(horizon.to_be_bytes());
    h.update((txns.len() as u64).to_be_bytes());
    for t in txns {
        if t.txn_digest.len() != DIGEST_LEN {
            return None;
        }
        h.update(t.txid.to_be_bytes());
        h.update(t.first_id.to_be_bytes());
        h.update(t.last_id.to_be_bytes());
        h.update(t.record_count.to_be_bytes());
        h.update(&t.txn_digest);
    }
    Some(h.finalize().into())
}

/// One row of `pgauth.audit_chain`: one seal, covering every transaction that wrote audit
/// records and finished in [from_horizon, horizon).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEntry {
    pub position: i64,
    /// The previous entry's horizon (0 for the first entry ever).
    pub from_horizon: u64,
    /// Every transaction below this one had finished when the entry was sealed.
    pub horizon: u64,
    /// In txid order.
    pub txns: Vec<SealedTxn>,
    pub chain_digest: Vec<u8>,
}

impl ChainEntry {
    /// The smallest event id the entry covers (where its problems are reported).
    pub fn first_id(&self) -> Option<i64> {
        self.txns.iter().map(|t| t.first_id).min()
    }
}

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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

#[cfg(test)]
mod tests;
