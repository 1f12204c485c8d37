//! Prometheus metrics of every component: events and bytes in and out, errors by type,
//! quarantined events, source lag, and end-to-end latency.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    pub component: String,
    pub component_kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub component: String,
    pub error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    pub source: String,
    pub category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

/// A sink and a code: HTTP status, HEC reply code, or a short outcome label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkCodeLabels {
    pub sink: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub source: String,
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantValueLabels {
    pub source: String,
    pub tenant: String,
    /// HTTP status, change type or filter reason, depending on the metric.
    pub value: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~9 hours.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 4.0, 13,
    ))
}

/// All metrics of one process.
/// Totals for the end-of-run summary of `demo` and `convert`.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub events_in: u64,
    pub delivered: BTreeMap<String, u64>,
    /// `stage:reason` → events.
    pub quarantined: BTreeMap<String, u64>,
    pub repaired: BTreeMap<String, u64>,
    pub by_category: BTreeMap<String, u64>,
}

impl Summary {
    pub fn quarantined_total(&self) -> u64 {
        self.quarantined.values().sum()
    }
}

/// All metrics of one process.
pub struct Metrics {
    registry: Mutex<Registry>,
    summary: Mutex<Summary>,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub source: String,
    pub partition: String,
}

/// Metrics of the Event Hub (AMQP) input, per source and partition. Events, bytes,
/// repaired and quarantined bodies use the shared component families.
#[derive(Default)]
pub struct EventHubMetrics {
    /// Last enqueued sequence number (partition properties) minus the checkpointed one.
    pub partition_lag: Family<PartitionLabels, Gauge>,
    /// Records whose `category` is not a known Entra or Defender category (forwarded as generic).
    pub unknown_categories: Family<CategoryLabels, Counter>,
    /// Events the service sent again after a reconnect and the source skipped (already emitted).
    pub redelivered: Family<PartitionLabels, Counter>,
    /// Receive streams that ended in an error or a disconnect and were reopened.
    pub reconnects: Family<PartitionLabels, Counter>,
    /// Partitions taken from this replica by another receiver (`amqp:link:stolen`).
    pub stolen: Family<PartitionLabels, Counter>,
}

impl EventHubMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "eventhub_partition_lag",
            "Last enqueued sequence number of the partition minus the checkpointed sequence number",
            self.partition_lag.clone(),
        );
        r.register(
            "eventhub_unknown_categories",
            "Records with a category the forwarder does not know, forwarded as generic events",
            self.unknown_categories.clone(),
        );
        r.register(
            "eventhub_redelivered",
            "Events received again after a reconnect and skipped because they were already read",
            self.redelivered.clone(),
        );
        r.register(
            "eventhub_reconnects",
            "Partition receive streams reopened after an error or a disconnect",
            self.reconnects.clone(),
        );
        r.register(
            "eventhub_partitions_stolen",
            "Partitions another receiver took from this replica (amqp:link:stolen)",
            self.stolen.clone(),
        );
    }

    pub fn partition(source: &str, partition: &str) -> PartitionLabels {
        PartitionLabels {
            source: source.to_string(),
            partition: partition.to_string(),
        }
    }
}

/// Metrics of the Graph pollers, per source and tenant.
#[derive(Default)]
pub struct GraphMetrics {
    pub requests: Family<TenantValueLabels, Counter>,
    pub token_requests: Family<TenantValueLabels, Counter>,
    pub throttle_waits: Family<TenantLabels, Counter>,
    pub throttle_wait_seconds: Family<TenantLabels, Counter<f64, AtomicU64>>,
    pub watermark_age_seconds: Family<TenantLabels, Gauge<f64, AtomicU64>>,
    pub pages: Family<TenantLabels, Counter>,
    pub partial_pages: Family<TenantLabels, Counter>,
    pub items: Family<TenantLabels, Counter>,
    pub unchanged_items: Family<TenantLabels, Counter>,
    pub change_events: Family<TenantValueLabels, Counter>,
    pub filtered: Family<TenantValueLabels, Counter>,
    pub poll_errors: Family<TenantValueLabels, Counter>,
}

