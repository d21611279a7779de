//! SQL functions for JWT signing keys, signing, verification and the JWKS; the access tokens of
//! sign-ins.
//!
//! Private key material is stored sealed under the `default` data key (the auth_encrypt
//! envelope, associated data = the key id), so the master key protects it and pg_dump carries
//! it like every other key. Parsed keys are cached per backend and dropped when
//! `pgauth.key_state.generation` moves (bumped by every change to `pgauth.signing_keys`), which
//! is read once per statement: signing or verifying many tokens in one statement touches no
//! table after the first.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;
use std::rc::Rc;

use pgrx::prelude::*;
use pgrx::{pg_sys, JsonB, Uuid};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::{Alg, Expected};
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::pg::current_position;
use crate::pg::event;
use crate::pg::roles::{as_owner, caller, require, Who};
use crate::pg::spi::{read_one, read_row, spi_err, write_row};

pub(super) fn access_key_name() -> String {
    crate::settings::jwt().key_name()
}

/// What a signing key is for (`pgauth.signing_keys.purpose`): the access-token key signs only
/// pgauth's own access tokens, and only its tokens bind a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Access,
    General,
}

impl Purpose {
    fn parse(text: &str) -> Self {
        if text == "access" {
            Purpose::Access
        } else {
            Purpose::General
        }
    }

    fn name(self) -> &'static str {
        match self {
            Purpose::Access => "access",
            Purpose::General => "general",
        }
    }
}

pub(super) struct SignKey {
    kid: String,
    alg: Alg,
    key: jsonwebtoken::EncodingKey,
    purpose: Purpose,
}

pub(super) struct VerifyKey {
    pub(super) name: String,
    pub(super) alg: Alg,
    pub(super) key: jsonwebtoken::DecodingKey,
    pub(super) purpose: Purpose,
}

#[derive(Default)]
struct JwtState {
    checked_at: Option<(u32, u32, i64)>,
    generation: Option<i64>,
    /// The master key settings when last checked (see crypto::sql): a changed or removed master
    /// key drops every parsed key, as it does for data keys.
    master_settings: crate::crypto::api::MasterSettings,
    /// key name → its active version, ready to sign.
    signers: HashMap<String, Rc<SignKey>>,
    /// kid → verification key (None: no usable key with that id; also cached).
    verifiers: HashMap<String, Option<Rc<VerifyKey>>>,
    /// role → may sign; valid for one statement.
    may_sign: HashMap<pg_sys::Oid, bool>,
}

thread_local! {
    static STATE: RefCell<JwtState> = RefCell::new(JwtState::default());
}

/// Once per statement: drop cached keys when signing keys or the master key setting changed.
pub(super) fn refresh() -> AuthResult<()> {
    let position = current_position();
    let master = crate::crypto::api::master_settings();
    let unchanged = STATE.with(|s| {
        let s = s.borrow();
        s.checked_at == Some(position) && s.master_settings == master
    });
    if unchanged {
        return Ok(());
    }
    let generation = crate::crypto::api::key_generation()?;
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if s.generation != Some(generation) || s.master_settings != master {
            s.signers.clear();
            s.verifiers.clear();
            s.generation = Some(generation);
            s.master_settings = master;
        }
        s.may_sign.clear();
        s.checked_at = Some(position);
    });
    Ok(())
}

/// This backend changed signing keys: forget everything now (a rolled-back change would not
/// move the generation).
fn forget_cached() {
    STATE.with(|s| *s.borrow_mut() = JwtState::default());
}

fn open_private(kid: &Uuid, sealed: &[u8]) -> AuthResult<Zeroizing<Vec<u8>>> {
    as_owner(|| crate::crypto::api::decrypt(sealed, Some(kid.as_bytes())))
}

