//! Password login: per-user lockout after consecutive failures, a per-client-address rate limit,
//! password expiry, and the outcome a login reports.
//!
//! This file is plain Rust: every decision is a function of the stored state, the settings and
//! the time (microseconds on one clock), unit-tested without a database. `sql.rs` reads and
//! writes the state rows and calls these. Nothing here sees a password or a hash.

pub(crate) mod sql;

use std::net::IpAddr;

pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// The rate limit counts attempts per address in windows of this length.
pub const RATE_WINDOW_MICROS: i64 = 60 * MICROS_PER_SECOND;

/// What `auth_login` reports in `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Ok,
    /// Wrong password, unknown user, or a user without a password: deliberately one reason.
    InvalidCredentials,
    /// Temporarily locked after failures, or blocked by an administrator.
    Locked,
    Disabled,
    RateLimited,
    PasswordExpired,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::InvalidCredentials => "invalid_credentials",
            Reason::Locked => "locked",
            Reason::Disabled => "disabled",
            Reason::RateLimited => "rate_limited",
            Reason::PasswordExpired => "password_expired",
        }
    }
}

/// The settings a login decision depends on (`pgauth.max_failed_logins`,
/// `pgauth.lockout_duration`, `pgauth.login_attempts_per_minute`). Zero turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginSettings {
    pub max_failed_logins: u32,
    pub lockout_micros: i64,
    pub attempts_per_minute: u32,
}

/// A user's row in `pgauth.login_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockState {
    /// Consecutive failures since the last success, unlock or expired lockout.
    pub failed_count: u32,
    pub locked_until: Option<i64>,
}

impl LockState {
    pub fn is_locked(&self, now: i64) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }

    /// The state after one more failure, and whether this failure started a lockout. A lockout
    /// that has run out starts the count again from zero.
    pub fn after_failure(&self, now: i64, settings: &LoginSettings) -> (LockState, bool) {
        if self.is_locked(now) {
            return (*self, false);
        }
        let base = if self.locked_until.is_some() {
            0
        } else {
            self.failed_count
        };
        let count = base.saturating_add(1);
        if settings.max_failed_logins > 0 && count >= settings.max_failed_logins {
            let until = now.saturating_add(settings.lockout_micros);
            (
                LockState {
                    failed_count: count,
                    locked_until: Some(until),
                },
                true,
            )
        } else {
            (
                LockState {
                    failed_count: count,
                    locked_until: None,
                },
                false,
            )
        }
    }

    /// After a correct password: consecutive failures end.
    pub fn after_success() -> LockState {
        LockState::default()
    }
}

/// An address's row in `pgauth.login_attempts`: a fixed one-minute window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWindow {
    pub window_start: i64,
    pub attempts: u32,
}

impl RateWindow {
    /// Count one more attempt at `now`; the new window and whether the attempt may go on. Every
    /// attempt counts, refused ones too, so an address that keeps trying stays refused until a
    /// minute passes with its window full.
    pub fn record_attempt(
        stored: Option<RateWindow>,
        now: i64,
        per_minute: u32,
    ) -> (RateWindow, bool) {
        let window = match stored {
            // A window that starts a little after `now` is current too: a transaction that
            // began earlier may count after one that began later. Far off either way: replaced.
            Some(w) if now.saturating_sub(w.window_start).abs() < RATE_WINDOW_MICROS => {
                RateWindow {
                    window_start: w.window_start,
                    attempts: w.attempts.saturating_add(1),
                }
            }
            _ => RateWindow {
                window_start: now,
                attempts: 1,
            },
        };
        let allowed = per_minute == 0 || window.attempts <= per_minute;
        (window, allowed)
    }
}

/// The rate-limit bucket of a client address: the address for IPv4, its /64 for IPv6 (one
/// customer network usually owns a whole /64), and the IPv4 address of an IPv4-mapped one.
pub fn rate_limit_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return format!("{v4}/32");
            }
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
    }
}

/// Parse the text of an inet (which may carry a prefix length) to an address.
pub fn parse_inet(text: &str) -> Option<IpAddr> {
    text.split('/').next()?.parse().ok()
}

/// Has a password set at `changed_at` passed its policy's `max_age_days` (0 = never expires)?
pub fn password_expired(changed_at: i64, max_age_days: u32, now: i64) -> bool {
    max_age_days > 0
        && now >= changed_at.saturating_add(i64::from(max_age_days) * 86_400 * MICROS_PER_SECOND)
}

/// What an account's administrative status means for a login with the right password.
pub fn status_reason(status: &str) -> Option<Reason> {
    match status {
        "active" => None,
        "locked" => Some(Reason::Locked),
        _ => Some(Reason::Disabled),
    }
}

