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

/// Appends quarantine records. Shared by the router and every sink.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    file: Arc<Mutex<Option<std::fs::File>>>,
    metrics: Arc<Metrics>,
}

impl DeadLetter {
    pub fn new(path: &Path, metrics: Arc<Metrics>) -> DeadLetter {
        DeadLetter {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(None)),
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
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut guard = file.lock().unwrap_or_else(|e| e.into_inner());
            if guard.is_none() {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                *guard = Some(crate::line_file::open_for_lines(&path)?);
            }
            let f = guard.as_mut().expect("opened above");
            let r = f.write_all(&buf).and_then(|_| f.sync_data());
            if r.is_err() {
                // Reopen next time: the handle may be broken.
                *guard = None;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::Finalizer;
    use crate::event::{EventKind, EventMeta, Position};

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
