//! The Splunk HEC sink against the HEC emulator (tests/support/hec_emulator.rs): round trip
//! with indexer acknowledgment and gzip (what was indexed equals what was sent), the
//! add-ons' sourcetypes for raw payloads, requests not acknowledged in time sent again (only those) with
//! nothing lost, 503/429 storms retried, an invalid event dead-lettered with its HEC code,
//! configuration errors retried and never dropped, tokens from the environment and files.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use m365_forwarder::config::{Config, SinkCommon};
use m365_forwarder::encode::{Encoder, EncoderOptions, HecEncoder};
use m365_forwarder::event::Event;
use m365_forwarder::pipeline::{Pipeline, RunReport};
use m365_forwarder::sinks::{SendReport, Sink, SinkError};
use m365_forwarder::telemetry::Metrics;
use serde_json::Value;
use support::hec_emulator::{evt_id, HecEmulator, Script};

const TOKEN: &str = "8f2c0b9e-hec-token-for-tests";

/// Encodes envelopes like the HEC sink does: the expected events.
struct Capture {
    enc: HecEncoder,
    out: Arc<Mutex<Vec<Value>>>,
}

#[async_trait::async_trait]
impl Sink for Capture {
    async fn send(&mut self, events: &[Event]) -> Result<SendReport, SinkError> {
        for e in events {
            let mut buf = Vec::new();
            if self.enc.encode(e, &mut buf).is_ok() {
                self.out.lock().unwrap().push(serde_json::from_slice(&buf).unwrap());
            }
        }
        Ok(SendReport::default())
    }
}

struct Run {
    report: RunReport,
    metrics: Arc<Metrics>,
    expected: Vec<Value>,
    dead_letter: String,
}

fn sink_toml(url: &str, token: &str, extra: &str) -> String {
    format!(
        "[sinks.splunk]\ntype = \"splunk_hec\"\nendpoint = \"{url}\"\ntoken = \"{token}\"\nretry_initial_ms = 20\nretry_max_ms = 200\n\
         acknowledgements.poll_interval_ms = 50\n{extra}"
    )
}

/// Runs the pipeline over `signins` sign-ins (ids evt-0..) and the Graph incident page, with
/// `sinks`, plus a capture encoding with `encoder` (TOML of `encoder`). `stop_after` cancels.
async fn run(dir: &Path, signins: usize, sinks: &str, encoder: &str, stop_after: Option<Duration>) -> Run {
    let input = dir.join("signins.ndjson");
    support::write_ndjson(&input, signins);
    let text = format!(
        "data_dir = {:?}\n[api]\nenabled = false\n[pipeline]\nbatch_max_events = 50\ncheckpoint_interval_ms = 50\n\
         drain_timeout_secs = 1\n[dead_letter]\npath = {:?}\n[sources.in]\ntype = \"replay\"\npaths = [{:?}, {:?}]\n{sinks}",
        dir.join("data").display().to_string(),
        dir.join("dead-letter.ndjson").display().to_string(),
        input.display().to_string(),
        support::data("graph/incidents_page1.json").display().to_string(),
    );
    let config = Config::from_str(&text, &dir.join("test.toml")).unwrap();
    let opts: EncoderOptions = toml::from_str(encoder).unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    let capture = Capture {
        enc: HecEncoder::new(&opts),
        out: out.clone(),
    };
    let p = Pipeline::new(config).with_sink("expect", SinkCommon::default(), Box::new(capture));
    let metrics = p.metrics();
    let stop = support::cancel_after(stop_after);
    let report = tokio::time::timeout(Duration::from_secs(120), p.run(stop))
        .await
        .expect("pipeline finished in time")
        .unwrap();
    let expected = out.lock().unwrap().clone();
    Run {
        report,
        metrics,
        expected,
        dead_letter: std::fs::read_to_string(dir.join("dead-letter.ndjson")).unwrap_or_default(),
    }
}

