//! Replay source: reads Event Hub bodies, Graph pages or NDJSON records from files,
//! directories, stdin or the bundled demo data, with byte-offset checkpoints per file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use super::{BatchBuilder, Source, SourceConfig, SourceContext, SourceError};
use crate::config::{typed, ConfigIssue};
use crate::decode::{decode_unit, InputFormat};

mod detect;
mod reader;
use reader::{BlockingReader, Input};

/// `[sources.NAME] type = "replay"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// Files or directories (every regular file inside, sorted by name); `-` is stdin.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// Bundled sample data instead of paths: `demo`.
    #[serde(default)]
    pub embedded: Option<String>,
    #[serde(default)]
    pub format: InputFormat,
    /// Keep reading files as they grow, like `tail -f`.
    #[serde(default)]
    pub follow: bool,
    /// Largest single line or document read.
    #[serde(default = "default_max_unit_bytes")]
    pub max_unit_bytes: usize,
}

fn default_max_unit_bytes() -> usize {
    64 * 1024 * 1024
}

pub fn factory(_name: &str, table: toml::Value, prefix: &str) -> Result<Box<dyn SourceConfig>, ConfigIssue> {
    let c: ReplayConfig = typed(table, prefix)?;
    match (&c.embedded, c.paths.is_empty()) {
        (Some(e), _) if e != "demo" => {
            return Err(ConfigIssue::new(
                format!("{prefix}.embedded"),
                format!("unknown embedded data set `{e}`, expected `demo`"),
            ));
        }
        (Some(_), false) => return Err(ConfigIssue::new(prefix, "set either `paths` or `embedded`, not both")),
        (None, true) => {
            return Err(ConfigIssue::new(
                format!("{prefix}.paths"),
                "at least one path is required",
            ))
        }
        _ => {}
    }
    Ok(Box::new(c))
}

impl SourceConfig for ReplayConfig {
    fn build(&self, _name: &str) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(ReplaySource { config: self.clone() }))
    }

    fn is_finite(&self) -> bool {
        !self.follow
    }
}

/// Bundled sample data for `demo` (the payloads in tests/data).
pub const DEMO_DATA: &[(&str, &[u8])] = &[
    (
        "graph/incidents_page1.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/graph/incidents_page1.json"
        )),
    ),
    (
        "graph/incidents_page2.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/graph/incidents_page2.json"
        )),
    ),
    (
        "graph/incidents_update.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/graph/incidents_update.json"
        )),
    ),
    (
        "graph/risk_detections.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/graph/risk_detections.json"
        )),
    ),
    (
        "graph/risky_users.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/graph/risky_users.json"
        )),
    ),
    (
        "eventhub/signin_interactive.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eventhub/signin_interactive.json"
        )),
    ),
    (
        "eventhub/signin_noninteractive.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eventhub/signin_noninteractive.json"
        )),
    ),
    (
        "eventhub/serviceprincipal_signin.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eventhub/serviceprincipal_signin.json"
        )),
    ),
    (
        "eventhub/managedidentity_signin.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eventhub/managedidentity_signin.json"
        )),
    ),
    (
        "eventhub/auditlogs.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eventhub/auditlogs.json"
        )),
    ),
    (
        "eventhub/user_risk_events.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eventhub/user_risk_events.json"
        )),
    ),
    (
        "eventhub/risky_users.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eventhub/risky_users.json"
        )),
    ),
    (
        "eventhub/risky_serviceprincipals.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eventhub/risky_serviceprincipals.json"
        )),
    ),
    (
        "eventhub/serviceprincipal_risk_events.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eventhub/serviceprincipal_risk_events.json"
        )),
    ),
    (
        "eventhub/graph_activity_logs.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eventhub/graph_activity_logs.json"
        )),
    ),
    (
        "eventhub/defender_identity_logon_events.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eventhub/defender_identity_logon_events.json"
        )),
    ),
    (
        "eventhub/defender_alert_info_evidence.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eventhub/defender_alert_info_evidence.json"
        )),
    ),
    (
        "eventhub/malformed/single_quoted_properties.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eventhub/malformed/single_quoted_properties.json"
        )),
    ),
    (
        "eventhub/malformed/raw_newline_in_string.json",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eventhub/malformed/raw_newline_in_string.json"
        )),
    ),
    (
        "eventhub/malformed/placeholder_blob.txt",
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eventhub/malformed/placeholder_blob.txt"
        )),
    ),
];

