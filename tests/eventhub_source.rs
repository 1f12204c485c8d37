//! The `eventhub` (AMQP) input against the Event Hubs emulator in tests/support: the real
//! binary reads two partitions through azure_messaging_eventhubs, checkpoints per partition
//! after delivery, resumes after a restart and after `kill -9`, quarantines a poison body
//! once without blocking its partition, decodes gzip, forwards and counts unknown
//! categories, reconnects without loss when the emulator drops the connection or restarts, reports a
//! refused token (401) as an error and a readiness failure, and gives up a partition another
//! receiver steals (`amqp:link:stolen`), resuming it without loss.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::eventhub_emulator::EventHubEmulator;
use support::*;

const HUB: &str = "insights-logs-signinlogs";

/// One Event Hub body of sign-in records with ids `evt-first ..`.
fn body(first: u64, n: u64) -> String {
    let records: Vec<String> = (first..first + n)
        .map(|i| signin_record(&format!("evt-{i}"), i as u32))
        .collect();
    format!("{{\"records\":[{}]}}", records.join(","))
}

/// Enqueue `bodies` bodies of `per` records on a partition; ids start at `first`.
fn fill(emu: &EventHubEmulator, partition: usize, first: u64, bodies: u64, per: u64) {
    for b in 0..bodies {
        emu.enqueue(partition, body(first + b * per, per));
    }
}

struct Setup {
    config: PathBuf,
    out: PathBuf,
    data: PathBuf,
    log: PathBuf,
    api_port: u16,
}

fn setup(dir: &Path, emu: &EventHubEmulator) -> Setup {
    let out = dir.join("out.ndjson");
    let data = dir.join("data");
    let api_port = free_port();
    let text = format!(
        r#"
data_dir = "{data}"
[api]
address = "127.0.0.1:{api_port}"
[pipeline]
batch_max_events = 500
checkpoint_interval_ms = 50
drain_timeout_secs = 10
[sources.eh]
type = "eventhub"
connection_string = "{cs}"
custom_endpoint = "{endpoint}"
ownership_interval_ms = 500
lag_interval_ms = 200
stall_timeout_ms = 2000
[sinks.out]
type = "file"
path = "{out}"
encoding = "raw"
"#,
        data = data.display(),
        cs = emu.connection_string(),
        endpoint = emu.endpoint(),
        out = out.display(),
    );
    let config = dir.join("forwarder.toml");
    std::fs::write(&config, text).unwrap();
    Setup {
        config,
        out,
        data,
        log: dir.join("run.log"),
        api_port,
    }
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    // For debugging a failure: keep the whole log where the variable says.
    if let Ok(dir) = std::env::var("EVENTHUB_TEST_LOG_DIR") {
        let _ = std::fs::write(Path::new(&dir).join("eventhub-run.log"), &log);
    }
    let all: Vec<&str> = log.lines().collect();
    // A panic's message first (its backtrace would push it out of the tail).
    let mut out: Vec<&str> = Vec::new();
    for (i, l) in all.iter().enumerate() {
        if l.contains("panicked at") {
            out.extend(all[i..(i + 3).min(all.len())].iter());
        }
    }
    out.extend(all[all.len().saturating_sub(25)..].iter());
    out.join("\n")
}

/// `partition -> (sequence_number, offset)` from the embedded checkpoint file.
fn checkpoints(data: &Path) -> HashMap<String, (i64, String)> {
    let text = std::fs::read_to_string(data.join("checkpoints.json")).unwrap_or_default();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return HashMap::new();
    };
    let mut out = HashMap::new();
    for e in v["checkpoints"].as_array().into_iter().flatten() {
        if e["source"] != "eh" {
            continue;
        }
        let c: serde_json::Value = serde_json::from_str(e["value"].as_str().unwrap()).unwrap();
        out.insert(
            e["partition"].as_str().unwrap().to_string(),
            (
                c["sequence_number"].as_i64().unwrap(),
                c["offset"].as_str().unwrap_or_default().to_string(),
            ),
        );
    }
    out
}

/// Wait without blocking the emulator's runtime.
async fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    f()
}

/// The binary under test; killed if a test fails before stopping it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start(s: &Setup) -> Running {
    Running(spawn_run(&s.config, &s.log))
}

