//! The real binary killed with SIGKILL mid-run and restarted loses nothing; SIGTERM drains,
//! commits and exits 0.

mod support;

use std::path::Path;
use std::time::Duration;

use support::forwarder::Forwarder;
use support::*;

fn config_text(dir: &Path, input: &Path, output: &Path, follow: bool) -> String {
    format!(
        r#"
data_dir = "{data}"
[api]
address = "127.0.0.1:0"
[pipeline]
batch_max_events = 200
checkpoint_interval_ms = 20
drain_timeout_secs = 10
[sources.files]
type = "replay"
paths = ["{input}"]
follow = {follow}
[sinks.out]
type = "file"
path = "{output}"
encoding = "raw"
"#,
        data = dir.join("data").display(),
        input = input.display(),
        output = output.display(),
    )
}

#[test]
fn sigkill_mid_run_then_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let output = dir.path().join("out.ndjson");
    let total = 40_000usize;
    write_ndjson(&input, total);
    let mut fwd = Forwarder::write(dir.path(), &config_text(dir.path(), &input, &output, false));

    // Kill it three times at growing points of progress.
    let mut kills = 0;
    for threshold in [2_000usize, 12_000, 25_000] {
        fwd.spawn();
        let reached = wait_until(Duration::from_secs(60), || lines(&output) >= threshold);
        let status = fwd.try_wait().unwrap();
        if reached && status.is_none() {
            fwd.kill9();
            kills += 1;
        } else {
            let _ = fwd.wait();
        }
    }
    assert!(kills >= 1, "the forwarder was killed at least once mid-run");
    // Final run to completion.
    fwd.spawn();
    assert!(fwd.exits_within(Duration::from_secs(120)), "final run ends by itself");
    assert!(fwd.wait().unwrap().success(), "{}", fwd.log_text());

    let counts = count_ids(&output);
    let missing: Vec<u64> = (0..total as u64).filter(|i| !counts.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "{} events missing after {kills} SIGKILLs, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let duplicates: u32 = counts.values().map(|c| c - 1).sum();
    // In flight per kill: 4 channels of 2..4 batches of 200 plus the commit interval.
    let window = kills as u32 * 16 * 200;
    assert!(
        duplicates <= window,
        "{duplicates} duplicates after {kills} kills exceed the in-flight window {window}"
    );
    // Every line in the output is whole (no torn writes).
    for line in std::fs::read_to_string(&output).unwrap().lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    eprintln!("{kills} SIGKILLs, {total} events, {duplicates} duplicates");
}

#[test]
fn sigterm_drains_commits_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let output = dir.path().join("out.ndjson");
    write_ndjson(&input, 3_000);
    let mut fwd = Forwarder::start(dir.path(), &config_text(dir.path(), &input, &output, true));
    assert!(
        wait_until(Duration::from_secs(60), || lines(&output) >= 3_000),
        "all events delivered while following"
    );
    fwd.terminate();
    assert!(fwd.exits_within(Duration::from_secs(30)), "stops after SIGTERM");
    let status = fwd.wait().unwrap();
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    let log_text = fwd.log_text();
    assert!(log_text.contains("SIGTERM"), "{log_text}");
    // The checkpoint covers the whole file: a restart forwards nothing again.
    let store = m365_forwarder::checkpoint::FileCheckpointStore::open(&dir.path().join("data")).unwrap();
    use m365_forwarder::checkpoint::CheckpointStore;
    let cps = store.list("files").unwrap();
    assert_eq!(cps.len(), 1);
    assert_eq!(cps[0].1, std::fs::metadata(&input).unwrap().len().to_string());
}
