//! Dead-letter (quarantine) file: one NDJSON record per rejected event with the reason,
//! the source position and the original bytes, fsynced before the event counts as done.
//! An event refused by a sink after the pipeline encoded it ahead and let its record go
//! carries the refused message instead (`message`); the position finds the record again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde::Serialize;

use crate::event::Event;
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
#[error("dead-letter file {path}: {source}")]
pub struct DeadLetterError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

#[derive(Serialize)]
struct Record<'a> {
    /// When it was quarantined (RFC 3339, UTC).
    time: String,
    stage: &'a str,
    reason: &'a str,
    detail: &'a str,
    source: &'a str,
    category: &'a str,
    tenant: Option<&'a str>,
    partition: &'a str,
    offset: u64,
    sequence: Option<i64>,
    index: u32,
    repaired: bool,
    /// The original bytes, when they are UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    original: Option<&'a str>,
    /// The original bytes in base64, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    original_base64: Option<String>,
    /// The message the sink refused, when the record itself was let go after encoding.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_base64: Option<String>,
}

/// Default size at which the dead-letter file is rotated (`dead_letter.max_file_bytes`).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;

/// When the file is rotated and how many rotated files are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// A write that would take the file past this size first renames it to
    /// `<stem>.<UTC time>.<ext>` (a file is never left empty by rotation, so one write larger
    /// than this still goes in whole).
    pub max_file_bytes: u64,
    /// Rotated files kept (oldest removed first, each removal logged); 0 keeps them all.
    pub max_files: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_files: 0,
        }
    }
}

/// Appends quarantine records. Shared by the router and every sink.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    file: Arc<Mutex<Option<Open>>>,
    rotation: Rotation,
    metrics: Arc<Metrics>,
}

/// The open file and its size.
#[derive(Debug)]
struct Open {
    file: std::fs::File,
    len: u64,
}

impl DeadLetter {
    pub fn new(path: &Path, metrics: Arc<Metrics>) -> DeadLetter {
        DeadLetter::with_rotation(path, Rotation::default(), metrics)
    }

