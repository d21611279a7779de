//! SQL functions for password login and password changes: settings, SPI and audit events. The
//! decisions are in `mod.rs`.
//!
//! Both functions run as the caller (PUBLIC may call them) and read and write pgauth's tables
//! inside `as_owner`. They never raise for a wrong password, an unknown user or a locked account:
//! the failure, its counter and its audit row must commit. Passwords are never formatted.

use std::cell::RefCell;

use pgrx::datum::{Inet, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::{pg_sys, GucContext, GucFlags, GucRegistry, GucSetting, Uuid};
use serde_json::json;

use super::attempts::{Begin, Kind, Limits};
use super::{
    hash_scheme, parse_inet, password_expired, rate_limit_key, shared, status_reason,
    LoginSettings, Reason, MICROS_PER_SECOND,
};
use crate::backend::{as_owner, read_one, record_event, record_failure_event, spi_err};
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::guc::argon2_settings;
use crate::password::policy::{problems, Context};
use crate::password::{self, Argon2Settings};

pub static MAX_FAILED_LOGINS: GucSetting<i32> = GucSetting::<i32>::new(5);
pub static LOCKOUT_DURATION_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(900);
pub static LOGIN_ATTEMPTS_PER_MINUTE: GucSetting<i32> = GucSetting::<i32>::new(5);

pub(crate) fn register_settings() {
    // Superuser-only: PUBLIC calls auth_login, and must not be able to lift its own limits.
    GucRegistry::define_int_guc(
        c"pgauth.max_failed_logins",
        c"Consecutive failed logins after which a user is locked out (0 = never).",
        c"The lockout lasts pgauth.lockout_duration; auth_unlock_user() ends it early.",
        &MAX_FAILED_LOGINS,
        0,
        1000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pgauth.lockout_duration",
        c"How long a user stays locked out after pgauth.max_failed_logins failures.",
        c"",
        &LOCKOUT_DURATION_SECONDS,
        1,
        30 * 86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pgauth.login_attempts_per_minute",
        c"Login attempts allowed per client address (IPv4 address or IPv6 /64) and minute (0 = no limit).",
        c"Pass the end user's address as auth_login's client_ip; without it the connection's address is used.",
        &LOGIN_ATTEMPTS_PER_MINUTE,
        0,
        100_000,
        GucContext::Suset,
        GucFlags::default(),
    );
}

pub(crate) fn settings() -> LoginSettings {
    LoginSettings {
        max_failed_logins: MAX_FAILED_LOGINS.get().max(0) as u32,
        lockout_micros: i64::from(LOCKOUT_DURATION_SECONDS.get()) * MICROS_PER_SECOND,
        attempts_per_minute: LOGIN_ATTEMPTS_PER_MINUTE.get().max(0) as u32,
    }
}

/// Transaction start (what now() returns), in PostgreSQL's microseconds.
pub(crate) fn now() -> i64 {
    unsafe { pg_sys::GetCurrentTransactionStartTimestamp() }
}

thread_local! {
    /// A hash of a random password at the settings it was made with: what unknown users are
    /// verified against, so that they cost the same time as known ones.
    static DUMMY_HASH: RefCell<Option<(Argon2Settings, String)>> = const { RefCell::new(None) };
}

fn dummy_hash(settings: &Argon2Settings) -> AuthResult<String> {
    if let Some(hash) = DUMMY_HASH.with(|d| {
        d.borrow()
            .as_ref()
            .filter(|(s, _)| s == settings)
            .map(|(_, h)| h.clone())
    }) {
        return Ok(hash);
    }
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(secret.as_mut())
        .map_err(|e| AuthError::Internal(format!("OS random generator failed: {e}")))?;
    let hash = password::hash_password(secret.as_ref(), settings)?;
    DUMMY_HASH.with(|d| *d.borrow_mut() = Some((*settings, hash.clone())));
    Ok(hash)
}

/// Spend the time a verification of an existing Argon2id hash costs, and fail.
fn verify_nothing(password: &str) -> bool {
    // The same path as a stored hash (helper thread, memory budget): no timing difference.
    if let Ok(hash) = dummy_hash(&argon2_settings()) {
        std::hint::black_box(
            crate::password::sql::verify_interruptibly(
                password,
                &hash,
                crate::password::limits::ARGON2_MAX_MEMORY_KIB,
            )
            .ok(),
        );
    }
    false
}

/// Does `password` match the stored hash? A hash pgauth cannot read fails (it cannot be used to
/// log in) instead of raising, so the failure is counted and audited like any other.
fn verify_stored(password: &str, hash: Option<&str>) -> bool {
    match hash {
        // Stored hashes were written by pgauth or an administrator: only the hard limits
        // apply, not pgauth.max_verify_memory_kib (meant for hashes a caller supplies).
        Some(hash) => crate::password::sql::verify_interruptibly(
            password,
            hash,
            crate::password::limits::ARGON2_MAX_MEMORY_KIB,
        )
        .unwrap_or(false),
        None => verify_nothing(password),
    }
}

pub(crate) struct Account {
    pub(crate) id: Uuid,
    pub(crate) username: String,
    pub(crate) status: String,
    pub(crate) hash: Option<String>,
    pub(crate) changed_at: Option<i64>,
}

const ACCOUNT_COLUMNS: &str = "SELECT u.id, u.username, u.status, c.password_hash, c.changed_at
       FROM pgauth.users u LEFT JOIN pgauth.credentials c ON c.user_id = u.id";

pub(crate) fn find_account(
    condition: &str,
    arg: pgrx::datum::DatumWithOid<'_>,
) -> AuthResult<Option<Account>> {
    let query = format!("{ACCOUNT_COLUMNS} WHERE {condition}");
    as_owner(|| {
        Spi::connect(|client| {
            let rows = client.select(&query, Some(1), &[arg])?;
            if rows.is_empty() {
                return Ok(None);
            }
            let row = rows.first();
            let Some(id) = row.get::<Uuid>(1)? else {
                return Ok(None);
            };
            Ok(Some(Account {
                id,
                username: row.get::<String>(2)?.unwrap_or_default(),
                status: row.get::<String>(3)?.unwrap_or_default(),
                hash: row.get::<String>(4)?,
                changed_at: row
                    .get::<TimestampWithTimeZone>(5)?
                    .map(TimestampWithTimeZone::into_inner),
            }))
        })
    })
    .map_err(spi_err)
}

fn password_limits() -> Limits {
    let settings = settings();
    Limits {
        max_failures: settings.max_failed_logins,
        lockout: settings.lockout_micros,
    }
}

/// Charge one sign-in attempt (password or passkey) of `user` before its proof is checked:
/// false when the user is locked out. The counter lives in shared memory (`shared.rs`), so no
/// rollback gives the attempt back and no open transaction holds a lock on it. `what` names the
/// SQL function for the error raised when pgauth is not preloaded.
pub(crate) fn begin_attempt(what: &str, kind: Kind, user: Uuid) -> AuthResult<bool> {
    let key = shared::user_key(kind, &user);
    Ok(shared::begin(what, &key, password_limits())? == Begin::Charged)
}

/// The proof was right: the charged attempt is given back and consecutive failures end.
pub(crate) fn record_success(what: &str, kind: Kind, user: Uuid) -> AuthResult<()> {
    shared::succeeded(what, &shared::user_key(kind, &user))
}

/// The proof was wrong: the charged attempt stays counted; records `account_locked` when this
/// failure starts a lockout. Returns the failure count.
pub(crate) fn record_failure(what: &str, kind: Kind, account: &Account) -> AuthResult<u32> {
    let limits = password_limits();
    let key = shared::user_key(kind, &account.id);
    let (count, newly_locked) = shared::failed(what, &key, limits)?;
    if newly_locked {
        let details = json!({
            "user_id": account.id.to_string(),
            "failed_count": count,
            "lockout_seconds": limits.lockout / MICROS_PER_SECOND,
        });
        record_failure_event("account_locked", &account.username, &details.to_string())?;
    }
    Ok(count)
}

/// Count an attempt from the address bucket `key` in its one-minute window; false when over
/// the limit. Shared memory, like the lockout counters: a rollback does not give it back.
pub(crate) fn rate_limit_allows(what: &str, key: &str, per_minute: u32) -> AuthResult<bool> {
    shared::rate(what, &shared::text_key(Kind::Address, key), per_minute)
}

/// The policy that applies to `account`'s password: `default` (there is no per-user policy yet).
fn account_policy() -> AuthResult<(crate::password::policy::Policy, String)> {
    as_owner(|| crate::password::sql::load_policy("default"))
}

fn upgrade_hash(account: &Account, password: &str, stored: &str) -> AuthResult<()> {
    let settings = argon2_settings();
    if !password::needs_rehash(stored, &settings).unwrap_or(false) {
        return Ok(());
    }
    let new_hash = password::hash_password(password.as_bytes(), &settings)?;
    as_owner(|| {
        Spi::run_with_args(
            "UPDATE pgauth.credentials SET password_hash = $2
              WHERE user_id = $1 AND password_hash = $3",
            &[account.id.into(), new_hash.as_str().into(), stored.into()],
        )
    })
    .map_err(spi_err)?;
    let details = json!({"user_id": account.id.to_string(), "from": hash_scheme(stored)});
    record_event("password_rehashed", &account.username, &details.to_string())
}

/// The tokens of a successful sign-in (password, passkey): an access token for
/// `auth_set_session` and, once refresh tokens exist, a refresh token. `aal` is the assurance
/// level (1 password/API key, 2 multi-factor or passkey with user verification) and `amr` the
/// methods used (RFC 8176 names: "pwd", "otp", "hwk", "user"...). The caller has checked the
/// credentials and that the user is active, and records its own audit event.
pub(crate) fn issue_login_tokens(
    user_id: Uuid,
    aal: i32,
    amr: &[&str],
) -> AuthResult<(String, Option<String>)> {
    let (access, refresh) = crate::session::sql::open_signed_in_session(user_id, aal, amr)?;
    Ok((access, Some(refresh)))
}

/// ok, user_id, reason, access_token, refresh_token.
type LoginRow = (bool, Option<Uuid>, String, Option<String>, Option<String>);

fn outcome(reason: Reason, user_id: Option<Uuid>, token: Option<String>) -> LoginRow {
    (
        reason == Reason::Ok,
        user_id,
        reason.as_str().to_string(),
        token,
        None,
    )
}

/// The address an attempt is counted against: `client_ip`, else the connection's address.
pub(crate) fn client_key(client_ip: Option<&Inet>) -> (Option<String>, String) {
    let address = match client_ip {
        Some(ip) => parse_inet(&ip.0),
        None => read_one::<String>("SELECT pg_catalog.host(pg_catalog.inet_client_addr())", &[])
            .ok()
            .flatten()
            .and_then(|a| parse_inet(&a)),
    };
    match address {
        Some(ip) => (Some(ip.to_string()), rate_limit_key(ip)),
        // A Unix-socket connection without client_ip: one bucket for all of them, apart from
        // any real address.
        None => (None, "0.0.0.0/32".to_string()),
    }
}

fn login(username: &str, password: &str, client_ip: Option<&Inet>) -> AuthResult<LoginRow> {
    let now = now();
    let limits = settings();
    let (client_text, key) = client_key(client_ip);
    let base = |reason: Reason, user: Option<&Account>| {
        json!({
            "reason": reason.as_str(),
            "user_id": user.map(|a| a.id.to_string()),
            "client_ip": client_text,
        })
    };
    let subject_of = |user: Option<&Account>| {
        user.map_or_else(
            || username.chars().take(256).collect::<String>(),
            |a| a.username.clone(),
        )
    };

    // 1. The address's rate limit, before any lookup or hashing; not a failure of any user.
    if !rate_limit_allows("auth_login", &key, limits.attempts_per_minute)? {
        if let Some(n) = shared::event_number("rate_limited") {
            let mut details = base(Reason::RateLimited, None);
            details["rate_limit_key"] = json!(key);
            details["occurrence_this_minute"] = json!(n);
            record_failure_event("rate_limited", &subject_of(None), &details.to_string())?;
        }
        return Ok(outcome(Reason::RateLimited, None, None));
    }

    // The dummy hash is made on a backend's first login whoever logs in, so that making it
    // does not single out the first unknown name either.
    let _ = dummy_hash(&argon2_settings());

    // 2. Unknown user: the same verification work, the same answer.
    let account = if username.is_empty() {
        None
    } else {
        find_account(
            "pg_catalog.lower(u.username) = pg_catalog.lower($1)",
            username.into(),
        )?
    };
    let Some(account) = account else {
        verify_nothing(password);
        if let Some(n) = shared::event_number("login_failed unknown user") {
            let mut details = base(Reason::InvalidCredentials, None);
            details["known_user"] = json!(false);
            details["occurrence_this_minute"] = json!(n);
            record_failure_event("login_failed", &subject_of(None), &details.to_string())?;
        }
        return Ok(outcome(Reason::InvalidCredentials, None, None));
    };
    let subject = subject_of(Some(&account));

    // 3. A temporary lockout refuses without looking at the password.
    if !begin_attempt("auth_login", Kind::Password, account.id)? {
        // Cheap for anyone who knows the name (no hash is checked): flood-controlled.
        if let Some(n) = shared::event_number("login_failed locked") {
            let mut details = base(Reason::Locked, Some(&account));
            details["occurrence_this_minute"] = json!(n);
            record_failure_event("login_failed", &subject, &details.to_string())?;
        }
        return Ok(outcome(Reason::Locked, None, None));
    }

    // 4. The password.
    if !verify_stored(password, account.hash.as_deref()) {
        let failed = record_failure("auth_login", Kind::Password, &account)?;
        let mut details = base(Reason::InvalidCredentials, Some(&account));
        details["failed_count"] = json!(failed);
        if account.hash.is_none() {
            details["no_password"] = json!(true);
        }
        record_failure_event("login_failed", &subject, &details.to_string())?;
        return Ok(outcome(Reason::InvalidCredentials, None, None));
    }
    record_success("auth_login", Kind::Password, account.id)?;

    // 5. Right password: administrative status, then expiry (only now, so neither tells
    //    anything to someone without the password).
    if let Some(reason) = status_reason(&account.status) {
        record_failure_event(
            "login_failed",
            &subject,
            &base(reason, Some(&account)).to_string(),
        )?;
        return Ok(outcome(reason, None, None));
    }
    let max_age = account_policy().map_or(0, |(p, _)| p.max_age_days);
    if account
        .changed_at
        .is_some_and(|changed| password_expired(changed, max_age, now))
    {
        record_failure_event(
            "password_expired",
            &subject,
            &base(Reason::PasswordExpired, Some(&account)).to_string(),
        )?;
        // The user id lets the application offer auth_change_password.
        return Ok(outcome(Reason::PasswordExpired, Some(account.id), None));
    }

    // 6. Success: upgrade an old hash, issue a session, audit.
    if let Some(stored) = account.hash.as_deref() {
        upgrade_hash(&account, password, stored)?;
    }
    let (access, refresh) = issue_login_tokens(account.id, 1, &["pwd"])?;
    record_event(
        "login_succeeded",
        &subject,
        &base(Reason::Ok, Some(&account)).to_string(),
    )?;
    let mut row = outcome(Reason::Ok, Some(account.id), Some(access));
    row.4 = refresh;
    Ok(row)
}

/// Log in with a username and password. Returns one row; never raises for a wrong password, an
/// unknown user or a locked account. On success `access_token` is an access JWT (sub, sid, aal,
/// amr) that `auth_set_session` accepts, and `refresh_token` a rotating refresh token.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)] // the row type is spelled out for pgrx's SQL generation
fn auth_login(
    username: Option<&str>,
    password: Option<&str>,
    client_ip: default!(Option<Inet>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(ok, bool),
        name!(user_id, Option<Uuid>),
        name!(reason, String),
        name!(access_token, Option<String>),
        name!(refresh_token, Option<String>),
    ),
> {
    // NULL credentials are an unknown user (same work, same answer).
    let (user, pass) = match (username, password) {
        (Some(u), Some(p)) => (u, p),
        (_, p) => ("", p.unwrap_or("")),
    };
    let row = login(user, pass, client_ip.as_ref()).or_raise();
    TableIterator::once(row)
}

/// Change a user's password: verifies the old one (a wrong one counts as a failed login and can
/// lock the account), applies the `default` policy and its history rule, records the change.
/// False when the old password is wrong or the account is locked or disabled; the new password's
/// problems raise 22023.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_change_password(user_id: Uuid, old_password: &str, new_password: &str) -> bool {
    change_password(user_id, old_password, new_password).or_raise()
}

fn change_password(user_id: Uuid, old_password: &str, new_password: &str) -> AuthResult<bool> {
    shared::require("auth_change_password")?;
    let refuse = |account: Option<&Account>, reason: Reason| -> AuthResult<bool> {
        let details = json!({"user_id": user_id.to_string(), "reason": reason.as_str()});
        let subject = account.map_or_else(|| user_id.to_string(), |a| a.username.clone());
        record_failure_event("password_change_failed", &subject, &details.to_string())?;
        Ok(false)
    };
    let Some(account) = find_account("u.id = $1", user_id.into())? else {
        verify_nothing(old_password);
        return refuse(None, Reason::InvalidCredentials);
    };
    if !begin_attempt("auth_change_password", Kind::Password, account.id)? {
        return refuse(Some(&account), Reason::Locked);
    }
    if !verify_stored(old_password, account.hash.as_deref()) {
        record_failure("auth_change_password", Kind::Password, &account)?;
        return refuse(Some(&account), Reason::InvalidCredentials);
    }
    record_success("auth_change_password", Kind::Password, account.id)?;
    if let Some(reason) = status_reason(&account.status) {
        return refuse(Some(&account), reason);
    }
    let Some(old_hash) = account.hash.as_deref() else {
        return refuse(Some(&account), Reason::InvalidCredentials);
    };

    let (policy, database) = account_policy()?;
    let context = Context {
        username: Some(&account.username),
        database: Some(&database),
    };
    let mut found = problems(new_password, &context, &policy);
    if found.is_empty() && policy.history > 0 {
        // The current password and the ones before it, newest first: `history` in all.
        let earlier: Vec<String> = as_owner(|| {
            Spi::connect(|client| {
                client
                    .select(
                        "SELECT password_hash FROM pgauth.password_history WHERE user_id = $1
                          ORDER BY id DESC LIMIT $2",
                        None,
                        &[account.id.into(), i64::from(policy.history - 1).into()],
                    )?
                    .map(|row| row.get::<String>(1).map(Option::unwrap_or_default))
                    .collect::<Result<Vec<_>, _>>()
            })
        })
        .map_err(spi_err)?;
        let reused = std::iter::once(old_hash)
            .chain(earlier.iter().map(String::as_str))
            .any(|h| password::verify(new_password.as_bytes(), h).unwrap_or(false));
        if reused {
            found.push(format!(
                "must differ from the last {} password{}",
                policy.history,
                if policy.history == 1 { "" } else { "s" }
            ));
        }
    }
    if !found.is_empty() {
        return Err(AuthError::PolicyViolation {
            policy: policy.name,
            problems: found,
        });
    }

    let new_hash = password::hash_password(new_password.as_bytes(), &argon2_settings())?;
    let keep = i64::from(policy.history.saturating_sub(1));
    as_owner(|| {
        Spi::connect_mut(|client| {
            client.update(
                "UPDATE pgauth.credentials SET password_hash = $2, changed_at = pg_catalog.now()
                  WHERE user_id = $1",
                None,
                &[account.id.into(), new_hash.as_str().into()],
            )?;
            client.update(
                "INSERT INTO pgauth.password_history (user_id, password_hash) VALUES ($1, $2)",
                None,
                &[account.id.into(), old_hash.into()],
            )?;
            // Keep only what the history rule needs: old hashes are a liability.
            client.update(
                "DELETE FROM pgauth.password_history h
                  WHERE h.user_id = $1 AND h.id NOT IN (
                        SELECT k.id FROM pgauth.password_history k WHERE k.user_id = $1
                         ORDER BY k.id DESC LIMIT $2)",
                None,
                &[account.id.into(), keep.into()],
            )?;
            Ok::<(), pgrx::spi::Error>(())
        })
    })
    .map_err(spi_err)?;
    // Every other session of the user ends (a stolen token or refresh chain dies with the old
    // password); the session bound to this transaction, if it is the user's, is kept.
    let keep_session = crate::session::sql::current_binding()
        .filter(|b| b.user_id == *account.id.as_bytes())
        .and_then(|b| b.session)
        .map(Uuid::from_bytes);
    let revoked = as_owner(|| {
        Spi::connect_mut(|client| {
            let rows = client.update(
                "UPDATE pgauth.sessions SET revoked_at = pg_catalog.now()
                  WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $2
                 RETURNING 1",
                None,
                &[account.id.into(), keep_session.into()],
            )?;
            Ok::<_, pgrx::spi::Error>(rows.len())
        })
    })
    .map_err(spi_err)?;
    let details = json!({
        "user_id": account.id.to_string(),
        "policy": policy.name,
        "sessions_revoked": revoked,
    });
    record_event("password_changed", &account.username, &details.to_string())?;
    Ok(true)
}
