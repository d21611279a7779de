//! SQL functions for sessions and the transaction-scoped identity binding.

use pgrx::prelude::*;
use pgrx::Uuid;

use serde_json::json;

use super::api::raise_bound_session;
use super::{looks_like_refresh_token, looks_like_token, new_refresh_token, new_token, token_hash};
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::login::api::{request, sign_in, Method};
use crate::login::attempts::Kind;
use crate::login::pipeline::{Account, Grant, Lookup, Proof, Tokens, Verdict};
use crate::login::Reason;
use crate::pg::binding::{self, bind};
use crate::pg::event;
use crate::pg::roles::{as_owner, require, Who};
use crate::pg::spi::{read_one, read_row, spi_err, write_row};

fn id_bytes(id: &Uuid) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(id.as_bytes());
    out
}

/// A live session's user and current assurance level (its sign-in level, or 2 during a
/// step-up), when it is not revoked or expired and its user is active. `condition` selects the
/// session by `$1`.
fn live_session(
    condition: &str,
    key: pgrx::datum::DatumWithOid,
) -> AuthResult<Option<(Uuid, Uuid, u8)>> {
    let query = format!(
        "SELECT s.id, s.user_id,
                (CASE WHEN s.step_up_until > pg_catalog.now() THEN greatest(s.aal, 2) ELSE s.aal END)::int4
           FROM pgauth.sessions s JOIN pgauth.users u ON u.id = s.user_id
          WHERE {condition} AND s.revoked_at IS NULL AND s.expires_at > pg_catalog.now()
            AND u.status = 'active'"
    );
    as_owner(|| {
        read_row(&query, &[key], |row| {
            Ok(
                match (row.get::<Uuid>(1)?, row.get::<Uuid>(2)?, row.get::<i32>(3)?) {
                    (Some(sid), Some(user), Some(aal)) => Some((sid, user, aal.clamp(1, 3) as u8)),
                    _ => None,
                },
            )
        })
        .map(Option::flatten)
    })
    .map_err(spi_err)
}

/// The session an access JWT names, after its signature and lifetime were checked.
fn session_of_access_token(token: &str) -> AuthResult<(Uuid, Uuid, u8)> {
    let claims = crate::jwt::api::verify_access_token(token)?;
    let claim_uuid = |name: &str| {
        claims
            .get(name)
            .and_then(|v| v.as_str())
            .and_then(crate::ids::parse_uuid)
            .map(Uuid::from_bytes)
            .ok_or(AuthError::InvalidToken)
    };
    let (sub, sid) = (claim_uuid("sub")?, claim_uuid("sid")?);
    let (sid, user, aal) = live_session("s.id = $1", sid.into())?.ok_or(AuthError::InvalidToken)?;
    if user != sub {
        return Err(AuthError::InvalidToken);
    }
    Ok((sid, user, aal))
}

fn user_is_active(user: &Uuid) -> bool {
    as_owner(|| {
        read_one::<bool>(
            "SELECT status = 'active' FROM pgauth.users WHERE id = $1",
            &[(*user).into()],
        )
    })
    .map_err(spi_err)
    .or_raise()
    .unwrap_or(false)
}

/// The pgauth user bound to this transaction; NULL when none. With
/// `pgauth.trust_request_jwt_claims` on, falls back to the `sub` of PostgREST's verified claims.
#[pg_extern(stable, parallel_safe)]
fn auth_current_user_id() -> Option<Uuid> {
    super::api::current_user_id().map(Uuid::from_bytes)
}

/// Verify a session token (from `auth_create_session`) or an access JWT (from `auth_login`,
/// `auth_refresh`, passkey sign-in) and bind its user, with the session's assurance level, to
/// the current transaction only.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_set_session(token: &str) -> Uuid {
    let (sid, user, aal) = if looks_like_token(token) {
        let hash = token_hash(token);
        live_session("s.token_hash = $1", hash.as_slice().into())
            .or_raise()
            .unwrap_or_else(|| {
                AuthError::InvalidRequest("invalid or expired session token".into()).raise()
            })
    } else {
        session_of_access_token(token).or_raise()
    };
    bind(id_bytes(&user), aal, Some(id_bytes(&sid)));
    user
}

/// For application servers that authenticate users themselves (members of pgauth_service):
/// bind `user_id` to the current transaction, at the assurance level the server vouches for.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_bind_user(user_id: Uuid, aal: default!(i32, 1)) -> Uuid {
    require(Who::Service, "auth_bind_user").or_raise();
    if !(1..=3).contains(&aal) {
        AuthError::InvalidRequest("aal must be 1, 2 or 3".into()).raise();
    }
    if !user_is_active(&user_id) {
        AuthError::InvalidRequest(format!("user {user_id} does not exist or is not active"))
            .raise();
    }
    bind(id_bytes(&user_id), aal as u8, None);
    user_id
}

