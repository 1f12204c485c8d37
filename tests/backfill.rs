//! `m365-forwarder backfill` as a user runs it (the binary, a config file, a file sink)
//! against the Graph + login emulator: progress lines, the window filter, and resuming after
//! an interruption (a scripted Graph outage, and SIGKILL) without duplicates or loss.

#[path = "support/graph_emulator/mod.rs"]
mod graph_emulator;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use graph_emulator::{sample, Emulator, Fault};
use serde_json::{json, Value};

const TA: &str = "d13c513a-42f8-4da1-97b1-165f0971b7c4";
const SECRET_ENV: &str = "M365FWD_TEST_BACKFILL_SECRET";

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_m365-forwarder"))
}

fn at(hours: i64) -> String {
    let base = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap();
    (base + chrono::Duration::hours(hours))
        .to_utc()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// `n` incidents, one every 7 hours from 2026-11-01T03:00Z, each with one alert.
fn history(n: usize) -> Vec<Value> {
    let template = sample("incidents_page1.json")[0].clone();
    (0..n)
        .map(|i| {
            let t = at(3 + 7 * i as i64);
            let id = format!("{}", 5000 + i);
            let mut inc = template.clone();
            inc["id"] = json!(id);
            inc["lastUpdateDateTime"] = json!(t);
            inc["createdDateTime"] = json!(t);
            let mut alert = template["alerts"][0].clone();
            alert["id"] = json!(format!("da{id}"));
            alert["incidentId"] = json!(id);
            alert["lastUpdateDateTime"] = json!(t);
            inc["alerts"] = json!([alert]);
            inc
        })
        .collect()
}

fn write_config(emu: &Emulator, dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"data_dir = "{data}"
[api]
enabled = false
[dead_letter]
path = "{data}/dead-letter.ndjson"
[pipeline]
checkpoint_interval_ms = 50
drain_timeout_secs = 5

[sources.incidents]
type = "graph_incidents"
cloud = "custom"
login_host = "{base}"
graph_host = "{base}"
ca_file = "{ca}"
page_size = 2
max_retries = 2
retry_initial_ms = 20
retry_max_ms = 50
{extra}

[[sources.incidents.tenants]]
tenant_id = "{TA}"
client_id = "client-a"
client_secret = "${{{SECRET_ENV}}}"

[sources.files]
type = "replay"
embedded = "demo"

[sinks.siem]
type = "file"
path = "{out}"
encoding = "raw"
"#,
        data = dir.join("data").display(),
        base = emu.base,
        ca = emu.ca_file.display(),
        out = dir.join("out.ndjson").display(),
    );
    let p = dir.join("forwarder.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn command(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("backfill")
        .arg("--config")
        .arg(config)
        .args(args)
        .env(SECRET_ENV, "secret-a")
        .env("M365FWD_LOG_FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Run the binary off the test runtime's threads (the emulator lives on them).
async fn run(config: &Path, args: &[&str]) -> (Output, Duration) {
    let mut c = command(config, args);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap();
    (out, started.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Incidents and alerts in the sink's file, with how often each came.
fn delivered(dir: &Path) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let mut incidents = BTreeMap::new();
    let mut alerts = BTreeMap::new();
    let body = std::fs::read_to_string(dir.join("out.ndjson")).unwrap_or_default();
    for line in body.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let id = v["id"].as_str().unwrap_or("").to_string();
        if v.get("incidentId").is_some() {
            *alerts.entry(id).or_insert(0) += 1;
        } else if v.get("lastUpdateDateTime").is_some() {
            *incidents.entry(id).or_insert(0) += 1;
        }
    }
    (incidents, alerts)
}

/// Ids of the incidents last updated in `[since, until)`.
fn expected(all: &[Value], since: &str, until: &str) -> BTreeSet<String> {
    let (a, b) = (
        chrono::DateTime::parse_from_rfc3339(since).unwrap(),
        chrono::DateTime::parse_from_rfc3339(until).unwrap(),
    );
    all.iter()
        .filter(|i| {
            let t = chrono::DateTime::parse_from_rfc3339(i["lastUpdateDateTime"].as_str().unwrap()).unwrap();
            t >= a && t < b
        })
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

fn summary(stdout: &str) -> &str {
    stdout.lines().rev().find(|l| l.starts_with("backfill ")).unwrap_or("")
}

/// The window is read in chunks with `ge` and `lt`; only what is inside reaches the sink
/// (the demo replay source of the same config is left out); plain progress lines and a
/// summary line are printed; the live checkpoint is not created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reads_the_window_once_with_progress_lines() {
    let emu = Emulator::start().await;
    let all = history(40);
    emu.add_tenant(TA, "client-a", "secret-a", all.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), "requests_per_minute = 600\nburst = 1");
    let (out, took) = run(
        &config,
        &[
            "--since",
            "2026-11-02",
            "--until",
            "2026-11-08T00:00:00Z",
            "--progress",
            "lines",
            "--progress-interval",
            "0.2",
        ],
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    eprintln!("backfill took {took:?}\n{stdout}");
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);

    let want = expected(&all, "2026-11-02T00:00:00Z", "2026-11-08T00:00:00Z");
    assert!(want.len() > 15 && want.len() < all.len(), "the window cuts the history");
    let (incidents, alerts) = delivered(dir.path());
    assert_eq!(
        incidents.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "exactly the window"
    );
    assert!(incidents.values().all(|&n| n == 1), "each once: {incidents:?}");
    let want_alerts: BTreeSet<String> = want.iter().map(|id| format!("da{id}")).collect();
    assert_eq!(alerts.keys().cloned().collect::<BTreeSet<_>>(), want_alerts);
    assert!(alerts.values().all(|&n| n == 1));

    // Chunked queries with both bounds; the live source's first-poll filter is never sent.
    let reqs = emu.requests(TA);
    let filters: Vec<String> = reqs.iter().filter_map(|r| r.filter.clone()).collect();
    assert!(filters
        .iter()
        .any(|f| f == "lastUpdateDateTime ge 2026-11-02T00:00:00Z and lastUpdateDateTime lt 2026-11-03T00:00:00Z"));
    assert!(filters.iter().all(|f| f.contains(" lt ")), "{filters:?}");
    assert!(
        reqs.iter().filter(|r| r.query.contains("$skiptoken")).count() > 0,
        "pages"
    );

    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("backfill progress:")).collect();
    assert!(lines.len() >= 2, "progress lines every 0.2 s:\n{stderr}");
    for l in &lines {
        for field in [
            "pages=",
            "items=",
            "events=",
            "delivered:",
            "window=2026-11-02T00:00:00Z..2026-11-08T00:00:00Z",
            "at=",
            "rate=",
        ] {
            assert!(l.contains(field), "{field} in {l}");
        }
    }
    let s = summary(&stdout);
    assert!(s.starts_with("backfill complete:"), "{stdout}");
    assert!(s.contains("done=100.0%"), "{s}");
    assert!(s.contains(&format!("siem={}", want.len() * 2)), "{s}");

    // Progress lives in the backfill's own store, under a backfill key.
    let store = std::fs::read_to_string(dir.path().join("data/backfill/checkpoints.json")).unwrap();
    assert!(
        store.contains("backfill:incidents") && store.contains("\\\"complete\\\":true"),
        "{store}"
    );
    assert!(
        !dir.path().join("data/checkpoints.json").exists(),
        "the live store is untouched"
    );

    // Running it again: already complete, nothing sent again.
    let (again, _) = run(&config, &["--since", "2026-11-02", "--until", "2026-11-08T00:00:00Z"]).await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(delivered(dir.path()).0, incidents, "nothing sent twice");
    assert!(summary(&text(&again.stdout)).contains("events=0"));
}

/// A Graph outage in the middle (503 past max_retries): the run fails after committing what
/// the sink acknowledged; the same command then continues where it stopped.
/// The query's chunk bounds are whole seconds (`ge` / `lt`): with a start that has a
/// fraction of a second, an object in the fraction before a chunk's exact start is left out
/// of the chunk before by its `lt`, comes with the next chunk, and is kept there (it was
/// dropped as outside that chunk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_with_a_fractional_start_keeps_what_lies_just_before_a_chunk_boundary() {
    let emu = Emulator::start().await;
    let mut all = history(10);
    let edge = all[3]["id"].as_str().unwrap().to_owned();
    all[3]["lastUpdateDateTime"] = json!("2026-11-03T00:00:00.200Z");
    all[3]["alerts"][0]["lastUpdateDateTime"] = json!("2026-11-03T00:00:00.200Z");
    emu.add_tenant(TA, "client-a", "secret-a", all.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), "requests_per_minute = 600\nburst = 1");
    let (since, until) = ("2026-11-02T00:00:00.400Z", "2026-11-04T00:00:00Z");
    let (out, _) = run(
        &config,
        &[
            "--since",
            since,
            "--until",
            until,
            "--chunk-hours",
            "24",
            "--progress",
            "none",
        ],
    )
    .await;
    assert!(out.status.success(), "exit {:?}\n{}", out.status, text(&out.stderr));
    let want = expected(&all, since, until);
    assert!(want.contains(&edge));
    let (incidents, alerts) = delivered(dir.path());
    assert_eq!(
        incidents.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "exactly the window"
    );
    assert!(incidents.values().all(|&n| n == 1), "each once: {incidents:?}");
    assert!(alerts.contains_key(&format!("da{edge}")), "its alert too: {alerts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_resumes_after_a_graph_outage_without_duplicates_or_loss() {
    let emu = Emulator::start().await;
    let all = history(40);
    emu.add_tenant(TA, "client-a", "secret-a", all.clone());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), "requests_per_minute = 600\nburst = 1");
    let args = [
        "--since",
        "2026-11-02",
        "--until",
        "2026-11-10",
        "--chunk-hours",
        "48",
        "--progress",
        "lines",
        "--progress-interval",
        "0.2",
    ];
    // The outage starts with the 6th data request (in the middle of the second chunk).
    let state = emu.state.clone();
    let outage = tokio::spawn(async move {
        loop {
            {
                let mut st = state.lock().unwrap();
                if st.requests.len() >= 5 {
                    let t = st.tenants.get_mut(TA).unwrap();
                    for _ in 0..50 {
                        t.faults.push_back(Fault::ServerError(503));
                    }
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let (first, took1) = run(&config, &args).await;
    outage.await.unwrap();
    let (stdout1, stderr1) = (text(&first.stdout), text(&first.stderr));
    assert_eq!(first.status.code(), Some(1), "{stdout1}\n{stderr1}");
    assert!(summary(&stdout1).starts_with("backfill failed:"), "{stdout1}");
    assert!(stderr1.contains("run the same command again"), "{stderr1}");
    let (part1, _) = delivered(dir.path());
    let want = expected(&all, "2026-11-02T00:00:00Z", "2026-11-10T00:00:00Z");
    assert!(
        !part1.is_empty() && part1.len() < want.len(),
        "interrupted midway: {part1:?}"
    );

    emu.with_tenant(TA, |t| t.faults.clear());
    let (second, took2) = run(&config, &args).await;
    let (stdout2, stderr2) = (text(&second.stdout), text(&second.stderr));
    eprintln!("first run {took1:?}, second run {took2:?}\n{stdout1}{stdout2}");
    assert!(second.status.success(), "{stderr2}");
    let s = summary(&stdout2);
    assert!(
        s.starts_with("backfill complete:") && s.contains("resumed_at=2026-11-04T00:00:00Z"),
        "{s}"
    );

    let (incidents, alerts) = delivered(dir.path());
    assert_eq!(incidents.keys().cloned().collect::<BTreeSet<_>>(), want, "no loss");
    assert!(incidents.values().all(|&n| n == 1), "no duplicates: {incidents:?}");
    assert_eq!(alerts.len(), want.len());
    assert!(alerts.values().all(|&n| n == 1), "no duplicate alerts: {alerts:?}");
}

/// SIGKILL after the first pages were acknowledged and committed: a re-run sends nothing the
/// committed progress covers again, and everything else at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_resumes_after_sigkill() {
    let emu = Emulator::start().await;
    let all = history(40);
    emu.add_tenant(TA, "client-a", "secret-a", all.clone());
    let dir = tempfile::tempdir().unwrap();
    // 4 requests/s: slow enough to kill it midway.
    let config = write_config(&emu, dir.path(), "requests_per_minute = 240\nburst = 1");
    let args = ["--since", "2026-11-02", "--until", "2026-11-10", "--progress", "none"];
    let mut child = command(&config, &args).spawn().unwrap();
    let store = dir.path().join("data/backfill/checkpoints.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    let committed: Value = loop {
        assert!(Instant::now() < deadline, "no progress committed");
        if let Ok(body) = std::fs::read_to_string(&store) {
            let file: Value = serde_json::from_str(&body).unwrap();
            let v = file["checkpoints"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["partition"] == "backfill:incidents")
                .map(|c| serde_json::from_str::<Value>(c["value"].as_str().unwrap()).unwrap());
            if let Some(v) = v {
                if v["done"].as_str() >= Some("2026-11-04") {
                    // Killed at once: the progress read is the one on disk at the kill.
                    child.kill().unwrap();
                    let body = std::fs::read_to_string(&store).unwrap();
                    let file: Value = serde_json::from_str(&body).unwrap();
                    let c = file["checkpoints"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|c| c["partition"] == "backfill:incidents")
                        .unwrap()
                        .clone();
                    break serde_json::from_str(c["value"].as_str().unwrap()).unwrap();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    child.wait().unwrap();
    assert_eq!(committed["complete"], false, "killed before the end: {committed}");
    let done = committed["done"].as_str().unwrap().to_string();
    let mut covered = expected(&all, "2026-11-02T00:00:00Z", &done);
    covered.extend(committed["seen"]["items"].as_object().unwrap().keys().cloned());

    let (second, took) = run(&config, &args).await;
    eprintln!("second run {took:?}: {}", text(&second.stdout));
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(summary(&text(&second.stdout)).contains(&format!("resumed_at={}", &done[..19])));

    let want = expected(&all, "2026-11-02T00:00:00Z", "2026-11-10T00:00:00Z");
    let (incidents, _) = delivered(dir.path());
    assert_eq!(incidents.keys().cloned().collect::<BTreeSet<_>>(), want, "no loss");
    for id in &covered {
        assert_eq!(
            incidents[id], 1,
            "incident {id} was committed before the kill and sent again"
        );
    }
}

/// Usage errors exit 2 with the reason.
#[test]
fn backfill_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.toml");
    std::fs::write(
        &p,
        format!(
            "data_dir = \"{}\"\n[sources.files]\ntype = \"replay\"\nembedded = \"demo\"\n[sinks.out]\ntype = \"blackhole\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = command(&p, args).output().unwrap();
        (out.status.code(), text(&out.stderr))
    };
    let (code, err) = run(&["--since", "2026-11-02"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no Graph source"), "{err}");
    let (code, err) = run(&["--since", "yesterday-ish"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--since"), "{err}");
    let (code, err) = run(&["--since", "2026-11-02", "--until", "2026-11-01"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("empty"), "{err}");
    let (code, err) = run(&["--since", "2026-11-02", "--source", "nope"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("nope"), "{err}");
}

/// A server that ignores the upper bound of the window: the source still keeps to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_keeps_to_the_window_when_the_server_ignores_the_upper_bound() {
    let emu = Emulator::start().await;
    let all = history(40);
    emu.add_tenant(TA, "client-a", "secret-a", all.clone());
    emu.with_tenant(TA, |t| t.ignore_upper_bounds = true);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), "requests_per_minute = 6000\nburst = 10");
    let (out, _) = run(
        &config,
        &["--since", "2026-11-02", "--until", "2026-11-05", "--progress", "none"],
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want = expected(&all, "2026-11-02T00:00:00Z", "2026-11-05T00:00:00Z");
    let (incidents, alerts) = delivered(dir.path());
    assert_eq!(incidents.keys().cloned().collect::<BTreeSet<_>>(), want, "{stdout}");
    assert!(incidents.values().chain(alerts.values()).all(|&n| n == 1));
    assert_eq!(
        alerts.len(),
        want.len(),
        "alerts of incidents outside the window are left out too"
    );
    let s = summary(&stdout);
    let outside: u64 = s
        .split("outside_window=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(outside > 0, "the server sent objects past the bound: {s}");
}

/// On a terminal (a pseudo-terminal here) the progress is an indicatif bar, not lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_draws_a_progress_bar_on_a_terminal() {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let emu = Emulator::start().await;
    emu.add_tenant(TA, "client-a", "secret-a", history(40));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), "requests_per_minute = 600\nburst = 1");
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: 24,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two fresh descriptors; each is owned by exactly one File below.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    let (mut master, slave) = unsafe { (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave)) };
    let mut c = command(&config, &["--since", "2026-11-02", "--until", "2026-11-08"]);
    c.stderr(Stdio::from(slave)).env("TERM", "xterm");
    let status = tokio::task::spawn_blocking(move || {
        let mut child = c.spawn().unwrap();
        drop(c); // our copy of the terminal's slave side
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // Ends with EIO once the child closed the slave side.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            seen
        });
        let status = child.wait().unwrap();
        (status, reader.join().unwrap())
    })
    .await
    .unwrap();
    let (status, seen) = status;
    let screen = String::from_utf8_lossy(&seen);
    assert!(status.success(), "{screen}");
    assert!(
        screen.contains('%') && screen.contains("pages"),
        "a bar was drawn: {screen:?}"
    );
    assert!(
        screen.contains('\r') || screen.contains("\u{1b}["),
        "redrawn in place: {screen:?}"
    );
    assert!(!screen.contains("backfill progress:"), "no plain lines on a terminal");
    assert!(delivered(dir.path()).0.len() > 15);
}
