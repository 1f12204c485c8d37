//! What the state engine and the noise filters read from each Graph object: incidents and
//! their alerts (`security/incidents`), Identity Protection risk detections and risky users.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::filter::FilterSubject;
use super::state::{parse_time, Observed};

/// An object the state engine cannot track (no id or no last-updated time); it is
/// forwarded as read, without a change type.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Untracked(pub String);

#[derive(Deserialize)]
struct AlertView {
    #[serde(default, deserialize_with = "text")]
    id: Option<String>,
    #[serde(default, deserialize_with = "text")]
    #[serde(rename = "lastUpdateDateTime")]
    last_update: Option<String>,
    #[serde(default, deserialize_with = "text")]
    #[serde(rename = "incidentId")]
    incident_id: Option<String>,
    #[serde(default, deserialize_with = "text")]
    status: Option<String>,
    #[serde(default, deserialize_with = "text")]
    severity: Option<String>,
    #[serde(default, deserialize_with = "text")]
    classification: Option<String>,
    #[serde(default, deserialize_with = "text")]
    determination: Option<String>,
    #[serde(default, deserialize_with = "text")]
    #[serde(rename = "assignedTo")]
    assigned_to: Option<String>,
    #[serde(default, deserialize_with = "text")]
    #[serde(rename = "serviceSource")]
    service_source: Option<String>,
    #[serde(default, deserialize_with = "text")]
    #[serde(rename = "detectionSource")]
    detection_source: Option<String>,
    #[serde(default, deserialize_with = "text")]
    title: Option<String>,
    #[serde(default, deserialize_with = "count")]
    evidence: usize,
}

#[derive(Deserialize)]
struct IncidentView {
    #[serde(default, deserialize_with = "text")]
    id: Option<String>,
    #[serde(default, deserialize_with = "text")]
    #[serde(rename = "lastUpdateDateTime")]
    last_update: Option<String>,
    #[serde(default, deserialize_with = "text")]
    status: Option<String>,
    #[serde(default, deserialize_with = "text")]
    severity: Option<String>,
    #[serde(default, deserialize_with = "text")]
    classification: Option<String>,
    #[serde(default, deserialize_with = "text")]
    determination: Option<String>,
    #[serde(default, deserialize_with = "text")]
    #[serde(rename = "assignedTo")]
    assigned_to: Option<String>,
    #[serde(default, deserialize_with = "text")]
    #[serde(rename = "displayName")]
    display_name: Option<String>,
    #[serde(default, deserialize_with = "text")]
    #[serde(rename = "redirectIncidentId")]
    redirect_incident_id: Option<String>,
    #[serde(default, deserialize_with = "alerts")]
    alerts: Option<Vec<AlertView>>,
    #[serde(default, deserialize_with = "count")]
    comments: usize,
}

#[derive(Deserialize)]
struct RiskView {
    #[serde(default, deserialize_with = "text")]
    id: Option<String>,
    #[serde(default, deserialize_with = "text")]
    #[serde(rename = "lastUpdatedDateTime")]
    last_updated: Option<String>,
    #[serde(default, deserialize_with = "text")]
    #[serde(rename = "riskLastUpdatedDateTime")]
    risk_last_updated: Option<String>,
    #[serde(default, deserialize_with = "text")]
    #[serde(rename = "riskState")]
    risk_state: Option<String>,
    #[serde(default, deserialize_with = "text")]
    #[serde(rename = "riskLevel")]
    risk_level: Option<String>,
    #[serde(default, deserialize_with = "text")]
    #[serde(rename = "riskDetail")]
    risk_detail: Option<String>,
    #[serde(default, deserialize_with = "text")]
    #[serde(rename = "riskEventType")]
    risk_event_type: Option<String>,
    #[serde(default, deserialize_with = "text")]
    source: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    #[serde(rename = "isDeleted")]
    is_deleted: Option<bool>,
    #[serde(default, deserialize_with = "text")]
    #[serde(rename = "userPrincipalName")]
    user_principal_name: Option<String>,
}

// The fields are read whatever their JSON type (the beta API has changed types before): an
// object whose tracked field came as a number or an object must still be tracked, or each
// of its versions is sent again at every re-read without a change type.

/// A string as it is; a number or boolean as its text; an object or array as its JSON.
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    })
}

/// Anything at all, counted as an array's length (elements skipped, not built): 0 for
/// what is not an array.
struct Count;

impl<'de> serde::de::Visitor<'de> for Count {
    type Value = usize;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while a.next_element::<serde::de::IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<usize, A::Error> {
        while a
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(0)
    }

    fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_str<E>(self, _: &str) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_unit<E>(self) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_none<E>(self) -> Result<usize, E> {
        Ok(0)
    }
}

/// The length of an array; 0 for anything else.
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    d.deserialize_any(Count)
}

/// A boolean, or `"true"` / `"false"`.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => Some(b),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

/// The alerts of an incident: each one that is an object (a malformed one is left out, not
/// the incident); each read from its own text, so their evidence is skipped, not built.
fn alerts<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<AlertView>>, D::Error> {
    struct Alerts;
    impl<'de> serde::de::Visitor<'de> for Alerts {
        type Value = Option<Vec<AlertView>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of alerts")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(raw) = a.next_element::<&'de serde_json::value::RawValue>()? {
                out.extend(serde_json::from_str::<AlertView>(raw.get()).ok());
            }
            Ok(Some(out))
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
            serde::de::Visitor::visit_map(Count, a).map(|_| None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Alerts)
}

fn lower(v: &Option<String>) -> String {
    v.as_deref().unwrap_or("").to_ascii_lowercase()
}

fn head(id: Option<String>, time: Option<&str>, what: &str) -> Result<(String, i64), Untracked> {
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| Untracked(format!("{what} without an id")))?;
    let t = time
        .and_then(parse_time)
        .ok_or_else(|| Untracked(format!("{what} {id} without a valid last-updated time")))?;
    Ok((id, t))
}

fn parse<'a, T: Deserialize<'a>>(raw: &'a [u8], what: &str) -> Result<T, Untracked> {
    serde_json::from_slice(raw).map_err(|e| Untracked(format!("{what} not understood: {e}")))
}

fn evidence_count(a: &AlertView) -> usize {
    a.evidence
}

/// An incident (with its expanded alerts).
pub fn incident(raw: &[u8]) -> Result<(Observed, FilterSubject), Untracked> {
    let v: IncidentView = parse(raw, "incident")?;
    let (id, t) = head(v.id, v.last_update.as_deref(), "incident")?;
    let alerts = v.alerts.unwrap_or_default();
    let mut ids: Vec<&str> = alerts.iter().filter_map(|a| a.id.as_deref()).collect();
    ids.sort_unstable();
    let evidence: usize = alerts.iter().map(evidence_count).sum();
    let mut f = BTreeMap::new();
    f.insert("status".into(), lower(&v.status));
    f.insert("severity".into(), lower(&v.severity));
    f.insert("classification".into(), lower(&v.classification));
    f.insert("determination".into(), lower(&v.determination));
    f.insert("assignedTo".into(), v.assigned_to.clone().unwrap_or_default());
    f.insert("alerts".into(), ids.join(","));
    f.insert("evidenceCount".into(), evidence.to_string());
    f.insert("comments".into(), v.comments.to_string());
    f.insert("redirectIncidentId".into(), v.redirect_incident_id.unwrap_or_default());
    let subject = FilterSubject {
        service_sources: alerts.iter().filter_map(|a| a.service_source.clone()).collect(),
        detection_sources: alerts.iter().filter_map(|a| a.detection_source.clone()).collect(),
        severity: v.severity,
        status: v.status,
        title: v.display_name,
    };
    Ok((Observed { id, t, fields: f }, subject))
}

/// An alert (inside an incident or alone).
pub fn alert(raw: &[u8]) -> Result<(Observed, FilterSubject), Untracked> {
    let a: AlertView = parse(raw, "alert")?;
    let evidence = evidence_count(&a);
    let (id, t) = head(a.id, a.last_update.as_deref(), "alert")?;
    let mut f = BTreeMap::new();
    f.insert("status".into(), lower(&a.status));
    f.insert("severity".into(), lower(&a.severity));
    f.insert("classification".into(), lower(&a.classification));
    f.insert("determination".into(), lower(&a.determination));
    f.insert("assignedTo".into(), a.assigned_to.clone().unwrap_or_default());
    f.insert("incidentId".into(), a.incident_id.clone().unwrap_or_default());
    f.insert("evidenceCount".into(), evidence.to_string());
    let subject = FilterSubject {
        service_sources: a.service_source.into_iter().collect(),
        detection_sources: a.detection_source.into_iter().collect(),
        severity: a.severity,
        status: a.status,
        title: a.title,
    };
    Ok((Observed { id, t, fields: f }, subject))
}

fn risk_fields(v: &RiskView) -> BTreeMap<String, String> {
    let mut f = BTreeMap::new();
    f.insert("riskState".into(), lower(&v.risk_state));
    f.insert("riskLevel".into(), lower(&v.risk_level));
    f.insert("riskDetail".into(), lower(&v.risk_detail));
    f
}

