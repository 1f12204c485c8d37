//! Unit tests of the disk buffer: the log (append, replay, delete, torn tail, corrupt bytes),
//! and the whole buffer in front of a scripted sink (acknowledgments, dead-letter, full).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::log::{frame, segment_file, Log, LogReader, Pos, Read};
use super::*;
use crate::ack::{AckTracker, Finalizer};
use crate::deadletter::DeadLetter;
use crate::event::{Batch, Event, EventKind, EventMeta, Position};
use crate::sinks::driver::{RetryPolicy, SinkDriver};
use crate::sinks::{SendReport, Sink, SinkError};
use crate::telemetry::{Health, Metrics};

fn read_all(dir: &std::path::Path, log: &Log, from: Pos) -> (Vec<Vec<u8>>, Vec<&'static str>, Pos) {
    let mut r = LogReader::new(dir, from);
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    loop {
        match r.next(log.segment_info(r.pos.seg)).unwrap() {
            Read::Record { payload, .. } => good.push(payload),
            Read::Corrupt { reason, .. } => bad.push(reason),
            Read::NextSegment => {}
            Read::CaughtUp => return (good, bad, r.pos),
        }
    }
}

#[test]
fn log_appends_replays_and_deletes_acknowledged_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), 100).unwrap();
    let mut ends = Vec::new();
    for i in 0..10u8 {
        ends.push(log.append(&frame(&[i; 40])).unwrap());
    }
    log.sync().unwrap();
    let (good, bad, _) = read_all(dir.path(), &log, log.ack_pos());
    assert_eq!(good, (0..10u8).map(|i| vec![i; 40]).collect::<Vec<_>>());
    assert!(bad.is_empty());
    assert_eq!(
        ends[9].seg, 9,
        "52-byte records, 100-byte segments: one record per segment"
    );
    // The sink acknowledged the first six records: their segments go.
    log.ack_to(ends[5]).unwrap();
    assert!(!segment_file(dir.path(), 5).exists());
    assert!(segment_file(dir.path(), 6).exists());
    assert_eq!(log.pending_bytes(), 4 * 52);
    drop(log);
    // A restart replays exactly the unacknowledged records, then appends to a new segment.
    let mut log = Log::open(dir.path(), 100).unwrap();
    assert_eq!(log.ack_pos(), Pos { seg: 6, off: 0 });
    log.append(&frame(b"after restart")).unwrap();
    let (good, bad, _) = read_all(dir.path(), &log, log.ack_pos());
    assert_eq!(good.len(), 5);
    assert_eq!(good[0], vec![6u8; 40]);
    assert_eq!(good[4], b"after restart".to_vec());
    assert!(bad.is_empty());
}

/// Everything acknowledged, then a start with nothing to write, then new records: the new
/// records are all read (the segment number was used again once, under a stored pointer
/// into its earlier use, and the new records before that offset were skipped).
#[test]
fn new_records_after_an_idle_restart_are_all_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), 1 << 20).unwrap();
    log.append(&frame(b"first")).unwrap();
    let end = log.append(&frame(b"second")).unwrap();
    log.sync().unwrap();
    log.ack_to(end).unwrap();
    drop(log);
    drop(Log::open(dir.path(), 1 << 20).unwrap());
    let mut log = Log::open(dir.path(), 1 << 20).unwrap();
    for r in [&b"x"[..], b"y", b"z"] {
        log.append(&frame(r)).unwrap();
    }
    log.sync().unwrap();
    let (good, bad, _) = read_all(dir.path(), &log, log.ack_pos());
    assert_eq!(good, [b"x".to_vec(), b"y".to_vec(), b"z".to_vec()]);
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(log.pending_bytes(), 3 * frame(b"x").len() as u64);
}

