//! Detection correlation across inputs: the same detection reaches the forwarder through
//! Graph (`alerts_v2`, `riskDetections`) and through Event Hub (Defender
//! `AdvancedHunting-AlertInfo`, Entra `UserRiskEvents` / `ServicePrincipalRiskEvents`).
//! The id that ties them is the alert id (Graph alert `id` = `AlertInfo.AlertId`) or the
//! risk event id (Graph `riskDetection.id` = the diagnostic record's `properties.id`).
//!
//! A bounded cache remembers, per (kind, id), which input showed the detection first and the
//! `metadata.uid` of that event. A later event of the same detection from the *other* input
//! is correlated (`unmapped.correlated_via`, `unmapped.correlated_uid`), and, when it is the
//! detection's creation rather than a change, marked a duplicate that the router drops when
//! `normalize.suppress_duplicate_detections` is on (counted, never silently). Updates from
//! the Graph state engine (status, classification, remediation) are never suppressed. The
//! cache is per process: after a restart, or across replicas, a duplicate may pass.

use std::sync::Mutex;

use super::common::Fnv128;
use super::user_cache::TwoGen;
use crate::json_text::trim;

const SHARDS: usize = 8;

/// The input a detection came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Graph,
    EventHub,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Graph => "graph",
            Via::EventHub => "event_hub",
        }
    }

    /// Graph inputs use `Graph*` categories; everything else arrived through Event Hub (or a
    /// replay of Event Hub bodies).
    pub fn of_category(category: &str) -> Via {
        if category.starts_with("Graph") {
            Via::Graph
        } else {
            Via::EventHub
        }
    }
}

/// Which detections correlate: alerts (Graph ↔ Defender AlertInfo) or Identity Protection
/// risk detections (Graph ↔ risk event streams).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DetectionKind {
    Alert,
    Risk,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    via: Via,
    uid: u128,
}

/// The first event of a detection seen through the other input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Correlated {
    pub via: Via,
    pub uid: u128,
}

pub(crate) struct Correlator {
    shards: Vec<Mutex<TwoGen<Entry>>>,
}

fn key(kind: DetectionKind, id: &str) -> u128 {
    let mut h = Fnv128::default();
    h.part(match kind {
        DetectionKind::Alert => "alert",
        DetectionKind::Risk => "risk",
    })
    .part_lower(trim(id));
    h.finish()
}

impl Correlator {
    pub fn new(capacity: usize) -> Correlator {
        let per = capacity.div_ceil(SHARDS).max(1);
        Correlator {
            shards: (0..SHARDS).map(|_| Mutex::new(TwoGen::new(per))).collect(),
        }
    }

    /// Records that detection `id` came through `via` as the event `uid`; returns the first
    /// event of the same detection when that came through the other input.
    pub fn observe(&self, kind: DetectionKind, id: &str, via: Via, uid: u128) -> Option<Correlated> {
        let k = key(kind, id);
        let mut g = self.shards[(k >> 120) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match g.get_promote(k) {
            None => {
                g.insert(k, Entry { via, uid });
                None
            }
            Some(e) if e.via != via => Some(Correlated { via: e.via, uid: e.uid }),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_input_correlates_same_input_does_not() {
        let c = Correlator::new(100);
        assert_eq!(c.observe(DetectionKind::Alert, "da1", Via::Graph, 1), None);
        assert_eq!(c.observe(DetectionKind::Alert, "da1", Via::Graph, 2), None, "an update");
        assert_eq!(
            c.observe(DetectionKind::Alert, "DA1", Via::EventHub, 3),
            Some(Correlated {
                via: Via::Graph,
                uid: 1
            }),
            "ids compare without case"
        );
        assert_eq!(
            c.observe(DetectionKind::Risk, "da1", Via::EventHub, 4),
            None,
            "kinds are separate"
        );
    }

    #[test]
    fn categories_tell_the_input() {
        assert_eq!(Via::of_category("GraphAlert"), Via::Graph);
        assert_eq!(Via::of_category("GraphRiskDetection"), Via::Graph);
        assert_eq!(Via::of_category("AdvancedHunting-AlertInfo"), Via::EventHub);
        assert_eq!(Via::of_category("UserRiskEvents"), Via::EventHub);
    }
}
