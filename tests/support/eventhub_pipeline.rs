//! One forwarder reading the Event Hubs emulator into a file, for tests/eventhub_source.rs:
//! its config, start, restart and stop, waits with the log's tail on failure, and what it
//! left behind (output ids, checkpoints, dead letters, metrics, readiness). Filling the
//! emulator's partitions is `scaleout::fill` (ids of partition p are `p * STRIDE + i`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::eventhub_config::EventHubConfig;
use super::eventhub_emulator::EventHubEmulator;
use super::forwarder::Forwarder;
use super::scaleout::{wait_for, STRIDE};
use super::{count_ids, free_port, lines};

/// The forwarder under test with its `eh` source and `out` file sink.
pub struct Pipeline {
    pub out: PathBuf,
    pub data: PathBuf,
    pub api_port: u16,
    pub fwd: Forwarder,
}

impl Pipeline {
    /// Write the config for `emu` into `dir` and start the forwarder.
    pub fn start(dir: &Path, emu: &EventHubEmulator) -> Pipeline {
        Pipeline::start_with(dir, emu, 2000, "", "")
    }

    /// [`Pipeline::start`] with another stall timeout and more keys of the `eh` source and
    /// of the `out` sink.
    pub fn start_with(dir: &Path, emu: &EventHubEmulator, stall_ms: u64, extra: &str, sink_extra: &str) -> Pipeline {
        let out = dir.join("out.ndjson");
        let data = dir.join("data");
        let api_port = free_port();
        let text = EventHubConfig {
            emu,
            data: &data,
            out: &out,
            api_port,
            stall_timeout_ms: stall_ms,
            blob_container: None,
            extra,
            sink_extra,
        }
        .text();
        Pipeline {
            fwd: Forwarder::start(dir, &text),
            out,
            data,
            api_port,
        }
    }

    /// Start again with the same config, data and output (after [`Pipeline::stop`] or a kill).
    pub fn restart(&mut self) {
        self.fwd.spawn();
    }

    /// SIGTERM; the process must exit with success within 30 s.
    pub async fn stop(&mut self) {
        self.fwd.stop().await;
    }

    /// Output ids and how often each came.
    pub fn counts(&self) -> HashMap<u64, u32> {
        count_ids(&self.out)
    }

    /// Lines written to the output.
    pub fn lines(&self) -> usize {
        lines(&self.out)
    }

    /// Wait up to `secs` for `f`; on a timeout the test fails with `what` and the log's tail.
    pub async fn wait(&self, secs: u64, what: &str, f: impl FnMut() -> bool) {
        let ok = wait_for(Duration::from_secs(secs), f).await;
        assert!(ok, "{what}: {} ids so far\n{}", self.counts().len(), self.log_tail());
    }

    /// Wait up to `secs` for `n` distinct ids in the output.
    pub async fn wait_ids(&self, n: usize, secs: u64, what: &str) {
        self.wait(secs, what, || self.counts().len() >= n).await;
    }

    /// Ids `p * STRIDE + 0..end` of both partitions missing from the output, and the extra
    /// copies of the others.
    pub fn missing_and_dups(&self, end: u64) -> (Vec<u64>, u32) {
        let counts = self.counts();
        let mut missing = Vec::new();
        let mut dups = 0;
        for p in 0..2 {
            let (m, d) = ids_in(p * STRIDE..p * STRIDE + end, &counts);
            missing.extend(m);
            dups += d;
        }
        (missing, dups)
    }

    /// Every id `0..end` of both partitions came exactly once.
    pub fn assert_exactly_once(&self, end: u64) {
        let counts = self.counts();
        for p in 0..2 {
            let (missing, dups) = ids_in(p * STRIDE..p * STRIDE + end, &counts);
            assert!(
                missing.is_empty() && dups == 0,
                "partition {p}: {} missing, {dups} duplicates",
                missing.len()
            );
        }
    }

    /// The whole log of the forwarder.
    pub fn log(&self) -> String {
        self.fwd.log_text()
    }

    /// The last lines of the log, a panic's message first.
    pub fn log_tail(&self) -> String {
        let log = self.fwd.log_text();
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
    pub fn checkpoints(&self) -> HashMap<String, (i64, String)> {
        let text = std::fs::read_to_string(self.data.join("checkpoints.json")).unwrap_or_default();
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

    /// Checkpointed sequence number of a partition.
    pub fn checkpoint(&self, partition: &str) -> Option<i64> {
        self.checkpoints().get(partition).map(|x| x.0)
    }

    pub fn dead_letters(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.data.join("dead-letter.ndjson"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `GET /metrics`; empty when it does not answer.
    pub async fn metrics(&self) -> String {
        let client = reqwest::Client::new();
        match client
            .get(format!("http://127.0.0.1:{}/metrics", self.api_port))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// `GET /ready`: status and body, `(0, "")` when it does not answer.
    pub async fn ready(&self) -> (u16, String) {
        let client = reqwest::Client::new();
        match client
            .get(format!("http://127.0.0.1:{}/ready", self.api_port))
            .send()
            .await
        {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }
}

/// Ids of `range` missing from `counts`, and the extra copies of the others.
pub fn ids_in(range: std::ops::Range<u64>, counts: &HashMap<u64, u32>) -> (Vec<u64>, u32) {
    let missing: Vec<u64> = range.clone().filter(|i| !counts.contains_key(i)).collect();
    let dups = range.filter_map(|i| counts.get(&i)).map(|c| c - 1).sum();
    (missing, dups)
}
