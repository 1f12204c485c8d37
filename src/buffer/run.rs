//! The three tasks of a disk buffer: the writer (pipeline batches → log → upstream
//! acknowledgments), the reader (log → sink driver, torn and corrupt records to the
//! dead-letter file) and the acknowledger (sink acknowledgments → pointer, segment deletion).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::codec;
use super::log::{frame, Log, LogError, LogReader, Pos, Read};
use super::{DiskSettings, Fsync};
use crate::ack::{AckTracker, Finalizer, Status};
use crate::deadletter::DeadLetter;
use crate::event::{Batch, Event, EventKind, EventMeta, Position};
use crate::sinks::driver::{SinkDied, SinkDriver};
use crate::telemetry::{BufferMetrics, BufferReasonLabels, Metrics};

/// The acknowledgment partition the reader registers records under.
const PARTITION: &str = "disk_buffer";

/// fsync at the latest after this many bytes were appended (`batch` and `interval`).
const SYNC_BYTES: usize = 8 << 20;

/// How long a waiting task sleeps before looking again when no notification came.
const POLL: Duration = Duration::from_millis(100);

struct Shared {
    name: Arc<str>,
    log: Mutex<Log>,
    settings: DiskSettings,
    metrics: Arc<Metrics>,
    dead_letter: Arc<DeadLetter>,
    /// Data was appended.
    data: Notify,
    /// Space was freed (segments acknowledged).
    space: Notify,
    /// The writer has ended (its input closed): the reader stops once it caught up.
    writer_done: CancellationToken,
    /// Records before this position were written by an earlier run.
    replay_end: Pos,
}

impl Shared {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_bytes(&self) {
        let pending = self.log().pending_bytes();
        self.metrics
            .buffer
            .bytes
            .get_or_create(&BufferMetrics::sink(&self.name))
            .set(pending as i64);
    }
}

/// One sink's disk buffer, opened and recovered, ready to run in front of its driver.
pub struct DiskBuffer {
    shared: Arc<Shared>,
}

impl DiskBuffer {
    /// Open the log (default directory `<data_dir>/buffers/<name>`).
    pub fn open(
        name: Arc<str>,
        data_dir: &Path,
        settings: DiskSettings,
        metrics: Arc<Metrics>,
        dead_letter: Arc<DeadLetter>,
    ) -> Result<DiskBuffer, LogError> {
        let dir: PathBuf = settings
            .path
            .clone()
            .unwrap_or_else(|| data_dir.join("buffers").join(&*name));
        let log = Log::open(&dir, settings.segment_max_bytes)?;
        let replay_end = log.end();
        let pending = log.pending_bytes();
        if pending > 0 {
            tracing::info!(sink = %name, dir = %dir.display(), bytes = pending, "disk buffer holds unacknowledged records from an earlier run; replaying them");
        }
        let labels = BufferMetrics::sink(&name);
        metrics
            .buffer
            .max_bytes
            .get_or_create(&labels)
            .set(settings.max_bytes as i64);
        metrics.buffer.bytes.get_or_create(&labels).set(pending as i64);
        Ok(DiskBuffer {
            shared: Arc::new(Shared {
                name,
                log: Mutex::new(log),
                settings,
                metrics,
                dead_letter,
                data: Notify::new(),
                space: Notify::new(),
                writer_done: CancellationToken::new(),
                replay_end,
            }),
        })
    }

    pub fn dir(&self) -> PathBuf {
        self.shared.log().dir().to_path_buf()
    }

