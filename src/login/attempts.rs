//! Attempt counters that a rollback cannot undo: failed passwords and second factors per user,
//! and attempts per client address. They live in a fixed table in shared memory (`shared.rs`
//! maps it; this file is the plain-Rust table, unit-tested without PostgreSQL).
//!
//! Why not rows: a caller can always abort its transaction (or a savepoint, or catch the error
//! in plpgsql) after reading the answer, and a failure counted in a row of that transaction is
//! then undone: guessing without limit. A counter here is changed the moment the attempt is
//! made, under a lock held for a few instructions only, never across a verification and never
//! until the end of a caller's transaction, so no open transaction delays anyone's sign-in.
//!
//! An attempt is charged *before* its proof is checked (`begin`), and given back when the proof
//! was right (`succeeded`): concurrent guesses cannot slip past a limit while the first ones are
//! still being verified, and a backend that dies mid-check leaves the charge behind (fail closed).
//!
//! The table is set-associative: a key hashes (with a per-server random seed, so an attacker
//! cannot aim at one set) to a set of [`WAYS`] slots. A full set gives up its stalest slot that
//! protects nothing (no failures, no lockout, no current window), else the stalest one that is
//! not locked; when every slot of the set is locked out, the new key is refused (fail closed).
//!
//! The sets are split in two halves: counters of users (passwords, passkeys, second factors)
//! live in one, counters that anyone can create cheaply (client addresses, event floods) in the
//! other. A flood of made-up addresses therefore never pushes a user's failures out of the
//! table; only failures of real users, each paid for with a hash check, compete with them.

use std::hash::{Hash, Hasher};

/// Slots per set.
pub const WAYS: usize = 8;

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Wrong passwords of a user (auth_login, auth_change_password); passkey sign-ins share it.
    Password = 1,
    /// Attempts from one client address (IPv4 address or IPv6 /64), per minute.
    Address = 2,
    /// Wrong second factors of a user: TOTP codes and recovery codes (auth_step_up,
    /// auth_totp_verify, auth_use_recovery_code, auth_webauthn_step_up).
    SecondFactor = 3,
    /// Reserved (wrong API keys are audited, not limited: see session::sql::verify_api_key).
    ApiKey = 4,
    /// Events of one kind written in a window (flood control of the audit log).
    Events = 5,
    /// Failed passkey sign-ins of a user: apart from passwords, so that wrong passwords (which
    /// anyone who knows the name can send) do not also lock the phishing-resistant way in.
    Passkey = 6,
}

impl Kind {
    /// Counters of a user, which only a real attempt on an existing account creates.
    pub fn is_user_counter(self) -> bool {
        matches!(self, Kind::Password | Kind::SecondFactor | Kind::Passkey)
    }
}

/// A counter's key: the database, what is counted, and whose (a user id, or a digest of an
/// address or key prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub database: u32,
    pub kind: Kind,
    pub id: [u8; 16],
}

/// One slot. All zeros is an empty slot, so the table can start as zeroed shared memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Slot {
    pub used: bool,
    pub kind: u8,
    pub database: u32,
    pub id: [u8; 16],
    /// Failures since the last success, unlock or expired lockout (charged attempts included).
    pub failures: u32,
    /// Attempts in the window that started at `window_start` (rate limits).
    pub attempts: u32,
    /// 0: not locked.
    pub locked_until: i64,
    pub window_start: i64,
    pub last_failure: i64,
    pub last_success: i64,
    /// When the slot was last changed: the eviction order.
    pub touched: i64,
    /// The last TOTP time step used (second-factor counters; 0: none): a code is used once.
    pub last_step: i64,
}

impl Slot {
    fn matches(&self, key: &Key) -> bool {
        self.used
            && self.kind == key.kind as u8
            && self.database == key.database
            && self.id == key.id
    }

    fn is_locked(&self, now: i64) -> bool {
        self.locked_until > now
    }

    /// Does forgetting this slot lose nothing that protects anyone?
    fn is_idle(&self, now: i64, window: i64) -> bool {
        !self.used
            || (self.failures == 0
                && !self.is_locked(now)
                && now.saturating_sub(self.window_start) >= window
                && now.saturating_sub(self.touched) >= window)
    }
}

/// The limits of a lockout counter: `max_failures` consecutive failures (0 = no limit) lock for
/// `lockout` microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_failures: u32,
    pub lockout: i64,
}

/// The answer to an attempt that wants to go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// Go on: one failure is charged until `succeeded` gives it back.
    Charged,
    /// Refused: locked out (or the limit is used up by attempts still in flight).
    Locked,
}

/// The table: `sets * WAYS` slots, the hash seed, and the longest rate window (a slot whose
/// window is younger than this still protects something).
pub struct AttemptTable<'a> {
    seed: [u8; 16],
    window: i64,
    slots: &'a mut [Slot],
}

