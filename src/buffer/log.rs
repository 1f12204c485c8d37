//! The on-disk log of one sink's disk buffer: numbered segment files of framed records
//! (`magic | length | CRC32 | payload`), a durable acknowledgment pointer (`ack.pos`), and a
//! reader that tells good records from torn tails and corrupt bytes.
//!
//! The writer always starts a new segment when the process starts, so a tail torn by a crash
//! stays in a sealed segment where the reader reports it and moves on.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Start of every record; lets the reader find the next record after corrupt bytes.
pub const MAGIC: [u8; 4] = *b"MFB1";
/// Magic, length, CRC32.
pub const HEADER: u64 = 12;
/// Largest payload accepted when reading (a larger length is corruption).
const MAX_RECORD: u64 = 1 << 30;
/// At most this much of a corrupt span goes to the dead-letter file.
const MAX_DEAD_LETTER_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("disk buffer {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A place in the log: segment number and byte offset inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub seg: u64,
    pub off: u64,
}

impl Pos {
    pub fn encode(self) -> String {
        format!("{} {}", self.seg, self.off)
    }
    pub fn parse(s: &str) -> Option<Pos> {
        let mut it = s.split_whitespace();
        let seg = it.next()?.parse().ok()?;
        let off = it.next()?.parse().ok()?;
        Some(Pos { seg, off })
    }
}

/// Frame a payload as one record.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + HEADER as usize);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(payload.len() as u32, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn crc(len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn segment_path(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("{seg:020}.seg"))
}

/// The segments and pointers of one buffer directory (the writer's side).
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    segment_max: u64,
    /// Segment number → bytes written.
    segments: BTreeMap<u64, u64>,
    write_seg: u64,
    write_file: Option<File>,
    /// Segments finished since the last `sync`, still to be made durable by it (a rotation
    /// does not sync: a failed fsync must reach the caller of `sync`, never be retried).
    rotated: Vec<(u64, File)>,
    ack: Pos,
    /// Held open with an exclusive `flock`: one process per buffer directory.
    _lock: File,
}

