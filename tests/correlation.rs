//! The same detection through Graph and through Event Hub: the Graph alert
//! `da638684112073311264_-1380212549` is also a Defender `AdvancedHunting-AlertInfo` row, and
//! two Graph risk detections are also `UserRiskEvents` records (tests/data). The later copy
//! names the first (`unmapped.correlated_via`, `unmapped.correlated_uid`); with
//! `normalize.suppress_duplicate_detections` it is dropped, acknowledged and counted.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use m365_forwarder::config::Config;
use m365_forwarder::pipeline::Pipeline;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const ALERT: &str = "da638684112073311264_-1380212549";
const RISKS: [&str; 2] = [
    "25e1561f401e8f11f75c848d4e793834a2f52201978ae8702a3ff95d7833a191",
    "1fd97593a3692b1544539a2e43326a96fad48df790a5627278bd0bfa3c567042",
];

struct Out {
    events: Vec<Value>,
    metrics: String,
    unacknowledged: u64,
}

async fn run(dir: &Path, suppress: bool) -> Out {
    let out = dir.join("out.ndjson");
    let paths: Vec<String> = [
        "graph/incidents_page1.json",
        "graph/incidents_page2.json",
        "graph/risk_detections.json",
        "eventhub/defender_alert_info_evidence.json",
        "eventhub/user_risk_events.json",
    ]
    .iter()
    .map(|p| format!("{:?}", support::data(p).display().to_string()))
    .collect();
    let text = format!(
        "data_dir = {data:?}\n[api]\nenabled = false\n\
         [pipeline]\nnormalize_workers = 1\ncheckpoint_interval_ms = 50\n\
         [normalize]\nraw_data = \"drop\"\nsuppress_duplicate_detections = {suppress}\n\
         [sources.in]\ntype = \"replay\"\npaths = [{paths}]\n\
         [sinks.out]\ntype = \"file\"\npath = {out:?}\nencoding = \"ocsf\"\n",
        data = dir.join("data").display().to_string(),
        paths = paths.join(", "),
        out = out.display().to_string(),
    );
    let config = Config::from_str(&text, &dir.join("test.toml")).unwrap();
    let p = Pipeline::new(config);
    let metrics = p.metrics();
    let report = tokio::time::timeout(Duration::from_secs(60), p.run(CancellationToken::new()))
        .await
        .expect("finished")
        .unwrap();
    let events = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    Out {
        events,
        metrics: metrics.encode(),
        unacknowledged: report.unacknowledged_batches,
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("m365fwd_{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Detection Findings by their finding uid, in output order (Defender `AlertEvidence` rows
/// share their alert's uid: they are the evidence, not another copy of the alert).
fn findings(events: &[Value]) -> HashMap<String, Vec<&Value>> {
    let mut m: HashMap<String, Vec<&Value>> = HashMap::new();
    for e in events
        .iter()
        .filter(|e| e["class_uid"] == 2004 && e["metadata"]["log_name"] != "AdvancedHunting-AlertEvidence")
    {
        if let Some(uid) = e["finding_info"]["uid"].as_str() {
            m.entry(uid.to_string()).or_default().push(e);
        }
    }
    m
}

fn from_graph(e: &Value) -> bool {
    e["metadata"]["log_provider"] == "Microsoft Graph"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detection_seen_through_graph_and_event_hub_is_correlated() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), false).await;
    assert_eq!(o.unacknowledged, 0);
    let f = findings(&o.events);
    let mut later = 0;
    for id in std::iter::once(ALERT).chain(RISKS) {
        let copies = &f[id];
        // The Graph files are replayed first: the Graph copy leads, the Event Hub copies
        // (the AlertInfo row arrives twice, a re-delivery) follow and name it.
        assert!(copies.len() >= 2, "{id}: {} copies", copies.len());
        let first = copies[0];
        assert!(from_graph(first), "{id}: the Graph copy is first");
        assert!(first["unmapped"].get("correlated_via").is_none(), "{id}: first copy");
        for c in &copies[1..] {
            assert!(!from_graph(c), "{id}: one Graph copy");
            assert_eq!(c["unmapped"]["correlated_via"], "graph", "{id}");
            assert_eq!(
                c["unmapped"]["correlated_uid"], first["metadata"]["uid"],
                "{id}: the later copy names the first"
            );
            later += 1;
        }
    }
    // Findings with no twin on the other input are untouched.
    let correlated = o
        .events
        .iter()
        .filter(|e| e["unmapped"].get("correlated_via").is_some())
        .count();
    assert_eq!(correlated, later, "only the twins are correlated");
    assert_eq!(metric(&o.metrics, "detections_correlated_total"), later as f64);
    assert_eq!(metric(&o.metrics, "detections_suppressed_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_suppression_the_second_copy_is_dropped_counted_and_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let all = run(dir.path(), false).await;
    let twins: usize = findings(&all.events)
        .iter()
        .filter(|(id, _)| *id == ALERT || RISKS.contains(&id.as_str()))
        .map(|(_, c)| c.len() - 1)
        .sum();
    assert!(twins >= 3, "{twins}");
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), true).await;
    assert_eq!(o.unacknowledged, 0, "suppressed events are acknowledged");
    let f = findings(&o.events);
    for id in std::iter::once(ALERT).chain(RISKS) {
        assert_eq!(f[id].len(), 1, "{id}: one copy forwarded");
        assert!(from_graph(f[id][0]), "{id}: the Graph copy came first and stays");
    }
    assert_eq!(o.events.len(), all.events.len() - twins, "only the duplicates are gone");
    assert_eq!(metric(&o.metrics, "detections_suppressed_total"), twins as f64);
}

/// With several normalization workers, an alert can be normalized before the sign-in that
/// names its user (read earlier, in a batch another worker is still on). The user is still
/// restored: such events are normalized again in input order, once earlier batches are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_restoration_does_not_depend_on_which_worker_finishes_first() {
    let dir = tempfile::tempdir().unwrap();
    // Batch 1: many sign-ins, the last one by Lee Gu (the only record that names him).
    let a = dir.path().join("a-signins.ndjson");
    let mut text = String::new();
    for i in 0..4000 {
        text.push_str(&support::signin_record(&format!("evt-{i}"), i));
        text.push('\n');
    }
    let lee = support::signin_record("evt-lee", 1)
        .replace(
            "25abd89b-d67e-4d92-8a83-18174d645fa6",
            "eca9bad1-449e-48e4-b15c-e760f3e452f2",
        )
        .replace("megan.bowen@fabrikam.example", "lee.gu@fabrikam.example")
        .replace("Megan Bowen", "Lee Gu");
    text.push_str(&lee);
    text.push('\n');
    std::fs::write(&a, text).unwrap();
    // Batch 2: a Graph risk detection for Lee without his name or UPN.
    let page: Value =
        serde_json::from_str(&std::fs::read_to_string(support::data("graph/risk_detections.json")).unwrap()).unwrap();
    let mut det = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["userId"] == "eca9bad1-449e-48e4-b15c-e760f3e452f2")
        .unwrap()
        .clone();
    det["userPrincipalName"] = Value::Null;
    det["userDisplayName"] = Value::Null;
    // The Graph source stamps the tenant it polls; a replayed object carries it itself.
    det["tenantId"] = Value::from("d13c513a-42f8-4da1-97b1-165f0971b7c4");
    let b = dir.path().join("b-detection.json");
    std::fs::write(&b, serde_json::json!({ "value": [det] }).to_string()).unwrap();
    let out = dir.path().join("out.ndjson");
    let text = format!(
        "data_dir = {data:?}\n[api]\nenabled = false\n\
         [pipeline]\nnormalize_workers = 2\nbatch_max_events = 5000\n\
         [normalize]\nraw_data = \"drop\"\n\
         [sources.in]\ntype = \"replay\"\npaths = [{a:?}, {b:?}]\n\
         [sinks.out]\ntype = \"file\"\npath = {out:?}\nencoding = \"ocsf\"\n",
        data = dir.path().join("data").display().to_string(),
        a = a.display().to_string(),
        b = b.display().to_string(),
        out = out.display().to_string(),
    );
    let config = Config::from_str(&text, &dir.path().join("test.toml")).unwrap();
    let report = Pipeline::new(config).run(CancellationToken::new()).await.unwrap();
    assert_eq!(report.unacknowledged_batches, 0);
    let events: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 4002);
    let finding = events.iter().find(|e| e["class_uid"] == 2004).unwrap();
    assert_eq!(finding["actor"]["user"]["name"], "lee.gu@fabrikam.example", "{finding}");
    assert_eq!(finding["unmapped"]["user_restored_from"], "cache");
}
