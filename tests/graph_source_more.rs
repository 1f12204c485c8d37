//! The Graph security input, continued: restart from the committed watermark, certificate
//! assertions, managed and workload identity, token expiry, noise filters and the Identity
//! Protection sources (risk detections, risky users) with their state changes.

#[path = "support/graph_emulator/mod.rs"]
mod graph_emulator;
#[path = "support/graph_harness.rs"]
mod graph_harness;

use std::path::Path;
use std::time::Duration;

use graph_emulator::{cert_der, sample, Emulator, Fault};
use graph_harness::*;
use m365_forwarder::event::EventKind;
use serde_json::{json, Value};

const SECS: Duration = Duration::from_secs(20);

fn incidents() -> Vec<Value> {
    let mut v = sample("incidents_page1.json");
    v.extend(sample("incidents_page2.json"));
    v
}

/// The incidents as another tenant's: `tenantId` rewritten in incidents and alerts.
fn for_tenant(mut list: Vec<Value>, tenant: &str) -> Vec<Value> {
    for i in list.iter_mut() {
        i["tenantId"] = json!(tenant);
        for a in i["alerts"].as_array_mut().into_iter().flatten() {
            a["tenantId"] = json!(tenant);
        }
    }
    list
}

fn auth_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/graph/auth")
        .join(name)
        .display()
        .to_string()
}

