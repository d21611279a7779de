//! The crypto capability's state inside a backend: the per-backend cache of unwrapped data
//! keys (refreshed once per statement from the key generation and the master-key settings),
//! loading the master key, reading and creating key versions, and who may use a key name.

use super::api::master_settings;
use super::api::MasterSettings;
use super::cache::KeyCache;
use super::keys::{
    master_key_fingerprint, unwrap_data_key, wrap_data_key, DataKey, KeyId, MasterKey,
    FINGERPRINT_LEN,
};
use super::master_source::KeySource;
use crate::error::{AuthError, AuthResult, OrRaise};
use crate::pg::current_position;
use crate::pg::event;
use crate::pg::roles::{as_owner, caller, caller_has_privileges_of, Who};
use crate::pg::spi::{read_one, read_row, spi_err};
use pgrx::prelude::*;
use pgrx::{pg_sys, Uuid};
use serde_json::json;
use std::cell::RefCell;
use std::collections::HashMap;

pub(super) const DEFAULT_KEY: &str = "default";

pub(super) struct LoadedMaster {
    pub(super) source: KeySource,
    pub(super) key: MasterKey,
    pub(super) fingerprint: [u8; FINGERPRINT_LEN],
}

#[derive(Default)]
pub(super) struct CryptoState {
    pub(super) cache: KeyCache,
    /// key id → key name, for the privilege check on cached keys.
    pub(super) key_names: HashMap<KeyId, String>,
    /// key name → id of its version 1, the key of blind indexes and HMACs.
    pub(super) first_versions: HashMap<String, KeyId>,
    /// (role, key name) → may use; valid for one transaction.
    pub(super) usage: HashMap<pg_sys::Oid, HashMap<String, bool>>,
    pub(super) master: Option<LoadedMaster>,
    pub(super) previous: Option<LoadedMaster>,
    /// (transaction, command, statement start) at which the key generation was last read.
    pub(super) checked_at: Option<(u32, u32, i64)>,
    /// The master key settings' values when last checked (by content: an address of a freed
    /// and reused string says nothing).
    pub(super) checked_settings: MasterSettings,
    /// This backend changed keys: reload at the next check even if its transaction rolled back
    /// (the generation would not show it).
    pub(super) changed_keys: bool,
}

thread_local! {
    pub(super) static STATE: RefCell<CryptoState> = RefCell::new(CryptoState::default());
}

/// Once per statement: drop cached keys when pgauth.keys or key_grants changed since, or when
/// the master key setting changed. Reads no master key: that happens only after the caller's
/// key usage was checked, when a key must be unwrapped.
pub(super) fn refresh_key_state() -> AuthResult<()> {
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
    let generation = key_generation()?;
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

/// The key generation (`pgauth.key_state`, set from a sequence by every change to data or
/// signing keys and grants): caches of keys compare it once per statement.
pub(super) fn key_generation() -> AuthResult<i64> {
    as_owner(|| {
        read_one::<i64>("SELECT generation FROM pgauth.key_state", &[])
            .map_err(spi_err)
            .map(|g| g.unwrap_or(0))
    })
}

/// This backend just changed keys: forget everything cached now and at the next transaction.
pub(super) fn forget_cached_keys() {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.cache.clear();
        s.key_names.clear();
        s.first_versions.clear();
        s.usage.clear();
        s.changed_keys = true;
    });
}

