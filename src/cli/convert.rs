//! `convert`: the `run` pipeline on files or stdin with a console sink, for SIEM engineers
//! testing mappings offline. Exit 3 when anything was quarantined.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use m365_forwarder::checkpoint::MemoryCheckpointStore;
use m365_forwarder::config::Config;
use m365_forwarder::pipeline::Pipeline;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// Input layout: Graph list responses (`value`) or Event Hub bodies (`records`).
    #[arg(long, value_parser = ["graph", "eventhub", "auto"])]
    from: String,
    /// Output encoding.
    #[arg(long, value_parser = ["ocsf", "raw", "cef", "leef", "hec"])]
    to: String,
    /// Where quarantine records go.
    #[arg(long, default_value = "m365-forwarder-quarantine.ndjson")]
    dead_letter: PathBuf,
    /// Input files; none or `-` reads stdin.
    files: Vec<PathBuf>,
}

/// The config `convert` runs: the same components `run` uses.
pub fn config_text(args: &ConvertArgs) -> String {
    let paths: Vec<toml::Value> = if args.files.is_empty() {
        vec![toml::Value::String("-".into())]
    } else {
        args.files
            .iter()
            .map(|p| toml::Value::String(p.to_string_lossy().into_owned()))
            .collect()
    };
    let mut source = toml::Table::new();
    source.insert("type".into(), "replay".into());
    source.insert("format".into(), args.from.clone().into());
    source.insert("paths".into(), toml::Value::Array(paths));
    let mut sink = toml::Table::new();
    sink.insert("type".into(), "console".into());
    sink.insert("encoding".into(), args.to.clone().into());
    let mut root = toml::Table::new();
    root.insert(
        "data_dir".into(),
        std::env::temp_dir().to_string_lossy().into_owned().into(),
    );
    root.insert("api".into(), toml::Value::Table(toml::toml! { enabled = false }));
    // One normalization worker: batches are normalized in input order, so user restoration
    // from earlier records (the cache) gives the same answer on every run of the same files.
    root.insert(
        "pipeline".into(),
        toml::Value::Table(toml::toml! { normalize_workers = 1 }),
    );
    let mut dl = toml::Table::new();
    dl.insert("path".into(), args.dead_letter.to_string_lossy().into_owned().into());
    root.insert("dead_letter".into(), dl.into());
    root.insert(
        "sources".into(),
        toml::Value::Table(toml::Table::from_iter([("input".to_string(), source.into())])),
    );
    root.insert(
        "sinks".into(),
        toml::Value::Table(toml::Table::from_iter([("stdout".to_string(), sink.into())])),
    );
    toml::to_string(&root).expect("config serializes")
}

pub async fn convert(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    // An offline filter: a reader that goes away (`convert ... | head`) ends it like any Unix
    // tool. Rust ignores SIGPIPE, and the console sink would retry the write forever.
    // SAFETY: `signal` only sets this process's disposition of SIGPIPE back to the default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let text = config_text(&args);
    let config = match Config::from_str(&text, std::path::Path::new("(convert arguments)")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
    };
    let shutdown = CancellationToken::new();
    super::watch_signals(shutdown.clone());
    let report = Pipeline::new(config)
        .with_checkpoint_store(Arc::new(MemoryCheckpointStore::default()))
        .run(shutdown)
        .await?;
    let q = report.summary.quarantined_total();
    if q > 0 {
        eprintln!(
            "{q} input unit(s) or event(s) quarantined ({}); records with reason and original bytes in {}",
            report
                .summary
                .quarantined
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            args.dead_letter.display()
        );
        return Ok(ExitCode::from(super::EXIT_QUARANTINED));
    }
    Ok(ExitCode::SUCCESS)
}