async fn stop(child: &mut Running) {
    let child = &mut child.0;
    unsafe_kill(child.id(), 15);
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn ids_in(range: std::ops::Range<u64>, counts: &HashMap<u64, u32>) -> (Vec<u64>, u32) {
    let missing: Vec<u64> = range.clone().filter(|i| !counts.contains_key(i)).collect();
    let dups = range.filter_map(|i| counts.get(&i)).map(|c| c - 1).sum();
    (missing, dups)
}

async fn metrics(port: u16) -> String {
    let client = reqwest::Client::new();
    match client.get(format!("http://127.0.0.1:{port}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// (a) 2 partitions × 10k records arrive once each with per-partition checkpoints, and
/// (b) a restart resumes from the checkpoints with no loss and nothing read twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_partitions_of_10k_arrive_once_and_a_restart_resumes_from_the_checkpoints() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let emu = EventHubEmulator::start(HUB, 2).await;
    fill(&emu, 0, 0, 1000, 10);
    fill(&emu, 1, 1_000_000, 1000, 10);
    let s = setup(dir.path(), &emu);

    let mut child = start(&s);
    let all = |c: &HashMap<u64, u32>| c.len();
    let ok = wait_for(Duration::from_secs(120), || all(&count_ids(&s.out)) >= 20_000).await;
    assert!(ok, "20k events: got {}\n{}", lines(&s.out), log_tail(&s.log));
    // Both checkpoints reach the last message of their partition.
    let ok = wait_for(Duration::from_secs(10), || {
        let c = checkpoints(&s.data);
        c.get("0").map(|x| x.0) == Some(999) && c.get("1").map(|x| x.0) == Some(999)
    })
    .await;
    assert!(ok, "checkpoints: {:?}", checkpoints(&s.data));
    let lag = metrics(s.api_port).await;
    stop(&mut child).await;
    let counts = count_ids(&s.out);
    for (range, p) in [(0..10_000, 0), (1_000_000..1_010_000, 1)] {
        let (missing, dups) = ids_in(range, &counts);
        assert!(
            missing.is_empty() && dups == 0,
            "partition {p}: {} missing, {dups} duplicates",
            missing.len()
        );
    }
    assert_eq!(lines(&s.out), 20_000, "nothing else written");
    assert!(lag.contains("eventhub_partition_lag"), "lag metric exported");
    let first_run = started.elapsed();

    // More data while it is down; the restart continues after the checkpoints.
    fill(&emu, 0, 10_000, 100, 10);
    fill(&emu, 1, 1_010_000, 100, 10);
    let before = emu.stats().receivers.len();
    let mut child = start(&s);
    let ok = wait_for(Duration::from_secs(60), || count_ids(&s.out).len() >= 22_000).await;
    assert!(ok, "after restart: {}\n{}", count_ids(&s.out).len(), log_tail(&s.log));
    let ok = wait_for(Duration::from_secs(10), || {
        let c = checkpoints(&s.data);
        c.get("0").map(|x| x.0) == Some(1099) && c.get("1").map(|x| x.0) == Some(1099)
    })
    .await;
    assert!(ok, "checkpoints after restart: {:?}", checkpoints(&s.data));
    stop(&mut child).await;
    let counts = count_ids(&s.out);
    for (range, p) in [(0..11_000, 0), (1_000_000..1_011_000, 1)] {
        let (missing, dups) = ids_in(range, &counts);
        assert!(
            missing.is_empty() && dups == 0,
            "partition {p}: {} missing, {dups} duplicates",
            missing.len()
        );
    }
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

fn dead_letters(data: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(data.join("dead-letter.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
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
    let s = setup(dir.path(), &emu);

    let mut child = start(&s);
    let want: Vec<u64> = (0..16).chain(100..105).collect();
    let ok = wait_for(Duration::from_secs(60), || {
        let c = count_ids(&s.out);
        want.iter().all(|i| c.contains_key(i))
    })
    .await;
    assert!(
        ok,
        "events after the poison body arrive: {:?}\n{}",
        count_ids(&s.out),
        log_tail(&s.log)
    );
    let ok = wait_for(Duration::from_secs(10), || {
        checkpoints(&s.data).get("0").map(|x| x.0) == Some(4)
    })
    .await;
    assert!(
        ok,
        "the checkpoint moves past the poison body: {:?}",
        checkpoints(&s.data)
    );
    let m = metrics(s.api_port).await;
    stop(&mut child).await;

    let dl = dead_letters(&s.data);
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
    let mut child = start(&s);
    let ok = wait_for(Duration::from_secs(60), || count_ids(&s.out).contains_key(&20)).await;
    assert!(ok, "after restart\n{}", log_tail(&s.log));
    stop(&mut child).await;
    assert_eq!(dead_letters(&s.data).len(), 1, "quarantined once");
    let (missing, dups) = ids_in(0..16, &count_ids(&s.out));
    assert!(missing.is_empty() && dups == 0, "{missing:?} {dups}");
    eprintln!("eventhub poison/gzip/unknown: {:?}", started.elapsed());
}

/// (h) the emulator drops the connection mid-stream: the source reconnects and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_mid_stream_reconnects_without_loss() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let emu = EventHubEmulator::start(HUB, 2).await;
    fill(&emu, 0, 0, 500, 10);
    fill(&emu, 1, 1_000_000, 500, 10);
    emu.drop_after_deliveries(300);
    let s = setup(dir.path(), &emu);
    let mut child = start(&s);
    let ok = wait_for(Duration::from_secs(60), || emu.stats().drops >= 1).await;
    assert!(ok, "the emulator dropped the connection\n{}", log_tail(&s.log));
    // Drop once more while events are flowing again.
    emu.drop_after_deliveries(200);
    let ok = wait_for(Duration::from_secs(120), || count_ids(&s.out).len() >= 10_000).await;
    let stats = emu.stats();
    assert!(
        ok,
        "after reconnect: {} events, {stats:?}\n{}",
        count_ids(&s.out).len(),
        log_tail(&s.log)
    );
    stop(&mut child).await;
    let counts = count_ids(&s.out);
    let (m0, d0) = ids_in(0..5_000, &counts);
    let (m1, d1) = ids_in(1_000_000..1_005_000, &counts);
    assert!(m0.is_empty() && m1.is_empty(), "missing {} + {}", m0.len(), m1.len());
    assert!(stats.drops >= 2 && stats.connections >= 3, "{stats:?}");
    eprintln!(
        "eventhub connection drops: {} drops, {} connections, {} duplicates, {:?}",
        stats.drops,
        stats.connections,
        d0 + d1,
        started.elapsed()
    );
    assert_eq!(
        d0 + d1,
        0,
        "events re-sent after a reconnect are skipped, not forwarded twice"
    );
}

/// The Event Hubs service restarts mid-stream (port closed for 3 s, every connection gone,
/// the same events stored): the source reconnects and nothing is lost or forwarded twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_restarting_mid_stream_causes_a_reconnect_not_a_loss() {
    let dir = tempfile::tempdir().unwrap();
    let emu = EventHubEmulator::start(HUB, 2).await;
    fill(&emu, 0, 0, 500, 10);
    fill(&emu, 1, 1_000_000, 500, 10);
    let s = setup(dir.path(), &emu);
    let mut child = start(&s);
    let ok = wait_for(Duration::from_secs(60), || lines(&s.out) >= 2_000).await;
    assert!(ok, "first events\n{}", log_tail(&s.log));
    emu.restart(Duration::from_secs(3)).await;
    let ok = wait_for(Duration::from_secs(120), || count_ids(&s.out).len() >= 10_000).await;
    let stats = emu.stats();
    assert!(
        ok,
        "after the restart: {} events, {stats:?}\n{}",
        count_ids(&s.out).len(),
        log_tail(&s.log)
    );
    stop(&mut child).await;
    let counts = count_ids(&s.out);
    let (m0, d0) = ids_in(0..5_000, &counts);
    let (m1, d1) = ids_in(1_000_000..1_005_000, &counts);
    assert!(m0.is_empty() && m1.is_empty(), "missing {} + {}", m0.len(), m1.len());
    assert!(stats.restarts == 1 && stats.connections >= 2, "{stats:?}");
    assert_eq!(d0 + d1, 0, "events sent again after the restart are skipped");
}

/// `kill -9` of the binary mid-stream, then a restart: nothing is lost (at least once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_loses_nothing() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let emu = EventHubEmulator::start(HUB, 2).await;
    fill(&emu, 0, 0, 500, 10);
    fill(&emu, 1, 1_000_000, 500, 10);
    let s = setup(dir.path(), &emu);
    let mut child = start(&s);
    let ok = wait_for(Duration::from_secs(60), || lines(&s.out) >= 3_000).await;
    assert!(ok, "first events\n{}", log_tail(&s.log));
    kill9(&mut child.0);
    let at_kill = lines(&s.out);
    let mut child = start(&s);
    let ok = wait_for(Duration::from_secs(90), || count_ids(&s.out).len() >= 10_000).await;
    assert!(ok, "after restart: {}\n{}", count_ids(&s.out).len(), log_tail(&s.log));
    stop(&mut child).await;
    let counts = count_ids(&s.out);
    let (m0, d0) = ids_in(0..5_000, &counts);
    let (m1, d1) = ids_in(1_000_000..1_005_000, &counts);
    assert!(m0.is_empty() && m1.is_empty(), "missing {} + {}", m0.len(), m1.len());
    eprintln!(
        "eventhub kill -9 at {at_kill} lines: {} duplicates re-read, {:?}",
        d0 + d1,
        started.elapsed()
    );
    assert!((d0 + d1) as usize <= at_kill, "re-reads stay within what was in flight");
}

async fn ready(port: u16) -> (u16, String) {
    let client = reqwest::Client::new();
    match client.get(format!("http://127.0.0.1:{port}/ready")).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
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
    fill(&emu, 0, 0, 10, 10);
    fill(&emu, 1, 1_000_000, 10, 10);
    let s = setup(dir.path(), &emu);
    let mut child = start(&s);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        last = ready(s.api_port).await;
        if last.0 == 503 && last.1.contains("source eh failing") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        last.0 == 503 && last.1.contains("source eh failing"),
        "readiness fails while tokens are refused: {last:?}\n{}",
        log_tail(&s.log)
    );
    let log = std::fs::read_to_string(&s.log).unwrap_or_default();
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
    assert_eq!(lines(&s.out), 0, "nothing read without authorization");
    assert!(!log.contains("SharedAccessSignature sr="), "no token in the log");

    emu.accept_all_tokens();
    let ok = wait_for(Duration::from_secs(90), || count_ids(&s.out).len() >= 200).await;
    assert!(ok, "reads once the token is accepted\n{}", log_tail(&s.log));
    let mut r = (0, String::new());
    for _ in 0..100 {
        r = ready(s.api_port).await;
        if r.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(r.0, 200, "ready again: {r:?}");
    stop(&mut child).await;
    let counts = count_ids(&s.out);
    let (m0, d0) = ids_in(0..100, &counts);
    let (m1, d1) = ids_in(1_000_000..1_000_100, &counts);
    assert!(
        m0.is_empty() && m1.is_empty() && d0 + d1 == 0,
        "{m0:?} {m1:?} {}",
        d0 + d1
    );
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
    let emu = EventHubEmulator::start(HUB, 2).await;
    fill(&emu, 0, 0, 100, 10);
    fill(&emu, 1, 1_000_000, 100, 10);
    let s = setup(dir.path(), &emu);
    let mut child = start(&s);
    let ok = wait_for(Duration::from_secs(60), || count_ids(&s.out).len() >= 2_000).await;
    assert!(ok, "first events\n{}", log_tail(&s.log));

    let other = emu.steal("$Default", 0, 10);
    let ok = wait_for(Duration::from_secs(10), || emu.stats().stolen >= 1).await;
    assert!(ok, "the source's receiver was detached");
    fill(&emu, 0, 1_000, 50, 10);
    fill(&emu, 1, 1_001_000, 50, 10);
    // Partition 1 goes on; partition 0 stays with the other consumer.
    let ok = wait_for(Duration::from_secs(30), || {
        let c = count_ids(&s.out);
        (1_001_000..1_001_500).all(|i| c.contains_key(&i))
    })
    .await;
    assert!(ok, "partition 1 is still read\n{}", log_tail(&s.log));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = count_ids(&s.out);
    assert!(
        !(1_000..1_500).any(|i| c.contains_key(&i)),
        "partition 0 is not read while another receiver holds it"
    );
    let log = std::fs::read_to_string(&s.log).unwrap_or_default();
    assert!(
        log.contains("partition taken by another receiver"),
        "{}",
        log_tail(&s.log)
    );

    emu.release(other);
    let ok = wait_for(Duration::from_secs(60), || count_ids(&s.out).len() >= 3_000).await;
    assert!(
        ok,
        "partition 0 resumes: {}\n{}",
        count_ids(&s.out).len(),
        log_tail(&s.log)
    );
    let m = metrics(s.api_port).await;
    stop(&mut child).await;
    let counts = count_ids(&s.out);
    let (m0, d0) = ids_in(0..1_500, &counts);
    let (m1, d1) = ids_in(1_000_000..1_001_500, &counts);
    assert!(m0.is_empty() && m1.is_empty(), "missing {} + {}", m0.len(), m1.len());
    assert_eq!(d0 + d1, 0, "the resumed partition continues after what was read");
    let stolen = m
        .lines()
        .find(|l| l.starts_with("m365fwd_eventhub_partitions_stolen_total") && l.contains("partition=\"0\""));
    assert!(stolen.is_some(), "stolen counted");
    let log = std::fs::read_to_string(&s.log).unwrap_or_default();
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
