//! Poll state kept in the checkpoint: the watermark, and the last version seen of every
//! tracked object (incidents, alerts, risk records). The same map is the seen-set that
//! de-duplicates overlapping re-reads and the state the change events are computed from.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// Last version seen of one object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracked {
    /// Last-updated time of that version (µs).
    pub t: Micros,
    /// Tracked field values (enum values lower-cased).
    pub f: BTreeMap<String, String>,
    /// A version of it was sent (false while the noise filters dropped every version).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub s: bool,
}

/// The state of one (source, tenant, resource), serialized as the checkpoint value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollState {
    pub v: u32,
    /// Newest last-updated time of a fully read poll (RFC 3339); the next poll asks for
    /// `ge watermark - overlap`.
    pub watermark: String,
    /// Incidents, risk detections or risky users, by id.
    #[serde(default)]
    pub items: BTreeMap<String, Tracked>,
    /// Alerts of the incidents, by alert id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub alerts: BTreeMap<String, Tracked>,
}

/// How change types are named for a kind of object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Incidents and alerts: `created`, `resolved` (status became resolved), `updated`.
    Finding,
    /// Risk detections and risky users: `created`, the new `riskState` when it changed
    /// (`remediated`, `dismissed`, `atRisk`, `confirmedCompromised`, ...), else `updated`.
    Risk,
}

/// One object as read, reduced to what the state engine tracks.
#[derive(Clone, Debug)]
pub struct Observed {
    pub id: String,
    pub t: Micros,
    pub fields: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// This version (or a newer one) was processed before: an overlap re-read.
    Seen,
    /// A newer version, but no tracked field changed.
    Unchanged,
    /// Emit (or count as filtered): the change type and the fields that changed.
    Changed { change_type: String, fields: Vec<String> },
}

/// Compare an object with its last version and record it. `send` says whether the noise
/// filters let this version through; the state is updated either way so that the same
/// version is not judged twice.
pub fn observe(map: &mut BTreeMap<String, Tracked>, o: &Observed, rule: Rule, send: bool) -> Outcome {
    let outcome = match map.get(&o.id) {
        Some(prev) if prev.t >= o.t => return Outcome::Seen,
        Some(prev) if prev.s => {
            let changed: Vec<String> = o
                .fields
                .iter()
                .filter(|(k, v)| prev.f.get(*k) != Some(*v))
                .map(|(k, _)| k.clone())
                .chain(prev.f.keys().filter(|k| !o.fields.contains_key(*k)).cloned())
                .collect();
            if changed.is_empty() {
                Outcome::Unchanged
            } else {
                let change_type = change_type(rule, prev, o, &changed);
                Outcome::Changed {
                    change_type,
                    fields: changed,
                }
            }
        }
        // Never sent before (new, or every earlier version was filtered out).
        _ => Outcome::Changed {
            change_type: "created".into(),
            fields: Vec::new(),
        },
    };
    let was_sent = map.get(&o.id).is_some_and(|p| p.s);
    map.insert(
        o.id.clone(),
        Tracked {
            // A time in the future (an upstream clock wrong for a while) is kept as now:
            // stored as it came, it would make every later version, stamped right again,
            // look older and be taken for a re-read until that date. (A version read again
            // is then compared field by field: unchanged, it is not sent.)
            t: o.t.min(now_us()),
            f: o.fields.clone(),
            s: was_sent || (send && matches!(outcome, Outcome::Changed { .. })),
        },
    );
    outcome
}

fn change_type(rule: Rule, prev: &Tracked, o: &Observed, changed: &[String]) -> String {
    match rule {
        Rule::Finding => {
            let status = o.fields.get("status").map(String::as_str);
            let was = prev.f.get("status").map(String::as_str);
            match status {
                // A change that closed it: named by the new status.
                Some(s @ ("resolved" | "redirected")) if changed.iter().any(|f| f == "status") && was != Some(s) => {
                    s.into()
                }
                _ => "updated".into(),
            }
        }
        Rule::Risk => match (changed.iter().any(|f| f == "riskState"), o.fields.get("riskState")) {
            (true, Some(state)) if !state.is_empty() => canonical_risk_state(state),
            _ => "updated".into(),
        },
    }
}

/// Risk states are lower-cased in the state; give them back their Graph spelling.
fn canonical_risk_state(s: &str) -> String {
    const KNOWN: [&str; 7] = [
        "none",
        "confirmedSafe",
        "remediated",
        "dismissed",
        "atRisk",
        "confirmedCompromised",
        "unknownFutureValue",
    ];
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(s))
        .map_or_else(|| s.to_string(), |k| k.to_string())
}

impl PollState {
    pub fn new(watermark: Micros) -> PollState {
        PollState {
            v: 1,
            watermark: format_time(watermark),
            ..PollState::default()
        }
    }