fn metric(m: &Metrics, name: &str, labels: &str) -> f64 {
    let key = format!("m365fwd_{name}{{{labels}}} ");
    m.encode()
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// `evt-N` ids of envelopes, counted.
fn ids(envelopes: &[Value]) -> HashMap<u64, u32> {
    let mut m = HashMap::new();
    for e in envelopes {
        if let Some(id) = evt_id(e) {
            *m.entry(id).or_insert(0) += 1;
        }
    }
    m
}

fn sorted(mut v: Vec<Value>) -> Vec<String> {
    let mut s: Vec<String> = v.drain(..).map(|e| e.to_string()).collect();
    s.sort();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_with_indexer_ack_gzip_index_and_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let emu = HecEmulator::start(
        &[(TOKEN, true)],
        Script {
            ack_delay: Duration::from_millis(120),
            ..Script::default()
        },
    )
    .await;
    emu.allow_indexes(&["security"]);
    let enc = "[hec]\nindex = \"security\"\nhost = \"fwd-test\"\n";
    let sinks = sink_toml(
        &emu.url(),
        TOKEN,
        "batch.max_events = 120\nencoder.hec.index = \"security\"\nencoder.hec.host = \"fwd-test\"\n",
    );
    let r = run(dir.path(), 500, &sinks, enc, None).await;
    assert_eq!(r.report.unacknowledged_batches, 0);
    let indexed = emu.indexed();
    assert_eq!(r.expected.len(), 500 + 3 + 4, "sign-ins, incidents and their alerts");
    assert_eq!(
        sorted(indexed.clone()),
        sorted(r.expected.clone()),
        "indexed exactly what was sent"
    );
    let counts = ids(&indexed);
    assert_eq!(counts.len(), 500);
    assert!(counts.values().all(|&c| c == 1), "no duplicates without failures");
    for e in &indexed {
        assert_eq!(e["index"], "security");
        assert_eq!(e["host"], "fwd-test");
        assert_eq!(e["sourcetype"], "m365fwd:ocsf");
        let t = e["time"].as_f64().unwrap();
        assert_eq!(
            (t * 1000.0).round() as i64,
            e["event"]["time"].as_i64().unwrap(),
            "time is the event time"
        );
    }
    let log = emu.log();
    assert!(log.iter().all(|l| l.status == 200 && l.gzip), "all gzip, all accepted");
    assert!(log.iter().all(|l| l.events <= 120), "batch.max_events holds");
    assert!(
        log.iter().any(|l| l.events > 50),
        "pipeline batches of 50 waiting during an ack round trip were merged"
    );
    let channels: std::collections::HashSet<_> = log.iter().map(|l| l.channel.clone().unwrap()).collect();
    assert!(
        (1..=8).contains(&channels.len()),
        "one channel per concurrent instance (default concurrency 8): {}",
        channels.len()
    );
    assert!(emu.ack_queries() > 0);
    assert_eq!(emu.health_checks(), 1, "health check at start");
    assert_eq!(metric(&r.metrics, "sink_acks_pending", "sink=\"splunk\""), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_payload_uses_the_add_on_sourcetypes_and_a_token_without_ack() {
    let dir = tempfile::tempdir().unwrap();
    let emu = HecEmulator::start(&[(TOKEN, false)], Script::default()).await;
    // The token comes from a file, as `${file:...}` in the config.
    std::fs::write(dir.path().join("hec.token"), format!("{TOKEN}\n")).unwrap();
    let sinks = sink_toml(
        &emu.url(),
        "${file:hec.token}",
        "encoder.hec.payload = \"raw\"\ncompression = \"none\"\n",
    );
    let r = run(dir.path(), 20, &sinks, "[hec]\npayload = \"raw\"\n", None).await;
    assert_eq!(r.report.unacknowledged_batches, 0);
    let indexed = emu.indexed();
    assert_eq!(sorted(indexed.clone()), sorted(r.expected));
    let st = |pred: &dyn Fn(&Value) -> bool| -> Vec<String> {
        let mut v: Vec<String> = indexed
            .iter()
            .filter(|e| pred(e))
            .map(|e| e["sourcetype"].as_str().unwrap().to_owned())
            .collect();
        v.dedup();
        v
    };
    assert_eq!(st(&|e| evt_id(e).is_some()), ["azure:monitor:aad"]);
    assert_eq!(
        st(&|e| e["event"]["@odata.type"] == "#microsoft.graph.security.incident"),
        ["ms365:defender:incident"]
    );
    assert_eq!(emu.ack_queries(), 0, "no ackId, no polling: delivered on code 0");
    assert!(emu.log().iter().all(|l| !l.gzip));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_not_acknowledged_in_time_are_sent_again_and_none_lost() {
    let dir = tempfile::tempdir().unwrap();
    let emu = HecEmulator::start(
        &[(TOKEN, true)],
        Script {
            never_ack_first: 3,
            ack_delay: Duration::from_millis(50),
            ..Script::default()
        },
    )
    .await;
    let sinks = sink_toml(
        &emu.url(),
        TOKEN,
        // Long enough for a slow machine's acknowledgments (a later one would be a duplicate).
        "batch.max_events = 100\nacknowledgements.timeout_secs = 3\n",
    );
    let r = run(dir.path(), 1000, &sinks, "", None).await;
    assert_eq!(r.report.unacknowledged_batches, 0);
    let counts = ids(&emu.indexed());
    let missing: Vec<u64> = (0..1000).filter(|i| !counts.contains_key(i)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    // The three never-acknowledged requests were not indexed, so resending them made no duplicates.
    assert!(counts.values().all(|&c| c == 1));
    assert_eq!(metric(&r.metrics, "sink_ack_timeouts_total", "sink=\"splunk\""), 3.0);
    let sent_twice = emu.log().iter().filter(|l| l.status == 200).count();
    assert!(sent_twice >= 1000 / 100 + 3, "{sent_twice} accepted requests");
}

/// A batch is posted as several requests; when one of them is not acknowledged in time the
/// batch is sent again (by whichever instance is idle), but only that request's events are
/// posted: the acknowledged ones are indexed already and would be duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_again_posts_only_the_requests_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let emu = HecEmulator::start(
        &[(TOKEN, true)],
        Script {
            never_ack_first: 2,
            ack_delay: Duration::from_millis(20),
            ..Script::default()
        },
    )
    .await;
    let sinks = sink_toml(
        &emu.url(),
        TOKEN,
        "batch.max_events = 10\nacknowledgements.timeout_secs = 3\n",
    );
    let r = run(dir.path(), 600, &sinks, "", None).await;
    assert_eq!(r.report.unacknowledged_batches, 0);
    let counts = ids(&emu.indexed());
    let missing: Vec<u64> = (0..600).filter(|i| !counts.contains_key(i)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert!(counts.values().all(|&c| c == 1), "no duplicates");
    let mut accepted: Vec<_> = emu.log().into_iter().filter(|l| l.status == 200).collect();
    accepted.sort_by_key(|l| l.at);
    let never_acked: usize = accepted[..2].iter().map(|l| l.events).sum();
    let posted: usize = accepted.iter().map(|l| l.events).sum();
    assert_eq!(
        posted,
        r.expected.len() + never_acked,
        "posted twice: only the {never_acked} events of the two requests never acknowledged"
    );
    assert_eq!(metric(&r.metrics, "sink_ack_timeouts_total", "sink=\"splunk\""), 2.0);
    assert_eq!(metric(&r.metrics, "sink_acks_pending", "sink=\"splunk\""), 0.0);
}

/// An indexer that restarts loses its acknowledgment state and hands out ackIds from 0
/// again: a request still waiting for its id must not take the new request's
/// acknowledgment as its own (it is sent again at once, not after the timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_id_handed_out_again_after_a_restart_does_not_acknowledge_the_older_request() {
    let dir = tempfile::tempdir().unwrap();
    let emu = HecEmulator::start(
        &[(TOKEN, true)],
        Script {
            never_ack_first: 1,
            restart_after: Some(1),
            ack_delay: Duration::from_millis(20),
            ..Script::default()
        },
    )
    .await;
    // One instance: one channel, whose ackIds the restart sets back.
    let sinks = sink_toml(&emu.url(), TOKEN, "batch.max_events = 100\nconcurrency = 1\n");
    let r = run(dir.path(), 300, &sinks, "", None).await;
    assert_eq!(r.report.unacknowledged_batches, 0);
    let log = emu.log();
    assert_eq!(log[0].ack_id, Some(0));
    assert_eq!(log[1].ack_id, Some(0), "the restarted indexer counts from 0 again");
    let counts = ids(&emu.indexed());
    let missing: Vec<u64> = (0..300).filter(|i| !counts.contains_key(i)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert!(
        counts.values().all(|&c| c == 1),
        "the forgotten request was not indexed"
    );
    assert_eq!(metric(&r.metrics, "sink_ack_timeouts_total", "sink=\"splunk\""), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_and_throttled_collector_is_retried_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let emu = HecEmulator::start(
        &[(TOKEN, true)],
        Script {
            busy_next: 4,
            throttle_next: 2,
            ..Script::default()
        },
    )
    .await;
    let r = run(dir.path(), 300, &sink_toml(&emu.url(), TOKEN, ""), "", None).await;
    assert_eq!(r.report.unacknowledged_batches, 0);
    let counts = ids(&emu.indexed());
    assert_eq!(counts.len(), 300);
    assert!(
        counts.values().all(|&c| c == 1),
        "refused requests took nothing, so no duplicates"
    );
    let statuses: Vec<u16> = emu.log().iter().map(|l| l.status).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 503).count(), 4);
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 2);
    assert_eq!(metric(&r.metrics, "sink_retries_total", "sink=\"splunk\""), 6.0);
    assert!(r.dead_letter.is_empty());
}

/// A 503 with `Retry-After: 2` (a load balancer in front of HEC): the next request waits
/// those 2 s, not the sink's 20 ms backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_a_busy_reply_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let emu = HecEmulator::start(
        &[(TOKEN, true)],
        Script {
            busy_next: 1,
            retry_after_secs: Some(2),
            ..Script::default()
        },
    )
    .await;
    let r = run(dir.path(), 20, &sink_toml(&emu.url(), TOKEN, ""), "", None).await;
    assert_eq!(r.report.unacknowledged_batches, 0);
    assert_eq!(ids(&emu.indexed()).len(), 20);
    let log = emu.log();
    assert_eq!(log[0].status, 503);
    assert_eq!(log[1].status, 200);
    let waited = log[1].at - log[0].at;
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "waited {waited:?}"
    );
}