/// (h) Run 1's receiver goes down after two pages: only their state is committed. Data
/// changes while the forwarder is down. Run 2 resumes from the committed state: the third
/// page, the change and the new incident arrive; nothing delivered before is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h_restart_resumes_from_the_committed_watermark_without_loss() {
    let emu = Emulator::start().await;
    emu.add_tenant(TA, "client-a", "secret-a", incidents());
    let dir = tempfile::tempdir().unwrap();
    let tenant = secret_tenant(TA, "client-a", "secret-a");
    let cfg = || config(&emu, dir.path(), "graph_incidents", "page_size = 2", &tenant);

    let store = open_store(dir.path());
    let run1 = start(cfg(), store.clone(), 2);
    wait_until("two pages delivered and a later poll", SECS, || {
        run1.count() >= 7 && cycles(&emu, TA) >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got1 = run1.got();
    let report = run1.finish().await;
    assert!(report.unacknowledged_batches > 0, "page 3 was never delivered");
    let incidents1 = got1.iter().filter(|g| g.kind == EventKind::Incident).count();
    assert_eq!(incidents1, 4, "pages 1 and 2: {:?}", tally(&got1));
    let cp = checkpoint(&store, TA, "incidents").expect("committed after page 2");
    assert_eq!(
        cp["watermark"], "2026-11-20T00:00:00.000000Z",
        "the first poll never completed delivery"
    );
    assert_eq!(cp["items"].as_object().unwrap().len(), 4);
    drop(store);

    // While the forwarder is down: 3107 is assigned, 3111 is new.
    let mut changed = incidents().into_iter().find(|i| i["id"] == "3107").unwrap();
    changed["assignedTo"] = json!("soc-tier2@fabrikam.example");
    changed["status"] = json!("inProgress");
    changed["lastUpdateDateTime"] = json!("2026-11-28T08:00:00Z");
    emu.upsert_incident(TA, changed);
    let mut new = incidents().into_iter().find(|i| i["id"] == "3110").unwrap();
    new["id"] = json!("3111");
    new["status"] = json!("active");
    new["lastUpdateDateTime"] = json!("2026-11-28T08:30:00Z");
    emu.upsert_incident(TA, new);
    let before = emu.requests(TA).len();

    let store = open_store(dir.path());
    let run2 = start(cfg(), store.clone(), usize::MAX);
    wait_until("the rest", SECS, || {
        checkpoint(&store, TA, "incidents").is_some_and(|c| c["watermark"] == "2026-11-28T08:30:00.000000Z")
    })
    .await;
    let got2 = run2.got();
    run2.finish().await;

    assert_eq!(
        emu.requests(TA)[before].filter.as_deref(),
        Some("lastUpdateDateTime ge 2026-11-19T23:55:00Z"),
        "run 2 starts from the committed watermark"
    );
    let mut all = got1.clone();
    all.extend(got2.iter().cloned());
    let mut inc_ids: Vec<&str> = all
        .iter()
        .filter(|g| g.kind == EventKind::Incident)
        .map(|g| g.id.as_str())
        .collect();
    inc_ids.sort();
    inc_ids.dedup();
    assert_eq!(
        inc_ids,
        ["3106", "3107", "3108", "3109", "3110", "3111"],
        "nothing lost"
    );
    assert_eq!(ids_of(&all, EventKind::Alert).len(), 6);
    let again: Vec<&Got> = got2
        .iter()
        .filter(|g| got1.iter().any(|o| o.kind == g.kind && o.id == g.id))
        .collect();
    assert_eq!(again.len(), 1, "only the changed incident again: {again:?}");
    assert_eq!(again[0].id, "3107");
    assert_eq!(again[0].change.as_deref(), Some("updated"));
    assert_eq!(again[0].fields, ["assignedTo", "status"]);
    assert!(tally(&got2).values().all(|&n| n == 1));
}

fn ids_of(got: &[Got], kind: EventKind) -> Vec<String> {
    let mut v: Vec<String> = got.iter().filter(|g| g.kind == kind).map(|g| g.id.clone()).collect();
    v.sort();
    v.dedup();
    v
}

/// (i) Certificate credentials: RS256 + x5t and PS256 + x5t#S256 assertions are checked by
/// the emulator (header, signature, aud, iss, sub, exp) and accepted; a tenant whose
/// registered certificate differs is refused and gets nothing, without stopping the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i_certificate_assertion_is_accepted_by_the_emulator() {
    let emu = Emulator::start().await;
    let tc = "0c0c0c0c-1111-4222-8333-444444444444";
    for (t, cert) in [(TA, "app_cert.pem"), (TB, "other_cert.pem"), (tc, "other_cert.pem")] {
        emu.add_tenant(t, &format!("client-{t}"), "unused", for_tenant(incidents(), t));
        emu.with_tenant(t, |d| {
            d.secret = None;
            d.cert_der = Some(cert_der(Path::new(&auth_file(cert))));
        });
    }
    let tenant = |t: &str, cert: &str, key: &str, alg: &str| {
        format!(
            "[[sources.graph.tenants]]\ntenant_id = \"{t}\"\nclient_id = \"client-{t}\"\nauth = \"certificate\"\ncertificate_path = \"{}\"\nprivate_key_path = \"{}\"\nassertion_algorithm = \"{alg}\"\n",
            auth_file(cert),
            auth_file(key)
        )
    };
    let tenants = [
        tenant(TA, "app_cert.pem", "app_key.pem", "RS256"),
        tenant(TB, "other_cert.pem", "other_key.pem", "PS256"),
        tenant(tc, "app_cert.pem", "app_key.pem", "RS256"),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&emu, dir.path(), "graph_incidents", "", &tenants);
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    wait_until("A and B polled, C refused twice", SECS, || {
        run.count() >= 22 && emu.token_requests(tc).len() >= 2
    })
    .await;
    let got = run.got();
    let c_errors = run.metric("graph_poll_errors", &["graph", tc, "auth"]);
    run.finish().await;

    let a = &emu.token_requests(TA)[0];
    assert_eq!(
        (a.grant.as_str(), a.alg.as_deref(), a.accepted),
        ("assertion", Some("RS256"), true)
    );
    let b = &emu.token_requests(TB)[0];
    assert_eq!(
        (b.grant.as_str(), b.alg.as_deref(), b.accepted),
        ("assertion", Some("PS256"), true)
    );
    let c = &emu.token_requests(tc)[0];
    assert!(!c.accepted);
    assert!(c.error.as_deref().unwrap().contains("thumbprint"), "{:?}", c.error);
    assert!(c_errors >= 1.0, "the refusal is reported as an auth error");
    assert!(emu.requests(tc).is_empty(), "no Graph call without a token");
    let per = |t: &str| got.iter().filter(|g| g.tenant.as_deref() == Some(t)).count();
    assert_eq!((per(TA), per(TB), per(tc)), (11, 11, 0));
}

