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
    /// Unavailable, and the receiver said when to try again (`Retry-After`).
    #[error("{kind}: {message} (retry after {}s)", retry_after.as_secs())]
    Throttled {
        kind: &'static str,
        message: String,
        retry_after: Duration,
    },
    #[error("cannot build sink: {0}")]
    Build(String),
}

impl SinkError {
    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Io(_) => "io",
            SinkError::Unavailable { kind, .. } | SinkError::Throttled { kind, .. } => kind,
            SinkError::Build(_) => "build",
        }
    }

    /// How long the receiver asked to be left alone, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SinkError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// An event the receiver refused for good (bad format, too large, invalid): dead-lettered.
#[derive(Clone, Debug)]
pub struct Rejection {
    /// Index into the batch passed to `send`.
    pub index: usize,
    pub reason: &'static str,
    pub detail: String,
}

/// What a successful `send` reports: bytes written, events refused for good and, for a
/// sink whose receiver acknowledges later, the wait for that acknowledgment.
#[derive(Debug, Default)]
pub struct SendReport {
    pub bytes: u64,
    pub rejected: Vec<Rejection>,
    /// `Some`: the batch is written but not yet acknowledged (a TCP acknowledgment, a HEC
    /// indexer acknowledgment). The driver lets the sink send the next batch meanwhile
    /// and counts this one delivered only when the future resolves `Ok`; an `Err` sends
    /// the whole batch again. `None`: delivered when `send` returns.
    pub settle: Option<Settle>,
}

/// The wait for a receiver's acknowledgment of a batch already written (see
/// [`SendReport::settle`]). It must not borrow the sink: the sink sends on meanwhile.
pub struct Settle(pub std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SinkError>> + Send>>);

impl Settle {
    pub fn new(f: impl std::future::Future<Output = Result<(), SinkError>> + Send + 'static) -> Settle {
        Settle(Box::pin(f))
    }
}

impl fmt::Debug for Settle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Settle(..)")
    }
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

/// One output. `send` returns once the receiver has the events (written and flushed,
/// acknowledged by the broker or the indexer), or once they are written with the wait for
/// the acknowledgment in [`SendReport::settle`]; an `Err` means nothing of the batch is
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

    /// How many batches may wait for their [`SendReport::settle`] at once; when that many
    /// wait, the driver sends nothing more until one settles (backpressure). Default 8.
    fn max_unsettled(&self) -> usize {
        8
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

/// Which batch a send was given: its length, where it is, and its first and last events'
/// positions (the driver sends the same batch again, unmoved, until it is taken).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BatchId {
    len: usize,
    at: usize,
    ends: Option<[EventAt; 2]>,
}

/// An event's source, partition, offset and index in its unit.
type EventAt = (Arc<str>, Arc<str>, u64, u32);

impl BatchId {
    pub fn of(events: &[Event]) -> BatchId {
        let pos = |e: &Event| {
            let p = &e.meta.position;
            (e.meta.source.clone(), p.partition.clone(), p.offset, p.index)
        };
        BatchId {
            len: events.len(),
            at: events.as_ptr() as usize,
            ends: events.first().zip(events.last()).map(|(a, b)| [pos(a), pos(b)]),
        }
    }
}
