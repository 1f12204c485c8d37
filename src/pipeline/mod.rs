//! The topology: sources → normalize → route → sinks over bounded channels, with the
//! checkpoint committers, the operator API and graceful shutdown.

pub mod route;
pub mod router;
pub mod stages;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::ack::AckTracker;
use crate::buffer::DiskBuffer;
use crate::checkpoint::{CheckpointError, CheckpointStore, FileCheckpointStore};
use crate::config::{Config, SinkCommon};
use crate::deadletter::DeadLetter;
use crate::encode::Encoder;
use crate::normalize::{NormalizeOptions, Normalizer};
use crate::sinks::driver::{RetryPolicy, SinkDied, SinkDriver};
use crate::sinks::{Sink, SinkError};
use crate::sources::{Source, SourceContext};
use crate::telemetry::{Health, Metrics, Summary};

/// A sink's name, common options, its concurrent instances and the encoder the router runs
/// for it.
type SinkInstances = (String, SinkCommon, Vec<Box<dyn Sink>>, Option<Box<dyn Encoder>>);
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{file}: api.address: cannot listen on {address}: {source}")]
    Api {
        file: String,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("sink {name}: {source}")]
    Buffer {
        name: String,
        #[source]
        source: crate::buffer::log::LogError,
    },
    #[error("sink {name}: {source}")]
    SinkBuild {
        name: String,
        #[source]
        source: SinkError,
    },
    #[error("source {name}: {message}")]
    SourceBuild { name: String, message: String },
    /// A source failed, a sink died, or a batch failed for good: the run stopped early
    /// (nothing unacknowledged was checkpointed; a restart resumes from there).
    #[error("{0} failure(s): {1}")]
    Failed(usize, String),
}

/// Why a sink task ended with a failure (`None`: it ended normally).
fn sink_end(res: Result<Result<(), SinkDied>, tokio::task::JoinError>) -> Option<String> {
    match res {
        Ok(Ok(())) => None,
        Ok(Err(died)) => Some(died.to_string()),
        Err(e) => Some(format!("a sink task panicked: {e}")),
    }
}

/// What a finished run reports.
#[derive(Debug)]
pub struct RunReport {
    pub summary: Summary,
    /// Batches never acknowledged (their checkpoints did not move).
    pub unacknowledged_batches: u64,
    pub api_address: Option<SocketAddr>,
}

/// A pipeline ready to run. Extra sources and sinks can be added by code (tests, embedding).
pub struct Pipeline {
    config: Config,
    store: Option<Arc<dyn CheckpointStore>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    extra_sinks: Vec<(String, SinkCommon, Box<dyn Sink>)>,
    extra_sources: Vec<(String, Box<dyn Source>)>,
}

impl Pipeline {
    pub fn new(config: Config) -> Pipeline {
        Pipeline {
            config,
            store: None,
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
            extra_sinks: Vec::new(),
            extra_sources: Vec::new(),
        }
    }

    /// Use this checkpoint store instead of the file store in `data_dir`.
    pub fn with_checkpoint_store(mut self, store: Arc<dyn CheckpointStore>) -> Pipeline {
        self.store = Some(store);
        self
    }

    pub fn with_sink(mut self, name: &str, common: SinkCommon, sink: Box<dyn Sink>) -> Pipeline {
        self.extra_sinks.push((name.to_string(), common, sink));
        self
    }

