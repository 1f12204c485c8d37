//! Metrics of the per-sink disk buffers (`[sinks.NAME.buffer] type = "disk"`).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::metrics::register_families;
use super::SinkLabels;

/// A sink and why a disk-buffer record was skipped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BufferReasonLabels {
    pub sink: String,
    pub reason: String,
}

#[derive(Default)]
pub struct BufferMetrics {
    /// Bytes in the buffer not yet acknowledged by the sink.
    pub bytes: Family<SinkLabels, Gauge>,
    pub max_bytes: Family<SinkLabels, Gauge>,
    pub written_events: Family<SinkLabels, Counter>,
    pub replayed_events: Family<SinkLabels, Counter>,
    pub corrupt_records: Family<BufferReasonLabels, Counter>,
    pub blocked_seconds: Family<SinkLabels, Counter<f64, AtomicU64>>,
}

impl BufferMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        register_families!(
            r,
            (
                "buffer_bytes",
                "Bytes in the sink's disk buffer not yet acknowledged by the sink",
                self.bytes
            ),
            (
                "buffer_max_bytes",
                "Configured size limit of the sink's disk buffer",
                self.max_bytes
            ),
            (
                "buffer_written_events",
                "Events written to the sink's disk buffer (their upstream acknowledgments released)",
                self.written_events
            ),
            (
                "buffer_replayed_events",
                "Events read back from a disk buffer written by an earlier run",
                self.replayed_events
            ),
            (
                "buffer_corrupt_records",
                "Disk-buffer records skipped as torn or corrupt and written to the dead-letter file",
                self.corrupt_records
            ),
            (
                "buffer_blocked_seconds",
                "Time writes to the disk buffer waited because it was full (backpressure)",
                self.blocked_seconds
            ),
        );
    }

    pub fn sink(sink: &str) -> SinkLabels {
        SinkLabels { sink: sink.to_string() }
    }
}
