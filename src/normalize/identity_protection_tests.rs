//! Tests of the Identity Protection mapping against the sample records.

use super::super::testutil::*;
use super::*;

const USER_RISK: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/eventhub/user_risk_events.json"
));
const RISKY_USERS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/eventhub/risky_users.json"
));
const RISKY_SPS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/eventhub/risky_serviceprincipals.json"
));
const SP_RISK: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/eventhub/serviceprincipal_risk_events.json"
));
const GRAPH_DETECTIONS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/graph/risk_detections.json"
));
const GRAPH_RISKY_USERS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/graph/risky_users.json"
));

#[test]
fn user_risk_event_atypical_travel() {
    let n = normalizer();
    let o = run(&n, "UserRiskEvents", &records(USER_RISK)[0]);
    let e = ocsf(&o);
    assert_eq!(o.normalized.class_uid, 2004);
    assert_eq!(e["type_uid"], 200_401);
    assert_eq!(o.severity_id, 3);
    assert_eq!(e["risk_level_id"], 2);
    assert_eq!(e["status_id"], 1);
    assert_eq!(e["status"], "New");
    assert_eq!(e["finding_info"]["title"], "Atypical travel");
    assert_eq!(
        e["finding_info"]["uid"],
        "25e1561f401e8f11f75c848d4e793834a2f52201978ae8702a3ff95d7833a191"
    );
    assert_eq!(e["actor"]["user"]["name"], "megan.bowen@fabrikam.example");
    assert_eq!(e["evidences"][0]["src_endpoint"]["ip"], "203.0.113.45");
    assert_eq!(
        e["evidences"][0]["http_request"]["user_agent"],
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"
    );
    assert_eq!(e["metadata"]["product"]["name"], PRODUCT);
    assert_eq!(e["metadata"]["correlation_uid"], "7bfe4119-9905-472d-8a6f-1511e36fc0cc");
    assert_eq!(e["unmapped"]["durationMs"], 0);
    assert_eq!(o.tenant.as_deref(), Some(TENANT));
    assert_eq!(
        o.entity_key.as_deref(),
        Some("25e1561f401e8f11f75c848d4e793834a2f52201978ae8702a3ff95d7833a191")
    );
    assert_eq!(e["time"], 1_795_729_622_551i64);
    assert!(!o.time_assumed_utc);
}

#[test]
fn one_digit_hour_time_is_parsed() {
    let n = normalizer();
    let o = run(&n, "UserRiskEvents", &records(USER_RISK)[1]);
    let e = ocsf(&o);
    assert_eq!(e["time"], 1_795_856_712_000i64, "2026-11-28T9:05:12.000Z");
    assert_eq!(e["finding_info"]["created_time"], 1_795_856_710_900i64);
    assert_eq!(e["finding_info"]["title"], "Password spray");
    assert_eq!(o.severity_id, 4);
}

#[test]
fn risky_users_states() {
    let n = normalizer();
    let recs = records(RISKY_USERS);
    let megan = run(&n, "RiskyUsers", &recs[0]);
    let e = ocsf(&megan);
    assert_eq!(
        e["finding_info"]["uid"],
        "riskyUser:25abd89b-d67e-4d92-8a83-18174d645fa6"
    );
    assert_eq!(e["type_uid"], 200_401);
    assert_eq!(megan.severity_id, 4);
    assert_eq!(e["is_alert"], true);
    assert_eq!(e["unmapped"]["isGuest"], false);
    assert_eq!(e["unmapped"]["location"], "weu");
    let lee = run(&n, "RiskyUsers", &recs[1]);
    let e = ocsf(&lee);
    assert_eq!(e["type_uid"], 200_403, "remediated closes the finding");
    assert_eq!(e["status_id"], 4);
    assert_eq!(e["risk_level_id"], 0);
    assert_eq!(lee.severity_id, 1);
    assert_eq!(
        lee.entity_key.as_deref(),
        Some("riskyUser:eca9bad1-449e-48e4-b15c-e760f3e452f2")
    );
}

#[test]
fn risky_service_principal_create_then_update() {
    let n = normalizer();
    let recs = records(RISKY_SPS);
    let first = run(&n, "RiskyServicePrincipals", &recs[0]);
    let second = run(&n, "RiskyServicePrincipals", &recs[1]);
    assert_eq!(ocsf(&first)["type_uid"], 200_401);
    assert_eq!(ocsf(&second)["type_uid"], 200_402);
    let e = ocsf(&second);
    assert_eq!(e["status_id"], 2, "confirmedCompromised");
    assert_eq!(second.severity_id, 4, "confirmed compromise raises severity");
    assert_eq!(e["actor"]["app_uid"], "b35331ce-af2e-49dd-87e3-55b26210b784");
    assert_eq!(e["actor"]["user"]["type"], "ServicePrincipal");
    assert_eq!(e["finding_info"]["uid"], "riskySp:9fb932d4-f039-4722-96ff-82e389e3995a");
}

#[test]
fn service_principal_risk_events() {
    let n = normalizer();
    let recs = records(SP_RISK);
    let o = run(&n, "ServicePrincipalRiskEvents", &recs[0]);
    let e = ocsf(&o);
    assert_eq!(e["finding_info"]["title"], "Suspicious sign-ins");
    assert_eq!(e["actor"]["user"]["name"], "Fabrikam Payroll Sync");
    assert_eq!(e["actor"]["user"]["type_id"], 99);
    assert_eq!(
        e["unmapped"]["additionalInfo"]["riskReasons"],
        "UnfamiliarIPAddress,FailedCredentialBurst"
    );
    let o = run(&n, "ServicePrincipalRiskEvents", &recs[1]);
    let e = ocsf(&o);
    assert!(e.get("evidences").is_none(), "no IP, null location");
    assert_eq!(e["status_id"], 2);
}