    pub fn with_source(mut self, name: &str, source: Box<dyn Source>) -> Pipeline {
        self.extra_sources.push((name.to_string(), source));
        self
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Run until every source has ended (finite inputs) or `shutdown` fires, then drain
    /// in-flight events for up to `pipeline.drain_timeout_secs` and commit what was acknowledged.
    pub async fn run(self, shutdown: CancellationToken) -> Result<RunReport, PipelineError> {
        let Pipeline {
            config,
            store,
            metrics,
            health,
            extra_sinks,
            extra_sources,
        } = self;
        let pc = config.pipeline.clone();
        let store: Arc<dyn CheckpointStore> = match store {
            Some(s) => s,
            None => Arc::new(FileCheckpointStore::open(&config.data_dir)?),
        };
        let dead_letter = Arc::new(DeadLetter::with_rotation(
            &config.dead_letter_path(),
            config.dead_letter_rotation(),
            metrics.clone(),
        ));
        let api_stop = CancellationToken::new();
        let mut api_address = None;
        let mut api_task = None;
        if config.api.enabled {
            let (addr, task) =
                crate::telemetry::serve(config.api.address, metrics.clone(), health.clone(), api_stop.clone())
                    .await
                    .map_err(|source| PipelineError::Api {
                        file: config.file.display().to_string(),
                        address: config.api.address,
                        source,
                    })?;
            api_address = Some(addr);
            api_task = Some(task);
        }

        // Sinks, each behind its own bounded channel.
        let force = CancellationToken::new();
        let mut sinks: Vec<SinkInstances> = Vec::new();
        for entry in &config.sinks {
            let instances = (0..entry.config.concurrency().max(1))
                .map(|_| entry.config.build(&entry.name))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| PipelineError::SinkBuild {
                    name: entry.name.clone(),
                    source,
                })?;
            sinks.push((
                entry.name.clone(),
                entry.common.clone(),
                instances,
                entry.config.encoder(),
            ));
        }
        let sinks: Vec<_> = sinks
            .into_iter()
            .chain(extra_sinks.into_iter().map(|(n, c, s)| (n, c, vec![s], None)))
            .map(|(name, common, instances, encoder)| match common.rate_limit_eps {
                Some(eps) => {
                    let limited = crate::sinks::ratelimit::RateLimited::shared(instances, eps)
                        .into_iter()
                        .map(|s| Box::new(s) as Box<dyn Sink>)
                        .collect();
                    (name, common, limited, encoder)
                }
                None => (name, common, instances, encoder),
            })
            .collect();
        let mut routes = Vec::new();
        let mut sink_tasks = JoinSet::new();
        for (name, common, instances, encoder) in sinks {
            let (tx, rx) = mpsc::channel(common.buffer_max_batches.map_or(pc.channel_capacity, |n| n.get()));
            let invalid = |i: crate::config::ConfigIssue| PipelineError::SinkBuild {
                name: name.clone(),
                source: SinkError::Build(format!("{}: {}", i.path, i.message)),
            };
            let filter = common
                .filter
                .validate(&format!("sinks.{name}.filter"))
                .map_err(invalid)?;
            let disk = common
                .buffer
                .validate(&format!("sinks.{name}.buffer"))
                .map_err(invalid)?;
            let name: Arc<str> = Arc::from(name);
            // A disk buffer stores the normalized form: its sink encodes after the buffer.
            let encoder = if disk.is_some() { None } else { encoder };
            routes.push(router::Route::new(
                name.clone(),
                common.inputs.clone(),
                filter,
                common.when_full,
                tx,
                encoder,
            ));
            let driver = SinkDriver {
                name,
                sinks: instances,
                retry: RetryPolicy {
                    initial: Duration::from_millis(common.retry_initial_ms.max(1)),
                    max: Duration::from_millis(common.retry_max_ms.max(common.retry_initial_ms).max(1)),
                },
                dead_letter: dead_letter.clone(),
                metrics: metrics.clone(),
                health: health.clone(),
                force: force.clone(),
            };
            match disk {
                None => {
                    let dir = config.data_dir.join("buffers").join(&*driver.name);
                    let left = crate::buffer::log::leftover_bytes(&dir);
                    if left > 0 {
                        tracing::error!(sink = %driver.name, dir = %dir.display(), bytes = left, "a disk buffer of this sink holds records, but the sink is not disk-buffered now; they are not sent (set buffer.type = \"disk\" again to deliver them)");
                    }
                    sink_tasks.spawn(driver.run(rx));
                }
                Some(settings) => {
                    let buffer = DiskBuffer::open(
                        driver.name.clone(),
                        &config.data_dir,
                        settings,
                        metrics.clone(),
                        dead_letter.clone(),
                    )
                    .map_err(|source| PipelineError::Buffer {
                        name: driver.name.to_string(),
                        source,
                    })?;
                    sink_tasks.spawn(buffer.run(rx, driver));
                }
            }
        }

        // Nothing but CEF / LEEF encoded ahead reads the normalized form: build only what
        // they read.
        let lean = !routes.is_empty()
            && routes
                .iter()
                .all(|r| r.encoder.as_ref().is_some_and(|e| e.reads_lean()));
        if lean {
            tracing::info!(
                "every output is CEF or LEEF: normalizing without observables and passed-through record JSON"
            );
        }
        let normalizer = Arc::new(Normalizer::new(NormalizeOptions {
            raw_data: config.normalize.raw_data,
            raw_data_max_bytes: config.normalize.raw_data_max_bytes,
            correlate_detections: config.normalize.correlate_detections,
            lean,
        }));
        let router = router::Router::new(
            routes,
            dead_letter.clone(),
            metrics.clone(),
            force.clone(),
            config.normalize.suppress_duplicate_detections,
        );
        let (src_tx, src_rx) = mpsc::channel(pc.channel_capacity);
        let workers = if pc.normalize_workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            pc.normalize_workers
        };
        let normalize = tokio::spawn(stages::run_normalize(
            src_rx,
            router,
            normalizer,
            metrics.clone(),
            workers,
        ));

