//! Typed configuration: TOML with `[sources.NAME]` and `[sinks.NAME]` tables, secrets by
//! `${ENV}` / `${file:PATH}`, validated once at start with errors naming file and key.

mod interpolate;
pub mod secret;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

pub use secret::Secret;

use crate::normalize::RawData;
use crate::pipeline::route::RouteFilter;
use crate::sinks::{self, SinkConfig};
use crate::sources::{self, SourceConfig};

/// One problem found in a config, at a key path such as `sinks.splunk.filter.kinds`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl ConfigIssue {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> ConfigIssue {
        ConfigIssue {
            path: path.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: TOML syntax: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{}", format_issues(file, issues))]
    Invalid { file: PathBuf, issues: Vec<ConfigIssue> },
}

fn format_issues(file: &Path, issues: &[ConfigIssue]) -> String {
    let mut s = format!("{}: {} problem(s) in the configuration", file.display(), issues.len());
    for i in issues {
        s.push_str(&format!("\n  {}: {}: {}", file.display(), i.path, i.message));
    }
    s
}

/// A component factory: name, its table (without `type`), key prefix → validated config.
pub type Factory<T> = fn(&str, toml::Value, &str) -> Result<T, ConfigIssue>;

/// Look `ty` up in a component registry and run its factory; an unknown type is an
/// error at `prefix.type` listing the known ones. `kind` is "source" or "sink".
pub fn build_component<T>(
    registry: &[(&'static str, Factory<T>)],
    kind: &str,
    ty: &str,
    name: &str,
    table: toml::Value,
    prefix: &str,
) -> Result<T, Vec<ConfigIssue>> {
    match registry.iter().find(|(n, _)| *n == ty) {
        Some((_, factory)) => factory(name, table, prefix).map_err(|i| vec![i]),
        None => {
            let known: Vec<&str> = registry.iter().map(|(n, _)| *n).collect();
            Err(vec![ConfigIssue::new(
                format!("{prefix}.type"),
                format!("unknown {kind} type `{ty}`, expected one of {}", known.join(", ")),
            )])
        }
    }
}

/// Deserialize a component's table, reporting errors at `prefix.<key>`.
pub fn typed<T: DeserializeOwned>(value: toml::Value, prefix: &str) -> Result<T, ConfigIssue> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." || inner.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{inner}")
        };
        ConfigIssue::new(path, e.into_inner().to_string())
    })
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve `/metrics`, `/health` and `/ready`.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_api_address")]
    pub address: SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            address: default_api_address(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_api_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9598))
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// NDJSON file for quarantined events; default `<data_dir>/dead-letter.ndjson`.
    pub path: Option<PathBuf>,
    /// Size at which the file is renamed to `<stem>.<UTC time>.<ext>` and a new one begun
    /// (default 100 MiB).
    pub max_file_bytes: Option<u64>,
    /// Rotated files kept, oldest removed first; 0 (default) keeps every one.
    #[serde(default)]
    pub max_files: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Largest batch a source emits (default 128: a fast paced input fills a batch before
    /// its age limit, so the batch size bounds latency at moderate rates; 128 against 250
    /// halved p99 at half load, BENCHMARKS.md "Batches of 128").
    pub batch_max_events: usize,
    /// Batches buffered between two stages (bounded: a slow sink is backpressure).
    pub channel_capacity: usize,
    /// Normalization workers; 0 = one per core.
    pub normalize_workers: usize,
    /// How often acknowledged checkpoints are written.
    pub checkpoint_interval_ms: u64,
    /// On SIGTERM/SIGINT, how long in-flight events may take to drain.
    pub drain_timeout_secs: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_max_events: 128,
            channel_capacity: 4,
            normalize_workers: 0,
            checkpoint_interval_ms: 1000,
            drain_timeout_secs: 30,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NormalizeConfig {
    /// Keep the source record in OCSF `raw_data` (`keep`) or not (`drop`).
    pub raw_data: RawData,
    pub raw_data_max_bytes: usize,
    /// Correlate a detection seen through Graph and through Event Hub (alert id, risk event
    /// id): `unmapped.correlated_via` / `correlated_uid`. Default true.
    pub correlate_detections: bool,
    /// Drop the second copy of a detection's creation seen through the other input
    /// (counted in `m365fwd_detections_suppressed_total`). Default false.
    pub suppress_duplicate_detections: bool,
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        NormalizeConfig {
            raw_data: RawData::Keep,
            raw_data_max_bytes: 256 * 1024,
            correlate_detections: true,
            suppress_duplicate_detections: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    api: ApiConfig,
    #[serde(default)]
    dead_letter: DeadLetterConfig,
    #[serde(default)]
    pipeline: PipelineConfig,
    #[serde(default)]
    normalize: NormalizeConfig,
    #[serde(default)]
    sources: BTreeMap<String, toml::Value>,
    #[serde(default)]
    sinks: BTreeMap<String, toml::Value>,
}

/// Keys every sink has, besides its type-specific ones.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkCommon {
    /// Sources this sink reads from; empty means all.
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default)]
    pub filter: RouteFilter,
    /// First retry delay after a failed send.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest delay between retries.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// At most this many events per second to this sink (SIEM licences that cap EPS);
    /// excess waits (backpressure). Default: no limit.
    #[serde(default)]
    pub rate_limit_eps: Option<std::num::NonZeroU32>,
    /// The sink's own buffer: batches waiting for it (default `pipeline.channel_capacity`).
    #[serde(default)]
    pub buffer_max_batches: Option<std::num::NonZeroUsize>,
    /// What happens when that buffer is full: `block` (backpressure up to the sources, the
    /// default) or `dead_letter` (the events go to the dead-letter file, so a slow optional
    /// output never holds back the others; nothing is dropped).
    #[serde(default)]
    pub when_full: WhenFull,
    /// `[sinks.NAME.buffer]`: `type = "memory"` (default) or `"disk"` with `max_bytes`,
    /// `fsync` and `path` (see `crate::buffer`).
    #[serde(default)]
    pub buffer: crate::buffer::BufferConfig,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    #[default]
    Block,
    DeadLetter,
}

