//! The middle stages: normalization on a worker pool (order kept), the router that fans
//! events out to sinks, encoded ahead for each, and sends quarantined events to the
//! dead-letter file, and checkpoints committed from acknowledgments.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::route::CompiledFilter;
use crate::ack::{AckTracker, Status};
use crate::checkpoint::{split_partition_id, CheckpointKey, CheckpointStore};
use crate::config::WhenFull;
use crate::deadletter::DeadLetter;
use crate::encode::{Encoded, Encoder};
use crate::event::{Batch, Event, EventUid};
use crate::normalize::{Normalizer, UserKey};
use crate::telemetry::Metrics;

/// Normalize one batch; a failure (or a panic) quarantines that event only. Also returns
/// the indexes of events whose user was not in the restoration cache.
pub fn normalize_batch(normalizer: &Normalizer, metrics: &Metrics, mut batch: Batch) -> (Batch, Vec<(usize, UserKey)>) {
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
    (batch, unrestored)
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
            tokio::task::spawn_blocking(move || normalize_batch(&n, &m, batch))
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

/// One worker: normalizes each batch on this task's thread. With a single core a blocking
/// pool thread only adds a thread switch per batch, and the trees are then allocated and
/// freed (by the sinks, after acknowledgment) on the same thread, which the allocator serves
/// from its local free lists. Batches are bounded (`pipeline.batch_max_events`), so the runtime is
/// held for one batch at a time.
async fn run_normalize_inline(
    mut rx: mpsc::Receiver<Batch>,
    mut router: Router,
    normalizer: &Normalizer,
    metrics: &Metrics,
) {
    while let Some(batch) = rx.recv().await {
        let (batch, _) = normalize_batch(normalizer, metrics, batch);
        if !router.route(batch).await {
            break;
        }
        // Let the sources and sinks run between batches.
        tokio::task::yield_now().await;
    }
}

/// One sink as the router sees it.
pub struct Route {
    pub sink: Arc<str>,
    pub inputs: Vec<String>,
    pub filter: CompiledFilter,
    pub when_full: WhenFull,
    pub tx: mpsc::Sender<Batch>,
    /// The sink's encoder, run here so that only the encoded bytes wait in the sink's
    /// buffer; `None` when the sink encodes itself (a disk buffer stores the normalized
    /// form; sinks added by code).
    pub encoder: Option<Box<dyn Encoder>>,
    /// Encoded bytes per event of the last batch: sizes the next batch's buffer.
    pub bytes_per_event: usize,
}

impl Route {
    pub fn new(
        sink: Arc<str>,
        inputs: Vec<String>,
        filter: CompiledFilter,
        when_full: WhenFull,
        tx: mpsc::Sender<Batch>,
        encoder: Option<Box<dyn Encoder>>,
    ) -> Route {
        Route {
            sink,
            inputs,
            filter,
            when_full,
            tx,
            encoder,
            bytes_per_event: 1024,
        }
    }

    fn takes(&self, e: &Event) -> bool {
        (self.inputs.is_empty() || self.inputs.iter().any(|i| **i == *e.meta.source)) && self.filter.matches(&e.meta)
    }

    /// Encodes `copies` for this route's sink into one buffer shared by the batch; each event
    /// keeps its slice ([`Event::encoded`]) and lets its record and normalized form go
    /// (unless the route dead-letters when full: the dead-letter record needs the record).
    /// Returns the events that cannot be encoded, quarantined as the sink would have done.
    fn encode_ahead(&mut self, copies: &mut Batch) -> Batch {
        let Some(encoder) = &self.encoder else {
            return Vec::new();
        };
        let mut buf = Vec::with_capacity(self.bytes_per_event * copies.len());
        let results: Vec<_> = copies
            .iter()
            .map(|e| {
                let start = buf.len();
                encoder.encode(e, &mut buf).map(|r| (start..buf.len(), r))
            })
            .collect();
        // A little over the last average, so the next buffer rarely grows.
        let encoded = results.iter().filter(|r| r.is_ok()).count();
        self.bytes_per_event = buf.len() / encoded.max(1) + 16;
        if buf.capacity() - buf.len() > buf.len() / 32 {
            buf.shrink_to_fit();
        }
        let data = Bytes::from(buf);
        let release = self.when_full == WhenFull::Block;
        let mut failed = Vec::new();
        let mut kept = Vec::with_capacity(copies.len());
        for (mut e, res) in copies.drain(..).zip(results) {
            match res {
                Ok((range, report)) => {
                    e.encoded = Some(Encoded {
                        data: data.slice(range),
                        report,
                    });
                    if release {
                        e.raw = Bytes::new();
                        e.normalized = None;
                    }
                    kept.push(e);
                }
                Err(err) => {
                    e.quarantine(format!("sink:{}", self.sink), err.reason(), err.to_string());
                    failed.push(e);
                }
            }
        }
        *copies = kept;
        failed
    }
}

/// Routes normalized batches to the sinks: quarantined events to the dead-letter file,
/// duplicate detections dropped (acknowledged and counted) when `suppress_duplicates`,
/// every other event copied, encoded ahead, to each sink that takes it.
pub struct Router {
    pub routes: Vec<Route>,
    pub dead_letter: Arc<DeadLetter>,
    pub metrics: Arc<Metrics>,
    pub force: CancellationToken,
    pub suppress_duplicates: bool,
}

async fn run_router(mut rx: mpsc::Receiver<Batch>, mut router: Router) {
    while let Some(batch) = rx.recv().await {
        if !router.route(batch).await {
            return;
        }
    }
}

impl Router {
    /// Route one batch; false when forced to stop (what is left stays unacknowledged).
    pub async fn route(&mut self, batch: Batch) -> bool {
        let Router {
            routes,
            dead_letter,
            metrics,
            force,
            suppress_duplicates,
        } = self;
        let suppress_duplicates = *suppress_duplicates;
        let mut tallies: BTreeMap<(Arc<str>, Arc<str>), u64> = BTreeMap::new();
        // Runs of one source and category (the usual batch) are counted before the map.
        let mut run: Option<(Arc<str>, Arc<str>, u64)> = None;
        // The lag of the last event of each source in the batch.
        let mut lags: Vec<(Arc<str>, i64)> = Vec::new();
        let mut quarantined = Vec::new();
        let mut good = Vec::with_capacity(batch.len());
        for mut e in batch {
            match &mut run {
                Some((s, c, n)) if Arc::ptr_eq(s, &e.meta.source) && Arc::ptr_eq(c, &e.meta.category) => *n += 1,
                _ => {
                    if let Some((s, c, n)) = run.take() {
                        *tallies.entry((s, c)).or_default() += n;
                    }
                    run = Some((e.meta.source.clone(), e.meta.category.clone(), 1));
                }
            }
            if let Some(t) = e.meta.event_ms {
                let lag = e.meta.received_ms - t;
                match lags.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &e.meta.source)) {
                    Some(l) => l.1 = lag,
                    None => lags.push((e.meta.source.clone(), lag)),
                }
            }
            if e.quarantine.is_some() {
                quarantined.push(e);
            } else if suppress_duplicates && e.meta.duplicate {
                Metrics::source_count(&metrics.detections_suppressed, &e.meta.source, 1);
                e.finalizer.mark(Status::Delivered);
            } else {
                good.push(e);
            }
        }
        if let Some((s, c, n)) = run.take() {
            *tallies.entry((s, c)).or_default() += n;
        }
        metrics.categories(&tallies);
        for (source, lag) in lags {
            metrics
                .source_lag_seconds
                .get_or_create(&crate::telemetry::SourceLabels {
                    source: source.to_string(),
                })
                .set(lag as f64 / 1000.0);
        }

        if !quarantined.is_empty() && !dead_letter_until_written(dead_letter, &mut quarantined, force).await {
            return false;
        }

        // Copies for every route first, encoded; then the originals (records and trees)
        // are let go before waiting on any sink.
        let mut routed = vec![false; good.len()];
        let mut outgoing: Vec<(usize, Batch)> = Vec::with_capacity(routes.len());
        for (r, route) in routes.iter_mut().enumerate() {
            let mut copies: Batch = Vec::with_capacity(good.len());
            for (i, e) in good.iter().enumerate().filter(|(_, e)| route.takes(e)) {
                routed[i] = true;
                copies.push(e.fan_out());
            }
            if copies.is_empty() {
                continue;
            }
            let mut failed = route.encode_ahead(&mut copies);
            if !failed.is_empty() && !dead_letter_until_written(dead_letter, &mut failed, force).await {
                return false;
            }
            if !copies.is_empty() {
                outgoing.push((r, copies));
            }
        }
        let mut unrouted: BTreeMap<Arc<str>, u64> = BTreeMap::new();
        for (e, r) in good.iter_mut().zip(routed) {
            if !r {
                *unrouted.entry(e.meta.source.clone()).or_default() += 1;
            }
            // The original is done; the copies decide.
            e.finalizer.mark(Status::Delivered);
        }
        drop(good);
        for (source, n) in unrouted {
            Metrics::source_count(&metrics.unrouted, &source, n);
        }

        for (r, copies) in outgoing {
            let route = &routes[r];
            let copies = match route.when_full {
                WhenFull::Block => copies,
                WhenFull::DeadLetter => match route.tx.try_send(copies) {
                    Ok(()) => continue,
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        tracing::error!(sink = %route.sink, "sink stopped; its events stay unacknowledged");
                        continue;
                    }
                    Err(mpsc::error::TrySendError::Full(mut copies)) => {
                        let stage: Arc<str> = Arc::from(format!("sink:{}", route.sink));
                        for e in copies.iter_mut() {
                            e.quarantine(
                                stage.clone(),
                                "sink_buffer_full",
                                "the sink's buffer was full (when_full = \"dead_letter\")".into(),
                            );
                        }
                        dead_letter_until_written(dead_letter, &mut copies, force).await;
                        continue;
                    }
                },
            };
            // Waits while the sink is behind: backpressure up to the sources.
            if route.tx.send(copies).await.is_err() {
                tracing::error!(sink = %route.sink, "sink stopped; its events stay unacknowledged");
            }
            let cap = route.tx.max_capacity();
            metrics.sink_buffer(&route.sink, cap - route.tx.capacity(), cap);
        }
        true
    }
}