/// A Graph `servicePrincipalRiskDetection` (same fields as the stream's `properties`) is a
/// Detection Finding for the service principal, and the same detection seen on Event Hub
/// is correlated to it by risk event id.
#[test]
fn graph_service_principal_risk_detections() {
    let n = normalizer();
    let recs = records(SP_RISK);
    let rec: serde_json::Value = serde_json::from_str(&recs[0]).unwrap();
    let mut graph = rec["properties"].clone();
    graph["@odata.type"] = "#microsoft.graph.servicePrincipalRiskDetection".into();
    let o = run(&n, "GraphServicePrincipalRiskDetection", &graph.to_string());
    let e = ocsf(&o);
    assert_eq!(e["class_uid"], 2004);
    assert_eq!(e["metadata"]["log_provider"], "Microsoft Graph");
    assert_eq!(e["finding_info"]["title"], "Suspicious sign-ins");
    assert_eq!(e["actor"]["user"]["name"], "Fabrikam Payroll Sync");
    assert_eq!(e["actor"]["user"]["type_id"], 99);
    let eh = run(&n, "ServicePrincipalRiskEvents", &recs[0]);
    assert_eq!(eh.correlated.map(|c| c.via), Some(crate::normalize::Via::Graph));
}

#[test]
fn graph_detections_and_restore() {
    let n = normalizer();
    let recs = records(GRAPH_DETECTIONS);
    let o = run(&n, "GraphRiskDetection", &recs[0]);
    let e = ocsf(&o);
    assert_eq!(e["metadata"]["log_provider"], "Microsoft Graph");
    assert_eq!(
        e["unmapped"]["additionalInfo"]["relatedLocation"]["clientIP"],
        "198.51.100.23"
    );
    let leaked = run(&n, "GraphRiskDetection", &recs[3]);
    let e = ocsf(&leaked);
    assert_eq!(e["type_uid"], 200_403, "remediated");
    assert!(e.get("evidences").is_none());
    // A detection without UPN is restored from what earlier events taught.
    let stripped = recs[1]
        .replace("\"alex.wilber@fabrikam.example\"", "null")
        .replace("\"Alex Wilber\"", "null");
    run(&n, "GraphRiskDetection", &recs[2]);
    let o = run(&n, "GraphRiskDetection", &stripped);
    let e = ocsf(&o);
    assert_eq!(e["actor"]["user"]["name"], "alex.wilber@fabrikam.example");
    assert_eq!(e["actor"]["user"]["full_name"], "Alex Wilber");
    assert_eq!(e["unmapped"]["user_restored_from"], "cache");
}

#[test]
fn graph_risky_users() {
    let n = normalizer();
    let recs = records(GRAPH_RISKY_USERS);
    let o = run(&n, "GraphRiskyUser", &recs[1]);
    assert_eq!(ocsf(&o)["unmapped"]["isProcessing"], true);
    assert_eq!(o.severity_id, 2);
}

#[test]
fn titles() {
    assert_eq!(risk_title("unlikelyTravel"), "Atypical travel");
    assert_eq!(risk_title("somethingNewAndShiny"), "Something new and shiny");
}

#[test]
fn graph_service_principal_detection_and_state() {
    let n = normalizer();
    let det = r#"{"id":"sp-det-1","tenantId":"D13C513A-42F8-4DA1-97B1-165F0971B7C4",
        "appId":"b35331ce-af2e-49dd-87e3-55b26210b784",
        "servicePrincipalId":"9fb932d4-f039-4722-96ff-82e389e3995a",
        "servicePrincipalDisplayName":"Fabrikam Payroll Sync","keyIds":["k1"],
        "riskEventType":"leakedCredentials","riskLevel":"medium","riskState":"dismissed",
        "detectionTimingType":"offline","activity":"servicePrincipal","ipAddress":null,
        "lastUpdatedDateTime":"2026-11-28T08:00:00Z","additionalInfo":"[]"}"#;
    let o = run(&n, "GraphRiskDetection", det);
    let e = ocsf(&o);
    assert_eq!(e["type_uid"], 200_403, "dismissed closes");
    assert_eq!(e["actor"]["user"]["type"], "ServicePrincipal");
    assert_eq!(e["actor"]["app_uid"], "b35331ce-af2e-49dd-87e3-55b26210b784");
    assert_eq!(e["unmapped"]["keyIds"], serde_json::json!(["k1"]));
    assert!(e["unmapped"].get("additionalInfo").is_none());
    assert_eq!(o.tenant.as_deref(), Some(TENANT));
    let state = r#"{"id":"mi-1","appId":"a1","displayName":"fwd-prod-aks-agentpool",
        "servicePrincipalType":"ManagedIdentity","riskLevel":"low","riskState":"atRisk",
        "riskLastUpdatedDateTime":"2026-11-28T08:00:00Z"}"#;
    let o = run(&n, "GraphRiskyServicePrincipal", state);
    let e = ocsf(&o);
    assert_eq!(e["finding_info"]["uid"], "riskySp:mi-1");
    assert_eq!(e["actor"]["user"]["type"], "ManagedIdentity");
    assert_eq!(e["is_alert"], true);
    assert_eq!(o.severity_id, 2);
}
