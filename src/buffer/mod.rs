//! Per-sink disk buffer (`[sinks.NAME.buffer] type = "disk"`), with Vector's disk-buffer
//! semantics: a batch routed to the sink is appended to the sink's on-disk log, made durable
//! per the `fsync` policy, and only then are its events acknowledged upstream for this sink,
//! so the source checkpoint moves on while the receiver is down. A reader replays the log
//! into the sink driver; a segment file is deleted once the sink acknowledged every record in
//! it, and a small pointer file (`ack.pos`) says where unacknowledged data starts, so a
//! restart sends it again (at least once). Torn tails and corrupt records are counted
//! (`buffer_corrupt_records_total`), written to the dead-letter file with their bytes, and
//! skipped: the buffer never wedges. When `max_bytes` are waiting, writes wait
//! (backpressure), nothing is dropped.
//!
//! Hand-written rather than an embedded store: what is needed is an append-only log read
//! once in order and deleted by whole segments (a few hundred lines, no compaction, no
//! index). Embedded databases (sled, redb, fjall) bring write amplification and recovery
//! rules of their own that would have to be tested for the same torn-write cases anyway;
//! the only dependency added is `crc32fast` (already in the tree through flate2).

pub mod codec;
pub mod log;
pub mod run;
pub mod wire;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigIssue;

pub use run::DiskBuffer;

/// `[sinks.NAME.buffer]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// `memory` (default: the bounded in-memory channel) or `disk`.
    #[serde(rename = "type", default)]
    pub kind: BufferKind,
    /// Disk: largest number of unacknowledged bytes kept; beyond it writes wait.
    pub max_bytes: Option<u64>,
    /// Disk: when appended records are fsynced before they are acknowledged upstream.
    pub fsync: Option<FsyncPolicy>,
    /// Disk, `fsync = "interval"`: at most this long between fsyncs (default 1000).
    pub fsync_interval_ms: Option<u64>,
    /// Disk: directory of the log (default `<data_dir>/buffers/<sink name>`).
    pub path: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    #[default]
    Memory,
    Disk,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// fsync after every batch, before its acknowledgment.
    Always,
    /// Append every batch waiting, fsync once, then acknowledge them all (default).
    Batch,
    /// fsync at most every `fsync_interval_ms`; acknowledgments wait for it.
    Interval,
}

/// When appended data is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    Always,
    Batch,
    Interval(Duration),
}

/// A validated disk buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSettings {
    pub path: Option<PathBuf>,
    pub max_bytes: u64,
    pub fsync: Fsync,
    pub segment_max_bytes: u64,
}

/// Default `max_bytes`: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Smallest `max_bytes` accepted.
pub const MIN_MAX_BYTES: u64 = 1 << 20;
/// Largest segment file.
const SEGMENT_MAX_BYTES: u64 = 32 << 20;

impl DiskSettings {
    /// Settings with the segment size derived from `max_bytes` (a quarter, at most 32 MiB),
    /// so finished segments can be deleted long before the limit is reached.
    pub fn new(path: Option<PathBuf>, max_bytes: u64, fsync: Fsync) -> DiskSettings {
        DiskSettings {
            path,
            max_bytes,
            fsync,
            segment_max_bytes: (max_bytes / 4).clamp(4096, SEGMENT_MAX_BYTES),
        }
    }
}

impl BufferConfig {
    /// Check the table; `None` for a memory buffer. `prefix` is `sinks.NAME.buffer`.
    pub fn validate(&self, prefix: &str) -> Result<Option<DiskSettings>, ConfigIssue> {
        match self.kind {
            BufferKind::Memory => {
                for (key, set) in [
                    ("max_bytes", self.max_bytes.is_some()),
                    ("fsync", self.fsync.is_some()),
                    ("fsync_interval_ms", self.fsync_interval_ms.is_some()),
                    ("path", self.path.is_some()),
                ] {
                    if set {
                        return Err(ConfigIssue::new(
                            format!("{prefix}.{key}"),
                            "only for type = \"disk\" (the memory buffer is sized by buffer_max_batches)",
                        ));
                    }
                }
                Ok(None)
            }
            BufferKind::Disk => {
                let max_bytes = self.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
                if max_bytes < MIN_MAX_BYTES {
                    return Err(ConfigIssue::new(
                        format!("{prefix}.max_bytes"),
                        format!("{max_bytes} is below the minimum of {MIN_MAX_BYTES} (1 MiB)"),
                    ));
                }
                let fsync = match (self.fsync.unwrap_or(FsyncPolicy::Batch), self.fsync_interval_ms) {
                    (FsyncPolicy::Interval, ms) => {
                        let ms = ms.unwrap_or(1000);
                        if ms == 0 {
                            return Err(ConfigIssue::new(
                                format!("{prefix}.fsync_interval_ms"),
                                "must be greater than 0",
                            ));
                        }
                        Fsync::Interval(Duration::from_millis(ms))
                    }
                    (_, Some(_)) => {
                        return Err(ConfigIssue::new(
                            format!("{prefix}.fsync_interval_ms"),
                            "only with fsync = \"interval\"",
                        ))
                    }
                    (FsyncPolicy::Always, None) => Fsync::Always,
                    (FsyncPolicy::Batch, None) => Fsync::Batch,
                };
                if self.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                    return Err(ConfigIssue::new(format!("{prefix}.path"), "must not be empty"));
                }
                Ok(Some(DiskSettings::new(self.path.clone(), max_bytes, fsync)))
            }
        }
    }
}

#[cfg(test)]
mod tests;