    pub fn watermark_us(&self) -> Option<Micros> {
        parse_time(&self.watermark)
    }

    pub fn set_watermark(&mut self, t: Micros) {
        self.watermark = format_time(t);
    }

    /// Drop objects last updated before `horizon`, then the oldest beyond `max_items`.
    /// An alert counts as updated when it or its incident was: an incident open for longer
    /// than the retention lists its old alerts with every change, and they must still be
    /// known then (else they come back as `created`). Returns how many were dropped.
    pub fn prune(&mut self, horizon: Micros, max_items: usize) -> usize {
        let before = self.items.len() + self.alerts.len();
        prune_map(&mut self.items, horizon, max_items, |v| v.t);
        let items = &self.items;
        prune_map(&mut self.alerts, horizon, max_items, |v| {
            let incident = v.f.get("incidentId").and_then(|i| items.get(i));
            incident.map_or(v.t, |i| v.t.max(i.t))
        });
        before - self.items.len() - self.alerts.len()
    }

    pub fn to_checkpoint(&self) -> String {
        serde_json::to_string(self).expect("poll state serializes")
    }

    pub fn from_checkpoint(s: &str) -> Result<PollState, String> {
        let st: PollState = serde_json::from_str(s).map_err(|e| e.to_string())?;
        if st.watermark_us().is_none() {
            return Err(format!("watermark `{}` is not a time", st.watermark));
        }
        Ok(st)
    }
}

/// Keep the objects whose time (by `time`) is at or after `horizon`, then the newest
/// `max_items` of them.
fn prune_map(
    map: &mut BTreeMap<String, Tracked>,
    horizon: Micros,
    max_items: usize,
    time: impl Fn(&Tracked) -> Micros,
) {
    map.retain(|_, v| time(v) >= horizon);
    if map.len() > max_items {
        let mut times: Vec<Micros> = map.values().map(&time).collect();
        times.sort_unstable();
        let cut = times[map.len() - max_items];
        map.retain(|_, v| time(v) >= cut);
        // Ties at the cut can leave a few more than max_items; drop arbitrary ones.
        let excess = map.len().saturating_sub(max_items);
        let drop: Vec<String> = map
            .iter()
            .filter(|(_, v)| time(v) == cut)
            .take(excess)
            .map(|(k, _)| k.clone())
            .collect();
        for k in drop {
            map.remove(&k);
        }
    }
}

/// Parse a Graph DateTimeOffset (`2026-11-27T09:44:11.27Z`, 0 to 9 fraction digits; a
/// value without offset is taken as UTC).
pub fn parse_time(s: &str) -> Option<Micros> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| Utc.from_utc_datetime(&n).timestamp_micros())
}

/// RFC 3339 with microseconds.
pub fn format_time(t: Micros) -> String {
    match DateTime::<Utc>::from_timestamp_micros(t) {
        Some(d) => d.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => "1970-01-01T00:00:00Z".into(),
    }
}

/// The `$filter` literal: whole seconds, rounded down (so `ge` never misses the boundary).
pub fn filter_time(t: Micros) -> String {
    let secs = t.div_euclid(1_000_000);
    match DateTime::<Utc>::from_timestamp(secs, 0) {
        Some(d) => d.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "1970-01-01T00:00:00Z".into(),
    }
}