/// Managed identity (IMDS-style endpoint) and workload identity (federated token file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_and_workload_identity_get_tokens() {
    let emu = Emulator::start().await;
    emu.add_tenant(TA, "mi-client", "unused", incidents());
    emu.with_tenant(TA, |d| d.managed_identity = Some("mi-client".into()));
    emu.add_tenant(TB, "wi-client", "unused", sample("incidents_page2.json"));
    emu.with_tenant(TB, |d| d.federated_token = Some("eyJfederated.token.fromk8s".into()));
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "eyJfederated.token.fromk8s\n").unwrap();
    let tenants = format!(
        "[[sources.graph.tenants]]\ntenant_id = \"{TA}\"\nclient_id = \"mi-client\"\nauth = \"managed_identity\"\nmanaged_identity_endpoint = \"{base}/metadata/identity/oauth2/token\"\n\
         [[sources.graph.tenants]]\ntenant_id = \"{TB}\"\nclient_id = \"wi-client\"\nauth = \"workload_identity\"\nfederated_token_file = \"{f}\"\n",
        base = emu.base,
        f = token_file.display()
    );
    let cfg = config(&emu, dir.path(), "graph_incidents", "", &tenants);
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    wait_until("both tenants", SECS, || run.count() >= 11 + 4).await;
    run.finish().await;
    let a = &emu.token_requests(TA)[0];
    assert_eq!((a.grant.as_str(), a.accepted), ("managed_identity", true));
    let b = &emu.token_requests(TB)[0];
    assert_eq!((b.grant.as_str(), b.accepted), ("federated", true));
}

/// An expired token: Graph's 401 makes the client fetch a new token once and succeed. Two
/// 401s in a row are reported as an `unauthorized` error, and the next poll recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refreshed_once_and_a_second_401_is_reported() {
    let emu = Emulator::start().await;
    emu.add_tenant(TA, "client-a", "secret-a", incidents());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &emu,
        dir.path(),
        "graph_incidents",
        "",
        &secret_tenant(TA, "client-a", "secret-a"),
    );
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    wait_until("first poll", SECS, || run.count() >= 11).await;
    emu.expire_tokens(TA);
    let n = emu.requests(TA).len();
    wait_until("401 then 200", SECS, || {
        let r = emu.requests(TA);
        r.len() >= n + 2 && r[n].status == 401 && r[n + 1].status == 200
    })
    .await;
    assert_eq!(emu.token_requests(TA).len(), 2, "one refresh");
    emu.push_fault(TA, Fault::Unauthorized);
    emu.push_fault(TA, Fault::Unauthorized);
    wait_until("the error and a recovered poll", SECS, || {
        run.metric("graph_poll_errors", &["graph", TA, "unauthorized"]) == 1.0
            && emu
                .requests(TA)
                .last()
                .is_some_and(|r| r.status == 200 && emu.requests(TA).len() > n + 4)
    })
    .await;
    assert_eq!(run.count(), 11, "nothing re-sent");
    run.finish().await;
}

