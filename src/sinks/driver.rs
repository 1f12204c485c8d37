//! Runs one sink: takes batches from its bounded channel, sends them with retry and
//! exponential backoff, dead-letters what the receiver refuses for good, and marks every
//! event's finalizer only after the receiver (or the dead-letter file) has it. A sink type
//! that allows it (`SinkConfig::concurrency`, e.g. HEC waiting for indexer acknowledgment)
//! runs several instances, each delivering its own batch, so one request waiting for its
//! acknowledgment does not hold the ones behind it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{BatchLimits, Sink, SinkContext, SinkError};
use crate::ack::Status;
use crate::deadletter::DeadLetter;
use crate::event::{now_ms, Batch, Event};
use crate::telemetry::{Health, Metrics, SinkLabels};

/// Backoff between failed attempts.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// Delay before attempt `n` (1-based): exponential with full jitter in [d/2, d].
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let d = exp.min(self.max);
        let half = d / 2;
        half + Duration::from_millis(rand::rng().random_range(0..=half.as_millis().max(1) as u64))
    }
}

pub struct SinkDriver {
    pub name: Arc<str>,
    /// One instance per concurrent delivery (at least one).
    pub sinks: Vec<Box<dyn Sink>>,
    pub retry: RetryPolicy,
    pub dead_letter: Arc<DeadLetter>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Fired when the drain timeout is over: give up on what is still in flight.
    pub force: CancellationToken,
}

/// What every delivery of one sink shares.
struct Shared {
    name: Arc<str>,
    retry: RetryPolicy,
    dead_letter: Arc<DeadLetter>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    force: CancellationToken,
}

