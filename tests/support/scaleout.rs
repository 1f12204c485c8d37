//! Two replicas of the real binary on one Event Hub and one blob container, for
//! tests/eventhub_scaleout.rs: their configs, start and stop, outputs, and the ownership
//! blobs they write.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use m365_forwarder::sources::eventhub::blobstore::BlobStore;

use super::azurite::Azurite;
use super::eventhub_config::EventHubConfig;
use super::eventhub_emulator::{EventHubEmulator, NAMESPACE};
use super::forwarder::Forwarder;
use super::{count_ids, free_port, signin_record};

pub const HUB: &str = "insights-logs-signinlogs";
pub const GROUP: &str = "$Default";
pub const CONTAINER: &str = "checkpoints";
/// Ids of partition p are `p * STRIDE + i`.
pub const STRIDE: u64 = 1_000_000;

/// One replica of the binary: its own data directory, output file and API port.
pub struct Replica {
    pub out: PathBuf,
    pub api_port: u16,
    pub fwd: Forwarder,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.fwd.kill_if_running();
        // For debugging a failure: keep the logs where the variable says.
        if let Ok(dir) = std::env::var("EVENTHUB_TEST_LOG_DIR") {
            let log = &self.fwd.log;
            let name = log.parent().and_then(|p| p.file_name()).unwrap_or_default();
            let _ = std::fs::copy(log, Path::new(&dir).join(format!("{}.log", name.to_string_lossy())));
        }
    }
}

/// A replica in `dir` on `emu`, checkpointing to the container in `az`; not started.
pub fn replica(dir: &Path, emu: &EventHubEmulator, az: &Azurite) -> Replica {
    replica_with_storage(dir, emu, &az.connection_string())
}

/// A replica in `dir` on `emu`, checkpointing to the blob store `storage` (a connection
/// string); not started.
pub fn replica_with_storage(dir: &Path, emu: &EventHubEmulator, storage: &str) -> Replica {
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join("out.ndjson");
    let api_port = free_port();
    let text = EventHubConfig {
        emu,
        data: &dir.join("data"),
        out: &out,
        api_port,
        stall_timeout_ms: 5000,
        extra: "",
        sink_extra: "",
        blob_container: Some(CONTAINER),
    }
    .text();
    Replica {
        out,
        api_port,
        fwd: Forwarder::write(dir, &text).env("M365FWD_TEST_STORAGE", storage),
    }
}

impl Replica {
    pub fn start(&mut self) {
        self.fwd.spawn();
    }

    /// SIGTERM; the process must exit with success within 30 s.
    pub async fn stop(&mut self) {
        self.fwd.stop().await;
    }

    pub fn tail(&self) -> String {
        self.fwd.log_tail(20)
    }

    /// Partitions this replica wrote events of.
    pub fn partitions(&self) -> BTreeSet<u64> {
        count_ids(&self.out).keys().map(|i| i / STRIDE).collect()
    }
}

pub fn fill(emu: &EventHubEmulator, partitions: u64, first: u64, bodies: u64, per: u64) {
    for p in 0..partitions {
        for b in 0..bodies {
            let base = p * STRIDE + first + b * per;
            let records: Vec<String> = (base..base + per)
                .map(|i| signin_record(&format!("evt-{i}"), i as u32))
                .collect();
            emu.enqueue(p as usize, format!("{{\"records\":[{}]}}", records.join(",")));
        }
    }
}

pub async fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// Partitions per owner in the blob store.
pub async fn owners(s: &BlobStore) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for o in s.ownerships(NAMESPACE, HUB, GROUP).await.unwrap_or_default() {
        if let Some(owner) = o.owner_id {
            m.entry(owner).or_default().insert(o.partition_id);
        }
    }
    m
}

pub fn merged(replicas: &[&Replica]) -> HashMap<u64, u32> {
    let mut all = HashMap::new();
    for r in replicas {
        for (id, n) in count_ids(&r.out) {
            *all.entry(id).or_insert(0) += n;
        }
    }
    all
}

/// Ids of every partition in `first..end` that are missing, and the duplicates.
pub fn check(all: &HashMap<u64, u32>, partitions: u64, end: u64) -> (Vec<u64>, Vec<u64>) {
    let mut missing = Vec::new();
    let mut dups = Vec::new();
    for p in 0..partitions {
        for i in 0..end {
            match all.get(&(p * STRIDE + i)) {
                None => missing.push(p * STRIDE + i),
                Some(n) if *n > 1 => dups.push(p * STRIDE + i),
                _ => {}
            }
        }
    }
    (missing, dups)
}

/// Wait until two owners hold two partitions each and nothing changes for a while.
pub async fn settle(s: &BlobStore) {
    let ok = wait_for(Duration::from_secs(60), || {
        let o = futures_block(owners(s));
        o.len() == 2 && o.values().all(|p| p.len() == 2)
    })
    .await;
    assert!(ok, "ownership split: {:?}", owners(s).await);
    // A claim takes effect when the new owner's receiver attaches and steals the link of the
    // old one; until then the old owner still reads (the SDKs' in-flight window). Wait until
    // the split has not changed for 3 s (several load-balancing cycles) before the data.
    let mut settled = owners(s).await;
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while since.elapsed() < Duration::from_secs(3) {
        assert!(Instant::now() < deadline, "the split keeps changing: {settled:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = owners(s).await;
        if now != settled {
            settled = now;
            since = Instant::now();
        }
    }
    assert!(
        settled.len() == 2 && settled.values().all(|p| p.len() == 2),
        "two partitions each: {settled:?}"
    );
}

/// Run a future to completion from a synchronous closure on the test's runtime.
pub fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