/// The assurance level of this transaction's binding (NULL when none is bound).
#[pg_extern(stable, parallel_safe)]
fn auth_current_aal() -> Option<i32> {
    binding::current().map(|b| i32::from(b.aal))
}

/// Step up: verify a TOTP code or a recovery code of the bound user and raise the session (and
/// the access tokens `auth_refresh` issues) to assurance level 2 for `pgauth.step_up_ttl`, and
/// this transaction's binding at once. False for a wrong code (the attempt is recorded and
/// counts towards the TOTP attempt limit).
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_step_up(code: &str) -> bool {
    let Some(binding) = binding::current() else {
        AuthError::NoSession.raise();
    };
    let user = Uuid::from_bytes(binding.user_id);
    let ok = crate::mfa::api::verify_second_factor(user, code).or_raise();
    let subject = user.to_string();
    if !ok {
        event::record_failure("step_up_failed", &subject, json!({})).or_raise();
        return false;
    }
    raise_bound_session(&binding, "otp").or_raise();
    true
}

/// Forget the binding of the current transaction.
#[pg_extern(volatile, parallel_unsafe)]
fn auth_clear_session() {
    binding::clear();
}

/// A new session for `user_id` (pgauth_admin or pgauth_service): an opaque token, stored only as
/// its SHA-256, valid for `ttl` (default `pgauth.session_ttl`, or `pgauth.long_session_ttl`
/// with `long => true`).
#[pg_extern(volatile, parallel_unsafe)]
fn auth_create_session(
    user_id: Option<Uuid>,
    ttl: default!(Option<pgrx::datum::Interval>, "NULL"),
    long: default!(Option<bool>, false),
) -> Option<String> {
    let user_id = user_id?;
    let long = long.unwrap_or(false); // NULL: the default
    require(Who::AdminOrService, "auth_create_session").or_raise();
    if let Some(ttl) = &ttl {
        // now() + ttl must stay a timestamp (22008 otherwise, from the INSERT)
        let micros = i128::from(ttl.micros())
            + i128::from(ttl.days()) * 86_400_000_000
            + i128::from(ttl.months()) * 30 * 86_400_000_000;
        if micros.abs() > MAX_SESSION_TTL_MICROS {
            AuthError::InvalidRequest("a session's ttl must be less than 1000 years".into())
                .raise();
        }
    }
    if !user_is_active(&user_id) {
        AuthError::InvalidRequest(format!("user {user_id} does not exist or is not active"))
            .raise();
    }
    Some(issue_session(user_id, ttl, long).or_raise())
}

/// The largest `ttl` of `auth_create_session`, either sign: far from the ends of timestamptz.
const MAX_SESSION_TTL_MICROS: i128 = 1000 * 366 * 86_400_000_000;

/// Store a new session for `user_id` and return its token; records `session_created`. The
/// caller has checked who may ask for it and that the user is active (auth_create_session,
/// auth_login).
pub(crate) fn issue_session(
    user_id: Uuid,
    ttl: Option<pgrx::datum::Interval>,
    long: bool,
) -> AuthResult<String> {
    let token = new_token()?;
    let default_seconds = if long {
        crate::settings::session().long_session_ttl()
    } else {
        crate::settings::session().session_ttl()
    };
    as_owner(|| {
        crate::pg::spi::run_with_args(
            "INSERT INTO pgauth.sessions (token_hash, user_id, expires_at)
             VALUES ($1, $2, pg_catalog.now() + coalesce($3, pg_catalog.make_interval(secs => $4)))",
            &[
                token_hash(&token).as_slice().into(),
                user_id.into(),
                ttl.into(),
                f64::from(default_seconds).into(),
            ],
        )
    })
    .map_err(spi_err)?;
    event::record("session_created", &user_id.to_string(), json!({}))?;
    Ok(token)
}

