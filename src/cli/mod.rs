//! Command line: `run`, `validate`, `convert`, `demo`, `backfill` and `healthcheck`, and the
//! exit codes they return.

mod backfill;
mod convert;
mod demo;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use m365_forwarder::config::Config;
use m365_forwarder::pipeline::{Pipeline, RunReport};
use m365_forwarder::telemetry::{init_logging, LogFormat};
use tokio_util::sync::CancellationToken;

/// Exit code for an invalid configuration.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code when input was quarantined (`convert`).
pub const EXIT_QUARANTINED: u8 = 3;

#[derive(Parser)]
#[command(
    name = "m365-forwarder",
    version,
    about = "Forwards Microsoft Defender XDR incidents and Entra ID signals to Kafka, syslog (CEF/LEEF) and Splunk HEC, normalized to OCSF"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "pretty",
        env = "M365FWD_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Log level or filter (RUST_LOG wins when set).
    #[arg(long, global = true, default_value = "info", env = "M365FWD_LOG_LEVEL")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline of a config file until its inputs end or SIGTERM/SIGINT.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a config file: exit 0, or exit 2 with every problem listed.
    Validate {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Convert Graph responses or Event Hub bodies offline, one encoded event per line on stdout.
    Convert(convert::ConvertArgs),
    /// Run the whole pipeline on bundled sample data and print a summary.
    Demo(demo::DemoArgs),
    /// Load the history of the config's Graph sources over a window through its sinks (resumable).
    Backfill(backfill::BackfillArgs),
    /// Probe a running forwarder's `/health` or `/ready` (for container HEALTHCHECK): exit 0 when it answers 200.
    Healthcheck {
        #[arg(long, default_value = "127.0.0.1:9598")]
        address: std::net::SocketAddr,
        #[arg(long, default_value = "/health")]
        path: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet_default = matches!(cli.command, Command::Convert(_) | Command::Validate { .. });
    let level = if quiet_default && cli.log_level == "info" {
        "warn"
    } else {
        cli.log_level.as_str()
    };
    init_logging(cli.log_format, level);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async move {
        match cli.command {
            Command::Run { config } => run(&config).await,
            Command::Validate { config } => validate(&config),
            Command::Convert(args) => convert::convert(args).await,
            Command::Demo(args) => demo::demo(args).await,
            Command::Backfill(args) => backfill::backfill(args).await,
            Command::Healthcheck { address, path } => healthcheck(address, &path).await,
        }
    });
    // A read still blocked on the blocking pool (stdin from a quiet producer) must not keep
    // the process from exiting once the run is over.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn validate(path: &Path) -> anyhow::Result<ExitCode> {
    match load(path) {
        Ok(c) => {
            println!(
                "{}: ok ({} source(s): {}; {} sink(s): {})",
                path.display(),
                c.sources.len(),
                c.sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
                c.sinks.len(),
                c.sinks.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

async fn healthcheck(address: std::net::SocketAddr, path: &str) -> anyhow::Result<ExitCode> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(address).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(std::time::Duration::from_secs(5), probe)
        .await
        .context("no answer within 5 s")?
        .with_context(|| format!("cannot reach {address}"))?;
    let text = String::from_utf8_lossy(&buf);
    let status_line = text.lines().next().unwrap_or("");
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{address}{path}: {status_line}");
        Ok(ExitCode::FAILURE)
    }
}

/// Cancel `token` on SIGTERM or SIGINT.
pub fn watch_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM");
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        token.cancel();
    });
}

async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    tracing::info!(config = %path.display(), "starting");
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone());
    let report = Pipeline::new(config).run(shutdown).await.context("pipeline failed")?;
    log_report(&report);
    Ok(ExitCode::SUCCESS)
}

fn log_report(r: &RunReport) {
    let s = &r.summary;
    tracing::info!(
        events_in = s.events_in,
        delivered = ?s.delivered,
        quarantined = s.quarantined_total(),
        unacknowledged_batches = r.unacknowledged_batches,
        "stopped"
    );
}
