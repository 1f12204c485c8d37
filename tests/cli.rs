//! The command line as a user runs it: validate, demo, convert, and config errors.

mod support;

use std::process::Command;

use support::{bin, data};

fn run(args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// `convert --from eventhub --to <to> --dead-letter <dl> <inputs>...`.
fn convert(to: &str, dl: &std::path::Path, inputs: &[&str]) -> std::process::Output {
    let mut args = vec![
        "convert",
        "--from",
        "eventhub",
        "--to",
        to,
        "--dead-letter",
        dl.to_str().unwrap(),
    ];
    args.extend_from_slice(inputs);
    run(&args)
}

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("forwarder.toml");
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = r#"
data_dir = "DATA"
[api]
address = "127.0.0.1:0"
[sources.files]
type = "replay"
paths = ["IN"]
[sinks.out]
type = "file"
path = "OUT"
inputs = ["files"]
filter.kinds = ["signin", "alert"]
"#;

#[test]
fn validate_accepts_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(dir.path(), GOOD);
    let out = run(&["validate", "-c", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn unknown_key_is_named_with_file_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(
        dir.path(),
        &GOOD.replace("path = \"OUT\"", "path = \"OUT\"\nfsycn = true"),
    );
    let out = run(&["validate", "-c", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(p.to_str().unwrap()), "names the file: {err}");
    assert!(err.contains("sinks.out"), "names the component: {err}");
    assert!(err.contains("fsycn"), "names the unknown key: {err}");
}

#[test]
fn missing_secret_variable_is_named_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace("path = \"OUT\"", "path = \"${M365FWD_TEST_SURELY_UNSET}\"");
    let p = write_config(dir.path(), &text);
    let out = run(&["run", "-c", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sinks.out.path"), "{err}");
    assert!(err.contains("M365FWD_TEST_SURELY_UNSET"), "{err}");
    assert!(err.contains(p.to_str().unwrap()), "{err}");
}

#[test]
fn bad_address_and_bad_filter_are_all_listed() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD
        .replace("127.0.0.1:0", "localhost-ish:99999")
        .replace("[\"signin\", \"alert\"]", "[\"signon\"]");
    let p = write_config(dir.path(), &text);
    let out = run(&["validate", "-c", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api.address"), "{err}");
    // The address problem stops typed parsing of the top level; fix it and the filter shows.
    let text = GOOD
        .replace("[\"signin\", \"alert\"]", "[\"signon\"]")
        .replace("inputs = [\"files\"]", "inputs = [\"filez\"]");
    let p = write_config(dir.path(), &text);
    let out = run(&["validate", "-c", p.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("sinks.out.filter.kinds[0]") && err.contains("signon"),
        "{err}"
    );
    assert!(err.contains("sinks.out.inputs") && err.contains("filez"), "{err}");
}

#[test]
fn busy_api_address_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::fs::write(dir.path().join("in.ndjson"), "").unwrap();
    let text = GOOD
        .replace("127.0.0.1:0", &addr)
        .replace("DATA", dir.path().join("data").to_str().unwrap())
        .replace("IN", dir.path().join("in.ndjson").to_str().unwrap())
        .replace("OUT", dir.path().join("out").to_str().unwrap());
    let p = write_config(dir.path(), &text);
    let out = run(&["run", "-c", p.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api.address") && err.contains(&addr), "{err}");
}

#[test]
fn demo_finishes_and_prints_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["demo", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "events in:",
        "delivered:",
        "quarantined:",
        "per category:",
        "SignInLogs",
        "GraphIncident",
    ] {
        assert!(text.contains(want), "summary lacks {want}: {text}");
    }
    // 5 incidents + 1 update, their 8 alerts, and every Event Hub record: nothing lost.
    let ocsf = support::lines(&dir.path().join("ocsf.ndjson"));
    let dead = support::lines(&dir.path().join("dead-letter.ndjson"));
    assert!(ocsf >= 50, "{ocsf} OCSF events");
    assert_eq!(dead, 1, "the placeholder blob is quarantined");
    let events_in: usize = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("events in:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(ocsf + dead, events_in, "every event read is delivered or quarantined");
}

#[test]
fn convert_ends_when_its_reader_goes_away() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    // Enough input that the output outgrows the pipe: 2,000 copies of the audit sample.
    let dir = tempfile::tempdir().unwrap();
    let body = std::fs::read_to_string(data("eventhub/auditlogs.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let line = serde_json::to_string(&v).unwrap();
    let input = dir.path().join("many.ndjson");
    std::fs::write(&input, format!("{line}\n").repeat(2000)).unwrap();
    let mut child = Command::new(bin())
        .args(["convert", "--from", "eventhub", "--to", "ocsf", "--dead-letter"])
        .arg(dir.path().join("q.ndjson"))
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read one line, like `| head -1`, then close the pipe.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"class_uid\""), "{first}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("convert kept running after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "ended by the closed pipe, not as a full run");
}

#[test]
fn convert_writes_one_line_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("q.ndjson");
    let (audit, signin) = (
        data("eventhub/auditlogs.json"),
        data("eventhub/signin_interactive.json"),
    );
    let out = convert("raw", &dl, &[audit.to_str().unwrap(), signin.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 5);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["category"] == "AuditLogs" || v["category"] == "SignInLogs");
    }
    assert!(!dl.exists(), "nothing quarantined");
}

#[test]
fn convert_reads_a_file_named_twice_once() {
    // A file listed again (or also through its directory) would otherwise be read again or
    // not, depending on whether its checkpoint was committed in between.
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    let file = inputs.join("audit.json");
    std::fs::copy(data("eventhub/auditlogs.json"), &file).unwrap();
    let dl = dir.path().join("q.ndjson");
    let (f, d) = (file.to_str().unwrap(), inputs.to_str().unwrap());
    let out = convert("raw", &dl, &[f, f, d]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let once = convert("raw", &dl, &[f]);
    let (twice, once) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&once.stdout),
    );
    assert!(once.lines().count() >= 3);
    assert_eq!(twice.lines().count(), once.lines().count(), "each event once");
    assert_eq!(twice, once);
}

#[test]
fn convert_of_a_malformed_body_exits_3_and_quarantines_it() {
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("q.ndjson");
    let blob = data("eventhub/malformed/placeholder_blob.txt");
    let out = convert("ocsf", &dl, &[blob.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("quarantined") && err.contains("not_json"), "{err}");
    let rec: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&dl).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(rec["reason"], "not_json");
    assert_eq!(rec["stage"], "decode");
    assert_eq!(rec["original"], "227 B blob data");
    assert!(rec["partition"].as_str().unwrap().ends_with("placeholder_blob.txt"));
}

/// Decoding reads a record's own members and skips its nested values by their brackets;
/// the normalizer's parse checks them. A line broken inside `properties` still ends in
/// quarantine as undecodable (stage `decode`, `not_json`, the line as it came, as before), a
/// raw control character there is still repaired, a valid record the normalizer refuses
/// stays a normalization failure, and the lines around them are converted.
#[test]
fn convert_quarantines_a_line_broken_inside_as_undecodable() {
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("q.ndjson");
    let body: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("eventhub/signin_interactive.json")).unwrap()).unwrap();
    let good = serde_json::to_string(&body["records"][0]).unwrap();
    let upn = body["records"][0]["properties"]["userPrincipalName"].as_str().unwrap();
    let mut untimed = body["records"][0].clone();
    untimed["time"] = "yesterday".into();
    untimed["properties"]["createdDateTime"] = "nope".into();
    let broken = good.replacen("\"properties\":{", "\"properties\":{\"x\":tru,", 1);
    let control = good.replacen(upn, &format!("{upn}\u{1}"), 1);
    let bad_time = serde_json::to_string(&untimed).unwrap();
    assert!(broken != good && control != good && bad_time != good);
    let input = dir.path().join("lines.ndjson");
    std::fs::write(&input, format!("{good}\n{broken}\r\n{control}\n{bad_time}\n{good}\n")).unwrap();
    let out = convert("ocsf", &dl, &[input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "the good lines and the repaired one");
    assert_eq!(lines[1]["user"]["name"], format!("{upn}\u{1}"), "repaired, not dropped");
    let q = std::fs::read_to_string(&dl).unwrap();
    let recs: Vec<serde_json::Value> = q.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(recs.len(), 2, "{q}");
    assert_eq!(recs[0]["stage"], "decode");
    assert_eq!(recs[0]["reason"], "not_json");
    assert_eq!(recs[0]["category"], "Unknown");
    assert_eq!(recs[0]["tenant"], serde_json::Value::Null);
    assert_eq!(recs[0]["original"], format!("{broken}\r\n"), "the line as it came");
    assert_eq!(recs[1]["stage"], "normalize");
    assert_eq!(recs[1]["reason"], "bad_time");
    assert_eq!(recs[1]["category"], "SignInLogs");
}

#[test]
fn convert_reads_stdin_and_repairs_single_quotes() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("q.ndjson");
    let mut child = Command::new(bin())
        .args([
            "convert",
            "--from",
            "eventhub",
            "--to",
            "raw",
            "--dead-letter",
            dl.to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let body = std::fs::read(data("eventhub/malformed/single_quoted_properties.json")).unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["properties"]["userPrincipalName"], "megan.bowen@fabrikam.example");
}

#[test]
fn every_connector_preset_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        n += 1;
        let out = run(&["validate", "-c", p.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(n >= 2, "presets found: {n}");
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let out = run(&["healthcheck", "--address", &addr]);
    assert!(!out.status.success());
}

#[test]
fn convert_reads_a_pretty_printed_graph_page_from_stdin() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("q.ndjson");
    let mut child = Command::new(bin())
        .args([
            "convert",
            "--from",
            "graph",
            "--to",
            "raw",
            "--dead-letter",
            dl.to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let body = std::fs::read(data("graph/incidents_page2.json")).unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    // Page 2: incidents 3109 (two alerts) and 3110 (no alerts).
    assert_eq!(text.lines().count(), 4, "{text}");
}

#[test]
fn convert_widens_a_stdin_pipe_and_reads_every_line() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let body = std::fs::read_to_string(data("eventhub/auditlogs.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let line = format!("{}\n", serde_json::to_string(&v["records"][0]).unwrap());
    let mut child = Command::new(bin())
        .args(["convert", "--from", "eventhub", "--to", "cef", "--dead-letter"])
        .arg(dir.path().join("q.ndjson"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let default_size = unsafe { libc::fcntl(stdin.as_raw_fd(), libc::F_GETPIPE_SZ) };
    // Once the first event is out, the forwarder has set its stdin up.
    stdin.write_all(line.as_bytes()).unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("CEF:0|Microsoft|"), "{first}");
    let size = unsafe { libc::fcntl(stdin.as_raw_fd(), libc::F_GETPIPE_SZ) };
    let limit: i32 =
        std::fs::read_to_string("/proc/sys/fs/pipe-max-size").map_or(1 << 20, |s| s.trim().parse().unwrap());
    assert!(
        size >= (1 << 20).min(limit),
        "stdin pipe {size} bytes (was {default_size}, limit {limit})"
    );
    // More than the pipe holds, written while the forwarder reads: every line comes out.
    let writer = std::thread::spawn(move || {
        for _ in 0..3000 {
            stdin.write_all(line.as_bytes()).unwrap();
        }
    });
    let rest = out
        .lines()
        .map(Result::unwrap)
        .filter(|l| l.starts_with("CEF:0|"))
        .count();
    writer.join().unwrap();
    assert_eq!(rest, 3000);
    assert!(child.wait().unwrap().success());
}

/// `run` reading stdin from a producer that is alive but quiet: SIGTERM stops it at once
/// (the read blocked on the pipe does not hold the exit), after what came was delivered.
#[test]
fn sigterm_stops_a_run_waiting_on_a_quiet_stdin() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[api]\nenabled = false\n[sources.in]\ntype = \"replay\"\npaths = [\"-\"]\n\
             [sinks.out]\ntype = \"file\"\npath = {:?}\nencoding = \"raw\"\n",
            dir.path().join("data").display().to_string(),
            out.display().to_string()
        ),
    )
    .unwrap();
    let body = std::fs::read_to_string(data("eventhub/auditlogs.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let line = format!("{}\n", serde_json::to_string(&v["records"][0]).unwrap());
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(line.as_bytes()).unwrap();
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&out).map_or(0, |t| t.lines().count()) < 1 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the line was delivered"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stopped = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if stopped.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    drop(stdin);
    let status = status.expect("stopped within 10 s of SIGTERM while stdin stayed open");
    assert!(status.success(), "{status:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 1);
}
