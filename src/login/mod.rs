//! Password login: per-user lockout after consecutive failures, a per-client-address rate limit,
//! password expiry, and the outcome a login reports.
//!
//! This file is plain Rust: every decision is a function of the stored state, the settings and
//! the time (microseconds on one clock), unit-tested without a database. `sql.rs` reads and
//! writes the state rows and calls these. Nothing here sees a password or a hash.

pub(crate) mod api;
pub mod attempts;
pub mod pipeline;
pub(crate) mod shared;
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
