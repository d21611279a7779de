//! SQL functions for encryption and keys: settings, SPI, privilege checks and the per-backend
//! key cache. The cryptography itself is in the sibling modules.
//!
//! These functions run as the caller (SECURITY INVOKER) so that "who may use this key" is
//! decided for the real caller, including inside the caller's own SECURITY DEFINER functions.
//! Reads and writes of pgauth's key tables run briefly as the owner of schema `pgauth`
//! (`as_owner`), the way a SECURITY DEFINER function would.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;

use pgrx::prelude::*;
use pgrx::{pg_sys, JsonB, Uuid};

use super::cache::KeyCache;
use super::envelope;
use super::keys::{
    master_key_fingerprint, unwrap_data_key, wrap_data_key, DataKey, KeyId, MasterKey,
    FINGERPRINT_LEN,
};
use super::master_source::KeySource;
use crate::backend::{
    as_owner, caller, current_position, has_role, json_string, read_one, require_role, role_oid,
    spi_err,
};
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::guc;

const DEFAULT_KEY: &str = "default";

struct LoadedMaster {
    source: KeySource,
    key: MasterKey,
    fingerprint: [u8; FINGERPRINT_LEN],
}

#[derive(Default)]
struct CryptoState {
    cache: KeyCache,
    /// key id → key name, for the privilege check on cached keys.
    key_names: HashMap<KeyId, String>,
    /// key name → id of its version 1, the key of blind indexes and HMACs.
    first_versions: HashMap<String, KeyId>,
    /// (role, key name) → may use; valid for one transaction.
    usage: HashMap<pg_sys::Oid, HashMap<String, bool>>,
    master: Option<LoadedMaster>,
    previous: Option<LoadedMaster>,
    /// (transaction, command, statement start) at which the key generation was last read.
    checked_at: Option<(u32, u32, i64)>,
    /// The master key settings' values when last checked (by content: an address of a freed
    /// and reused string says nothing).
    checked_settings: MasterSettings,
    /// This backend changed keys: reload at the next check even if its transaction rolled back
    /// (the generation would not show it).
    changed_keys: bool,
}

thread_local! {
    static STATE: RefCell<CryptoState> = RefCell::new(CryptoState::default());
}

/// `pgauth.master_key_file` and `pgauth.master_key_command`, as set now.
pub(crate) type MasterSettings = [Option<std::ffi::CString>; 2];

pub(crate) fn master_settings() -> MasterSettings {
    [guc::MASTER_KEY_FILE.get(), guc::MASTER_KEY_COMMAND.get()]
}

/// Once per statement: drop cached keys when pgauth.keys or key_grants changed since, or when
/// the master key setting changed. Reads no master key: that happens only after the caller's
/// key usage was checked, when a key must be unwrapped.
fn refresh_key_state() -> AuthResult<()> {
    let position = current_position();
    let settings = master_settings();
    let (unchanged, same_settings) = STATE.with(|s| {
        let s = s.borrow();
        let same = s.checked_settings == settings;
        (s.checked_at == Some(position) && same, same)
    });
    if unchanged {
        return Ok(());
    }
    // A removed or changed master key setting takes effect here: nothing stays usable from the
    // cache, and the key is read again (from the new source) when next needed.
    if !same_settings {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.cache.clear();
            s.key_names.clear();
            s.first_versions.clear();
            s.master = None;
        });
    }
    let generation = as_owner(|| {
        read_one::<i64>("SELECT generation FROM pgauth.key_state", &[])
            .map_err(spi_err)
            .map(|g| g.unwrap_or(0))
    })?;
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if std::mem::take(&mut s.changed_keys) {
            s.cache.clear();
        }
        if s.cache.invalidate_if_changed(generation) || s.cache.is_empty() {
            s.key_names.clear();
            s.first_versions.clear();
        }
        s.usage.clear();
        s.checked_at = Some(position);
        s.checked_settings = settings;
    });
    Ok(())
}