struct ReplaySource {
    config: ReplayConfig,
}

#[async_trait::async_trait]
impl Source for ReplaySource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let format = self.config.format;
        if self.config.embedded.is_some() {
            for (name, body) in DEMO_DATA {
                if ctx.shutdown.is_cancelled() {
                    return Ok(());
                }
                let partition: Arc<str> = Arc::from(format!("embedded:{name}"));
                let mut b = BatchBuilder::new(ctx.name.clone(), partition, ctx.batch_max_events);
                let body = Bytes::from_static(body);
                b.push_unit(0, &body, decode_unit(format, body.clone()), None, &ctx.metrics);
                let batch = b.take(&ctx.acks);
                ctx.send(batch).await?;
            }
            return Ok(());
        }
        for path in expand_paths(&self.config.paths, &ctx.name)? {
            if ctx.shutdown.is_cancelled() {
                break;
            }
            if path.as_os_str() == "-" {
                read_stdin(&ctx, &self.config).await?;
                continue;
            }
            read_file(&ctx, &path, &self.config).await?;
        }
        Ok(())
    }
}

/// The files to read, in order: directories listed (sorted), each file once. A file named
/// twice (directly, or also through its directory) is read once: its checkpoint is the end
/// of the file after the first read, so a second read would forward nothing or, before the
/// checkpoint is committed, everything again.
fn expand_paths(paths: &[PathBuf], source: &str) -> Result<Vec<PathBuf>, SourceError> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut add = |p: PathBuf| {
        if p.as_os_str() != "-" && !seen.insert(p.clone()) {
            tracing::warn!(source, file = %p.display(), "file named more than once; read once");
        } else {
            out.push(p);
        }
    };
    for p in paths {
        if p.as_os_str() != "-" && p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| fatal(source, format!("cannot list {}: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            files.into_iter().for_each(&mut add);
        } else {
            add(p.clone());
        }
    }
    Ok(out)
}

fn fatal(source: &str, message: String) -> SourceError {
    SourceError::Fatal {
        source_name: source.to_string(),
        message,
    }
}

async fn read_file(ctx: &SourceContext, path: &Path, config: &ReplayConfig) -> Result<(), SourceError> {
    let partition: Arc<str> = Arc::from(path.to_string_lossy().as_ref());
    let key = ctx.checkpoint_key(None, &partition);
    let resume: u64 = ctx.checkpoints.get(&key)?.and_then(|v| v.parse().ok()).unwrap_or(0);
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| fatal(&ctx.name, format!("cannot open {}: {e}", path.display())))?;
    let mut start = resume;
    if resume > meta.len() {
        tracing::warn!(source = %ctx.name, file = %path.display(), resume, len = meta.len(), "file is shorter than its checkpoint (truncated or replaced); reading it from the start");
        start = 0;
    }
    let whole = detect::is_whole_document(path)
        .await
        .map_err(|e| fatal(&ctx.name, format!("cannot read {}: {e}", path.display())))?;
    if whole {
        if start >= meta.len() && meta.len() > 0 {
            tracing::info!(source = %ctx.name, file = %path.display(), "already forwarded (checkpoint at end of file)");
            return Ok(());
        }
        let body = tokio::fs::read(path)
            .await
            .map_err(|e| fatal(&ctx.name, format!("cannot read {}: {e}", path.display())))?;
        let len = body.len() as u64;
        let body = Bytes::from(body);
        let mut b = BatchBuilder::new(ctx.name.clone(), partition, ctx.batch_max_events);
        b.push_unit(
            0,
            &body,
            decode_unit(config.format, body.clone()),
            Some(len.to_string()),
            &ctx.metrics,
        );
        let batch = b.take(&ctx.acks);
        return ctx.send(batch).await;
    }
    let owned = path.to_owned();
    let f = tokio::task::spawn_blocking(move || {
        use std::io::Seek;
        let mut f = std::fs::File::open(&owned)?;
        f.seek(std::io::SeekFrom::Start(start))?;
        Ok::<_, std::io::Error>(f)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|opened| opened)
    .map_err(|e| {
        fatal(
            &ctx.name,
            format!("cannot open {} at byte {start}: {e}", path.display()),
        )
    })?;
    if start > 0 {
        tracing::info!(source = %ctx.name, file = %path.display(), offset = start, "resuming from checkpoint");
    }
    let reader = BlockingReader::new(Input::File(f));
    read_stream(ctx, reader, BytesMut::new(), partition, start, true, config).await
}