impl Log {
    /// Open (or create) the log in `dir`; the writer starts a new segment.
    pub fn open(dir: &Path, segment_max: u64) -> Result<Log, LogError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = lock_dir(dir)?;
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(num) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
                continue;
            };
            if let Ok(seg) = num.parse::<u64>() {
                let len = entry.metadata().map_err(io_err(&entry.path()))?.len();
                segments.insert(seg, len);
            }
        }
        let pointer = dir.join("ack.pos");
        let pointed = std::fs::read_to_string(&pointer).ok().and_then(|s| Pos::parse(&s));
        // Segment numbers never go back to the pointer's: a number used again while the
        // stored pointer still names an offset in its earlier use would skip new records.
        let write_seg = segments
            .keys()
            .next_back()
            .map_or(0, |s| s + 1)
            .max(pointed.map_or(0, |p| p.seg.saturating_add(1)));
        let stored = pointed.unwrap_or_default();
        segments.insert(write_seg, 0);
        let mut log = Log {
            dir: dir.to_path_buf(),
            segment_max: segment_max.max(HEADER + 1),
            segments,
            write_seg,
            write_file: None,
            rotated: Vec::new(),
            ack: stored,
            _lock: lock,
        };
        // The pointer may name a segment already deleted (or nothing yet).
        if !log.segments.contains_key(&log.ack.seg) {
            let first = log.segments.range(log.ack.seg..).next().map_or(write_seg, |(s, _)| *s);
            log.ack = Pos { seg: first, off: 0 };
        }
        log.skip_finished();
        log.delete_before(log.ack.seg)?;
        // Only tidiness (segment numbers never go back, so a stale pointer is harmless): a
        // full disk must not keep the buffer, the way out of it, from opening.
        if log.ack != stored {
            if let Err(e) = log.store_pointer() {
                tracing::warn!(error = %e, "disk buffer: cannot store the moved acknowledgment pointer");
            }
        }
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where unacknowledged data starts (where the reader starts after a restart).
    pub fn ack_pos(&self) -> Pos {
        self.ack
    }

    /// End of the data written so far.
    pub fn end(&self) -> Pos {
        Pos {
            seg: self.write_seg,
            off: self.segments.get(&self.write_seg).copied().unwrap_or(0),
        }
    }

    /// Size of `seg`, whether it is sealed (no more writes), and the next segment.
    pub fn segment_info(&self, seg: u64) -> (Option<u64>, bool, Option<u64>) {
        let next = self.segments.range(seg + 1..).next().map(|(s, _)| *s);
        (self.segments.get(&seg).copied(), seg < self.write_seg, next)
    }

    /// Bytes written and not yet acknowledged.
    pub fn pending_bytes(&self) -> u64 {
        self.segments
            .range(self.ack.seg..)
            .map(|(_, len)| *len)
            .sum::<u64>()
            .saturating_sub(self.ack.off)
    }

    /// Append one framed record. On failure the segment is cut back to where it was.
    pub fn append(&mut self, record: &[u8]) -> Result<Pos, LogError> {
        let size = self.segments.get(&self.write_seg).copied().unwrap_or(0);
        if size > 0 && size + record.len() as u64 > self.segment_max {
            if let Some(f) = self.write_file.take() {
                self.rotated.push((self.write_seg, f));
            }
            self.write_seg += 1;
            self.segments.insert(self.write_seg, 0);
        }
        let path = segment_path(&self.dir, self.write_seg);
        if self.write_file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            self.write_file = Some(f);
        }
        let size = self.segments.get(&self.write_seg).copied().unwrap_or(0);
        let f = self.write_file.as_mut().expect("opened above");
        if let Err(e) = f.write_all(record) {
            let _ = f.set_len(size);
            self.write_file = None;
            return Err(io_err(&path)(e));
        }
        let end = size + record.len() as u64;
        self.segments.insert(self.write_seg, end);
        Ok(Pos {
            seg: self.write_seg,
            off: end,
        })
    }

    /// Make everything appended so far durable.
    /// After an error nothing written before it may be taken as durable (not even by a
    /// later `sync` that succeeds): the caller must not acknowledge it.
    pub fn sync(&mut self) -> Result<(), LogError> {
        let rotated = std::mem::take(&mut self.rotated);
        let current = self.write_file.as_ref().map(|f| (self.write_seg, f));
        for (seg, f) in rotated.iter().map(|(s, f)| (*s, f)).chain(current) {
            #[cfg(test)]
            if injected_sync_failure(&self.dir) {
                return Err(io_err(&segment_path(&self.dir, seg))(std::io::Error::other(
                    "injected fsync failure",
                )));
            }
            f.sync_data().map_err(io_err(&segment_path(&self.dir, seg)))?;
        }
        Ok(())
    }

    /// Stop writing to the current segment: the next record starts a new one. After a
    /// failed fsync the file's state is unknown (the kernel may have dropped its pages).
    pub fn seal(&mut self) {
        if self.segments.get(&self.write_seg).is_some_and(|len| *len > 0) {
            self.write_file = None;
            self.write_seg += 1;
            self.segments.insert(self.write_seg, 0);
        }
    }

    /// The sink has everything before `pos`: move the pointer, delete finished segments and
    /// store the pointer (a pointer lost in a crash only means records are sent again).
    pub fn ack_to(&mut self, pos: Pos) -> Result<(), LogError> {
        if pos <= self.ack {
            return Ok(());
        }
        self.ack = pos;
        self.skip_finished();
        self.delete_before(self.ack.seg)?;
        self.store_pointer()
    }

    fn store_pointer(&self) -> Result<(), LogError> {
        let tmp = self.dir.join("ack.pos.tmp");
        let dst = self.dir.join("ack.pos");
        std::fs::write(&tmp, self.ack.encode()).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
        Ok(())
    }

    /// A fully acknowledged sealed segment is done: move the pointer to the next one.
    fn skip_finished(&mut self) {
        while self.ack.seg < self.write_seg && self.segments.get(&self.ack.seg).is_none_or(|len| self.ack.off >= *len) {
            let next = self
                .segments
                .range(self.ack.seg + 1..)
                .next()
                .map_or(self.write_seg, |(s, _)| *s);
            self.ack = Pos { seg: next, off: 0 };
        }
    }

    fn delete_before(&mut self, seg: u64) -> Result<(), LogError> {
        let old: Vec<u64> = self.segments.range(..seg).map(|(s, _)| *s).collect();
        for s in old {
            let p = segment_path(&self.dir, s);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p)(e)),
            }
            self.segments.remove(&s);
        }
        Ok(())
    }
}

/// Tests make the next N fsyncs of a log fail with a file `fail-syncs` holding N.
#[cfg(test)]
fn injected_sync_failure(dir: &Path) -> bool {
    let marker = dir.join("fail-syncs");
    let Some(n) = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return false;
    };
    if n > 1 {
        std::fs::write(&marker, (n - 1).to_string()).expect("marker rewritten");
    } else {
        let _ = std::fs::remove_file(&marker);
    }
    n > 0
}

/// What the reader found at its position.
#[derive(Debug)]
pub enum Read {
    /// A good record: payload, and the position right after it.
    Record { payload: Vec<u8>, end: Pos },
    /// Bytes that are not a good record (`reason`: `torn_tail`, `crc_mismatch`,
    /// `bad_header`): skipped; `bytes` holds (at most 1 MiB of) them, `len` their length.
    Corrupt {
        reason: &'static str,
        start: Pos,
        end: Pos,
        len: u64,
        bytes: Vec<u8>,
    },
    /// Moved to the next segment; call again.
    NextSegment,
    /// Nothing more to read for now.
    CaughtUp,
}

