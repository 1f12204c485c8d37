//! Tests of the AuditLogs and ProvisioningLogs mapping.

use super::super::testutil::*;
use super::*;

const AUDIT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/eventhub/auditlogs.json"
));

#[test]
fn password_reset_is_account_change() {
    let n = normalizer();
    let o = run(&n, "AuditLogs", &records(AUDIT)[0]);
    let e = ocsf(&o);
    assert_eq!(o.normalized.class_uid, 3001);
    assert_eq!(e["type_uid"], 300_104);
    assert_eq!(e["activity_name"], "Password Reset");
    assert_eq!(e["user"]["name"], "megan.bowen@fabrikam.example");
    assert_eq!(e["user"]["uid"], "25abd89b-d67e-4d92-8a83-18174d645fa6");
    assert_eq!(e["actor"]["user"]["name"], "secops.analyst@fabrikam.example");
    assert_eq!(e["src_endpoint"]["ip"], "192.0.2.31");
    assert_eq!(e["status_id"], 1);
    assert_eq!(o.severity_id, 1);
    assert_eq!(e["unmapped"]["Level"], "Informational");
    assert_eq!(e["unmapped"]["category"], "UserManagement");
    assert_eq!(e["metadata"]["correlation_uid"], "0335a82d-ee07-4027-bb0e-a080857012b4");
}

#[test]
fn failed_role_assignment_is_attach_policy_medium() {
    let n = normalizer();
    let o = run(&n, "AuditLogs", &records(AUDIT)[1]);
    let e = ocsf(&o);
    assert_eq!(e["class_uid"], 3001);
    assert_eq!(e["type_uid"], 300_107);
    assert_eq!(e["policies"][0]["name"], "Global Administrator");
    assert_eq!(e["policies"][0]["uid"], "62e90394-69f5-4237-9190-012177145e10");
    assert_eq!(e["status_id"], 2);
    assert_eq!(
        e["status_detail"],
        "Microsoft.Online.Workflows.ObjectAlreadyInRoleException"
    );
    assert_eq!(o.severity_id, 3);
    assert_eq!(
        e["unmapped"]["modifiedProperties"][0]["new_value"], "Global Administrator",
        "JSON string inside newValue decoded"
    );
    assert_eq!(e["actor"]["user"]["uid"], "3cbb7daa-64c1-44fa-88a7-c8252abc5619");
}

#[test]
fn app_secret_added_is_entity_management() {
    let n = normalizer();
    let o = run(&n, "AuditLogs", &records(AUDIT)[2]);
    let e = ocsf(&o);
    assert_eq!(e["class_uid"], 3004);
    assert_eq!(e["type_uid"], 300_403);
    assert_eq!(
        e["message"],
        "Update application \u{2013} Certificates and secrets management"
    );
    assert_eq!(e["entity"]["name"], "Fabrikam Payroll Sync");
    assert_eq!(e["entity"]["type"], "Application");
    assert_eq!(e["entity"]["type_id"], 99);
    let mods = &e["entity"]["data"]["modified_properties"];
    assert_eq!(mods[0]["name"], "KeyDescription");
    assert_eq!(mods[0]["new_value"].as_array().unwrap().len(), 2);
    assert_eq!(e["actor"]["app_name"], "Fabrikam Payroll Sync");
    assert_eq!(e["actor"]["user"]["uid"], "9fb932d4-f039-4722-96ff-82e389e3995a");
    assert_eq!(e["actor"]["user"]["type"], "ServicePrincipal");
    assert_eq!(
        e["unmapped"]["additionalDetails"]["User-Agent"],
        "python-requests/2.32.3"
    );
    assert!(e.get("src_endpoint").is_none());
}

