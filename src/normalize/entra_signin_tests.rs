//! Tests of the sign-in mapping.

use super::super::testutil::*;

const INTERACTIVE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/eventhub/signin_interactive.json"
));
const NONINTERACTIVE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/eventhub/signin_noninteractive.json"
));
const SP: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/eventhub/serviceprincipal_signin.json"
));
const MI: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/eventhub/managedidentity_signin.json"
));

#[test]
fn interactive_blocked_by_conditional_access() {
    let n = normalizer();
    let recs = records(INTERACTIVE);
    let o = run(&n, "SignInLogs", &recs[0]);
    let e = ocsf(&o);
    assert_eq!(o.normalized.class_uid, 3002);
    assert_eq!(e["type_uid"], 300_201);
    assert_eq!(e["category_uid"], 3);
    assert_eq!(e["status_id"], 2);
    assert_eq!(e["status"], "Failure");
    assert_eq!(e["status_code"], "53003");
    assert!(e["status_detail"].as_str().unwrap().contains("Conditional Access"));
    assert_eq!(o.severity_id, 3, "riskLevelDuringSignIn medium");
    assert_eq!(e["user"]["name"], "alex.wilber@fabrikam.example");
    assert_eq!(e["user"]["uid"], "3cbb7daa-64c1-44fa-88a7-c8252abc5619");
    assert_eq!(e["user"]["full_name"], "Alex Wilber");
    assert_eq!(e["user"]["type_id"], 1);
    assert_eq!(e["src_endpoint"]["ip"], "203.0.113.77");
    assert_eq!(e["src_endpoint"]["location"]["city"], "Sao Paulo");
    assert_eq!(e["src_endpoint"]["autonomous_system"]["number"], 64528);
    assert_eq!(e["service"]["name"], "Windows Azure Service Management API");
    assert_eq!(e["actor"]["app_name"], "Azure Portal");
    assert_eq!(e["is_mfa"], false);
    assert_eq!(e["logon_type_id"], 2);
    assert_eq!(e["session"]["uid"], "79793a67c9e2ed829af48d");
    assert_eq!(e["metadata"]["product"]["name"], "Microsoft Entra ID");
    assert_eq!(e["metadata"]["log_name"], "SignInLogs");
    assert_eq!(e["metadata"]["tenant_uid"], TENANT);
    assert_eq!(e["unmapped"]["conditionalAccessStatus"], "failure");
    assert_eq!(
        e["unmapped"]["appliedConditionalAccessPolicies"][0]["displayName"],
        "Block high-risk sign-ins"
    );
    assert_eq!(e["time"], 1_795_759_918_126i64);
    assert!(!o.time_assumed_utc);
    assert_eq!(o.tenant.as_deref(), Some(TENANT));
    assert_eq!(o.entity_key, None);
    assert!(observed(&o, 2).contains(&"203.0.113.77".to_owned()));
    assert!(observed(&o, 4).contains(&"alex.wilber@fabrikam.example".to_owned()));
    assert_eq!(e["raw_data"], recs[0].as_str());
    // deviceDetail has neither id nor name: no OCSF device, the OS is the client's.
    assert!(e.get("device").is_none());
    assert_eq!(e["src_endpoint"]["os"]["name"], "Linux");
    assert_eq!(e["unmapped"]["isCompliant"], false);
    assert_eq!(e["unmapped"]["isTenantRestricted"], false);
}

#[test]
fn without_resource_the_service_is_the_application() {
    let n = normalizer();
    let rec = r#"{"time":"2026-11-27T08:31:19Z","category":"NonInteractiveUserSignInLogs","properties":{"id":"s1","createdDateTime":"2026-11-27T08:31:19Z","userPrincipalName":"megan.bowen@fabrikam.example","appId":"d3590ed6-52b3-4102-aeff-aad2292ab01c","appDisplayName":"Microsoft Office","status":{"errorCode":0}}}"#;
    let o = run(&n, "NonInteractiveUserSignInLogs", rec);
    let e = ocsf(&o);
    assert_eq!(e["service"]["name"], "Microsoft Office");
    assert_eq!(e["service"]["uid"], "d3590ed6-52b3-4102-aeff-aad2292ab01c");
}

#[test]
fn interactive_success_with_mfa() {
    let n = normalizer();
    let o = run(&n, "SignInLogs", &records(INTERACTIVE)[1]);
    let e = ocsf(&o);
    assert_eq!(e["status_id"], 1);
    assert!(e.get("status_detail").is_none());
    assert_eq!(e["is_mfa"], true);
    assert_eq!(o.severity_id, 1);
    assert_eq!(
        e["unmapped"]["authenticationDetails"][1]["authenticationMethod"],
        "Mobile app notification"
    );
    assert!(e["message"].as_str().unwrap().ends_with("success"));
}

#[test]
fn noninteractive_quirks() {
    let n = normalizer();
    let recs = records(NONINTERACTIVE);
    let failed = run(&n, "NonInteractiveUserSignInLogs", &recs[1]);
    let e = ocsf(&failed);
    assert_eq!(e["status_code"], "50173");
    assert_eq!(e["unmapped"]["durationMs"], 0, "durationMs \"0\" as a number");
    assert_eq!(e["logon_type_id"], 99);
    assert_eq!(e["logon_type"], "Non-interactive");
    assert_eq!(failed.severity_id, 2);
    // Third record: US-style top-level time, but createdDateTime (with offset) wins.
    let lee = run(&n, "NonInteractiveUserSignInLogs", &recs[2]);
    assert_eq!(ocsf(&lee)["time"], 1_795_762_964_993i64);
    assert!(!lee.time_assumed_utc);
}

