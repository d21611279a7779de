//! The per-backend cache of unwrapped data keys.
//!
//! Unwrapping costs an AES-GCM operation and a `pgauth.keys` lookup, so each backend keeps the
//! keys it has unwrapped, and which key id is the active version of each key name. The SQL layer
//! reads the keys table's generation counter at the start of each transaction and calls
//! [`KeyCache::invalidate_if_changed`]; any key change (create, rotate, revoke, rewrap, import)
//! bumps the counter, so another session's change takes effect at the next transaction at the
//! latest. Keys are zeroed when removed, cleared or dropped ([`DataKey`] zeroes itself).
//!
//! The cache says nothing about who may use a key: privilege checks stay in the SQL layer.

use std::collections::HashMap;

use super::keys::{DataKey, KeyId};

/// Most keys one backend keeps; inserting beyond it empties the cache first. Per-tenant key
/// names could otherwise grow it without bound in a long-lived pooled connection.
pub const MAX_CACHED_KEYS: usize = 4096;

/// Unwrapped data keys by key id, plus the active key id of each key name.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: HashMap<KeyId, DataKey>,
    active: HashMap<String, KeyId>,
    generation: Option<i64>,
}

impl KeyCache {
    /// An empty cache with no generation recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// The unwrapped key `key_id`, if cached.
    pub fn get(&self, key_id: &KeyId) -> Option<&DataKey> {
        self.keys.get(key_id)
    }

    /// Cache an unwrapped key. A key already cached under the id is replaced (and zeroed).
    pub fn insert(&mut self, key_id: KeyId, key: DataKey) {
        if self.keys.len() >= MAX_CACHED_KEYS && !self.keys.contains_key(&key_id) {
            self.clear_entries();
        }
        self.keys.insert(key_id, key);
    }

    /// The active key id of `name` and its unwrapped key, if both are cached.
    pub fn get_active(&self, name: &str) -> Option<(KeyId, &DataKey)> {
        let key_id = *self.active.get(name)?;
        Some((key_id, self.keys.get(&key_id)?))
    }

    /// Cache `key` as the active version (`key_id`) of `name`.
    pub fn insert_active(&mut self, name: &str, key_id: KeyId, key: DataKey) {
        self.insert(key_id, key);
        if self.active.len() >= MAX_CACHED_KEYS && !self.active.contains_key(name) {
            self.active.clear();
        }
        self.active.insert(name.to_owned(), key_id);
    }

    /// Drop one key (zeroing it) and any name that points at it.
    pub fn remove(&mut self, key_id: &KeyId) {
        self.keys.remove(key_id);
        self.active.retain(|_, id| id != key_id);
    }

    /// Drop every key (zeroing them). The generation is kept.
    pub fn clear(&mut self) {
        self.clear_entries();
    }

    /// Forget everything if the keys table changed since the cache was filled: call at
    /// transaction start with the current generation counter. Returns true when it cleared.
    /// The first call only records the generation (the cache is empty then, or is cleared).
    pub fn invalidate_if_changed(&mut self, current_generation: i64) -> bool {
        if self.generation == Some(current_generation) {
            return false;
        }
        let had_entries = !self.is_empty();
        self.clear_entries();
        self.generation = Some(current_generation);
        had_entries
    }

    /// The generation the cached keys belong to; `None` before the first
    /// [`invalidate_if_changed`](Self::invalidate_if_changed).
    pub fn generation(&self) -> Option<i64> {
        self.generation
    }

    /// Number of cached keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.active.is_empty()
    }

    fn clear_entries(&mut self) {
        // HashMap::clear drops each DataKey, which zeroes it.
        self.keys.clear();
        self.active.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::KEY_LEN;

    fn key(byte: u8) -> DataKey {
        DataKey::from_bytes(&[byte; KEY_LEN])
    }

    fn id(byte: u8) -> KeyId {
        [byte; 16]
    }

    #[test]
    fn get_insert_remove_clear() {
        let mut cache = KeyCache::new();
        assert!(cache.is_empty());
        assert!(cache.get(&id(1)).is_none());
        cache.insert(id(1), key(1));
        cache.insert(id(2), key(2));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&id(1)).unwrap().expose(), &[1; KEY_LEN]);
        cache.insert(id(1), key(9));
        assert_eq!(cache.get(&id(1)).unwrap().expose(), &[9; KEY_LEN]);
        cache.remove(&id(1));
        assert!(cache.get(&id(1)).is_none());
        assert_eq!(cache.len(), 1);
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn active_names() {
        let mut cache = KeyCache::new();
        assert!(cache.get_active("default").is_none());
        cache.insert_active("default", id(1), key(1));
        let (active_id, active_key) = cache.get_active("default").unwrap();
        assert_eq!(active_id, id(1));
        assert_eq!(active_key.expose(), &[1; KEY_LEN]);
        // Rotation: the old version stays usable by id.
        cache.insert_active("default", id(2), key(2));
        assert_eq!(cache.get_active("default").unwrap().0, id(2));
        assert!(cache.get(&id(1)).is_some());
        // Removing the active key removes the name too.
        cache.remove(&id(2));
        assert!(cache.get_active("default").is_none());
        assert!(cache.get(&id(1)).is_some());
    }

    #[test]
    fn invalidate_if_changed() {
        let mut cache = KeyCache::new();
        assert_eq!(cache.generation(), None);
        assert!(!cache.invalidate_if_changed(5));
        assert_eq!(cache.generation(), Some(5));
        cache.insert_active("default", id(1), key(1));
        assert!(!cache.invalidate_if_changed(5));
        assert!(cache.get(&id(1)).is_some());
        assert!(cache.invalidate_if_changed(6));
        assert!(cache.is_empty());
        assert!(cache.get_active("default").is_none());
        assert_eq!(cache.generation(), Some(6));
        // Any difference counts, including going backwards (e.g. after a restore).
        cache.insert(id(1), key(1));
        assert!(cache.invalidate_if_changed(3));
        // Keys inserted before the first generation is known are not trusted.
        let mut fresh = KeyCache::new();
        fresh.insert(id(1), key(1));
        assert!(fresh.invalidate_if_changed(1));
        assert!(fresh.is_empty());
    }

    #[test]
    fn clear_keeps_generation() {
        let mut cache = KeyCache::new();
        cache.invalidate_if_changed(4);
        cache.insert(id(1), key(1));
        cache.clear();
        assert_eq!(cache.generation(), Some(4));
    }

    #[test]
    fn size_is_bounded() {
        let mut cache = KeyCache::new();
        for i in 0..MAX_CACHED_KEYS {
            let mut key_id = [0u8; 16];
            key_id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.insert(key_id, key(1));
        }
        assert_eq!(cache.len(), MAX_CACHED_KEYS);
        // Replacing an existing id does not empty the cache.
        cache.insert([0u8; 16], key(2));
        assert_eq!(cache.len(), MAX_CACHED_KEYS);
        cache.insert(id(0xff), key(3));
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&id(0xff)).is_some());
    }
}
