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
    pub source_lag_seconds: Family<SourceLabels, Gauge<f64, AtomicU64>>,
    pub checkpoint_commits: Family<SourceLabels, Counter>,
    pub sink_retries: Family<SinkLabels, Counter>,
    pub latency_event_to_ack: Family<SinkLabels, Histogram, fn() -> Histogram>,
    pub latency_receive_to_ack: Family<SinkLabels, Histogram, fn() -> Histogram>,
    pub graph: GraphMetrics,
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
            source_lag_seconds: Family::default(),
            checkpoint_commits: Family::default(),
            sink_retries: Family::default(),
            latency_event_to_ack: Family::new_with_constructor(latency_histogram),
            latency_receive_to_ack: Family::new_with_constructor(latency_histogram),
            graph: GraphMetrics::default(),
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
        m.graph.register(&mut r);
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

    pub fn summary(&self) -> Summary {
        self.summary.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
