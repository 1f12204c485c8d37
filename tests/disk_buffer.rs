//! The disk buffer with the real binary: a disk-buffered Splunk HEC sink keeps the source's
//! checkpoint moving while the collector is down (every request answered 503), the process
//! is killed with SIGKILL during that outage, and after a restart every id reaches the
//! collector from the buffer once it answers again (not from re-reading the source).

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::forwarder::Forwarder;
use support::hec_emulator::{HecEmulator, Script};
use support::*;

const TOKEN: &str = "3f2b1c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

#[test]
fn sigkill_during_a_collector_outage_then_restart_delivers_every_id_from_the_buffer() {
    let total: usize = std::env::var("DISK_BUFFER_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hec = rt.block_on(HecEmulator::start(
        &[(TOKEN, true)],
        Script {
            busy_next: u32::MAX,
            count_only: true,
            ..Script::default()
        },
    ));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    write_ndjson(&input, total);
    let port = free_port();
    let buffer_dir = dir.path().join("data/buffers/hec");
    let mut child = Forwarder::write(
        dir.path(),
        &format!(
            r#"
data_dir = "{data}"
[api]
address = "127.0.0.1:{port}"
[pipeline]
batch_max_events = 200
checkpoint_interval_ms = 50
drain_timeout_secs = 5
[sources.files]
type = "replay"
paths = ["{input}"]
[sinks.hec]
type = "splunk_hec"
endpoint = "{hec}"
token = "{TOKEN}"
encoder.hec.payload = "raw"
retry_initial_ms = 50
retry_max_ms = 500
acknowledgements.poll_interval_ms = 100
[sinks.hec.buffer]
type = "disk"
max_bytes = 268435456
fsync = "batch"
"#,
            data = dir.path().join("data").display(),
            input = input.display(),
            hec = hec.url(),
        ),
    );
    let log = child.log.clone();

    // Run 1: the collector is down. Everything goes to the disk buffer and is acknowledged
    // upstream there; the source's checkpoint reaches the end of the file.
    child.spawn();
    let written = wait_until(Duration::from_secs(60), || {
        metric_sum(&scrape(port), "m365fwd_buffer_written_events_total") as usize >= total
    });
    let text = scrape(port);
    assert!(written, "all events written to the buffer: {text}");
    assert!(
        wait_until(Duration::from_secs(10), || dir
            .path()
            .join("data/checkpoints.json")
            .exists()),
        "a checkpoint was committed"
    );
    std::thread::sleep(Duration::from_millis(300)); // a few more commit intervals
    assert!(hec.indexed_ids().is_empty(), "nothing can be indexed during the outage");
    let buffered = dir_bytes(&buffer_dir);
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running (retrying the collector)"
    );
    child.kill9();
    assert!(buffered > 1_000_000, "the events are on disk: {buffered} bytes");

    // Run 2: the collector answers again; the buffer replays everything, the source has
    // nothing left to read (its checkpoint moved in run 1), and the run ends by itself.
    hec.script(|s| s.busy_next = 0);
    let started = Instant::now();
    child.spawn();
    let done = wait_until(Duration::from_secs(120), || child.try_wait().unwrap().is_some());
    if !done {
        child.kill9();
    }
    assert!(done, "run 2 ends by itself: {}", std::fs::read_to_string(&log).unwrap());
    assert!(
        child.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let mut counts: HashMap<u64, u32> = HashMap::new();
    for id in hec.indexed_ids() {
        *counts.entry(id).or_default() += 1;
    }
    let missing: Vec<u64> = (0..total as u64).filter(|i| !counts.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "{} ids missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let twice = counts.values().filter(|c| **c > 1).count();
    assert_eq!(
        twice, 0,
        "each id once: the source did not read the file again and the buffer replayed each record once"
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("replaying them"),
        "run 2 says it replays an earlier run's records"
    );
    eprintln!(
        "disk buffer: {total} events buffered during the outage ({buffered} bytes on disk), SIGKILL, restart: all {total} delivered in {:.1} s, none twice",
        started.elapsed().as_secs_f64()
    );
}
