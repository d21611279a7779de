//! The login capability's Rust API for other capabilities (inside PostgreSQL): the steps of a
//! sign-in that passkey sign-in shares with password sign-in (rate limit, account lookup,
//! attempt counters, tokens), the client key, and [`sign_in`]: the pipeline over SQL and
//! shared memory, for any [`Method`].

use super::attempts::{Begin, Kind};
use super::pipeline::{self, Event, Failure, Grant, Lookup, Outcome, Proof, Request, Tokens};
use super::pipeline::{Store, Verdict};
use super::sql::{password_limits, ACCOUNT_COLUMNS};
use super::{parse_inet, rate_limit_key, shared, LoginSettings, Reason, MICROS_PER_SECOND};
use crate::error::{AuthError, AuthResult};
use crate::pg::event;
use crate::pg::roles::as_owner;
use crate::pg::spi::{read_one, read_row, spi_err};
use pgrx::datum::{Inet, TimestampWithTimeZone};
use pgrx::{pg_sys, Uuid};
use serde_json::json;

pub(crate) fn settings() -> LoginSettings {
    LoginSettings {
        max_failed_logins: crate::settings::login().max_failed_logins(),
        lockout_micros: crate::settings::login().lockout_seconds() * MICROS_PER_SECOND,
        attempts_per_minute: crate::settings::login().attempts_per_minute(),
    }
}

/// Transaction start (what now() returns), in PostgreSQL's microseconds.
pub(crate) fn now() -> i64 {
    unsafe { pg_sys::GetCurrentTransactionStartTimestamp() }
}

pub(crate) struct Account {
    pub(crate) id: Uuid,
    pub(crate) username: String,
    pub(crate) status: String,
    pub(crate) hash: Option<String>,
    pub(crate) changed_at: Option<i64>,
}

