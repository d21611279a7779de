//! SQL functions for encryption and keys: settings, SPI, privilege checks and the per-backend
//! key cache. The cryptography itself is in the sibling modules.
//!
//! These functions run as the caller (SECURITY INVOKER) so that "who may use this key" is
//! decided for the real caller, including inside the caller's own SECURITY DEFINER functions.
//! Reads and writes of pgauth's key tables run briefly as the owner of schema `pgauth`
//! (`as_owner`), the way a SECURITY DEFINER function would.

use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};

use super::envelope;
use super::keys::wrap_data_key;
use serde_json::json;

use super::api::{decrypt, encrypt, hmac};
use crate::error::{AuthError, OrRaise};
use crate::pg::event;
use crate::pg::roles::{as_owner, require, role_oid, Who};
use crate::pg::spi::{spi_err, write_row};

use super::store::*;

/// Create a data key: random 256 bits, stored only wrapped under the master key.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_create_key(name: &str) -> Uuid {
    require(Who::Admin, "auth_create_key").or_raise();
    if !super::keys::valid_key_name(name) {
        AuthError::InvalidRequest(
            "a key name is 1 to 128 characters of A-Z, a-z, 0-9 and _ . : @ / -".into(),
        )
        .raise();
    }
    crate::pg::serialize_on(crate::pg::LockSpace::EncryptionKey, name);
    if key_name_exists(name) {
        AuthError::InvalidRequest(format!(
            "encryption key \"{name}\" already exists; use auth_rotate_key() for a new version"
        ))
        .raise();
    }
    let id = create_key_version(name).or_raise();
    event::record("key_created", name, json!({"key_id": display_id(&id)})).or_raise();
    Uuid::from_bytes(id)
}

/// A new active version of `name`; older versions stay usable for decryption.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_rotate_key(name: &str) -> Uuid {
    require(Who::Admin, "auth_rotate_key").or_raise();
    crate::pg::serialize_on(crate::pg::LockSpace::EncryptionKey, name);
    if !key_name_exists(name) {
        AuthError::NoSuchKeyName(name.to_string()).raise();
    }
    let id = create_key_version(name).or_raise();
    event::record("key_rotated", name, json!({"key_id": display_id(&id)})).or_raise();
    Uuid::from_bytes(id)
}

/// Make one key version unusable for encryption and decryption.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_revoke_key(id: Uuid) {
    require(Who::Admin, "auth_revoke_key").or_raise();
    // No row limit on this UPDATE: SPI with a limit would skip the statement-level trigger that
    // tells other backends their cached keys are stale.
    let name = as_owner(|| {
        write_row(
            "UPDATE pgauth.keys SET status = 'revoked', status_changed_at = now()
                  WHERE id = $1 RETURNING name",
            &[id.into()],
            |row| row.get::<String>(1),
        )
        .map(Option::flatten)
    });
    let name = match name {
        Ok(Some(name)) => name,
        Ok(None) => AuthError::UnknownKey(id.to_string()).raise(),
        Err(e) => spi_err(e).raise(),
    };
    forget_cached_keys();
    event::record("key_revoked", &name, json!({"key_id": id.to_string()})).or_raise();
}

/// Allow a database role (and its members) to use keys named `key_name`.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_grant_key_usage(key_name: &str, role: &str) {
    require(Who::Admin, "auth_grant_key_usage").or_raise();
    if role != "public" && role_oid(role).is_none() {
        AuthError::InvalidRequest(format!("role \"{role}\" does not exist")).raise();
    }
    // The trigger resolves the name to the role's OID and replaces a stale grant of a dropped
    // role of the same name.
    as_owner(|| {
        crate::pg::spi::run_with_args(
            "INSERT INTO pgauth.key_grants (key_name, grantee, grantee_oid) VALUES ($1, $2, 0)",
            &[key_name.into(), role.into()],
        )
    })
    .map_err(spi_err)
    .or_raise();
    forget_cached_keys();
    event::record("key_usage_granted", key_name, json!({"role": role})).or_raise();
}

