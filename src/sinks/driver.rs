//! Runs one sink: takes batches from its bounded channel, sends them with retry and
//! exponential backoff, dead-letters what the receiver refuses for good, and marks every
//! event's finalizer only after the receiver (or the dead-letter file) has it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc;
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
    pub sink: Box<dyn Sink>,
    pub retry: RetryPolicy,
    pub dead_letter: Arc<DeadLetter>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Fired when the drain timeout is over: give up on what is still in flight.
    pub force: CancellationToken,
}

impl SinkDriver {
    pub async fn run(mut self, mut rx: mpsc::Receiver<Batch>) {
        let span = tracing::info_span!("sink", sink = %self.name);
        async move {
            let ctx = SinkContext {
                name: self.name.clone(),
                metrics: self.metrics.clone(),
                health: self.health.clone(),
            };
            if let Err(e) = self.sink.start(&ctx).await {
                tracing::error!(error = %e, "sink start-up check failed; sending anyway and retrying on errors");
                self.metrics.error(&self.name, e.kind());
                self.health.sink_failing(&self.name, &e.to_string());
            }
            let limits = self.sink.batch_limits();
            while let Some(mut batch) = rx.recv().await {
                if let Some(l) = limits {
                    coalesce(&mut batch, &mut rx, l, &self.force).await;
                }
                self.metrics.sink_buffer(&self.name, rx.len(), rx.max_capacity());
                if !self.deliver(batch).await {
                    break;
                }
            }
            if let Err(e) = self.sink.close().await {
                tracing::error!(error = %e, "closing sink failed");
                self.metrics.error(&self.name, e.kind());
            }
        }
        .instrument(span)
        .await
    }

    /// Deliver one batch; false when forced to stop (the batch stays unacknowledged).
    async fn deliver(&mut self, mut batch: Batch) -> bool {
        let n = batch.len();
        let received = Instant::now();
        let mut attempt = 0u32;
        let report = loop {
            let res = tokio::select! {
                biased;
                _ = self.force.cancelled() => return false,
                r = self.sink.send(&batch) => r,
            };
            match res {
                Ok(r) => break r,
                Err(e) => {
                    attempt += 1;
                    self.metrics.error(&self.name, e.kind());
                    self.metrics
                        .sink_retries
                        .get_or_create(&SinkLabels {
                            sink: self.name.to_string(),
                        })
                        .inc();
                    self.health.sink_failing(&self.name, &e.to_string());
                    let delay = self.retry.delay(attempt);
                    log_failure(&e, attempt, delay, n);
                    tokio::select! {
                        _ = self.force.cancelled() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        if attempt > 0 {
            tracing::info!(attempts = attempt + 1, "sink recovered");
        }
        self.health.sink_ok(&self.name);

        // Refused events go to the dead-letter file before anything is acknowledged.
        let mut rejected: Vec<Event> = Vec::new();
        if !report.rejected.is_empty() {
            let mut idx: Vec<_> = report.rejected;
            idx.sort_by_key(|r| std::cmp::Reverse(r.index));
            let stage: Arc<str> = Arc::from(format!("sink:{}", self.name));
            for r in idx {
                if r.index < batch.len() {
                    let mut e = batch.swap_remove(r.index);
                    e.quarantine(stage.clone(), r.reason, r.detail);
                    rejected.push(e);
                }
            }
            let mut dl_attempt = 0;
            while let Err(e) = self.dead_letter.write(&rejected).await {
                dl_attempt += 1;
                tracing::error!(error = %e, "dead-letter write failed; retrying");
                tokio::select! {
                    _ = self.force.cancelled() => return false,
                    _ = tokio::time::sleep(self.retry.delay(dl_attempt)) => {}
                }
            }
        }

        let now = now_ms();
        let e2e = self.metrics.latency_event_to_ack.get_or_create(&SinkLabels {
            sink: self.name.to_string(),
        });
        let rta = self.metrics.latency_receive_to_ack.get_or_create(&SinkLabels {
            sink: self.name.to_string(),
        });
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
        self.metrics
            .component_out(&self.name, "sink", batch.len() as u64, report.bytes);
        tracing::debug!(
            events = batch.len(),
            rejected = rejected.len(),
            elapsed_ms = received.elapsed().as_millis() as u64,
            "batch delivered"
        );
        true
    }
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