/// A send split into several requests (`batch.max_events` below the pipeline's batches)
/// fails part way (503 after two requests were taken): the retry posts only the requests
/// not taken, so no event is indexed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_fails_part_way_is_resumed_without_posting_twice() {
    let dir = tempfile::tempdir().unwrap();
    let emu = HecEmulator::start(
        &[(TOKEN, true)],
        Script {
            busy_next: 1,
            busy_after_accepted: 2,
            ..Script::default()
        },
    )
    .await;
    let r = run(
        dir.path(),
        200,
        &sink_toml(
            &emu.url(),
            TOKEN,
            "batch.max_events = 10
concurrency = 1
",
        ),
        "",
        None,
    )
    .await;
    assert_eq!(r.report.unacknowledged_batches, 0);
    let log = emu.log();
    assert_eq!(
        log.iter().filter(|l| l.status == 503).count(),
        1,
        "the failure happened"
    );
    let counts = ids(&emu.indexed());
    let missing: Vec<u64> = (0..200).filter(|i| !counts.contains_key(i)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    // Splunk indexes what it accepted whether or not its ackId is ever asked about: every
    // event is in one accepted request only.
    let mut accepted: HashMap<u64, u32> = HashMap::new();
    for l in log.iter().filter(|l| l.status == 200) {
        for id in &l.ids {
            *accepted.entry(*id).or_insert(0) += 1;
        }
    }
    let twice: Vec<(&u64, &u32)> = accepted.iter().filter(|(_, &c)| c > 1).collect();
    assert!(twice.is_empty(), "accepted twice: {twice:?}");
    assert_eq!(accepted.len(), 200);
}