/// Stdin: NDJSON streamed line by line, unless its first line is not JSON on its own (a
/// pretty-printed body or page), in which case all of stdin is one document.
async fn read_stdin(ctx: &SourceContext, config: &ReplayConfig) -> Result<(), SourceError> {
    widen_stdin_pipe();
    let mut stdin = BlockingReader::new(Input::Stdin);
    let mut head = BytesMut::new();
    loop {
        let n = tokio::select! {
            r = stdin.read_buf(&mut head, READ_ROOM) => r.map_err(|e| fatal(&ctx.name, format!("read error on stdin: {e}")))?,
            _ = ctx.shutdown.cancelled() => return Ok(()),
        };
        if n == 0 || head.contains(&b'\n') {
            break;
        }
    }
    let first = head[..].split(|&c| c == b'\n').next().unwrap_or(&[]).trim_ascii();
    let whole = first.starts_with(&[0x1f, 0x8b])
        || (!first.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(first).is_err());
    let partition: Arc<str> = Arc::from("stdin");
    if whole {
        while stdin
            .read_buf(&mut head, READ_ROOM)
            .await
            .map_err(|e| fatal(&ctx.name, format!("read error on stdin: {e}")))?
            > 0
        {}
        let body = head.freeze();
        let mut b = BatchBuilder::new(ctx.name.clone(), partition, ctx.batch_max_events);
        b.push_unit(0, &body, decode_unit(config.format, body.clone()), None, &ctx.metrics);
        return ctx.send(b.take(&ctx.acks)).await;
    }
    read_stream(ctx, stdin, head, partition, 0, false, config).await
}

/// Bytes a pipe on stdin is asked to hold (Linux's default is 64 KiB), within the limit
/// for unprivileged processes (`/proc/sys/fs/pipe-max-size`, 1 MiB by default).
const STDIN_PIPE_BYTES: libc::c_int = 1 << 20;

/// When stdin is a pipe, ask for a larger one: a writer that is ahead of us then fills
/// reads of up to [`READ_ROOM`] instead of 64 KiB, and each read (a blocking-pool handoff
/// and a wakeup of the writer) carries more records (S1: 4 % less CPU per event,
/// BENCHMARKS.md). Best effort: a refusal changes nothing.
fn widen_stdin_pipe() {
    let limit = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse::<libc::c_int>().ok())
        .unwrap_or(STDIN_PIPE_BYTES);
    // SAFETY: fstat and fcntl on descriptor 0 with a valid out-pointer; neither keeps a
    // reference, and F_SETPIPE_SZ only resizes the pipe's buffer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(0, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO {
            let got = libc::fcntl(0, libc::F_SETPIPE_SZ, STDIN_PIPE_BYTES.min(limit));
            tracing::debug!(pipe_bytes = got, "stdin pipe size");
        }
    }
}

/// Room made in the read buffer before each read of a stream.
const READ_ROOM: usize = 256 * 1024;

/// Read NDJSON units from a stream starting at byte `offset`.
/// How long a partial batch waits for more input before it is sent.
const FLUSH_IDLE: Duration = Duration::from_millis(2);
/// The longest a batch collects events from a continuous stream before it is sent.
const BATCH_MAX_AGE: Duration = Duration::from_millis(5);
/// A read this large means the input is arriving in bulk.
const BULK_READ: usize = 32 * 1024;

