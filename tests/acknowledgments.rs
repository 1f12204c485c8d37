//! End-to-end acknowledgment through the real pipeline: a failing sink never lets the
//! checkpoint pass an undelivered event, a new run resumes from the checkpoint, and a
//! stalled sink holds memory to the bounded in-flight window.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use m365_forwarder::checkpoint::{CheckpointKey, CheckpointStore, FileCheckpointStore};
use m365_forwarder::config::{Config, SinkCommon};
use m365_forwarder::event::Event;
use m365_forwarder::pipeline::Pipeline;
use m365_forwarder::sinks::{SendReport, Sink, SinkError};
use tokio_util::sync::CancellationToken;

/// What a test sink saw: ids delivered (acknowledged) in order.
#[derive(Default)]
struct Seen {
    delivered: Vec<u64>,
    attempts: usize,
    violations: Vec<String>,
}

/// A sink that fails its first `fail_first` sends, then succeeds `succeed` times, then
/// hangs forever (a receiver that stopped answering). On every send it checks that the
/// committed checkpoint covers only delivered events.
struct FlakySink {
    seen: Arc<Mutex<Seen>>,
    fail_first: usize,
    succeed: usize,
    store: Arc<dyn CheckpointStore>,
    key: CheckpointKey,
    /// Byte offset where each event's line ends, by id.
    line_end: Arc<HashMap<u64, u64>>,
}

fn id_of(e: &Event) -> u64 {
    let s = std::str::from_utf8(&e.raw).unwrap();
    let i = s.find("\"evt-").unwrap() + 5;
    let rest = &s[i..];
    rest[..rest.find('"').unwrap()].parse().unwrap()
}

#[async_trait::async_trait]
impl Sink for FlakySink {
    async fn send(&mut self, events: &[Event]) -> Result<SendReport, SinkError> {
        let attempt = {
            let mut seen = self.seen.lock().unwrap();
            seen.attempts += 1;
            // The invariant: every event whose line ends at or before the checkpoint was delivered.
            if let Some(cp) = self.store.get(&self.key).unwrap() {
                let cp: u64 = cp.parse().unwrap();
                let delivered: std::collections::HashSet<u64> = seen.delivered.iter().copied().collect();
                for (id, end) in self.line_end.iter() {
                    if *end <= cp && !delivered.contains(id) {
                        seen.violations
                            .push(format!("checkpoint {cp} passed undelivered evt-{id}"));
                    }
                }
            }
            seen.attempts
        };
        if attempt <= self.fail_first {
            return Err(SinkError::Unavailable {
                kind: "test_outage",
                message: format!("attempt {attempt} refused"),
            });
        }
        if attempt > self.fail_first + self.succeed {
            // Hang: the receiver stopped answering.
            std::future::pending::<()>().await;
        }
        let mut seen = self.seen.lock().unwrap();
        seen.delivered.extend(events.iter().map(id_of));
        Ok(SendReport::default())
    }
}

fn config(dir: &Path, input: &Path, batch: usize) -> Config {
    let text = format!(
        r#"
data_dir = "{data}"
[api]
enabled = false
[pipeline]
batch_max_events = {batch}
channel_capacity = 2
checkpoint_interval_ms = 10
drain_timeout_secs = 1
[sources.files]
type = "replay"
paths = ["{input}"]
[sinks.none]
type = "blackhole"
filter.kinds = ["incident"]
"#,
        data = dir.join("data").display(),
        input = input.display(),
    );
    Config::from_str(&text, Path::new("test.toml")).unwrap()
}

/// As [`config`] with batches of 100, the file followed: the source never ends by itself.
fn follow_config(dir: &Path, input: &Path) -> Config {
    let text = format!(
        "data_dir = {:?}\n[api]\nenabled = false\n[pipeline]\nbatch_max_events = 100\nchannel_capacity = 2\n\
         checkpoint_interval_ms = 10\ndrain_timeout_secs = 1\n[sources.files]\ntype = \"replay\"\npaths = [{:?}]\n\
         follow = true\n[sinks.none]\ntype = \"blackhole\"\nfilter.kinds = [\"incident\"]\n",
        dir.join("data").display().to_string(),
        input.display().to_string()
    );
    Config::from_str(&text, Path::new("test.toml")).unwrap()
}

