//! The router: fans normalized events out to the sinks that take them, each copy encoded
//! ahead for its sink; sends quarantined events (and copies that cannot be encoded) to the
//! dead-letter file; drops duplicate detections when asked. A batch can be staged in parts,
//! each right after it was normalized, and is sent to the sinks whole.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::route::CompiledFilter;
use crate::ack::Status;
use crate::config::WhenFull;
use crate::deadletter::DeadLetter;
use crate::encode::{EncodeReport, Encoded, Encoder};
use crate::event::{Batch, Event};
use crate::telemetry::Metrics;

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
    /// Events of the last batch sent (with `bytes_per_event`, the next buffer's size).
    events_per_batch: usize,
    /// Staged for the sink since the last batch was sent: the copies, and (with an encoder)
    /// their messages, one after the other in `buf`.
    staged: Batch,
    encoded: Vec<(std::ops::Range<usize>, EncodeReport)>,
    buf: Vec<u8>,
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
            events_per_batch: 0,
            staged: Vec::new(),
            encoded: Vec::new(),
            buf: Vec::new(),
        }
    }

    fn takes(&self, e: &Event) -> bool {
        (self.inputs.is_empty() || self.inputs.iter().any(|i| **i == *e.meta.source)) && self.filter.matches(&e.meta)
    }

    /// Encodes `e` for this route's sink after what is staged already, and stages it; it
    /// lets its record and normalized form go once encoded (unless the route dead-letters
    /// when full: the dead-letter record needs the record). An event that cannot be encoded
    /// is quarantined as the sink would have done and pushed to `failed`.
    fn stage_one(&mut self, mut e: Event, failed: &mut Vec<Event>) {
        let Some(encoder) = &self.encoder else {
            self.staged.push(e);
            return;
        };
        if self.staged.is_empty() {
            // Room for a batch like the last one (a part's worth before the first).
            let events = match self.events_per_batch {
                0 => super::stages::STAGE_EVENTS,
                n => n,
            };
            self.buf.reserve(self.bytes_per_event * events);
        }
        let start = self.buf.len();
        match encoder.encode(&e, &mut self.buf) {
            Ok(report) => {
                self.encoded.push((start..self.buf.len(), report));
                if self.when_full == WhenFull::Block {
                    e.raw = Bytes::new();
                    e.normalized = None;
                }
                self.staged.push(e);
            }
            Err(err) => {
                self.buf.truncate(start);
                e.quarantine(format!("sink:{}", self.sink), err.reason(), err.to_string());
                failed.push(e);
            }
        }
    }

    /// [`Route::stage_one`] for each of `copies`; the events that cannot be encoded.
    #[cfg(test)]
    fn stage(&mut self, copies: Batch) -> Batch {
        let mut failed = Vec::new();
        for e in copies {
            self.stage_one(e, &mut failed);
        }
        failed
    }

    /// The staged copies, each with its slice ([`Event::encoded`]) of one buffer shared by
    /// them all.
    fn take_staged(&mut self) -> Batch {
        if self.staged.is_empty() {
            return Vec::new();
        }
        // Room for a batch like this one, so that staging in parts does not regrow it.
        let room = self.staged.len();
        let mut batch = std::mem::replace(&mut self.staged, Vec::with_capacity(room));
        if self.encoder.is_none() {
            return batch;
        }
        let mut buf = std::mem::take(&mut self.buf);
        // A little over the last average, so the next buffer rarely grows.
        self.bytes_per_event = buf.len() / batch.len() + 16;
        self.events_per_batch = batch.len();
        if buf.capacity() - buf.len() > buf.len() / 32 {
            buf.shrink_to_fit();
        }
        let data = Bytes::from(buf);
        for (e, (range, report)) in batch.iter_mut().zip(self.encoded.drain(..)) {
            e.encoded = Some(Encoded {
                data: data.slice(range),
                report,
            });
        }
        batch
    }
}

/// Routes normalized batches to the sinks: quarantined events to the dead-letter file,
/// duplicate detections dropped (acknowledged and counted) when `suppress_duplicates`,
/// every other event, encoded ahead, to each sink that takes it (the last of them gets the
/// event, the others copies with their own finalizer handles).
pub struct Router {
    routes: Vec<Route>,
    dead_letter: Arc<DeadLetter>,
    metrics: Arc<Metrics>,
    force: CancellationToken,
    suppress_duplicates: bool,
    /// Staged since the last flush: events for the dead-letter file (quarantined, or a copy
    /// its sink's encoder refused), and what the metrics are told at the flush.
    dead: Vec<Event>,
    tallies: BTreeMap<(Arc<str>, Arc<str>), u64>,
    /// The lag of the last event of each source.
    lags: Vec<(Arc<str>, i64)>,
    unrouted: BTreeMap<Arc<str>, u64>,
}