impl<'a> AttemptTable<'a> {
    /// A table over `slots` (a multiple of [`WAYS`], at least one set).
    pub fn new(seed: [u8; 16], window: i64, slots: &'a mut [Slot]) -> Self {
        assert!(slots.len() >= 2 * WAYS && slots.len().is_multiple_of(2 * WAYS));
        AttemptTable {
            seed,
            window,
            slots,
        }
    }

    fn set_of(&self, key: &Key) -> usize {
        // SipHash (DefaultHasher) over the secret seed and the key: a keyed hash.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.seed.hash(&mut h);
        key.hash(&mut h);
        // User counters in the first half of the sets, cheap ones in the second.
        let half = self.slots.len() / WAYS / 2;
        let region = if key.kind.is_user_counter() { 0 } else { half };
        region + (h.finish() as usize) % half
    }

    /// The key's slot if it has one.
    pub fn get(&self, key: &Key) -> Option<&Slot> {
        let set = self.set_of(key) * WAYS;
        self.slots[set..set + WAYS].iter().find(|s| s.matches(key))
    }

    /// The key's slot, made if needed; None when its set is full of lockouts.
    fn slot(&mut self, key: &Key, now: i64) -> Option<&mut Slot> {
        let window = self.window;
        let set = self.set_of(key) * WAYS;
        let ways = &mut self.slots[set..set + WAYS];
        if let Some(i) = ways.iter().position(|s| s.matches(key)) {
            return Some(&mut ways[i]);
        }
        let stalest = |pred: &dyn Fn(&Slot) -> bool| {
            ways.iter()
                .enumerate()
                .filter(|(_, s)| pred(s))
                .min_by_key(|(_, s)| (s.used, s.touched))
                .map(|(i, _)| i)
        };
        let i = stalest(&|s| s.is_idle(now, window)).or_else(|| stalest(&|s| !s.is_locked(now)))?;
        ways[i] = Slot {
            used: true,
            kind: key.kind as u8,
            database: key.database,
            id: key.id,
            touched: now,
            ..Slot::default()
        };
        Some(&mut ways[i])
    }

    /// An attempt on a lockout counter: refused while locked (or while the failures already
    /// charged, in flight included, reach the limit); else one failure is charged.
    pub fn begin(&mut self, key: &Key, now: i64, limits: Limits) -> Begin {
        let Some(slot) = self.slot(key, now) else {
            return Begin::Locked;
        };
        if slot.locked_until != 0 && !slot.is_locked(now) {
            // The lockout ran out: counting starts again.
            slot.locked_until = 0;
            slot.failures = 0;
        }
        if slot.is_locked(now) {
            return Begin::Locked;
        }
        if limits.max_failures > 0 && slot.failures >= limits.max_failures {
            // Charged attempts in flight use up the limit; the one of them that fails starts the
            // lockout (and reports it). Charges that never finish (a backend died mid-check)
            // expire a lockout's length after the last one.
            if now.saturating_sub(slot.touched) < limits.lockout {
                return Begin::Locked;
            }
            slot.failures = 0;
        }
        slot.touched = now;
        slot.failures = slot.failures.saturating_add(1);
        Begin::Charged
    }

    /// The charged attempt failed: it stays counted. Returns the failure count and whether this
    /// failure started a lockout.
    pub fn failed(&mut self, key: &Key, now: i64, limits: Limits) -> (u32, bool) {
        let Some(slot) = self.slot(key, now) else {
            return (limits.max_failures, false);
        };
        slot.touched = now;
        slot.last_failure = now;
        if slot.failures == 0 {
            // Not charged (the slot was evicted meanwhile): count it now.
            slot.failures = 1;
        }
        if limits.max_failures > 0 && slot.failures >= limits.max_failures && !slot.is_locked(now) {
            slot.locked_until = now.saturating_add(limits.lockout);
            return (slot.failures, true);
        }
        (slot.failures, false)
    }

    /// The charged attempt succeeded: consecutive failures end.
    pub fn succeeded(&mut self, key: &Key, now: i64) {
        if let Some(slot) = self.slot(key, now) {
            slot.touched = now;
            slot.last_success = now;
            slot.failures = 0;
            slot.locked_until = 0;
        }
    }

    /// Use TOTP time step `step` of the key's user: true once per step and only for steps after
    /// the last one used (false also when the set has no room: fail closed).
    pub fn claim_step(&mut self, key: &Key, now: i64, step: i64) -> bool {
        let Some(slot) = self.slot(key, now) else {
            return false;
        };
        slot.touched = now;
        if step <= slot.last_step {
            return false;
        }
        slot.last_step = step;
        true
    }