fn line_ends(input: &Path) -> HashMap<u64, u64> {
    let text = std::fs::read_to_string(input).unwrap();
    let mut end = 0u64;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        end += line.len() as u64 + 1;
        out.insert(i as u64, end);
    }
    out
}

fn common() -> SinkCommon {
    SinkCommon {
        retry_initial_ms: 5,
        retry_max_ms: 20,
        ..SinkCommon::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_sink_never_lets_the_checkpoint_pass_and_a_new_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let total = 5_000u64;
    support::write_ndjson(&input, total as usize);
    let ends = Arc::new(line_ends(&input));
    let key = CheckpointKey::new("files", None, input.to_str().unwrap());
    let batch = 100;

    // Run 1: 4 failures, 10 good batches, then the sink hangs; shutdown gives up after the drain timeout.
    let store: Arc<dyn CheckpointStore> = Arc::new(FileCheckpointStore::open(&dir.path().join("data")).unwrap());
    let seen1 = Arc::new(Mutex::new(Seen::default()));
    let sink = FlakySink {
        seen: seen1.clone(),
        fail_first: 4,
        succeed: 10,
        store: store.clone(),
        key: key.clone(),
        line_end: ends.clone(),
    };
    let shutdown = CancellationToken::new();
    let p = Pipeline::new(config(dir.path(), &input, batch))
        .with_checkpoint_store(store.clone())
        .with_sink("flaky", common(), Box::new(sink));
    let stop = shutdown.clone();
    let seen_wait = seen1.clone();
    tokio::spawn(async move {
        // Stop once the sink has hung for a while.
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if seen_wait.lock().unwrap().attempts > 4 + 10 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                stop.cancel();
                return;
            }
        }
    });
    let report = tokio::time::timeout(Duration::from_secs(60), p.run(shutdown))
        .await
        .unwrap()
        .unwrap();
    assert!(report.unacknowledged_batches > 0, "the hung batch stays unacknowledged");
    let delivered1 = seen1.lock().unwrap().delivered.clone();
    assert_eq!(
        delivered1.len(),
        10 * batch,
        "ten batches delivered after four failures"
    );
    assert!(
        seen1.lock().unwrap().violations.is_empty(),
        "{:?}",
        seen1.lock().unwrap().violations
    );

    // The committed checkpoint is exactly the end of the delivered prefix.
    drop(store);
    let store: Arc<dyn CheckpointStore> = Arc::new(FileCheckpointStore::open(&dir.path().join("data")).unwrap());
    let cp: u64 = store
        .get(&key)
        .unwrap()
        .expect("a checkpoint was committed")
        .parse()
        .unwrap();
    let max_delivered = *delivered1.iter().max().unwrap();
    assert_eq!(
        cp, ends[&max_delivered],
        "checkpoint sits at the end of the last delivered line"
    );
    for id in 0..=max_delivered {
        assert!(delivered1.contains(&id), "prefix is contiguous: evt-{id}");
    }

    // Run 2, a "new process": a healthy sink gets everything from the checkpoint on.
    let seen2 = Arc::new(Mutex::new(Seen::default()));
    let sink = FlakySink {
        seen: seen2.clone(),
        fail_first: 0,
        succeed: usize::MAX / 2,
        store: store.clone(),
        key: key.clone(),
        line_end: ends.clone(),
    };
    let p = Pipeline::new(config(dir.path(), &input, batch))
        .with_checkpoint_store(store.clone())
        .with_sink("flaky", common(), Box::new(sink));
    let report = tokio::time::timeout(Duration::from_secs(60), p.run(CancellationToken::new()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.unacknowledged_batches, 0);
    let delivered2 = seen2.lock().unwrap().delivered.clone();
    assert_eq!(
        delivered2.first().copied(),
        Some(max_delivered + 1),
        "resumes right after the checkpoint"
    );
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for id in delivered1.iter().chain(delivered2.iter()) {
        *counts.entry(*id).or_default() += 1;
    }
    assert_eq!(counts.len() as u64, total, "every event arrived at least once");
    let dups = counts.values().filter(|&&c| c > 1).count();
    assert_eq!(dups, 0, "the checkpoint was exact, so nothing is sent twice here");
    let cp: u64 = store.get(&key).unwrap().unwrap().parse().unwrap();
    assert_eq!(
        cp,
        std::fs::metadata(&input).unwrap().len(),
        "checkpoint at end of file"
    );
}