#[test]
fn us_style_time_when_created_missing() {
    let n = normalizer();
    let rec = records(NONINTERACTIVE)[2].replace("\"createdDateTime\": \"2026-11-27T07:02:44.9930000+00:00\",", "");
    let o = run(&n, "NonInteractiveUserSignInLogs", &rec);
    assert_eq!(ocsf(&o)["time"], 1_795_762_964_000i64);
    assert!(o.time_assumed_utc);
    assert_eq!(ocsf(&o)["metadata"]["original_time"], "11/27/2026 7:02:44 AM");
}

#[test]
fn service_principal_sign_in() {
    let n = normalizer();
    let recs = records(SP);
    let o = run(&n, "ServicePrincipalSignInLogs", &recs[1]);
    let e = ocsf(&o);
    assert_eq!(e["user"]["name"], "Fabrikam Payroll Sync");
    assert_eq!(e["user"]["uid"], "9fb932d4-f039-4722-96ff-82e389e3995a");
    assert_eq!(e["user"]["type_id"], 99);
    assert_eq!(e["user"]["type"], "ServicePrincipal");
    assert!(e["user"].get("email_addr").is_none());
    assert_eq!(e["actor"]["app_uid"], "b35331ce-af2e-49dd-87e3-55b26210b784");
    assert_eq!(e["status_code"], "7000215");
    assert_eq!(e["src_endpoint"]["ip"], "203.0.113.99");
    assert_eq!(e["unmapped"]["clientCredentialType"], "clientSecret");
}

#[test]
fn managed_identity_without_ip() {
    let n = normalizer();
    let o = run(&n, "ManagedIdentitySignInLogs", &records(MI)[0]);
    let e = ocsf(&o);
    assert_eq!(e["user"]["type"], "ManagedIdentity");
    assert_eq!(e["user"]["name"], "fwd-prod-aks-agentpool");
    assert!(e.get("src_endpoint").is_none(), "empty ip and zero location dropped");
    assert_eq!(e["service"]["name"], "Microsoft.EventHubs");
    assert_eq!(e["status_id"], 1);
    assert!(observed(&o, 2).is_empty());
}

#[test]
fn metadata_uid_is_deterministic() {
    let a = normalizer();
    let b = normalizer();
    let rec = &records(INTERACTIVE)[0];
    let x = run(&a, "SignInLogs", rec);
    let y = run(&b, "SignInLogs", rec);
    assert_eq!(ocsf(&x)["metadata"]["uid"], ocsf(&y)["metadata"]["uid"]);
    let other = run(&a, "SignInLogs", &records(INTERACTIVE)[1]);
    assert_ne!(ocsf(&x)["metadata"]["uid"], ocsf(&other)["metadata"]["uid"]);
}

#[test]
fn redacted_upn_is_restored_from_cache() {
    let n = normalizer();
    let recs = records(INTERACTIVE);
    run(&n, "SignInLogs", &recs[0]);
    let redacted = recs[0].replace("\"alex.wilber@fabrikam.example\"", "\"{PII Removed}\"");
    let o = run(&n, "SignInLogs", &redacted);
    assert_eq!(ocsf(&o)["user"]["name"], "alex.wilber@fabrikam.example");
    assert_eq!(ocsf(&o)["unmapped"]["user_restored_from"], "cache");
}

/// A user renamed: the sign-in under the new name is read first, a late sign-in from
/// before the rename (its event an hour older) after it. The cache keeps the name of the
/// newest event, whatever order the records came in: a redacted sign-in is restored with
/// the current name.
#[test]
fn the_restored_name_is_the_newest_events_not_the_last_read() {
    let n = normalizer();
    let recs = records(INTERACTIVE);
    let renamed = recs[0].replace("alex.wilber@fabrikam.example", "alex.new@fabrikam.example");
    run(&n, "SignInLogs", &renamed);
    let late = recs[0].replace("2026-11-27T06:11:58", "2026-11-27T05:11:58");
    assert_ne!(late, recs[0]);
    // Received a minute after the first.
    let mut m = crate::normalize::testutil::meta("SignInLogs");
    m.received_ms += 60_000;
    n.normalize(&m, late.as_bytes()).unwrap();
    let redacted = recs[0].replace("\"alex.wilber@fabrikam.example\"", "\"{PII Removed}\"");
    let o = run(&n, "SignInLogs", &redacted);
    assert_eq!(ocsf(&o)["user"]["name"], "alex.new@fabrikam.example");
    assert_eq!(ocsf(&o)["unmapped"]["user_restored_from"], "cache");
}

#[test]
fn adfs_sign_in_without_user_id() {
    let n = normalizer();
    let rec = r#"{"time":"2026-11-27T08:00:00Z","category":"ADFSSignInLogs",
        "resourceId":"/tenants/d13c513a-42f8-4da1-97b1-165f0971b7c4/providers/Microsoft.aadiam",
        "properties":{"id":"adfs-1","createdDateTime":"2026-11-27T08:00:00Z",
        "userPrincipalName":"lee.gu@fabrikam.example","ipAddress":"192.0.2.77",
        "status":{"errorCode":"300030","failureReason":"Invalid credentials"},
        "authenticationProtocol":"wsFederation","tokenIssuerType":"ADFederationServices"}}"#;
    let o = run(&n, "ADFSSignInLogs", rec);
    let e = ocsf(&o);
    assert_eq!(e["class_uid"], 3002);
    assert_eq!(e["user"]["name"], "lee.gu@fabrikam.example");
    assert_eq!(e["status_id"], 2);
    assert_eq!(e["status_code"], "300030");
    assert_eq!(e["auth_protocol_id"], 99);
    assert_eq!(e["auth_protocol"], "wsFederation");
    assert_eq!(o.tenant.as_deref(), Some(TENANT));
}
