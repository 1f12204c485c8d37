//! The middle stages: normalization (inline, or on a worker pool with order kept) handing
//! events to the router (`router.rs`), and checkpoints committed from acknowledgments.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::router::{run_router, Router};
use crate::ack::AckTracker;
use crate::checkpoint::{split_partition_id, CheckpointKey, CheckpointStore};
use crate::event::{Batch, Event, EventUid};
use crate::normalize::{Normalizer, UserKey};
use crate::telemetry::Metrics;

/// Normalize events in place (a batch or part of one); a failure (or a panic) quarantines
/// that event only. Returns the indexes of events whose user was not in the restoration
/// cache.
pub fn normalize_batch(normalizer: &Normalizer, metrics: &Metrics, batch: &mut [Event]) -> Vec<(usize, UserKey)> {
    let mut unrestored = Vec::new();
    let mut assumed_utc: BTreeMap<Arc<str>, u64> = BTreeMap::new();
    let mut correlated: BTreeMap<Arc<str>, u64> = BTreeMap::new();
    for (i, e) in batch.iter_mut().enumerate() {
        if e.quarantine.is_some() {
            continue;
        }
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            normalizer.normalize_bytes(&e.meta, &e.raw).map_err(|err| {
                // A record decoded unchecked may be broken JSON: then it ends as decoding
                // would have ended it.
                let undecodable = e.meta.unchecked.and_then(|_| crate::decode::recheck(&e.raw));
                (err, undecodable)
            })
        }));
        match res {
            Ok(Ok(out)) => {
                if out.time_assumed_utc {
                    *assumed_utc.entry(e.meta.source.clone()).or_default() += 1;
                }
                e.meta.severity_id = out.severity_id;
                e.meta.event_ms = out.event_ms;
                if e.meta.entity_key.is_none() {
                    e.meta.entity_key = out.entity_key.map(Arc::from);
                }
                if e.meta.tenant.is_none() {
                    e.meta.tenant = out.tenant.map(Arc::from);
                }
                e.meta.duplicate = out.duplicate;
                e.meta.class_uid = Some(out.normalized.class_uid);
                e.meta.uid = out.normalized.event_uid().map(EventUid::new);
                if let Some(k) = out.user_unrestored {
                    unrestored.push((i, k));
                }
                if out.correlated.is_some() {
                    *correlated.entry(e.meta.source.clone()).or_default() += 1;
                }
                e.normalized = Some(Arc::new(out.normalized));
            }
            Ok(Err((_, Some(decode_err)))) => quarantine_undecodable(e, &decode_err),
            Ok(Err((err, None))) => e.quarantine("normalize", err.reason(), err.to_string()),
            Err(_) => e.quarantine("normalize", "panic", "the normalizer panicked on this record".into()),
        }
    }
    for (source, n) in correlated {
        Metrics::source_count(&metrics.detections_correlated, &source, n);
    }
    for (source, n) in assumed_utc {
        Metrics::source_count(&metrics.time_assumed_utc, &source, n);
    }
    unrestored
}

/// Quarantines a record decoded unchecked whose JSON turned out broken as decoding would
/// have (see `decode::scan`): stage `decode`, its reason, the unit as it came (the record and
/// the line end that followed it) and the metadata of a body that never decoded (no
/// category, kind or tenant learned from it).
fn quarantine_undecodable(e: &mut Event, err: &crate::decode::DecodeError) {
    if let Some(trailer) = e.meta.unchecked.filter(|t| !t.is_empty()) {
        e.raw = Bytes::from([&e.raw[..], trailer.as_bytes()].concat());
    }
    e.meta.category = Arc::from("Unknown");
    e.meta.kind = crate::event::EventKind::Generic;
    e.meta.tenant = None;
    e.quarantine("decode", err.reason(), err.to_string());
}

/// Normalizes again the events of `batch` at `indexes` (their user was not cached when they
/// were first normalized). Called in input order, once every earlier batch is done, so a
/// sign-in or risk record read before the alert has taught the cache by now, whichever
/// worker normalized it.
fn restore_late(normalizer: &Normalizer, batch: &mut Batch, missed: &[(usize, UserKey)]) {
    // Only records whose user the cache knows by now: a record of a user never seen is not
    // normalized twice.
    for &(i, _) in missed.iter().filter(|(_, k)| normalizer.knows_user(*k)) {
        let e = &mut batch[i];
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            normalizer.normalize_bytes(&e.meta, &e.raw)
        }));
        if let Ok(Ok(out)) = res {
            if out.user_unrestored.is_none() {
                e.normalized = Some(Arc::new(out.normalized));
            }
        }
    }
}

/// Runs normalization on up to `workers` batches at once and routes them in input order.
/// With one worker both happen on this task, so a batch's normalized trees live only until
/// the router has encoded it; with more, the router runs as its own task behind a channel
/// of one batch.
pub async fn run_normalize(
    rx: mpsc::Receiver<Batch>,
    router: Router,
    normalizer: Arc<Normalizer>,
    metrics: Arc<Metrics>,
    workers: usize,
) {
    if workers <= 1 {
        return run_normalize_inline(rx, router, &normalizer, &metrics).await;
    }
    let (tx, router_rx) = mpsc::channel(1);
    let routing = tokio::spawn(run_router(router_rx, router));
    run_normalize_pool(rx, tx, normalizer, metrics, workers).await;
    let _ = routing.await;
}