/// Revoke a session (whoever holds one of its tokens may): its opaque token, an access JWT of
/// it (the signature must be valid; an expired one is accepted) or one of its refresh tokens.
/// Every token of the session stops working: sign-out.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_revoke_session(token: &str) {
    let (condition, key): (&str, pgrx::datum::DatumWithOid) = if looks_like_token(token) {
        (
            "token_hash = $1",
            token_hash(token).as_slice().to_vec().into(),
        )
    } else if looks_like_refresh_token(token) {
        (
            "id = (SELECT session_id FROM pgauth.refresh_tokens WHERE token_hash = $1)",
            token_hash(token).as_slice().to_vec().into(),
        )
    } else {
        match crate::jwt::api::access_token_session(token) {
            Some(sid) => ("id = $1", sid.into()),
            None => return,
        }
    };
    let query = format!(
        "UPDATE pgauth.sessions SET revoked_at = pg_catalog.now()
          WHERE {condition} AND revoked_at IS NULL RETURNING user_id"
    );
    let user =
        as_owner(|| write_row(&query, &[key], |row| row.get::<Uuid>(1)).map(Option::flatten))
            .map_err(spi_err)
            .or_raise();
    if let Some(user) = user {
        event::record("session_revoked", &user.to_string(), json!({})).or_raise();
    }
}

pub(super) fn store_refresh_token(sid: Uuid) -> AuthResult<String> {
    let token = new_refresh_token()?;
    as_owner(|| {
        crate::pg::spi::run_with_args(
            "INSERT INTO pgauth.refresh_tokens (token_hash, session_id, expires_at)
             VALUES ($1, $2, pg_catalog.now() + pg_catalog.make_interval(secs => $3))",
            &[
                token_hash(&token).as_slice().into(),
                sid.into(),
                f64::from(crate::settings::session().refresh_token_ttl()).into(),
            ],
        )
    })
    .map_err(spi_err)?;
    Ok(token)
}

/// What a presented refresh token turned out to be.
enum RefreshOutcome {
    Rotated(String, String),
    /// Unknown, expired, or its session ended: no row.
    Refused,
}

fn refresh(token: &str) -> AuthResult<RefreshOutcome> {
    let hash = token_hash(token);
    // FOR UPDATE: two concurrent uses of one token serialise here, and the second sees it used.
    let row = as_owner(|| {
        write_row(
            "SELECT r.session_id, r.used_at IS NOT NULL, r.expires_at > pg_catalog.now(),
                        s.user_id
                   FROM pgauth.refresh_tokens r JOIN pgauth.sessions s ON s.id = r.session_id
                  WHERE r.token_hash = $1
                    FOR UPDATE OF r",
            &[hash.as_slice().into()],
            |r| {
                Ok((
                    r.get::<Uuid>(1)?,
                    r.get::<bool>(2)?.unwrap_or(true),
                    r.get::<bool>(3)?.unwrap_or(false),
                    r.get::<Uuid>(4)?,
                ))
            },
        )
    })
    .map_err(spi_err)?;
    let Some((Some(sid), used, unexpired, Some(user))) = row else {
        return Ok(RefreshOutcome::Refused);
    };
    let subject = user.to_string();
    if used {
        // Reuse: someone holds a copy. End the whole chain (the session and every token of it).
        let revoked = as_owner(|| {
            crate::pg::spi::connect_mut(|client| {
                let rows = client.update(
                    "UPDATE pgauth.sessions SET revoked_at = pg_catalog.now()
                      WHERE id = $1 AND revoked_at IS NULL RETURNING 1",
                    None,
                    &[sid.into()],
                )?;
                Ok::<_, pgrx::spi::Error>(!rows.is_empty())
            })
        })
        .map_err(spi_err)?;
        event::record(
            "refresh_token_reused",
            &subject,
            json!({"session_id": sid.to_string(), "session_revoked": revoked}),
        )?;
        return Ok(RefreshOutcome::Refused);
    }
    if !unexpired {
        return Ok(RefreshOutcome::Refused);
    }
    let Some((sid, user, aal)) = live_session("s.id = $1", sid.into())? else {
        return Ok(RefreshOutcome::Refused);
    };
    as_owner(|| {
        crate::pg::spi::run_with_args(
            "UPDATE pgauth.refresh_tokens SET used_at = pg_catalog.now() WHERE token_hash = $1",
            &[hash.as_slice().into()],
        )?;
        crate::pg::spi::run_with_args(
            "UPDATE pgauth.sessions
                SET expires_at = greatest(expires_at,
                                          pg_catalog.now() + pg_catalog.make_interval(secs => $2))
              WHERE id = $1",
            &[
                sid.into(),
                f64::from(crate::settings::session().refresh_token_ttl()).into(),
            ],
        )
    })
    .map_err(spi_err)?;
    let amr = as_owner(|| {
        read_one::<Vec<String>>(
            "SELECT amr FROM pgauth.sessions WHERE id = $1",
            &[sid.into()],
        )
    })
    .map_err(spi_err)?
    .unwrap_or_default();
    let next = store_refresh_token(sid)?;
    let access = crate::jwt::api::sign_access_token(user, sid, i32::from(aal), &amr)?;
    event::record(
        "token_refreshed",
        &subject,
        json!({"session_id": sid.to_string()}),
    )?;
    Ok(RefreshOutcome::Rotated(access, next))
}