/// The acknowledgment query answered 503 with `Retry-After: 2`: the next query waits those
/// 2 s, not the 50 ms poll interval; the events are then acknowledged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_a_busy_acknowledgment_query_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let emu = HecEmulator::start(
        &[(TOKEN, true)],
        Script {
            ack_busy_next: 1,
            retry_after_secs: Some(2),
            ..Script::default()
        },
    )
    .await;
    let r = run(dir.path(), 20, &sink_toml(&emu.url(), TOKEN, ""), "", None).await;
    assert_eq!(r.report.unacknowledged_batches, 0);
    assert_eq!(ids(&emu.indexed()).len(), 20);
    assert!(emu.log().iter().all(|l| l.status == 200), "nothing sent again");
    let at = emu.ack_query_times();
    assert!(at.len() >= 2, "{} queries", at.len());
    let waited = at[1] - at[0];
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "waited {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_event_is_dead_lettered_with_its_hec_code_and_the_rest_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let emu = HecEmulator::start(
        &[(TOKEN, true)],
        Script {
            poison: Some("evt-7".into()),
            ..Script::default()
        },
    )
    .await;
    let r = run(dir.path(), 200, &sink_toml(&emu.url(), TOKEN, ""), "", None).await;
    assert_eq!(r.report.unacknowledged_batches, 0);
    let counts = ids(&emu.indexed());
    assert_eq!(counts.len(), 199);
    assert!(!counts.contains_key(&7));
    let dl: Vec<Value> = r
        .dead_letter
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dl.len(), 1, "{}", r.dead_letter);
    let rec = dl[0].to_string();
    assert!(
        rec.contains("hec_invalid_data_format") && rec.contains("HEC code 6"),
        "{rec}"
    );
    assert!(rec.contains("evt-7"), "the dead-lettered record is evt-7: {rec}");
    // The pipeline encoded the event ahead and let its record go: the record keeps the HEC
    // envelope the collector refused, and the position to find the record again.
    let refused: Value = serde_json::from_str(dl[0]["message"].as_str().expect("message")).unwrap();
    assert!(refused["event"].to_string().contains("evt-7"), "{refused}");
    assert!(dl[0]["partition"].is_string() && dl[0]["offset"].is_u64(), "{rec}");
    assert_eq!(
        metric(&r.metrics, "sink_rejected_events_total", "sink=\"splunk\",code=\"6\""),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_are_retried_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let emu = HecEmulator::start(
        &[(TOKEN, true)],
        Script {
            unhealthy: true,
            ..Script::default()
        },
    )
    .await;
    let r = run(
        dir.path(),
        50,
        &sink_toml(&emu.url(), "wrong-token", ""),
        "",
        Some(Duration::from_millis(1500)),
    )
    .await;
    assert!(r.report.unacknowledged_batches > 0, "nothing acknowledged");
    assert!(r.dead_letter.is_empty(), "a bad token never dead-letters data");
    assert!(emu.indexed().is_empty());
    assert!(emu.log().iter().all(|l| l.status == 403));
    assert!(
        metric(
            &r.metrics,
            "component_errors_total",
            "component=\"splunk\",error_type=\"hec_config\""
        ) >= 2.0
    );
    assert_eq!(
        metric(
            &r.metrics,
            "component_errors_total",
            "component=\"splunk\",error_type=\"hec_health\""
        ),
        1.0,
        "the failed start-up health check is counted"
    );
}