pub(crate) fn find_account(
    condition: &str,
    arg: pgrx::datum::DatumWithOid<'_>,
) -> AuthResult<Option<Account>> {
    let query = format!("{ACCOUNT_COLUMNS} WHERE {condition}");
    let row = as_owner(|| {
        read_row(&query, &[arg], |row| {
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
    .map_err(spi_err)?;
    Ok(row.flatten())
}

/// A user's name; 22023 when there is no such user.
pub(crate) fn username_of(user_id: &Uuid) -> AuthResult<String> {
    as_owner(|| {
        read_one::<String>(
            "SELECT username FROM pgauth.users WHERE id = $1",
            &[(*user_id).into()],
        )
    })
    .map_err(spi_err)?
    .ok_or_else(|| AuthError::InvalidRequest(format!("user {user_id} does not exist")))
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

/// The proof was wrong: the charged attempt stays counted. Says whether this failure started a
/// lockout; the caller records `account_locked` (the sign-in pipeline does).
pub(crate) fn fail_attempt(what: &str, kind: Kind, user: Uuid) -> AuthResult<Failure> {
    let limits = password_limits();
    let (count, newly_locked) = shared::failed(what, &shared::user_key(kind, &user), limits)?;
    Ok(Failure {
        count,
        newly_locked,
        lockout_seconds: limits.lockout / MICROS_PER_SECOND,
    })
}

/// As [`fail_attempt`], recording `account_locked` when this failure starts a lockout (for
/// checks outside the sign-in pipeline, such as `auth_change_password`). Returns the count.
pub(crate) fn record_failure(what: &str, kind: Kind, account: &Account) -> AuthResult<u32> {
    let failure = fail_attempt(what, kind, account.id)?;
    if failure.newly_locked {
        let details = json!({
            "user_id": account.id.to_string(),
            "failed_count": failure.count,
            "lockout_seconds": failure.lockout_seconds,
        });
        event::record_failure("account_locked", &account.username, details)?;
    }
    Ok(failure.count)
}

/// Count an attempt from the address bucket `key` in its one-minute window; false when over
/// the limit. Shared memory, like the lockout counters: a rollback does not give it back.
pub(crate) fn rate_limit_allows(what: &str, key: &str, per_minute: u32) -> AuthResult<bool> {
    shared::rate(what, &shared::text_key(Kind::Address, key), per_minute)
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
    let (access, refresh) = crate::session::api::open_signed_in_session(user_id, aal, amr)?;
    Ok((access, Some(refresh)))
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

/// What one sign-in method does on the SQL side (password, passkey, API key): find the account
/// the proof names and judge the proof. Counters, events and the order are [`sign_in`]'s.
pub(crate) trait Method {
    fn lookup(&mut self, proof: &Proof<'_>) -> AuthResult<Lookup>;
    /// The work a check of a real account's proof costs, for an unknown one.
    fn dummy_verify(&mut self);
    /// See [`Store::check_proof`].
    fn check_proof(&mut self, account: &pipeline::Account) -> AuthResult<Verdict>;
    fn issue_tokens(&mut self, account: &pipeline::Account, grant: &Grant) -> AuthResult<Tokens>;
}

/// A [`Method`] with the shared counters (shared memory) and events (`pgauth.record_event`):
/// the pipeline's [`Store`] inside PostgreSQL. `what` names the SQL function (for the error
/// raised when pgauth is not preloaded), `kind` the user's lockout counter.
struct SqlStore<M> {
    what: &'static str,
    kind: Kind,
    method: M,
}

fn user(account: &pipeline::Account) -> Uuid {
    Uuid::from_bytes(account.id)
}

impl<M: Method> Store for SqlStore<M> {
    type Error = AuthError;
    fn rate_limit(&mut self, key: &str) -> AuthResult<bool> {
        rate_limit_allows(self.what, key, settings().attempts_per_minute)
    }
    fn lookup(&mut self, proof: &Proof<'_>) -> AuthResult<Lookup> {
        self.method.lookup(proof)
    }
    fn dummy_verify(&mut self) {
        self.method.dummy_verify();
    }
    fn begin_attempt(&mut self, account: &pipeline::Account) -> AuthResult<bool> {
        begin_attempt(self.what, self.kind, user(account))
    }
    fn check_proof(&mut self, account: &pipeline::Account) -> AuthResult<Verdict> {
        self.method.check_proof(account)
    }
    fn attempt_failed(&mut self, account: &pipeline::Account) -> AuthResult<Failure> {
        fail_attempt(self.what, self.kind, user(account))
    }
    fn attempt_succeeded(&mut self, account: &pipeline::Account) -> AuthResult<()> {
        record_success(self.what, self.kind, user(account))
    }
    fn issue_tokens(&mut self, account: &pipeline::Account, grant: &Grant) -> AuthResult<Tokens> {
        self.method.issue_tokens(account, grant)
    }
    fn event_number(&mut self, key: &str) -> Option<u32> {
        shared::event_number(key)
    }
    fn record(&mut self, e: Event) -> AuthResult<()> {
        if e.kept {
            event::record_failure(e.name, &e.subject, e.details)
        } else {
            event::record(e.name, &e.subject, e.details)
        }
    }
}

/// Sign in with `method` (see [`pipeline::sign_in`]); `what` names the SQL function, `kind` the
/// lockout counter (unused by API keys, which have none).
pub(crate) fn sign_in<M: Method>(
    what: &'static str,
    kind: Kind,
    method: M,
    request: &Request<'_>,
) -> AuthResult<Outcome> {
    // A sign-in writes (counters' events, a session): on a hot standby, or in any read-only
    // transaction, it is refused before anything is looked at, so a standby answers no
    // password guess.
    crate::pg::require_writable()?;
    pipeline::sign_in(&mut SqlStore { what, kind, method }, request)
}

/// The request of an attempt from `client_ip` (else the connection's address).
pub(crate) fn request<'a>(proof: Proof<'a>, client_ip: Option<&Inet>) -> Request<'a> {
    let (client_ip, rate_key) = client_key(client_ip);
    Request {
        proof,
        client_ip,
        rate_key,
    }
}

/// The tokens of [`issue_login_tokens`] for the pipeline.
pub(crate) fn grant_tokens(account: &pipeline::Account, grant: &Grant) -> AuthResult<Tokens> {
    let (access, refresh) = issue_login_tokens(user(account), grant.aal, &grant.amr)?;
    Ok(Tokens { access, refresh })
}

/// The pipeline's view of an account.
pub(crate) fn pipeline_account(account: &Account) -> pipeline::Account {
    pipeline::Account {
        id: *account.id.as_bytes(),
        username: account.username.clone(),
        status: account.status.clone(),
    }
}

/// ok, user_id, reason, access_token, refresh_token: the row of `auth_login` and
/// `auth_webauthn_login_finish`.
pub(crate) type LoginRow = (bool, Option<Uuid>, String, Option<String>, Option<String>);

pub(crate) fn login_row(outcome: Outcome) -> LoginRow {
    let (access, refresh) = outcome
        .tokens
        .map_or((None, None), |t| (Some(t.access), t.refresh));
    (
        outcome.reason == Reason::Ok,
        outcome.user_id.map(Uuid::from_bytes),
        outcome.reason.as_str().to_string(),
        access,
        refresh,
    )
}