/// A risk detection: detection source is `source`, severity `riskLevel`, status
/// `riskState`, title `riskEventType`.
pub fn risk_detection(raw: &[u8]) -> Result<(Observed, FilterSubject), Untracked> {
    let v: RiskView = parse(raw, "risk detection")?;
    let fields = risk_fields(&v);
    let (id, t) = head(v.id, v.last_updated.as_deref(), "risk detection")?;
    let subject = FilterSubject {
        service_sources: Vec::new(),
        detection_sources: v.source.into_iter().collect(),
        severity: v.risk_level,
        status: v.risk_state,
        title: v.risk_event_type,
    };
    Ok((Observed { id, t, fields }, subject))
}

/// A risky user: severity `riskLevel`, status `riskState`, title `userPrincipalName`.
pub fn risky_user(raw: &[u8]) -> Result<(Observed, FilterSubject), Untracked> {
    let v: RiskView = parse(raw, "risky user")?;
    let mut fields = risk_fields(&v);
    fields.insert("isDeleted".into(), v.is_deleted.unwrap_or(false).to_string());
    let (id, t) = head(v.id, v.risk_last_updated.as_deref(), "risky user")?;
    let subject = FilterSubject {
        service_sources: Vec::new(),
        detection_sources: Vec::new(),
        severity: v.risk_level,
        status: v.risk_state,
        title: v.user_principal_name,
    };
    Ok((Observed { id, t, fields }, subject))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode_unit, InputFormat};
    use crate::event::EventKind;

    fn data(path: &str) -> bytes::Bytes {
        let p = format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR"));
        bytes::Bytes::from(std::fs::read(&p).unwrap())
    }

    #[test]
    fn incident_and_alert_views_from_the_samples() {
        let unit = decode_unit(InputFormat::Graph, data("graph/incidents_page1.json")).unwrap();
        let inc = unit.records.iter().find(|r| r.kind == EventKind::Incident).unwrap();
        let (o, s) = incident(&inc.raw).unwrap();
        assert_eq!(o.id, "3106");
        assert_eq!(o.fields["status"], "active");
        assert_eq!(o.fields["evidenceCount"], "3");
        assert_eq!(s.service_sources, vec!["azureAdIdentityProtection".to_string()]);
        let al = unit.records.iter().find(|r| r.kind == EventKind::Alert).unwrap();
        let (a, _) = alert(&al.raw).unwrap();
        assert_eq!(a.fields["incidentId"], "3106");
        assert!(a.id.starts_with("ad4a222e"));
    }

    #[test]
    fn risk_views_from_the_samples() {
        let unit = decode_unit(InputFormat::Graph, data("graph/risky_users.json")).unwrap();
        let (o, s) = risky_user(&unit.records[2].raw).unwrap();
        assert_eq!(o.fields["riskState"], "remediated");
        assert!(s.title.unwrap().contains('@'));
        let unit = decode_unit(InputFormat::Graph, data("graph/risk_detections.json")).unwrap();
        let (o, s) = risk_detection(&unit.records[0].raw).unwrap();
        assert_eq!(o.fields["riskState"], "atrisk");
        assert!(s.title.is_some());
        assert!(risk_detection(br#"{"id":"x"}"#).is_err());
    }

    /// Tracked fields of another JSON type than documented keep the object tracked.
    #[test]
    fn fields_of_an_unexpected_type_still_track_the_object() {
        let (o, _) = incident(
            br#"{"id":"7","lastUpdateDateTime":"2026-11-27T09:44:11Z","status":"active","assignedTo":{"upn":"a@b"},
                "severity":3,"comments":"none","alerts":[{"id":"a1","incidentId":7,"evidence":{}},"not an alert"]}"#,
        )
        .unwrap();
        assert_eq!(o.fields["severity"], "3");
        assert_eq!(o.fields["assignedTo"], r#"{"upn":"a@b"}"#);
        assert_eq!(o.fields["alerts"], "a1");
        assert_eq!(o.fields["comments"], "0");
        let (a, _) =
            alert(br#"{"id":"a1","lastUpdateDateTime":"2026-11-27T09:44:11Z","incidentId":7,"evidence":null}"#)
                .unwrap();
        assert_eq!(a.fields["incidentId"], "7");
        let (u, _) = risky_user(
            br#"{"id":"u","riskLastUpdatedDateTime":"2026-11-27T09:44:11Z","isDeleted":"true","riskLevel":null}"#,
        )
        .unwrap();
        assert_eq!(u.fields["isDeleted"], "true");
    }
}
