//! Security events that outlive the caller's rollback.
//!
//! A failed sign-in (wrong password, wrong code, wrong API key, a lockout) writes its event in the
//! caller's transaction like every other event. If that transaction, or the savepoint or
//! exception block the event was written in, is rolled back, the event would be gone with it,
//! and an attacker who aborts after reading the answer would leave no trace. So each such event
//! is also remembered in the backend (`remember`); at commit the list is dropped, at an abort the
//! events that were undone are copied into a ring in shared memory, and the background worker
//! "pgauth event keeper" writes them in its own transaction, in the right database, with
//! `kept_after_rollback: true` and the original database user in the details.
//!
//! The ring ([`Ring`]) is plain Rust over fixed slots; `shared` maps it. When the ring is full
//! (the keeper is behind by [`SLOTS`] events), an event is written to the server log instead.

use std::ffi::c_void;
use std::mem::size_of;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;

/// Events the keeper may be behind by.
pub const SLOTS: usize = 512;
const EVENT_BYTES: usize = 48;
const SUBJECT_BYTES: usize = 256;
const DETAILS_BYTES: usize = 2048;

/// One kept event. All zeros is a free slot.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Slot {
    pub used: bool,
    pub database: u32,
    pub event_len: u16,
    pub subject_len: u16,
    pub details_len: u16,
    pub event: [u8; EVENT_BYTES],
    pub subject: [u8; SUBJECT_BYTES],
    pub details: [u8; DETAILS_BYTES],
}

/// An event to keep: its database, name, subject and details (JSON text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptEvent {
    pub database: u32,
    pub event: String,
    pub subject: String,
    pub details: String,
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The ring of kept events over fixed slots.
pub struct Ring<'a> {
    pub slots: &'a mut [Slot],
}