#[test]
fn torn_tail_is_reported_once_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), 1 << 20).unwrap();
    log.append(&frame(b"one")).unwrap();
    log.append(&frame(b"two")).unwrap();
    drop(log);
    // A crash in the middle of the third write: half a record at the end of the segment.
    let half = &frame(b"three, never completed")[..15];
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(segment_file(dir.path(), 0))
        .unwrap();
    std::io::Write::write_all(&mut f, half).unwrap();
    drop(f);
    let mut log = Log::open(dir.path(), 1 << 20).unwrap();
    log.append(&frame(b"four")).unwrap();
    let (good, bad, end) = read_all(dir.path(), &log, log.ack_pos());
    assert_eq!(good, vec![b"one".to_vec(), b"two".to_vec(), b"four".to_vec()]);
    assert_eq!(bad, vec!["torn_tail"]);
    assert_eq!(end, log.end());
}

#[test]
fn corrupt_bytes_are_skipped_up_to_the_next_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), 1 << 20).unwrap();
    for p in [&b"aaaa"[..], b"bbbb", b"cccc", b"dddd"] {
        log.append(&frame(p)).unwrap();
    }
    drop(log);
    let path = segment_file(dir.path(), 0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[16 + 12] ^= 0x01; // a payload byte of "bbbb": CRC mismatch
    bytes[2 * 16 + 5] ^= 0x40; // the length of "cccc": header garbage
    std::fs::write(&path, bytes).unwrap();
    let log = Log::open(dir.path(), 1 << 20).unwrap();
    let (good, bad, _) = read_all(dir.path(), &log, log.ack_pos());
    assert_eq!(good, vec![b"aaaa".to_vec(), b"dddd".to_vec()]);
    assert_eq!(bad, vec!["crc_mismatch", "bad_header"]);
}

#[test]
fn a_directory_is_used_by_one_log_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = Log::open(dir.path(), 1 << 20).unwrap();
    let err = Log::open(dir.path(), 1 << 20).unwrap_err().to_string();
    assert!(err.contains("in use by another process"), "{err}");
    drop(first);
    Log::open(dir.path(), 1 << 20).unwrap();
}

#[test]
fn config_is_validated_with_key_names() {
    let cfg: BufferConfig = toml::from_str("type = \"disk\"\nmax_bytes = 10").unwrap();
    assert_eq!(
        cfg.validate("sinks.s.buffer").unwrap_err().path,
        "sinks.s.buffer.max_bytes"
    );
    let cfg: BufferConfig = toml::from_str("fsync = \"always\"").unwrap();
    assert_eq!(cfg.validate("sinks.s.buffer").unwrap_err().path, "sinks.s.buffer.fsync");
    let cfg: BufferConfig = toml::from_str("type = \"disk\"\nfsync_interval_ms = 5").unwrap();
    assert_eq!(
        cfg.validate("sinks.s.buffer").unwrap_err().path,
        "sinks.s.buffer.fsync_interval_ms"
    );
    let cfg: BufferConfig = toml::from_str("type = \"disk\"\nfsync = \"interval\"\nfsync_interval_ms = 50").unwrap();
    let s = cfg.validate("sinks.s.buffer").unwrap().unwrap();
    assert_eq!(s.fsync, Fsync::Interval(Duration::from_millis(50)));
    assert_eq!(s.max_bytes, DEFAULT_MAX_BYTES);
    assert!(toml::from_str::<BufferConfig>("type = \"disk\"\nmax_size = 1").is_err());
    assert!(BufferConfig::default().validate("x").unwrap().is_none());
}

/// A sink that refuses everything while `down`, and records the raw bytes it got.
#[derive(Clone, Default)]
struct Scripted {
    down: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl Sink for Scripted {
    async fn send(&mut self, events: &[Event]) -> Result<SendReport, SinkError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SinkError::Unavailable {
                kind: "down",
                message: "scripted outage".into(),
            });
        }
        let mut got = self.got.lock().unwrap();
        got.extend(events.iter().map(|e| String::from_utf8_lossy(&e.raw).into_owned()));
        Ok(SendReport::default())
    }
}

struct Rig {
    dir: tempfile::TempDir,
    sink: Scripted,
    upstream: AckTracker,
    metrics: Arc<Metrics>,
    tx: mpsc::Sender<Batch>,
    task: tokio::task::JoinHandle<Result<(), crate::sinks::driver::SinkDied>>,
    /// The driver's drain-timeout token: stops everything without delivering more.
    force: CancellationToken,
    next_batch: u64,
}