    /// Run the writer on `rx`, the reader and the acknowledger, and the driver on what the
    /// reader replays; returns when the driver has ended and the last acknowledgments are stored.
    /// `Err` when the driver died: the writer then stops taking batches (what it took and
    /// did not make durable stays unacknowledged), so the pipeline learns of it at once
    /// instead of filling the buffer for a sink that no longer reads it.
    pub async fn run(self, rx: mpsc::Receiver<Batch>, driver: SinkDriver) -> Result<(), SinkDied> {
        let span = tracing::info_span!("disk_buffer", sink = %self.shared.name);
        let writer_stop = driver.force.child_token();
        let (dtx, drx) = mpsc::channel(2);
        let acks = AckTracker::new();
        let writer = tokio::spawn(write_loop(self.shared.clone(), rx, writer_stop.clone()).instrument(span.clone()));
        let reader = tokio::spawn(read_loop(self.shared.clone(), dtx, acks.clone()).instrument(span.clone()));
        let stop = CancellationToken::new();
        let acker = tokio::spawn(ack_loop(self.shared.clone(), acks, stop.clone()).instrument(span));
        let force = driver.force.clone();
        let name = driver.name.clone();
        let mut ended = driver.run(drx).await;
        // The driver's input ends normally only after the writer's (the reader drains the
        // log, then stops): ended before, the reader died, and the writer would fill the
        // buffer for nobody.
        if ended.is_ok() && !self.shared.writer_done.is_cancelled() && !force.is_cancelled() {
            ended = Err(SinkDied {
                sink: name,
                reason: "the disk buffer's reader stopped".into(),
            });
        }
        if ended.is_err() {
            writer_stop.cancel();
        }
        let _ = reader.await;
        let _ = writer.await;
        stop.cancel();
        let _ = acker.await;
        ended
    }
}

/// Append batches, fsync per policy, then release the upstream acknowledgments.
async fn write_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<Batch>, force: CancellationToken) {
    let labels = BufferMetrics::sink(&shared.name);
    let written = shared.metrics.buffer.written_events.get_or_create(&labels).clone();
    // Written, not yet fsynced (their acknowledgments wait), and since when.
    let mut unsynced: Vec<Event> = Vec::new();
    let mut unsynced_bytes = 0usize;
    let mut since = Instant::now();
    loop {
        let next = if unsynced.is_empty() {
            tokio::select! {
                b = rx.recv() => b,
                _ = force.cancelled() => None,
            }
        } else {
            match shared.settings.fsync {
                // While batches keep coming, still fsync every few MiB (bounded memory and
                // acknowledgment delay), whatever the policy.
                _ if unsynced_bytes >= SYNC_BYTES => {
                    if !sync_and_release(&shared, &mut unsynced, &force).await {
                        break;
                    }
                    continue;
                }
                Fsync::Always | Fsync::Batch => match rx.try_recv() {
                    Ok(b) => Some(b),
                    Err(_) => {
                        if !sync_and_release(&shared, &mut unsynced, &force).await {
                            break;
                        }
                        continue;
                    }
                },
                Fsync::Interval(d) => {
                    tokio::select! {
                        b = rx.recv() => b,
                        _ = tokio::time::sleep_until((since + d).into()) => {
                            if !sync_and_release(&shared, &mut unsynced, &force).await {
                                break;
                            }
                            continue;
                        }
                    }
                }
            }
        };
        let Some(batch) = next else {
            sync_and_release(&shared, &mut unsynced, &force).await;
            break;
        };
        if batch.is_empty() {
            continue;
        }
        let mut payload = Vec::with_capacity(batch.iter().map(|e| e.raw.len() * 3 + 128).sum());
        codec::encode_batch(&batch, &mut payload);
        let record = frame(&payload);
        drop(payload);
        // Full: make what is written durable (its acknowledgments go out), then wait.
        if !has_space(&shared, record.len() as u64) {
            if !sync_and_release(&shared, &mut unsynced, &force).await {
                break;
            }
            if !wait_for_space(&shared, record.len() as u64, &force).await {
                break;
            }
        }
        let record_len = record.len();
        if !append(&shared, record, &force).await {
            break;
        }
        written.inc_by(batch.len() as u64);
        shared.data.notify_waiters();
        shared.publish_bytes();
        if unsynced.is_empty() {
            since = Instant::now();
            unsynced_bytes = 0;
        }
        unsynced_bytes += record_len;
        unsynced.extend(batch);
        if shared.settings.fsync == Fsync::Always && !sync_and_release(&shared, &mut unsynced, &force).await {
            break;
        }
    }
    shared.writer_done.cancel();
    shared.data.notify_waiters();
}

fn has_space(shared: &Shared, len: u64) -> bool {
    let pending = shared.log().pending_bytes();
    // One record larger than the whole buffer still goes in when the buffer is empty.
    pending == 0 || pending + len <= shared.settings.max_bytes
}

