//! Observability: Prometheus metrics, the `/metrics`, `/health` and `/ready` endpoints, and logging setup.

mod http;
mod logging;
mod metrics;

pub use http::{serve, Health};
pub use logging::{init_logging, LogFormat};
pub use metrics::{
    CategoryLabels, EventHubMetrics, GraphMetrics, Metrics, PartitionLabels, SinkCodeLabels, SinkLabels, SourceLabels,
    Summary, TenantLabels, TenantValueLabels,
};
