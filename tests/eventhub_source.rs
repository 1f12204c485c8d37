//! The `eventhub` (AMQP) input against the Event Hubs emulator in tests/support: the real
//! binary reads two partitions through azure_messaging_eventhubs, checkpoints per partition
//! after delivery, resumes after a restart and after `kill -9`, quarantines a poison body
//! once without blocking its partition, decodes gzip, forwards and counts unknown
//! categories, reconnects without loss when the emulator drops the connection or restarts, reports a
//! refused token (401) as an error and a readiness failure, and gives up a partition another
//! receiver steals (`amqp:link:stolen`), resuming it without loss.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::eventhub_emulator::EventHubEmulator;
use support::eventhub_pipeline::{ids_in, Pipeline};
use support::scaleout::{fill, wait_for, HUB, STRIDE};
use support::*;

/// One Event Hub body of sign-in records with ids `evt-first ..`.
fn body(first: u64, n: u64) -> String {
    let records: Vec<String> = (first..first + n)
        .map(|i| signin_record(&format!("evt-{i}"), i as u32))
        .collect();
    format!("{{\"records\":[{}]}}", records.join(","))
}

/// The emulator with 2 partitions of `bodies` bodies of 10 records each (ids `0..` and
/// `1_000_000..`).
async fn emulator_with(bodies: u64) -> EventHubEmulator {
    let emu = EventHubEmulator::start(HUB, 2).await;
    fill(&emu, 2, 0, bodies, 10);
    emu
}

/// (a) 2 partitions × 10k records arrive once each with per-partition checkpoints, and
/// (a) 2 partitions × 10k records arrive once each with per-partition checkpoints, and
/// (b) a restart resumes from the checkpoints with no loss and nothing read twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_partitions_of_10k_arrive_once_and_a_restart_resumes_from_the_checkpoints() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let emu = emulator_with(1000).await;
    let mut s = Pipeline::start(dir.path(), &emu);
    s.wait_ids(20_000, 120, "20k events").await;
    // Both checkpoints reach the last message of their partition.
    let ok = wait_for(Duration::from_secs(10), || {
        s.checkpoint("0") == Some(999) && s.checkpoint("1") == Some(999)
    })
    .await;
    assert!(ok, "checkpoints: {:?}", s.checkpoints());
    let lag = s.metrics().await;
    s.stop().await;
    // The service answers the client's AMQP close with its own: a stop closes cleanly.
    let log = s.log();
    assert!(
        !log.contains("Expecting remote close") && !log.contains("Failed to close"),
        "unclean AMQP close on stop:\n{}",
        s.log_tail()
    );
    s.assert_exactly_once(10_000);
    assert_eq!(s.lines(), 20_000, "nothing else written");
    assert!(lag.contains("eventhub_partition_lag"), "lag metric exported");
    let first_run = started.elapsed();

    // More data while it is down; the restart continues after the checkpoints.
    fill(&emu, 2, 10_000, 100, 10);
    let before = emu.stats().receivers.len();
    s.restart();
    s.wait_ids(22_000, 60, "after restart").await;
    let ok = wait_for(Duration::from_secs(10), || {
        s.checkpoint("0") == Some(1099) && s.checkpoint("1") == Some(1099)
    })
    .await;
    assert!(ok, "checkpoints after restart: {:?}", s.checkpoints());
    s.stop().await;
    s.assert_exactly_once(11_000);
    // The restarted receivers asked for what follows the checkpointed offsets.
    let stats = emu.stats();
    let resumed: Vec<&(String, String, Option<i64>)> = stats.receivers[before..].iter().collect();
    assert!(!resumed.is_empty());
    for (_, selector, _) in &resumed {
        assert!(
            !selector.contains("'-1'"),
            "restart must not read from the start: {selector}"
        );
    }
    eprintln!(
        "eventhub: 20k events first run {:?}, total with restart {:?}; connections {}, put-tokens {}",
        first_run,
        started.elapsed(),
        stats.connections,
        stats.put_tokens
    );
}