/// This backend just changed keys: forget everything cached now and at the next transaction.
fn forget_cached_keys() {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.cache.clear();
        s.key_names.clear();
        s.first_versions.clear();
        s.usage.clear();
        s.changed_keys = true;
    });
}

fn setting(value: Option<CString>) -> Option<String> {
    value.map(|c| c.to_string_lossy().into_owned())
}

fn load_master(slot_previous: bool) -> AuthResult<Option<()>> {
    let source = if slot_previous {
        KeySource::from_settings(
            setting(guc::PREVIOUS_MASTER_KEY_FILE.get()).as_deref(),
            setting(guc::PREVIOUS_MASTER_KEY_COMMAND.get()).as_deref(),
        )
    } else {
        KeySource::from_settings(
            setting(guc::MASTER_KEY_FILE.get()).as_deref(),
            setting(guc::MASTER_KEY_COMMAND.get()).as_deref(),
        )
    };
    let Some(source) = source else {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            if slot_previous {
                s.previous = None;
            } else {
                s.master = None;
            }
        });
        return Ok(None);
    };
    let loaded = STATE.with(|s| {
        let s = s.borrow();
        let slot = if slot_previous {
            &s.previous
        } else {
            &s.master
        };
        slot.as_ref().is_some_and(|m| m.source == source)
    });
    if !loaded {
        let key = source.load().inspect_err(|e| {
            // The client's error does not say where the key is; the server log does.
            if let KeySource::File(path) = &source {
                pgrx::pg_sys::panic::ErrorReport::new(
                    pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!("pgauth: master key file \"{path}\": {e}"),
                    "pgauth",
                )
                .report(pgrx::PgLogLevel::LOG_SERVER_ONLY);
            }
        })?;
        let fingerprint = master_key_fingerprint(&key);
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let slot = if slot_previous {
                &mut s.previous
            } else {
                &mut s.master
            };
            *slot = Some(LoadedMaster {
                source,
                key,
                fingerprint,
            });
        });
    }
    Ok(Some(()))
}

/// Run `f` with the configured master key (55000 when none is configured).
fn with_master<R>(
    f: impl FnOnce(&MasterKey, [u8; FINGERPRINT_LEN]) -> AuthResult<R>,
) -> AuthResult<R> {
    load_master(false)?.ok_or(AuthError::MasterKeyMissing)?;
    STATE.with(|s| {
        let s = s.borrow();
        let m = s.master.as_ref().expect("loaded above");
        f(&m.key, m.fingerprint)
    })
}

/// Unwrap with whichever configured master key (current or previous) wrapped this key.
fn unwrap_stored(key_id: &KeyId, wrapped: &[u8], fingerprint: &[u8]) -> AuthResult<DataKey> {
    load_master(false)?.ok_or(AuthError::MasterKeyMissing)?;
    load_master(true)?;
    STATE.with(|s| {
        let s = s.borrow();
        for m in [s.master.as_ref(), s.previous.as_ref()]
            .into_iter()
            .flatten()
        {
            if m.fingerprint.as_slice() == fingerprint {
                return unwrap_data_key(&m.key, key_id, wrapped);
            }
        }
        Err(AuthError::KeyWrapFailed)
    })
}

fn key_id_of(uuid: &Uuid) -> KeyId {
    let mut id = [0u8; 16];
    id.copy_from_slice(uuid.as_bytes());
    id
}

fn display_id(id: &KeyId) -> String {
    Uuid::from_bytes(*id).to_string()
}

fn is_key_admin(role: pg_sys::Oid) -> bool {
    has_role(role, "pgauth_admin")
}

fn require_key_admin(action: &str) -> AuthResult<()> {
    require_role("pgauth_admin", action)
}