async fn run_normalize_pool(
    rx: mpsc::Receiver<Batch>,
    tx: mpsc::Sender<Batch>,
    normalizer: Arc<Normalizer>,
    metrics: Arc<Metrics>,
    workers: usize,
) {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
        .map(|batch| {
            let (n, m) = (normalizer.clone(), metrics.clone());
            tokio::task::spawn_blocking(move || {
                let mut batch = batch;
                let unrestored = normalize_batch(&n, &m, &mut batch);
                (batch, unrestored)
            })
        })
        .buffered(workers);
    futures_util::pin_mut!(stream);
    while let Some(res) = stream.next().await {
        match res {
            Ok((mut batch, unrestored)) => {
                if !unrestored.is_empty() && workers > 1 {
                    restore_late(&normalizer, &mut batch, &unrestored);
                }
                if tx.send(batch).await.is_err() {
                    break;
                }
            }
            // Only reachable if the blocking pool is shutting down; the events of that batch
            // were dropped unacknowledged, so their checkpoint does not move.
            Err(e) => tracing::error!(error = %e, "normalization worker failed"),
        }
    }
}

/// Events normalized and then staged for the sinks (encoded) at a time by the inline
/// normalizer: their trees (~10 KB each for OCSF) are still in the processor's cache when
/// encoded, where a whole batch's (128 by default) were not and each member read missed.
pub(super) const STAGE_EVENTS: usize = 16;

/// One worker: normalizes each batch on this task's thread. With a single core a blocking
/// pool thread only adds a thread switch per batch, and the trees are then allocated and
/// freed on the same thread, which the allocator serves from its local free lists. Each
/// [`STAGE_EVENTS`] events are encoded for their sinks as soon as they are normalized; the
/// sinks still get the batch whole. Batches are bounded (`pipeline.batch_max_events`), so
/// the runtime is held for one batch at a time.
async fn run_normalize_inline(
    mut rx: mpsc::Receiver<Batch>,
    mut router: Router,
    normalizer: &Normalizer,
    metrics: &Metrics,
) {
    while let Some(batch) = rx.recv().await {
        // Each part is normalized where it lies in the batch and moved from there to the
        // sinks' staged batches: no vector per part, one move less per event.
        let mut events = batch.into_iter();
        while !events.as_slice().is_empty() {
            let n = events.as_slice().len().min(STAGE_EVENTS);
            normalize_batch(normalizer, metrics, &mut events.as_mut_slice()[..n]);
            let left = events.len() - n;
            router.stage(events.by_ref().take(n));
            debug_assert_eq!(events.len(), left, "the router takes every event of a part");
        }
        if !router.flush().await {
            break;
        }
        // Let the sources and sinks run between batches.
        tokio::task::yield_now().await;
    }
}

/// Writes the checkpoints a source's tracker has made ready, every `interval` and once
/// more when `stop` fires.
pub async fn run_committer(
    source: Arc<str>,
    acks: AckTracker,
    store: Arc<dyn CheckpointStore>,
    interval: Duration,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
) {
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(interval) => false,
        };
        if !stopping {
            commit_ready(&source, &acks, &store, &metrics).await;
            continue;
        }
        // The last commit, tried again after a failure for a few seconds, bounded as a whole
        // (a store that blocks must not use up a container's stop grace).
        let deadline = tokio::time::Instant::now() + FINAL_COMMIT_FOR;
        let attempt = || tokio::time::timeout_at(deadline, commit_ready(&source, &acks, &store, &metrics));
        let mut committed = attempt().await.unwrap_or(false);
        while !committed && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            committed = attempt().await.unwrap_or(false);
        }
        return;
    }
}

/// How long the last commit at shutdown may take, tried again after a failure.
const FINAL_COMMIT_FOR: Duration = Duration::from_secs(5);

/// Commits what is ready; false when the commit failed (the values are kept for the next).
async fn commit_ready(
    source: &Arc<str>,
    acks: &AckTracker,
    store: &Arc<dyn CheckpointStore>,
    metrics: &Metrics,
) -> bool {
    let ready = acks.take_ready();
    if ready.is_empty() {
        return true;
    }
    let values: Vec<(CheckpointKey, String)> = ready
        .iter()
        .map(|r| {
            let (tenant, partition) = split_partition_id(&r.partition);
            (CheckpointKey::new(source, tenant, partition), r.value.clone())
        })
        .collect();
    let store = store.clone();
    let n = values.len();
    let res = tokio::task::spawn_blocking(move || store.commit(&values)).await;
    match res {
        Ok(Ok(())) => {
            Metrics::source_count(&metrics.checkpoint_commits, source, 1);
            tracing::debug!(source = %source, partitions = n, "checkpoint committed");
            true
        }
        Ok(Err(e)) => {
            metrics.error(source, "checkpoint");
            tracing::error!(source = %source, error = %e, "checkpoint commit failed; retrying at the next commit");
            acks.restore_ready(ready);
            false
        }
        Err(e) => {
            tracing::error!(source = %source, error = %e, "checkpoint commit task failed; retrying at the next commit");
            acks.restore_ready(ready);
            false
        }
    }
}