fn gzip(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

/// (c) a poison body is quarantined once with its position and does not block its partition;
/// (e) a gzip body decodes; (g) an unknown category is forwarded and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_quarantined_once_gzip_decodes_and_unknown_categories_are_forwarded() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let emu = EventHubEmulator::start(HUB, 2).await;
    let placeholder = std::fs::read("../shared/samples/eventhub/malformed/placeholder_blob.txt")
        .or_else(|_| std::fs::read("/work/shared/samples/eventhub/malformed/placeholder_blob.txt"))
        .unwrap_or_else(|_| b"227 B blob data".to_vec());
    emu.enqueue(0, body(0, 5));
    let poison_seq = emu.enqueue(0, placeholder.clone());
    emu.enqueue(0, gzip(&body(5, 5)));
    let unknown = r#"{"records":[{"time":"2026-11-27T10:00:00Z","category":"FancyNewLogs","operationName":"Something new","properties":{"id":"evt-10"}}]}"#;
    emu.enqueue(0, unknown);
    emu.enqueue(0, body(11, 5));
    emu.enqueue(1, body(100, 5));
    let mut s = Pipeline::start(dir.path(), &emu);

    let want: Vec<u64> = (0..16).chain(100..105).collect();
    s.wait(60, "events after the poison body arrive", || {
        let c = s.counts();
        want.iter().all(|i| c.contains_key(i))
    })
    .await;
    let ok = wait_for(Duration::from_secs(10), || s.checkpoint("0") == Some(4)).await;
    assert!(ok, "the checkpoint moves past the poison body: {:?}", s.checkpoints());
    let m = s.metrics().await;
    s.stop().await;

    let dl = s.dead_letters();
    assert_eq!(dl.len(), 1, "{dl:?}");
    let r = &dl[0];
    assert_eq!(r["partition"], "0");
    assert_eq!(r["sequence"], poison_seq);
    assert!(r["offset"].as_u64().is_some());
    assert!(!r["reason"].as_str().unwrap().is_empty());
    assert_eq!(r["original"].as_str().unwrap().as_bytes(), &placeholder[..]);

    let out = std::fs::read_to_string(&s.out).unwrap();
    assert!(out.contains("FancyNewLogs"), "the unknown category is forwarded");
    let counted = m
        .lines()
        .find(|l| l.starts_with("m365fwd_eventhub_unknown_categories_total") && l.contains("FancyNewLogs"));
    assert!(
        counted.is_some_and(|l| l.ends_with(" 1")),
        "unknown category counted: {counted:?}"
    );
    assert!(m.contains("m365fwd_repaired_bodies") || m.contains("m365fwd_quarantined_events"));

    // A restart does not quarantine the poison body again.
    emu.enqueue(0, body(20, 1));
    s.restart();
    s.wait(60, "after restart", || s.counts().contains_key(&20)).await;
    s.stop().await;
    assert_eq!(s.dead_letters().len(), 1, "quarantined once");
    let (missing, dups) = ids_in(0..16, &s.counts());
    assert!(missing.is_empty() && dups == 0, "{missing:?} {dups}");
    eprintln!("eventhub poison/gzip/unknown: {:?}", started.elapsed());
}

/// (h) the emulator drops the connection mid-stream: the source reconnects and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_mid_stream_reconnects_without_loss() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let emu = emulator_with(500).await;
    emu.drop_after_deliveries(300);
    let mut s = Pipeline::start(dir.path(), &emu);
    s.wait(60, "the emulator dropped the connection", || emu.stats().drops >= 1)
        .await;
    // Drop once more while events are flowing again.
    emu.drop_after_deliveries(200);
    s.wait_ids(10_000, 120, "after reconnect").await;
    let stats = emu.stats();
    s.stop().await;
    let (missing, dups) = s.missing_and_dups(5_000);
    assert!(missing.is_empty(), "missing {}", missing.len());
    assert!(stats.drops >= 2 && stats.connections >= 3, "{stats:?}");
    eprintln!(
        "eventhub connection drops: {} drops, {} connections, {dups} duplicates, {:?}",
        stats.drops,
        stats.connections,
        started.elapsed()
    );
    assert_eq!(
        dups, 0,
        "events re-sent after a reconnect are skipped, not forwarded twice"
    );
}

/// The Event Hubs service restarts mid-stream (port closed for 3 s, every connection gone,
/// the same events stored): the source reconnects and nothing is lost or forwarded twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_restarting_mid_stream_causes_a_reconnect_not_a_loss() {
    let dir = tempfile::tempdir().unwrap();
    let emu = emulator_with(500).await;
    let mut s = Pipeline::start(dir.path(), &emu);
    s.wait(60, "first events", || s.lines() >= 2_000).await;
    emu.restart(Duration::from_secs(3)).await;
    s.wait_ids(10_000, 120, "after the restart").await;
    let stats = emu.stats();
    s.stop().await;
    let (missing, dups) = s.missing_and_dups(5_000);
    assert!(missing.is_empty(), "missing {}", missing.len());
    assert!(stats.restarts == 1 && stats.connections >= 2, "{stats:?}");
    assert_eq!(dups, 0, "events sent again after the restart are skipped");
}