/// Write `events` to the dead-letter file, retrying until it works, then mark them
/// `Rejected`. False when forced to stop first (the events stay unacknowledged).
async fn dead_letter_until_written(dead_letter: &DeadLetter, events: &mut [Event], force: &CancellationToken) -> bool {
    let mut attempt = 0u32;
    while let Err(e) = dead_letter.write(events).await {
        attempt += 1;
        tracing::error!(error = %e, attempt, "dead-letter write failed; retrying");
        let delay = Duration::from_millis(200u64 << attempt.min(7));
        tokio::select! {
            _ = force.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    for e in events.iter_mut() {
        e.finalizer.mark(Status::Rejected);
    }
    true
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
        commit_ready(&source, &acks, &store, &metrics).await;
        if stopping {
            return;
        }
    }
}

async fn commit_ready(source: &Arc<str>, acks: &AckTracker, store: &Arc<dyn CheckpointStore>, metrics: &Metrics) {
    let ready = acks.take_ready();
    if ready.is_empty() {
        return;
    }
    let values: Vec<(CheckpointKey, String)> = ready
        .into_iter()
        .map(|r| {
            let (tenant, partition) = split_partition_id(&r.partition);
            (CheckpointKey::new(source, tenant, partition), r.value)
        })
        .collect();
    let store = store.clone();
    let n = values.len();
    let res = tokio::task::spawn_blocking(move || store.commit(&values)).await;
    match res {
        Ok(Ok(())) => {
            Metrics::source_count(&metrics.checkpoint_commits, source, 1);
            tracing::debug!(source = %source, partitions = n, "checkpoint committed");
        }
        Ok(Err(e)) => {
            metrics.error(source, "checkpoint");
            tracing::error!(source = %source, error = %e, "checkpoint commit failed; will retry with the next acknowledgments");
        }
        Err(e) => tracing::error!(source = %source, error = %e, "checkpoint commit task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::testutil::{alert_ocsf, event};
    use crate::encode::{CefEncoder, EncoderOptions, OcsfEncoder};
    use crate::event::EventKind;

    fn route(encoder: Box<dyn Encoder>, when_full: WhenFull) -> Route {
        let (tx, _rx) = mpsc::channel(1);
        Route::new(
            Arc::from("siem"),
            Vec::new(),
            CompiledFilter::default(),
            when_full,
            tx,
            Some(encoder),
        )
    }

    #[test]
    fn encoding_ahead_keeps_only_the_sinks_bytes_and_quarantines_what_cannot_be_encoded() {
        let opts = EncoderOptions::default();
        let raw = r#"{"id":"da637"}"#;
        let good = event(EventKind::Alert, "GraphAlert", raw, Some(alert_ocsf()));
        // No normalized form: the OCSF encoder refuses it, as the sink would.
        let bad = event(EventKind::Alert, "GraphAlert", raw, None);
        let mut expected = Vec::new();
        let report = OcsfEncoder::new(&opts).encode(&good, &mut expected).unwrap();

        let mut r = route(Box::new(OcsfEncoder::new(&opts)), WhenFull::Block);
        let mut copies = vec![good.fan_out(), bad.fan_out(), good.fan_out()];
        let failed = r.encode_ahead(&mut copies);

        assert_eq!(copies.len(), 2);
        for e in &copies {
            let enc = e.encoded.as_ref().expect("encoded");
            assert_eq!(&enc.data[..], &expected[..], "the same bytes the sink would write");
            assert_eq!(enc.report, report);
            assert!(e.raw.is_empty() && e.normalized.is_none(), "record and tree let go");
            assert_eq!(e.meta.position, good.meta.position, "the position stays");
        }
        assert_eq!(failed.len(), 1);
        let q = failed[0].quarantine.as_ref().expect("quarantined");
        assert_eq!((&*q.stage, q.reason), ("sink:siem", "not_normalized"));
        assert_eq!(
            &failed[0].raw[..],
            raw.as_bytes(),
            "the dead-letter record has the record"
        );
        // The next batch's buffer is sized from this one.
        assert!(r.bytes_per_event >= expected.len());
    }

    #[test]
    fn a_route_that_dead_letters_when_full_keeps_the_record() {
        let opts = EncoderOptions::default();
        let mut r = route(Box::new(CefEncoder::new(&opts)), WhenFull::DeadLetter);
        let mut copies = vec![event(EventKind::Alert, "GraphAlert", "{}", Some(alert_ocsf()))];
        assert!(r.encode_ahead(&mut copies).is_empty());
        let e = &copies[0];
        assert!(e.encoded.as_ref().unwrap().data.starts_with(b"CEF:0|"));
        assert_eq!(&e.raw[..], b"{}", "kept for a sink_buffer_full dead-letter record");
    }

    #[test]
    fn a_sink_sends_the_bytes_encoded_ahead() {
        let opts = EncoderOptions::default();
        let mut e = event(EventKind::Alert, "GraphAlert", "{}", Some(alert_ocsf()));
        e.encoded = Some(Encoded {
            data: Bytes::from_static(b"ahead\n"),
            report: crate::encode::EncodeReport::default(),
        });
        let mut out = b"x".to_vec();
        crate::encode::append(&CefEncoder::new(&opts), &e, &mut out).unwrap();
        assert_eq!(out, b"xahead\n");
    }
}
