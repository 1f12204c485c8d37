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
                        *guard = Some(crate::line_file::open_for_lines(&path)?);
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