/// May the caller use keys of this name? Superusers and pgauth_admin always; others through a
/// grant to a role they have the privileges of. Cached for the transaction.
fn require_key_usage(name: &str) -> AuthResult<()> {
    let role = caller();
    // Looked up by &str: no allocation on the per-row path.
    let cached = STATE.with(|s| {
        s.borrow()
            .usage
            .get(&role)
            .and_then(|names| names.get(name))
            .copied()
    });
    let allowed = match cached {
        Some(allowed) => allowed,
        None => {
            let allowed = is_key_admin(role) || {
                // A grant counts while its OID still has its name: a role dropped and created
                // again under that name is another role (OID 0 is public).
                let grantees: Vec<pg_sys::Oid> = as_owner(|| {
                    Spi::connect(|client| {
                        let rows = client.select(
                            "SELECT g.grantee_oid FROM pgauth.key_grants g
                              WHERE g.key_name = $1
                                AND ((g.grantee_oid = 0 AND g.grantee = 'public')
                                     OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                                                 WHERE r.oid = g.grantee_oid
                                                   AND r.rolname = g.grantee))",
                            None,
                            &[name.into()],
                        )?;
                        rows.map(|r| {
                            r.get::<pg_sys::Oid>(1)
                                .map(|g| g.unwrap_or(pg_sys::InvalidOid))
                        })
                        .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(spi_err)
                })?;
                grantees.iter().any(|&g| {
                    g == pg_sys::InvalidOid
                        // SAFETY: plain catalog lookups on two role OIDs.
                        || unsafe { pg_sys::has_privs_of_role(role, g) }
                })
            };
            STATE.with(|s| {
                s.borrow_mut()
                    .usage
                    .entry(role)
                    .or_default()
                    .insert(name.to_string(), allowed)
            });
            allowed
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(AuthError::PermissionDenied(format!(
            "the current role may not use encryption key \"{name}\""
        )))
    }
}

/// The active version of `name`: its id and data key (from the cache when possible).
fn active_key(name: &str, create_default: bool) -> AuthResult<(KeyId, DataKey)> {
    refresh_key_state()?;
    require_key_usage(name)?;
    if let Some((id, key)) = STATE.with(|s| {
        s.borrow()
            .cache
            .get_active(name)
            .map(|(i, k)| (i, k.clone()))
    }) {
        return Ok((id, key));
    }
    let row = as_owner(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT id, wrapped_key, master_key_fingerprint FROM pgauth.keys
                  WHERE name = $1 AND status = 'active'",
                Some(1),
                &[name.into()],
            )?;
            if rows.is_empty() {
                return Ok(None);
            }
            let r = rows.first();
            Ok(
                match (
                    r.get::<Uuid>(1)?,
                    r.get::<Vec<u8>>(2)?,
                    r.get::<Vec<u8>>(3)?,
                ) {
                    (Some(id), Some(w), Some(f)) => Some((key_id_of(&id), w, f)),
                    _ => None,
                },
            )
        })
    });
    let (id, wrapped, fingerprint) = match row {
        Ok(Some(found)) => found,
        Ok(None) => {
            // A key named "default" exists once a master key is configured: made on first use.
            // Never inside a parallel query, where no backend may write.
            if create_default && name == DEFAULT_KEY && !unsafe { pg_sys::IsInParallelMode() } {
                let id = create_key_version(name)?;
                crate::backend::record_event(
                    "key_created",
                    name,
                    &format!(
                        "{{\"key_id\": \"{}\", \"on_first_use\": true}}",
                        display_id(&id)
                    ),
                )?;
                return active_key(name, false);
            }
            return Err(AuthError::NoSuchKeyName(name.to_string()));
        }
        Err(e) => return Err(spi_err(e)),
    };
    let key = unwrap_stored(&id, &wrapped, &fingerprint)?;
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.cache.insert_active(name, id, key.clone());
        s.key_names.insert(id, name.to_string());
    });
    Ok((id, key))
}