pub(super) fn signer(name: &str) -> AuthResult<Option<Rc<SignKey>>> {
    refresh()?;
    if let Some(k) = STATE.with(|s| s.borrow().signers.get(name).cloned()) {
        return Ok(Some(k));
    }
    let row = as_owner(|| {
        read_row(
            "SELECT id, algorithm, private_key, purpose FROM pgauth.signing_keys
                  WHERE name = $1 AND status = 'active' AND private_key IS NOT NULL",
            &[name.into()],
            |r| {
                Ok(
                    match (
                        r.get::<Uuid>(1)?,
                        r.get::<String>(2)?,
                        r.get::<Vec<u8>>(3)?,
                        r.get::<String>(4)?,
                    ) {
                        (Some(id), Some(alg), Some(sealed), Some(purpose)) => {
                            Some((id, alg, sealed, purpose))
                        }
                        _ => None,
                    },
                )
            },
        )
        .map(Option::flatten)
    })
    .map_err(spi_err)?;
    let Some((id, alg, sealed, purpose)) = row else {
        return Ok(None);
    };
    let alg = Alg::parse(&alg)?;
    let private = open_private(&id, &sealed)?;
    let key = Rc::new(SignKey {
        kid: id.to_string(),
        alg,
        key: super::encoding_key(alg, &private)?,
        purpose: Purpose::parse(&purpose),
    });
    STATE.with(|s| s.borrow_mut().signers.insert(name.to_string(), key.clone()));
    Ok(Some(key))
}

pub(super) fn verifier(kid: &str) -> AuthResult<Option<Rc<VerifyKey>>> {
    refresh()?;
    if let Some(k) = STATE.with(|s| s.borrow().verifiers.get(kid).cloned()) {
        return Ok(k);
    }
    let loaded = match crate::ids::parse_uuid(kid) {
        None => None,
        Some(id) => load_verifier(Uuid::from_bytes(id))?,
    };
    // Bounded: a stream of made-up kids must not grow the cache without end.
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if s.verifiers.len() >= 1024 {
            s.verifiers.clear();
        }
        s.verifiers.insert(kid.to_string(), loaded.clone());
    });
    Ok(loaded)
}