    /// Forget a counter (an administrator's unlock).
    pub fn reset(&mut self, key: &Key) {
        let set = self.set_of(key) * WAYS;
        for s in &mut self.slots[set..set + WAYS] {
            if s.matches(key) {
                *s = Slot::default();
            }
        }
    }

    /// Count one attempt in the key's window of `window` microseconds; false when it is over
    /// `per_window` (every attempt counts, refused ones too). A full set refuses.
    pub fn rate(&mut self, key: &Key, now: i64, window: i64, per_window: u32) -> bool {
        if per_window == 0 {
            return true;
        }
        let Some(slot) = self.slot(key, now) else {
            return false;
        };
        slot.touched = now;
        if now.saturating_sub(slot.window_start).abs() >= window {
            slot.window_start = now;
            slot.attempts = 0;
        }
        slot.attempts = slot.attempts.saturating_add(1);
        slot.attempts <= per_window
    }

    /// Count one occurrence in the key's window of `window` microseconds and return the count
    /// so far in that window (1 for the first). A full set answers `u32::MAX`.
    pub fn count(&mut self, key: &Key, now: i64, window: i64) -> u32 {
        let Some(slot) = self.slot(key, now) else {
            return u32::MAX;
        };
        slot.touched = now;
        if now.saturating_sub(slot.window_start).abs() >= window {
            slot.window_start = now;
            slot.attempts = 0;
        }
        slot.attempts = slot.attempts.saturating_add(1);
        slot.attempts
    }

    /// Every used slot of one database and kind (for the admin views).
    pub fn entries(&self, database: u32, kind: Kind) -> impl Iterator<Item = &Slot> {
        self.slots
            .iter()
            .filter(move |s| s.used && s.database == database && s.kind == kind as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_failures: 3,
        lockout: 1000,
    };

    fn key(n: u8) -> Key {
        Key {
            database: 1,
            kind: Kind::Password,
            id: [n; 16],
        }
    }

    fn table(slots: &mut [Slot]) -> AttemptTable<'_> {
        AttemptTable::new([7; 16], 60, slots)
    }

    #[test]
    fn failures_lock_and_the_lockout_runs_out() {
        let mut slots = vec![Slot::default(); 64];
        let mut t = table(&mut slots);
        let k = key(1);
        for i in 1..=2 {
            assert_eq!(t.begin(&k, 10, LIMITS), Begin::Charged);
            assert_eq!(t.failed(&k, 10, LIMITS), (i, false));
        }
        assert_eq!(t.begin(&k, 10, LIMITS), Begin::Charged);
        assert_eq!(t.failed(&k, 10, LIMITS), (3, true));
        assert_eq!(t.begin(&k, 500, LIMITS), Begin::Locked);
        // The right password while locked is never checked: begin refuses.
        assert_eq!(t.begin(&k, 1009, LIMITS), Begin::Locked);
        assert_eq!(t.begin(&k, 1010, LIMITS), Begin::Charged);
        t.succeeded(&k, 1010);
        assert_eq!(t.get(&k).unwrap().failures, 0);
    }

    #[test]
    fn attempts_in_flight_use_up_the_limit() {
        let mut slots = vec![Slot::default(); 64];
        let mut t = table(&mut slots);
        let k = key(2);
        // Three concurrent attempts charged before any of them finished; the fourth waits for
        // nothing and is refused.
        for _ in 0..3 {
            assert_eq!(t.begin(&k, 10, LIMITS), Begin::Charged);
        }
        assert_eq!(t.begin(&k, 10, LIMITS), Begin::Locked);
        // The in-flight attempt that fails last starts the lockout and reports it.
        assert_eq!(t.failed(&k, 11, LIMITS), (3, true));
        assert_eq!(t.failed(&k, 11, LIMITS), (3, false));
        // Charges that never finish expire a lockout's length after the last one.
        let stuck = key(9);
        for _ in 0..3 {
            t.begin(&stuck, 10, LIMITS);
        }
        assert_eq!(t.begin(&stuck, 500, LIMITS), Begin::Locked);
        assert_eq!(t.begin(&stuck, 1010, LIMITS), Begin::Charged);
    }

    #[test]
    fn success_gives_the_charge_back() {
        let mut slots = vec![Slot::default(); 64];
        let mut t = table(&mut slots);
        let k = key(3);
        for _ in 0..10 {
            assert_eq!(t.begin(&k, 10, LIMITS), Begin::Charged);
            t.succeeded(&k, 10);
        }
        assert_eq!(t.get(&k).unwrap().failures, 0);
    }

