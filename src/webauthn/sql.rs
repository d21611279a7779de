//! SQL functions for passkeys: settings, challenges, credential storage, audit events. The
//! checks are in `mod.rs`.
//!
//! Who may call what:
//! - `auth_webauthn_login_begin` / `_login_finish` (in `sql/sign_in.rs`): PUBLIC, like
//!   `auth_login` (they prove identity themselves). `_login_finish` never raises for a failed
//!   sign-in: the failure, its lockout counter, the consumed challenge and the audit row commit.
//!   It raises 22023 only when its argument is not shaped like a browser's credential JSON.
//! - registering, listing, renaming and revoking a user's passkeys: members of pgauth_admin or
//!   pgauth_service, or the user themself in a transaction bound with `auth_set_session` (or
//!   `auth_bind_user`). PostgREST claims are not enough to add a credential. Registering and
//!   revoking change the user's second factors, so they also pass
//!   `mfa::authorize_factor_change` (aal 2 once the user has a factor).
//!
//! Tables are read and written inside `as_owner`; PUBLIC has no access to them.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::{json, Value};

use super::{
    base64url_encode, client_data_challenge, parse_assertion, parse_origins, parse_registration,
    verify_assertion, verify_registration, AssertionOutcome, CoseAlgorithm, RelyingParty,
    StoredCredential, UserVerification, WebauthnError,
};
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::login::api::username_of;
use crate::mfa::api::authorize_factor_change;
use crate::pg::binding;
use crate::pg::event;
use crate::pg::roles::{as_owner, require_or, Who};
use crate::pg::spi::{read_one, read_row, spi_err, write_row};

mod sign_in;

fn user_verification() -> UserVerification {
    use crate::settings::UvSetting;
    match crate::settings::webauthn().user_verification() {
        UvSetting::Required => UserVerification::Required,
        UvSetting::Preferred => UserVerification::Preferred,
        UvSetting::Discouraged => UserVerification::Discouraged,
    }
}

fn relying_party() -> AuthResult<RelyingParty> {
    let Some(rp_id) = crate::settings::webauthn().rp_id() else {
        return Err(AuthError::WebAuthnNotConfigured(
            "pgauth.webauthn_rp_id is not set".into(),
        ));
    };
    let origins = match crate::settings::webauthn().origins() {
        Some(list) => parse_origins(&list).map_err(AuthError::WebAuthnNotConfigured)?,
        None => Vec::new(),
    };
    let origins = if origins.is_empty() {
        vec![format!("https://{rp_id}")]
    } else {
        origins
    };
    Ok(RelyingParty {
        rp_id,
        origins,
        require_user_verification: user_verification() == UserVerification::Required,
    })
}

fn webauthn_err(e: WebauthnError) -> AuthError {
    AuthError::WebAuthn(e.to_string())
}

fn random_bytes<const N: usize>() -> AuthResult<[u8; N]> {
    let mut out = [0u8; N];
    crate::random::fill(&mut out)?;
    Ok(out)
}

/// Members of pgauth_admin or pgauth_service, or `user_id` bound to this transaction.
fn require_manage(user_id: &Uuid, action: &str) -> AuthResult<()> {
    require_or(
        Who::SelfOr(user_id.as_bytes()),
        action,
        AuthError::WebAuthnPermissionDenied,
    )
}

/// A new challenge row; old ones are cleared as we go (a few at a time, skipping rows in use).
fn store_challenge(
    ceremony: &str,
    user_id: Option<Uuid>,
    discoverable: bool,
    client_key: Option<&str>,
) -> AuthResult<[u8; 32]> {
    let challenge = random_bytes::<32>()?;
    let ttl = i64::from(crate::settings::webauthn().challenge_ttl());
    as_owner(|| {
        crate::pg::spi::connect_mut(|client| {
            client.update(
                "DELETE FROM pgauth.webauthn_challenges WHERE ctid = ANY (ARRAY(
                     SELECT ctid FROM pgauth.webauthn_challenges
                      WHERE expires_at < pg_catalog.now() LIMIT 100 FOR UPDATE SKIP LOCKED))",
                None,
                &[],
            )?;
            client.update(
                "INSERT INTO pgauth.webauthn_challenges
                        (challenge, ceremony, user_id, discoverable, expires_at, client)
                 VALUES ($1, $2, $3, $4,
                         pg_catalog.now() + pg_catalog.make_interval(secs => $5::double precision),
                         $6::inet)",
                None,
                &[
                    challenge.as_slice().into(),
                    ceremony.into(),
                    user_id.into(),
                    discoverable.into(),
                    ttl.into(),
                    client_key.into(),
                ],
            )?;
            Ok::<(), pgrx::spi::Error>(())
        })
    })
    .map_err(spi_err)?;
    Ok(challenge)
}

