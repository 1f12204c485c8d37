//! The Kafka sink against a real Kafka-protocol broker (tansu): keys, headers, OCSF
//! payloads and topic templates round trip; a broker outage loses nothing and keeps order per key.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use m365_forwarder::config::Config;
use m365_forwarder::pipeline::Pipeline;
use support::kafka_broker::{consume, Broker};
use tokio_util::sync::CancellationToken;

fn pipeline_config(dir: &Path, paths: &[&Path], bootstrap: &str, topic: &str, extra: &str) -> Config {
    let paths: Vec<String> = paths.iter().map(|p| format!("\"{}\"", p.display())).collect();
    let text = format!(
        r#"
data_dir = "{data}"
[api]
enabled = false
[pipeline]
batch_max_events = 100
checkpoint_interval_ms = 50
drain_timeout_secs = 60
[sources.in]
type = "replay"
paths = [{paths}]
[sinks.kafka]
type = "kafka"
bootstrap_servers = "{bootstrap}"
topic = "{topic}"
retry_initial_ms = 200
retry_max_ms = 2000
{extra}
"#,
        data = dir.join("data").display(),
        paths = paths.join(", "),
    );
    Config::from_str(&text, Path::new("kafka-test.toml")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_and_eventhub_round_trip_with_keys_headers_and_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    for t in ["m365.incident", "m365.alert", "m365.signin"] {
        broker.create_topic(t, 3);
    }
    let inputs = [
        support::data("graph/incidents_page1.json"),
        support::data("graph/incidents_page2.json"),
        support::data("eventhub/signin_interactive.json"),
    ];
    let paths: Vec<&Path> = inputs.iter().map(|p| p.as_path()).collect();
    let config = pipeline_config(
        dir.path(),
        &paths,
        &broker.bootstrap(),
        "m365.{kind}",
        "compression = \"zstd\"\nfilter.kinds = [\"incident\", \"alert\", \"signin\"]",
    );
    let report = Pipeline::new(config).run(CancellationToken::new()).await.unwrap();
    assert_eq!(report.unacknowledged_batches, 0);
    assert_eq!(report.summary.delivered["kafka"], 5 + 6 + 2);

    let got = tokio::task::spawn_blocking({
        let b = broker.bootstrap();
        move || {
            consume(
                &b,
                &["m365.incident", "m365.alert", "m365.signin"],
                13,
                Duration::from_secs(60),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(got.len(), 13, "every event consumed back");
    let by_topic = |t: &str| got.iter().filter(|m| m.topic == t).collect::<Vec<_>>();
    assert_eq!(by_topic("m365.incident").len(), 5);
    assert_eq!(by_topic("m365.alert").len(), 6);
    assert_eq!(by_topic("m365.signin").len(), 2);
    for m in &got {
        let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        assert_eq!(m.header("tenant"), Some("d13c513a-42f8-4da1-97b1-165f0971b7c4"));
        assert_eq!(m.header("class_uid"), Some(v["class_uid"].to_string().as_str()));
        assert!(m.key.is_some(), "every message is keyed");
    }
    // An incident and its alerts share the key (the incident id) and so the partition.
    let inc = by_topic("m365.incident")
        .into_iter()
        .find(|m| m.key.as_deref() == Some("d13c513a-42f8-4da1-97b1-165f0971b7c4:3109"))
        .unwrap();
    let alerts: Vec<_> = by_topic("m365.alert")
        .into_iter()
        .filter(|m| m.key.as_deref() == Some("d13c513a-42f8-4da1-97b1-165f0971b7c4:3109"))
        .collect();
    assert_eq!(alerts.len(), 2, "incident 3109 has two alerts keyed by it");
    assert!(alerts.iter().all(|a| a.partition == inc.partition));
    let v: serde_json::Value = serde_json::from_str(&inc.payload).unwrap();
    assert_eq!(v["class_uid"], 2005);
    assert_eq!(inc.header("category"), Some("GraphIncident"));
    assert_eq!(inc.header("kind"), Some("incident"));
}

/// NDJSON of Graph incidents: 20 incident ids, each updated many times; `evt-N` marks each version.
fn write_incident_versions(path: &Path, n: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        writeln!(
            f,
            r##"{{"@odata.type":"#microsoft.graph.security.incident","id":"{}","tenantId":"t-1","displayName":"evt-{}","status":"active","severity":"medium","classification":"unknown","determination":"unknown","createdDateTime":"2026-11-20T00:00:00Z","lastUpdateDateTime":"2026-11-27T{:02}:{:02}:{:02}.000Z","alerts":[]}}"##,
            4000 + i % 20,
            i,
            10 + i / 3600,
            (i / 60) % 60,
            i % 60
        )
        .unwrap();
    }
    f.flush().unwrap();
}

fn version(payload: &str) -> u64 {
    let i = payload.find("evt-").unwrap() + 4;
    payload[i..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_30s_loses_nothing_and_keeps_order_per_key() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn,librdkafka=warn")
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    broker.create_topic("m365.incidents", 3);
    let input = dir.path().join("incidents.ndjson");
    let total = 3_000;
    write_incident_versions(&input, total);
    let config = pipeline_config(
        dir.path(),
        &[&input],
        &broker.bootstrap(),
        "m365.incidents",
        "message_timeout_ms = 5000\nencoding = \"raw\"",
    );
    let p = Pipeline::new(config);
    let metrics = p.metrics();
    let run = tokio::spawn(p.run(CancellationToken::new()));
    // Stop the broker once delivery is under way, keep it down for 30 s, then restart it.
    let start = std::time::Instant::now();
    while metrics.summary().delivered.get("kafka").copied().unwrap_or(0) < 300 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no delivery before the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.stop();
    let delivered_at_stop = metrics.summary().delivered["kafka"];
    tokio::time::sleep(Duration::from_secs(30)).await;
    let delivered_during = metrics.summary().delivered["kafka"];
    assert!(
        delivered_during - delivered_at_stop <= 100,
        "nothing acknowledged while the broker is down"
    );
    broker.restart();
    let report = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.unacknowledged_batches, 0);

    let got = tokio::task::spawn_blocking({
        let b = broker.bootstrap();
        move || consume(&b, &["m365.incidents"], total + 200, Duration::from_secs(180))
    })
    .await
    .unwrap();
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut max_per_key: HashMap<String, u64> = HashMap::new();
    let mut sorted = got.clone();
    sorted.sort_by_key(|m| (m.partition, m.offset));
    for m in &sorted {
        let v = version(&m.payload);
        let key = m.key.clone().unwrap();
        let max = max_per_key.entry(key.clone()).or_insert(v);
        // Within a key, versions appear in order; a smaller one may only be a re-send.
        assert!(
            v >= *max || seen.contains_key(&v),
            "key {key}: version {v} written after {max} and not a re-send"
        );
        *max = (*max).max(v);
        *seen.entry(v).or_default() += 1;
    }
    let missing: Vec<usize> = (0..total).filter(|i| !seen.contains_key(&(*i as u64))).collect();
    assert!(
        missing.is_empty(),
        "{} versions lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let dups: u32 = seen.values().map(|c| c - 1).sum();
    eprintln!("{total} events through a 30 s broker outage: {dups} duplicates");
    assert!(dups <= 200, "{dups} duplicates exceed the in-flight window");
}

/// A message librdkafka refuses before queueing it (here: larger than `message.max.bytes`)
/// is dead-lettered with the reason, and the rest of the batch is delivered once: the sink
/// neither stalls on it nor sends the messages queued before it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_refused_at_produce_is_dead_lettered_and_the_rest_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    broker.create_topic("m365.all", 1);
    let inputs = [
        support::data("graph/incidents_page1.json"),
        support::data("graph/incidents_page2.json"),
    ];
    let paths: Vec<&Path> = inputs.iter().map(|p| p.as_path()).collect();
    // The two largest OCSF events of these pages are 13-14 KB, the others at most 9.5 KB.
    let config = pipeline_config(
        dir.path(),
        &paths,
        &broker.bootstrap(),
        "m365.all",
        "librdkafka_options = { \"message.max.bytes\" = \"11000\" }",
    );
    let dead_letter = config.dead_letter_path();
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        Pipeline::new(config).run(CancellationToken::new()),
    )
    .await
    .expect("the sink does not stall on the refused messages")
    .unwrap();
    assert_eq!(report.unacknowledged_batches, 0);
    let delivered = report.summary.delivered["kafka"];
    assert_eq!(delivered, 5 + 6 - 2);
    let quarantined: Vec<serde_json::Value> = std::fs::read_to_string(&dead_letter)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(quarantined.len(), 2, "{quarantined:#?}");
    for q in &quarantined {
        assert_eq!(q["reason"], "kafka_rejected", "{q}");
        assert!(q["detail"].as_str().unwrap().contains("too large"), "{q}");
    }
    let got = tokio::task::spawn_blocking({
        let b = broker.bootstrap();
        move || consume(&b, &["m365.all"], 2 * delivered as usize, Duration::from_secs(60))
    })
    .await
    .unwrap();
    let mut uids: Vec<String> = got
        .iter()
        .map(|m| serde_json::from_str::<serde_json::Value>(&m.payload).unwrap()["metadata"]["uid"].to_string())
        .collect();
    uids.sort();
    let n = uids.len();
    uids.dedup();
    assert_eq!(
        (n, uids.len()),
        (delivered as usize, delivered as usize),
        "each delivered once"
    );
}
