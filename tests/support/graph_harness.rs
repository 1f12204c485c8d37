//! Harness of the Graph source tests: a pipeline config pointing at the emulator, a sink
//! that collects what a SIEM would receive, and waiting helpers.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use m365_forwarder::checkpoint::{CheckpointKey, CheckpointStore, FileCheckpointStore};
use m365_forwarder::config::{Config, SinkCommon};
use m365_forwarder::event::{Event, EventKind};
use m365_forwarder::pipeline::{Pipeline, PipelineError, RunReport};
use m365_forwarder::sinks::{SendReport, Sink, SinkError};
use m365_forwarder::telemetry::Metrics;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::graph_emulator::Emulator;

pub const TA: &str = "d13c513a-42f8-4da1-97b1-165f0971b7c4";
pub const TB: &str = "5f1e8c2a-9b7d-4e3f-a1c2-3d4e5f6a7b8c";

/// One event as the SIEM gets it.
#[derive(Clone, Debug)]
pub struct Got {
    pub kind: EventKind,
    pub change: Option<String>,
    pub fields: Vec<String>,
    pub tenant: Option<String>,
    pub entity: Option<String>,
    pub id: String,
    pub raw: Value,
    pub ocsf: Option<Value>,
}

/// Collects delivered events; after `accept_sends` successful sends it refuses everything
/// (a receiver that went down).
pub struct Collect {
    pub got: Arc<Mutex<Vec<Got>>>,
    pub accept_sends: usize,
    sends: usize,
}

impl Collect {
    pub fn new(got: Arc<Mutex<Vec<Got>>>) -> Collect {
        Collect {
            got,
            accept_sends: usize::MAX,
            sends: 0,
        }
    }
}

#[async_trait::async_trait]
impl Sink for Collect {
    async fn send(&mut self, events: &[Event]) -> Result<SendReport, SinkError> {
        if self.sends >= self.accept_sends {
            return Err(SinkError::Unavailable {
                kind: "test_down",
                message: "receiver down".into(),
            });
        }
        self.sends += 1;
        let mut got = self.got.lock().unwrap();
        for e in events {
            let raw: Value = serde_json::from_slice(&e.raw).unwrap();
            got.push(Got {
                kind: e.meta.kind,
                change: e.meta.change_type.as_deref().map(str::to_string),
                fields: e
                    .meta
                    .changed_fields
                    .as_deref()
                    .map(<[String]>::to_vec)
                    .unwrap_or_default(),
                tenant: e.meta.tenant.as_deref().map(str::to_string),
                entity: e.meta.entity_key.as_deref().map(str::to_string),
                id: raw["id"].as_str().unwrap_or("").to_string(),
                raw,
                ocsf: e.normalized.as_ref().map(|n| n.ocsf().clone()),
            });
        }
        Ok(SendReport::default())
    }
}

/// A tenant with a client secret (given through `${ENV:-default}` interpolation).
pub fn secret_tenant(tenant: &str, client: &str, secret: &str) -> String {
    format!(
        "[[sources.graph.tenants]]\ntenant_id = \"{tenant}\"\nclient_id = \"{client}\"\nclient_secret = \"${{M365FWD_TEST_UNSET_SECRET:-{secret}}}\"\n"
    )
}

/// Test defaults that `extra` does not set itself.
fn defaults(extra: &str) -> String {
    [
        "start_time = \"2026-11-20T00:00:00Z\"",
        "poll_interval_secs = 0.25",
        "retry_initial_ms = 50",
    ]
    .iter()
    .filter(|d| !extra.contains(d.split(' ').next().unwrap()))
    .map(|d| format!("{d}\n"))
    .collect()
}

/// The pipeline config: one Graph source of `ty` against the emulator, `extra` source keys.
pub fn config(emu: &Emulator, dir: &Path, ty: &str, extra: &str, tenants: &str) -> Config {
    let text = format!(
        r#"
data_dir = "{data}"
[api]
enabled = false
[pipeline]
checkpoint_interval_ms = 20
drain_timeout_secs = 2
[sources.graph]
type = "{ty}"
cloud = "custom"
login_host = "{base}"
graph_host = "{base}"
ca_file = "{ca}"
{defaults}
{extra}
{tenants}
[sinks.unused]
type = "blackhole"
filter.kinds = ["hunting"]
"#,
        data = dir.join("data").display(),
        base = emu.base,
        ca = emu.ca_file.display(),
        defaults = defaults(extra),
    );
    Config::from_str(&text, Path::new("graph-test.toml")).unwrap_or_else(|e| panic!("{e}"))
}

pub struct Run {
    pub handle: tokio::task::JoinHandle<Result<RunReport, PipelineError>>,
    pub stop: CancellationToken,
    pub got: Arc<Mutex<Vec<Got>>>,
    pub metrics: Arc<Metrics>,
}

pub fn open_store(dir: &Path) -> Arc<dyn CheckpointStore> {
    Arc::new(FileCheckpointStore::open(&dir.join("data")).unwrap())
}

pub fn start(config: Config, store: Arc<dyn CheckpointStore>, accept_sends: usize) -> Run {
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut sink = Collect::new(got.clone());
    sink.accept_sends = accept_sends;
    let common = SinkCommon {
        retry_initial_ms: 20,
        retry_max_ms: 100,
        ..SinkCommon::default()
    };
    let p = Pipeline::new(config)
        .with_checkpoint_store(store)
        .with_sink("siem", common, Box::new(sink));
    let metrics = p.metrics();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(p.run(stop.clone()));
    Run {
        handle,
        stop,
        got,
        metrics,
    }
}

impl Run {
    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    pub async fn finish(self) -> RunReport {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("pipeline stops")
            .unwrap()
            .unwrap()
    }

    /// The value of a Graph metric line with these label values.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let text = self.metrics.encode();
        text.lines()
            .filter(|l| {
                l.starts_with(&format!("m365fwd_{name}{{")) || l.starts_with(&format!("m365fwd_{name}_total{{"))
            })
            .filter(|l| labels.iter().all(|x| l.contains(&format!("\"{x}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

pub async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Events per (kind, id).
pub fn tally(got: &[Got]) -> std::collections::BTreeMap<(String, String), usize> {
    let mut m = std::collections::BTreeMap::new();
    for g in got {
        *m.entry((g.kind.to_string(), g.id.clone())).or_insert(0) += 1;
    }
    m
}

/// The committed poll state of a tenant.
pub fn checkpoint(store: &Arc<dyn CheckpointStore>, tenant: &str, partition: &str) -> Option<Value> {
    store
        .get(&CheckpointKey::new("graph", Some(tenant), partition))
        .unwrap()
        .map(|v| serde_json::from_str(&v).unwrap())
}

/// Number of poll cycles a tenant started (first-page requests, not nextLinks or retries).
pub fn cycles(emu: &Emulator, tenant: &str) -> usize {
    let reqs = emu.requests(tenant);
    reqs.iter()
        .enumerate()
        .filter(|(i, r)| !r.query.contains("$skiptoken") && (*i == 0 || reqs[i - 1].status < 300))
        .count()
}
