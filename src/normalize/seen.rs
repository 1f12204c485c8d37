//! Bounded first-seen cache for findings: decides OCSF `activity_id` Create (first version
//! seen) vs Update (a later version), and remembers the severity of Defender `AlertInfo`
//! rows so that `AlertEvidence` rows for the same alert can carry it.
//!
//! Keyed by a hash of (kind, tenant, finding id). Each entry keeps the version time (epoch ms)
//! of the first version seen, so a re-delivered first version is again reported as Create
//! (duplicates stay identical: same `metadata.uid`, same activity). The cache starts empty on
//! every restart; the Graph poller's persisted change type (`meta.change_type`) takes
//! precedence when present.

use std::sync::Mutex;

use super::common::Fnv128;
use super::user_cache::TwoGen;

const SHARDS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    first_version: i64,
    severity: u8,
}

/// How a finding version relates to what was seen before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Never seen, or the same version as the first one seen (a re-delivery).
    First,
    /// A different version of a finding seen before.
    Later,
}

pub(crate) struct SeenCache {
    shards: Vec<Mutex<TwoGen<Entry>>>,
}

/// Key of a finding: kind (`graph.incident`, `graph.alert`, `risk.detection`, ...), tenant, id.
pub(crate) fn finding_key(kind: &str, tenant: &str, id: &str) -> u128 {
    let mut h = Fnv128::default();
    h.part(kind).part_lower(tenant).part(id);
    h.finish()
}

impl SeenCache {
    pub fn new(capacity: usize) -> SeenCache {
        let per = capacity.div_ceil(SHARDS).max(1);
        SeenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(TwoGen::new(per))).collect(),
        }
    }

    fn shard(&self, k: u128) -> &Mutex<TwoGen<Entry>> {
        &self.shards[(k >> 120) as usize % SHARDS]
    }

    /// Record a version of a finding and say whether it is the first one. `severity` is
    /// remembered for [`SeenCache::severity`] when given.
    pub fn observe(&self, key: u128, version_ms: i64, severity: Option<u8>) -> Seen {
        let mut g = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        match g.get_promote(key) {
            None => {
                g.insert(
                    key,
                    Entry {
                        first_version: version_ms,
                        severity: severity.unwrap_or(0),
                    },
                );
                Seen::First
            }
            Some(mut e) => {
                if let Some(s) = severity {
                    if s != e.severity {
                        e.severity = s;
                        g.insert(key, e);
                    }
                }
                if e.first_version == version_ms {
                    Seen::First
                } else {
                    Seen::Later
                }
            }
        }
    }

    /// Severity remembered for a finding, if any.
    pub fn severity(&self, key: u128) -> Option<u8> {
        let g = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        g.get(key).map(|e| e.severity).filter(|s| *s != 0)
    }
}

/// OCSF finding activity. With the Graph poller's change type: `created`/`new` → 1 Create
/// (3 Close when first seen already closed); a change that closed it (the change type names the new state: `resolved`, `redirected`,
/// `remediated`, `dismissed`, ...) → 3 Close; anything else → 2 Update, a later change of
/// an already closed finding included. Without one (Event Hub records, which carry the
/// whole state): 3 Close when closed, else the first-seen cache (1 Create / 2 Update).
pub(crate) fn finding_activity(
    seen: &SeenCache,
    key: u128,
    version_ms: i64,
    closed: bool,
    change_type: Option<&str>,
    severity: Option<u8>,
) -> u8 {
    let s = seen.observe(key, version_ms, severity);
    if let Some(ct) = change_type {
        let created = ct.eq_ignore_ascii_case("created") || ct.eq_ignore_ascii_case("new");
        // First seen already closed: Close, which carries its final state (and is never
        // taken for the duplicate of a detection the other input sent first).
        return if closed && (created || !ct.eq_ignore_ascii_case("updated")) {
            3
        } else if created {
            1
        } else {
            2
        };
    }
    if closed {
        return 3;
    }
    match s {
        Seen::First => 1,
        Seen::Later => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_later_and_redelivery() {
        let c = SeenCache::new(100);
        let k = finding_key("graph.incident", "t", "3106");
        assert_eq!(c.observe(k, 10, None), Seen::First);
        assert_eq!(c.observe(k, 10, None), Seen::First);
        assert_eq!(c.observe(k, 20, None), Seen::Later);
        assert_eq!(c.observe(k, 10, None), Seen::First);
    }

    #[test]
    fn activity_rules() {
        let c = SeenCache::new(100);
        let k = finding_key("graph.alert", "t", "a");
        assert_eq!(finding_activity(&c, k, 1, false, None, None), 1);
        assert_eq!(finding_activity(&c, k, 2, false, None, None), 2);
        assert_eq!(finding_activity(&c, k, 3, true, None, None), 3);
        let k2 = finding_key("graph.alert", "t", "b");
        assert_eq!(finding_activity(&c, k2, 1, false, Some("status_changed"), None), 2);
        assert_eq!(finding_activity(&c, k2, 2, false, Some("created"), None), 1);
        // Closed by this change, then changed again while closed.
        let k3 = finding_key("graph.incident", "t", "3108");
        assert_eq!(finding_activity(&c, k3, 1, true, Some("resolved"), None), 3);
        assert_eq!(finding_activity(&c, k3, 2, true, Some("updated"), None), 2);
        assert_eq!(finding_activity(&c, k3, 3, true, Some("redirected"), None), 3);
        let k4 = finding_key("graph.alert", "t", "da1");
        assert_eq!(
            finding_activity(&c, k4, 1, true, Some("created"), None),
            3,
            "first seen resolved"
        );
    }

    #[test]
    fn remembers_severity() {
        let c = SeenCache::new(100);
        let k = finding_key("defender.alert", "t", "da1");
        assert_eq!(c.severity(k), None);
        c.observe(k, 1, Some(4));
        assert_eq!(c.severity(k), Some(4));
    }
}