    pub fn with_rotation(path: &Path, rotation: Rotation, metrics: Arc<Metrics>) -> DeadLetter {
        DeadLetter {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(None)),
            rotation,
            metrics,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write quarantine records for `events` (each must carry `quarantine`) and fsync.
    /// The caller marks the events `Rejected` only after this returns `Ok`.
    pub async fn write(&self, events: &[Event]) -> Result<(), DeadLetterError> {
        if events.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut buf = Vec::with_capacity(events.iter().map(|e| e.raw.len() + 256).sum());
        for e in events {
            let q = e.quarantine.as_ref();
            // The record, unless it was let go after encoding: then the refused message.
            let released = e.raw.is_empty() && e.normalized.is_none();
            let sent = e.encoded.as_ref().filter(|_| released).map(|enc| &enc.data[..]);
            let text = std::str::from_utf8(&e.raw).ok().filter(|_| sent.is_none());
            let message = sent.and_then(|m| std::str::from_utf8(m).ok());
            let rec = Record {
                time: now.clone(),
                stage: q.map_or("unknown", |q| &q.stage),
                reason: q.map_or("unknown", |q| q.reason),
                detail: q.map_or("", |q| q.detail.as_str()),
                source: &e.meta.source,
                category: &e.meta.category,
                tenant: e.meta.tenant.as_deref(),
                partition: &e.meta.position.partition,
                offset: e.meta.position.offset,
                sequence: e.meta.position.sequence,
                index: e.meta.position.index,
                repaired: e.meta.repaired,
                original: text,
                original_base64: (text.is_none() && sent.is_none())
                    .then(|| base64::engine::general_purpose::STANDARD.encode(&e.raw)),
                message,
                message_base64: sent
                    .filter(|_| message.is_none())
                    .map(|m| base64::engine::general_purpose::STANDARD.encode(m)),
            };
            serde_json::to_writer(&mut buf, &rec).expect("record serializes");
            buf.push(b'\n');
        }
        let file = self.file.clone();
        let path = self.path.clone();
        let rotation = self.rotation;
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut guard = file.lock().unwrap_or_else(|e| e.into_inner());
            if guard.is_none() {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let file = crate::line_file::open_for_lines(&path)?;
                let len = file.metadata()?.len();
                *guard = Some(Open { file, len });
            }
            let open = guard.as_mut().expect("opened above");
            if open.len > 0 && open.len + buf.len() as u64 > rotation.max_file_bytes {
                // Every record in the file was synced when it was written: the rename keeps
                // them, and the next write opens a new file.
                *guard = None;
                rotate(&path, rotation.max_files)?;
                let file = crate::line_file::open_for_lines(&path)?;
                let len = file.metadata()?.len();
                *guard = Some(Open { file, len });
            }
            let open = guard.as_mut().expect("opened above");
            let r = open.file.write_all(&buf).and_then(|_| open.file.sync_data());
            match r {
                Ok(()) => open.len += buf.len() as u64,
                // Reopen next time: the handle may be broken.
                Err(_) => *guard = None,
            }
            r
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        match res {
            Ok(()) => {
                for e in events {
                    if let Some(q) = &e.quarantine {
                        self.metrics.quarantine(&q.stage, q.reason, 1);
                        tracing::warn!(stage = %q.stage, reason = q.reason, detail = %q.detail, source = %e.meta.source, position = %e.meta.position, "event quarantined");
                    }
                }
                Ok(())
            }
            Err(source) => {
                self.metrics.error("dead_letter", "io");
                Err(DeadLetterError {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }
}

/// Renames the file at `path` to `<stem>.<UTC time>.<ext>` and, with `keep` > 0, removes
/// the oldest rotated files beyond `keep`.
fn rotate(path: &Path, keep: usize) -> std::io::Result<()> {
    let (stem, ext) = stem_ext(path);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let now = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let mut to = dir.join(format!("{stem}.{now}{ext}"));
    let mut n = 1;
    while to.exists() {
        to = dir.join(format!("{stem}.{now}-{n}{ext}"));
        n += 1;
    }
    std::fs::rename(path, &to)?;
    tracing::info!(file = %to.display(), "dead-letter file rotated");
    if keep == 0 {
        return Ok(());
    }
    let rotated = rotated_files(path)?;
    let excess = rotated.len().saturating_sub(keep);
    for old in &rotated[..excess] {
        let bytes = std::fs::metadata(old).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(old)?;
        tracing::warn!(file = %old.display(), bytes, kept = keep, "oldest rotated dead-letter file removed (dead_letter.max_files)");
    }
    Ok(())
}

/// `dead-letter` and `.ndjson` of `dead-letter.ndjson` (no extension: empty).
fn stem_ext(path: &Path) -> (String, String) {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (stem, ext)
}

/// The rotated files of the dead-letter file at `path` (`<stem>.<UTC time>[-n]<ext>`),
/// oldest first.
pub fn rotated_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let (stem, ext) = stem_ext(path);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!("{stem}.");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(middle) = name.strip_prefix(&prefix).and_then(|m| m.strip_suffix(ext.as_str())) else {
            continue;
        };
        // A UTC time such as 20261201T113600.123Z, with an optional -n.
        let (time, n) = middle.split_once('-').unwrap_or((middle, "0"));
        let Ok(n) = n.parse::<u32>() else { continue };
        if time.len() == 20 && time.ends_with('Z') && time.as_bytes()[8] == b'T' {
            out.push((time.to_owned(), n, dir.join(name)));
        }
    }
    out.sort();
    Ok(out.into_iter().map(|(_, _, p)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::Finalizer;
    use crate::event::{EventKind, EventMeta, Position};

    fn quarantined(i: u32) -> Event {
        let meta = EventMeta::new(
            Arc::from("s"),
            "SignInLogs",
            EventKind::SignIn,
            Position::at(Arc::from("p"), u64::from(i), 0),
        );
        let mut e = Event::new(bytes::Bytes::from(format!("{{\"n\":{i}}}")), meta, Finalizer::noop());
        e.quarantine("normalize", "invalid_json", "bad".into());
        e
    }

    /// The file is rotated before it passes `max_file_bytes`, no record is lost or split by
    /// a rotation, and with `max_files` only the newest rotated files stay.
    #[tokio::test]
    async fn the_file_rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.ndjson");
        let rotation = Rotation {
            max_file_bytes: 1000,
            max_files: 0,
        };
        let dl = DeadLetter::with_rotation(&path, rotation, Arc::new(Metrics::new()));
        for i in 0..40 {
            dl.write(&[quarantined(i)]).await.unwrap();
        }
        let mut files = rotated_files(&path).unwrap();
        assert!(files.len() >= 3, "{files:?}");
        files.push(path.clone());
        let mut seen = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(text.len() as u64 <= 1000, "{} is {} bytes", f.display(), text.len());
            for l in text.lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                seen.push(v["offset"].as_u64().unwrap());
            }
        }
        assert_eq!(seen, (0..40).collect::<Vec<u64>>(), "every record once, in order");

        // Keeping two: the oldest go.
        let keep = DeadLetter::with_rotation(
            &path,
            Rotation {
                max_file_bytes: 1000,
                max_files: 2,
            },
            Arc::new(Metrics::new()),
        );
        let newest_before = files[files.len() - 2].clone();
        for i in 40..60 {
            keep.write(&[quarantined(i)]).await.unwrap();
        }
        let left = rotated_files(&path).unwrap();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(!newest_before.exists(), "the older files were removed: {left:?}");
        let mut offsets = Vec::new();
        for f in left.iter().chain([&path]) {
            for l in std::fs::read_to_string(f).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                offsets.push(v["offset"].as_u64().unwrap());
            }
        }
        assert_eq!(offsets.last(), Some(&59));
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "the newest records, in order: {offsets:?}"
        );
    }

    #[tokio::test]
    async fn a_record_cut_short_by_a_kill_does_not_join_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.ndjson");
        // What a process killed while writing its second record leaves.
        std::fs::write(&path, "{\"stage\":\"decode\"}\n{\"stage\":\"norm").unwrap();
        let dl = DeadLetter::new(&path, Arc::new(Metrics::new()));
        let meta = EventMeta::new(
            Arc::from("s"),
            "SignInLogs",
            EventKind::SignIn,
            Position::at(Arc::from("p"), 0, 0),
        );
        let mut e = Event::new(bytes::Bytes::from_static(b"{}"), meta, Finalizer::noop());
        e.quarantine("normalize", "invalid_json", "bad".into());
        dl.write(&[e]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[1]["reason"], "invalid_json");
    }
}