/// Reads records in order from a position, one open segment at a time.
#[derive(Debug)]
pub struct LogReader {
    dir: PathBuf,
    pub pos: Pos,
    file: Option<(u64, File)>,
}

impl LogReader {
    pub fn new(dir: &Path, pos: Pos) -> LogReader {
        LogReader {
            dir: dir.to_path_buf(),
            pos,
            file: None,
        }
    }

    /// Read the next record. `info` is [`Log::segment_info`] of the current segment.
    pub fn next(&mut self, info: (Option<u64>, bool, Option<u64>)) -> Result<Read, LogError> {
        let (size, sealed, next) = info;
        let size = size.unwrap_or(0);
        let remaining = size.saturating_sub(self.pos.off);
        if remaining == 0 {
            return Ok(match (sealed, next) {
                (true, Some(n)) => {
                    self.pos = Pos { seg: n, off: 0 };
                    self.file = None;
                    Read::NextSegment
                }
                _ => Read::CaughtUp,
            });
        }
        if remaining < HEADER {
            return if sealed {
                self.skip_to(size, "torn_tail")
            } else {
                Ok(Read::CaughtUp)
            };
        }
        let mut header = [0u8; HEADER as usize];
        self.read_at(self.pos.off, &mut header)?;
        if header[..4] != MAGIC {
            return self.resync(size, "bad_header");
        }
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let sum = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if u64::from(len) > MAX_RECORD {
            return self.resync(size, "bad_header");
        }
        if HEADER + u64::from(len) > remaining {
            // In a sealed segment: a torn tail, or a damaged length with records after it.
            return if sealed {
                self.resync(size, "torn_tail")
            } else {
                Ok(Read::CaughtUp)
            };
        }
        let mut payload = vec![0u8; len as usize];
        self.read_at(self.pos.off + HEADER, &mut payload)?;
        let start = self.pos;
        let end = Pos {
            seg: self.pos.seg,
            off: self.pos.off + HEADER + u64::from(len),
        };
        self.pos = end;
        if crc(len, &payload) != sum {
            let mut bytes = header.to_vec();
            bytes.extend_from_slice(&payload[..payload.len().min(MAX_DEAD_LETTER_BYTES)]);
            return Ok(Read::Corrupt {
                reason: "crc_mismatch",
                start,
                end,
                len: HEADER + u64::from(len),
                bytes,
            });
        }
        Ok(Read::Record { payload, end })
    }

    /// Skip from the position to the next record start (the next magic: `bad_header`), or
    /// to `size` with `no_record_after` as the reason.
    fn resync(&mut self, size: u64, no_record_after: &'static str) -> Result<Read, LogError> {
        let mut rest = vec![0u8; (size - self.pos.off) as usize];
        self.read_at(self.pos.off, &mut rest)?;
        let found = rest.windows(4).skip(1).position(|w| w == MAGIC).map(|i| i as u64 + 1);
        match found {
            Some(skip) => self.skip_to(self.pos.off + skip, "bad_header"),
            None => self.skip_to(size, no_record_after),
        }
    }

    fn skip_to(&mut self, to: u64, reason: &'static str) -> Result<Read, LogError> {
        let start = self.pos;
        let len = to - start.off;
        let mut bytes = vec![0u8; (len as usize).min(MAX_DEAD_LETTER_BYTES)];
        self.read_at(start.off, &mut bytes)?;
        self.pos.off = to;
        Ok(Read::Corrupt {
            reason,
            start,
            end: self.pos,
            len,
            bytes,
        })
    }

    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> Result<(), LogError> {
        let path = segment_path(&self.dir, self.pos.seg);
        if self.file.as_ref().is_none_or(|(s, _)| *s != self.pos.seg) {
            let f = File::open(&path).map_err(io_err(&path))?;
            self.file = Some((self.pos.seg, f));
        }
        let (_, f) = self.file.as_mut().expect("opened above");
        f.seek(SeekFrom::Start(off))
            .and_then(|_| f.read_exact(buf))
            .map_err(io_err(&path))
    }
}

/// Take the directory's lock file, or fail if another process holds it.
fn lock_dir(dir: &Path) -> Result<File, LogError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    // SAFETY: flock on a file descriptor this function owns; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let e = if e.kind() == std::io::ErrorKind::WouldBlock {
            std::io::Error::other("the buffer directory is in use by another process (two sinks or two forwarders with the same buffer path?)")
        } else {
            e
        };
        return Err(io_err(&path)(e));
    }
    Ok(f)
}

/// Bytes of segment files in `dir` (0 when there is none): what a sink that is no longer
/// disk-buffered left behind.
pub fn leftover_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Path of segment `seg` in `dir` (tests, dead-letter records).
pub fn segment_file(dir: &Path, seg: u64) -> PathBuf {
    segment_path(dir, seg)
}