/// A challenge as it was stored, taken out of the table: it is used once whatever follows.
struct Challenge {
    user_id: Option<Uuid>,
    discoverable: bool,
    fresh: bool,
}

fn consume_challenge(challenge: &[u8], ceremony: &str) -> AuthResult<Option<Challenge>> {
    as_owner(|| {
        write_row(
            "DELETE FROM pgauth.webauthn_challenges WHERE challenge = $1 AND ceremony = $2
             RETURNING user_id, discoverable, expires_at > pg_catalog.now()",
            &[challenge.into(), ceremony.into()],
            |row| {
                Ok(Challenge {
                    user_id: row.get::<Uuid>(1)?,
                    discoverable: row.get::<bool>(2)?.unwrap_or(false),
                    fresh: row.get::<bool>(3)?.unwrap_or(false),
                })
            },
        )
    })
    .map_err(spi_err)
}

/// The user's random WebAuthn user handle, made on first use.
fn user_handle(user_id: &Uuid) -> AuthResult<Vec<u8>> {
    let fresh = random_bytes::<32>()?;
    as_owner(|| {
        crate::pg::spi::run_with_args(
            "INSERT INTO pgauth.webauthn_user_handles (user_id, handle) VALUES ($1, $2)
             ON CONFLICT (user_id) DO NOTHING",
            &[(*user_id).into(), fresh.as_slice().into()],
        )?;
        read_one::<Vec<u8>>(
            "SELECT handle FROM pgauth.webauthn_user_handles WHERE user_id = $1",
            &[(*user_id).into()],
        )
    })
    .map_err(spi_err)?
    .ok_or_else(|| AuthError::Internal("user handle missing".into()))
}