async fn read_stream(
    ctx: &SourceContext,
    mut reader: BlockingReader,
    mut buf: BytesMut,
    partition: Arc<str>,
    mut offset: u64,
    checkpointed: bool,
    config: &ReplayConfig,
) -> Result<(), SourceError> {
    let mut b = BatchBuilder::new(ctx.name.clone(), partition.clone(), ctx.batch_max_events);
    let mut eof = false;
    let mut started: Option<Instant> = None;
    let mut bulk = false;
    // Stdin and followed files can go quiet with a partial batch read.
    let trickle = !checkpointed || config.follow;
    loop {
        // Cut every complete line out of the buffer.
        while let Some(nl) = memchr::memchr(b'\n', &buf) {
            if b.is_empty() {
                started = Some(Instant::now());
            }
            let line = buf.split_to(nl + 1).freeze();
            let unit_offset = offset;
            offset += line.len() as u64;
            push_line(ctx, &mut b, unit_offset, line, offset, checkpointed, config);
            if b.is_full() {
                ctx.send(b.take(&ctx.acks)).await?;
            }
        }
        if eof {
            if !buf.is_empty() && !config.follow {
                let line = buf.split().freeze();
                let unit_offset = offset;
                offset += line.len() as u64;
                push_line(ctx, &mut b, unit_offset, line, offset, checkpointed, config);
            }
            if !b.is_empty() || b.has_checkpoint() {
                ctx.send(b.take(&ctx.acks)).await?;
            }
            if !config.follow {
                return Ok(());
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            eof = false;
        }
        if ctx.shutdown.is_cancelled() {
            // Emit what is complete; the partial line is read again next time.
            if !b.is_empty() || b.has_checkpoint() {
                ctx.send(b.take(&ctx.acks)).await?;
            }
            return Ok(());
        }
        if buf.len() > config.max_unit_bytes {
            // One line longer than allowed: quarantine what we have of it and skip the rest.
            let line = buf.split().freeze();
            let unit_offset = offset;
            offset += line.len() as u64;
            let err = crate::decode::DecodeError::NotRecords(format!(
                "line longer than max_unit_bytes ({})",
                config.max_unit_bytes
            ));
            b.push_unit(
                unit_offset,
                &line,
                Err(err),
                checkpointed.then(|| offset.to_string()),
                &ctx.metrics,
            );
        }
        // A partial batch waits at most FLUSH_IDLE for more input (a slow pipe or a file
        // being appended to), then goes downstream: latency stays low at low rates.
        // A batch is sent at the latest BATCH_MAX_AGE after its first event was read.
        // Input arriving in bulk (a saturated pipe) fills whole batches: no age limit. A
        // regular file read to its end never waits: whole batches, no flushing at all.
        if trickle && !b.is_empty() {
            let left = if bulk {
                FLUSH_IDLE
            } else {
                BATCH_MAX_AGE.saturating_sub(started.map_or(Duration::ZERO, |t| t.elapsed()))
            };
            if !left.is_zero() {
                if let Ok(r) = tokio::time::timeout(FLUSH_IDLE.min(left), reader.read_buf(&mut buf, READ_ROOM)).await {
                    let n = r.map_err(|e| fatal(&ctx.name, format!("read error on {partition}: {e}")))?;
                    bulk = n >= BULK_READ;
                    if n == 0 {
                        eof = true;
                    }
                    continue;
                }
            }
            ctx.send(b.take(&ctx.acks)).await?;
        }
        // A quiet producer on stdin (or a FIFO) blocks the read: shutdown must not wait
        // for it (the loop's top sends what is complete and returns).
        let n = tokio::select! {
            r = reader.read_buf(&mut buf, READ_ROOM) => r.map_err(|e| fatal(&ctx.name, format!("read error on {partition}: {e}")))?,
            _ = ctx.shutdown.cancelled() => continue,
        };
        bulk = n >= BULK_READ;
        if n == 0 {
            eof = true;
            // Send a partly filled batch rather than wait for more input.
        } else if !b.is_empty() && memchr::memchr(b'\n', &buf).is_none() && b.len() >= ctx.batch_max_events / 2 {
            ctx.send(b.take(&ctx.acks)).await?;
        }
    }
}

fn push_line(
    ctx: &SourceContext,
    b: &mut BatchBuilder,
    unit_offset: u64,
    line: Bytes,
    end: u64,
    checkpointed: bool,
    config: &ReplayConfig,
) {
    let checkpoint = checkpointed.then(|| end.to_string());
    if line.trim_ascii().is_empty() {
        // Blank lines carry nothing, but the offset past them is safe to commit.
        if let Some(cp) = checkpoint {
            b.push_unit(unit_offset, &line, Ok(Default::default()), Some(cp), &ctx.metrics);
        }
        return;
    }
    let decoded = decode_unit(config.format, line.clone());
    b.push_unit(unit_offset, &line, decoded, checkpoint, &ctx.metrics);
}