impl SinkDriver {
    pub async fn run(self, mut rx: mpsc::Receiver<Batch>) {
        let span = tracing::info_span!("sink", sink = %self.name);
        let SinkDriver {
            name,
            sinks,
            retry,
            dead_letter,
            metrics,
            health,
            force,
        } = self;
        let shared = Arc::new(Shared {
            name,
            retry,
            dead_letter,
            metrics,
            health,
            force,
        });
        async move {
            let mut idle: Vec<Box<dyn Sink>> = Vec::with_capacity(sinks.len());
            for (instance, mut sink) in sinks.into_iter().enumerate() {
                let ctx = SinkContext {
                    name: shared.name.clone(),
                    instance,
                    metrics: shared.metrics.clone(),
                    health: shared.health.clone(),
                };
                if let Err(e) = sink.start(&ctx).await {
                    tracing::error!(error = %e, "sink start-up check failed; sending anyway and retrying on errors");
                    shared.metrics.error(&shared.name, e.kind());
                    shared.health.sink_failing(&shared.name, &e.to_string());
                }
                idle.push(sink);
            }
            let limits = idle.first().and_then(|s| s.batch_limits());
            let mut busy: JoinSet<(Box<dyn Sink>, bool)> = JoinSet::new();
            let mut stop = false;
            while !stop {
                // Take back the instances that are done; wait for one when none is idle.
                let done = if idle.is_empty() {
                    busy.join_next().await
                } else {
                    busy.try_join_next()
                };
                match done {
                    Some(Ok((sink, ok))) => {
                        idle.push(sink);
                        stop = !ok;
                        continue;
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "sink delivery task failed");
                        stop = true;
                        continue;
                    }
                    None if idle.is_empty() => break,
                    None => {}
                }
                let Some(mut batch) = rx.recv().await else { break };
                if let Some(l) = limits {
                    coalesce(&mut batch, &mut rx, l, &shared.force).await;
                }
                shared.metrics.sink_buffer(&shared.name, rx.len(), rx.max_capacity());
                let mut sink = idle.pop().expect("an idle instance");
                let sh = shared.clone();
                busy.spawn(
                    async move {
                        let ok = deliver(&sh, &mut sink, batch).await;
                        (sink, ok)
                    }
                    .in_current_span(),
                );
            }
            while let Some(r) = busy.join_next().await {
                if let Ok((sink, _)) = r {
                    idle.push(sink);
                }
            }
            for sink in &mut idle {
                if let Err(e) = sink.close().await {
                    tracing::error!(error = %e, "closing sink failed");
                    shared.metrics.error(&shared.name, e.kind());
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// Deliver one batch; false when forced to stop (the batch stays unacknowledged).
async fn deliver(sh: &Shared, sink: &mut Box<dyn Sink>, mut batch: Batch) -> bool {
    let n = batch.len();
    let received = Instant::now();
    let mut attempt = 0u32;
    let report = loop {
        let res = tokio::select! {
            biased;
            _ = sh.force.cancelled() => return false,
            r = sink.send(&batch) => r,
        };
        match res {
            Ok(r) => break r,
            Err(e) => {
                attempt += 1;
                sh.metrics.error(&sh.name, e.kind());
                sh.metrics
                    .sink_retries
                    .get_or_create(&SinkLabels {
                        sink: sh.name.to_string(),
                    })
                    .inc();
                sh.health.sink_failing(&sh.name, &e.to_string());
                let delay = sh.retry.delay(attempt);
                log_failure(&e, attempt, delay, n);
                tokio::select! {
                    _ = sh.force.cancelled() => return false,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    if attempt > 0 {
        tracing::info!(attempts = attempt + 1, "sink recovered");
    }
    sh.health.sink_ok(&sh.name);

    // Refused events go to the dead-letter file before anything is acknowledged.
    let mut rejected: Vec<Event> = Vec::new();
    if !report.rejected.is_empty() {
        let mut idx: Vec<_> = report.rejected;
        idx.sort_by_key(|r| std::cmp::Reverse(r.index));
        let stage: Arc<str> = Arc::from(format!("sink:{}", sh.name));
        for r in idx {
            if r.index < batch.len() {
                let mut e = batch.swap_remove(r.index);
                e.quarantine(stage.clone(), r.reason, r.detail);
                rejected.push(e);
            }
        }
        let mut dl_attempt = 0;
        while let Err(e) = sh.dead_letter.write(&rejected).await {
            dl_attempt += 1;
            tracing::error!(error = %e, "dead-letter write failed; retrying");
            tokio::select! {
                _ = sh.force.cancelled() => return false,
                _ = tokio::time::sleep(sh.retry.delay(dl_attempt)) => {}
            }
        }
    }

    let now = now_ms();
    let labels = SinkLabels {
        sink: sh.name.to_string(),
    };
    let e2e = sh.metrics.latency_event_to_ack.get_or_create(&labels);
    let rta = sh.metrics.latency_receive_to_ack.get_or_create(&labels);
    for e in &mut batch {
        if let Some(t) = e.meta.event_ms {
            e2e.observe((now - t).max(0) as f64 / 1000.0);
        }
        rta.observe((now - e.meta.received_ms).max(0) as f64 / 1000.0);
        e.finalizer.mark(Status::Delivered);
    }
    for e in &mut rejected {
        e.finalizer.mark(Status::Rejected);
    }
    sh.metrics
        .component_out(&sh.name, "sink", batch.len() as u64, report.bytes);
    tracing::debug!(
        events = batch.len(),
        rejected = rejected.len(),
        elapsed_ms = received.elapsed().as_millis() as u64,
        "batch delivered"
    );
    true
}

/// Adds the batches already waiting in `rx`, then waits up to `l.max_wait` for more, until
/// `l.max_events` events are together (a batch is never cut: the sink splits requests).
async fn coalesce(batch: &mut Batch, rx: &mut mpsc::Receiver<Batch>, l: BatchLimits, force: &CancellationToken) {
    let deadline = tokio::time::Instant::now() + l.max_wait;
    while batch.len() < l.max_events {
        match rx.try_recv() {
            Ok(more) => {
                batch.extend(more);
                continue;
            }
            Err(mpsc::error::TryRecvError::Disconnected) => return,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        tokio::select! {
            biased;
            _ = force.cancelled() => return,
            r = tokio::time::timeout_at(deadline, rx.recv()) => match r {
                Ok(Some(more)) => batch.extend(more),
                Ok(None) | Err(_) => return,
            },
        }
    }
}

fn log_failure(e: &SinkError, attempt: u32, delay: Duration, events: usize) {
    // Every failure the first times, then one in ten, so an hour-long outage stays readable.
    if attempt <= 3 || attempt % 10 == 0 {
        tracing::warn!(error = %e, attempt, retry_in_ms = delay.as_millis() as u64, events, "send failed; will retry");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let d1 = p.delay(1);
        assert!(
            d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(101),
            "{d1:?}"
        );
        let d4 = p.delay(4);
        assert!(
            d4 >= Duration::from_millis(400) && d4 <= Duration::from_millis(801),
            "{d4:?}"
        );
        for a in 10..40 {
            assert!(p.delay(a) <= Duration::from_millis(2001));
        }
    }
}