pub(super) fn load_master(slot_previous: bool) -> AuthResult<Option<()>> {
    let source = if slot_previous {
        let (file, command) =
            crate::settings::source_text(&crate::settings::crypto().previous_master_key());
        KeySource::from_settings(file.as_deref(), command.as_deref())
    } else {
        let (file, command) = crate::settings::source_text(&crate::settings::crypto().master_key());
        KeySource::from_settings(file.as_deref(), command.as_deref())
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
pub(super) fn with_master<R>(
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
pub(super) fn unwrap_stored(
    key_id: &KeyId,
    wrapped: &[u8],
    fingerprint: &[u8],
) -> AuthResult<DataKey> {
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

pub(super) fn key_id_of(uuid: &Uuid) -> KeyId {
    let mut id = [0u8; 16];
    id.copy_from_slice(uuid.as_bytes());
    id
}

pub(super) fn display_id(id: &KeyId) -> String {
    Uuid::from_bytes(*id).to_string()
}

/// May the caller use keys of this name? Superusers and pgauth_admin always; others through a
/// grant to a role they have the privileges of. Cached for the transaction.
pub(super) fn require_key_usage(name: &str) -> AuthResult<()> {
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
            let allowed = Who::Admin.allows_caller() || {
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
                grantees
                    .iter()
                    .any(|&g| g == pg_sys::InvalidOid || caller_has_privileges_of(g))
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
pub(super) fn active_key(name: &str, create_default: bool) -> AuthResult<(KeyId, DataKey)> {
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
        read_row(
            "SELECT id, wrapped_key, master_key_fingerprint FROM pgauth.keys
                  WHERE name = $1 AND status = 'active'",
            &[name.into()],
            |r| {
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
            },
        )
        .map(Option::flatten)
    });
    let (id, wrapped, fingerprint) = match row {
        Ok(Some(found)) => found,
        Ok(None) => {
            // A key named "default" exists once a master key is configured: made on first use.
            // Never inside a parallel query, where no backend may write.
            if create_default && name == DEFAULT_KEY && !unsafe { pg_sys::IsInParallelMode() } {
                // Two first uses at once: the second waits here for the first to commit, then
                // finds its key.
                crate::pg::serialize_on(crate::pg::LockSpace::EncryptionKey, name);
                match active_key(name, false) {
                    Err(AuthError::NoSuchKeyName(_)) => {}
                    found => return found,
                }
                let id = create_key_version(name)?;
                event::record(
                    "key_created",
                    name,
                    json!({"key_id": display_id(&id), "on_first_use": true}),
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
pub(super) fn key_by_id(id: &KeyId) -> AuthResult<DataKey> {
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
        read_row(
            "SELECT name, status, wrapped_key, master_key_fingerprint
               FROM pgauth.keys WHERE id = $1",
            &[uuid.into()],
            |r| {
                Ok((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<Vec<u8>>(3)?.unwrap_or_default(),
                    r.get::<Vec<u8>>(4)?.unwrap_or_default(),
                ))
            },
        )
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
pub(super) fn first_version_key(name: &str) -> AuthResult<DataKey> {
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

/// Make a new active version of `name` (version 1 if new); the previous active one becomes
/// decrypt_only. Returns the new key id.
pub(super) fn create_key_version(name: &str) -> AuthResult<KeyId> {
    crate::pg::serialize_on(crate::pg::LockSpace::EncryptionKey, name);
    let (wrapped, fingerprint, id) = with_master(|master, fingerprint| {
        let id = crate::random::uuid_v4()?;
        let data_key = DataKey::generate()?;
        Ok((wrap_data_key(master, &id, &data_key)?, fingerprint, id))
    })?;
    let creator = unsafe {
        std::ffi::CStr::from_ptr(pg_sys::GetUserNameFromId(caller(), false))
            .to_string_lossy()
            .into_owned()
    };
    as_owner(|| {
        crate::pg::spi::run_with_args(
            "UPDATE pgauth.keys SET status = 'decrypt_only', status_changed_at = now()
              WHERE name = $1 AND status = 'active'",
            &[name.into()],
        )?;
        crate::pg::spi::run_with_args(
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
        crate::pg::spi::run_with_args(
            "INSERT INTO pgauth.key_grants (key_name, grantee, grantee_oid) VALUES ($1, $2, 0)",
            &[name.into(), creator.as_str().into()],
        )
    })
    .map_err(spi_err)?;
    forget_cached_keys();
    Ok(id)
}

pub(super) fn key_name_exists(name: &str) -> bool {
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