        // Sources, each with its acknowledgment tracker and checkpoint committer.
        let mut sources: Vec<(String, Box<dyn Source>)> = Vec::new();
        for entry in &config.sources {
            let s = entry
                .config
                .build(&entry.name)
                .map_err(|e| PipelineError::SourceBuild {
                    name: entry.name.clone(),
                    message: e.to_string(),
                })?;
            sources.push((entry.name.clone(), s));
        }
        sources.extend(extra_sources);
        let source_stop = shutdown.child_token();
        let commit_stop = CancellationToken::new();
        let mut source_tasks = JoinSet::new();
        let mut committers = JoinSet::new();
        let mut trackers = Vec::new();
        for (name, source) in sources {
            let name: Arc<str> = Arc::from(name);
            let acks = AckTracker::new();
            let store = source.checkpoint_store().unwrap_or_else(|| store.clone());
            trackers.push((name.clone(), acks.clone()));
            committers.spawn(stages::run_committer(
                name.clone(),
                acks.clone(),
                store.clone(),
                Duration::from_millis(pc.checkpoint_interval_ms),
                commit_stop.clone(),
                metrics.clone(),
            ));
            let ctx = SourceContext {
                name: name.clone(),
                out: src_tx.clone(),
                acks,
                checkpoints: store.clone(),
                shutdown: source_stop.clone(),
                metrics: metrics.clone(),
                batch_max_events: pc.batch_max_events,
                health: health.clone(),
            };
            let span = tracing::info_span!("source", source = %name);
            source_tasks.spawn(tracing::Instrument::instrument(
                async move { (name.clone(), source.run(ctx).await) },
                span,
            ));
        }
        drop(src_tx);
        health.set_started();
        tracing::info!(sources = trackers.len(), sinks = sink_tasks.len(), "pipeline running");