pub fn now_us() -> Micros {
    Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(id: &str, t: Micros, status: &str) -> Observed {
        Observed {
            id: id.into(),
            t,
            fields: [("status".to_string(), status.to_string())].into_iter().collect(),
        }
    }

    #[test]
    fn times_parse_and_format() {
        let t = parse_time("2026-11-27T09:44:11.2700000Z").unwrap();
        assert_eq!(format_time(t), "2026-11-27T09:44:11.270000Z");
        assert_eq!(filter_time(t), "2026-11-27T09:44:11Z");
        assert_eq!(parse_time("2026-11-27T09:44:11.27"), Some(t));
        assert_eq!(parse_time("2026-11-27T10:44:11.27+01:00"), Some(t));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn a_version_stamped_in_the_future_does_not_hide_the_next_ones() {
        let mut m = BTreeMap::new();
        let year = 365 * 24 * 3600 * 1_000_000i64;
        let now = now_us();
        let created = observe(&mut m, &obs("1", now + year, "active"), Rule::Finding, true);
        assert!(matches!(created, Outcome::Changed { ref change_type, .. } if change_type == "created"));
        assert_eq!(
            observe(&mut m, &obs("1", now + year, "active"), Rule::Finding, true),
            Outcome::Unchanged,
            "the same version read again: nothing to send"
        );
        assert_eq!(
            observe(&mut m, &obs("1", now + 1_000_000, "resolved"), Rule::Finding, true),
            Outcome::Changed {
                change_type: "resolved".into(),
                fields: vec!["status".into()]
            },
            "the clock set right: the resolution is seen"
        );
    }

    #[test]
    fn finding_lifecycle() {
        let mut m = BTreeMap::new();
        let created = observe(&mut m, &obs("1", 10, "active"), Rule::Finding, true);
        assert!(matches!(created, Outcome::Changed { ref change_type, .. } if change_type == "created"));
        assert_eq!(
            observe(&mut m, &obs("1", 10, "active"), Rule::Finding, true),
            Outcome::Seen
        );
        assert_eq!(observe(&mut m, &obs("1", 5, "new"), Rule::Finding, true), Outcome::Seen);
        assert_eq!(
            observe(&mut m, &obs("1", 20, "active"), Rule::Finding, true),
            Outcome::Unchanged
        );
        assert_eq!(
            observe(&mut m, &obs("1", 30, "resolved"), Rule::Finding, true),
            Outcome::Changed {
                change_type: "resolved".into(),
                fields: vec!["status".into()]
            }
        );
        assert_eq!(
            observe(&mut m, &obs("1", 40, "active"), Rule::Finding, true),
            Outcome::Changed {
                change_type: "updated".into(),
                fields: vec!["status".into()]
            }
        );
    }

    #[test]
    fn filtered_versions_are_created_when_first_sent() {
        let mut m = BTreeMap::new();
        assert!(matches!(
            observe(&mut m, &obs("1", 10, "active"), Rule::Finding, false),
            Outcome::Changed { .. }
        ));
        assert!(!m["1"].s);
        let next = observe(&mut m, &obs("1", 20, "inprogress"), Rule::Finding, true);
        assert!(matches!(next, Outcome::Changed { ref change_type, .. } if change_type == "created"));
        assert!(m["1"].s);
    }

    #[test]
    fn risk_state_change_is_named() {
        let mut m = BTreeMap::new();
        let mut o = Observed {
            id: "u".into(),
            t: 1,
            fields: [("riskState".to_string(), "atrisk".to_string())].into_iter().collect(),
        };
        observe(&mut m, &o, Rule::Risk, true);
        o.t = 2;
        o.fields.insert("riskState".into(), "remediated".into());
        assert!(matches!(observe(&mut m, &o, Rule::Risk, true),
            Outcome::Changed { ref change_type, .. } if change_type == "remediated"));
        o.t = 3;
        o.fields.insert("riskState".into(), "confirmedcompromised".into());
        assert!(matches!(observe(&mut m, &o, Rule::Risk, true),
            Outcome::Changed { ref change_type, .. } if change_type == "confirmedCompromised"));
    }

    #[test]
    fn prune_by_age_and_count() {
        let mut st = PollState::new(100);
        for i in 0..10 {
            st.items.insert(
                format!("i{i}"),
                Tracked {
                    t: i * 10,
                    ..Default::default()
                },
            );
        }
        assert_eq!(st.prune(30, 100), 3);
        assert_eq!(st.prune(0, 4), 3);
        assert_eq!(st.items.len(), 4);
        assert!(st.items.contains_key("i9") && !st.items.contains_key("i5"));
        let back = PollState::from_checkpoint(&st.to_checkpoint()).unwrap();
        assert_eq!(back, st);
        assert!(PollState::from_checkpoint("{\"v\":1,\"watermark\":\"x\"}").is_err());
    }

    #[test]
    fn alerts_of_a_kept_incident_are_kept() {
        let mut st = PollState::new(1_000);
        let alert = |t: Micros, incident: &str| Tracked {
            t,
            f: [("incidentId".to_string(), incident.to_string())].into_iter().collect(),
            s: true,
        };
        st.items.insert(
            "open".into(),
            Tracked {
                t: 900,
                ..Default::default()
            },
        );
        st.items.insert(
            "old".into(),
            Tracked {
                t: 10,
                ..Default::default()
            },
        );
        st.alerts.insert("a-open".into(), alert(10, "open"));
        st.alerts.insert("a-old".into(), alert(10, "old"));
        st.alerts.insert("a-gone".into(), alert(10, "never-seen"));
        st.alerts.insert("a-new".into(), alert(950, "old"));
        assert_eq!(st.prune(500, 100), 3);
        assert_eq!(st.items.keys().collect::<Vec<_>>(), ["open"]);
        assert_eq!(st.alerts.keys().collect::<Vec<_>>(), ["a-new", "a-open"]);
        // Over the count, an alert is as new as its incident.
        st.alerts.insert("a-mid".into(), alert(800, "none"));
        assert_eq!(st.prune(500, 2), 1);
        assert_eq!(st.alerts.keys().collect::<Vec<_>>(), ["a-new", "a-open"]);
    }
}