/// `{type, id, transports}` of a user's credentials (excludeCredentials / allowCredentials).
fn descriptors(user_id: &Uuid) -> AuthResult<Vec<Value>> {
    as_owner(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT credential_id, transports FROM pgauth.webauthn_credentials
                      WHERE user_id = $1 ORDER BY created_at, id",
                    None,
                    &[(*user_id).into()],
                )?
                .map(|row| {
                    let id = row.get::<Vec<u8>>(1)?.unwrap_or_default();
                    let transports = row.get::<Vec<String>>(2)?.unwrap_or_default();
                    Ok(json!({"type": "public-key", "id": base64url_encode(&id), "transports": transports}))
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .map_err(spi_err)
}

fn timeout_millis() -> i64 {
    i64::from(crate::settings::webauthn().challenge_ttl()) * 1000
}

/// PublicKeyCredentialCreationOptions (JSON form: binary values base64url) for
/// `navigator.credentials.create({publicKey: ...})`.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_webauthn_register_begin(user_id: Uuid) -> JsonB {
    JsonB(register_begin(user_id).or_raise())
}

fn register_begin(user_id: Uuid) -> AuthResult<Value> {
    require_manage(&user_id, "auth_webauthn_register_begin")?;
    authorize_factor_change(&user_id, "auth_webauthn_register_begin")?;
    let rp = relying_party()?;
    let username = username_of(&user_id)?;
    let handle = user_handle(&user_id)?;
    let exclude = descriptors(&user_id)?;
    let challenge = store_challenge("register", Some(user_id), false, None)?;
    let rp_name = crate::settings::webauthn()
        .rp_name()
        .unwrap_or_else(|| rp.rp_id.clone());
    let params: Vec<Value> = CoseAlgorithm::ALL
        .iter()
        .map(|a| json!({"type": "public-key", "alg": a.id()}))
        .collect();
    Ok(json!({
        "challenge": base64url_encode(&challenge),
        "rp": {"id": rp.rp_id, "name": rp_name},
        "user": {"id": base64url_encode(&handle), "name": username, "displayName": username},
        "pubKeyCredParams": params,
        "timeout": timeout_millis(),
        "excludeCredentials": exclude,
        "authenticatorSelection": {
            "residentKey": "preferred",
            "requireResidentKey": false,
            "userVerification": user_verification().as_str(),
        },
        "attestation": "none",
    }))
}

/// Verify the browser's response to `auth_webauthn_register_begin` and store the passkey;
/// returns its id. Raises 22023 when the response is refused (the transaction, and with it the
/// consumption of the challenge, rolls back: the challenge stays usable until it expires, and
/// only to someone who may register passkeys for this user).
#[pg_extern(volatile, parallel_unsafe)]
fn auth_webauthn_register_finish(
    user_id: Option<Uuid>,
    credential: Option<crate::pg::jsonb::JsonbArg>,
    name: default!(Option<&str>, "NULL"),
) -> Option<Uuid> {
    let (user_id, credential) = (user_id?, credential?);
    Some(register_finish(user_id, &credential.0, name).or_raise())
}

fn register_finish(user_id: Uuid, credential: &Value, name: Option<&str>) -> AuthResult<Uuid> {
    require_manage(&user_id, "auth_webauthn_register_finish")?;
    let change = authorize_factor_change(&user_id, "auth_webauthn_register_finish")?;
    let name = check_name(name.unwrap_or("passkey"))?;
    let rp = relying_party()?;
    let username = username_of(&user_id)?;
    let response = parse_registration(credential).map_err(webauthn_err)?;
    let challenge = client_data_challenge(&response.client_data_json).map_err(webauthn_err)?;
    let stored = consume_challenge(&challenge, "register")?;
    let refuse = |m: &str| {
        Err(AuthError::WebAuthn(format!(
            "WebAuthn response refused: {m}"
        )))
    };
    let Some(stored) = stored else {
        return refuse("unknown or already used challenge");
    };
    if stored.user_id != Some(user_id) {
        return refuse("the challenge was issued for another user");
    }
    if !stored.fresh {
        return refuse("the challenge has expired");
    }
    let new = verify_registration(&response, &challenge, &rp).map_err(webauthn_err)?;
    let taken = as_owner(|| {
        read_one::<bool>(
            "SELECT true FROM pgauth.webauthn_credentials WHERE credential_id = $1",
            &[new.credential_id.as_slice().into()],
        )
    })
    .map_err(spi_err)?;
    if taken.is_some() {
        return refuse("this passkey is already registered");
    }
    let aaguid = Uuid::from_bytes(new.aaguid);
    let id = as_owner(|| {
        read_one::<Uuid>(
            "INSERT INTO pgauth.webauthn_credentials
                    (user_id, credential_id, public_key, algorithm, sign_count, transports, aaguid,
                     attestation_format, backup_eligible, backed_up, user_verified, name)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             RETURNING id",
            &[
                user_id.into(),
                new.credential_id.as_slice().into(),
                new.public_key.as_slice().into(),
                (new.algorithm.id() as i32).into(),
                i64::from(new.sign_count).into(),
                response.transports.clone().into(),
                aaguid.into(),
                new.format.as_str().into(),
                new.backup_eligible.into(),
                new.backed_up.into(),
                new.user_verified.into(),
                name.as_str().into(),
            ],
        )
    })
    .map_err(spi_err)?
    .ok_or_else(|| AuthError::Internal("credential insert returned nothing".into()))?;
    let details = json!({
        "user_id": user_id.to_string(),
        "credential": id.to_string(),
        "credential_id": base64url_encode(&new.credential_id),
        "algorithm": new.algorithm.name(),
        "format": new.format,
        "aaguid": aaguid.to_string(),
        "user_verified": new.user_verified,
        "backup_eligible": new.backup_eligible,
    });
    let details = change.audit(details);
    event::record("webauthn_registered", &username, details)?;
    Ok(id)
}

fn check_name(name: &str) -> AuthResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AuthError::InvalidRequest(
            "a passkey name must be 1 to 100 printable characters".into(),
        ));
    }
    Ok(name.to_string())
}

struct StoredRow {
    id: Uuid,
    user_id: Uuid,
    public_key: Vec<u8>,
    sign_count: u32,
    backup_eligible: bool,
    handle: Option<Vec<u8>>,
}

impl StoredRow {
    fn stored(&self) -> StoredCredential<'_> {
        StoredCredential {
            public_key: &self.public_key,
            sign_count: self.sign_count,
            backup_eligible: self.backup_eligible,
        }
    }
}

/// A verified assertion: its sign counter, backup state and time of use are stored.
fn record_use(cred: &StoredRow, outcome: &AssertionOutcome) -> AuthResult<()> {
    as_owner(|| {
        crate::pg::spi::run_with_args(
            "UPDATE pgauth.webauthn_credentials
                SET sign_count = $2, backed_up = $3, last_used_at = pg_catalog.now()
              WHERE id = $1",
            &[
                cred.id.into(),
                i64::from(outcome.sign_count).into(),
                outcome.backed_up.into(),
            ],
        )
    })
    .map_err(spi_err)
}

