//! Sinks: the `Sink` trait every output implements, its config trait, and the registry
//! of sink types. Retries, dead-lettering and acknowledgments live in `driver`.

pub mod blackhole;
pub mod driver;
pub mod file;
pub mod hec;
pub mod kafka;
pub mod ratelimit;
pub mod syslog;
pub mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ConfigIssue;
use crate::event::Event;
use crate::telemetry::{Health, Metrics};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The receiver is unavailable or refused the whole batch for now: retry later.
    #[error("{kind}: {message}")]
    Unavailable { kind: &'static str, message: String },
    #[error("cannot build sink: {0}")]
    Build(String),
}

impl SinkError {
    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Io(_) => "io",
            SinkError::Unavailable { kind, .. } => kind,
            SinkError::Build(_) => "build",
        }
    }
}

/// An event the receiver refused for good (bad format, too large, invalid): dead-lettered.
#[derive(Debug)]
pub struct Rejection {
    /// Index into the batch passed to `send`.
    pub index: usize,
    pub reason: &'static str,
    pub detail: String,
}

/// What a successful `send` reports: bytes written and events refused for good.
#[derive(Debug, Default)]
pub struct SendReport {
    pub bytes: u64,
    pub rejected: Vec<Rejection>,
}

/// What a sink gets from the pipeline when it starts: its name, the process metrics and
/// the readiness state.
#[derive(Clone, Debug)]
pub struct SinkContext {
    pub name: Arc<str>,
    /// Which of the sink's concurrent instances this is (0 for the first): start-up checks
    /// run on instance 0 only.
    pub instance: usize,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

/// How the driver groups pipeline batches before one `send` (a sink with its own batch
/// size, such as HEC): it takes the batches already waiting, and waits up to `max_wait`
/// for more, until `max_events` are together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_events: usize,
    pub max_wait: Duration,
}

/// One output. `send` returns only once the receiver has the events (written and flushed,
/// acknowledged by the broker or the indexer); an `Err` means nothing of the batch is
/// known to be delivered and the driver sends the whole batch again.
#[async_trait::async_trait]
pub trait Sink: Send {
    async fn send(&mut self, events: &[Event]) -> Result<SendReport, SinkError>;

    /// Called once by the driver before the first `send`: keep the context (metrics) and
    /// run a health check. An error is logged and shown on `/ready`; sending still starts.
    async fn start(&mut self, _ctx: &SinkContext) -> Result<(), SinkError> {
        Ok(())
    }

    /// Batching the driver should do for this sink; `None` (default): one pipeline batch
    /// per `send`.
    fn batch_limits(&self) -> Option<BatchLimits> {
        None
    }

    /// Flush and release resources at shutdown.
    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A configured sink type, validated and ready to build.
pub trait SinkConfig: Send + Sync + fmt::Debug {
    fn build(&self, name: &str) -> Result<Box<dyn Sink>, SinkError>;

    /// How many instances deliver batches at once (each built by `build`); default 1, so
    /// batches are delivered one after the other, in order.
    fn concurrency(&self) -> usize {
        1
    }

    /// The encoder whose output this sink sends for each event, run by the pipeline right
    /// after routing so that only the encoded bytes, not the record and its normalized form,
    /// wait in the sink's buffer ([`crate::event::Event::encoded`]). `None` (default): the
    /// sink encodes in `send`. The sink must send exactly what this encoder appends.
    fn encoder(&self) -> Option<Box<dyn crate::encode::Encoder>> {
        None
    }
}

type Factory = crate::config::Factory<Box<dyn SinkConfig>>;

/// Sink types by their `type` name. Add a connector here.
const REGISTRY: &[(&str, Factory)] = &[
    ("file", file::factory),
    ("console", file::console_factory),
    ("blackhole", blackhole::factory),
    ("kafka", kafka::factory),
    ("syslog", syslog::factory),
    ("splunk_hec", hec::factory),
];

pub fn types() -> Vec<&'static str> {
    REGISTRY.iter().map(|(n, _)| *n).collect()
}

pub fn build_config(
    ty: &str,
    name: &str,
    table: toml::Value,
    prefix: &str,
) -> Result<Box<dyn SinkConfig>, Vec<ConfigIssue>> {
    crate::config::build_component(REGISTRY, "sink", ty, name, table, prefix)
}
