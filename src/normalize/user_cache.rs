//! Bounded, sharded cache of (tenant, user object id) → (UPN, display name), learned from
//! every event that carries both, used to restore users on records that only carry the id
//! (Identity Protection alerts no longer send account enrichment).
//!
//! Each shard keeps two generations; when the current one is full it becomes the old one and
//! the previous old one is dropped, so memory stays bounded and recently used entries survive
//! (a hit in the old generation is promoted). Learning takes a read lock first and only writes
//! when the entry is new or changed, so the hot path (sign-ins) rarely writes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::RwLock;

use super::common::Fnv128;
use crate::json_text::trim;

const SHARDS: usize = 16;

/// Hasher for keys that are already uniform 128-bit hashes.
#[derive(Default)]
pub(crate) struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

pub(crate) type KeyMap<V> = HashMap<u128, V, BuildHasherDefault<PreHashed>>;

/// Two-generation map with a per-generation capacity.
#[derive(Debug)]
pub(crate) struct TwoGen<V> {
    cur: KeyMap<V>,
    old: KeyMap<V>,
    cap: usize,
}

impl<V: Clone> TwoGen<V> {
    pub fn new(cap: usize) -> TwoGen<V> {
        TwoGen {
            cur: KeyMap::default(),
            old: KeyMap::default(),
            cap: cap.max(1),
        }
    }
    pub fn get(&self, k: u128) -> Option<&V> {
        self.cur.get(&k).or_else(|| self.old.get(&k))
    }
    pub fn insert(&mut self, k: u128, v: V) {
        if self.cur.len() >= self.cap && !self.cur.contains_key(&k) {
            self.old = std::mem::take(&mut self.cur);
        }
        self.cur.insert(k, v);
    }
    /// Get, moving an old-generation hit into the current generation.
    pub fn get_promote(&mut self, k: u128) -> Option<V> {
        if let Some(v) = self.cur.get(&k) {
            return Some(v.clone());
        }
        let v = self.old.remove(&k)?;
        self.insert(k, v.clone());
        Some(v)
    }
    pub fn len(&self) -> usize {
        self.cur.len() + self.old.len()
    }
}

/// What the cache knows about a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KnownUser {
    pub upn: Option<Box<str>>,
    pub display_name: Option<Box<str>>,
}

/// Sharded (tenant, object id) → user cache. `Send + Sync`.
pub(crate) struct UserCache {
    shards: Vec<RwLock<TwoGen<KnownUser>>>,
}

/// Cache key: tenant and object id, both case-insensitive.
pub(crate) fn user_key(tenant: &str, object_id: &str) -> u128 {
    let mut h = Fnv128::default();
    h.part("user").part_lower(tenant).part_lower(trim(object_id));
    h.finish()
}

impl UserCache {
    /// `capacity` bounds the number of users kept (about twice that in the worst case).
    pub fn new(capacity: usize) -> UserCache {
        let per = capacity.div_ceil(SHARDS).max(1);
        UserCache {
            shards: (0..SHARDS).map(|_| RwLock::new(TwoGen::new(per))).collect(),
        }
    }

    fn shard(&self, k: u128) -> &RwLock<TwoGen<KnownUser>> {
        &self.shards[(k >> 120) as usize % SHARDS]
    }

    /// Remember a user when the record carries the object id and at least a UPN or name.
    pub fn learn(&self, tenant: &str, object_id: Option<&str>, upn: Option<&str>, display_name: Option<&str>) {
        let Some(oid) = object_id else { return };
        if upn.is_none() && display_name.is_none() {
            return;
        }
        let k = user_key(tenant, oid);
        let shard = self.shard(k);
        {
            let g = shard.read().unwrap_or_else(|e| e.into_inner());
            if let Some(u) = g.get(k) {
                let same_upn = upn.is_none() || u.upn.as_deref() == upn;
                let same_name = display_name.is_none() || u.display_name.as_deref() == display_name;
                if same_upn && same_name {
                    return;
                }
            }
        }
        let mut g = shard.write().unwrap_or_else(|e| e.into_inner());
        let prev = g.get(k).cloned();
        let merged = KnownUser {
            upn: upn.map(Box::from).or_else(|| prev.as_ref().and_then(|p| p.upn.clone())),
            display_name: display_name
                .map(Box::from)
                .or_else(|| prev.as_ref().and_then(|p| p.display_name.clone())),
        };
        g.insert(k, merged);
    }

    /// Whether a key is cached (no promotion).
    pub fn contains(&self, k: u128) -> bool {
        self.shard(k).read().unwrap_or_else(|e| e.into_inner()).get(k).is_some()
    }

    /// Look a user up by tenant and object id.
    pub fn lookup(&self, tenant: &str, object_id: &str) -> Option<KnownUser> {
        let k = user_key(tenant, object_id);
        let shard = self.shard(k);
        {
            let g = shard.read().unwrap_or_else(|e| e.into_inner());
            match g.cur.get(&k) {
                Some(u) => return Some(u.clone()),
                None if !g.old.contains_key(&k) => return None,
                None => {}
            }
        }
        shard.write().unwrap_or_else(|e| e.into_inner()).get_promote(k)
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learn_and_lookup_case_insensitive() {
        let c = UserCache::new(100);
        c.learn("T1", Some("ABC"), Some("a@fabrikam.example"), Some("Alex"));
        let u = c.lookup("t1", "abc").unwrap();
        assert_eq!(u.upn.as_deref(), Some("a@fabrikam.example"));
        assert_eq!(u.display_name.as_deref(), Some("Alex"));
        assert!(c.lookup("t2", "abc").is_none());
    }

    #[test]
    fn partial_updates_merge() {
        let c = UserCache::new(100);
        c.learn("t", Some("id"), Some("u@x"), None);
        c.learn("t", Some("id"), None, Some("Name"));
        let u = c.lookup("t", "id").unwrap();
        assert_eq!(u.upn.as_deref(), Some("u@x"));
        assert_eq!(u.display_name.as_deref(), Some("Name"));
        c.learn("t", Some("id"), None, None);
        c.learn("t", None, Some("v@x"), None);
        assert_eq!(c.lookup("t", "id").unwrap().upn.as_deref(), Some("u@x"));
    }

    #[test]
    fn bounded() {
        let c = UserCache::new(32);
        for i in 0..10_000 {
            c.learn("t", Some(&i.to_string()), Some("u@x"), None);
        }
        assert!(c.len() <= 2 * 32 + 2 * SHARDS, "len {}", c.len());
        assert!(c.lookup("t", "9999").is_some());
    }

    #[test]
    fn two_gen_promotes() {
        let mut g: TwoGen<u32> = TwoGen::new(2);
        g.insert(1, 1);
        g.insert(2, 2);
        g.insert(3, 3); // rotates: old = {1, 2}
        assert_eq!(g.get_promote(1), Some(1));
        g.insert(4, 4); // rotates again: old = {3, 1}; 2 dropped
        g.insert(5, 5);
        assert_eq!(g.get(2), None);
        assert!(g.get(4).is_some());
    }
}
