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
    /// The user's object id: kept only for entries found by another key (a risk detection's
    /// id, see [`UserCache::learn_detection`]); a user entry's key is its object id.
    pub uid: Option<Box<str>>,
    pub upn: Option<Box<str>>,
    pub display_name: Option<Box<str>>,
    /// Time (epoch ms) of the newest event it was learned from: an older event (a late
    /// sign-in, a backfill) does not bring back a name the user no longer has.
    pub at_ms: i64,
}

/// The all-zero object id: Entra's placeholder for an unknown user (a failed sign-in with a
/// typed user name), never one user.
const NIL_ID: &str = "00000000-0000-0000-0000-000000000000";

/// Sharded (tenant, object id) → user cache, and (tenant, risk detection id) → the user it
/// is about. `Send + Sync`.
pub(crate) struct UserCache {
    shards: Vec<RwLock<TwoGen<KnownUser>>>,
}

/// Cache key: tenant and object id, both case-insensitive.
pub(crate) fn user_key(tenant: &str, object_id: &str) -> u128 {
    let mut h = Fnv128::default();
    h.part("user").part_lower(tenant).part_lower(trim(object_id));
    h.finish()
}

/// Cache key of a risk detection: tenant and detection id, both case-insensitive. An
/// Identity Protection alert's `providerAlertId` is its risk detection's id.
pub(crate) fn detection_key(tenant: &str, detection_id: &str) -> u128 {
    let mut h = Fnv128::default();
    h.part("detection").part_lower(tenant).part_lower(trim(detection_id));
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

    /// Remember a user when the record carries the object id and at least a UPN or name,
    /// from an event of time `at_ms`: an entry learned from a newer event is kept.
    pub fn learn(
        &self,
        tenant: &str,
        object_id: Option<&str>,
        upn: Option<&str>,
        display_name: Option<&str>,
        at_ms: i64,
    ) {
        let Some(oid) = object_id.filter(|o| !trim(o).eq_ignore_ascii_case(NIL_ID)) else {
            return;
        };
        if upn.is_none() && display_name.is_none() {
            return;
        }
        self.learn_at(user_key(tenant, oid), None, upn, display_name, at_ms);
    }

    /// Remember the user a risk detection is about (object id, UPN, name as the detection
    /// gives them), so that an Identity Protection alert whose evidence lost the user can be
    /// restored by the detection's id. Needs the object id or the UPN.
    pub fn learn_detection(
        &self,
        tenant: &str,
        detection_id: &str,
        object_id: Option<&str>,
        upn: Option<&str>,
        display_name: Option<&str>,
        at_ms: i64,
    ) {
        let oid = object_id.filter(|o| !trim(o).eq_ignore_ascii_case(NIL_ID));
        if trim(detection_id).is_empty() || (oid.is_none() && upn.is_none()) {
            return;
        }
        self.learn_at(detection_key(tenant, detection_id), oid, upn, display_name, at_ms);
    }

    /// Learns an entry under `k`: an entry learned from a newer event is kept.
    fn learn_at(&self, k: u128, uid: Option<&str>, upn: Option<&str>, display_name: Option<&str>, at_ms: i64) {
        let shard = self.shard(k);
        let same = |u: &KnownUser| {
            (uid.is_none() || u.uid.as_deref() == uid)
                && (upn.is_none() || u.upn.as_deref() == upn)
                && (display_name.is_none() || u.display_name.as_deref() == display_name)
        };
        {
            let g = shard.read().unwrap_or_else(|e| e.into_inner());
            // Known as it is (and current, so it is not dropped at the next rotation), or
            // known from a newer event.
            if let Some(u) = g.cur.get(&k) {
                if (same(u) && u.at_ms >= at_ms) || u.at_ms > at_ms {
                    return;
                }
            }
        }
        let mut g = shard.write().unwrap_or_else(|e| e.into_inner());
        let prev = g.get_promote(k);
        if let Some(p) = &prev {
            if p.at_ms > at_ms && !same(p) {
                return;
            }
        }
        let merged = KnownUser {
            uid: uid.map(Box::from).or_else(|| prev.as_ref().and_then(|p| p.uid.clone())),
            upn: upn.map(Box::from).or_else(|| prev.as_ref().and_then(|p| p.upn.clone())),
            display_name: display_name
                .map(Box::from)
                .or_else(|| prev.as_ref().and_then(|p| p.display_name.clone())),
            at_ms: prev.as_ref().map_or(at_ms, |p| p.at_ms.max(at_ms)),
        };
        if prev.as_ref() != Some(&merged) {
            g.insert(k, merged);
        }
    }

    /// Whether a key is cached (no promotion).
    pub fn contains(&self, k: u128) -> bool {
        self.shard(k).read().unwrap_or_else(|e| e.into_inner()).get(k).is_some()
    }

    /// Look a user up by tenant and object id.
    pub fn lookup(&self, tenant: &str, object_id: &str) -> Option<KnownUser> {
        if trim(object_id).eq_ignore_ascii_case(NIL_ID) {
            return None;
        }
        self.lookup_key(user_key(tenant, object_id))
    }

    /// The user a risk detection is about, by tenant and detection id.
    pub fn lookup_detection(&self, tenant: &str, detection_id: &str) -> Option<KnownUser> {
        self.lookup_key(detection_key(tenant, detection_id))
    }

    fn lookup_key(&self, k: u128) -> Option<KnownUser> {
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
        c.learn("T1", Some("ABC"), Some("a@fabrikam.example"), Some("Alex"), 1);
        let u = c.lookup("t1", "abc").unwrap();
        assert_eq!(u.upn.as_deref(), Some("a@fabrikam.example"));
        assert_eq!(u.display_name.as_deref(), Some("Alex"));
        assert!(c.lookup("t2", "abc").is_none());
    }

    #[test]
    fn partial_updates_merge() {
        let c = UserCache::new(100);
        c.learn("t", Some("id"), Some("u@x"), None, 1);
        c.learn("t", Some("id"), None, Some("Name"), 1);
        let u = c.lookup("t", "id").unwrap();
        assert_eq!(u.upn.as_deref(), Some("u@x"));
        assert_eq!(u.display_name.as_deref(), Some("Name"));
        c.learn("t", Some("id"), None, None, 1);
        c.learn("t", None, Some("v@x"), None, 1);
        assert_eq!(c.lookup("t", "id").unwrap().upn.as_deref(), Some("u@x"));
    }

    #[test]
    fn bounded() {
        let c = UserCache::new(32);
        for i in 0..10_000 {
            c.learn("t", Some(&i.to_string()), Some("u@x"), None, 1);
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

    /// A user renamed: a late event with the old name (a delayed sign-in, a backfill) does
    /// not bring it back; a newer one replaces it.
    #[test]
    fn the_newest_event_wins() {
        let c = UserCache::new(100);
        c.learn("t", Some("oid1"), Some("new@x"), None, 200);
        c.learn("t", Some("oid1"), Some("old@x"), None, 100);
        assert_eq!(c.lookup("t", "oid1").unwrap().upn.as_deref(), Some("new@x"));
        c.learn("t", Some("oid1"), Some("newer@x"), None, 300);
        assert_eq!(c.lookup("t", "oid1").unwrap().upn.as_deref(), Some("newer@x"));
    }

    /// A risk detection's user is found by the detection id (case-insensitive), apart from
    /// the users found by object id; a detection naming no user is not learned.
    #[test]
    fn detections_are_found_by_their_id() {
        let c = UserCache::new(100);
        c.learn_detection("T", "AB12", Some("oid1"), Some("u@x"), Some("U"), 1);
        c.learn_detection("t", "cd34", Some(NIL_ID), None, Some("Nobody"), 1);
        let u = c.lookup_detection("t", "ab12").unwrap();
        assert_eq!(
            (u.uid.as_deref(), u.upn.as_deref(), u.display_name.as_deref()),
            (Some("oid1"), Some("u@x"), Some("U"))
        );
        assert!(c.lookup_detection("t", "cd34").is_none());
        assert!(c.lookup_detection("t2", "ab12").is_none());
        assert!(
            c.lookup("t", "ab12").is_none(),
            "a detection id is not a user's object id"
        );
        assert!(c.lookup_detection("t", "oid1").is_none());
    }

    /// The all-zero object id stands for no user: never learned, never looked up.
    #[test]
    fn the_nil_object_id_is_never_a_user() {
        let c = UserCache::new(100);
        c.learn("t", Some(NIL_ID), Some("typed-by-anyone@x"), None, 1);
        assert!(c.lookup("t", NIL_ID).is_none());
        assert_eq!(c.len(), 0);
    }

    /// A user learned again stays through rotations: it is moved to the current generation
    /// when learned, as when looked up (it was dropped at the next rotation).
    #[test]
    fn a_user_learned_again_survives_a_rotation() {
        let c = UserCache::new(2 * SHARDS);
        let shard_of = |id: &str| (user_key("t", id) >> 120) as usize % SHARDS;
        let home = shard_of("active");
        let mut same_shard = (0..).map(|i| format!("k{i}")).filter(|id| shard_of(id) == home);
        let mut learn_other = || {
            let id = same_shard.next().unwrap();
            c.learn("t", Some(&id), Some("u@x"), None, 1);
        };
        c.learn("t", Some("active"), Some("a@x"), None, 1);
        learn_other();
        learn_other(); // rotates: "active" is in the old generation
        c.learn("t", Some("active"), Some("a@x"), None, 1);
        learn_other();
        learn_other(); // rotates again
        assert!(c.lookup("t", "active").is_some());
    }
}