pub(super) async fn run_router(mut rx: mpsc::Receiver<Batch>, mut router: Router) {
    while let Some(batch) = rx.recv().await {
        if !router.route(batch).await {
            return;
        }
    }
}

impl Router {
    pub fn new(
        routes: Vec<Route>,
        dead_letter: Arc<DeadLetter>,
        metrics: Arc<Metrics>,
        force: CancellationToken,
        suppress_duplicates: bool,
    ) -> Router {
        Router {
            routes,
            dead_letter,
            metrics,
            force,
            suppress_duplicates,
            dead: Vec::new(),
            tallies: BTreeMap::new(),
            lags: Vec::new(),
            unrouted: BTreeMap::new(),
        }
    }

    /// Route one batch; false when forced to stop (what is left stays unacknowledged).
    pub async fn route(&mut self, batch: Batch) -> bool {
        self.stage(batch);
        self.flush().await
    }

    /// Counts, sorts and encodes `events` (a batch or part of one) without waiting: what goes
    /// to the dead-letter file and what each sink gets, encoded, are kept for
    /// [`Router::flush`]; records and trees are let go once encoded (for a sink with an
    /// encoder here and `when_full = "block"`). Takes every event of `events` (the inline
    /// normalizer relies on it).
    pub fn stage(&mut self, events: impl IntoIterator<Item = Event>) {
        let Router {
            routes,
            metrics,
            suppress_duplicates,
            dead,
            tallies,
            lags,
            unrouted,
            ..
        } = self;
        // Runs of one source and category (the usual batch) are counted before the map.
        let mut run: Option<(Arc<str>, Arc<str>, u64)> = None;
        // Each event is staged as it comes (moved as few times as possible: an event is a
        // few hundred bytes).
        for mut e in events {
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
                dead.push(e);
                continue;
            }
            if *suppress_duplicates && e.meta.duplicate {
                Metrics::source_count(&metrics.detections_suppressed, &e.meta.source, 1);
                e.finalizer.mark(Status::Delivered);
                continue;
            }
            // Every route that takes the event gets it: the last of them the event itself, the
            // others a copy (with its own finalizer handle, so the source waits for every
            // copy). An event no route takes is done.
            match routes.iter().rposition(|r| r.takes(&e)) {
                Some(last) => {
                    for route in routes[..last].iter_mut().filter(|r| r.takes(&e)) {
                        let copy = e.fan_out();
                        route.stage_one(copy, dead);
                    }
                    routes[last].stage_one(e, dead);
                }
                None => {
                    *unrouted.entry(e.meta.source.clone()).or_default() += 1;
                    e.finalizer.mark(Status::Delivered);
                }
            }
        }
        if let Some((s, c, n)) = run.take() {
            *tallies.entry((s, c)).or_default() += n;
        }
    }

    /// Tells the metrics what was staged, writes what goes to the dead-letter file, then
    /// hands each sink its copies (waiting while a sink is behind: backpressure up to the
    /// sources). False when forced to stop first (what is left stays unacknowledged).
    pub async fn flush(&mut self) -> bool {
        let Router {
            routes,
            dead_letter,
            metrics,
            force,
            dead,
            tallies,
            lags,
            unrouted,
            ..
        } = self;
        metrics.categories(tallies);
        tallies.clear();
        for (source, lag) in lags.drain(..) {
            metrics
                .source_lag_seconds
                .get_or_create(&crate::telemetry::SourceLabels {
                    source: source.to_string(),
                })
                .set(lag as f64 / 1000.0);
        }
        for (source, n) in std::mem::take(unrouted) {
            Metrics::source_count(&metrics.unrouted, &source, n);
        }
        if !dead.is_empty() {
            let mut events = std::mem::take(dead);
            if !dead_letter_until_written(dead_letter, &mut events, force).await {
                return false;
            }
        }
        for route in routes.iter_mut() {
            let copies = route.take_staged();
            if copies.is_empty() {
                continue;
            }
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
                        if !dead_letter_until_written(dead_letter, &mut copies, force).await {
                            return false;
                        }
                        continue;
                    }
                },
            };
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
        let failed = r.stage(vec![good.fan_out(), bad.fan_out()]);
        let failed2 = r.stage(vec![good.fan_out()]);
        assert!(failed2.is_empty());
        let copies = r.take_staged();

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
        // Both parts' messages in one buffer, one after the other.
        let (a, b) = (
            &copies[0].encoded.as_ref().unwrap().data,
            &copies[1].encoded.as_ref().unwrap().data,
        );
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        // The next batch's buffer is sized from this one.
        assert!(r.bytes_per_event >= expected.len());
    }

    #[test]
    fn a_route_that_dead_letters_when_full_keeps_the_record() {
        let opts = EncoderOptions::default();
        let mut r = route(Box::new(CefEncoder::new(&opts)), WhenFull::DeadLetter);
        assert!(r
            .stage(vec![event(EventKind::Alert, "GraphAlert", "{}", Some(alert_ocsf()))])
            .is_empty());
        let copies = r.take_staged();
        let e = &copies[0];
        assert!(e.encoded.as_ref().unwrap().data.starts_with(b"CEF:0|"));
        assert_eq!(&e.raw[..], b"{}", "kept for a sink_buffer_full dead-letter record");
    }

    /// A router over `routes` with its dead-letter file `dl.ndjson` in `dir`.
    fn router_in(dir: &std::path::Path, routes: Vec<Route>) -> Router {
        let metrics = Arc::new(Metrics::new());
        let dead_letter = Arc::new(DeadLetter::new(&dir.join("dl.ndjson"), metrics.clone()));
        Router::new(routes, dead_letter, metrics, CancellationToken::new(), false)
    }

    /// A batch staged in parts reaches the sink as one batch, in order, each copy encoded;
    /// what was quarantined or could not be encoded goes to the dead-letter file first.
    #[tokio::test]
    async fn parts_staged_go_out_as_one_batch() {
        let opts = EncoderOptions::default();
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let route = Route::new(
            Arc::from("siem"),
            Vec::new(),
            CompiledFilter::default(),
            WhenFull::Block,
            tx,
            Some(Box::new(OcsfEncoder::new(&opts))),
        );
        let mut router = router_in(dir.path(), vec![route]);
        let numbered = |n: u64, ocsf: bool| {
            let mut o = alert_ocsf();
            o["metadata"]["uid"] = serde_json::Value::from(format!("e{n}"));
            let mut e = event(EventKind::Alert, "GraphAlert", "{}", ocsf.then_some(o));
            e.meta.position.offset = n;
            e
        };
        let mut quarantined = numbered(3, true);
        quarantined.quarantine("normalize", "invalid_json", "x".into());
        router.stage(vec![numbered(1, true), numbered(2, false)]);
        router.stage(vec![quarantined, numbered(4, true)]);
        assert!(rx.try_recv().is_err(), "nothing sent before the flush");
        assert!(router.flush().await);

        let batch = rx.try_recv().expect("one batch");
        let offsets: Vec<u64> = batch.iter().map(|e| e.meta.position.offset).collect();
        assert_eq!(offsets, [1, 4]);
        for (e, uid) in batch.iter().zip(["e1", "e4"]) {
            let v: serde_json::Value = serde_json::from_slice(&e.encoded.as_ref().unwrap().data).unwrap();
            assert_eq!(v["metadata"]["uid"], uid);
        }
        assert!(rx.try_recv().is_err(), "only one batch");
        let dl = std::fs::read_to_string(dir.path().join("dl.ndjson")).unwrap();
        let reasons: Vec<String> = dl
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["reason"].to_string())
            .collect();
        assert_eq!(reasons, ["\"not_normalized\"", "\"invalid_json\""]);
    }

    /// Two sinks that take every event both get all of it, in order (one the events, the
    /// other copies); a sink whose input is another source gets none.
    #[tokio::test]
    async fn every_sink_that_takes_an_event_gets_it() {
        let opts = EncoderOptions::default();
        let dir = tempfile::tempdir().unwrap();
        let mut receivers = Vec::new();
        let mut routes = Vec::new();
        for inputs in [vec![], vec!["elsewhere".to_string()], vec![]] {
            let (tx, rx) = mpsc::channel(4);
            receivers.push(rx);
            let enc: Box<dyn Encoder> = Box::new(CefEncoder::new(&opts));
            routes.push(Route::new(
                Arc::from("siem"),
                inputs,
                CompiledFilter::default(),
                WhenFull::Block,
                tx,
                Some(enc),
            ));
        }
        let mut router = router_in(dir.path(), routes);
        let events: Batch = (1..=3)
            .map(|n| {
                let mut e = event(EventKind::Alert, "GraphAlert", "{}", Some(alert_ocsf()));
                e.meta.position.offset = n;
                e
            })
            .collect();
        assert!(router.route(events).await);
        for r in [0, 2] {
            let batch = receivers[r].try_recv().expect("a batch");
            let offsets: Vec<u64> = batch.iter().map(|e| e.meta.position.offset).collect();
            assert_eq!(offsets, [1, 2, 3], "route {r}");
            assert!(batch
                .iter()
                .all(|e| e.encoded.as_ref().unwrap().data.starts_with(b"CEF:0|")));
        }
        assert!(receivers[1].try_recv().is_err(), "the other source's sink gets nothing");
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
