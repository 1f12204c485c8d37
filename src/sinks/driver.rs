//! Runs one sink: takes batches from its bounded channel, sends them with retry and
//! exponential backoff, dead-letters what the receiver refuses for good, and marks every
//! event's finalizer only after the receiver (or the dead-letter file) has it. A batch the
//! sink has written but the receiver has yet to acknowledge (`SendReport::settle`: a TCP
//! acknowledgment, a HEC indexer acknowledgment) waits on its own while the sink sends the
//! next, up to `Sink::max_unsettled` batches; one whose acknowledgment fails is sent again
//! before any new batch. A sink type that allows it (`SinkConfig::concurrency`) runs
//! several instances, each sending its own batch.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{BatchLimits, SendReport, Settle, Sink, SinkContext, SinkError};
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

/// A sink's driver ended before its input did: a delivery or acknowledgment task panicked.
/// What it held stays unacknowledged; the pipeline stops (and a restart resumes from the
/// last checkpoint) rather than run on with a sink that no longer sends.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: {reason}")]
pub struct SinkDied {
    pub sink: Arc<str>,
    pub reason: String,
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
    /// Runs until the input is closed and everything settled, or the force token fires;
    /// `Err` when a task of the sink died (see [`SinkDied`]).
    pub async fn run(self, mut rx: mpsc::Receiver<Batch>) -> Result<(), SinkDied> {
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
            let max_unsettled = idle.first().map_or(1, |s| s.max_unsettled().max(1));
            let mut busy: JoinSet<(Box<dyn Sink>, u64, Sent)> = JoinSet::new();
            let mut flight = InFlight::default();
            let mut seq = 0u64;
            let mut stop = false;
            let mut input_open = true;
            loop {
                while let Some(r) = busy.try_join_next() {
                    stop |= !flight.sent(&shared, r, &mut idle);
                }
                while let Some(r) = flight.settling.try_join_next() {
                    stop |= !flight.settled(r);
                }
                if stop {
                    break;
                }
                // Another send needs an idle instance and room among the batches waiting
                // for their acknowledgment (backpressure otherwise).
                let can_send = !idle.is_empty() && flight.settling.len() < max_unsettled;
                let again = if can_send { flight.next_again() } else { None };
                let (n, batch) = match again {
                    Some(b) => b,
                    None => {
                        if !input_open && flight.is_empty() && busy.is_empty() {
                            break;
                        }
                        tokio::select! {
                            biased;
                            Some(r) = busy.join_next(), if !busy.is_empty() => {
                                stop |= !flight.sent(&shared, r, &mut idle);
                                continue;
                            }
                            Some(r) = flight.settling.join_next(), if !flight.settling.is_empty() => {
                                stop |= !flight.settled(r);
                                continue;
                            }
                            b = rx.recv(), if can_send && input_open && flight.again.is_empty() => match b {
                                Some(mut b) => {
                                    if let Some(l) = limits {
                                        coalesce(&mut b, &mut rx, l, &shared.force).await;
                                    }
                                    seq += 1;
                                    (seq, b)
                                }
                                None => {
                                    input_open = false;
                                    continue;
                                }
                            },
                            else => break,
                        }
                    }
                };
                shared.metrics.sink_buffer(&shared.name, rx.len(), rx.max_capacity());
                let mut sink = idle.pop().expect("an idle instance");
                let sh = shared.clone();
                busy.spawn(
                    async move {
                        let sent = deliver(&sh, &mut sink, batch).await;
                        (sink, n, sent)
                    }
                    .in_current_span(),
                );
            }
            // Forced to stop, or the input is closed and everything settled: let the
            // instances still working finish (the force token ends them).
            while let Some(r) = busy.join_next().await {
                if let Ok((sink, _, _)) = r {
                    idle.push(sink);
                }
            }
            while flight.settling.join_next().await.is_some() {}
            for sink in &mut idle {
                if let Err(e) = sink.close().await {
                    tracing::error!(error = %e, "closing sink failed");
                    shared.metrics.error(&shared.name, e.kind());
                }
            }
            match flight.died {
                None => Ok(()),
                Some(reason) => {
                    tracing::error!(%reason, "sink died; stopping the pipeline (its events stay unacknowledged)");
                    shared.metrics.error(&shared.name, "sink_died");
                    shared.health.sink_failing(&shared.name, &reason);
                    Err(SinkDied {
                        sink: shared.name.clone(),
                        reason,
                    })
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// How one delivery ended.
enum Sent {
    /// Delivered (and dead-lettered where refused), every finalizer marked.
    Done,
    /// Forced to stop: the batch stays unacknowledged.
    Stopped,
    /// Written; delivered once `Settle` resolves.
    Written(Batch, SendReport, Settle),
}

/// Batches written and waiting for the receiver's acknowledgment, by sequence number; a
/// failed one comes back to be sent again before any new input, failed ones in the order
/// they were first sent.
#[derive(Default)]
struct InFlight {
    /// `(sequence, Some(batch))` when the acknowledgment failed.
    settling: JoinSet<(u64, Option<Batch>)>,
    unsettled: BTreeSet<u64>,
    /// Of the unsettled, the ones sent again (already written in their order).
    resent: BTreeSet<u64>,
    again: BTreeMap<u64, Batch>,
    /// Why a task of the sink died (then the driver stops).
    died: Option<String>,
}

impl InFlight {
    fn is_empty(&self) -> bool {
        self.settling.is_empty() && self.again.is_empty()
    }

    /// Takes back an instance that finished a delivery; a batch written but not yet
    /// acknowledged starts waiting for its acknowledgment. False: stop.
    fn sent(
        &mut self,
        shared: &Arc<Shared>,
        r: Result<(Box<dyn Sink>, u64, Sent), tokio::task::JoinError>,
        idle: &mut Vec<Box<dyn Sink>>,
    ) -> bool {
        let (sink, n, sent) = match r {
            Ok(x) => x,
            Err(e) => {
                self.died = Some(format!("a delivery task failed: {e}"));
                return false;
            }
        };
        idle.push(sink);
        match sent {
            Sent::Done => {
                self.resent.remove(&n);
            }
            Sent::Stopped => return false,
            Sent::Written(batch, report, settle) => {
                self.unsettled.insert(n);
                let wait = settle_batch(shared.clone(), batch, report, settle);
                self.settling.spawn(async move { (n, wait.await) }.in_current_span());
            }
        }
        true
    }

    /// Takes the result of one settling batch: a failed one is queued to be sent again.
    /// False: stop.
    fn settled(&mut self, r: Result<(u64, Option<Batch>), tokio::task::JoinError>) -> bool {
        match r {
            Ok((n, failed)) => {
                self.unsettled.remove(&n);
                self.resent.remove(&n);
                if let Some(b) = failed.filter(|b| !b.is_empty()) {
                    self.again.insert(n, b);
                }
                true
            }
            Err(e) => {
                self.died = Some(format!("an acknowledgment task failed: {e}"));
                false
            }
        }
    }

    /// The first failed batch, once every batch first sent before it has settled.
    fn next_again(&mut self) -> Option<(u64, Batch)> {
        let (&n, _) = self.again.first_key_value()?;
        if !self.unsettled.range(..n).all(|u| self.resent.contains(u)) {
            return None;
        }
        self.resent.insert(n);
        self.again.pop_first()
    }
}

/// Waits for a written batch's acknowledgment, then finishes it; gives the batch back when
/// the acknowledgment failed (it is sent again), or keeps it unacknowledged when forced.
async fn settle_batch(sh: Arc<Shared>, batch: Batch, report: SendReport, settle: Settle) -> Option<Batch> {
    let r = tokio::select! {
        biased;
        _ = sh.force.cancelled() => return None,
        r = settle.0 => r,
    };
    match r {
        Ok(()) => {
            if finish(&sh, batch, report, Instant::now()).await {
                sh.health.sink_ok(&sh.name);
            }
            None
        }
        Err(e) => {
            sh.metrics.error(&sh.name, e.kind());
            Metrics::sink_count(&sh.metrics.sink_retries, &sh.name, 1);
            sh.health.sink_failing(&sh.name, &e.to_string());
            tracing::warn!(error = %e, events = batch.len(), "batch written but not acknowledged; sending it again");
            Some(batch)
        }
    }
}

/// The longest `Retry-After` honoured; a longer one is taken as this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The wait before attempt `attempt`: the backoff, or longer when the receiver asked for
/// it (`Retry-After`, at most [`MAX_RETRY_AFTER`]).
fn retry_delay(policy: &RetryPolicy, attempt: u32, e: &SinkError) -> Duration {
    let backoff = policy.delay(attempt);
    e.retry_after()
        .map_or(backoff, |asked| asked.min(MAX_RETRY_AFTER).max(backoff))
}

/// Deliver one batch: send it with retry and backoff until the sink takes it.
async fn deliver(sh: &Shared, sink: &mut Box<dyn Sink>, batch: Batch) -> Sent {
    let n = batch.len();
    let received = Instant::now();
    let mut attempt = 0u32;
    let mut report = loop {
        let res = tokio::select! {
            biased;
            _ = sh.force.cancelled() => return Sent::Stopped,
            r = sink.send(&batch) => r,
        };
        match res {
            Ok(r) => break r,
            Err(e) => {
                attempt += 1;
                sh.metrics.error(&sh.name, e.kind());
                Metrics::sink_count(&sh.metrics.sink_retries, &sh.name, 1);
                sh.health.sink_failing(&sh.name, &e.to_string());
                let delay = retry_delay(&sh.retry, attempt, &e);
                log_failure(&e, attempt, delay, n);
                tokio::select! {
                    _ = sh.force.cancelled() => return Sent::Stopped,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    if attempt > 0 {
        tracing::info!(attempts = attempt + 1, "sink recovered");
    }
    if let Some(settle) = report.settle.take() {
        return Sent::Written(batch, report, settle);
    }
    sh.health.sink_ok(&sh.name);
    if finish(sh, batch, report, received).await {
        Sent::Done
    } else {
        Sent::Stopped
    }
}

/// The receiver has the batch: refused events go to the dead-letter file, then every
/// finalizer is marked. False when forced to stop while the dead-letter file failed.
async fn finish(sh: &Shared, mut batch: Batch, report: SendReport, received: Instant) -> bool {
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
            Err(mpsc::error::TryRecvError::Empty) if l.max_wait.is_zero() => return,
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
#[path = "driver_tests.rs"]
mod tests;
