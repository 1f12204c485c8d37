//! Prometheus metrics of every component: events and bytes in and out, errors by type,
//! quarantined events, source lag, and end-to-end latency. This module holds the
//! process-wide [`Metrics`] and its registry (registration and text rendering); the label
//! sets, the input-specific families and the recording helpers are in the submodules.

mod labels;
mod record;
mod sources;

use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

pub use labels::{
    CategoryLabels, ComponentLabels, ErrorLabels, PartitionLabels, SinkCodeLabels, SinkLabels, SourceLabels,
    TenantLabels, TenantValueLabels,
};
pub use record::Summary;
pub use sources::{EventHubMetrics, GraphMetrics};

/// Registers metric families in order, each with its name (without the `m365fwd_` prefix) and
/// help text: `register_families!(registry, ("name", "help", family), ...)`. The registry gets
/// a clone of each family, which shares its samples. tests/docs.rs reads the names out of these
/// tuples.
macro_rules! register_families {
    ($registry:expr, $(($name:literal, $help:literal, $family:expr)),+ $(,)?) => {
        $($registry.register($name, $help, $family.clone());)+
    };
}
pub(crate) use register_families;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~9 hours.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 4.0, 13,
    ))
}

/// All metrics of one process.
pub struct Metrics {
    registry: Mutex<Registry>,
    summary: Mutex<Summary>,
    /// Category names used as labels so far (see [`Metrics::category_label`]).
    category_names: Mutex<std::collections::HashSet<String>>,
    pub events_in: Family<ComponentLabels, Counter>,
    pub bytes_in: Family<ComponentLabels, Counter>,
    pub events_out: Family<ComponentLabels, Counter>,
    pub bytes_out: Family<ComponentLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub quarantined: Family<ErrorLabels, Counter>,
    pub repaired_bodies: Family<ErrorLabels, Counter>,
    pub events_by_category: Family<CategoryLabels, Counter>,
    pub unrouted: Family<SourceLabels, Counter>,
    pub detections_correlated: Family<SourceLabels, Counter>,
    pub detections_suppressed: Family<SourceLabels, Counter>,
    pub source_lag_seconds: Family<SourceLabels, Gauge<f64, AtomicU64>>,
    pub checkpoint_commits: Family<SourceLabels, Counter>,
    pub time_assumed_utc: Family<SourceLabels, Counter>,
    pub sink_retries: Family<SinkLabels, Counter>,
    pub latency_event_to_ack: Family<SinkLabels, Histogram, fn() -> Histogram>,
    pub latency_receive_to_ack: Family<SinkLabels, Histogram, fn() -> Histogram>,
    /// Messages written by message-oriented sinks (syslog): one event may make several.
    pub sink_messages: Family<SinkLabels, Counter>,
    /// Messages cut to fit a size limit, each with an in-band truncation marker.
    pub sink_truncated: Family<SinkLabels, Counter>,
    /// Events split into several messages (incident parts).
    pub sink_split: Family<SinkLabels, Counter>,
    /// Messages in which characters the format cannot carry were replaced.
    pub sink_altered: Family<SinkLabels, Counter>,
    /// Connections (re)established by stream sinks.
    pub sink_connects: Family<SinkLabels, Counter>,
    /// Messages written again after a connection loss (the replay window).
    pub sink_replayed: Family<SinkLabels, Counter>,
    /// Requests by HTTP status (`error` when no response came).
    pub sink_requests: Family<SinkCodeLabels, Counter>,
    /// Requests sent again because their acknowledgment did not come in time.
    pub sink_ack_timeouts: Family<SinkLabels, Counter>,
    /// Requests waiting for an indexer acknowledgment.
    pub sink_acks_pending: Family<SinkLabels, Gauge>,
    /// Events the receiver refused for good, by its reply code.
    pub sink_rejected: Family<SinkCodeLabels, Counter>,
    /// Time spent waiting for the rate limit.
    pub sink_throttled_seconds: Family<SinkLabels, Counter<f64, AtomicU64>>,
    /// Batches waiting in a sink's bounded buffer, and that buffer's size.
    pub sink_buffered_batches: Family<SinkLabels, Gauge>,
    pub sink_buffer_capacity: Family<SinkLabels, Gauge>,
    pub graph: GraphMetrics,
    pub eventhub: EventHubMetrics,
    pub buffer: super::buffer::BufferMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("m365fwd");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            summary: Mutex::new(Summary::default()),
            category_names: Mutex::new(std::collections::HashSet::new()),
            events_in: Family::default(),
            bytes_in: Family::default(),
            events_out: Family::default(),
            bytes_out: Family::default(),
            errors: Family::default(),
            quarantined: Family::default(),
            repaired_bodies: Family::default(),
            events_by_category: Family::default(),
            unrouted: Family::default(),
            detections_correlated: Family::default(),
            detections_suppressed: Family::default(),
            source_lag_seconds: Family::default(),
            checkpoint_commits: Family::default(),
            time_assumed_utc: Family::default(),
            sink_retries: Family::default(),
            latency_event_to_ack: Family::new_with_constructor(latency_histogram),
            latency_receive_to_ack: Family::new_with_constructor(latency_histogram),
            sink_messages: Family::default(),
            sink_truncated: Family::default(),
            sink_split: Family::default(),
            sink_altered: Family::default(),
            sink_connects: Family::default(),
            sink_replayed: Family::default(),
            sink_requests: Family::default(),
            sink_ack_timeouts: Family::default(),
            sink_acks_pending: Family::default(),
            sink_rejected: Family::default(),
            sink_throttled_seconds: Family::default(),
            sink_buffered_batches: Family::default(),
            sink_buffer_capacity: Family::default(),
            graph: GraphMetrics::default(),
            eventhub: EventHubMetrics::default(),
            buffer: Default::default(),
        };
        register_families!(
            r,
            ("component_received_events", "Events a component received", m.events_in),
            (
                "component_received_bytes",
                "Bytes of raw records a component received",
                m.bytes_in
            ),
            (
                "component_sent_events",
                "Events a component delivered (acknowledged by the receiver)",
                m.events_out
            ),
            (
                "component_sent_bytes",
                "Encoded bytes a component delivered",
                m.bytes_out
            ),
            ("component_errors", "Errors by component and type", m.errors),
            (
                "quarantined_events",
                "Events written to the dead-letter file, by stage and reason",
                m.quarantined
            ),
            (
                "repaired_bodies",
                "Malformed bodies repaired before parsing, by repair",
                m.repaired_bodies
            ),
            (
                "source_events_by_category",
                "Events read, by source and category",
                m.events_by_category
            ),
            (
                "unrouted_events",
                "Events no sink took (filtered out everywhere)",
                m.unrouted
            ),
            (
                "detections_correlated",
                "Detections seen first through the other input (Graph or Event Hub)",
                m.detections_correlated
            ),
            (
                "detections_suppressed",
                "Duplicate detections dropped (normalize.suppress_duplicate_detections)",
                m.detections_suppressed
            ),
            (
                "source_lag_seconds",
                "Receive time minus event time of the newest event read",
                m.source_lag_seconds
            ),
            (
                "checkpoint_commits",
                "Checkpoint writes per source",
                m.checkpoint_commits
            ),
            (
                "time_assumed_utc",
                "Event times without a zone (e.g. `3/9/2026 7:43:05 AM`), read as UTC",
                m.time_assumed_utc
            ),
            (
                "sink_retries",
                "Send attempts that failed and were retried",
                m.sink_retries
            ),
            (
                "event_to_ack_seconds",
                "Event time to sink acknowledgment",
                m.latency_event_to_ack
            ),
            (
                "receive_to_ack_seconds",
                "Time from reading an event to its sink acknowledgment",
                m.latency_receive_to_ack
            ),
            (
                "sink_messages",
                "Messages written by message-oriented sinks",
                m.sink_messages
            ),
            (
                "sink_truncated_messages",
                "Messages cut to fit a size limit, each carrying a truncation marker",
                m.sink_truncated
            ),
            (
                "sink_split_events",
                "Events split into several messages (incident parts)",
                m.sink_split
            ),
            (
                "sink_altered_messages",
                "Messages with characters replaced because the format cannot carry them",
                m.sink_altered
            ),
            (
                "sink_connections",
                "Connections (re)established by stream sinks",
                m.sink_connects
            ),
            (
                "sink_replayed_messages",
                "Messages written again after a connection loss",
                m.sink_replayed
            ),
            (
                "sink_requests",
                "Requests by HTTP status (error: no response)",
                m.sink_requests
            ),
            (
                "sink_ack_timeouts",
                "Requests sent again because their indexer acknowledgment did not come in time",
                m.sink_ack_timeouts
            ),
            (
                "sink_acks_pending",
                "Requests waiting for an indexer acknowledgment",
                m.sink_acks_pending
            ),
            (
                "sink_rejected_events",
                "Events the receiver refused for good (dead-lettered), by reply code",
                m.sink_rejected
            ),
            (
                "sink_throttled_seconds",
                "Time spent waiting for the rate limit",
                m.sink_throttled_seconds
            ),
            (
                "sink_buffered_batches",
                "Batches waiting in the sink's bounded buffer (compare with sink_buffer_capacity_batches)",
                m.sink_buffered_batches
            ),
            (
                "sink_buffer_capacity_batches",
                "Size of the sink's bounded buffer in batches",
                m.sink_buffer_capacity
            ),
        );
        m.graph.register(&mut r);
        m.eventhub.register(&mut r);
        m.buffer.register(&mut r);
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = r;
        m
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &r).expect("writing to a String");
        out
    }
}