/// `kill -9` of the binary mid-stream, then a restart: nothing is lost (at least once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_loses_nothing() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let emu = emulator_with(500).await;
    let mut s = Pipeline::start(dir.path(), &emu);
    s.wait(60, "first events", || s.lines() >= 3_000).await;
    s.fwd.kill9();
    let at_kill = s.lines();
    s.restart();
    s.wait_ids(10_000, 90, "after restart").await;
    s.stop().await;
    let (missing, dups) = s.missing_and_dups(5_000);
    assert!(missing.is_empty(), "missing {}", missing.len());
    eprintln!(
        "eventhub kill -9 at {at_kill} lines: {dups} duplicates re-read, {:?}",
        started.elapsed()
    );
    assert!(dups as usize <= at_kill, "re-reads stay within what was in flight");
}

/// A CBS put-token answered 401: the source logs a clear error and `/ready` fails (no silent
/// hang); once the service accepts the token again it connects and reads everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_a_clear_error_and_fails_readiness_until_accepted() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let emu = EventHubEmulator::start(HUB, 2).await;
    // The SAS token the client builds names its key: `...&skn=listen`.
    emu.reject_tokens_containing("skn=listen");
    fill(&emu, 2, 0, 10, 10);
    let mut s = Pipeline::start(dir.path(), &emu);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        last = s.ready().await;
        if last.0 == 503 && last.1.contains("source eh failing") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        last.0 == 503 && last.1.contains("source eh failing"),
        "readiness fails while tokens are refused: {last:?}\n{}",
        s.log_tail()
    );
    let log = s.fwd.log_text();
    let refused = log
        .lines()
        .find(|l| l.contains("event hub connection failed"))
        .unwrap_or_default()
        .to_string();
    assert!(
        refused.contains("401") || refused.to_ascii_lowercase().contains("unauthorized"),
        "the error names the refusal: {refused}\nready: {last:?}"
    );
    assert!(emu.stats().rejected_tokens >= 1);
    assert_eq!(s.lines(), 0, "nothing read without authorization");
    assert!(!log.contains("SharedAccessSignature sr="), "no token in the log");

    emu.accept_all_tokens();
    s.wait_ids(200, 90, "reads once the token is accepted").await;
    let mut r = (0, String::new());
    for _ in 0..100 {
        r = s.ready().await;
        if r.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(r.0, 200, "ready again: {r:?}");
    s.stop().await;
    s.assert_exactly_once(100);
    eprintln!("eventhub 401: readiness {last:?}; recovered in {:?}", started.elapsed());
}