impl GraphMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "graph_requests",
            "Graph and token requests by HTTP status (`error` when no response came)",
            self.requests.clone(),
        );
        r.register(
            "graph_token_requests",
            "Token requests by outcome (ok, or the OAuth error code)",
            self.token_requests.clone(),
        );
        r.register(
            "graph_throttle_waits",
            "Waits imposed by a 429/503 answer or the per-tenant request budget",
            self.throttle_waits.clone(),
        );
        r.register(
            "graph_throttle_wait_seconds",
            "Time spent waiting on Retry-After, backoff and the per-tenant request budget",
            self.throttle_wait_seconds.clone(),
        );
        r.register(
            "graph_watermark_age_seconds",
            "Now minus the tenant's watermark (newest last-updated time fully read)",
            self.watermark_age_seconds.clone(),
        );
        r.register("graph_pages", "Graph list pages read", self.pages.clone());
        r.register(
            "graph_partial_pages",
            "206 Partial Content pages (the watermark was held)",
            self.partial_pages.clone(),
        );
        r.register(
            "graph_items",
            "Graph objects read (incidents, alerts, risk records)",
            self.items.clone(),
        );
        r.register(
            "graph_unchanged_items",
            "Objects read again with nothing new (overlap re-reads, untracked changes)",
            self.unchanged_items.clone(),
        );
        r.register(
            "graph_change_events",
            "Change events emitted, by change type",
            self.change_events.clone(),
        );
        r.register(
            "graph_filtered",
            "Objects dropped by the noise filters, by the filter that dropped them",
            self.filtered.clone(),
        );
        r.register(
            "graph_poll_errors",
            "Poll cycles that ended in an error, by error kind",
            self.poll_errors.clone(),
        );
    }

    pub fn tenant(source: &str, tenant: &str) -> TenantLabels {
        TenantLabels {
            source: source.to_string(),
            tenant: tenant.to_string(),
        }
    }

    pub fn tenant_value(source: &str, tenant: &str, value: &str) -> TenantValueLabels {
        TenantValueLabels {
            source: source.to_string(),
            tenant: tenant.to_string(),
            value: value.to_string(),
        }
    }
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
        r.register(
            "component_received_events",
            "Events a component received",
            m.events_in.clone(),
        );
        r.register(
            "component_received_bytes",
            "Bytes of raw records a component received",
            m.bytes_in.clone(),
        );
        r.register(
            "component_sent_events",
            "Events a component delivered (acknowledged by the receiver)",
            m.events_out.clone(),
        );
        r.register(
            "component_sent_bytes",
            "Encoded bytes a component delivered",
            m.bytes_out.clone(),
        );
        r.register("component_errors", "Errors by component and type", m.errors.clone());
        r.register(
            "quarantined_events",
            "Events written to the dead-letter file, by stage and reason",
            m.quarantined.clone(),
        );
        r.register(
            "repaired_bodies",
            "Malformed bodies repaired before parsing, by repair",
            m.repaired_bodies.clone(),
        );
        r.register(
            "source_events_by_category",
            "Events read, by source and category",
            m.events_by_category.clone(),
        );
        r.register(
            "unrouted_events",
            "Events no sink took (filtered out everywhere)",
            m.unrouted.clone(),
        );
        r.register(
            "detections_correlated",
            "Detections seen first through the other input (Graph or Event Hub)",
            m.detections_correlated.clone(),
        );
        r.register(
            "detections_suppressed",
            "Duplicate detections dropped (normalize.suppress_duplicate_detections)",
            m.detections_suppressed.clone(),
        );
        r.register(
            "source_lag_seconds",
            "Receive time minus event time of the newest event read",
            m.source_lag_seconds.clone(),
        );
        r.register(
            "checkpoint_commits",
            "Checkpoint writes per source",
            m.checkpoint_commits.clone(),
        );
        r.register(
            "time_assumed_utc",
            "Event times without a zone (e.g. `3/9/2026 7:43:05 AM`), read as UTC",
            m.time_assumed_utc.clone(),
        );
        r.register(
            "sink_retries",
            "Send attempts that failed and were retried",
            m.sink_retries.clone(),
        );
        r.register(
            "event_to_ack_seconds",
            "Event time to sink acknowledgment",
            m.latency_event_to_ack.clone(),
        );
        r.register(
            "receive_to_ack_seconds",
            "Time from reading an event to its sink acknowledgment",
            m.latency_receive_to_ack.clone(),
        );
        let sink_families: [(&str, &str, &Family<SinkLabels, Counter>); 6] = [
            (
                "sink_messages",
                "Messages written by message-oriented sinks",
                &m.sink_messages,
            ),
            (
                "sink_truncated_messages",
                "Messages cut to fit a size limit, each carrying a truncation marker",
                &m.sink_truncated,
            ),
            (
                "sink_split_events",
                "Events split into several messages (incident parts)",
                &m.sink_split,
            ),
            (
                "sink_altered_messages",
                "Messages with characters replaced because the format cannot carry them",
                &m.sink_altered,
            ),
            (
                "sink_connections",
                "Connections (re)established by stream sinks",
                &m.sink_connects,
            ),
            (
                "sink_replayed_messages",
                "Messages written again after a connection loss",
                &m.sink_replayed,
            ),
        ];
        for (name, help, f) in sink_families {
            r.register(name, help, f.clone());
        }
        r.register(
            "sink_requests",
            "Requests by HTTP status (error: no response)",
            m.sink_requests.clone(),
        );
        r.register(
            "sink_ack_timeouts",
            "Requests sent again because their indexer acknowledgment did not come in time",
            m.sink_ack_timeouts.clone(),
        );
        r.register(
            "sink_acks_pending",
            "Requests waiting for an indexer acknowledgment",
            m.sink_acks_pending.clone(),
        );
        r.register(
            "sink_rejected_events",
            "Events the receiver refused for good (dead-lettered), by reply code",
            m.sink_rejected.clone(),
        );
        r.register(
            "sink_throttled_seconds",
            "Time spent waiting for the rate limit",
            m.sink_throttled_seconds.clone(),
        );
        r.register(
            "sink_buffered_batches",
            "Batches waiting in the sink's bounded buffer (compare with sink_buffer_capacity_batches)",
            m.sink_buffered_batches.clone(),
        );
        r.register(
            "sink_buffer_capacity_batches",
            "Size of the sink's bounded buffer in batches",
            m.sink_buffer_capacity.clone(),
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

    fn comp(component: &str, kind: &str) -> ComponentLabels {
        ComponentLabels {
            component: component.to_string(),
            component_kind: kind.to_string(),
        }
    }

    pub fn component_in(&self, component: &str, kind: &str, events: u64, bytes: u64) {
        if kind == "source" {
            self.summary.lock().unwrap_or_else(|e| e.into_inner()).events_in += events;
        }
        let l = Self::comp(component, kind);
        self.events_in.get_or_create(&l).inc_by(events);
        self.bytes_in.get_or_create(&l).inc_by(bytes);
    }

    pub fn component_out(&self, component: &str, kind: &str, events: u64, bytes: u64) {
        if kind == "sink" {
            *self
                .summary
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .delivered
                .entry(component.to_string())
                .or_default() += events;
        }
        let l = Self::comp(component, kind);
        self.events_out.get_or_create(&l).inc_by(events);
        self.bytes_out.get_or_create(&l).inc_by(bytes);
    }

    /// Count events read by category (called once per batch with the batch's tallies).
    pub fn categories(&self, counts: &BTreeMap<(Arc<str>, Arc<str>), u64>) {
        let mut sum = self.summary.lock().unwrap_or_else(|e| e.into_inner());
        for ((source, cat), n) in counts {
            *sum.by_category.entry(cat.to_string()).or_default() += n;
            self.events_by_category
                .get_or_create(&CategoryLabels {
                    source: source.to_string(),
                    category: cat.to_string(),
                })
                .inc_by(*n);
        }
    }

    /// How full a sink's buffer is: `queued` of `capacity` batches.
    pub fn sink_buffer(&self, sink: &str, queued: usize, capacity: usize) {
        let l = SinkLabels { sink: sink.to_string() };
        self.sink_buffered_batches.get_or_create(&l).set(queued as i64);
        self.sink_buffer_capacity.get_or_create(&l).set(capacity as i64);
    }

    pub fn error(&self, component: &str, error_type: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                component: component.to_string(),
                error_type: error_type.to_string(),
            })
            .inc();
    }

    pub fn quarantine(&self, stage: &str, reason: &str, n: u64) {
        *self
            .summary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .quarantined
            .entry(format!("{stage}:{reason}"))
            .or_default() += n;
        self.quarantined
            .get_or_create(&ErrorLabels {
                component: stage.to_string(),
                error_type: reason.to_string(),
            })
            .inc_by(n);
    }

    pub fn repaired(&self, source: &str, repair: &str) {
        *self
            .summary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .repaired
            .entry(repair.to_string())
            .or_default() += 1;
        self.repaired_bodies
            .get_or_create(&ErrorLabels {
                component: source.to_string(),
                error_type: repair.to_string(),
            })
            .inc();
    }

    /// Adds `n` to a per-sink counter family.
    pub fn sink_count(family: &Family<SinkLabels, Counter>, sink: &str, n: u64) {
        if n > 0 {
            family.get_or_create(&SinkLabels { sink: sink.to_string() }).inc_by(n);
        }
    }

    /// Adds one to a per-sink, per-code counter family.
    pub fn sink_code(family: &Family<SinkCodeLabels, Counter>, sink: &str, code: &str, n: u64) {
        family
            .get_or_create(&SinkCodeLabels {
                sink: sink.to_string(),
                code: code.to_string(),
            })
            .inc_by(n);
    }

    pub fn summary(&self) -> Summary {
        self.summary.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