#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_revoke_key_usage(key_name: &str, role: &str) {
    require(Who::Admin, "auth_revoke_key_usage").or_raise();
    as_owner(|| {
        crate::pg::spi::run_with_args(
            "DELETE FROM pgauth.key_grants WHERE key_name = $1 AND grantee = $2",
            &[key_name.into(), role.into()],
        )
    })
    .map_err(spi_err)
    .or_raise();
    forget_cached_keys();
    event::record("key_usage_revoked", key_name, json!({"role": role})).or_raise();
}

type StoredKeyRow = (
    Uuid,
    String,
    i32,
    String,
    pgrx::datum::TimestampWithTimeZone,
    Option<pgrx::datum::TimestampWithTimeZone>,
    Vec<u8>,
);

/// Every key version the caller may see (pgauth_admin: all), with its status and whether the
/// configured master key wrapped it (NULL when no master key is configured).
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe)]
fn auth_key_status() -> TableIterator<
    'static,
    (
        name!(id, Uuid),
        name!(name, String),
        name!(version, i32),
        name!(status, String),
        name!(created_at, pgrx::datum::TimestampWithTimeZone),
        name!(
            status_changed_at,
            Option<pgrx::datum::TimestampWithTimeZone>
        ),
        name!(wrapped_by_current_master_key, Option<bool>),
    ),
