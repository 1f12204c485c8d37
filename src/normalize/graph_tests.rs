//! Tests of the Graph incident and alert mapping against the sample pages.

use super::super::testutil::*;
use super::*;

const PAGE1: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/graph/incidents_page1.json"
));
const PAGE2: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/graph/incidents_page2.json"
));
const UPDATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/graph/incidents_update.json"
));

/// The alerts of an incident, as raw JSON objects.
fn alerts_of(incident: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(incident).unwrap();
    v["alerts"].as_array().unwrap().iter().map(|a| a.to_string()).collect()
}

#[test]
fn incident_atypical_travel() {
    let n = normalizer();
    let incs = records(PAGE1);
    let o = run(&n, "GraphIncident", &incs[0]);
    let e = ocsf(&o);
    assert_eq!(o.normalized.class_uid, 2005);
    assert_eq!(e["type_uid"], 200_501);
    assert_eq!(e["category_uid"], 2);
    assert_eq!(o.severity_id, 3);
    assert_eq!(e["status_id"], 1);
    assert_eq!(e["status"], "New");
    assert_eq!(e["message"], "Atypical travel involving one user");
    assert!(e.get("assignee").is_none());
    assert_eq!(
        e["assignee_group"]["name"], "Unassigned",
        "OCSF 1.5.0 needs one of the two"
    );
    assert_eq!(e["finding_info_list"][0]["title"], "Atypical travel");
    assert_eq!(
        e["finding_info_list"][0]["uid_alt"],
        "25e1561f401e8f11f75c848d4e793834a2f52201978ae8702a3ff95d7833a191"
    );
    assert_eq!(e["attacks"][0]["technique"]["uid"], "T1078");
    assert_eq!(e["attacks"][0]["tactic"]["name"], "Initial Access");
    assert_eq!(e["verdict_id"], 0);
    assert_eq!(e["impact_id"], 2);
    assert_eq!(e["metadata"]["labels"], serde_json::json!(["Identity"]));
    assert_eq!(e["metadata"]["log_provider"], "Microsoft Graph");
    assert_eq!(e["metadata"]["product"]["name"], "Microsoft Defender XDR");
    assert_eq!(
        e["src_url"].as_str().unwrap(),
        "https://security.microsoft.com/incidents/3106?tid=d13c513a-42f8-4da1-97b1-165f0971b7c4"
    );
    assert_eq!(e["unmapped"]["priorityScore"], 41);
    assert_eq!(o.entity_key.as_deref(), Some("3106"));
    assert_eq!(o.tenant.as_deref(), Some(TENANT));
    assert_eq!(o.event_ms, Some(1_795_729_771_006));
    assert!(observed(&o, 2).contains(&"203.0.113.45".to_owned()));
    assert!(observed(&o, 4).contains(&"megan.bowen@fabrikam.example".to_owned()));
    assert!(e["raw_data"].as_str().unwrap().contains("\"alerts\""));
}

#[test]
fn incident_in_progress_with_assignee() {
    let n = normalizer();
    let o = run(&n, "GraphIncident", &records(PAGE1)[2]);
    let e = ocsf(&o);
    assert_eq!(e["status_id"], 2);
    assert_eq!(o.severity_id, 4);
    assert_eq!(e["assignee"]["email_addr"], "secops.analyst@fabrikam.example");
    assert!(e.get("assignee_group").is_none());
    assert_eq!(e["metadata"]["labels"], serde_json::json!(["VIP", "Identity"]));
    assert_eq!(
        e["unmapped"]["comments"][0]["comment"],
        "Forced password reset requested."
    );
    assert_eq!(e["attacks"][0]["tactic"]["uid"], "TA0006");
}

#[test]
fn redirected_incident_closes() {
    let n = normalizer();
    let o = run(&n, "GraphIncident", &records(PAGE2)[1]);
    let e = ocsf(&o);
    assert_eq!(e["type_uid"], 200_503);
    assert_eq!(e["status_id"], 5);
    assert_eq!(e["status"], "Closed");
    assert_eq!(e["status_detail"], "redirected to 3109");
    assert_eq!(e["finding_info_list"], serde_json::json!([]));
}