/// Noise filters of a tenant drop objects before they are sent and count them by filter;
/// 5xx answers are retried, a 400 is reported and the next poll starts over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_filters_drop_before_sending_and_count() {
    let emu = Emulator::start().await;
    emu.add_tenant(TA, "client-a", "secret-a", incidents());
    let dir = tempfile::tempdir().unwrap();
    // The service fails first: two 5xx are retried with backoff, a 400 ends that poll.
    emu.push_fault(TA, Fault::ServerError(500));
    emu.push_fault(TA, Fault::ServerError(504));
    emu.push_fault(TA, Fault::BadRequest);
    let tenant = format!(
        "{}filters.exclude_service_sources = [\"azureAdIdentityProtection\"]\n",
        secret_tenant(TA, "client-a", "secret-a")
    );
    let cfg = config(
        &emu,
        dir.path(),
        "graph_incidents",
        "filters.include_severities = [\"high\"]",
        &tenant,
    );
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    wait_until("three polls", SECS, || cycles(&emu, TA) >= 3 && run.count() >= 4).await;
    let got = run.got();
    let filtered = run.metric("graph_filtered", &["graph", TA, "service_source"]);
    let bad_request = run.metric("graph_poll_errors", &["graph", TA, "bad_request"]);
    run.finish().await;
    let statuses: Vec<u16> = emu.requests(TA).iter().take(4).map(|r| r.status).collect();
    assert_eq!(statuses, [500, 504, 400, 200]);
    assert_eq!(bad_request, 1.0, "the 400 is reported, then the next poll succeeds");
    // The tenant's own filters replace the source's (severity high would keep nothing here).
    assert_eq!(ids_of(&got, EventKind::Incident), ["3109", "3110"]);
    assert_eq!(ids_of(&got, EventKind::Alert).len(), 2);
    assert!(got
        .iter()
        .all(|g| g.raw["serviceSource"] != "azureAdIdentityProtection"));
    assert_eq!(filtered, 7.0, "3 incidents and 4 alerts, counted once each");
}

/// (j) A risky user who remediates (secure password change) yields one `remediated` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j_remediated_risky_user_yields_a_change_event() {
    let emu = Emulator::start().await;
    emu.add_tenant(TA, "client-a", "secret-a", Vec::new());
    emu.with_tenant(TA, |d| d.risky_users = sample("risky_users.json"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &emu,
        dir.path(),
        "graph_risky_users",
        "",
        &secret_tenant(TA, "client-a", "secret-a"),
    );
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    wait_until("three risky users", SECS, || run.count() >= 3).await;
    let mut user = sample("risky_users.json").remove(0);
    assert_eq!(user["riskState"], "atRisk");
    user["riskState"] = json!("remediated");
    user["riskLevel"] = json!("none");
    user["riskDetail"] = json!("userPerformedSecuredPasswordChange");
    user["riskLastUpdatedDateTime"] = json!("2026-11-28T12:00:00Z");
    emu.upsert_risky_user(TA, user.clone());
    wait_until("the remediation", SECS, || run.count() >= 4).await;
    let polls = cycles(&emu, TA);
    wait_until("two more polls", SECS, || cycles(&emu, TA) >= polls + 2).await;
    let got = run.got();
    run.finish().await;

    assert_eq!(got.len(), 4);
    assert!(got[..3]
        .iter()
        .all(|g| g.change.as_deref() == Some("created") && g.kind == EventKind::RiskState));
    let e = &got[3];
    assert_eq!(e.id, user["id"].as_str().unwrap());
    assert_eq!(e.change.as_deref(), Some("remediated"));
    assert_eq!(e.fields, ["riskDetail", "riskLevel", "riskState"]);
    let ocsf = e.ocsf.as_ref().unwrap();
    assert_eq!(ocsf["unmapped"]["change_type"], "remediated");
    let first = &emu.requests(TA)[0];
    assert_eq!(first.path, "/beta/identityProtection/riskyUsers");
    assert_eq!(
        first.query,
        "$filter=riskLastUpdatedDateTime%20ge%202026-11-19T23:55:00Z"
    );
}

/// A tenant configured by its domain name: risky users carry no `tenantId`, so they are
/// stamped with the tenant's GUID as the access token names it (`tid`), the id the Event
/// Hub records carry and the user cache and tenant routes key by, not with the domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_without_a_tenant_id_get_the_tenant_guid_when_the_domain_is_configured() {
    let emu = Emulator::start().await;
    emu.add_tenant(TA, "client-a", "secret-a", Vec::new());
    emu.add_domain("contoso.onmicrosoft.com", TA);
    emu.with_tenant(TA, |d| d.risky_users = sample("risky_users.json"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &emu,
        dir.path(),
        "graph_risky_users",
        "",
        &secret_tenant("Contoso.onmicrosoft.com", "client-a", "secret-a"),
    );
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    wait_until("three risky users", SECS, || run.count() >= 3).await;
    let got = run.got();
    run.finish().await;

    assert_eq!(emu.token_requests(TA).len(), 1, "the domain named the tenant");
    for g in &got {
        assert_eq!(g.tenant.as_deref(), Some(TA), "{}", g.id);
        assert_eq!(g.ocsf.as_ref().unwrap()["metadata"]["tenant_uid"], TA);
    }
}