/// The data key with this id, for decryption: any status but revoked.
fn key_by_id(id: &KeyId) -> AuthResult<DataKey> {
    refresh_key_state()?;
    let cached = STATE.with(|s| {
        let s = s.borrow();
        match (s.cache.get(id), s.key_names.get(id)) {
            (Some(k), Some(n)) => Some((k.clone(), n.clone())),
            _ => None,
        }
    });
    if let Some((key, name)) = cached {
        require_key_usage(&name)?;
        return Ok(key);
    }
    let uuid = Uuid::from_bytes(*id);
    let row = as_owner(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT name, status, wrapped_key, master_key_fingerprint FROM pgauth.keys WHERE id = $1",
                Some(1),
                &[uuid.into()],
            )?;
            if rows.is_empty() {
                return Ok(None);
            }
            let r = rows.first();
            Ok(Some((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<Vec<u8>>(3)?.unwrap_or_default(),
                r.get::<Vec<u8>>(4)?.unwrap_or_default(),
            )))
        })
        .map_err(spi_err)
    })?;
    let Some((name, status, wrapped, fingerprint)) = row else {
        return Err(AuthError::UnknownKey(display_id(id)));
    };
    require_key_usage(&name)?;
    if status == "revoked" {
        return Err(AuthError::KeyRevoked(display_id(id)));
    }
    let key = unwrap_stored(id, &wrapped, &fingerprint)?;
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.cache.insert(*id, key.clone());
        s.key_names.insert(*id, name);
    });
    Ok(key)
}

/// Version 1 of `name`: blind indexes and HMACs must not change when the key is rotated, or
/// equality search over old rows would break. Revoking version 1 ends them.
fn first_version_key(name: &str) -> AuthResult<DataKey> {
    refresh_key_state()?;
    require_key_usage(name)?;
    let known = STATE.with(|s| s.borrow().first_versions.get(name).copied());
    let id = match known {
        Some(id) => id,
        None => {
            let id = as_owner(|| {
                read_one::<Uuid>(
                    "SELECT id FROM pgauth.keys WHERE name = $1 AND version = 1",
                    &[name.into()],
                )
            });
            let id = match id {
                Ok(Some(id)) => key_id_of(&id),
                Ok(None) => return Err(AuthError::NoSuchKeyName(name.to_string())),
                Err(e) => return Err(spi_err(e)),
            };
            STATE.with(|s| s.borrow_mut().first_versions.insert(name.to_string(), id));
            id
        }
    };
    key_by_id(&id)
}

fn record_event(event: &str, subject: &str, details: &str) {
    crate::backend::record_event(event, subject, details).or_raise()
}

/// Make a new active version of `name` (version 1 if new); the previous active one becomes
/// decrypt_only. Returns the new key id.
fn create_key_version(name: &str) -> AuthResult<KeyId> {
    let (wrapped, fingerprint, id) = with_master(|master, fingerprint| {
        let id = crate::backend::random_uuid()?;
        let data_key = DataKey::generate()?;
        Ok((wrap_data_key(master, &id, &data_key)?, fingerprint, id))
    })?;
    let creator = unsafe {
        std::ffi::CStr::from_ptr(pg_sys::GetUserNameFromId(caller(), false))
            .to_string_lossy()
            .into_owned()
    };
    as_owner(|| {
        Spi::run_with_args(
            "UPDATE pgauth.keys SET status = 'decrypt_only', status_changed_at = now()
              WHERE name = $1 AND status = 'active'",
            &[name.into()],
        )?;
        Spi::run_with_args(
            "INSERT INTO pgauth.keys (id, name, version, wrapped_key, master_key_fingerprint, created_by)
             SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4, $5 FROM pgauth.keys WHERE name = $2",
            &[
                Uuid::from_bytes(id).into(),
                name.into(),
                wrapped.as_slice().into(),
                fingerprint.as_slice().into(),
                creator.as_str().into(),
            ],
        )?;
        // The creator may use the key; pgauth_admin always may. (The trigger fills grantee_oid.)
        Spi::run_with_args(
            "INSERT INTO pgauth.key_grants (key_name, grantee, grantee_oid) VALUES ($1, $2, 0)",
            &[name.into(), creator.as_str().into()],
        )
    })
    .map_err(spi_err)?;
    forget_cached_keys();
    Ok(id)
}