impl Ring<'_> {
    /// Store an event; false when every slot is taken. Details that do not fit are replaced by
    /// a note (they are JSON and must stay JSON).
    pub fn push(&mut self, e: &KeptEvent) -> bool {
        let Some(slot) = self.slots.iter_mut().find(|s| !s.used) else {
            return false;
        };
        let event = cut(&e.event, EVENT_BYTES);
        let subject = cut(&e.subject, SUBJECT_BYTES);
        let details = if e.details.len() <= DETAILS_BYTES {
            e.details.as_str()
        } else {
            r#"{"details_truncated": true}"#
        };
        slot.used = true;
        slot.database = e.database;
        slot.event_len = event.len() as u16;
        slot.subject_len = subject.len() as u16;
        slot.details_len = details.len() as u16;
        slot.event[..event.len()].copy_from_slice(event.as_bytes());
        slot.subject[..subject.len()].copy_from_slice(subject.as_bytes());
        slot.details[..details.len()].copy_from_slice(details.as_bytes());
        true
    }

    /// The database of some waiting event.
    pub fn next_database(&self) -> Option<u32> {
        self.slots.iter().find(|s| s.used).map(|s| s.database)
    }

    /// Take up to `max` waiting events of `database` out of the ring.
    pub fn take(&mut self, database: u32, max: usize) -> Vec<KeptEvent> {
        let mut out = Vec::new();
        for s in self.slots.iter_mut() {
            if out.len() == max {
                break;
            }
            if s.used && s.database == database {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                out.push(KeptEvent {
                    database,
                    event: text(&s.event[..s.event_len as usize]),
                    subject: text(&s.subject[..s.subject_len as usize]),
                    details: text(&s.details[..s.details_len as usize]),
                });
                s.used = false;
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Shared memory, the backend's list, the transaction callbacks and the keeper.

#[repr(C)]
struct Shared {
    lock: *mut pg_sys::LWLock,
    slots: [Slot; SLOTS],
}

const NAME: &std::ffi::CStr = c"pgauth kept events";
static mut SHARED: *mut Shared = std::ptr::null_mut();
thread_local! {
    /// Events written by this backend's open transaction: (subtransaction id, event).
    static WRITTEN: std::cell::RefCell<Vec<(pg_sys::SubTransactionId, KeptEvent)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// From `_PG_init` while preloading: the callbacks and the keeper (the ring is a region of
/// crate::pg::shmem).
pub(crate) fn install() {
    // SAFETY: static callbacks that ignore their NULL argument; called from _PG_init.
    unsafe {
        pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
    }
    BackgroundWorkerBuilder::new("pgauth event keeper")
        .set_type("pgauth event keeper")
        .set_library("pgauth")
        .set_function("pgauth_event_keeper_main")
        .enable_spi_access()
        // It connects to one database per run and exits when another one has events waiting.
        .set_restart_time(Some(std::time::Duration::from_secs(1)))
        .load();
}

/// The region of the ring (see crate::pg::shmem).
pub(crate) const REGION: crate::pg::shmem::Region = crate::pg::shmem::Region {
    name: NAME,
    size: size_of::<Shared>(),
    attach,
};

/// # Safety
/// `memory` is this region's shared memory (`size_of::<Shared>()` bytes) and `lock` its lock,
/// called once per process by crate::pg::shmem.
unsafe fn attach(memory: *mut u8, lock: *mut pg_sys::LWLock, fresh: bool) {
    // SAFETY: the caller's contract; SHARED is written only here, before any reader runs.
    unsafe {
        let shared = memory.cast::<Shared>();
        if fresh {
            (*shared).lock = lock;
        }
        SHARED = shared;
    }
}

fn with_ring<R>(f: impl FnOnce(&mut Ring<'_>) -> R) -> Option<R> {
    // SAFETY: SHARED is set once by `attach` at process start and only read afterwards.
    let shared = unsafe { SHARED };
    if shared.is_null() {
        return None;
    }
    // SAFETY: mapped at server start; the lock serialises access; `f` is plain Rust.
    unsafe {
        crate::pg::shmem::exclusive((*shared).lock, || {
            let mut ring = Ring {
                slots: &mut (*shared).slots,
            };
            Some(f(&mut ring))
        })
    }
}

/// Remember an event this transaction just wrote, so that a rollback cannot remove it.
pub(crate) fn remember(event: &str, subject: &str, details: &serde_json::Value) {
    // SAFETY: SHARED is set once by `attach` at process start and only read afterwards.
    if unsafe { SHARED.is_null() } {
        return;
    }
    let mut details_value = details.clone();
    if let Some(map) = details_value.as_object_mut() {
        map.insert("kept_after_rollback".into(), true.into());
        map.insert(
            "db_user".into(),
            crate::pg::roles::session_user_name()
                .unwrap_or_default()
                .into(),
        );
    }
    let kept = KeptEvent {
        // SAFETY: MyDatabaseId is set at backend start and only read here.
        database: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        event: event.to_string(),
        subject: subject.to_string(),
        details: details_value.to_string(),
    };
    // SAFETY: reads the current transaction state.
    let sub = unsafe { pg_sys::GetCurrentSubTransactionId() };
    WRITTEN.with(|w| w.borrow_mut().push((sub, kept)));
}

/// Move the events written at or after subtransaction `from` into the ring.
fn keep_undone(from: pg_sys::SubTransactionId) {
    let undone: Vec<KeptEvent> = WRITTEN.with(|w| {
        let mut w = w.borrow_mut();
        let (undone, stay): (Vec<_>, Vec<_>) = w.drain(..).partition(|(sub, _)| *sub >= from);
        *w = stay;
        undone.into_iter().map(|(_, e)| e).collect()
    });
    for e in undone {
        if with_ring(|r| r.push(&e)) != Some(true) {
            // The keeper is far behind: the server log keeps it (no secrets in events).
            pgrx::log!(
                "pgauth: audit event undone by a rollback and not kept (queue full): {} {} {}",
                e.event,
                e.subject,
                e.details
            );
        }
    }
}

/// # Safety
/// Called by PostgreSQL at a transaction event (registered by `install`).
#[pg_guard]
unsafe extern "C-unwind" fn xact_callback(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_COMMIT
        | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
        | pg_sys::XactEvent::XACT_EVENT_PREPARE => WRITTEN.with(|w| w.borrow_mut().clear()),
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            keep_undone(0)
        }
        // ROLLBACK PREPARED runs no callback of ours: a prepared transaction would take its
        // failure events out of reach. Refused before it is prepared.
        pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE if WRITTEN.with(|w| !w.borrow().is_empty()) => {
            pgrx::error!(
                "cannot PREPARE a transaction that recorded a failed sign-in attempt (pgauth)"
            );
        }
        _ => {}
    }
}

/// # Safety
/// Called by PostgreSQL at a subtransaction event (registered by `install`).
#[pg_guard]
unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        keep_undone(my_subid);
    }
}

/// The keeper: waits for kept events, connects to the database of the first one, writes that
/// database's events in its own transactions, and exits (to be restarted within a second) when
/// events of another database wait, since a worker connects to one database for its life.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pgauth_event_keeper_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = loop {
        if let Some(Some(db)) = with_ring(|r| r.next_database()) {
            break db;
        }
        if !BackgroundWorker::wait_latch(Some(std::time::Duration::from_millis(200))) {
            // Terminated: exit 1 so that the postmaster starts the keeper again (it does not
            // at shutdown); exit 0 would end it for good.
            // SAFETY: the keeper's own process, exiting; nothing of it is used afterwards.
            unsafe { pg_sys::proc_exit(1) };
        }
    };
    // Taken out of the ring before connecting: if the database is gone, the connection fails
    // and so do its events, instead of blocking every other database's.
    let mut first = with_ring(|r| r.take(database, 64)).unwrap_or_default();
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(database)), None);
    let mut idle = 0;
    loop {
        let batch = if first.is_empty() {
            with_ring(|r| r.take(database, 64)).unwrap_or_default()
        } else {
            std::mem::take(&mut first)
        };
        if batch.is_empty() {
            idle += 1;
            let other = with_ring(|r| r.next_database()).flatten();
            if other.is_some() || idle > 50 {
                // Another database's events wait, or nothing for 10 s: exit and be restarted.
                // SAFETY: the keeper's own process, exiting; nothing of it is used afterwards.
                unsafe { pg_sys::proc_exit(1) };
            }
        } else {
            idle = 0;
            write_batch(&batch);
        }
        if !BackgroundWorker::wait_latch(Some(std::time::Duration::from_millis(200))) {
            // SAFETY: the keeper's own process, exiting; nothing of it is used afterwards.
            unsafe { pg_sys::proc_exit(1) };
        }
    }
}