/// Risk detections: incremental on lastUpdatedDateTime, a title filter, and a dismissal
/// as a `dismissed` change; a 429 without Retry-After (Identity Protection) backs off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risk_detections_are_incremental_with_state_changes() {
    let emu = Emulator::start().await;
    emu.add_tenant(TA, "client-a", "secret-a", Vec::new());
    let detections = sample("risk_detections.json");
    emu.with_tenant(TA, |d| d.risk_detections = detections.clone());
    emu.push_fault(
        TA,
        Fault::Throttle {
            status: 429,
            retry_after: None,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &emu,
        dir.path(),
        "graph_risk_detections",
        "filters.exclude_titles = [\"leaked*\"]",
        &secret_tenant(TA, "client-a", "secret-a"),
    );
    let kept = detections
        .iter()
        .filter(|d| d["riskEventType"] != "leakedCredentials")
        .count();
    assert!(kept < detections.len());
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    wait_until("detections", SECS, || run.count() >= kept).await;
    let mut d = detections.iter().find(|d| d["riskState"] == "atRisk").unwrap().clone();
    d["riskState"] = json!("dismissed");
    d["riskDetail"] = json!("adminDismissedAllRiskForUser");
    d["lastUpdatedDateTime"] = json!("2026-11-28T13:00:00Z");
    emu.upsert_risk_detection(TA, d.clone());
    wait_until("the dismissal", SECS, || run.count() > kept).await;
    let got = run.got();
    let filtered = run.metric("graph_filtered", &["graph", TA, "title"]);
    run.finish().await;

    let reqs = emu.requests(TA);
    assert_eq!((reqs[0].status, reqs[1].status), (429, 200));
    assert!(
        reqs[1].at - reqs[0].at >= Duration::from_millis(25),
        "backed off before resending"
    );
    assert_eq!(reqs[1].query, "$filter=lastUpdatedDateTime%20ge%202026-11-19T23:55:00Z");
    assert_eq!(got.len(), kept + 1);
    assert!(got.iter().all(|g| g.kind == EventKind::RiskDetection));
    assert_eq!(got[kept].id, d["id"].as_str().unwrap());
    assert_eq!(got[kept].change.as_deref(), Some("dismissed"));
    assert_eq!(filtered, (detections.len() - kept) as f64);
}

/// `$expand=alerts` keeps answering 500 (very large incidents): after the retries the
/// poller lists incidents without it and reads each incident's alerts from `alerts_v2`;
/// every incident and alert still arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expand_failures_fall_back_to_alerts_per_incident() {
    let emu = Emulator::start().await;
    emu.add_tenant(TA, "client-a", "secret-a", incidents());
    emu.with_tenant(TA, |d| d.expand_failures = 3);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &emu,
        dir.path(),
        "graph_incidents",
        "max_retries = 2",
        &secret_tenant(TA, "client-a", "secret-a"),
    );
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    wait_until("events and a second poll", SECS, || {
        run.count() >= 11 && cycles(&emu, TA) >= 2
    })
    .await;
    let polls = cycles(&emu, TA);
    wait_until("one more poll", SECS, || cycles(&emu, TA) > polls).await;
    let got = run.got();
    run.finish().await;

    let reqs = emu.requests(TA);
    assert_eq!(reqs[..3].iter().map(|r| r.status).collect::<Vec<_>>(), [500, 500, 500]);
    assert!(
        reqs[3].query.starts_with("$filter=lastUpdateDateTime"),
        "no $expand: {}",
        reqs[3].query
    );
    let per_incident = reqs.iter().filter(|r| r.path == "/beta/security/alerts_v2").count();
    assert!(per_incident >= 5, "{per_incident} alerts_v2 requests");
    assert!(reqs.iter().any(|r| r.filter.as_deref() == Some("incidentId eq '3109'")));
    assert!(
        reqs[3..].iter().all(|r| !r.query.contains("$expand")),
        "the fallback is kept"
    );
    assert_eq!(ids_of(&got, EventKind::Incident).len(), 5);
    assert_eq!(ids_of(&got, EventKind::Alert).len(), 6);
    assert!(tally(&got).values().all(|&n| n == 1), "{:?}", tally(&got));
    let i3109 = got
        .iter()
        .find(|g| g.kind == EventKind::Incident && g.id == "3109")
        .unwrap();
    assert_eq!(
        i3109.raw["alerts"].as_array().unwrap().len(),
        2,
        "alerts put back into the incident"
    );
}