#[test]
fn activity_tables() {
    assert_eq!(account_activity("Add user"), Some(1));
    assert_eq!(account_activity("Delete user "), Some(6));
    assert_eq!(account_activity("Add eligible member to role"), Some(7));
    assert_eq!(account_activity("Remove member from role"), Some(8));
    assert_eq!(account_activity("User registered security info"), Some(10));
    assert_eq!(account_activity("Admin deleted security info"), Some(11));
    assert_eq!(account_activity("Add member to group"), None);
    assert_eq!(entity_activity(Some("Add"), "Add member to group"), (1, None));
    assert_eq!(entity_activity(Some("Delete"), "Delete group"), (4, None));
    assert_eq!(entity_activity(Some("Update"), "Disable device"), (9, None));
    assert_eq!(
        entity_activity(Some("Restore"), "Restore group"),
        (99, Some("restore".into()))
    );
}

#[test]
fn audit_teaches_the_user_cache() {
    let n = normalizer();
    run(&n, "AuditLogs", &records(AUDIT)[0]);
    assert!(n.cached_users() >= 2);
}

#[test]
fn provisioning_log() {
    let n = normalizer();
    let rec = r#"{"time":"2026-11-27T10:00:00Z","category":"ProvisioningLogs",
        "resourceId":"/tenants/d13c513a-42f8-4da1-97b1-165f0971b7c4/providers/Microsoft.aadiam",
        "properties":{"id":"p1","activityDateTime":"2026-11-27T09:59:00Z",
        "provisioningAction":"create",
        "servicePrincipal":{"id":"sp1","displayName":"Workday to Entra"},
        "targetIdentity":{"id":"u1","displayName":"New Hire","identityType":"User"},
        "provisioningStatusInfo":{"status":"failure","errorInformation":{"errorCode":"X"}}}}"#;
    let o = run(&n, "ProvisioningLogs", rec);
    let e = ocsf(&o);
    assert_eq!(e["class_uid"], 3004);
    assert_eq!(e["type_uid"], 300_401);
    assert_eq!(e["entity"]["type_id"], 2);
    assert_eq!(e["status_id"], 2);
    assert_eq!(e["actor"]["app_name"], "Workday to Entra");
    assert_eq!(e["unmapped"]["errorInformation"]["errorCode"], "X");
    assert_eq!(o.tenant.as_deref(), Some(TENANT));
}

#[test]
fn user_lifecycle_and_group_changes() {
    let n = normalizer();
    let rec = |activity: &str, op: &str, target_type: &str| {
        format!(
            r#"{{"time":"2026-11-27T10:00:00Z","tenantId":"t","category":"AuditLogs","level":"Informational",
            "properties":{{"id":"x","activityDisplayName":"{activity}","activityDateTime":"2026-11-27T10:00:00Z",
            "operationType":"{op}","result":"success","category":"UserManagement",
            "initiatedBy":{{"user":{{"id":"a","userPrincipalName":"admin@fabrikam.example"}}}},
            "targetResources":[{{"id":"u1","displayName":"Target","type":"{target_type}",
            "userPrincipalName":{upn}}}]}}}}"#,
            upn = if target_type == "User" {
                "\"new.user@fabrikam.example\""
            } else {
                "null"
            }
        )
    };
    let o = run(&n, "AuditLogs", &rec("Add user", "Add", "User"));
    assert_eq!(ocsf(&o)["type_uid"], 300_101);
    assert_eq!(ocsf(&o)["user"]["name"], "new.user@fabrikam.example");
    let o = run(&n, "AuditLogs", &rec("Delete user", "Delete", "User"));
    assert_eq!(ocsf(&o)["type_uid"], 300_106);
    let o = run(&n, "AuditLogs", &rec("Add member to group", "Add", "Group"));
    let e = ocsf(&o);
    assert_eq!(e["type_uid"], 300_401);
    assert_eq!(e["entity"]["type_id"], 3);
    let o = run(&n, "AuditLogs", &rec("Restore group", "Restore", "Group"));
    assert_eq!(ocsf(&o)["type_uid"], 300_499);
    assert_eq!(ocsf(&o)["activity_name"], "restore");
}
