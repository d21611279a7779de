//! SQL functions for password login and password changes: settings, SPI and audit events. The
//! decisions are in `mod.rs`.
//!
//! Both functions run as the caller (PUBLIC may call them) and read and write pgauth's tables
//! inside `as_owner`. They never raise for a wrong password, an unknown user or a locked account:
//! the failure, its counter and its audit row must commit. Passwords are never formatted.

use std::cell::RefCell;

use pgrx::datum::Inet;
use pgrx::prelude::*;
use pgrx::Uuid;
use serde_json::json;

use super::api::{begin_attempt, find_account, now, record_failure, record_success, settings};
use super::api::{grant_tokens, login_row, pipeline_account, request, sign_in};
use super::api::{Account, LoginRow, Method};
use super::attempts::{Kind, Limits};
use super::pipeline::{self, Grant, Lookup, Proof, Tokens, Verdict};
use super::{hash_scheme, password_expired, shared, status_reason, Reason};
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::password::policy::{problems, Context};
use crate::password::{self, Argon2Settings};
use crate::pg::binding;
use crate::pg::event;
use crate::pg::roles::as_owner;
use crate::pg::spi::spi_err;

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
    crate::random::fill(secret.as_mut())?;
    let hash = password::hash_password(secret.as_ref(), settings)?;
    DUMMY_HASH.with(|d| *d.borrow_mut() = Some((*settings, hash.clone())));
    Ok(hash)
}

/// Spend the time a verification of an existing Argon2id hash costs, and fail.
fn verify_nothing(password: &str) -> bool {
    // The same path as a stored hash (helper thread, memory budget): no timing difference.
    if let Ok(hash) = dummy_hash(&crate::settings::password().argon2()) {
        std::hint::black_box(
            crate::password::api::verify_interruptibly(
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
        Some(hash) => crate::password::api::verify_interruptibly(
            password,
            hash,
            crate::password::limits::ARGON2_MAX_MEMORY_KIB,
        )
        .unwrap_or(false),
        None => verify_nothing(password),
    }
}

pub(super) const ACCOUNT_COLUMNS: &str =
    "SELECT u.id, u.username, u.status, c.password_hash, c.changed_at
       FROM pgauth.users u LEFT JOIN pgauth.credentials c ON c.user_id = u.id";

pub(super) fn password_limits() -> Limits {
    let settings = settings();
    Limits {
        max_failures: settings.max_failed_logins,
        lockout: settings.lockout_micros,
    }
}

/// The policy that applies to `account`'s password: `default` (there is no per-user policy yet).
fn account_policy() -> AuthResult<(crate::password::policy::Policy, String)> {
    as_owner(|| crate::password::api::load_policy("default"))
}

fn upgrade_hash(account: &Account, password: &str, stored: &str) -> AuthResult<()> {
    let settings = crate::settings::password().argon2();
    if !password::needs_rehash(stored, &settings).unwrap_or(false) {
        return Ok(());
    }
    let new_hash = password::hash_password(password.as_bytes(), &settings)?;
    as_owner(|| {
        crate::pg::spi::run_with_args(
            "UPDATE pgauth.credentials SET password_hash = $2
              WHERE user_id = $1 AND password_hash = $3",
            &[account.id.into(), new_hash.as_str().into(), stored.into()],
        )
    })
    .map_err(spi_err)?;
    let details = json!({"user_id": account.id.to_string(), "from": hash_scheme(stored)});
    event::record("password_rehashed", &account.username, details)
}

/// Password sign-in's part of the pipeline: the account by name (case-insensitive), the
/// password against its stored hash, the policy's expiry, an old hash upgraded on success.
struct PasswordStore<'a> {
    username: &'a str,
    password: &'a str,
    /// The account `lookup` found, with its hash.
    found: Option<Account>,
}

impl Method for PasswordStore<'_> {
    fn lookup(&mut self, _: &Proof<'_>) -> AuthResult<Lookup> {
        // The dummy hash is made on a backend's first login whoever logs in, so that making it
        // does not single out the first unknown name either.
        let _ = dummy_hash(&crate::settings::password().argon2());
        if self.username.is_empty() {
            return Ok(Lookup::Unknown { problem: None });
        }
        self.found = find_account(
            "pg_catalog.lower(u.username) = pg_catalog.lower($1)",
            self.username.into(),
        )?;
        Ok(self
            .found
            .as_ref()
            .map_or(Lookup::Unknown { problem: None }, |a| {
                Lookup::Known(pipeline_account(a))
            }))
    }

    fn dummy_verify(&mut self) {
        verify_nothing(self.password);
    }

    fn check_proof(&mut self, _: &pipeline::Account) -> AuthResult<Verdict> {
        let hash = self.found.as_ref().and_then(|a| a.hash.as_deref());
        if !verify_stored(self.password, hash) {
            return Ok(Verdict::Refused {
                problem: None,
                no_password: hash.is_none(),
            });
        }
        let max_age = account_policy().map_or(0, |(p, _)| p.max_age_days);
        let changed_at = self.found.as_ref().and_then(|a| a.changed_at);
        Ok(Verdict::Accepted(Grant {
            aal: 1,
            amr: vec!["pwd"],
            expired: changed_at.is_some_and(|changed| password_expired(changed, max_age, now())),
        }))
    }

    fn issue_tokens(&mut self, account: &pipeline::Account, grant: &Grant) -> AuthResult<Tokens> {
        if let Some(found) = &self.found {
            if let Some(stored) = found.hash.as_deref() {
                upgrade_hash(found, self.password, stored)?;
            }
        }
        grant_tokens(account, grant)
    }
}

fn login(username: &str, password: &str, client_ip: Option<&Inet>) -> AuthResult<LoginRow> {
    let store = PasswordStore {
        username,
        password,
        found: None,
    };
    let request = request(Proof::Password { username }, client_ip);
    let outcome = sign_in("auth_login", Kind::Password, store, &request)?;
    Ok(login_row(outcome))
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
        event::record_failure("password_change_failed", &subject, details)?;
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

    let new_hash = password::hash_password(
        new_password.as_bytes(),
        &crate::settings::password().argon2(),
    )?;
    let keep = i64::from(policy.history.saturating_sub(1));
    as_owner(|| {
        crate::pg::spi::connect_mut(|client| {
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
    let keep_session = binding::current()
        .filter(|b| b.user_id == *account.id.as_bytes())
        .and_then(|b| b.session)
        .map(Uuid::from_bytes);
    let revoked = as_owner(|| {
        crate::pg::spi::connect_mut(|client| {
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
    event::record("password_changed", &account.username, details)?;
    Ok(true)
}
