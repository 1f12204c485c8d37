//! Runs that must end in failure, not in success with a checkpoint held behind them.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::Pipeline;
use crate::config::Config;

/// Sign-in records of the samples, one per line.
fn write_input(path: &Path) {
    let body = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/eventhub/signin_interactive.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let lines: Vec<String> = v["records"].as_array().unwrap().iter().map(|r| r.to_string()).collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// A finite input whose last batch a disk-buffered sink could not make durable (two
/// fsyncs fail: the batch stays unacknowledged for a restart to read again): the run
/// fails, naming the source, instead of ending as complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_no_sink_took_fails_a_finite_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    write_input(&input);
    let buffer = dir.path().join("data/buffers/s");
    std::fs::create_dir_all(&buffer).unwrap();
    std::fs::write(buffer.join("fail-syncs"), "2").unwrap();
    let text = format!(
        "data_dir = {:?}\n[api]\nenabled = false\n[pipeline]\ndrain_timeout_secs = 2\n\
         [sources.files]\ntype = \"replay\"\npaths = [{:?}]\n\
         [sinks.s]\ntype = \"file\"\npath = {:?}\nencoding = \"raw\"\nbuffer.type = \"disk\"\nbuffer.fsync = \"always\"\n",
        dir.path().join("data").display().to_string(),
        input.display().to_string(),
        dir.path().join("out.ndjson").display().to_string(),
    );
    let config = Config::from_str(&text, Path::new("t.toml")).unwrap();
    let run = Pipeline::new(config).run(CancellationToken::new());
    let err = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .expect("the run ends")
        .expect_err("the run fails");
    assert!(
        err.to_string().contains("source files") && err.to_string().contains("not delivered"),
        "{err}"
    );
}
