//! Tests of the Defender streaming mapping against the sample records.

use super::super::testutil::*;

const ALERTS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/eventhub/defender_alert_info_evidence.json"
));
const LOGONS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/eventhub/defender_identity_logon_events.json"
));

const ALERT_ID: &str = "da638684112073311264_-1380212549";

#[test]
fn alert_info_then_evidence_then_duplicate() {
    let n = normalizer();
    let recs = records(ALERTS);
    let info = run(&n, "AdvancedHunting-AlertInfo", &recs[0]);
    let e = ocsf(&info);
    assert_eq!(info.normalized.class_uid, 2004);
    assert_eq!(e["type_uid"], 200_401);
    assert_eq!(info.severity_id, 4);
    assert_eq!(e["finding_info"]["uid"], ALERT_ID);
    assert_eq!(e["finding_info"]["title"], "Suspicious PowerShell command line");
    assert_eq!(e["finding_info"]["attacks"][0]["sub_technique"]["uid"], "T1059.001");
    assert_eq!(e["finding_info"]["attacks"][0]["sub_technique"]["name"], "PowerShell");
    assert_eq!(e["finding_info"]["attacks"][1]["technique"]["uid"], "T1027");
    assert_eq!(e["finding_info"]["attacks"][1]["tactic"]["name"], "Execution");
    assert_eq!(e["finding_info"]["analytic"]["type"], "EDR");
    assert_eq!(e["metadata"]["product"]["name"], "Microsoft Defender for Endpoint");
    assert!(
        e.get("status_id").is_none(),
        "no status on the stream, none in OCSF 1.5.0"
    );
    assert_eq!(info.entity_key.as_deref(), Some(ALERT_ID));
    assert_eq!(info.tenant.as_deref(), Some(TENANT));

    let user_ev = run(&n, "AdvancedHunting-AlertEvidence", &recs[1]);
    let e = ocsf(&user_ev);
    assert_eq!(e["type_uid"], 200_402, "evidence rows are updates");
    assert_eq!(user_ev.severity_id, 4, "severity carried over from AlertInfo");
    assert_eq!(e["evidences"][0]["user"]["name"], "megan.bowen@fabrikam.example");
    assert_eq!(e["actor"]["user"]["uid"], "25abd89b-d67e-4d92-8a83-18174d645fa6");
    assert_eq!(e["finding_info"]["types"], serde_json::json!(["Execution"]));
    assert_eq!(
        e["evidences"][0]["data"]["AdditionalFields"]["UserPrincipalName"],
        "megan.bowen@fabrikam.example"
    );

    let machine = run(&n, "AdvancedHunting-AlertEvidence", &recs[2]);
    let e = ocsf(&machine);
    assert_eq!(e["device"]["hostname"], "ws-fin-0423.corp.fabrikam.example");
    assert_eq!(e["evidences"][0]["device"]["ip"], "192.0.2.54");
    assert_eq!(
        e["evidences"][0]["src_endpoint"]["ip"], "192.0.2.54",
        "LocalIP (ocsf-mapping 5.7)"
    );
    assert_ne!(
        e["metadata"]["uid"],
        ocsf(&user_ev)["metadata"]["uid"],
        "evidence rows of one alert have distinct uids"
    );

    let process = run(&n, "AdvancedHunting-AlertEvidence", &recs[3]);
    let e = ocsf(&process);
    let p = &e["evidences"][0]["process"];
    assert_eq!(p["pid"], 7716);
    assert_eq!(
        p["file"]["path"],
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
    );
    assert_eq!(p["file"]["hashes"][1]["algorithm"], "SHA-256");
    assert!(p["cmd_line"].as_str().unwrap().contains("invoice_Q4.ps1"));
    assert!(
        observed(&process, 8).contains(&"2f8104fba08f6d3682da2bd8e369316bf60b7d9b3263896cf7460650a9bcc94f".to_owned())
    );

    let dup = run(&n, "AdvancedHunting-AlertInfo", &recs[4]);
    assert_eq!(
        ocsf(&dup)["metadata"]["uid"],
        ocsf(&info)["metadata"]["uid"],
        "a re-sent AlertInfo row is a duplicate"
    );
    assert_eq!(ocsf(&dup)["activity_id"], 1);
}

#[test]
fn evidence_without_alert_info_has_unknown_severity() {
    let n = normalizer();
    let o = run(&n, "AdvancedHunting-AlertEvidence", &records(ALERTS)[2]);
    assert_eq!(o.severity_id, 0);
    assert_eq!(ocsf(&o)["activity_id"], 2);
}