fn find_credential(credential_id: &[u8]) -> AuthResult<Option<StoredRow>> {
    let row = as_owner(|| {
        // Locked until the end of the transaction: concurrent sign-ins with one passkey take
        // turns, so each sees the counter the previous one stored.
        write_row(
            "SELECT c.id, c.user_id, c.public_key, c.sign_count, c.backup_eligible, h.handle
               FROM pgauth.webauthn_credentials c
               LEFT JOIN pgauth.webauthn_user_handles h ON h.user_id = c.user_id
              WHERE c.credential_id = $1
                FOR UPDATE OF c",
            &[credential_id.into()],
            |row| {
                let (Some(id), Some(user_id)) = (row.get::<Uuid>(1)?, row.get::<Uuid>(2)?) else {
                    return Ok(None);
                };
                Ok(Some(StoredRow {
                    id,
                    user_id,
                    public_key: row.get::<Vec<u8>>(3)?.unwrap_or_default(),
                    sign_count: row
                        .get::<i64>(4)?
                        .unwrap_or(0)
                        .clamp(0, i64::from(u32::MAX)) as u32,
                    backup_eligible: row.get::<bool>(5)?.unwrap_or(false),
                    handle: row.get::<Vec<u8>>(6)?,
                }))
            },
        )
    })
    .map_err(spi_err)?;
    Ok(row.flatten())
}

/// A user's passkeys.
#[pg_extern(stable, strict, parallel_safe)]
#[allow(clippy::type_complexity)]
fn auth_webauthn_credentials(
    user_id: Uuid,
) -> TableIterator<
    'static,
    (
        name!(id, Uuid),
        name!(credential_id, String),
        name!(name, String),
        name!(algorithm, String),
        name!(transports, Vec<String>),
        name!(aaguid, Uuid),
        name!(backup_eligible, bool),
        name!(backed_up, bool),
        name!(sign_count, i64),
        name!(created_at, Option<TimestampWithTimeZone>),
        name!(last_used_at, Option<TimestampWithTimeZone>),
    ),