fn load_verifier(id: Uuid) -> AuthResult<Option<Rc<VerifyKey>>> {
    let row = as_owner(|| {
        read_row(
            "SELECT name, algorithm,
                        CASE WHEN algorithm LIKE 'HS%' THEN private_key END, public_jwk, purpose
                   FROM pgauth.signing_keys
                  WHERE id = $1 AND status IN ('active', 'verify_only')",
            &[id.into()],
            |r| {
                Ok((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<Vec<u8>>(3)?,
                    r.get::<JsonB>(4)?.map(|j| j.0),
                    r.get::<String>(5)?.unwrap_or_default(),
                ))
            },
        )
    })
    .map_err(spi_err)?;
    let Some((name, alg, sealed, jwk, purpose)) = row else {
        return Ok(None);
    };
    let alg = Alg::parse(&alg)?;
    let secret = match sealed {
        Some(sealed) if alg.is_hmac() => Some(open_private(&id, &sealed)?),
        _ => None,
    };
    let key = super::decoding_key(alg, secret.as_deref().map(|s| s.as_slice()), jwk.as_ref())?;
    Ok(Some(Rc::new(VerifyKey {
        name,
        alg,
        key,
        purpose: Purpose::parse(&purpose),
    })))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Sign with the active version of `name`, which must be a key for `purpose`: auth_jwt_sign may
/// not use the access-token key (42501), and access tokens are signed only with it.
pub(super) fn sign_with(
    name: &str,
    purpose: Purpose,
    claims: Value,
    ttl_seconds: i64,
) -> AuthResult<String> {
    let key = signer(name)?.ok_or_else(|| AuthError::NoSuchSigningKey(name.into()))?;
    match (purpose, key.purpose) {
        (Purpose::General, Purpose::Access) => {
            return Err(AuthError::AccessKeyReserved(name.into()))
        }
        (Purpose::Access, Purpose::General) => return Err(AuthError::NotAccessKey(name.into())),
        _ => {}
    }
    let issuer = crate::settings::jwt().issuer();
    let claims = super::complete_claims(claims, unix_now(), ttl_seconds, issuer.as_deref())?;
    super::sign(key.alg, &key.kid, &key.key, &claims)
}

/// Verify `token` with a key of `name` (its kid must be one of that name's versions); the claims
/// as signed (JSON text).
fn verify_raw_with(name: &str, token: &str, expected: Expected<'_>) -> AuthResult<Vec<u8>> {
    let (kid, alg) = super::peek_header(token)?;
    let key = verifier(&kid)?.ok_or(AuthError::InvalidToken)?;
    if key.name != name || key.alg != alg {
        return Err(AuthError::InvalidToken);
    }
    super::verify_raw(token, key.alg, &key.key, expected)
}

/// Like `verify_raw_with`, and the key must be an access-token key: a token of a general key
/// (auth_jwt_sign) never passes as an access token, whatever pgauth.jwt_key names.
pub(super) fn verify_access_raw(
    name: &str,
    token: &str,
    expected: Expected<'_>,
) -> AuthResult<Vec<u8>> {
    let (kid, alg) = super::peek_header(token)?;
    let key = verifier(&kid)?.ok_or(AuthError::InvalidToken)?;
    if key.name != name || key.alg != alg || key.purpose != Purpose::Access {
        return Err(AuthError::InvalidToken);
    }
    super::verify_raw(token, key.alg, &key.key, expected)
}

/// JSON text handed to PostgreSQL's `jsonb_in` as it is: verified claims go into jsonb without
/// a round trip through serde_json values (half the cost of a verification).
pub struct RawJsonb(Vec<u8>);

impl pgrx::IntoDatum for RawJsonb {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let text = CString::new(self.0).ok()?;
        // SAFETY: jsonb_in reads a NUL-terminated string and returns a palloc'd jsonb.
        unsafe {
            pgrx::fcinfo::direct_function_call_as_datum(
                pg_sys::jsonb_in,
                &[Some(text.as_ptr().into())],
            )
        }
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

// SAFETY: the datum returned is the jsonb that into_datum made (or NULL).
unsafe impl pgrx::callconv::BoxRet for RawJsonb {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        match pgrx::IntoDatum::into_datum(self) {
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

// SAFETY: RawJsonb is returned as jsonb, which into_datum produces.
unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for RawJsonb {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(RawJsonb);
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
    const ARGUMENT_SQL: Result<
        pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef,
        pgrx::pgrx_sql_entity_graph::metadata::ArgumentError,
    > = Ok(pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<
        pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef,
        pgrx::pgrx_sql_entity_graph::metadata::ReturnsError,
    > = Ok(pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef::One(
        pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal("jsonb"),
    ));
}

fn require_signer_role() -> AuthResult<()> {
    let role = caller();
    let cached = STATE.with(|s| s.borrow().may_sign.get(&role).copied());
    let allowed = cached.unwrap_or_else(|| {
        let allowed = Who::AdminOrService.allows_caller();
        STATE.with(|s| s.borrow_mut().may_sign.insert(role, allowed));
        allowed
    });
    if allowed {
        Ok(())
    } else {
        // A signed token asserts an identity: only those who may bind users may sign.
        require(Who::AdminOrService, "auth_jwt_sign")
    }
}

fn interval_seconds(ttl: &pgrx::datum::Interval) -> i64 {
    let micros = i128::from(ttl.micros())
        + i128::from(ttl.days()) * 86_400_000_000
        + i128::from(ttl.months()) * 30 * 86_400_000_000;
    (micros / 1_000_000).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Sign `claims` with the active version of `key_name`: adds `iat`, `exp` (now + `ttl`) and,
/// when the claims have none, `iss` (`pgauth.jwt_issuer`). For pgauth_service and pgauth_admin.
#[pg_extern(volatile, strict, parallel_safe)]
fn auth_jwt_sign(
    claims: crate::pg::jsonb::JsonbArg,
    key_name: default!(&str, "'jwt'"),
    ttl: default!(pgrx::datum::Interval, "'15 minutes'"),
) -> String {
    refresh().or_raise();
    require_signer_role().or_raise();
    sign_with(key_name, Purpose::General, claims.0, interval_seconds(&ttl)).or_raise()
}

/// Verify `token` with `key_name`'s keys: signature with the key's own algorithm, `exp`
/// (required) and `nbf` with 30 s leeway, `aud` when `audience` is given and `iss` when `issuer`
/// is given. Returns the claims; raises 22023 when the token is invalid or expired.
#[pg_extern(volatile, parallel_safe)]
fn auth_jwt_verify(
    token: Option<&str>,
    key_name: default!(Option<&str>, "'jwt'"),
    audience: default!(Option<&str>, "NULL"),
    issuer: default!(Option<&str>, "NULL"),
) -> Option<RawJsonb> {
    let (token, key_name) = (token?, key_name?);
    let expected = Expected { audience, issuer };
    Some(RawJsonb(
        verify_raw_with(key_name, token, expected).or_raise(),
    ))
}

/// The public keys (JWKS, RFC 7517) of every usable asymmetric signing key, or of `key_name`'s.
/// HMAC keys have no public half and are never listed.
#[pg_extern(stable, parallel_safe)]
fn auth_jwks(key_name: default!(Option<&str>, "NULL")) -> JsonB {
    let keys = as_owner(|| {
        read_one::<JsonB>(
            "SELECT coalesce(jsonb_agg(public_jwk ORDER BY name, version), '[]')
               FROM pgauth.signing_keys
              WHERE public_jwk IS NOT NULL AND status IN ('active', 'verify_only')
                AND ($1::text IS NULL OR name = $1)",
            &[key_name.into()],
        )
    })
    .map_err(spi_err)
    .or_raise()
    .map_or(Value::Array(vec![]), |j| j.0);
    JsonB(json!({ "keys": keys }))
}

fn new_kid() -> AuthResult<Uuid> {
    crate::random::uuid_v4().map(Uuid::from_bytes)
}

/// The purpose of the versions of `name`; None when there are none.
fn name_purpose(name: &str) -> AuthResult<Option<Purpose>> {
    as_owner(|| {
        read_one::<String>(
            "SELECT purpose FROM pgauth.signing_keys WHERE name = $1 ORDER BY version LIMIT 1",
            &[name.into()],
        )
    })
    .map_err(spi_err)
    .map(|p| p.map(|p| Purpose::parse(&p)))
}

fn check_name(name: &str) -> AuthResult<()> {
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:@/-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AuthError::InvalidRequest(
            "a signing key name is 1 to 128 characters from A-Z a-z 0-9 _ . : @ / -".into(),
        ))
    }
}

/// Store a new version of `name`. `private` (None for an imported public key) is sealed; the
/// new version is active when it can sign (the previous active one becomes verify_only).
pub(super) fn store_version(
    name: &str,
    purpose: Purpose,
    alg: Alg,
    private: Option<&[u8]>,
    public_pem: Option<&[u8]>,
) -> AuthResult<Uuid> {
    check_name(name)?;
    crate::pg::serialize_on(crate::pg::LockSpace::SigningKey, name);
    if let Some(existing) = name_purpose(name)? {
        if existing != purpose {
            return Err(AuthError::NotAccessKey(name.into()));
        }
    }
    let kid = new_kid()?;
    let jwk = match (private, public_pem) {
        (Some(p), _) => super::public_jwk(alg, &kid.to_string(), p)?,
        (None, Some(pem)) => Some(super::public_jwk_from_pem(alg, &kid.to_string(), pem)?),
        (None, None) => return Err(AuthError::Internal("a key needs material".into())),
    };
    if let Some(p) = private {
        // Refuse material that cannot sign before storing it.
        super::encoding_key(alg, p)?;
    }
    let sealed = match private {
        Some(p) => Some(as_owner(|| {
            crate::crypto::api::encrypt(p, "default", Some(kid.as_bytes()))
        })?),
        None => None,
    };
    let status = if private.is_some() {
        "active"
    } else {
        "verify_only"
    };
    as_owner(|| {
        if status == "active" {
            crate::pg::spi::run_with_args(
                "UPDATE pgauth.signing_keys SET status = 'verify_only', status_changed_at = now()
                  WHERE name = $1 AND status = 'active'",
                &[name.into()],
            )?;
        }
        crate::pg::spi::run_with_args(
            "INSERT INTO pgauth.signing_keys
                    (id, name, version, algorithm, status, private_key, public_jwk, purpose)
             SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4, $5, $6, $7
               FROM pgauth.signing_keys WHERE name = $2",
            &[
                kid.into(),
                name.into(),
                alg.name().into(),
                status.into(),
                sealed.into(),
                jwk.map(JsonB).into(),
                purpose.name().into(),
            ],
        )
    })
    .map_err(spi_err)?;
    forget_cached();
    event::record(
        "signing_key_created",
        name,
        json!({"kid": kid.to_string(), "algorithm": alg.name(), "status": status,
                "purpose": purpose.name()}),
    )?;
    Ok(kid)
}

/// Create a signing key (pgauth_admin): HS256, HS384, HS512, RS256 (2048-bit), ES256 or EdDSA.
/// Returns its id, which is the `kid` of the tokens it signs.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_create_signing_key(name: &str, algorithm: &str) -> Uuid {
    require(Who::Admin, "auth_create_signing_key").or_raise();
    let alg = Alg::parse(algorithm).or_raise();
    refuse_access_key_name(name).or_raise();
    // Two creations of one name at once: the second waits, then finds the first's key.
    crate::pg::serialize_on(crate::pg::LockSpace::SigningKey, name);
    if name_purpose(name).or_raise().is_some() {
        AuthError::InvalidRequest(format!(
            "signing key \"{name}\" already exists; use auth_rotate_signing_key() for a new version"
        ))
        .raise();
    }
    let private = super::generate(alg).or_raise();
    store_version(name, Purpose::General, alg, Some(&private), None).or_raise()
}

/// The access-token key (pgauth.jwt_key) is made by pgauth at the first sign-in, never by
/// auth_create_signing_key or a first import: keys made so are general keys.
fn refuse_access_key_name(name: &str) -> AuthResult<()> {
    if name == access_key_name() {
        return Err(AuthError::InvalidRequest(format!(
            "\"{name}\" is the access-token key's name (pgauth.jwt_key); pgauth creates that key \
             at the first sign-in"
        )));
    }
    Ok(())
}

/// A new version of `name` with the same algorithm (pgauth_admin). The previous version stops
/// signing but keeps verifying (and stays in the JWKS) until revoked.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_rotate_signing_key(name: &str) -> Uuid {
    require(Who::Admin, "auth_rotate_signing_key").or_raise();
    let alg = as_owner(|| {
        read_one::<String>(
            "SELECT algorithm FROM pgauth.signing_keys WHERE name = $1 ORDER BY version DESC",
            &[name.into()],
        )
    })
    .map_err(spi_err)
    .or_raise()
    .unwrap_or_else(|| AuthError::NoSuchSigningKey(name.into()).raise());
    let alg = Alg::parse(&alg).or_raise();
    let purpose = name_purpose(name).or_raise().unwrap_or(Purpose::General);
    let private = super::generate(alg).or_raise();
    store_version(name, purpose, alg, Some(&private), None).or_raise()
}

/// Revoke one key version (pgauth_admin): tokens with its kid stop verifying at once.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_revoke_signing_key(kid: Uuid) {
    require(Who::Admin, "auth_revoke_signing_key").or_raise();
    let name = as_owner(|| {
        write_row(
            "UPDATE pgauth.signing_keys SET status = 'revoked', status_changed_at = now()
              WHERE id = $1 AND status <> 'revoked' RETURNING name",
            &[kid.into()],
            |row| row.get::<String>(1),
        )
        .map(Option::flatten)
    })
    .map_err(spi_err)
    .or_raise();
    let Some(name) = name else {
        AuthError::InvalidRequest(format!("no unrevoked signing key has id {kid}")).raise();
    };
    forget_cached();
    event::record(
        "signing_key_revoked",
        &name,
        json!({"kid": kid.to_string()}),
    )
    .or_raise();
}

/// Import a key made elsewhere as a new version of `name` (pgauth_admin): a PEM private key
/// (PKCS#8, or PKCS#1 for RSA) signs and verifies; a PEM public key only verifies (tokens of
/// another issuer); for HS* the secret as base64 or base64url.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_import_signing_key(name: &str, algorithm: &str, key: &str) -> Uuid {
    require(Who::Admin, "auth_import_signing_key").or_raise();
    let alg = Alg::parse(algorithm).or_raise();
    // A new version of an existing name keeps its purpose (the access-token key included: an
    // administrator may import its next version); a new name is a general key.
    let purpose = match name_purpose(name).or_raise() {
        Some(p) => p,
        None => {
            refuse_access_key_name(name).or_raise();
            Purpose::General
        }
    };
    let text = key.trim();
    if alg.is_hmac() {
        use base64::Engine;
        let engines = [
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
        ];
        let secret = engines
            .iter()
            .find_map(|e| e.decode(text.trim_end_matches('=')).ok())
            .map(Zeroizing::new)
            .unwrap_or_else(|| {
                AuthError::InvalidRequest("an HMAC secret must be given as base64".into()).raise()
            });
        return store_version(name, purpose, alg, Some(&secret), None).or_raise();
    }
    if text.contains("PRIVATE KEY-----") {
        store_version(name, purpose, alg, Some(text.as_bytes()), None).or_raise()
    } else if text.contains("PUBLIC KEY-----") {
        store_version(name, purpose, alg, None, Some(text.as_bytes())).or_raise()
    } else {
        AuthError::InvalidRequest("the key must be a PEM private or public key".into()).raise()
    }
}