fn key_name_exists(name: &str) -> bool {
    as_owner(|| {
        read_one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pgauth.keys WHERE name = $1)",
            &[name.into()],
        )
    })
    .map_err(spi_err)
    .or_raise()
    .unwrap_or(false)
}

/// Create a data key: random 256 bits, stored only wrapped under the master key.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_create_key(name: &str) -> Uuid {
    require_key_admin("auth_create_key").or_raise();
    if key_name_exists(name) {
        AuthError::InvalidRequest(format!(
            "encryption key \"{name}\" already exists; use auth_rotate_key() for a new version"
        ))
        .raise();
    }
    let id = create_key_version(name).or_raise();
    record_event(
        "key_created",
        name,
        &format!("{{\"key_id\": \"{}\"}}", display_id(&id)),
    );
    Uuid::from_bytes(id)
}

/// A new active version of `name`; older versions stay usable for decryption.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_rotate_key(name: &str) -> Uuid {
    require_key_admin("auth_rotate_key").or_raise();
    if !key_name_exists(name) {
        AuthError::NoSuchKeyName(name.to_string()).raise();
    }
    let id = create_key_version(name).or_raise();
    record_event(
        "key_rotated",
        name,
        &format!("{{\"key_id\": \"{}\"}}", display_id(&id)),
    );
    Uuid::from_bytes(id)
}

/// Make one key version unusable for encryption and decryption.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_revoke_key(id: Uuid) {
    require_key_admin("auth_revoke_key").or_raise();
    // No row limit on this UPDATE: SPI with a limit would skip the statement-level trigger that
    // tells other backends their cached keys are stale.
    let name = as_owner(|| {
        Spi::connect_mut(|client| {
            let rows = client.update(
                "UPDATE pgauth.keys SET status = 'revoked', status_changed_at = now()
                  WHERE id = $1 RETURNING name",
                None,
                &[id.into()],
            )?;
            if rows.is_empty() {
                return Ok(None);
            }
            rows.first().get::<String>(1)
        })
    });
    let name = match name {
        Ok(Some(name)) => name,
        Ok(None) => AuthError::UnknownKey(id.to_string()).raise(),
        Err(e) => spi_err(e).raise(),
    };
    forget_cached_keys();
    record_event("key_revoked", &name, &format!("{{\"key_id\": \"{id}\"}}"));
}

/// Allow a database role (and its members) to use keys named `key_name`.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_grant_key_usage(key_name: &str, role: &str) {
    require_key_admin("auth_grant_key_usage").or_raise();
    if role != "public" && role_oid(role).is_none() {
        AuthError::InvalidRequest(format!("role \"{role}\" does not exist")).raise();
    }
    // The trigger resolves the name to the role's OID and replaces a stale grant of a dropped
    // role of the same name.
    as_owner(|| {
        Spi::run_with_args(
            "INSERT INTO pgauth.key_grants (key_name, grantee, grantee_oid) VALUES ($1, $2, 0)",
            &[key_name.into(), role.into()],
        )
    })
    .map_err(spi_err)
    .or_raise();
    forget_cached_keys();
    record_event(
        "key_usage_granted",
        key_name,
        &format!("{{\"role\": {}}}", json_string(role)),
    );
}

#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_revoke_key_usage(key_name: &str, role: &str) {
    require_key_admin("auth_revoke_key_usage").or_raise();
    as_owner(|| {
        Spi::run_with_args(
            "DELETE FROM pgauth.key_grants WHERE key_name = $1 AND grantee = $2",
            &[key_name.into(), role.into()],
        )
    })
    .map_err(spi_err)
    .or_raise();
    forget_cached_keys();
    record_event(
        "key_usage_revoked",
        key_name,
        &format!("{{\"role\": {}}}", json_string(role)),
    );
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
    let admin = is_key_admin(caller());
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
    require_key_admin("auth_rewrap_keys").or_raise();
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
            Spi::run_with_args(
                "UPDATE pgauth.keys SET wrapped_key = $2, master_key_fingerprint = $3 WHERE id = $1",
                &[(*uuid).into(), rewrapped.as_slice().into(), current.as_slice().into()],
            )
        })
        .map_err(spi_err)
        .or_raise();
        count += 1;
    }
    forget_cached_keys();
    record_event("keys_rewrapped", "*", &format!("{{\"count\": {count}}}"));
    count
}