/// Exchange a refresh token for a new access JWT and a new refresh token (rotation: each
/// refresh token works once). Presenting one that was already used revokes the whole session and
/// records `refresh_token_reused`. An unknown, expired, reused or revoked token gives no row (so
/// that the revocation and its audit row commit); a malformed one raises 22023.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_refresh(
    refresh_token: &str,
) -> TableIterator<'static, (name!(access_token, String), name!(refresh_token, String))> {
    if !looks_like_refresh_token(refresh_token) {
        AuthError::InvalidToken.raise();
    }
    match refresh(refresh_token).or_raise() {
        RefreshOutcome::Rotated(access, next) => TableIterator::once((access, next)),
        RefreshOutcome::Refused => TableIterator::new(std::iter::empty()),
    }
}

/// A new API key for `user_id` (pgauth_admin or pgauth_service). Shown once: pgauth keeps only
/// its prefix and SHA-256. `scopes` is recorded for the application to check.
#[pg_extern(volatile, parallel_unsafe)]
fn auth_create_api_key(
    user_id: Option<Uuid>,
    name: Option<&str>,
    scopes: default!(Option<Vec<Option<String>>>, "NULL"),
    expires_at: default!(Option<pgrx::datum::TimestampWithTimeZone>, "NULL"),
) -> Option<String> {
    let (user_id, name) = (user_id?, name?);
    require(Who::AdminOrService, "auth_create_api_key").or_raise();
    if !(1..=200).contains(&name.chars().count()) {
        AuthError::InvalidRequest("an API key's name must be 1 to 200 characters".into()).raise();
    }
    let scopes: Option<Vec<String>> = scopes.map(|s| {
        s.into_iter()
            .collect::<Option<Vec<_>>>()
            .unwrap_or_else(|| {
                AuthError::InvalidRequest("an API key's scopes must not contain NULL".into())
                    .raise()
            })
    });
    if !user_is_active(&user_id) {
        AuthError::InvalidRequest(format!("user {user_id} does not exist or is not active"))
            .raise();
    }
    let (key, prefix) = super::api_keys::new_api_key().or_raise();
    as_owner(|| {
        crate::pg::spi::run_with_args(
            "INSERT INTO pgauth.api_keys (prefix, key_hash, user_id, name, scopes, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                prefix.as_str().into(),
                super::api_keys::api_key_hash(&key).as_slice().into(),
                user_id.into(),
                name.into(),
                scopes.into(),
                expires_at.into(),
            ],
        )
    })
    .map_err(spi_err)
    .or_raise();
    event::record(
        "api_key_created",
        &user_id.to_string(),
        json!({"prefix": prefix, "name": name}),
    )
    .or_raise();
    Some(key)
}

/// The user an API key belongs to; NULL when the key is unknown, malformed, revoked, expired or
/// its user is not active. The stored hash is compared in constant time.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_verify_api_key(api_key: &str) -> Option<Uuid> {
    verify_api_key(api_key, None)
}

/// As `auth_verify_api_key(api_key)`, and NULL unless the key may be used for `scope`: keys
/// created without scopes may be used for every scope.
#[pg_extern(volatile, strict, parallel_unsafe, name = "auth_verify_api_key")]
fn auth_verify_api_key_for_scope(api_key: &str, scope: &str) -> Option<Uuid> {
    verify_api_key(api_key, Some(scope))
}

/// Wrong API keys are audited (`api_key_failed`, kept after a rollback; flood-controlled, as
/// they charge no counter) but not refused: a key carries 256 random bits, so guessing is
/// hopeless, while a lockout per address or per key would let anyone block an application
/// server's or a user's keys. The sign-in pipeline decides this (`Proof::ApiKey`).
fn verify_api_key(api_key: &str, scope: Option<&str>) -> Option<Uuid> {
    // A malformed key has no prefix: nothing is looked up.
    let prefix = super::api_keys::api_key_prefix(api_key).unwrap_or_default();
    let store = ApiKeyStore {
        api_key,
        prefix,
        scope,
        found: None,
    };
    let request = request(Proof::ApiKey { prefix }, None);
    let outcome = sign_in("auth_verify_api_key", Kind::ApiKey, store, &request).or_raise();
    if outcome.reason != Reason::Ok {
        return None;
    }
    // SKIP LOCKED: a transaction still open after using this key must not make the next use
    // of it wait (the timestamp is then left to that transaction).
    as_owner(|| {
        crate::pg::spi::run_with_args(
            "UPDATE pgauth.api_keys SET last_used_at = pg_catalog.now()
              WHERE prefix = $1 AND ctid = ANY (ARRAY(
                    SELECT ctid FROM pgauth.api_keys WHERE prefix = $1 FOR UPDATE SKIP LOCKED))",
            &[prefix.into()],
        )
    })
    .map_err(spi_err)
    .or_raise();
    outcome.user_id.map(Uuid::from_bytes)
}