/// A name for a stored hash's scheme, for audit details (never parameters, salt or digest).
pub fn hash_scheme(hash: &str) -> &'static str {
    const SCHEMES: &[(&str, &str)] = &[
        ("$argon2id$", "argon2id"),
        ("$argon2i$", "argon2i"),
        ("$argon2d$", "argon2d"),
        ("$2a$", "bcrypt"),
        ("$2b$", "bcrypt"),
        ("$2y$", "bcrypt"),
        ("$pbkdf2-sha256$", "pbkdf2-sha256"),
        ("$pbkdf2-sha512$", "pbkdf2-sha512"),
        ("pbkdf2_sha256$", "django-pbkdf2-sha256"),
        ("$1$", "md5-crypt"),
        ("$5$", "sha256-crypt"),
        ("$6$", "sha512-crypt"),
    ];
    SCHEMES
        .iter()
        .find(|(prefix, _)| hash.starts_with(prefix))
        .map_or("unknown", |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60 * MICROS_PER_SECOND;
    const SETTINGS: LoginSettings = LoginSettings {
        max_failed_logins: 3,
        lockout_micros: 15 * MIN,
        attempts_per_minute: 5,
    };

    #[test]
    fn lockout_starts_at_the_nth_consecutive_failure_and_ends_after_the_duration() {
        let mut state = LockState::default();
        let now = 1_000 * MIN;
        for n in 1..=2 {
            let (next, locked) = state.after_failure(now, &SETTINGS);
            assert!(!locked);
            assert_eq!(next.failed_count, n);
            assert!(!next.is_locked(now));
            state = next;
        }
        let (next, locked) = state.after_failure(now, &SETTINGS);
        assert!(locked, "the third failure locks");
        assert!(next.is_locked(now));
        assert!(next.is_locked(now + 15 * MIN - 1));
        assert!(!next.is_locked(now + 15 * MIN));
        // Failures while locked change nothing (and are not expected: login refuses first).
        assert_eq!(next.after_failure(now + MIN, &SETTINGS), (next, false));
        // After the lockout, counting starts again from zero.
        let (after, locked) = next.after_failure(now + 16 * MIN, &SETTINGS);
        assert!(!locked);
        assert_eq!(after.failed_count, 1);
        assert_eq!(after.locked_until, None);
    }

    #[test]
    fn success_resets_the_count_and_zero_turns_lockout_off() {
        assert_eq!(LockState::after_success(), LockState::default());
        let off = LoginSettings {
            max_failed_logins: 0,
            ..SETTINGS
        };
        let mut state = LockState::default();
        for _ in 0..100 {
            let (next, locked) = state.after_failure(0, &off);
            assert!(!locked);
            state = next;
        }
        assert_eq!(state.failed_count, 100);
        assert!(!state.is_locked(0));
    }

    #[test]
    fn rate_window_counts_attempts_per_minute() {
        let t0 = 5_000 * MIN;
        let (mut w, ok) = RateWindow::record_attempt(None, t0, 2);
        assert!(ok);
        assert_eq!(w.attempts, 1);
        let ok2;
        (w, ok2) = RateWindow::record_attempt(Some(w), t0 + 1, 2);
        assert!(ok2);
        let (w3, ok3) = RateWindow::record_attempt(Some(w), t0 + 2, 2);
        assert!(!ok3, "third attempt in the minute is refused");
        assert_eq!(w3.window_start, t0);
        // A new window a minute after the first attempt.
        let (w4, ok4) = RateWindow::record_attempt(Some(w3), t0 + MIN, 2);
        assert!(ok4);
        assert_eq!((w4.window_start, w4.attempts), (t0 + MIN, 1));
        // A window that began a moment "later" (a concurrent transaction that started after
        // this one) still counts …
        let (w5, ok5) = RateWindow::record_attempt(Some(w3), t0 - 1, 2);
        assert!(!ok5);
        assert_eq!((w5.window_start, w5.attempts), (t0, 4));
        // … one far in the future (the clock moved back) is replaced, not trusted.
        let (w6, ok6) = RateWindow::record_attempt(Some(w3), t0 - MIN, 2);
        assert!(ok6);
        assert_eq!(w6.window_start, t0 - MIN);
        // 0 = no limit.
        let (_, unlimited) = RateWindow::record_attempt(
            Some(RateWindow {
                window_start: t0,
                attempts: 1_000_000,
            }),
            t0,
            0,
        );
        assert!(unlimited);
    }

    #[test]
    fn rate_limit_buckets() {
        let key = |s: &str| rate_limit_key(s.parse().unwrap());
        assert_eq!(key("192.0.2.7"), "192.0.2.7/32");
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7/32");
        assert_eq!(parse_inet("10.1.2.3/32"), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(parse_inet("garbage"), None);
    }

    #[test]
    fn expiry_and_status() {
        let day = 86_400 * MICROS_PER_SECOND;
        assert!(!password_expired(0, 0, 10_000 * day), "0 = never");
        assert!(!password_expired(0, 30, 30 * day - 1));
        assert!(password_expired(0, 30, 30 * day));
        assert_eq!(status_reason("active"), None);
        assert_eq!(status_reason("locked"), Some(Reason::Locked));
        assert_eq!(status_reason("disabled"), Some(Reason::Disabled));
        assert_eq!(Reason::InvalidCredentials.as_str(), "invalid_credentials");
    }

    #[test]
    fn hash_schemes_are_named_without_their_contents() {
        assert_eq!(hash_scheme("$2b$12$abc"), "bcrypt");
        assert_eq!(hash_scheme("$argon2id$v=19$m=1"), "argon2id");
        assert_eq!(hash_scheme("pbkdf2_sha256$1$a$b"), "django-pbkdf2-sha256");
        assert_eq!(hash_scheme("plaintext"), "unknown");
    }
}