/// The fallback ends in the middle of a walk begun without `$expand` (its nextLinks stay
/// unexpanded): the later pages' incidents still get their alerts from `alerts_v2`, so
/// no incident is sent as changed to "no alerts" and every alert comes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_that_ends_mid_walk_still_reads_every_alert() {
    let emu = Emulator::start().await;
    emu.add_tenant(TA, "client-a", "secret-a", incidents());
    emu.with_tenant(TA, |d| d.expand_failures = 3);
    let dir = tempfile::tempdir().unwrap();
    // One incident per page, two requests a second: the walk lasts well past the fallback's
    // one second.
    let cfg = config(
        &emu,
        dir.path(),
        "graph_incidents",
        "max_retries = 2\npage_size = 1\nexpand_fallback_secs = 1\nrequests_per_minute = 120\nburst = 1",
        &secret_tenant(TA, "client-a", "secret-a"),
    );
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    let expanded = |emu: &Emulator| {
        emu.requests(TA)
            .iter()
            .filter(|r| r.path == "/beta/security/incidents" && r.query.starts_with("$expand") && r.status == 200)
            .count()
    };
    // A later poll with `$expand` back, walked to its end.
    wait_until("events and a poll with $expand back", Duration::from_secs(40), || {
        run.count() >= 11 && expanded(&emu) >= 2
    })
    .await;
    let got = run.got();
    run.finish().await;

    let reqs = emu.requests(TA);
    let walk_end = reqs
        .iter()
        .position(|r| r.path == "/beta/security/incidents" && r.query.starts_with("$expand") && r.status == 200)
        .unwrap_or_else(|| {
            panic!(
                "expansion came back: {:?}",
                reqs.iter()
                    .map(|r| (r.path.clone(), r.query.clone(), r.status))
                    .collect::<Vec<_>>()
            )
        });
    let alerts_v2 = |rs: &[graph_emulator::Logged]| rs.iter().filter(|r| r.path == "/beta/security/alerts_v2").count();
    assert_eq!(
        alerts_v2(&reqs[..walk_end]),
        5,
        "every incident of the first walk got its alerts"
    );
    assert_eq!(ids_of(&got, EventKind::Incident).len(), 5);
    assert_eq!(ids_of(&got, EventKind::Alert).len(), 6);
    assert!(tally(&got).values().all(|&n| n == 1), "{:?}", tally(&got));
    assert!(got.iter().all(|g| g.change.as_deref() == Some("created")));
}

