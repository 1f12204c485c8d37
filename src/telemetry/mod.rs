//! Observability: Prometheus metrics, the `/metrics`, `/health` and `/ready` endpoints, and logging setup.

mod buffer;
mod http;
mod logging;
mod metrics;

pub use buffer::{BufferMetrics, BufferReasonLabels};
pub use http::{serve, Health};
pub use logging::{init_logging, LogFormat};
pub use metrics::{
    CategoryLabels, EventHubMetrics, GraphMetrics, Metrics, PartitionLabels, SinkCodeLabels, SinkLabels, SourceLabels,
    Summary, TenantLabels, TenantValueLabels,
};