fn default_retry_initial_ms() -> u64 {
    200
}
fn default_retry_max_ms() -> u64 {
    30_000
}

impl Default for SinkCommon {
    fn default() -> Self {
        SinkCommon {
            inputs: Vec::new(),
            filter: RouteFilter::default(),
            retry_initial_ms: default_retry_initial_ms(),
            retry_max_ms: default_retry_max_ms(),
            rate_limit_eps: None,
            buffer_max_batches: None,
            when_full: WhenFull::Block,
            buffer: Default::default(),
        }
    }
}

const SINK_COMMON_KEYS: [&str; 8] = [
    "inputs",
    "filter",
    "retry_initial_ms",
    "retry_max_ms",
    "rate_limit_eps",
    "buffer_max_batches",
    "when_full",
    "buffer",
];

pub struct SourceEntry {
    pub name: String,
    pub config: Box<dyn SourceConfig>,
}

pub struct SinkEntry {
    pub name: String,
    pub common: SinkCommon,
    pub config: Box<dyn SinkConfig>,
}

/// A validated configuration.
pub struct Config {
    pub file: PathBuf,
    pub data_dir: PathBuf,
    pub api: ApiConfig,
    pub dead_letter: DeadLetterConfig,
    pub pipeline: PipelineConfig,
    pub normalize: NormalizeConfig,
    pub sources: Vec<SourceEntry>,
    pub sinks: Vec<SinkEntry>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("file", &self.file)
            .field("sources", &self.sources.iter().map(|s| &s.name).collect::<Vec<_>>())
            .field("sinks", &self.sinks.iter().map(|s| &s.name).collect::<Vec<_>>())
            .finish()
    }
}

