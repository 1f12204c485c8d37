//! The operator endpoints: `/metrics` (Prometheus text), `/health` (process alive) and
//! `/ready` (sources started and no sink failing).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::Metrics;

/// Readiness of the pipeline, shared by components.
#[derive(Debug, Default)]
pub struct Health {
    started: std::sync::atomic::AtomicBool,
    /// Sinks currently failing, with the last error.
    failing: Mutex<BTreeMap<String, String>>,
    /// Sources that cannot connect, with the last error.
    sources_failing: Mutex<BTreeMap<String, String>>,
}

impl Health {
    pub fn set_started(&self) {
        self.started.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn sink_failing(&self, sink: &str, error: &str) {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sink.to_string(), error.to_string());
    }

    pub fn sink_ok(&self, sink: &str) {
        let mut f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        if !f.is_empty() {
            f.remove(sink);
        }
    }

    /// A source cannot reach its input (it keeps retrying); readiness fails meanwhile.
    pub fn source_failing(&self, source: &str, error: &str) {
        self.sources_failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(source.to_string(), error.to_string());
    }

    pub fn source_ok(&self, source: &str) {
        self.sources_failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(source);
    }

    /// `Ok` when ready, else the reasons.
    pub fn ready(&self) -> Result<(), String> {
        if !self.started.load(std::sync::atomic::Ordering::Acquire) {
            return Err("starting".into());
        }
        let f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let s = self.sources_failing.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_empty() && s.is_empty() {
            Ok(())
        } else {
            Err(s
                .iter()
                .map(|(k, v)| format!("source {k} failing: {v}"))
                .chain(f.iter().map(|(k, v)| format!("sink {k} failing: {v}")))
                .collect::<Vec<_>>()
                .join("\n"))
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(s): State<AppState>) -> (StatusCode, String) {
    match s.health.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// Bind the address now (so a bad or busy address fails at start) and serve until `stop`.
pub async fn serve(
    address: SocketAddr,
    metrics_: Arc<Metrics>,
    health_: Arc<Health>,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(AppState {
            metrics: metrics_,
            health: health_,
        });
    tracing::info!(address = %local, "serving /metrics, /health and /ready");
    let handle = tokio::spawn(async move {
        let res = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "api server stopped");
        }
    });
    Ok((local, handle))
}