async fn wait_for_space(shared: &Shared, len: u64, force: &CancellationToken) -> bool {
    let started = Instant::now();
    tracing::warn!(
        max_bytes = shared.settings.max_bytes,
        "disk buffer full; writes wait for the sink (backpressure)"
    );
    let blocked = shared
        .metrics
        .buffer
        .blocked_seconds
        .get_or_create(&BufferMetrics::sink(&shared.name))
        .clone();
    let mut last = Instant::now();
    while !has_space(shared, len) {
        tokio::select! {
            _ = force.cancelled() => return false,
            _ = shared.space.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        blocked.inc_by(last.elapsed().as_secs_f64());
        last = Instant::now();
    }
    tracing::info!(
        waited_ms = started.elapsed().as_millis() as u64,
        "disk buffer has room again"
    );
    true
}

/// Append one record, retrying on I/O errors (disk full) until it works or `force`.
async fn append(shared: &Arc<Shared>, record: Vec<u8>, force: &CancellationToken) -> bool {
    let record = Arc::new(record);
    let mut attempt = 0u32;
    loop {
        let (s, r) = (shared.clone(), record.clone());
        let res = tokio::task::spawn_blocking(move || s.log().append(&r).map(|_| ()))
            .await
            .unwrap_or_else(|e| {
                Err(LogError::Io {
                    path: PathBuf::new(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        match res {
            Ok(()) => return true,
            Err(e) => {
                attempt += 1;
                shared.metrics.error(&shared.name, "buffer_io");
                tracing::error!(error = %e, attempt, "disk buffer write failed; retrying");
                let delay = Duration::from_millis(100u64 << attempt.min(6));
                tokio::select! {
                    _ = force.cancelled() => return false,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// fsync, then mark the written events delivered (for this sink) upstream.
async fn sync_and_release(shared: &Arc<Shared>, unsynced: &mut Vec<Event>, force: &CancellationToken) -> bool {
    if unsynced.is_empty() {
        return true;
    }
    let s = shared.clone();
    let res = tokio::task::spawn_blocking(move || s.log().sync()).await;
    let error = match res {
        Ok(Ok(())) => {
            for mut e in unsynced.drain(..) {
                e.finalizer.mark(Status::Delivered);
            }
            return true;
        }
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("fsync task failed: {e}"),
    };
    // A failed fsync is not retried: Linux may drop the unwritten pages and clear the
    // error, so a second fsync can succeed without the data on disk. The events (still in
    // memory) are written once more into a new segment and synced; if that fails too they
    // stay unacknowledged upstream (their source reads them again after a restart). The
    // reader may deliver the first copy as well: at least once.
    shared.metrics.error(&shared.name, "buffer_fsync");
    let mut payload = Vec::new();
    codec::encode_batch(unsynced, &mut payload);
    let record = frame(&payload);
    let s = shared.clone();
    let again = tokio::task::spawn_blocking(move || {
        let mut log = s.log();
        log.seal();
        log.append(&record)?;
        log.sync()
    })
    .await;
    match again {
        Ok(Ok(())) => {
            tracing::error!(error = %error, events = unsynced.len(), "disk buffer fsync failed; the events were written again to a new segment and synced");
            shared.data.notify_waiters();
            shared.publish_bytes();
            for mut e in unsynced.drain(..) {
                e.finalizer.mark(Status::Delivered);
            }
        }
        Ok(Err(e)) => {
            tracing::error!(error = %error, again = %e, events = unsynced.len(), "disk buffer fsync failed twice: these events are not acknowledged to their source (read again after a restart)");
            unsynced.clear();
            let s = shared.clone();
            let _ = tokio::task::spawn_blocking(move || s.log().seal()).await;
        }
        Err(e) => {
            tracing::error!(error = %error, again = %e, "disk buffer fsync failed, and writing the events again failed");
            unsynced.clear();
        }
    }
    !force.is_cancelled()
}

/// Replay records to the driver in order; skip (and dead-letter) what is not a good record.
async fn read_loop(shared: Arc<Shared>, tx: mpsc::Sender<Batch>, acks: AckTracker) {
    let partition: Arc<str> = Arc::from(PARTITION);
    let (dir, start) = {
        let log = shared.log();
        (log.dir().to_path_buf(), log.ack_pos())
    };
    let mut reader = Some(LogReader::new(&dir, start));
    let replayed = shared
        .metrics
        .buffer
        .replayed_events
        .get_or_create(&BufferMetrics::sink(&shared.name))
        .clone();
    loop {
        if tx.is_closed() {
            return;
        }
        let Some(mut r) = reader.take() else { return };
        let info = shared.log().segment_info(r.pos.seg);
        let start = r.pos;
        let (r, res) = match tokio::task::spawn_blocking(move || {
            let res = r.next(info);
            (r, res)
        })
        .await
        {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "disk buffer reader task failed");
                return;
            }
        };
        reader = Some(r);
        match res {
            Err(e) => {
                shared.metrics.error(&shared.name, "buffer_io");
                tracing::error!(error = %e, "disk buffer read failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(Read::NextSegment) => {}
            Ok(Read::CaughtUp) => {
                let end = shared.log().end();
                if shared.writer_done.is_cancelled() && reader.as_ref().is_some_and(|r| r.pos >= end) {
                    return;
                }
                tokio::select! {
                    _ = shared.data.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            Ok(Read::Corrupt {
                reason,
                start,
                end,
                len,
                bytes,
            }) => {
                let detail = format!(
                    "disk buffer record skipped: {reason}, {len} bytes at offset {} of {}",
                    start.off,
                    super::log::segment_file(&dir, start.seg).display()
                );
                dead_letter_bytes(&shared, start, &dir, reason, detail, bytes).await;
                drop(acks.register(&partition, Some(end.encode())));
            }
            Ok(Read::Record { payload, end }) => {
                let mut fin = Finalizer::new(acks.register(&partition, Some(end.encode())));
                match codec::decode_batch(&payload, &fin) {
                    Ok(events) => {
                        fin.mark(Status::Delivered);
                        drop(fin);
                        if start < shared.replay_end {
                            replayed.inc_by(events.len() as u64);
                        }
                        if !events.is_empty() && tx.send(events).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let detail = format!(
                            "disk buffer record skipped: undecodable ({e}), {} bytes at offset {} of {}",
                            payload.len(),
                            start.off,
                            super::log::segment_file(&dir, start.seg).display()
                        );
                        dead_letter_bytes(&shared, start, &dir, "undecodable", detail, payload).await;
                        fin.mark(Status::Rejected);
                    }
                }
            }
        }
    }
}

/// Count and dead-letter bytes that are not a good record (retrying until written).
async fn dead_letter_bytes(shared: &Shared, at: Pos, dir: &Path, reason: &'static str, detail: String, bytes: Vec<u8>) {
    shared
        .metrics
        .buffer
        .corrupt_records
        .get_or_create(&BufferReasonLabels {
            sink: shared.name.to_string(),
            reason: reason.to_string(),
        })
        .inc();
    tracing::error!(reason, position = ?at, "disk buffer: skipping a record that cannot be read; written to the dead-letter file");
    let partition: Arc<str> = Arc::from(super::log::segment_file(dir, at.seg).display().to_string());
    let meta = EventMeta::new(
        shared.name.clone(),
        "disk_buffer",
        EventKind::Generic,
        Position::at(partition, at.off, 0),
    );
    let mut e = Event::new(Bytes::from(bytes), meta, Finalizer::noop());
    e.quarantine(format!("buffer:{}", shared.name), reason, detail);
    let events = [e];
    let mut attempt = 0u32;
    while let Err(err) = shared.dead_letter.write(&events).await {
        attempt += 1;
        tracing::error!(error = %err, attempt, "dead-letter write failed; retrying");
        tokio::time::sleep(Duration::from_millis(200u64 << attempt.min(6))).await;
    }
}

/// Move the durable pointer as the sink acknowledges records; delete finished segments.
async fn ack_loop(shared: Arc<Shared>, acks: AckTracker, stop: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            _ = acks.changed() => false,
            _ = tokio::time::sleep(POLL) => false,
            _ = stop.cancelled() => true,
        };
        let ready = acks.take_ready();
        if let Some(pos) = ready.last().and_then(|r| Pos::parse(&r.value)) {
            let s = shared.clone();
            match tokio::task::spawn_blocking(move || s.log().ack_to(pos)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    shared.metrics.error(&shared.name, "buffer_io");
                    tracing::error!(error = %e, "disk buffer pointer update failed; records may be sent again after a restart");
                }
                Err(e) => tracing::error!(error = %e, "disk buffer pointer task failed"),
            }
            shared.publish_bytes();
            shared.space.notify_waiters();
        }
        if stopping {
            return;
        }
    }
}