fn start(dir: tempfile::TempDir, settings: DiskSettings, sink: Scripted) -> Rig {
    let metrics = Arc::new(Metrics::new());
    let dead_letter = Arc::new(DeadLetter::new(&dir.path().join("dl.ndjson"), metrics.clone()));
    let name: Arc<str> = Arc::from("s");
    let force = CancellationToken::new();
    let buffer = DiskBuffer::open(name.clone(), dir.path(), settings, metrics.clone(), dead_letter.clone()).unwrap();
    let driver = SinkDriver {
        name,
        sinks: vec![Box::new(sink.clone())],
        retry: RetryPolicy {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
        },
        dead_letter,
        metrics: metrics.clone(),
        health: Arc::new(Health::default()),
        force: force.clone(),
    };
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(buffer.run(rx, driver));
    Rig {
        dir,
        sink,
        upstream: AckTracker::new(),
        metrics,
        tx,
        task,
        force,
        next_batch: 0,
    }
}

impl Rig {
    /// One batch of `ids`, each event `raw` = `evt-N` padded to `size` bytes.
    fn batch(&mut self, ids: std::ops::Range<u64>, size: usize) -> Batch {
        let part: Arc<str> = Arc::from("p");
        self.next_batch += 1;
        let n = self.upstream.register(&part, Some(self.next_batch.to_string()));
        ids.map(|i| {
            let mut raw = format!("evt-{i}");
            while raw.len() < size {
                raw.push('.');
            }
            let meta = EventMeta::new(
                Arc::from("src"),
                "SignInLogs",
                EventKind::SignIn,
                Position::at(part.clone(), i, 0),
            );
            Event::new(Bytes::from(raw), meta, Finalizer::new(n.clone()))
        })
        .collect()
    }

    fn got(&self) -> Vec<String> {
        self.sink
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.trim_end_matches('.').to_string())
            .collect()
    }
}

async fn until(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn ids(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| format!("evt-{i}")).collect()
}

