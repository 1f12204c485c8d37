//! `Ctx`: what a mapper gets besides the record: the event's metadata, the user and
//! finding caches, and the record's event time once picked.

use super::seen::SeenCache;
use super::user_cache::{self, KnownUser, UserCache};
use super::{common, lenient, NormalizeError, UserKey};
use crate::event::EventMeta;

/// Per-call context handed to the mappers.
pub(crate) struct Ctx<'m> {
    pub meta: &'m EventMeta,
    pub(super) users: &'m UserCache,
    pub seen: &'m SeenCache,
    /// A user lookup found nothing (the record may be restorable later).
    pub(super) missed_user: std::cell::Cell<Option<UserKey>>,
    /// The record's event time, once its mapper picked it: what the user cache compares
    /// (the newest event's name wins, whenever the records come).
    pub(super) event_ms: std::cell::Cell<Option<i64>>,
}

impl Ctx<'_> {
    /// Tenant used for cache keys: the record's, else the source's, else empty.
    pub fn cache_tenant<'t>(&'t self, record: Option<&'t str>) -> &'t str {
        record.or(self.meta.tenant.as_deref()).unwrap_or("")
    }

    /// [`common::pick_time`], the time kept as the record's event time.
    pub fn pick_time<'s>(
        &self,
        cands: &[(&'static str, &'s lenient::Str<'_>)],
    ) -> Result<(crate::decode::time::ParsedTime, &'s str), NormalizeError> {
        let picked = common::pick_time(cands)?;
        self.event_ms.set(Some(picked.0.ms));
        Ok(picked)
    }

    pub fn change_type(&self) -> Option<&str> {
        self.meta.change_type.as_deref().filter(|s| !s.is_empty())
    }

    /// When what is learned now was true: the event's own time, else its source's, else
    /// when it was received.
    fn learned_at(&self) -> i64 {
        self.event_ms
            .get()
            .or(self.meta.event_ms)
            .unwrap_or(self.meta.received_ms)
    }

    pub fn learn_user(
        &self,
        tenant: Option<&str>,
        object_id: Option<&str>,
        upn: Option<&str>,
        display_name: Option<&str>,
    ) {
        let at = self.learned_at();
        self.users
            .learn(self.cache_tenant(tenant), object_id, upn, display_name, at);
    }

    /// Remembers the user a risk detection is about (see [`UserCache::learn_detection`]).
    pub fn learn_detection(
        &self,
        tenant: Option<&str>,
        detection_id: &str,
        object_id: Option<&str>,
        upn: Option<&str>,
        display_name: Option<&str>,
    ) {
        let at = self.learned_at();
        self.users.learn_detection(
            self.cache_tenant(tenant),
            detection_id,
            object_id,
            upn,
            display_name,
            at,
        );
    }

    /// The user behind a risk detection id; a miss is noted like a user's (the detection
    /// may be normalized in parallel, see `missed_user`).
    pub fn known_detection(&self, tenant: Option<&str>, detection_id: &str) -> Option<KnownUser> {
        let k = self.users.lookup_detection(self.cache_tenant(tenant), detection_id);
        if k.is_none() && self.missed_user.get().is_none() {
            let key = user_cache::detection_key(self.cache_tenant(tenant), detection_id);
            self.missed_user.set(Some(UserKey(key)));
        }
        k
    }

    pub fn known_user(&self, tenant: Option<&str>, object_id: &str) -> Option<KnownUser> {
        let k = self.users.lookup(self.cache_tenant(tenant), object_id);
        if k.is_none() && self.missed_user.get().is_none() {
            let key = user_cache::user_key(self.cache_tenant(tenant), object_id);
            self.missed_user.set(Some(UserKey(key)));
        }
        k
    }
}
