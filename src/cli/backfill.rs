//! `backfill`: load the history of the configured Graph sources over a window through the
//! normal pipeline and sinks, resumably, with a progress bar on a terminal and plain
//! progress lines otherwise, and a final summary line on stdout.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use m365_forwarder::checkpoint::FileCheckpointStore;
use m365_forwarder::config::SourceEntry;
use m365_forwarder::pipeline::Pipeline;
use m365_forwarder::sources::graph::backfill::{Plan, Progress, Snapshot};
use m365_forwarder::sources::graph::state::{filter_time, now_us, parse_time, Micros};
use m365_forwarder::telemetry::Metrics;
use tokio_util::sync::CancellationToken;

/// Exit code when the run stopped (signal) before the window was complete.
pub const EXIT_INCOMPLETE: u8 = 4;

#[derive(clap::Args)]
pub struct BackfillArgs {
    /// The forwarder's config file (its Graph sources, sinks and data_dir are used).
    #[arg(short, long)]
    config: PathBuf,
    /// Start of the window (inclusive): `2026-11-01`, an RFC 3339 time, or `30d` / `12h` ago.
    #[arg(long)]
    since: String,
    /// End of the window (exclusive); default: the end stored by an unfinished run with the
    /// same --since, else now.
    #[arg(long)]
    until: Option<String>,
    /// Only these sources (repeatable); default: every Graph source of the config.
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    /// Length of one query window; progress is complete chunk by chunk.
    #[arg(long, default_value_t = 24.0)]
    chunk_hours: f64,
    /// Forget the stored progress of this backfill and read the window again.
    #[arg(long)]
    restart: bool,
    /// Serve /metrics, /health and /ready on this address while running (default: off,
    /// so a backfill can run next to the live forwarder).
    #[arg(long, value_name = "ADDRESS")]
    api: Option<std::net::SocketAddr>,
    /// Progress display: auto (a bar on a terminal, lines otherwise), bar, lines, none.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Seconds between plain progress lines.
    #[arg(long, default_value_t = 5.0)]
    progress_interval: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ProgressMode {
    Auto,
    Bar,
    Lines,
    None,
}

/// `2026-11-01`, `2026-11-01T12:00:00Z`, or `30d` / `12h` / `90m` before `now`.
pub fn parse_when(s: &str, now: Micros) -> Result<Micros, String> {
    let s = s.trim();
    if let Some(t) = parse_time(s) {
        return Ok(t);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let t = d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
        return Ok(t.timestamp_micros());
    }
    let unit = match s.chars().last() {
        Some('d') => 86_400,
        Some('h') => 3_600,
        Some('m') => 60,
        _ => 0,
    };
    if unit > 0 {
        if let Ok(n) = s[..s.len() - 1].parse::<u32>() {
            return Ok(now - n as i64 * unit * 1_000_000);
        }
    }
    Err(format!(
        "`{s}` is not a date (2026-11-01), an RFC 3339 time (2026-11-01T00:00:00Z) or an age (30d, 12h, 90m)"
    ))
}

fn usage(message: String) -> anyhow::Result<ExitCode> {
    eprintln!("error: {message}");
    Ok(ExitCode::from(super::EXIT_CONFIG))
}

pub async fn backfill(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let mut config = match super::load(&args.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let now = now_us();
    let since = match parse_when(&args.since, now) {
        Ok(t) => t,
        Err(e) => return usage(format!("--since: {e}")),
    };
    let until = match args.until.as_deref().map(|u| parse_when(u, now)).transpose() {
        Ok(u) => u,
        Err(e) => return usage(format!("--until: {e}")),
    };
    if until.unwrap_or(now) <= since {
        return usage(format!(
            "the window {}..{} is empty: --since must be before --until (and before now)",
            filter_time(since),
            filter_time(until.unwrap_or(now))
        ));
    }
    if !(args.chunk_hours.is_finite() && args.chunk_hours >= 1.0 / 60.0) {
        return usage("--chunk-hours must be at least one minute (1/60)".into());
    }
    for name in &args.sources {
        if !config.sources.iter().any(|s| &s.name == name) {
            return usage(format!(
                "--source {name}: {} has no source of that name",
                args.config.display()
            ));
        }
    }
    let progress = Arc::new(Progress::default());
    let plan = Arc::new(Plan {
        since,
        until,
        default_until: now,
        chunk: Duration::from_secs_f64(args.chunk_hours * 3600.0),
        restart: args.restart,
        progress: progress.clone(),
    });
    let mut chosen = Vec::new();
    for entry in std::mem::take(&mut config.sources) {
        let named = args.sources.contains(&entry.name);
        if !args.sources.is_empty() && !named {
            continue;
        }
        match entry.config.backfill(&plan) {
            Some(c) => chosen.push(SourceEntry {
                name: entry.name,
                config: c,
            }),
            None if named => {
                return usage(format!(
                    "--source {}: this source type has no history to backfill (Graph sources have)",
                    entry.name
                ))
            }
            None => tracing::info!(source = %entry.name, "not a Graph source; left out of the backfill"),
        }
    }
    if chosen.is_empty() {
        return usage(format!(
            "{} has no Graph source (graph_incidents, graph_risk_detections, graph_risky_users) to backfill",
            args.config.display()
        ));
    }
    let names: Vec<String> = chosen.iter().map(|s| s.name.clone()).collect();
    config.sources = chosen;
    config.api.enabled = args.api.is_some();
    if let Some(a) = args.api {
        config.api.address = a;
    }
    // Its own store: the live forwarder may run at the same time on the same data_dir, and
    // each process rewrites its whole checkpoint file.
    let store = Arc::new(FileCheckpointStore::open(&config.data_dir.join("backfill"))?);
    let pipeline = Pipeline::new(config).with_checkpoint_store(store);
    let metrics = pipeline.metrics();
    let mode = match args.progress {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
        ProgressMode::Auto => ProgressMode::Lines,
        m => m,
    };
    tracing::info!(sources = %names.join(","), since = %filter_time(since),
        until = %until.map_or_else(|| "(stored or now)".to_string(), filter_time), "backfill starting");
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    super::watch_signals(shutdown.clone());
    let stop_display = CancellationToken::new();
    let display = tokio::spawn(show_progress(
        mode,
        Duration::from_secs_f64(args.progress_interval.max(0.05)),
        progress.clone(),
        metrics.clone(),
        started,
        stop_display.clone(),
    ));
    let result = pipeline.run(shutdown.clone()).await;
    stop_display.cancel();
    let _ = display.await;
    let snap = progress.snapshot();
    let complete = !snap.units.is_empty() && snap.units.values().all(|u| u.complete);
    let outcome = match (&result, complete) {
        (Err(_), _) => "failed",
        (Ok(_), true) => "complete",
        (Ok(_), false) => "interrupted",
    };
    println!("{}", summary_line(outcome, &snap, &metrics, started.elapsed()));
    match result {
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("what the sinks acknowledged is kept; run the same command again to continue");
            Ok(ExitCode::FAILURE)
        }
        Ok(_) if !complete => {
            eprintln!("stopped before the window was complete; run the same command again to continue");
            Ok(ExitCode::from(EXIT_INCOMPLETE))
        }
        Ok(_) => Ok(ExitCode::SUCCESS),
    }
}

fn delivered(metrics: &Metrics) -> String {
    let s = metrics.summary();
    if s.delivered.is_empty() {
        return "0".into();
    }
    s.delivered
        .iter()
        .map(|(sink, n)| format!("{sink}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn window(snap: &Snapshot) -> String {
    match snap.window() {
        Some((a, b)) => format!("{}..{}", filter_time(a), filter_time(b)),
        None => "(starting)".into(),
    }
}

fn rate(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(0.001)
}

/// One plain progress line.
pub fn progress_line(snap: &Snapshot, metrics: &Metrics, elapsed: Duration) -> String {
    let at = snap.position().map_or_else(|| "end".to_string(), filter_time);
    format!(
        "backfill progress: pages={} items={} events={} delivered: {} window={} at={} done={:.1}% rate={:.1} items/s elapsed={:.1}s",
        snap.pages,
        snap.items,
        snap.events,
        delivered(metrics),
        window(snap),
        at,
        snap.fraction() * 100.0,
        rate(snap.items, elapsed),
        elapsed.as_secs_f64()
    )
}

fn summary_line(outcome: &str, snap: &Snapshot, metrics: &Metrics, elapsed: Duration) -> String {
    let s = metrics.summary();
    let resumed = snap.units.values().filter_map(|u| u.resumed_at).min();
    format!(
        "backfill {outcome}: window={} done={:.1}%{} pages={} items={} events={} outside_window={} delivered: {} quarantined={} elapsed={:.1}s rate={:.1} items/s",
        window(snap),
        snap.fraction() * 100.0,
        resumed.map_or_else(String::new, |t| format!(" resumed_at={}", filter_time(t))),
        snap.pages,
        snap.items,
        snap.events,
        snap.outside,
        delivered(metrics),
        s.quarantined_total(),
        elapsed.as_secs_f64(),
        rate(snap.items, elapsed),
    )
}

async fn show_progress(
    mode: ProgressMode,
    interval: Duration,
    progress: Arc<Progress>,
    metrics: Arc<Metrics>,
    started: Instant,
    stop: CancellationToken,
) {
    match mode {
        ProgressMode::Bar => {
            let bar = indicatif::ProgressBar::new(1000);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} [{wide_bar}] {percent:>3}% {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            loop {
                let snap = progress.snapshot();
                bar.set_position((snap.fraction() * 1000.0) as u64);
                bar.set_message(format!(
                    "{} pages, {} items, {} events, delivered {}, at {}",
                    snap.pages,
                    snap.items,
                    snap.events,
                    delivered(&metrics),
                    snap.position().map_or_else(|| "end".to_string(), filter_time)
                ));
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            bar.finish_and_clear();
        }
        ProgressMode::Lines => loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
            eprintln!("{}", progress_line(&progress.snapshot(), &metrics, started.elapsed()));
        },
        ProgressMode::None | ProgressMode::Auto => stop.cancelled().await,
    }
}