impl Config {
    pub fn dead_letter_path(&self) -> PathBuf {
        self.dead_letter
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("dead-letter.ndjson"))
    }

    /// When the dead-letter file rotates and how many rotated files stay.
    pub fn dead_letter_rotation(&self) -> crate::deadletter::Rotation {
        crate::deadletter::Rotation {
            max_file_bytes: self
                .dead_letter
                .max_file_bytes
                .unwrap_or(crate::deadletter::DEFAULT_MAX_FILE_BYTES),
            max_files: self.dead_letter.max_files,
        }
    }

    /// Read, interpolate and validate a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Config::from_str(&text, file)
    }

    /// Parse config text; `file` names it in errors.
    pub fn from_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
        // The position and the parser's message, not its quote of the line: that line may
        // hold a secret written in the text.
        let mut value: toml::Value = toml::from_str(text).map_err(|e: toml::de::Error| {
            let at = e.span().map_or(0, |s| s.start.min(text.len()));
            let line = text[..at].matches('\n').count() + 1;
            let column = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
            ConfigError::Syntax {
                file: file.to_path_buf(),
                message: format!("line {line}, column {column}: {}", e.message().trim_end()),
            }
        })?;
        let invalid = |issues| ConfigError::Invalid {
            file: file.to_path_buf(),
            issues,
        };
        let literal = interpolate::literal_secrets(&value);
        if !literal.is_empty() {
            tracing::warn!(file = %file.display(), keys = ?literal, "secrets written in the config text; use ${{ENV}} or ${{file:PATH}}");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(meta) = std::fs::metadata(file) {
                    if meta.permissions().mode() & 0o004 != 0 {
                        tracing::warn!(file = %file.display(), "the config file holds secrets and is world-readable; chmod o-r it");
                    }
                }
            }
        }
        let mut issues = interpolate::interpolate(&mut value, file.parent());
        if !issues.is_empty() {
            return Err(invalid(issues));
        }
        let raw: RawConfig = typed(value, "").map_err(|mut i| {
            i.path = i.path.trim_start_matches('.').to_string();
            if i.path.is_empty() {
                i.path = "(top level)".into();
            }
            invalid(vec![i])
        })?;

        let mut source_entries = Vec::new();
        for (name, value) in raw.sources {
            let prefix = format!("sources.{name}");
            match split_type(value, &prefix) {
                Ok((ty, table)) => match sources::build_config(&ty, &name, toml::Value::Table(table), &prefix) {
                    Ok(config) => source_entries.push(SourceEntry { name, config }),
                    Err(mut more) => issues.append(&mut more),
                },
                Err(i) => issues.push(i),
            }
        }
        let mut sink_entries = Vec::new();
        for (name, value) in raw.sinks {
            let prefix = format!("sinks.{name}");
            let (ty, mut table) = match split_type(value, &prefix) {
                Ok(x) => x,
                Err(i) => {
                    issues.push(i);
                    continue;
                }
            };
            let mut common_table = toml::Table::new();
            for k in SINK_COMMON_KEYS {
                if let Some(v) = table.remove(k) {
                    common_table.insert(k.to_string(), v);
                }
            }
            let common: SinkCommon = match typed(toml::Value::Table(common_table), &prefix) {
                Ok(c) => c,
                Err(i) => {
                    issues.push(i);
                    continue;
                }
            };
            for input in &common.inputs {
                if !source_entries.iter().any(|s| &s.name == input)
                    && !issues.iter().any(|i| i.path.starts_with(&format!("sources.{input}")))
                {
                    issues.push(ConfigIssue::new(
                        format!("{prefix}.inputs"),
                        format!("unknown source `{input}`"),
                    ));
                }
            }
            if let Err(i) = common.filter.validate(&format!("{prefix}.filter")) {
                issues.push(i);
            }
            if let Err(i) = common.buffer.validate(&format!("{prefix}.buffer")) {
                issues.push(i);
            }
            match sinks::build_config(&ty, &name, toml::Value::Table(table), &prefix) {
                Ok(config) => sink_entries.push(SinkEntry { name, common, config }),
                Err(mut more) => issues.append(&mut more),
            }
        }
        if source_entries.is_empty() && !issues.iter().any(|i| i.path.starts_with("sources")) {
            issues.push(ConfigIssue::new("sources", "at least one source is required"));
        }
        if sink_entries.is_empty() && !issues.iter().any(|i| i.path.starts_with("sinks")) {
            issues.push(ConfigIssue::new("sinks", "at least one sink is required"));
        }
        let p = &raw.pipeline;
        for (key, v) in [
            ("batch_max_events", p.batch_max_events as u64),
            ("channel_capacity", p.channel_capacity as u64),
            ("checkpoint_interval_ms", p.checkpoint_interval_ms),
        ] {
            if v == 0 {
                issues.push(ConfigIssue::new(format!("pipeline.{key}"), "must be greater than 0"));
            }
        }
        if raw.dead_letter.max_file_bytes == Some(0) {
            issues.push(ConfigIssue::new("dead_letter.max_file_bytes", "must be greater than 0"));
        }
        if !issues.is_empty() {
            return Err(invalid(issues));
        }
        let data_dir = raw.data_dir.unwrap_or_else(|| PathBuf::from("/var/lib/m365-forwarder"));
        Ok(Config {
            file: file.to_path_buf(),
            data_dir,
            api: raw.api,
            dead_letter: raw.dead_letter,
            pipeline: raw.pipeline,
            normalize: raw.normalize,
            sources: source_entries,
            sinks: sink_entries,
        })
    }
}

fn split_type(value: toml::Value, prefix: &str) -> Result<(String, toml::Table), ConfigIssue> {
    let toml::Value::Table(mut table) = value else {
        return Err(ConfigIssue::new(prefix, "must be a table"));
    };
    match table.remove("type") {
        Some(toml::Value::String(t)) => Ok((t, table)),
        Some(_) => Err(ConfigIssue::new(format!("{prefix}.type"), "must be a string")),
        None => Err(ConfigIssue::new(format!("{prefix}.type"), "missing component type")),
    }
}

#[cfg(test)]
mod tests;