        // Wait for the sources to end by themselves or for shutdown. A sink that dies, or a
        // batch that fails for good (its partition's checkpoint is then held), stops the
        // run as a failed source does: running on would only pile up what a restart reads
        // again, and the exit lets an orchestrator restart the forwarder.
        let mut failures = Vec::new();
        let mut stalls: FuturesUnordered<_> = trackers
            .iter()
            .map(|(name, t)| {
                let (name, t) = (name.clone(), t.clone());
                async move { (name, t.stalled().await) }
            })
            .collect();
        loop {
            tokio::select! {
                res = source_tasks.join_next() => match res {
                    None => break,
                    Some(Ok((_, Ok(())))) | Some(Ok((_, Err(crate::sources::SourceError::ShuttingDown(_))))) => {}
                    Some(Ok((name, Err(e)))) => {
                        tracing::error!(source = %name, error = %e, "source failed; stopping the pipeline");
                        metrics.error(&name, "fatal");
                        failures.push(e.to_string());
                        source_stop.cancel();
                    }
                    Some(Err(e)) => {
                        failures.push(format!("source task panicked: {e}"));
                        source_stop.cancel();
                    }
                },
                // A sink ends normally only once its input closed (the sources are done
                // sending): not a failure.
                Some(res) = sink_tasks.join_next(), if !sink_tasks.is_empty() => {
                    if let Some(why) = sink_end(res) {
                        tracing::error!(error = %why, "stopping the pipeline");
                        failures.push(why);
                        source_stop.cancel();
                    }
                }
                // Once stopping, a source drops what it had not sent: not a failure.
                Some((name, partition)) = stalls.next(), if !source_stop.is_cancelled() => {
                    if source_stop.is_cancelled() {
                        continue;
                    }
                    let why = format!("source {name}, partition {partition}: a batch was not delivered (its checkpoint is held; a restart reads it again)");
                    tracing::error!(source = %name, %partition, "a batch failed for good; stopping the pipeline");
                    metrics.error(&name, "batch_failed");
                    failures.push(why);
                    source_stop.cancel();
                }
            }
        }
        drop(stalls);
        tracing::info!("sources ended; draining in-flight events");

        // Drain: the channels close stage by stage as each ends.
        let mut sink_failures = Vec::new();
        {
            let drain = async {
                let _ = normalize.await;
                while let Some(res) = sink_tasks.join_next().await {
                    sink_failures.extend(sink_end(res));
                }
            };
            let timeout = Duration::from_secs(pc.drain_timeout_secs);
            tokio::pin!(drain);
            // A failing run is bounded as a shutdown is: a sink that cannot deliver would
            // otherwise keep a stopped forwarder up for good.
            let drained = if shutdown.is_cancelled() || !failures.is_empty() {
                tokio::time::timeout(timeout, &mut drain).await.is_ok()
            } else {
                // Finite input: wait for delivery, but still honour a shutdown signal.
                tokio::select! {
                    _ = &mut drain => true,
                    _ = shutdown.cancelled() => tokio::time::timeout(timeout, &mut drain).await.is_ok(),
                }
            };
            if !drained {
                tracing::warn!(
                    timeout_secs = pc.drain_timeout_secs,
                    "drain timeout: giving up on in-flight events; their checkpoints do not move"
                );
                force.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut drain).await;
            }
        }
        failures.extend(sink_failures);
        // A batch that failed for good while the last ones were delivered (finite input):
        // the run did not complete. (Not after a shutdown or a forced drain: sources and
        // sinks then let go of what they had not sent.)
        if failures.is_empty() && !shutdown.is_cancelled() && !force.is_cancelled() {
            for (name, t) in &trackers {
                if let Some(partition) = t.first_stalled() {
                    metrics.error(name, "batch_failed");
                    failures.push(format!(
                        "source {name}, partition {partition}: a batch was not delivered (its checkpoint is held; a restart reads it again)"
                    ));
                }
            }
        }

        // Final checkpoint commit of everything acknowledged.
        commit_stop.cancel();
        while committers.join_next().await.is_some() {}
        api_stop.cancel();
        if let Some(t) = api_task {
            let _ = t.await;
        }
        let unacknowledged = trackers.iter().map(|(_, t)| t.in_flight() as u64 + t.counts().1).sum();
        let report = RunReport {
            summary: metrics.summary(),
            unacknowledged_batches: unacknowledged,
            api_address,
        };
        if !failures.is_empty() {
            return Err(PipelineError::Failed(failures.len(), failures.join("; ")));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod failure_tests;