/// Concurrent instances post on their own channels; `concurrency = 1` keeps one channel and
/// the input order. The wait for indexer acknowledgment never holds the posting: with one
/// instance and a slow indexer, several batches wait for their ackIds at once, never more
/// than `acknowledgements.max_pending_batches`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_overlap_ack_waits_and_concurrency_one_keeps_order() {
    for (concurrency, ack_ms, max_pending) in [(4usize, 400u64, 16usize), (1, 20, 16), (1, 400, 3)] {
        let dir = tempfile::tempdir().unwrap();
        let emu = HecEmulator::start(
            &[(TOKEN, true)],
            Script {
                ack_delay: Duration::from_millis(ack_ms),
                ..Script::default()
            },
        )
        .await;
        let extra = format!(
            "concurrency = {concurrency}\nbatch.max_events = 50\nbatch.max_wait_ms = 10\n\
             acknowledgements.max_pending_batches = {max_pending}\n"
        );
        let r = run(dir.path(), 1000, &sink_toml(&emu.url(), TOKEN, &extra), "", None).await;
        assert_eq!(r.report.unacknowledged_batches, 0);
        let indexed = emu.indexed();
        let counts = ids(&indexed);
        assert_eq!(counts.len(), 1000, "every sign-in indexed");
        let log = emu.log();
        let channels: std::collections::HashSet<_> = log.iter().map(|l| l.channel.clone().unwrap()).collect();
        if concurrency == 1 {
            assert_eq!(channels.len(), 1, "one instance, one channel");
            // Posted in input order (the emulator indexes a request when its ackId is
            // reported, so the order of indexing is that of the acknowledgments).
            let order: Vec<u64> = log
                .iter()
                .filter(|l| l.status == 200)
                .flat_map(|l| l.ids.clone())
                .collect();
            assert_eq!(order.len(), 1000);
            assert!(order.windows(2).all(|w| w[0] < w[1]), "posted in input order");
            if ack_ms == 400 {
                // One request per batch (50 events): requests accepted and not yet
                // acknowledged at one time = batches waiting for their acknowledgment.
                let most = emu.max_pending_acks();
                assert!(
                    most > 1 && most <= max_pending,
                    "{most} requests waited for their ackIds at once (at most {max_pending})"
                );
                // One query per poll for every batch waiting on the channel, not one each.
                assert!(
                    emu.max_ids_per_query() > 1,
                    "ackIds of several batches asked for together"
                );
            }
        } else {
            assert!(
                channels.len() > 1 && channels.len() <= concurrency,
                "requests spread over {} channels",
                channels.len()
            );
            // While one request waits 400 ms for its ack, others are sent: the emulator saw
            // acknowledgment queries asking for several ids at once across channels.
            assert!(emu.max_pending_acks() > 1, "ack waits overlapped");
        }
    }
}
