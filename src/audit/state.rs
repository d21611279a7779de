//! What the audit code keeps per backend, between calls: whether this transaction wrote
//! records (so its commit tries to seal), when this backend last tried to seal, the stored
//! shapes of audited tables (`capture`), the sealer's kept plans (`seal`), and the flag that
//! lets `auth_audit_purge` delete archived records past the append-only guard (`admin`).

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::pg_sys;

use super::capture::StoredShape;
use super::seal::SealPlans;

#[derive(Default)]
pub(super) struct AuditState {
    /// This transaction wrote audit records: try to seal at commit (every
    /// `pgauth.audit_seal_interval`).
    pub(super) wrote: bool,
    /// When this backend last tried to seal (µs since 2000-01-01).
    pub(super) last_seal_attempt: i64,
    /// Stored shapes by trigger and table shape.
    pub(super) shapes: HashMap<(pg_sys::Oid, u64), std::rc::Rc<StoredShape>>,
    /// Kept for the backend's life once prepared.
    pub(super) seal_plans: Option<&'static SealPlans>,
    /// Set only while auth_audit_purge deletes archived records.
    pub(super) purging: bool,
}

thread_local! {
    pub(super) static STATE: RefCell<AuditState> = RefCell::new(AuditState::default());
}