> {
    require_manage(&user_id, "auth_webauthn_credentials").or_raise();
    let rows = as_owner(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT id, credential_id, name, algorithm, transports, aaguid,
                            backup_eligible, backed_up, sign_count, created_at, last_used_at
                       FROM pgauth.webauthn_credentials WHERE user_id = $1
                      ORDER BY created_at, id",
                    None,
                    &[user_id.into()],
                )?
                .map(|row| {
                    let alg = row.get::<i32>(4)?.unwrap_or(0);
                    let alg = CoseAlgorithm::from_id(i64::from(alg))
                        .map_or_else(|_| alg.to_string(), |a| a.name().to_string());
                    Ok((
                        row.get::<Uuid>(1)?.unwrap_or(Uuid::from_bytes([0; 16])),
                        base64url_encode(&row.get::<Vec<u8>>(2)?.unwrap_or_default()),
                        row.get::<String>(3)?.unwrap_or_default(),
                        alg,
                        row.get::<Vec<String>>(5)?.unwrap_or_default(),
                        row.get::<Uuid>(6)?.unwrap_or(Uuid::from_bytes([0; 16])),
                        row.get::<bool>(7)?.unwrap_or(false),
                        row.get::<bool>(8)?.unwrap_or(false),
                        row.get::<i64>(9)?.unwrap_or(0),
                        row.get::<TimestampWithTimeZone>(10)?,
                        row.get::<TimestampWithTimeZone>(11)?,
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .map_err(spi_err)
    .or_raise();
    TableIterator::new(rows)
}

/// The passkey `credential_id` (base64url, as listed) and its owner; None when unknown.
fn credential_owner(credential_id: &str) -> AuthResult<Option<(Uuid, Uuid, String)>> {
    let Ok(raw) = super::base64url_decode(credential_id, "credential_id", super::MAX_CREDENTIAL_ID)
    else {
        return Err(AuthError::InvalidRequest(
            "credential_id must be a passkey's base64url credential id".into(),
        ));
    };
    let row = as_owner(|| {
        read_row(
            "SELECT c.id, c.user_id, u.username FROM pgauth.webauthn_credentials c
               JOIN pgauth.users u ON u.id = c.user_id WHERE c.credential_id = $1",
            &[raw.as_slice().into()],
            |row| {
                Ok(match (row.get::<Uuid>(1)?, row.get::<Uuid>(2)?) {
                    (Some(id), Some(user)) => {
                        Some((id, user, row.get::<String>(3)?.unwrap_or_default()))
                    }
                    _ => None,
                })
            },
        )
    })
    .map_err(spi_err)?;
    Ok(row.flatten())
}

/// Rename a passkey; false when there is no such passkey.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_webauthn_rename(credential_id: &str, name: &str) -> bool {
    rename(credential_id, name).or_raise()
}

fn rename(credential_id: &str, name: &str) -> AuthResult<bool> {
    let name = check_name(name)?;
    let Some((id, user, username)) = credential_owner(credential_id)? else {
        return Ok(false);
    };
    require_manage(&user, "auth_webauthn_rename")?;
    as_owner(|| {
        crate::pg::spi::run_with_args(
            "UPDATE pgauth.webauthn_credentials SET name = $2 WHERE id = $1",
            &[id.into(), name.as_str().into()],
        )
    })
    .map_err(spi_err)?;
    let details = json!({"user_id": user.to_string(), "credential": id.to_string(),
                         "credential_id": credential_id, "name": name});
    event::record("webauthn_renamed", &username, details)?;
    Ok(true)
}

/// Revoke (delete) a passkey; false when there is no such passkey.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_webauthn_revoke(credential_id: &str) -> bool {
    revoke(credential_id).or_raise()
}

fn revoke(credential_id: &str) -> AuthResult<bool> {
    let Some((id, user, username)) = credential_owner(credential_id)? else {
        return Ok(false);
    };
    require_manage(&user, "auth_webauthn_revoke")?;
    let change = authorize_factor_change(&user, "auth_webauthn_revoke")?;
    as_owner(|| {
        crate::pg::spi::run_with_args(
            "DELETE FROM pgauth.webauthn_credentials WHERE id = $1",
            &[id.into()],
        )
    })
    .map_err(spi_err)?;
    let details = change.audit(
        json!({"user_id": user.to_string(), "credential": id.to_string(),
                                      "credential_id": credential_id}),
    );
    event::record("webauthn_revoked", &username, details)?;
    Ok(true)
}

/// Step up with a passkey: the browser's response to `auth_webauthn_login_begin(<the bound
/// user's name>)`, made with user verification, raises the bound session to aal 2 like
/// `auth_step_up(code)` does. Only the bound user's own passkeys count, and those were added
/// under `authorize_factor_change` (first factor, aal 2, or an administrator): an aal 1
/// session cannot add the passkey it would step up with. False when the assertion is not the bound user's, is not
/// user-verified, or fails any check (recorded as `step_up_failed`; the challenge is used up).
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_webauthn_step_up(credential: crate::pg::jsonb::JsonbArg) -> bool {
    let Some(binding) = binding::current() else {
        AuthError::NoSession.raise();
    };
    let user = Uuid::from_bytes(binding.user_id);
    match step_up(&credential.0, user).or_raise() {
        Ok(()) => {
            crate::session::api::raise_bound_session(&binding, "hwk").or_raise();
            true
        }
        Err(problem) => {
            let d = json!({"method": "hwk", "problem": problem});
            event::record_failure("step_up_failed", &user.to_string(), d).or_raise();
            false
        }
    }
}

/// Ok(Err(problem)) for a refused assertion; Err only for input that is not a credential.
fn step_up(credential: &Value, user: Uuid) -> AuthResult<Result<(), String>> {
    let rp = relying_party()?;
    let response = parse_assertion(credential).map_err(webauthn_err)?;
    let challenge = match client_data_challenge(&response.client_data_json) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let stored_challenge = consume_challenge(&challenge, "login")?;
    let Some(cred) = find_credential(&response.raw_id)?.filter(|c| c.user_id == user) else {
        return Ok(Err("not a passkey of the bound user".into()));
    };
    match &stored_challenge {
        None => return Ok(Err("unknown or already used challenge".into())),
        Some(c) if !c.fresh => return Ok(Err("the challenge has expired".into())),
        Some(c) if c.user_id != Some(user) => {
            return Ok(Err("the challenge was issued for another user".into()))
        }
        Some(_) => {}
    }
    let outcome = match verify_assertion(&response, &challenge, &rp, &cred.stored()) {
        Ok(o) => o,
        Err(e) => {
            if let WebauthnError::CounterRollback { stored, received } = e {
                let d = json!({"credential": cred.id.to_string(), "stored_count": stored,
                               "received_count": received});
                event::record("webauthn_counter_rollback", &user.to_string(), d)?;
            }
            return Ok(Err(e.to_string()));
        }
    };
    record_use(&cred, &outcome)?;
    if !outcome.user_verified {
        return Ok(Err(
            "the authenticator did not verify the user (UV flag)".into()
        ));
    }
    Ok(Ok(()))
}
