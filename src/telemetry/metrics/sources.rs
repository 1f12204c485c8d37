//! Metric families of the inputs: the Event Hub (AMQP) receiver and the Graph pollers,
//! and how they are registered.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{register_families, CategoryLabels, PartitionLabels, TenantLabels, TenantValueLabels};

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
    pub(super) fn register(&self, r: &mut Registry) {
        register_families!(
            r,
            (
                "eventhub_partition_lag",
                "Last enqueued sequence number of the partition minus the checkpointed sequence number",
                self.partition_lag
            ),
            (
                "eventhub_unknown_categories",
                "Records with a category the forwarder does not know, forwarded as generic events",
                self.unknown_categories
            ),
            (
                "eventhub_redelivered",
                "Events received again after a reconnect and skipped because they were already read",
                self.redelivered
            ),
            (
                "eventhub_reconnects",
                "Partition receive streams reopened after an error or a disconnect",
                self.reconnects
            ),
            (
                "eventhub_partitions_stolen",
                "Partitions another receiver took from this replica (amqp:link:stolen)",
                self.stolen
            ),
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
    pub rescans: Family<TenantLabels, Counter>,
    pub rescan_found: Family<TenantLabels, Counter>,
    pub change_events: Family<TenantValueLabels, Counter>,
    pub filtered: Family<TenantValueLabels, Counter>,
    pub poll_errors: Family<TenantValueLabels, Counter>,
}

impl GraphMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        register_families!(
            r,
            (
                "graph_requests",
                "Graph and token requests by HTTP status (`error` when no response came)",
                self.requests
            ),
            (
                "graph_token_requests",
                "Token requests by outcome (ok, or the OAuth error code)",
                self.token_requests
            ),
            (
                "graph_throttle_waits",
                "Waits imposed by a 429/503 answer or the per-tenant request budget",
                self.throttle_waits
            ),
            (
                "graph_throttle_wait_seconds",
                "Time spent waiting on Retry-After, backoff and the per-tenant request budget",
                self.throttle_wait_seconds
            ),
            (
                "graph_watermark_age_seconds",
                "Now minus the tenant's watermark (newest last-updated time fully read)",
                self.watermark_age_seconds
            ),
            ("graph_pages", "Graph list pages read", self.pages),
            (
                "graph_partial_pages",
                "206 Partial Content pages (the watermark was held)",
                self.partial_pages
            ),
            (
                "graph_items",
                "Graph objects read (incidents, alerts, risk records)",
                self.items
            ),
            (
                "graph_unchanged_items",
                "Objects read again with nothing new (overlap re-reads, untracked changes)",
                self.unchanged_items
            ),
            (
                "graph_rescans",
                "Deep re-scans: polls that read rescan_lookback_secs behind the watermark",
                self.rescans
            ),
            (
                "graph_rescan_found",
                "Objects only a deep re-scan found (listed later than the overlap allows)",
                self.rescan_found
            ),
            (
                "graph_change_events",
                "Change events emitted, by change type",
                self.change_events
            ),
            (
                "graph_filtered",
                "Objects dropped by the noise filters, by the filter that dropped them",
                self.filtered
            ),
            (
                "graph_poll_errors",
                "Poll cycles that ended in an error, by error kind",
                self.poll_errors
            ),
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