fn write_batch(batch: &[KeptEvent]) {
    let written = BackgroundWorker::transaction(|| {
        let installed = Spi::get_one::<bool>(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pgauth')",
        )
        .ok()
        .flatten()
        .unwrap_or(false);
        if !installed {
            return Ok(0);
        }
        for e in batch {
            // As pgauth's owner, like every writer of events (record_event refuses anyone
            // else); the worker itself is connected as the bootstrap superuser.
            crate::pg::roles::as_owner(|| {
                crate::pg::spi::run_with_args(
                    "SELECT pgauth.record_event($1, $2, $3::jsonb)",
                    &[
                        e.event.as_str().into(),
                        e.subject.as_str().into(),
                        e.details.as_str().into(),
                    ],
                )
            })?;
        }
        Ok::<_, pgrx::spi::Error>(batch.len())
    });
    if written.is_err() {
        pgrx::log!(
            "pgauth event keeper: could not write {} kept events",
            batch.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Vec<Slot> {
        vec![
            Slot {
                used: false,
                database: 0,
                event_len: 0,
                subject_len: 0,
                details_len: 0,
                event: [0; EVENT_BYTES],
                subject: [0; SUBJECT_BYTES],
                details: [0; DETAILS_BYTES],
            };
            3
        ]
    }

    fn ev(db: u32, name: &str) -> KeptEvent {
        KeptEvent {
            database: db,
            event: name.into(),
            subject: "s".into(),
            details: "{}".into(),
        }
    }

    #[test]
    fn events_come_back_by_database_and_a_full_ring_says_so() {
        let mut slots = empty();
        let mut ring = Ring { slots: &mut slots };
        assert!(ring.push(&ev(1, "a")));
        assert!(ring.push(&ev(2, "b")));
        assert!(ring.push(&ev(1, "c")));
        assert!(!ring.push(&ev(1, "d")), "full");
        assert_eq!(ring.next_database(), Some(1));
        let got = ring.take(1, 10);
        assert_eq!(got, vec![ev(1, "a"), ev(1, "c")]);
        assert_eq!(ring.next_database(), Some(2));
        assert_eq!(ring.take(2, 10), vec![ev(2, "b")]);
        assert_eq!(ring.next_database(), None);
    }

    #[test]
    fn long_fields_are_cut_on_character_boundaries_and_details_stay_json() {
        let mut slots = empty();
        let mut ring = Ring { slots: &mut slots };
        let long = KeptEvent {
            database: 1,
            event: "e".into(),
            subject: "é".repeat(200),
            details: format!("{{\"x\": \"{}\"}}", "y".repeat(5000)),
        };
        assert!(ring.push(&long));
        let got = ring.take(1, 1).remove(0);
        assert!(got.subject.len() <= SUBJECT_BYTES && got.subject.chars().all(|c| c == 'é'));
        assert_eq!(got.details, r#"{"details_truncated": true}"#);
    }
}