> {
    let admin = Who::Admin.allows_caller();
    let rows: Vec<StoredKeyRow> =
        as_owner(|| {
            Spi::connect(|client| {
                let rows = client.select(
                    "SELECT id, name, version, status, created_at, status_changed_at, master_key_fingerprint
                       FROM pgauth.keys ORDER BY name, version",
                    None,
                    &[],
                )?;
                rows.map(|r| {
                    Ok((
                        r.get::<Uuid>(1)?.expect("id"),
                        r.get::<String>(2)?.unwrap_or_default(),
                        r.get::<i32>(3)?.unwrap_or_default(),
                        r.get::<String>(4)?.unwrap_or_default(),
                        r.get::<pgrx::datum::TimestampWithTimeZone>(5)?.expect("created_at"),
                        r.get::<pgrx::datum::TimestampWithTimeZone>(6)?,
                        r.get::<Vec<u8>>(7)?.unwrap_or_default(),
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
            })
        })
        .map_err(spi_err)
        .or_raise();
    let visible: Vec<_> = rows
        .into_iter()
        .filter(|r| admin || require_key_usage(&r.1).is_ok())
        .collect();
    // The master key is read only for a caller who may see some key.
    let current = if visible.is_empty() {
        None
    } else {
        match load_master(false) {
            Ok(Some(())) => {
                STATE.with(|s| s.borrow().master.as_ref().map(|m| m.fingerprint.to_vec()))
            }
            _ => None,
        }
    };
    let visible: Vec<_> = visible
        .into_iter()
        .map(|(id, name, version, status, created, changed, fp)| {
            let ok = current.as_ref().map(|c| *c == fp);
            (id, name, version, status, created, changed, ok)
        })
        .collect();
    TableIterator::new(visible)
}

/// After a master-key change: re-wrap every data key under the configured master key. Keys
/// wrapped by `pgauth.previous_master_key_file`/`_command` are unwrapped with it. Data is not
/// touched. Returns how many keys were re-wrapped.
#[pg_extern(volatile, parallel_unsafe)]
fn auth_rewrap_keys() -> i64 {
    require(Who::Admin, "auth_rewrap_keys").or_raise();
    let current = with_master(|_, fp| Ok(fp)).or_raise();
    let stale: Vec<(Uuid, Vec<u8>, Vec<u8>)> = as_owner(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT id, wrapped_key, master_key_fingerprint FROM pgauth.keys
                  WHERE master_key_fingerprint <> $1 ORDER BY name, version",
                None,
                &[current.as_slice().into()],
            )?;
            rows.map(|r| {
                Ok((
                    r.get::<Uuid>(1)?.expect("id"),
                    r.get::<Vec<u8>>(2)?.unwrap_or_default(),
                    r.get::<Vec<u8>>(3)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .map_err(spi_err)
    .or_raise();
    let mut count = 0i64;
    for (uuid, wrapped, fingerprint) in &stale {
        let id = key_id_of(uuid);
        let data_key = unwrap_stored(&id, wrapped, fingerprint).or_raise();
        let rewrapped = with_master(|master, _| wrap_data_key(master, &id, &data_key)).or_raise();
        as_owner(|| {
            crate::pg::spi::run_with_args(
                "UPDATE pgauth.keys SET wrapped_key = $2, master_key_fingerprint = $3 WHERE id = $1",
                &[(*uuid).into(), rewrapped.as_slice().into(), current.as_slice().into()],
            )
        })
        .map_err(spi_err)
        .or_raise();
        count += 1;
    }
    forget_cached_keys();
    event::record("keys_rewrapped", "*", json!({"count": count})).or_raise();
    count
}

/// Wrapped key material and grants as JSON, for backup or moving keys to another database with
/// the same master key. Contains no unwrapped key.
#[pg_extern(volatile, parallel_unsafe)]
fn auth_export_keys() -> JsonB {
    require(Who::Admin, "auth_export_keys").or_raise();
    let doc = as_owner(|| {
        Spi::get_one::<JsonB>(
            "SELECT jsonb_build_object(
                 'format', 'pgauth-keys/1',
                 'keys', coalesce((SELECT jsonb_agg(jsonb_build_object(
                              'id', id, 'name', name, 'version', version, 'status', status,
                              'wrapped_key', encode(wrapped_key, 'base64'),
                              'master_key_fingerprint', encode(master_key_fingerprint, 'hex'),
                              'created_by', created_by, 'created_at', created_at,
                              'status_changed_at', status_changed_at) ORDER BY name, version)
                            FROM pgauth.keys), '[]'::jsonb),
                 'grants', coalesce((SELECT jsonb_agg(jsonb_build_object(
                              'key_name', key_name, 'grantee', grantee) ORDER BY key_name, grantee)
                            FROM pgauth.key_grants), '[]'::jsonb))",
        )
    })
    .map_err(spi_err)
    .or_raise()
    .unwrap_or_else(|| AuthError::Internal("export produced nothing".into()).raise());
    event::record("keys_exported", "*", json!({})).or_raise();
    doc
}

/// Import what auth_export_keys() produced. Keys already present (same id) are skipped.
/// Returns how many key versions were added. The whole document is checked first
/// (`export::check`): a damaged one is refused with 22023 and nothing is imported.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_import_keys(export: crate::pg::jsonb::JsonbArg) -> i64 {
    require(Who::Admin, "auth_import_keys").or_raise();
    let export = JsonB(super::export::check(&export.0).or_raise());
    let added = as_owner(|| {
        // No row limit (see auth_revoke_key): the statement triggers must fire.
        let added = crate::pg::spi::connect_mut(|client| {
            client
                .update(
            "WITH incoming AS (
                 SELECT * FROM jsonb_to_recordset($1->'keys') AS k(
                     id uuid, name text, version integer, status text, wrapped_key text,
                     master_key_fingerprint text, created_by name, created_at timestamptz,
                     status_changed_at timestamptz)),
             added AS (
                 INSERT INTO pgauth.keys (id, name, version, status, wrapped_key,
                                          master_key_fingerprint, created_by, created_at, status_changed_at)
                 SELECT id, name, version, status, decode(wrapped_key, 'base64'),
                        decode(master_key_fingerprint, 'hex'), created_by, created_at, status_changed_at
                   FROM incoming
                  WHERE NOT EXISTS (SELECT 1 FROM pgauth.keys k WHERE k.id = incoming.id)
                 RETURNING 1)
             SELECT count(*) FROM added",
            None,
            &[JsonB(export.0.clone()).into()],
        )?
                .first()
                .get::<i64>(1)
        })?;
        crate::pg::spi::run_with_args(
            "INSERT INTO pgauth.key_grants (key_name, grantee, grantee_oid)
             SELECT key_name, grantee, 0
               FROM jsonb_to_recordset($1->'grants') AS g(key_name text, grantee name)",
            &[export.into()],
        )?;
        Ok::<_, pgrx::spi::Error>(added.unwrap_or(0))
    })
    .map_err(|e| AuthError::InvalidRequest(format!("the key export could not be imported: {e}")))
    .or_raise();
    forget_cached_keys();
    event::record("keys_imported", "*", json!({"count": added})).or_raise();
    added
}

/// AES-256-GCM under the active version of `key_name`; `aad` (e.g. the row's primary key) must
/// be given again to decrypt.
#[pg_extern(volatile, parallel_safe)]
fn auth_encrypt(
    plaintext: Option<&[u8]>,
    key_name: default!(Option<&str>, "'default'"),
    aad: default!(Option<&[u8]>, "NULL"),
) -> Option<Vec<u8>> {
    let plaintext = plaintext?;
    Some(encrypt(plaintext, key_name.unwrap_or(DEFAULT_KEY), aad).or_raise())
}

#[pg_extern(volatile, parallel_safe, name = "auth_encrypt")]
fn auth_encrypt_text(
    plaintext: Option<&str>,
    key_name: default!(Option<&str>, "'default'"),
    aad: default!(Option<&[u8]>, "NULL"),
) -> Option<Vec<u8>> {
    let plaintext = plaintext?;
    Some(encrypt(plaintext.as_bytes(), key_name.unwrap_or(DEFAULT_KEY), aad).or_raise())
}

/// Decrypt a value from auth_encrypt(). Wrong key, wrong aad or tampering: ERROR 22000.
#[pg_extern(stable, parallel_safe)]
fn auth_decrypt(
    ciphertext: Option<&[u8]>,
    aad: default!(Option<&[u8]>, "NULL"),
) -> Option<Vec<u8>> {
    let ciphertext = ciphertext?;
    Some(decrypt(ciphertext, aad).or_raise().to_vec())
}

#[pg_extern(stable, parallel_safe)]
fn auth_decrypt_text(
    ciphertext: Option<&[u8]>,
    aad: default!(Option<&[u8]>, "NULL"),
) -> Option<String> {
    let ciphertext = ciphertext?;
    let plaintext = decrypt(ciphertext, aad).or_raise();
    match std::str::from_utf8(&plaintext) {
        Ok(text) => Some(text.to_string()),
        Err(_) => AuthError::InvalidRequest(
            "the decrypted value is not valid UTF-8 text; use auth_decrypt() for bytea".into(),
        )
        .raise(),
    }
}

/// Decrypt and encrypt again under the active version of the same key name.
#[pg_extern(volatile, parallel_safe)]
fn auth_reencrypt(
    ciphertext: Option<&[u8]>,
    aad: default!(Option<&[u8]>, "NULL"),
) -> Option<Vec<u8>> {
    let ciphertext = ciphertext?;
    let header = envelope::parse_header(ciphertext).or_raise();
    let plaintext = decrypt(ciphertext, aad).or_raise();
    let name = STATE
        .with(|s| s.borrow().key_names.get(&header.key_id).cloned())
        .unwrap_or_else(|| AuthError::UnknownKey(display_id(&header.key_id)).raise());
    Some(encrypt(&plaintext, &name, aad).or_raise())
}

/// Keyed HMAC-SHA3-256 of `value`, truncated to 16 bytes, for equality search on encrypted
/// columns through an ordinary index. Keyed by version 1 of the key name, so rotation keeps
/// existing indexes valid.
#[pg_extern(stable, strict, parallel_safe)]
fn auth_blind_index(value: &str, key_name: default!(&str, "'default'")) -> Vec<u8> {
    let key = first_version_key(key_name).or_raise();
    super::digest::blind_index(&key, value.as_bytes()).to_vec()
}

/// SHA3-512.
#[pg_extern(immutable, strict, parallel_safe)]
fn auth_digest(data: &[u8]) -> Vec<u8> {
    super::digest::digest_sha3_512(data).to_vec()
}

#[pg_extern(immutable, strict, parallel_safe, name = "auth_digest")]
fn auth_digest_text(data: &str) -> Vec<u8> {
    super::digest::digest_sha3_512(data.as_bytes()).to_vec()
}

/// HMAC-SHA3-256 under a key derived from version 1 of `key_name` (stable across rotation).
#[pg_extern(stable, strict, parallel_safe)]
fn auth_hmac(data: &[u8], key_name: &str) -> Vec<u8> {
    hmac(data, key_name).or_raise().to_vec()
}
