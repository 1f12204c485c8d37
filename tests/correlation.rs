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
