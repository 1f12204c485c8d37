//! Shared test support: synthetic records, the binary under test, and output readers.
#![allow(dead_code)]

pub mod azurite;
pub mod eventhub_config;
pub mod eventhub_emulator;
pub mod eventhub_pipeline;
pub mod forwarder;
pub mod hec_emulator;
pub mod kafka_broker;
pub mod scaleout;
pub mod syslog_data;
pub mod syslog_ng;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_m365-forwarder"))
}

pub fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(path)
}

/// One realistic non-interactive sign-in record (about 1 KB) with a unique id.
pub fn signin_record(id: &str, minute: u32) -> String {
    format!(
        concat!(
            r#"{{"time":"2026-11-27T09:{:02}:05.1234567Z","resourceId":"/tenants/d13c513a-42f8-4da1-97b1-165f0971b7c4/providers/Microsoft.aadiam","#,
            r#""operationName":"Sign-in activity","operationVersion":"1.0","category":"NonInteractiveUserSignInLogs","#,
            r#""tenantId":"d13c513a-42f8-4da1-97b1-165f0971b7c4","resultType":"0","resultSignature":"None","durationMs":"0","#,
            r#""callerIpAddress":"198.51.100.23","correlationId":"5b1f0c2e-8d4a-4f61-9a7e-2c3d4e5f6a7b","identity":"Megan Bowen","Level":4,"location":"US","#,
            r#""properties":{{"id":"{}","createdDateTime":"2026-11-27T09:{:02}:05.1234567+00:00","userDisplayName":"Megan Bowen","#,
            r#""userPrincipalName":"megan.bowen@fabrikam.example","userId":"25abd89b-d67e-4d92-8a83-18174d645fa6","appId":"d3590ed6-52b3-4102-aeff-aad2292ab01c","#,
            r#""appDisplayName":"Microsoft Office","ipAddress":"198.51.100.23","status":{{"errorCode":0}},"clientAppUsed":"Mobile Apps and Desktop clients","#,
            r#""isInteractive":false,"riskLevelDuringSignIn":"none","riskState":"none","location":{{"city":"Seattle","state":"Washington","countryOrRegion":"US"}}}}}}"#
        ),
        minute % 60,
        id,
        minute % 60
    )
}

/// Write `n` sign-in records as NDJSON, ids `evt-0 .. evt-(n-1)`.
pub fn write_ndjson(path: &Path, n: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        writeln!(f, "{}", signin_record(&format!("evt-{i}"), i as u32)).unwrap();
    }
    f.flush().unwrap();
}

/// Pull `evt-N` ids out of output lines (OCSF or raw), counting each.
pub fn count_ids(path: &Path) -> HashMap<u64, u32> {
    let mut counts = HashMap::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        if let Some(i) = line.find("\"evt-") {
            let rest = &line[i + 5..];
            let end = rest.find('"').unwrap();
            *counts.entry(rest[..end].parse::<u64>().unwrap()).or_insert(0) += 1;
        }
    }
    counts
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A token that cancels itself after `after`, when given (a pipeline run that stops on its
/// own when not). Needs a Tokio runtime.
pub fn cancel_after(after: Option<Duration>) -> tokio_util::sync::CancellationToken {
    let stop = tokio_util::sync::CancellationToken::new();
    if let Some(after) = after {
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            s.cancel();
        });
    }
    stop
}

pub fn unsafe_kill(pid: u32, sig: i32) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// A TCP port free right now on 127.0.0.1 (for the forwarder's API).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics` of a forwarder on `port`; empty when it does not answer.
pub fn scrape(port: u16) -> String {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Sum of the samples of `name` (exact series name, any labels) in a scrape.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Resident memory of a process in KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Total size of the files under `dir` (recursively).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