    #[test]
    fn a_totp_step_is_claimed_once() {
        let mut slots = vec![Slot::default(); 64];
        let mut t = table(&mut slots);
        let k = Key {
            kind: Kind::SecondFactor,
            ..key(11)
        };
        assert!(t.claim_step(&k, 10, 100));
        assert!(!t.claim_step(&k, 11, 100), "the same step twice");
        assert!(!t.claim_step(&k, 11, 99), "an earlier step");
        assert!(t.claim_step(&k, 12, 101));
    }

    #[test]
    fn no_limit_never_locks() {
        let mut slots = vec![Slot::default(); 64];
        let mut t = table(&mut slots);
        let off = Limits {
            max_failures: 0,
            lockout: 1000,
        };
        for _ in 0..100 {
            assert_eq!(t.begin(&key(4), 10, off), Begin::Charged);
            assert!(!t.failed(&key(4), 10, off).1);
        }
    }

    #[test]
    fn databases_and_kinds_are_apart() {
        let mut slots = vec![Slot::default(); 64];
        let mut t = table(&mut slots);
        let k = key(5);
        for _ in 0..3 {
            t.begin(&k, 10, LIMITS);
            t.failed(&k, 10, LIMITS);
        }
        assert_eq!(t.begin(&k, 10, LIMITS), Begin::Locked);
        let other_db = Key { database: 2, ..k };
        let other_kind = Key {
            kind: Kind::SecondFactor,
            ..k
        };
        assert_eq!(t.begin(&other_db, 10, LIMITS), Begin::Charged);
        assert_eq!(t.begin(&other_kind, 10, LIMITS), Begin::Charged);
        t.reset(&k);
        assert_eq!(t.begin(&k, 10, LIMITS), Begin::Charged);
    }

    #[test]
    fn a_flood_of_new_keys_never_evicts_a_lockout() {
        // One set per half: every key of a half competes for the same WAYS slots.
        let mut slots = vec![Slot::default(); 2 * WAYS];
        let mut t = table(&mut slots);
        let victim = key(6);
        for _ in 0..3 {
            t.begin(&victim, 10, LIMITS);
            t.failed(&victim, 10, LIMITS);
        }
        for n in 0..200u8 {
            let k = Key {
                id: [n; 16],
                kind: Kind::Address,
                ..victim
            };
            t.rate(&k, 20 + i64::from(n), 60, 5);
        }
        assert_eq!(t.begin(&victim, 300, LIMITS), Begin::Locked);
    }

    #[test]
    fn a_flood_of_addresses_never_evicts_a_users_failures() {
        let mut slots = vec![Slot::default(); 2 * WAYS];
        let mut t = table(&mut slots);
        let users: Vec<Key> = (0..WAYS as u8).map(key).collect();
        for u in &users {
            t.begin(u, 10, LIMITS);
            t.failed(u, 10, LIMITS);
        }
        for n in 0..=255u8 {
            let k = Key {
                id: [n; 16],
                kind: Kind::Address,
                ..key(0)
            };
            assert!(t.rate(&k, 20, 60, 5));
        }
        for u in &users {
            assert_eq!(t.get(u).map(|s| s.failures), Some(1));
        }
    }

    #[test]
    fn a_set_full_of_lockouts_refuses_new_keys() {
        let mut slots = vec![Slot::default(); 2 * WAYS];
        let mut t = table(&mut slots);
        for n in 0..WAYS as u8 {
            for _ in 0..3 {
                t.begin(&key(n), 10, LIMITS);
                t.failed(&key(n), 10, LIMITS);
            }
        }
        assert_eq!(t.begin(&key(99), 10, LIMITS), Begin::Locked);
        // Addresses have their own half of the table.
        assert!(t.rate(
            &Key {
                kind: Kind::Address,
                ..key(99)
            },
            10,
            60,
            5
        ));
        // Once they run out, room again.
        assert_eq!(t.begin(&key(99), 2000, LIMITS), Begin::Charged);
    }

    #[test]
    fn counts_per_window() {
        let mut slots = vec![Slot::default(); 64];
        let mut t = table(&mut slots);
        let k = Key {
            kind: Kind::Events,
            ..key(10)
        };
        assert_eq!(t.count(&k, 0, 60), 1);
        assert_eq!(t.count(&k, 1, 60), 2);
        assert_eq!(t.count(&k, 60, 60), 1);
    }

    #[test]
    fn rate_windows() {
        let mut slots = vec![Slot::default(); 64];
        let mut t = table(&mut slots);
        let k = Key {
            kind: Kind::Address,
            ..key(7)
        };
        assert!(t.rate(&k, 0, 60, 2));
        assert!(t.rate(&k, 1, 60, 2));
        assert!(!t.rate(&k, 2, 60, 2));
        assert!(!t.rate(&k, 59, 60, 2));
        assert!(t.rate(&k, 60, 60, 2));
        assert!(t.rate(&k, 61, 60, 0), "0 = no limit");
    }
}