/// Wrapped key material and grants as JSON, for backup or moving keys to another database with
/// the same master key. Contains no unwrapped key.
#[pg_extern(volatile, parallel_unsafe)]
fn auth_export_keys() -> JsonB {
    require_key_admin("auth_export_keys").or_raise();
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
    record_event("keys_exported", "*", "{}");
    doc
}

/// Import what auth_export_keys() produced. Keys already present (same id) are skipped.
/// Returns how many key versions were added.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn auth_import_keys(export: JsonB) -> i64 {
    require_key_admin("auth_import_keys").or_raise();
    let format_ok = export.0.get("format").and_then(|f| f.as_str()) == Some("pgauth-keys/1");
    if !format_ok {
        AuthError::InvalidRequest(
            "not a pgauth key export (expected \"format\": \"pgauth-keys/1\")".into(),
        )
        .raise();
    }
    let added = as_owner(|| {
        // No row limit (see auth_revoke_key): the statement triggers must fire.
        let added = Spi::connect_mut(|client| {
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
        Spi::run_with_args(
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
    record_event("keys_imported", "*", &format!("{{\"count\": {added}}}"));
    added
}

pub(crate) fn encrypt(plaintext: &[u8], key_name: &str, aad: Option<&[u8]>) -> AuthResult<Vec<u8>> {
    // Per-row fast path: seal with the cached key in place (no copy of the key).
    refresh_key_state()?;
    require_key_usage(key_name)?;
    let sealed = STATE.with(|s| {
        s.borrow()
            .cache
            .get_active(key_name)
            .map(|(id, key)| envelope::seal(key, id, plaintext, aad))
    });
    if let Some(sealed) = sealed {
        return sealed;
    }
    let (id, key) = active_key(key_name, true)?;
    envelope::seal(&key, id, plaintext, aad)
}

pub(crate) fn decrypt(
    ciphertext: &[u8],
    aad: Option<&[u8]>,
) -> AuthResult<zeroize::Zeroizing<Vec<u8>>> {
    let header = envelope::parse_header(ciphertext)?;
    // Per-row fast path: key cached and its use already allowed in this statement — open with
    // the cached key in place, without copying key or name.
    refresh_key_state()?;
    let role = caller();
    let opened = STATE.with(|s| {
        let s = s.borrow();
        let name = s.key_names.get(&header.key_id)?;
        let allowed = s
            .usage
            .get(&role)
            .and_then(|names| names.get(name.as_str()))?;
        let key = s.cache.get(&header.key_id)?;
        allowed.then(|| envelope::open(key, ciphertext, aad))
    });
    if let Some(opened) = opened {
        return opened;
    }
    let key = key_by_id(&header.key_id)?;
    envelope::open(&key, ciphertext, aad)
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

/// auth_hmac for pgauth's own use (keyed recovery codes): the caller's key usage is checked,
/// and the `default` key is made on first use, as auth_encrypt makes it.
pub(crate) fn hmac(data: &[u8], key_name: &str) -> AuthResult<[u8; 32]> {
    let key = match first_version_key(key_name) {
        Err(AuthError::NoSuchKeyName(_)) if key_name == DEFAULT_KEY => {
            active_key(DEFAULT_KEY, true)?;
            first_version_key(key_name)?
        }
        other => other?,
    };
    Ok(super::digest::keyed_hmac(&key, data))
}

/// HMAC-SHA3-256 under a key derived from version 1 of `key_name` (stable across rotation).
#[pg_extern(stable, strict, parallel_safe)]
fn auth_hmac(data: &[u8], key_name: &str) -> Vec<u8> {
    hmac(data, key_name).or_raise().to_vec()
}