#[test]
fn incident_update_then_resolution() {
    let n = normalizer();
    let first = run(&n, "GraphIncident", &records(PAGE1)[0]);
    assert_eq!(ocsf(&first)["activity_id"], 1);
    // Same version again (re-delivery): still Create, same uid.
    let again = run(&n, "GraphIncident", &records(PAGE1)[0]);
    assert_eq!(ocsf(&again)["activity_id"], 1);
    assert_eq!(ocsf(&again)["metadata"]["uid"], ocsf(&first)["metadata"]["uid"]);
    // A newer version that is not closed would be an Update.
    let newer = records(PAGE1)[0].replace(
        "\"lastUpdateDateTime\": \"2026-11-26T21:49:31.0066667Z\"",
        "\"lastUpdateDateTime\": \"2026-11-27T01:00:00Z\"",
    );
    assert_eq!(ocsf(&run(&n, "GraphIncident", &newer))["activity_id"], 2);
    let resolved = run(&n, "GraphIncident", &records(UPDATE)[0]);
    let e = ocsf(&resolved);
    assert_eq!(e["type_uid"], 200_503);
    assert_eq!(e["status_id"], 4);
    assert_eq!(e["verdict_id"], 2);
    assert_eq!(e["verdict"], "True Positive");
    assert_eq!(e["unmapped"]["determination"], "compromisedAccount");
    assert_eq!(
        e["comment"],
        "User confirmed compromise; password reset and sessions revoked."
    );
    assert_eq!(e["finding_info_list"].as_array().unwrap().len(), 2);
    assert_ne!(e["metadata"]["uid"], ocsf(&first)["metadata"]["uid"]);
    assert_eq!(resolved.severity_id, 4);
}

#[test]
fn change_type_from_the_poller_wins() {
    let n = normalizer();
    let rec = &records(PAGE1)[0];
    run(&n, "GraphIncident", rec);
    let mut m = meta("GraphIncident");
    m.change_type = Some("created".into());
    let o = n.normalize(&m, rec.as_bytes()).unwrap();
    assert_eq!(ocsf(&o)["activity_id"], 1);
    m.change_type = Some("alert_added".into());
    let fresh = normalizer();
    let o = fresh.normalize(&m, rec.as_bytes()).unwrap();
    assert_eq!(ocsf(&o)["activity_id"], 2);
    assert_eq!(ocsf(&o)["unmapped"]["change_type"], "alert_added");
}

#[test]
fn identity_protection_alert_user_restored_from_sibling() {
    let n = normalizer();
    let inc = &records(PAGE1)[1];
    let alerts = alerts_of(inc);
    // Without any prior knowledge only the object id is there.
    let bare = run(&n, "GraphAlert", &alerts[0]);
    let e = ocsf(&bare);
    assert_eq!(e["actor"]["user"]["uid"], "3cbb7daa-64c1-44fa-88a7-c8252abc5619");
    assert!(e["actor"]["user"].get("name").is_none());
    assert!(e["unmapped"].get("user_restored_from").is_none());
    // The incident carries the sibling alert that names the user.
    run(&n, "GraphIncident", inc);
    let mut m = meta("GraphAlert");
    m.entity_key = Some("3107".into());
    let o = n.normalize(&m, alerts[0].as_bytes()).unwrap();
    let e = ocsf(&o);
    assert_eq!(o.normalized.class_uid, 2004);
    assert_eq!(e["actor"]["user"]["name"], "alex.wilber@fabrikam.example");
    assert_eq!(e["actor"]["user"]["full_name"], "Alex Wilber");
    assert_eq!(e["unmapped"]["user_restored_from"], "cache");
    assert_eq!(o.entity_key.as_deref(), Some("3107"));
    assert_eq!(o.severity_id, 2);
    assert_eq!(e["finding_info"]["title"], "Unfamiliar sign-in properties");
    assert_eq!(e["finding_info"]["analytic"]["uid"], "UnfamiliarFeatures");
    assert_eq!(e["is_alert"], true);
    assert_eq!(e["metadata"]["product"]["name"], "Microsoft Entra ID Protection");
    assert_eq!(e["evidences"][1]["src_endpoint"]["ip"], "203.0.113.77");
    assert_eq!(e["evidences"][1]["src_endpoint"]["location"]["country"], "BR");
    assert_eq!(e["evidences"][0]["name"], "userEvidence");
    assert_eq!(e["evidences"][0]["verdict_id"], 4);
}

