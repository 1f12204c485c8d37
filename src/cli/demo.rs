//! `demo`: the whole pipeline on the bundled sample data with file sinks, no cloud account;
//! ends by itself and prints a summary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use m365_forwarder::checkpoint::MemoryCheckpointStore;
use m365_forwarder::config::Config;
use m365_forwarder::pipeline::Pipeline;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Directory for the outputs (default: a new directory under the system temp dir).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The demo's config; `connectors/demo.toml` is the same with fixed paths.
pub fn config_text(out: &std::path::Path) -> String {
    let q = |p: PathBuf| toml::Value::String(p.to_string_lossy().into_owned()).to_string();
    format!(
        r#"data_dir = {data}

[api]
enabled = false

[dead_letter]
path = {dl}

[sources.samples]
type = "replay"
embedded = "demo"

[sinks.ocsf]
type = "file"
path = {ocsf}
encoding = "ocsf"

[sinks.cef_high]
type = "file"
path = {cef}
encoding = "cef"
filter.min_severity = "medium"

[sinks.raw_signins]
type = "file"
path = {raw}
encoding = "raw"
filter.kinds = ["signin"]
"#,
        data = q(out.join("data")),
        dl = q(out.join("dead-letter.ndjson")),
        ocsf = q(out.join("ocsf.ndjson")),
        cef = q(out.join("cef-medium-and-above.log")),
        raw = q(out.join("raw-signins.ndjson")),
    )
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let out = match args.out {
        Some(o) => o,
        None => std::env::temp_dir().join(format!("m365-forwarder-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&out)?;
    for f in [
        "ocsf.ndjson",
        "cef-medium-and-above.log",
        "raw-signins.ndjson",
        "dead-letter.ndjson",
    ] {
        let _ = std::fs::remove_file(out.join(f));
    }
    let config = Config::from_str(&config_text(&out), std::path::Path::new("(demo)"))?;
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    super::watch_signals(shutdown.clone());
    let report = Pipeline::new(config)
        .with_checkpoint_store(Arc::new(MemoryCheckpointStore::default()))
        .run(shutdown)
        .await?;
    let s = &report.summary;
    println!("m365-forwarder demo: bundled Graph pages and Event Hub bodies through the full pipeline");
    println!("  finished in {:.2} s", started.elapsed().as_secs_f64());
    println!("  events in:    {}", s.events_in);
    for (sink, n) in &s.delivered {
        println!("  delivered:    {n:>5} to {sink}");
    }
    println!("  quarantined:  {}", s.quarantined_total());
    for (why, n) in &s.quarantined {
        println!("                {n:>5} {why}");
    }
    let repaired: u64 = s.repaired.values().sum();
    println!("  repaired:     {repaired}");
    for (why, n) in &s.repaired {
        println!("                {n:>5} {why}");
    }
    println!("  per category:");
    for (cat, n) in &s.by_category {
        println!("                {n:>5} {cat}");
    }
    println!("  outputs in {}:", out.display());
    for f in [
        "ocsf.ndjson",
        "cef-medium-and-above.log",
        "raw-signins.ndjson",
        "dead-letter.ndjson",
    ] {
        let p = out.join(f);
        let lines = std::fs::read(&p)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0);
        println!("                {lines:>5} lines  {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