/// API keys' part of the pipeline: the live (not revoked, not expired) key of a prefix and its
/// user; the SHA-256 of the presented key against the stored one in constant time, then the
/// scope. No session: the pipeline asks for no tokens.
struct ApiKeyStore<'a> {
    api_key: &'a str,
    prefix: &'a str,
    scope: Option<&'a str>,
    found: Option<FoundKey>,
}

/// The stored hash and scopes (None: created without) of the key `lookup` found.
type FoundKey = (Vec<u8>, Option<Vec<Option<String>>>);

impl Method for ApiKeyStore<'_> {
    fn lookup(&mut self, _: &Proof<'_>) -> AuthResult<Lookup> {
        if self.prefix.is_empty() {
            return Ok(Lookup::Unknown { problem: None });
        }
        let row = as_owner(|| {
            read_row(
                "SELECT k.key_hash, k.scopes, u.id, u.username, u.status FROM pgauth.api_keys k
                   JOIN pgauth.users u ON u.id = k.user_id
                  WHERE k.prefix = $1 AND k.revoked_at IS NULL
                    AND (k.expires_at IS NULL OR k.expires_at > pg_catalog.now())",
                &[self.prefix.into()],
                |r| {
                    let (Some(hash), Some(id)) = (r.get::<Vec<u8>>(1)?, r.get::<Uuid>(3)?) else {
                        return Ok(None);
                    };
                    let account = Account {
                        id: *id.as_bytes(),
                        username: r.get::<String>(4)?.unwrap_or_default(),
                        status: r.get::<String>(5)?.unwrap_or_default(),
                    };
                    Ok(Some((hash, r.get::<Vec<Option<String>>>(2)?, account)))
                },
            )
        })
        .map_err(spi_err)?
        .flatten();
        let Some((hash, scopes, account)) = row else {
            return Ok(Lookup::Unknown { problem: None });
        };
        self.found = Some((hash, scopes));
        Ok(Lookup::Known(account))
    }

    /// Nothing: an unknown key costs one SHA-256, which is not worth imitating.
    fn dummy_verify(&mut self) {}

    fn check_proof(&mut self, _: &Account) -> AuthResult<Verdict> {
        use subtle::ConstantTimeEq;
        let Some((stored, scopes)) = &self.found else {
            return Err(AuthError::Internal("API key checked before lookup".into()));
        };
        let presented = super::api_keys::api_key_hash(self.api_key);
        // The secret is checked first, so a scope mismatch says nothing about an unknown key.
        let problem = if !bool::from(presented.as_slice().ct_eq(stored)) {
            None
        } else if !super::api_keys::scope_allowed(scopes.as_deref(), self.scope) {
            Some("the key is not for this scope".to_string())
        } else {
            return Ok(Verdict::Accepted(Grant {
                aal: 1,
                amr: Vec::new(),
                expired: false,
            }));
        };
        Ok(Verdict::Refused {
            problem,
            no_password: false,
        })
    }

    fn issue_tokens(&mut self, _: &Account, _: &Grant) -> AuthResult<Tokens> {
        Err(AuthError::Internal("an API key opens no session".into()))
    }
}

/// Revoke an API key by its prefix (pgauth_admin or pgauth_service).
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_revoke_api_key(prefix: &str) -> bool {
    require(Who::AdminOrService, "auth_revoke_api_key").or_raise();
    let prefix = prefix
        .strip_prefix(super::api_keys::API_KEY_PREFIX)
        .unwrap_or(prefix);
    let prefix = prefix.split('_').next().unwrap_or(prefix);
    let revoked = as_owner(|| {
        crate::pg::spi::connect_mut(|client| {
            let rows = client.update(
                "UPDATE pgauth.api_keys SET revoked_at = pg_catalog.now()
                  WHERE prefix = $1 AND revoked_at IS NULL RETURNING user_id",
                None,
                &[prefix.into()],
            )?;
            Ok::<_, pgrx::spi::Error>(!rows.is_empty())
        })
    })
    .map_err(spi_err)
    .or_raise();
    if revoked {
        event::record("api_key_revoked", prefix, json!({"prefix": prefix})).or_raise();
    }
    revoked
}