#[test]
fn defender_alert_with_device_process_file() {
    let n = normalizer();
    let inc = &records(PAGE2)[0];
    let alerts = alerts_of(inc);
    let o = run(&n, "GraphAlert", &alerts[0]);
    let e = ocsf(&o);
    assert_eq!(o.severity_id, 4);
    assert_eq!(o.entity_key.as_deref(), Some("3109"), "incidentId when meta has none");
    assert_eq!(e["metadata"]["product"]["name"], "Microsoft Defender for Endpoint");
    assert_eq!(e["device"]["hostname"], "ws-fin-0423.corp.fabrikam.example");
    assert_eq!(e["device"]["uid"], "348d98f0d6e375b10bc89998a976973de3fb9abe");
    assert_eq!(e["device"]["os"]["type_id"], 100);
    assert_eq!(e["metadata"]["profiles"], serde_json::json!(["host"]));
    assert_eq!(e["evidences"].as_array().unwrap().len(), 4);
    let proc_ = &e["evidences"][1]["process"];
    assert_eq!(proc_["pid"], 7716);
    assert_eq!(
        proc_["file"]["path"],
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
    );
    assert_eq!(proc_["parent_process"]["file"]["name"], "explorer.exe");
    assert_eq!(e["evidences"][1]["verdict_id"], 2);
    assert_eq!(e["evidences"][2]["file"]["hashes"][0]["algorithm"], "MD5");
    assert_eq!(e["actor"]["user"]["name"], "megan.bowen@fabrikam.example");
    assert_eq!(e["finding_info"]["attacks"][0]["sub_technique"]["uid"], "T1059.001");
    assert_eq!(e["finding_info"]["attacks"][0]["tactic"]["uid"], "TA0002");
    let hashes = observed(&o, 8);
    assert!(hashes.contains(&"87945818a97e1ea5db8740a527c14de4b3bf03731589573d4b8b2325a1a58892".to_owned()));
    assert!(observed(&o, 1).contains(&"ws-fin-0423.corp.fabrikam.example".to_owned()));
    assert!(observed(&o, 13)[0].contains("invoice_Q4.ps1"));
}

#[test]
fn resolved_alert_closes() {
    let n = normalizer();
    let alerts = alerts_of(&records(UPDATE)[0]);
    let o = run(&n, "GraphAlert", &alerts[0]);
    let e = ocsf(&o);
    assert_eq!(e["type_uid"], 200_403);
    assert_eq!(e["status_id"], 4);
    assert_eq!(e["unmapped"]["classification"], "truePositive");
    let spray = run(&n, "GraphAlert", &alerts[1]);
    let e = ocsf(&spray);
    assert_eq!(e["actor"]["user"]["name"], "megan.bowen@fabrikam.example");
    assert_eq!(e["finding_info"]["first_seen_time"], 1_795_715_710_000i64);
}

#[test]
fn unknown_evidence_kind_passes_through() {
    let n = normalizer();
    let alert = r##"{"id":"x1","tenantId":"t","title":"T","severity":"low","status":"new",
        "lastUpdateDateTime":"2026-11-27T00:00:00Z",
        "evidence":[{"@odata.type":"#microsoft.graph.security.kubernetesPodEvidence",
        "verdict":"unknown","name":"pod-1","namespace":{"name":"prod"}}]}"##;
    let o = run(&n, "GraphAlert", alert);
    let e = ocsf(&o);
    assert_eq!(e["evidences"][0]["name"], "kubernetesPodEvidence");
    assert_eq!(e["evidences"][0]["data"]["namespace"]["name"], "prod");
    assert_eq!(o.entity_key.as_deref(), Some("x1"));
}

/// An Identity Protection alert whose user evidence lost the account (no enrichment, an
/// empty `userAccount`) gets the user of its risk detection: `providerAlertId` is the
/// detection's id (reference: graph-security-api §8). Only for Identity Protection alerts,
/// and never against an object id the evidence does give.
#[test]
fn identity_protection_alert_user_restored_from_its_risk_detection() {
    const USER_RISK: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/eventhub/user_risk_events.json"
    ));
    let mut alert: Value = serde_json::from_str(&alerts_of(&records(PAGE1)[0])[0]).unwrap();
    assert_eq!(
        alert["providerAlertId"],
        "25e1561f401e8f11f75c848d4e793834a2f52201978ae8702a3ff95d7833a191"
    );
    for (k, v) in alert["evidence"][0]["userAccount"].as_object_mut().unwrap() {
        assert!(!k.is_empty() && !v.is_null());
        *v = Value::Null;
    }
    let stripped = alert.to_string();
    let mut other_uid = alert.clone();
    other_uid["evidence"][0]["userAccount"]["azureAdUserId"] = "0b5b2f7e-0000-4000-8000-000000000001".into();
    let mut defender = alert.clone();
    defender["serviceSource"] = "microsoftDefenderForEndpoint".into();
    defender["detectionSource"] = "antivirus".into();

    let n = normalizer();
    let before = run(&n, "GraphAlert", &stripped);
    assert!(ocsf(&before).get("actor").is_none(), "nothing names the user yet");
    // The detection (here from the UserRiskEvents stream) comes in.
    let det = &records(USER_RISK)[0];
    assert!(det.contains("25e1561f401e8f11f75c848d4e793834a2f52201978ae8702a3ff95d7833a191"));
    run(&n, "UserRiskEvents", det);

    let o = run(&n, "GraphAlert", &stripped);
    let e = ocsf(&o);
    assert_eq!(e["actor"]["user"]["uid"], "25abd89b-d67e-4d92-8a83-18174d645fa6");
    assert_eq!(e["actor"]["user"]["name"], "megan.bowen@fabrikam.example");
    assert_eq!(e["actor"]["user"]["full_name"], "Megan Bowen");
    assert_eq!(e["unmapped"]["user_restored_from"], "risk_detection");
    assert!(
        observed(&o, 4).contains(&"megan.bowen@fabrikam.example".to_string()),
        "the restored user is an observable"
    );

    // Another user's object id in the evidence: not replaced.
    let o = run(&n, "GraphAlert", &other_uid.to_string());
    let e = ocsf(&o);
    assert_eq!(e["actor"]["user"]["uid"], "0b5b2f7e-0000-4000-8000-000000000001");
    assert!(e["actor"]["user"].get("name").is_none());
    assert!(e["unmapped"].get("user_restored_from").is_none());
    // Not an Identity Protection alert: its provider id is no risk detection's.
    let o = run(&n, "GraphAlert", &defender.to_string());
    assert!(ocsf(&o).get("actor").is_none());
}

