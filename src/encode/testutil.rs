//! Test helpers: build events without a pipeline.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::ack::Finalizer;
use crate::event::{Event, EventKind, EventMeta, Normalized, Position};

pub(crate) fn meta(kind: EventKind, category: &str) -> EventMeta {
    EventMeta {
        tenant: Some(Arc::from("0f0e0d0c-0000-4000-8000-000000000001")),
        received_ms: 1_732_698_900_000,
        event_ms: Some(1_732_698_845_123),
        severity_id: 4,
        entity_key: Some(Arc::from("123")),
        change_type: Some(Arc::from("updated")),
        ..EventMeta::new(Arc::from("graph"), category, kind, Position::at(Arc::from("p0"), 7, 0))
    }
}

pub(crate) fn event(kind: EventKind, category: &str, raw: &str, ocsf: Option<Value>) -> Event {
    let mut e = Event::new(Bytes::from(raw.to_owned()), meta(kind, category), Finalizer::noop());
    e.normalized = ocsf.map(|o| {
        Arc::new(Normalized::from_value(
            o.get("class_uid").and_then(Value::as_u64).unwrap_or(0) as u32,
            o,
        ))
    });
    e
}

/// A Graph alert (Detection Finding) with a few attributes.
pub(crate) fn alert_ocsf() -> Value {
    serde_json::json!({
        "class_uid": 2004, "class_name": "Detection Finding", "activity_id": 1,
        "activity_name": "Create", "type_uid": 200401, "severity_id": 4, "status": "New",
        "time": 1732698845123i64,
        "message": "Atypical travel",
        "metadata": {"uid": "e1", "product": {"name": "Microsoft Entra ID Protection",
                     "version": "v1.0", "feature": {"name": "alerts_v2"}},
                     "tenant_uid": "t1"},
        "finding_info": {"uid": "da637", "title": "Atypical travel",
                         "analytic": {"uid": "unlikelyTravel"},
                         "src_url": "https://security.microsoft.com/alerts/da637",
                         "first_seen_time": 1732698800000i64},
        "actor": {"user": {"name": "kim@fabrikam.example", "uid": "u-1"}},
        "src_endpoint": {"ip": "203.0.113.7"}
    })
}

/// An incident (Incident Finding) with two alerts and one evidence.
pub(crate) fn incident_ocsf() -> Value {
    serde_json::json!({
        "class_uid": 2005, "class_name": "Incident Finding", "activity_id": 2,
        "activity_name": "Update", "type_uid": 200502, "severity_id": 4, "status": "New",
        "time": 1732698845123i64,
        "message": "Ransomware | lateral movement",
        "src_url": "https://security.microsoft.com/incidents/123",
        "metadata": {"uid": "e2", "product": {"name": "Microsoft Defender XDR", "version": "v1.0"},
                     "tenant_uid": "t1"},
        "finding_info": {"uid": "123", "title": "Ransomware | lateral movement"},
        "finding_info_list": [
            {"uid": "da1", "title": "Suspicious PowerShell", "types": ["Execution"],
             "src_url": "https://security.microsoft.com/alerts/da1", "created_time": 1732698000000i64},
            {"uid": "da2", "title": "Lateral movement", "types": ["LateralMovement"]}
        ],
        "evidences": [
            {"user": {"name": "kim@fabrikam.example", "uid": "u-1"},
             "file": {"name": "a=b.ps1", "path": "C:\\Users\\kim\\a=b.ps1"},
             "src_endpoint": {"ip": "2001:db8::7"}}
        ]
    })
}

/// An Entra sign-in (Authentication) that failed, with client, location and result code.
pub(crate) fn signin_ocsf() -> Value {
    serde_json::json!({
        "class_uid": 3002, "class_name": "Authentication", "activity_id": 1,
        "activity_name": "Logon", "type_uid": 300201, "type_name": "Authentication: Logon",
        "severity_id": 3, "status": "Failure", "time": 1732698845123i64,
        "message": "Sign-in by kim@fabrikam.example: failure",
        "metadata": {"uid": "e3", "log_name": "SignInLogs", "tenant_uid": "t1",
                     "product": {"name": "Microsoft Entra ID"}},
        "user": {"name": "kim@fabrikam.example", "uid": "u-1"},
        "actor": {"app_uid": "c44b4083", "app_name": "Azure Portal"},
        "service": {"uid": "797f4846", "name": "Windows Azure Service Management API"},
        "src_endpoint": {"ip": "203.0.113.77",
                         "location": {"city": "Sao Paulo", "country": "BR",
                                      "lat": -23.5505, "long": -46.6333}},
        "http_request": {"user_agent": "Mozilla/5.0 (X11; Linux x86_64)"},
        "status_code": "53003", "status_detail": "Blocked by Conditional Access."
    })
}

/// A Microsoft Graph activity log entry (API Activity) that was throttled.
pub(crate) fn graph_activity_ocsf() -> Value {
    serde_json::json!({
        "class_uid": 6003, "class_name": "API Activity", "activity_id": 2,
        "activity_name": "Read", "type_uid": 600302, "severity_id": 1, "status": "Failure",
        "time": 1732698845123i64, "message": "GET /v1.0/users -> 429",
        "metadata": {"uid": "e4", "log_name": "MicrosoftGraphActivityLogs", "tenant_uid": "t1",
                     "product": {"name": "Microsoft Graph"}},
        "src_endpoint": {"ip": "198.51.100.200"},
        "http_request": {"http_method": "GET",
                         "url": {"url_string": "https://graph.microsoft.com/v1.0/users?$top=5"},
                         "user_agent": "python-requests/2.32"},
        "status_code": "429"
    })
}