/// An update Graph lists later than the overlap allows (its time an hour behind the
/// watermark when it first shows): the polls pass it, the deep re-scan finds it and sends
/// it once; what was already sent is not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deep_rescan_finds_an_update_listed_late_and_sends_nothing_twice() {
    let emu = Emulator::start().await;
    let list = incidents();
    emu.add_tenant(TA, "client-a", "secret-a", list.clone());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &emu,
        dir.path(),
        "graph_incidents",
        "rescan_interval_secs = 2",
        &secret_tenant(TA, "client-a", "secret-a"),
    );
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    wait_until("the first poll", SECS, || run.count() >= 11).await;
    // Incident 3106 resolved at 08:44, an hour before the newest time read (09:44, the
    // watermark): listed only now, long past the 5-minute overlap.
    let mut late = list.iter().find(|i| i["id"] == "3106").unwrap().clone();
    late["status"] = json!("resolved");
    late["lastUpdateDateTime"] = json!("2026-11-27T08:44:11.27Z");
    emu.upsert_incident(TA, late);
    wait_until("the re-scan's find", SECS, || run.count() >= 12).await;
    let polls = cycles(&emu, TA);
    wait_until("two more polls", SECS, || cycles(&emu, TA) >= polls + 2).await;
    let got = run.got();
    let found = run.metric("graph_rescan_found", &["graph", TA]);
    let rescans = run.metric("graph_rescans", &["graph", TA]);
    run.finish().await;

    assert_eq!(got.len(), 12, "{:?}", tally(&got));
    let e = &got[11];
    assert_eq!((e.id.as_str(), e.change.as_deref()), ("3106", Some("resolved")));
    assert_eq!(found, 1.0);
    assert!(rescans >= 1.0);
    let reqs = emu.requests(TA);
    assert!(
        reqs.iter().any(|r| r.query.contains("ge%202026-11-26T09:44:11Z")),
        "a poll read 24 h behind the watermark"
    );
    assert!(reqs[0].query.contains("ge%202026-11-19T23:55:00Z"), "{}", reqs[0].query);
}

/// An incident open for longer than the state retention (30 days): its alerts were last
/// updated before the retention, but they come with every change of the incident. A new
/// alert on it is one `created` alert and the incident `updated`; the old alerts are not
/// sent again as new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_alerts_of_a_long_open_incident_are_not_sent_again_as_created() {
    let emu = Emulator::start().await;
    let mut list = incidents();
    let inc = list.iter_mut().find(|i| i["id"] == "3108").unwrap();
    let old_alerts = inc["alerts"].as_array().unwrap().len();
    assert!(old_alerts >= 1);
    for a in inc["alerts"].as_array_mut().unwrap() {
        a["createdDateTime"] = json!("2026-09-01T08:00:00Z");
        a["lastUpdateDateTime"] = json!("2026-09-02T08:00:00Z");
    }
    let mut inc = inc.clone();
    emu.add_tenant(TA, "client-a", "secret-a", list);
    let dir = tempfile::tempdir().unwrap();
    let tenant = secret_tenant(TA, "client-a", "secret-a");
    let run = start(
        config(&emu, dir.path(), "graph_incidents", "", &tenant),
        open_store(dir.path()),
        usize::MAX,
    );
    wait_until("first poll delivered", SECS, || {
        run.count() >= 11 && cycles(&emu, TA) >= 2
    })
    .await;

    let mut late = inc["alerts"][0].clone();
    late["id"] = json!("ad5e1a7e0d0c4b1f8a2e9c3d4f5a6b7c");
    late["createdDateTime"] = json!("2026-11-30T07:59:00Z");
    late["lastUpdateDateTime"] = json!("2026-11-30T08:00:00Z");
    inc["alerts"].as_array_mut().unwrap().push(late);
    inc["lastUpdateDateTime"] = json!("2026-11-30T08:00:05Z");
    let polls = cycles(&emu, TA);
    emu.upsert_incident(TA, inc);
    wait_until("the new alert", SECS, || run.count() >= 13).await;
    wait_until("three more polls", SECS, || cycles(&emu, TA) >= polls + 4).await;
    let got = run.got();
    run.finish().await;

    let after: Vec<(EventKind, &str, Option<&str>)> = got[11..]
        .iter()
        .map(|g| (g.kind, g.id.as_str(), g.change.as_deref()))
        .collect();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.contains(&(EventKind::Alert, "ad5e1a7e0d0c4b1f8a2e9c3d4f5a6b7c", Some("created"))));
    assert!(after.contains(&(EventKind::Incident, "3108", Some("updated"))));
}