/// A Defender for Office 365 alert: the analysed message gives the email (header From from
/// P2, envelope sender from P1), its URLs as OCSF URLs and observables, and the delivery
/// facts in the evidence's data; the recipient's mailbox is the alert's user.
#[test]
fn phishing_alert_maps_the_analyzed_message() {
    let n = normalizer();
    let alert = r##"{"id":"fa1","tenantId":"t","title":"Email messages containing malicious URL",
        "severity":"high","status":"new","serviceSource":"microsoftDefenderForOffice365",
        "lastUpdateDateTime":"2026-11-27T00:00:00Z",
        "evidence":[{"@odata.type":"#microsoft.graph.security.analyzedMessageEvidence",
        "verdict":"malicious","networkMessageId":"5e8a-41",
        "internetMessageId":"<AB12@mail.example>","subject":"Invoice overdue",
        "senderIp":"198.51.100.23","recipientEmailAddress":"megan.bowen@fabrikam.example",
        "p1Sender":{"emailAddress":"bounce@mailer.example","displayName":null,"domainName":"mailer.example"},
        "p2Sender":{"emailAddress":"billing@contoso-pay.example","displayName":"Billing","domainName":"contoso-pay.example"},
        "deliveryAction":"Delivered","deliveryLocation":"Inbox/folder","antiSpamDirection":"Inbound",
        "urls":["https://contoso-pay.example/login","http://203.0.113.9/x"],"urlCount":2,
        "threats":["Phish"],"attachmentsCount":0},
        {"@odata.type":"#microsoft.graph.security.mailboxEvidence","verdict":"unknown",
        "primaryAddress":"megan.bowen@fabrikam.example","displayName":"Megan Bowen",
        "upn":"megan.bowen@fabrikam.example","userAccount":null}]}"##;
    let o = run(&n, "GraphAlert", alert);
    let e = ocsf(&o);
    let ev = &e["evidences"][0];
    assert_eq!(ev["name"], "analyzedMessageEvidence");
    assert_eq!(ev["email"]["from"], "billing@contoso-pay.example");
    assert_eq!(ev["email"]["smtp_from"], "bounce@mailer.example");
    assert_eq!(ev["email"]["to"][0], "megan.bowen@fabrikam.example");
    assert_eq!(ev["email"]["message_uid"], "<AB12@mail.example>");
    assert_eq!(
        ev["email"]["urls"][0]["url_string"],
        "https://contoso-pay.example/login"
    );
    assert_eq!(ev["email"]["urls"][1]["url_string"], "http://203.0.113.9/x");
    assert_eq!(ev["src_endpoint"]["ip"], "198.51.100.23");
    assert_eq!(ev["data"]["deliveryAction"], "Delivered");
    assert_eq!(ev["data"]["deliveryLocation"], "Inbox/folder");
    assert_eq!(ev["data"]["threats"][0], "Phish");
    assert_eq!(ev["data"]["attachmentsCount"], 0);
    let urls = observed(&o, 6);
    assert!(
        urls.contains(&"https://contoso-pay.example/login".to_owned()),
        "{urls:?}"
    );
    assert!(urls.contains(&"http://203.0.113.9/x".to_owned()), "{urls:?}");
    let emails = observed(&o, 5);
    assert!(emails.contains(&"billing@contoso-pay.example".to_owned()), "{emails:?}");
    assert!(
        emails.contains(&"megan.bowen@fabrikam.example".to_owned()),
        "{emails:?}"
    );
    // Without a user evidence, the recipient's mailbox is the alert's user.
    assert_eq!(e["actor"]["user"]["name"], "megan.bowen@fabrikam.example");
    assert_eq!(e["actor"]["user"]["full_name"], "Megan Bowen");
}
