//! Audit: the canonical serialisation of audit records, their SHA3-512 digests, the
//! per-transaction digests and the hash chain over them (this file), and the verifier that
//! finds the first bad record (`verifier.rs`).
//!
//! This file and the plain-Rust cores beside it have no pgrx types. The folder never decides
//! *what* is audited — only how an event is made tamper-evident and how that is checked.
//!
//! # Where each part lives
//!
//! Plain Rust (no `unsafe`, unit tested in `tests.rs`):
//! - `mod.rs` — record, transaction and chain digests (the definitions below);
//! - `verifier.rs` — the streaming verifier;
//! - `frames.rs` — a record's shape and its rows' tuple bytes; `values.rs` — checking stored
//!   values before PostgreSQL reads them; `direct.rs` — a write to pgauth's own tables as an
//!   event.
//!
//! In PostgreSQL, by phase:
//! - `capture.rs` — the statement trigger on audited tables (transition tables → records);
//! - `events.rs` — security events (`pgauth.record_event`) and the row trigger on pgauth's own
//!   tables;
//! - `record.rs` — writing a record: the direct heap insert into `pgauth.audit_records` (and
//!   what it skips compared with an INSERT), event ids, the append-only guard;
//! - `seal.rs` — the sealer that appends the hash chain (at commit and on demand);
//! - `verify.rs` — reading the chain and records for the verifier; the head;
//! - `admin.rs` — enabling/disabling audit on a table, purging;
//! - `read.rs` and `decode.rs` — reading a record back by tid and decoding it for the view
//!   `pgauth.audit_log`;
//! - `sql.rs` — the `#[pg_extern]` functions, thin wrappers over the phases;
//! - `spi.rs` — SPI with kept plans and type-checked rows, and snapshots, behind safe functions;
//! - `raw.rs` — the other raw PostgreSQL calls the phases share (locks, subtransactions,
//!   transaction ids, roles, C-function arguments);
//! - `state.rs` — what a backend keeps between calls;
//! - `kept.rs` — security events kept after a rollback (shared memory, a background worker).
//!
//! `unsafe` is confined to `spi.rs`, `raw.rs` and to the files that work on tuples themselves
//! (`capture`, `events`, `record`, `read`, `decode`) and `kept.rs`; `seal`, `verify`, `admin`
//! and `sql` have none.
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

use sha3::{Digest, Sha3_512};

mod admin;
mod capture;
mod decode;
pub mod direct;
mod events;
pub mod frames;
pub(crate) mod kept;
mod raw;
mod read;
mod record;
mod seal;
mod spi;
pub(crate) mod sql;
mod state;
pub mod values;
mod verifier;
mod verify;

pub use verifier::{Head, Verdict, Verifier};

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

/// Lower-case hexadecimal.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
