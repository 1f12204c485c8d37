//! Graph objects: incidents (one event for the incident and one per expanded alert),
//! alerts, Identity Protection risk detections and risky users / service principals.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{record_bytes, DecodeError, DecodedRecord, DecodedUnit};
use crate::event::EventKind;

#[derive(Deserialize)]
struct GraphHead<'a> {
    #[serde(borrow, default, rename = "@odata.type")]
    odata_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "tenantId")]
    tenant_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "incidentId")]
    incident_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    alerts: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default, rename = "incidentWebUrl")]
    incident_web_url: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "alertWebUrl")]
    alert_web_url: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "riskEventType")]
    risk_event_type: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "riskState")]
    risk_state: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "servicePrincipalType")]
    service_principal_type: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "appId")]
    app_id: Option<&'a RawValue>,
}

/// The Graph type of an object, from `@odata.type` or its fields.
fn classify(head: &GraphHead) -> (&'static str, EventKind) {
    let t = head.odata_type.as_deref().unwrap_or("");
    let t = t.trim_start_matches('#').to_ascii_lowercase();
    if t.ends_with("security.incident") || (t.is_empty() && (head.alerts.is_some() || head.incident_web_url.is_some()))
    {
        ("GraphIncident", EventKind::Incident)
    } else if t.ends_with("security.alert") || t.ends_with(".alert") || (t.is_empty() && head.alert_web_url.is_some()) {
        ("GraphAlert", EventKind::Alert)
    } else if t.ends_with("riskdetection")
        || t.ends_with("serviceprincipalriskdetection")
        || (t.is_empty() && head.risk_event_type.is_some())
    {
        if t.contains("serviceprincipal") {
            ("GraphServicePrincipalRiskDetection", EventKind::RiskDetection)
        } else {
            ("GraphRiskDetection", EventKind::RiskDetection)
        }
    } else if t.ends_with("riskyserviceprincipal")
        || (t.is_empty()
            && head.risk_state.is_some()
            && (head.service_principal_type.is_some() || head.app_id.is_some()))
    {
        ("GraphRiskyServicePrincipal", EventKind::RiskState)
    } else if t.ends_with("riskyuser") || (t.is_empty() && head.risk_state.is_some()) {
        ("GraphRiskyUser", EventKind::RiskState)
    } else {
        ("GraphObject", EventKind::Generic)
    }
}

/// Quick test used by auto-detection on a single object.
pub fn looks_like_graph(s: &str) -> bool {
    s.contains("\"@odata.type\"") || s.contains("\"incidentWebUrl\"") || s.contains("\"alertWebUrl\"")
}

/// [`looks_like_graph`] on bytes.
pub(crate) fn looks_like_graph_bytes(b: &[u8]) -> bool {
    use memchr::memmem::find;
    find(b, b"\"@odata.type\"").is_some()
        || find(b, b"\"incidentWebUrl\"").is_some()
        || find(b, b"\"alertWebUrl\"").is_some()
}

pub(crate) fn push_graph_item(body: &Bytes, item: &RawValue, unit: &mut DecodedUnit) -> Result<(), DecodeError> {
    if !item.get().starts_with('{') {
        return Err(DecodeError::NotRecords("a Graph item is not an object".into()));
    }
    let head: GraphHead = crate::json_de::from_str(item.get()).map_err(|e| DecodeError::NotRecords(e.to_string()))?;
    let (category, kind) = classify(&head);
    let tenant = head.tenant_id.as_deref().filter(|t| !t.is_empty()).map(str::to_string);
    let id = head.id.as_deref().map(str::to_string);
    let entity_key = match kind {
        EventKind::Incident => id.clone(),
        EventKind::Alert => head.incident_id.as_deref().map(str::to_string).or(id.clone()),
        _ => id.clone(),
    };
    unit.records.push(DecodedRecord {
        raw: record_bytes(body, item),
        category: category.to_string(),
        kind,
        tenant: tenant.clone(),
        entity_key: entity_key.clone(),
        unchecked: None,
    });
    if kind == EventKind::Incident {
        for alert in head.alerts.unwrap_or_default() {
            if !alert.get().starts_with('{') {
                return Err(DecodeError::NotRecords(
                    "an alert of an incident is not an object".into(),
                ));
            }
            let a: GraphHead =
                crate::json_de::from_str(alert.get()).map_err(|e| DecodeError::NotRecords(e.to_string()))?;
            unit.records.push(DecodedRecord {
                raw: record_bytes(body, alert),
                category: "GraphAlert".to_string(),
                kind: EventKind::Alert,
                tenant: a
                    .tenant_id
                    .as_deref()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .or(tenant.clone()),
                // Keyed by the incident so an incident and its alerts stay ordered together.
                entity_key: entity_key.clone(),
                unchecked: None,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::data;
    use super::super::{decode_unit, InputFormat};
    use super::*;

    #[test]
    fn incidents_expand_into_incident_and_alert_events() {
        let p1 = decode_unit(InputFormat::Auto, data("graph/incidents_page1.json")).unwrap();
        let p2 = decode_unit(InputFormat::Auto, data("graph/incidents_page2.json")).unwrap();
        assert!(p1.next_link.as_deref().unwrap().contains("$skiptoken="));
        assert!(p2.next_link.is_none());
        let all: Vec<_> = p1.records.iter().chain(p2.records.iter()).collect();
        let incidents = all.iter().filter(|r| r.kind == EventKind::Incident).count();
        let alerts = all.iter().filter(|r| r.kind == EventKind::Alert).count();
        assert_eq!((incidents, alerts), (5, 6), "the samples hold 5 incidents and 6 alerts");
        // Every alert is keyed by its incident.
        let first_alert = p1.records.iter().find(|r| r.kind == EventKind::Alert).unwrap();
        assert_eq!(first_alert.entity_key.as_deref(), Some("3106"));
        assert_eq!(first_alert.category, "GraphAlert");
    }

    #[test]
    fn graph_input_does_not_read_an_event_hub_records_array() {
        let body = br#"{"records":[{"category":"SignInLogs"},{"category":"AuditLogs"}]}"#;
        let eh = decode_unit(InputFormat::Eventhub, Bytes::from_static(body)).unwrap();
        assert_eq!(eh.records.len(), 2);
        let graph = decode_unit(InputFormat::Graph, Bytes::from_static(body));
        assert!(
            graph.map_or(true, |u| u.records.len() <= 1),
            "split as an Event Hub body"
        );
    }

    #[test]
    fn identity_protection_objects_are_classified() {
        let rd = decode_unit(InputFormat::Graph, data("graph/risk_detections.json")).unwrap();
        assert_eq!(rd.records.len(), 5);
        assert!(rd.records.iter().all(|r| r.kind == EventKind::RiskDetection));
        let ru = decode_unit(InputFormat::Graph, data("graph/risky_users.json")).unwrap();
        assert_eq!(ru.records.len(), 3);
        assert!(ru.records.iter().all(|r| r.category == "GraphRiskyUser"));
        assert!(ru.next_link.is_some());
    }
}