/// A sink that never returns.
struct StalledSink;

#[async_trait::async_trait]
impl Sink for StalledSink {
    async fn send(&mut self, _events: &[Event]) -> Result<SendReport, SinkError> {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sink_bounds_what_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    support::write_ndjson(&input, 50_000);
    let batch = 100;
    let p = Pipeline::new(config(dir.path(), &input, batch)).with_sink("stalled", common(), Box::new(StalledSink));
    let metrics = p.metrics();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(p.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let read_early = metrics.summary().events_in;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let read = metrics.summary().events_in;
    assert_eq!(read, read_early, "reading stopped while the sink is stalled");
    // Channels of capacity 2 between 3 stages, a batch per worker and one held by each task.
    let window = (2 * 3 + 2 + 4) * batch as u64;
    assert!(read <= window, "{read} events read with a stalled sink; bound {window}");
    assert!(read > 0);
    // Buffer fill (docs/metrics.md, the dashboard): the stalled sink's buffer is full.
    let text = metrics.encode();
    for line in [
        "m365fwd_sink_buffered_batches{sink=\"stalled\"} 2",
        "m365fwd_sink_buffer_capacity_batches{sink=\"stalled\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(report.unacknowledged_batches > 0);
    // Nothing was acknowledged, so no checkpoint was written.
    let store = FileCheckpointStore::open(&dir.path().join("data")).unwrap();
    assert!(store.list("files").unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_full_dead_letter_diverts_a_stalled_sink_without_holding_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let total = 3_000;
    support::write_ndjson(&input, total);
    let p = Pipeline::new(config(dir.path(), &input, 100)).with_sink(
        "optional",
        SinkCommon {
            when_full: m365_forwarder::config::WhenFull::DeadLetter,
            buffer_max_batches: std::num::NonZeroUsize::new(1),
            ..common()
        },
        Box::new(StalledSink),
    );
    let metrics = p.metrics();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(p.run(shutdown.clone()));
    // The stalled sink holds at most its buffer and one batch; the rest is dead-lettered,
    // so the source reads everything.
    let dl = dir.path().join("data/dead-letter.ndjson");
    let start = std::time::Instant::now();
    while metrics.summary().events_in < total as u64 || support::lines(&dl) < total - 200 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "read {} of {total}",
            metrics.summary().events_in
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = std::fs::read_to_string(&dl).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["reason"], "sink_buffer_full");
    assert_eq!(first["stage"], "sink:optional");
    // Held by the stalled sink: its buffer (1 batch) and the batch it is sending.
    let diverted = support::lines(&dl);
    assert!(diverted >= total - 200 && diverted < total, "{diverted} dead-lettered");
}

/// A sink whose third send panics (a defect in a sink): it delivers its first two batches.
struct PanickingSink {
    seen: Arc<Mutex<Seen>>,
}

#[async_trait::async_trait]
impl Sink for PanickingSink {
    async fn send(&mut self, events: &[Event]) -> Result<SendReport, SinkError> {
        let mut seen = self.seen.lock().unwrap();
        seen.attempts += 1;
        if seen.attempts == 3 {
            drop(seen);
            panic!("a defect in the sink");
        }
        seen.delivered.extend(events.iter().map(id_of));
        Ok(SendReport::default())
    }
}

/// A sink dies (its delivery task panics) while a followed file is read, with a memory and
/// with a disk buffer: the run stops with an error naming the sink, promptly and without a
/// shutdown signal (an orchestrator then restarts it), instead of reading on with the sink
/// gone or stalling for good; the checkpoint never passes what the sink did not take, and
/// the next run delivers the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_dies_stops_the_run_with_an_error_and_the_next_run_resumes() {
    for disk in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.ndjson");
        let total = 2_000u64;
        support::write_ndjson(&input, total as usize);
        let cfg = |d: &Path| follow_config(d, &input);
        let mut common = common();
        if disk {
            common.buffer = toml::from_str("type = \"disk\"\nmax_bytes = 2097152").unwrap();
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let p = Pipeline::new(cfg(dir.path())).with_sink(
            "dies",
            common.clone(),
            Box::new(PanickingSink { seen: seen.clone() }),
        );
        let run = p.run(CancellationToken::new());
        let err = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("the run ends by itself")
            .expect_err("the run fails");
        assert!(
            err.to_string().contains("sink dies: a delivery task failed"),
            "disk {disk}: {err}"
        );

        // The next run, with a sink that works, delivers everything the first did not.
        let delivered_first: std::collections::HashSet<u64> = seen.lock().unwrap().delivered.iter().copied().collect();
        // Seeded with the first run's deliveries: the invariant holds over both runs.
        let again = Arc::new(Mutex::new(Seen {
            delivered: seen.lock().unwrap().delivered.clone(),
            ..Seen::default()
        }));
        let store: Arc<dyn CheckpointStore> = Arc::new(FileCheckpointStore::open(&dir.path().join("data")).unwrap());
        let key = CheckpointKey::new("files", None, input.to_str().unwrap());
        let ok = FlakySink {
            seen: again.clone(),
            fail_first: 0,
            succeed: usize::MAX / 2,
            store: store.clone(),
            key,
            line_end: Arc::new(line_ends(&input)),
        };
        let shutdown = CancellationToken::new();
        let p = Pipeline::new(cfg(dir.path()))
            .with_checkpoint_store(store)
            .with_sink("dies", common, Box::new(ok));
        let run = tokio::spawn(p.run(shutdown.clone()));
        let start = std::time::Instant::now();
        loop {
            let got: std::collections::HashSet<u64> = again.lock().unwrap().delivered.iter().copied().collect();
            if (0..total).all(|i| got.contains(&i) || delivered_first.contains(&i)) {
                break;
            }
            if run.is_finished() {
                panic!("disk {disk}: the second run ended: {:?}", run.await);
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "disk {disk}: {} of {total} after the restart",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        // With a disk buffer the source's checkpoint may pass what is durably in the buffer
        // (the buffer delivers it after the restart, as the loop above saw).
        let v = &again.lock().unwrap().violations;
        assert!(disk || v.is_empty(), "{:?}", &v[..v.len().min(3)]);
        assert!(!delivered_first.is_empty(), "the sink took two batches before it died");
    }
}

/// A checkpoint store whose first `fail` commits fail (a full disk for a moment).
#[derive(Debug)]
struct FailingFirst {
    inner: FileCheckpointStore,
    fail: std::sync::atomic::AtomicUsize,
}

impl CheckpointStore for FailingFirst {
    fn get(&self, key: &CheckpointKey) -> Result<Option<String>, m365_forwarder::checkpoint::CheckpointError> {
        self.inner.get(key)
    }
    fn commit(&self, values: &[(CheckpointKey, String)]) -> Result<(), m365_forwarder::checkpoint::CheckpointError> {
        use std::sync::atomic::Ordering;
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(m365_forwarder::checkpoint::CheckpointError::Io {
                path: "test".into(),
                source: std::io::Error::other("No space left on device"),
            });
        }
        self.inner.commit(values)
    }
    fn list(&self, source: &str) -> Result<Vec<(CheckpointKey, String)>, m365_forwarder::checkpoint::CheckpointError> {
        self.inner.list(source)
    }
}

/// A commit that fails is retried with the same values, though the partition has nothing
/// new to acknowledge: a followed file read whole and then quiet is checkpointed at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_checkpoint_commit_is_retried_without_new_acknowledgments() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    support::write_ndjson(&input, 50);
    let len = std::fs::metadata(&input).unwrap().len();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let store = Arc::new(FailingFirst {
        inner: FileCheckpointStore::open(&dir.path().join("data")).unwrap(),
        fail: std::sync::atomic::AtomicUsize::new(1),
    });
    let seen = Arc::new(Mutex::new(Seen::default()));
    let key = CheckpointKey::new("files", None, input.to_str().unwrap());
    let sink = FlakySink {
        seen: seen.clone(),
        fail_first: 0,
        succeed: usize::MAX / 2,
        store: store.clone(),
        key: key.clone(),
        line_end: Arc::new(line_ends(&input)),
    };
    let p = Pipeline::new(follow_config(dir.path(), &input))
        .with_checkpoint_store(store.clone())
        .with_sink("s", common(), Box::new(sink));
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(p.run(shutdown.clone()));
    let start = std::time::Instant::now();
    while store.get(&key).unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "never checkpointed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        store.fail.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the first commit failed"
    );
    assert_eq!(store.get(&key).unwrap().unwrap(), len.to_string());
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen.lock().unwrap().delivered.len(), 50);
}