/// `amqp:link:stolen`: another consumer opens partition 0 with a higher owner level (epoch).
/// The source gives the partition up (its re-attach is refused while the other reads),
/// keeps reading partition 1, and continues partition 0 without loss or duplicates once the
/// other consumer detaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_partition_is_given_up_and_resumed_without_loss() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let emu = emulator_with(100).await;
    let mut s = Pipeline::start(dir.path(), &emu);
    s.wait_ids(2_000, 60, "first events").await;

    let other = emu.steal("$Default", 0, 10);
    let ok = wait_for(Duration::from_secs(10), || emu.stats().stolen >= 1).await;
    assert!(ok, "the source's receiver was detached");
    fill(&emu, 2, 1_000, 50, 10);
    // Partition 1 goes on; partition 0 stays with the other consumer.
    s.wait(30, "partition 1 is still read", || {
        let c = s.counts();
        (1_001_000..1_001_500).all(|i| c.contains_key(&i))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = s.counts();
    assert!(
        !(1_000..1_500).any(|i| c.contains_key(&i)),
        "partition 0 is not read while another receiver holds it"
    );
    let log = s.fwd.log_text();
    assert!(log.contains("partition taken by another receiver"), "{}", s.log_tail());

    emu.release(other);
    s.wait_ids(3_000, 60, "partition 0 resumes").await;
    let m = s.metrics().await;
    s.stop().await;
    let (missing, dups) = s.missing_and_dups(1_500);
    assert!(missing.is_empty(), "missing {}", missing.len());
    assert_eq!(dups, 0, "the resumed partition continues after what was read");
    let stolen = m
        .lines()
        .find(|l| l.starts_with("m365fwd_eventhub_partitions_stolen_total") && l.contains("partition=\"0\""));
    assert!(stolen.is_some(), "stolen counted");
    let log = s.fwd.log_text();
    let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(
        count("event hub connection failed"),
        0,
        "a stolen partition does not rebuild the connection"
    );
    eprintln!(
        "eventhub stolen partition: {} steals, {} refused re-attaches, {} reconnects, {:?}",
        emu.stats().stolen,
        count("partition taken by another receiver"),
        count("event hub connection failed"),
        started.elapsed()
    );
}

/// `start = "latest"` is resolved once per partition and kept as its checkpoint: what
/// arrives on a quiet partition (one that has handed nothing to the pipeline yet) while its
/// connection is being rebuilt, or while the forwarder is stopped, is read; what was there
/// before the first start is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_is_resolved_once_so_a_quiet_partition_loses_nothing_across_reconnects_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let emu = emulator_with(10).await;
    let mut s = Pipeline::start_with(dir.path(), &emu, 2000, r#"start = "latest""#, "");
    s.wait(30, "both partitions opened", || {
        s.fwd.log_text().matches("partition opened").count() >= 2
    })
    .await;
    // Both quiet; the connection drops and partition 1 gets events before it is rebuilt.
    let connections = emu.stats().connections;
    emu.drop_connections();
    emu.enqueue(1, body(STRIDE + 100, 10));
    s.wait(30, "partition 1's events from the reconnect", || {
        let c = s.counts();
        (STRIDE + 100..STRIDE + 110).all(|i| c.contains_key(&i))
    })
    .await;
    assert!(emu.stats().connections > connections, "the connection was rebuilt");
    s.stop().await;

    // Partition 0, still quiet, gets events while the forwarder is stopped.
    emu.enqueue(0, body(100, 10));
    s.restart();
    s.wait(30, "partition 0's events from while it was stopped", || {
        let c = s.counts();
        (100..110).all(|i| c.contains_key(&i))
    })
    .await;
    s.stop().await;

    let c = s.counts();
    assert!(
        !(0..100).chain(STRIDE..STRIDE + 100).any(|i| c.contains_key(&i)),
        "what was there before the first start is not read"
    );
    assert_eq!(c.len(), 20, "{c:?}");
    assert!(c.values().all(|&n| n == 1), "nothing twice: {c:?}");
}

/// `start = "latest"` on partitions that are empty when first opened: what arrives while
/// the forwarder is stopped is read after the restart (by then the partition is no longer
/// empty, and resolving `latest` again would skip it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_on_an_empty_partition_reads_what_came_while_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let emu = EventHubEmulator::start(HUB, 2).await;
    let mut s = Pipeline::start_with(dir.path(), &emu, 2000, r#"start = "latest""#, "");
    s.wait(30, "both partitions opened", || {
        s.fwd.log_text().matches("partition opened").count() >= 2
    })
    .await;
    s.stop().await;
    emu.enqueue(1, body(STRIDE, 10));
    s.restart();
    s.wait_ids(10, 30, "what came while stopped").await;
    s.stop().await;
    let c = s.counts();
    assert_eq!(c.len(), 10, "{c:?}");
    assert!(c.values().all(|&n| n == 1));
    // The stored start of an empty partition is asked for by offset, as `earliest` is (a
    // sequence number filter of -1 is reported not to work on a new hub).
    let receivers = emu.stats().receivers;
    assert!(
        receivers
            .iter()
            .all(|(_, selector, _)| selector.contains("x-opt-offset")),
        "{receivers:?}"
    );
}

/// A sink slowed to a trickle (a licence's EPS cap, here 1 event per second) holds the
/// source back for longer than the stall timeout: that is backpressure, not a stalled
/// receiver, so the connection is kept (a reconnect gives the partitions up and, with a
/// shared store, hands them to another replica to read again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_longer_than_the_stall_timeout_keeps_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    // 20,000 events: more than the pipeline's channels hold, so the source waits.
    let emu = emulator_with(1000).await;
    let mut s = Pipeline::start_with(dir.path(), &emu, 2000, "", "rate_limit_eps = 1");
    s.wait(30, "both partitions opened", || {
        s.fwd.log_text().matches("partition opened").count() >= 2
    })
    .await;
    // The channels fill within a second; then the source waits, for longer than the 2 s
    // stall timeout.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stats = emu.stats();
    let log = s.fwd.log_text();
    s.fwd.kill9();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("\"WARN\"")).collect();
    assert_eq!(
        stats.receivers.len(),
        2,
        "each partition attached once: no reconnect while the sink was slow: {stats:?}\n{warnings:#?}"
    );
    assert!(!log.contains("receives nothing"), "no stall reported: {}", s.log_tail());
}