#[test]
fn identity_logon_kerberos_success() {
    let n = normalizer();
    let o = run(&n, "AdvancedHunting-IdentityLogonEvents", &records(LOGONS)[0]);
    let e = ocsf(&o);
    assert_eq!(o.normalized.class_uid, 3002);
    assert_eq!(e["type_uid"], 300_201);
    assert_eq!(e["status_id"], 1);
    assert_eq!(o.severity_id, 1);
    assert_eq!(e["auth_protocol_id"], 2);
    assert_eq!(e["user"]["name"], "megan.bowen@fabrikam.example");
    assert_eq!(e["user"]["uid"], "25abd89b-d67e-4d92-8a83-18174d645fa6");
    assert_eq!(e["user"]["uid_alt"], "S-1-5-21-1004336348-1177238915-682003330-1104");
    assert_eq!(e["user"]["domain"], "corp.fabrikam.example");
    assert_eq!(e["src_endpoint"]["ip"], "192.0.2.54");
    assert_eq!(e["src_endpoint"]["port"], 50544);
    assert_eq!(e["dst_endpoint"]["hostname"], "dc01.corp.fabrikam.example");
    assert_eq!(e["dst_endpoint"]["port"], 88);
    assert_eq!(e["service"]["name"], "Active Directory");
    assert_eq!(e["logon_type"], "Resource access");
    assert_eq!(e["unmapped"]["AdditionalFields"]["TO.DEVICE"], "FS01");
    assert_eq!(e["metadata"]["product"]["name"], "Microsoft Defender for Identity");
}

#[test]
fn identity_logon_ntlm_failure_with_empty_strings() {
    let n = normalizer();
    let o = run(&n, "AdvancedHunting-IdentityLogonEvents", &records(LOGONS)[1]);
    let e = ocsf(&o);
    assert_eq!(e["status_id"], 2);
    assert_eq!(e["status_detail"], "WrongPassword");
    assert_eq!(o.severity_id, 2);
    assert_eq!(e["auth_protocol_id"], 1);
    assert_eq!(e["user"]["name"], "administrator");
    assert_eq!(e["user"]["uid"], "S-1-5-21-1004336348-1177238915-682003330-500");
    assert!(e["user"].get("email_addr").is_none());
    assert!(e["src_endpoint"].get("port").is_none(), "Port \"\" is absent");
    assert_eq!(e["unmapped"]["ReportId"], "1931");
}

#[test]
fn cloud_logon_without_protocol() {
    let n = normalizer();
    let o = run(&n, "AdvancedHunting-IdentityLogonEvents", &records(LOGONS)[2]);
    let e = ocsf(&o);
    assert!(e.get("auth_protocol_id").is_none());
    assert_eq!(e["src_endpoint"]["location"]["country"], "NL");
    assert_eq!(e["src_endpoint"]["isp"], "example transit b.v.");
    assert!(e.get("dst_endpoint").is_none());
    assert_eq!(e["time"], 1_795_718_347_000i64);
}

#[test]
fn device_logon_events() {
    let n = normalizer();
    let rec = r#"{"time":"2026-11-27T09:41:40Z","tenantId":"d13c513a-42f8-4da1-97b1-165f0971b7c4",
        "category":"AdvancedHunting-DeviceLogonEvents","properties":{
        "Timestamp":"2026-11-27T09:40:00Z","DeviceId":"348d","DeviceName":"ws-fin-0423",
        "ActionType":"LogonFailed","LogonType":"RemoteInteractive","AccountName":"megan.bowen",
        "AccountDomain":"fabrikam","AccountSid":"S-1-5-21-1","Protocol":"Negotiate",
        "FailureReason":"InvalidUserNameOrPassword","RemoteIP":"203.0.113.9","RemotePort":51000,
        "ReportId":77}}"#;
    let o = run(&n, "AdvancedHunting-DeviceLogonEvents", rec);
    let e = ocsf(&o);
    assert_eq!(e["class_uid"], 3002);
    assert_eq!(e["logon_type_id"], 10);
    assert_eq!(e["is_remote"], true);
    assert_eq!(e["auth_protocol_id"], 99);
    assert_eq!(e["auth_protocol"], "Negotiate");
    assert_eq!(e["src_endpoint"]["ip"], "203.0.113.9");
    assert_eq!(e["dst_endpoint"]["hostname"], "ws-fin-0423");
    assert_eq!(e["unmapped"]["ReportId"], "77", "numeric ReportId kept as text");
    assert_eq!(e["metadata"]["product"]["name"], "Microsoft Defender for Endpoint");
}
