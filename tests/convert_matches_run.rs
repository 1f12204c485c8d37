//! `m365-forwarder convert --to ocsf` gives the same events as `m365-forwarder run` with a
//! replay source and an OCSF file sink on the same inputs: same events in the same order,
//! equal attribute by attribute, and the same records quarantined. The wall-clock attributes
//! (`metadata.processed_time`, and `time` of a record that has no time of its own, marked
//! `unmapped.time_source = "received"`) are checked to lie within each run instead.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{bin, data};

/// Every sample, Event Hub bodies and Graph pages mixed, plus the unrepairable placeholder.
fn inputs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in ["eventhub", "eventhub/malformed", "graph"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(data(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json" || e == "txt"))
            .collect();
        files.sort();
        v.extend(files);
    }
    v
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Parse OCSF lines, checking `metadata.processed_time` against `[start, end]` and removing it.
fn events(text: &str, start: i64, end: i64) -> Vec<Value> {
    text.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let pt = v["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("processed_time")
                .and_then(|t| t.as_i64())
                .expect("processed_time");
            assert!(
                (start..=end).contains(&pt),
                "processed_time {pt} outside [{start}, {end}]"
            );
            // A record without any time of its own (a Graph error envelope here) is stamped
            // with the time it was read, and says so.
            if v["unmapped"]["time_source"] == "received" {
                let t = v
                    .as_object_mut()
                    .unwrap()
                    .remove("time")
                    .and_then(|t| t.as_i64())
                    .unwrap();
                assert!((start..=end).contains(&t), "received time {t} outside [{start}, {end}]");
            }
            v
        })
        .collect()
}

/// Dead-letter records reduced to what identifies them: stage, reason and original bytes.
fn quarantined(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["stage"].as_str().unwrap_or_default().to_owned(),
                v["reason"].as_str().unwrap_or_default().to_owned(),
                v["original"].to_string(),
            )
        })
        .collect()
}

#[test]
fn convert_to_ocsf_gives_the_same_events_as_run() {
    let dir = tempfile::tempdir().unwrap();
    let files = inputs();
    assert!(files.len() > 15, "{files:?}");

    // run: replay source -> OCSF file sink.
    let out_file = dir.path().join("out.ocsf.ndjson");
    let run_dl = dir.path().join("run-dead-letter.ndjson");
    let paths: Vec<String> = files.iter().map(|p| format!("{:?}", p.to_str().unwrap())).collect();
    let config = format!(
        r#"data_dir = {data:?}
[api]
enabled = false
[dead_letter]
path = {dl:?}
# convert normalizes with one worker (input order, so cache-based user restoration is
# repeatable); run it the same way to compare like with like.
[pipeline]
normalize_workers = 1
[sources.input]
type = "replay"
format = "auto"
paths = [{paths}]
[sinks.file]
type = "file"
path = {out:?}
encoding = "ocsf"
"#,
        data = dir.path().join("data").to_str().unwrap(),
        dl = run_dl.to_str().unwrap(),
        paths = paths.join(", "),
        out = out_file.to_str().unwrap(),
    );
    let cfg = dir.path().join("forwarder.toml");
    std::fs::write(&cfg, config).unwrap();
    let start = now_ms();
    let mut child = Command::new(bin())
        .args(["run", "-c"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("run.log")).unwrap())
        .spawn()
        .unwrap();
    let done = support::wait_until(Duration::from_secs(60), || child.try_wait().unwrap().is_some());
    if !done {
        let _ = child.kill();
        panic!("run did not stop at the end of its inputs");
    }
    let status = child.wait().unwrap();
    let run_end = now_ms();
    assert!(
        status.success(),
        "run: {}",
        std::fs::read_to_string(dir.path().join("run.log")).unwrap()
    );
    let from_run = events(&std::fs::read_to_string(&out_file).unwrap(), start, run_end);

    // convert: same inputs, stdout.
    let conv_dl = dir.path().join("convert-dead-letter.ndjson");
    let start = now_ms();
    let out = Command::new(bin())
        .args(["convert", "--from", "auto", "--to", "ocsf", "--dead-letter"])
        .arg(&conv_dl)
        .args(&files)
        .output()
        .unwrap();
    let conv_end = now_ms();
    assert_eq!(out.status.code(), Some(3), "the placeholder blob is quarantined");
    let from_convert = events(&String::from_utf8(out.stdout).unwrap(), start, conv_end);

    assert!(from_run.len() >= 50, "{} events", from_run.len());
    assert_eq!(from_run.len(), from_convert.len(), "same number of events");
    for (i, (r, c)) in from_run.iter().zip(&from_convert).enumerate() {
        assert_eq!(
            r, c,
            "event {i} differs ({} / {})",
            r["metadata"]["uid"], c["metadata"]["uid"]
        );
    }
    let (q_run, q_conv) = (quarantined(&run_dl), quarantined(&conv_dl));
    assert_eq!(q_run.len(), 1, "{q_run:?}");
    assert_eq!(q_run, q_conv, "same records quarantined");
}