#[tokio::test]
async fn upstream_is_acknowledged_while_the_sink_is_down_and_everything_arrives_later() {
    let sink = Scripted::default();
    sink.down.store(true, Ordering::SeqCst);
    let mut rig = start(
        tempfile::tempdir().unwrap(),
        DiskSettings::new(None, 1 << 20, Fsync::Always),
        sink,
    );
    for k in 0..5 {
        let b = rig.batch(k * 10..k * 10 + 10, 50);
        rig.tx.send(b).await.unwrap();
    }
    let up = rig.upstream.clone();
    assert!(
        until(|| up.in_flight() == 0).await,
        "every batch acknowledged upstream once on disk"
    );
    assert_eq!(up.take_ready().last().unwrap().value, "5");
    assert!(rig.got().is_empty(), "the sink is still down");
    rig.sink.down.store(false, Ordering::SeqCst);
    let got = rig.sink.got.clone();
    assert!(until(|| got.lock().unwrap().len() == 50).await);
    assert_eq!(rig.got(), ids(0..50));
    drop(rig.tx);
    rig.task.await.unwrap().unwrap();
    let segs: Vec<_> = std::fs::read_dir(rig.dir.path().join("buffers/s"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .collect();
    assert_eq!(
        segs.len(),
        1,
        "acknowledged segments are deleted but the one written last: {segs:?}"
    );
    assert!(rig.metrics.encode().contains("m365fwd_buffer_bytes{sink=\"s\"} 0"));
    let log = Log::open(&rig.dir.path().join("buffers/s"), 1 << 20).unwrap();
    assert_eq!(log.pending_bytes(), 0, "a restart replays nothing");
}

#[tokio::test]
async fn a_flipped_byte_goes_to_the_dead_letter_file_and_the_rest_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let settings = DiskSettings::new(None, 1 << 20, Fsync::Always);
    // First run: three records written while the sink is down, then stopped.
    let sink = Scripted::default();
    sink.down.store(true, Ordering::SeqCst);
    let mut rig = start(dir, settings.clone(), sink);
    for k in 0..3 {
        let b = rig.batch(k * 3..k * 3 + 3, 20);
        rig.tx.send(b).await.unwrap();
    }
    let up = rig.upstream.clone();
    assert!(until(|| up.in_flight() == 0).await);
    // Stopped as at the end of a drain timeout: the sink never got the records.
    rig.force.cancel();
    rig.task.await.unwrap().unwrap();
    let dir = rig.dir;
    // Flip one byte inside the second record's payload.
    let seg = segment_file(&dir.path().join("buffers/s"), 0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let first_len = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize + 12;
    bytes[first_len + 40] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    // Second run: the good records are delivered, the bad one is dead-lettered and counted.
    let rig = start(dir, settings, Scripted::default());
    let got = rig.sink.got.clone();
    assert!(until(|| got.lock().unwrap().len() == 6).await, "{:?}", rig.got());
    let mut want = ids(0..3);
    want.extend(ids(6..9));
    assert_eq!(rig.got(), want);
    let dl = std::fs::read_to_string(rig.dir.path().join("dl.ndjson")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(dl.lines().next().unwrap()).unwrap();
    assert_eq!(rec["reason"], "crc_mismatch");
    assert_eq!(rec["stage"], "buffer:s");
    assert!(rec["original_base64"].as_str().is_some_and(|b| b.len() > 40), "{rec}");
    let text = rig.metrics.encode();
    assert!(
        text.contains("m365fwd_buffer_corrupt_records_total{sink=\"s\",reason=\"crc_mismatch\"} 1"),
        "{text}"
    );
    assert!(text.contains("m365fwd_buffer_replayed_events_total{sink=\"s\"} 6"));
    drop(rig.tx);
    rig.task.await.unwrap().unwrap();
}

/// A record whose frame is good but whose events stop part way (written by another
/// version, say): dead-lettered as undecodable, and the buffer goes on past it: the next
/// record is delivered and the acknowledgment pointer passes both.
#[tokio::test]
async fn a_record_that_stops_part_way_is_dead_lettered_and_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let settings = DiskSettings::new(None, 1 << 20, Fsync::Always);
    let sink = Scripted::default();
    sink.down.store(true, Ordering::SeqCst);
    let mut rig = start(dir, settings.clone(), sink);
    for k in 0..3 {
        let b = rig.batch(k * 3..k * 3 + 3, 20);
        rig.tx.send(b).await.unwrap();
    }
    let up = rig.upstream.clone();
    assert!(until(|| up.in_flight() == 0).await);
    rig.force.cancel();
    rig.task.await.unwrap().unwrap();
    let dir = rig.dir;
    // The second record framed again without its last byte (its CRC good).
    let seg = segment_file(&dir.path().join("buffers/s"), 0);
    let bytes = std::fs::read(&seg).unwrap();
    let len_at = |at: usize| u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    let second = len_at(0) + 12;
    let third = second + len_at(second) + 12;
    let mut rewritten = bytes[..second].to_vec();
    rewritten.extend(frame(&bytes[second + 12..third - 1]));
    rewritten.extend(&bytes[third..]);
    std::fs::write(&seg, rewritten).unwrap();

    let rig = start(dir, settings, Scripted::default());
    let got = rig.sink.got.clone();
    assert!(until(|| got.lock().unwrap().len() == 6).await, "{:?}", rig.got());
    let mut want = ids(0..3);
    want.extend(ids(6..9));
    assert_eq!(rig.got(), want);
    let dl = std::fs::read_to_string(rig.dir.path().join("dl.ndjson")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(dl.lines().next().unwrap()).unwrap();
    assert_eq!(rec["reason"], "undecodable");
    let log_dir = rig.dir.path().join("buffers/s");
    drop(rig.tx);
    rig.task.await.unwrap().unwrap();
    let log = Log::open(&log_dir, 1 << 20).unwrap();
    assert_eq!(log.pending_bytes(), 0, "acknowledged past the bad record");
}

/// A failed fsync is not retried into an acknowledgment (a second fsync can succeed after
/// the kernel dropped the pages): the batch is written again to a new segment and synced,
/// and only then acknowledged upstream (the sink may get it twice: at least once).
#[tokio::test]
async fn a_failed_fsync_writes_the_batch_again_before_acknowledging_it() {
    let dir = tempfile::tempdir().unwrap();
    let settings = DiskSettings::new(None, 1 << 20, Fsync::Always);
    let mut rig = start(dir, settings, Scripted::default());
    std::fs::write(rig.dir.path().join("buffers/s/fail-syncs"), "1").unwrap();
    let b = rig.batch(0..3, 20);
    rig.tx.send(b).await.unwrap();
    let up = rig.upstream.clone();
    assert!(until(|| up.counts().0 == 1).await, "{:?}", up.counts());
    let b = rig.batch(3..6, 20);
    rig.tx.send(b).await.unwrap();
    assert!(until(|| up.counts().0 == 2).await, "{:?}", up.counts());
    assert_eq!(up.counts().1, 0, "nothing errored");
    let got = rig.sink.got.clone();
    assert!(until(|| got.lock().unwrap().len() == 9).await, "{:?}", rig.got());
    let mut want = ids(0..3);
    want.extend(ids(0..6));
    assert_eq!(
        rig.got(),
        want,
        "the first copy, the copy written again, the next batch"
    );
    assert!(rig.metrics.encode().contains("error_type=\"buffer_fsync\"} 1"));
    drop(rig.tx);
    rig.task.await.unwrap().unwrap();
}

/// The fsync of the copy written again fails too: the batch stays unacknowledged upstream
/// (its source reads it again after a restart), and the next batch is acknowledged as usual.
#[tokio::test]
async fn a_batch_whose_fsync_fails_twice_stays_unacknowledged_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let settings = DiskSettings::new(None, 1 << 20, Fsync::Always);
    let mut rig = start(dir, settings, Scripted::default());
    std::fs::write(rig.dir.path().join("buffers/s/fail-syncs"), "2").unwrap();
    let b = rig.batch(0..3, 20);
    rig.tx.send(b).await.unwrap();
    let up = rig.upstream.clone();
    assert!(until(|| up.counts().1 == 1).await, "{:?}", up.counts());
    assert_eq!(up.counts().0, 0, "not acknowledged");
    let b = rig.batch(3..6, 20);
    rig.tx.send(b).await.unwrap();
    assert!(until(|| up.counts().0 == 1).await, "{:?}", up.counts());
    drop(rig.tx);
    rig.task.await.unwrap().unwrap();
}

/// With `fsync = batch` and small segments, a batch fills a segment and the next starts a
/// new one: the rotation does not fsync on its own (a failure there was retried by the
/// write and the batch acknowledged); the failure reaches the batch's fsync.
#[tokio::test]
async fn a_failed_fsync_at_a_segment_rotation_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = DiskSettings::new(None, 1 << 20, Fsync::Batch);
    settings.segment_max_bytes = 200;
    let mut rig = start(dir, settings, Scripted::default());
    std::fs::write(rig.dir.path().join("buffers/s/fail-syncs"), "2").unwrap();
    // Two records of ~150 bytes: the second rotates the segment.
    let a = rig.batch(0..1, 100);
    let b = rig.batch(1..2, 100);
    rig.tx.send(a).await.unwrap();
    rig.tx.send(b).await.unwrap();
    let up = rig.upstream.clone();
    assert!(until(|| up.counts().0 + up.counts().1 == 2).await, "{:?}", up.counts());
    assert!(
        up.counts().1 >= 1,
        "a batch whose fsync failed twice is not acknowledged: {:?}",
        up.counts()
    );
    drop(rig.tx);
    rig.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_full_buffer_blocks_writes_and_drops_nothing() {
    // 1 MiB limit, 256 KiB segments, ~100 KiB records.
    let sink = Scripted::default();
    sink.down.store(true, Ordering::SeqCst);
    let mut rig = start(
        tempfile::tempdir().unwrap(),
        DiskSettings::new(None, 1 << 20, Fsync::Batch),
        sink,
    );
    let mut sent = 0u64;
    let mut blocked = false;
    for k in 0..40u64 {
        let b = rig.batch(k * 10..k * 10 + 10, 10_000);
        match tokio::time::timeout(Duration::from_millis(500), rig.tx.send(b)).await {
            Ok(r) => {
                r.unwrap();
                sent = k + 1;
            }
            Err(_) => {
                blocked = true;
                break;
            }
        }
    }
    assert!(blocked, "writes stop while the sink is down and the buffer is full");
    assert!(
        (9..=13).contains(&sent),
        "about 1 MiB went in before blocking: {sent} batches"
    );
    let text = rig.metrics.encode();
    let bytes: u64 = text
        .lines()
        .find(|l| l.starts_with("m365fwd_buffer_bytes{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!(bytes <= 1 << 20, "never above max_bytes: {bytes}");
    assert!(
        rig.upstream.in_flight() >= 1,
        "the blocked batch is not acknowledged upstream"
    );
    // The sink comes back: everything, including the blocked batches, arrives.
    rig.sink.down.store(false, Ordering::SeqCst);
    for k in sent..40 {
        let b = rig.batch(k * 10..k * 10 + 10, 10_000);
        rig.tx.send(b).await.unwrap();
    }
    drop(rig.tx);
    tokio::time::timeout(Duration::from_secs(20), rig.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(rig.sink.got.lock().unwrap().len(), 400);
    let mut got: Vec<String> = rig
        .sink
        .got
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.trim_end_matches('.').to_string())
        .collect();
    got.dedup();
    assert_eq!(got, ids(0..400), "in order, nothing lost, nothing twice");
    assert_eq!(rig.upstream.in_flight(), 0);
}

#[tokio::test]
async fn an_undecodable_record_with_a_good_crc_is_dead_lettered_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let settings = DiskSettings::new(None, 1 << 20, Fsync::Always);
    // Records as a future version or a bug might leave them: framed, but not a batch.
    let mut log = Log::open(&dir.path().join("buffers/s"), settings.segment_max_bytes).unwrap();
    let mut good = Vec::new();
    let mut rig_events = Vec::new();
    for i in 0..2u64 {
        let meta = EventMeta::new(
            Arc::from("src"),
            "SignInLogs",
            EventKind::SignIn,
            Position::at(Arc::from("p"), i, 0),
        );
        rig_events.push(Event::new(Bytes::from(format!("evt-{i}")), meta, Finalizer::noop()));
    }
    codec::encode_batch(&rig_events[..1], &mut good);
    log.append(&frame(&good)).unwrap();
    log.append(&frame(b"\x09 not a batch")).unwrap();
    good.clear();
    codec::encode_batch(&rig_events[1..], &mut good);
    log.append(&frame(&good)).unwrap();
    log.sync().unwrap();
    drop(log);
    let rig = start(dir, settings, Scripted::default());
    let got = rig.sink.got.clone();
    assert!(until(|| got.lock().unwrap().len() == 2).await);
    assert_eq!(rig.got(), ids(0..2));
    let dl = std::fs::read_to_string(rig.dir.path().join("dl.ndjson")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(dl.lines().next().unwrap()).unwrap();
    assert_eq!(rec["reason"], "undecodable");
    assert!(
        rec["detail"].as_str().unwrap().contains("unknown payload version"),
        "{rec}"
    );
    drop(rig.tx);
    rig.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn with_an_fsync_interval_upstream_acknowledgments_wait_for_the_fsync() {
    let sink = Scripted::default();
    sink.down.store(true, Ordering::SeqCst);
    let settings = DiskSettings::new(None, 1 << 20, Fsync::Interval(Duration::from_millis(600)));
    let mut rig = start(tempfile::tempdir().unwrap(), settings, sink);
    let b = rig.batch(0..5, 20);
    rig.tx.send(b).await.unwrap();
    let written = rig.metrics.clone();
    assert!(
        until(|| written
            .encode()
            .contains("m365fwd_buffer_written_events_total{sink=\"s\"} 5"))
        .await
    );
    assert_eq!(
        rig.upstream.in_flight(),
        1,
        "appended, not yet fsynced: not acknowledged"
    );
    let up = rig.upstream.clone();
    assert!(
        until(|| up.in_flight() == 0).await,
        "acknowledged after the interval's fsync"
    );
    rig.force.cancel();
    rig.task.await.unwrap().unwrap();
}
