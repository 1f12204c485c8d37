//! File and console sinks: one encoded event per line, appended to a file (flushed and,
//! by default, fsynced before acknowledgment) or written to stdout.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::{Rejection, SendReport, Sink, SinkConfig, SinkError};
use crate::config::{typed, ConfigIssue};
use crate::encode::{self, Encoder, EncoderOptions, Format};
use crate::event::Event;

/// `[sinks.NAME] type = "file"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    pub path: PathBuf,
    #[serde(default = "default_format")]
    pub encoding: Format,
    /// fsync after every batch, before acknowledging it.
    #[serde(default = "yes")]
    pub fsync: bool,
    #[serde(default)]
    pub encoder: EncoderOptions,
}

/// `[sinks.NAME] type = "console"`: stdout.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSinkConfig {
    #[serde(default = "default_format")]
    pub encoding: Format,
    #[serde(default)]
    pub encoder: EncoderOptions,
}

fn default_format() -> Format {
    Format::Ocsf
}

fn yes() -> bool {
    true
}

pub fn factory(_name: &str, table: toml::Value, prefix: &str) -> Result<Box<dyn SinkConfig>, ConfigIssue> {
    let c: FileSinkConfig = typed(table, prefix)?;
    if c.path.as_os_str().is_empty() {
        return Err(ConfigIssue::new(format!("{prefix}.path"), "must not be empty"));
    }
    Ok(Box::new(c))
}

pub fn console_factory(_name: &str, table: toml::Value, prefix: &str) -> Result<Box<dyn SinkConfig>, ConfigIssue> {
    let c: ConsoleSinkConfig = typed(table, prefix)?;
    Ok(Box::new(c))
}

impl SinkConfig for FileSinkConfig {
    fn build(&self, _name: &str) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(LineSink {
            target: Target::File {
                path: self.path.clone(),
                file: Arc::new(Mutex::new(None)),
                fsync: self.fsync,
            },
            encoder: encode::encoder(self.encoding, &self.encoder),
            buf: Vec::new(),
        }))
    }

    fn encoder(&self) -> Option<Box<dyn Encoder>> {
        Some(encode::encoder(self.encoding, &self.encoder))
    }
}

impl SinkConfig for ConsoleSinkConfig {
    fn build(&self, _name: &str) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(LineSink {
            target: Target::Stdout,
            encoder: encode::encoder(self.encoding, &self.encoder),
            buf: Vec::new(),
        }))
    }

    fn encoder(&self) -> Option<Box<dyn Encoder>> {
        Some(encode::encoder(self.encoding, &self.encoder))
    }
}

enum Target {
    File {
        path: PathBuf,
        file: Arc<Mutex<Option<std::fs::File>>>,
        fsync: bool,
    },
    Stdout,
}

struct LineSink {
    target: Target,
    encoder: Box<dyn Encoder>,
    buf: Vec<u8>,
}

impl LineSink {
    fn encode_batch(&mut self, events: &[Event]) -> Vec<Rejection> {
        self.buf.clear();
        let mut rejected = Vec::new();
        for (index, e) in events.iter().enumerate() {
            let mark = self.buf.len();
            if let Err(err) = encode::append(&*self.encoder, e, &mut self.buf) {
                self.buf.truncate(mark);
                rejected.push(Rejection {
                    index,
                    reason: err.reason(),
                    detail: err.to_string(),
                });
            }
        }
        rejected
    }
}

#[async_trait::async_trait]
impl Sink for LineSink {
    async fn send(&mut self, events: &[Event]) -> Result<SendReport, SinkError> {
        let rejected = self.encode_batch(events);
        let bytes = self.buf.len() as u64;
        match &self.target {
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&self.buf)?;
                out.flush()?;
            }
            Target::File { path, file, fsync } => {
                let data = std::mem::take(&mut self.buf);
                let (path, file, fsync) = (path.clone(), file.clone(), *fsync);
                let data = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                    let mut guard = file.lock().unwrap_or_else(|e| e.into_inner());
                    if guard.is_none() {
                        *guard = Some(open_for_lines(&path)?);
                    }
                    let f = guard.as_mut().expect("opened above");
                    let before = f.metadata()?.len();
                    let r = f
                        .write_all(&data)
                        .and_then(|_| if fsync { f.sync_data() } else { Ok(()) });
                    if r.is_err() {
                        // Take back a partial write so the retry does not leave half a line,
                        // then reopen on the next attempt (the file may be gone or the disk full).
                        let _ = f.set_len(before);
                        *guard = None;
                    }
                    r.map(|_| data)
                })
                .await
                .map_err(|e| SinkError::Io(std::io::Error::other(e.to_string())))??;
                self.buf = data;
            }
        }
        Ok(SendReport {
            bytes,
            rejected,
            settle: None,
        })
    }
}

/// Opens the output file for appending lines. A file that does not end with a line break
/// holds the front of a line whose write was cut short (the process was killed mid-write):
/// that batch was never acknowledged and is sent again, so the fragment after the last line
/// break is cut off instead of being joined to the next line. A file without any line break
/// is not ours to cut: a line break is added before the first line.
fn open_for_lines(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(f);
    }
    match last_line_end(&mut f, len)? {
        end if end == len => {}
        0 => {
            tracing::warn!(file = %path.display(), "output file does not end with a line break; starting a new line");
            f.write_all(b"\n")?;
        }
        end => {
            tracing::warn!(
                file = %path.display(),
                bytes = len - end,
                "cutting off a partial last line left by a write cut short (its events are sent again)"
            );
            f.set_len(end)?;
        }
    }
    Ok(f)
}

/// The length of the file up to and including its last line break (0 when it has none).
fn last_line_end(f: &mut std::fs::File, len: u64) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = len;
    // The usual case first: the last byte is a line break.
    let mut chunk = 1;
    while end > 0 {
        let start = end.saturating_sub(chunk);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
        chunk = buf.len() as u64;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reopened(content: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        std::fs::write(&path, content).unwrap();
        let mut f = open_for_lines(&path).unwrap();
        f.write_all(b"{\"next\":1}\n").unwrap();
        drop(f);
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn a_line_cut_short_by_a_kill_is_removed_before_the_next_lines() {
        assert_eq!(
            reopened(b"{\"a\":1}\n{\"b\":2}\n{\"c\""),
            b"{\"a\":1}\n{\"b\":2}\n{\"next\":1}\n"
        );
        // A fragment longer than one read back.
        let mut long = b"{\"a\":1}\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', 200_000));
        assert_eq!(reopened(&long), b"{\"a\":1}\n{\"next\":1}\n");
    }

    #[test]
    fn whole_lines_empty_files_and_foreign_text_are_kept() {
        assert_eq!(reopened(b"{\"a\":1}\n"), b"{\"a\":1}\n{\"next\":1}\n");
        assert_eq!(reopened(b""), b"{\"next\":1}\n");
        assert_eq!(reopened(b"no line break"), b"no line break\n{\"next\":1}\n");
    }
}
