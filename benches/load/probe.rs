//! Measuring instruments of the load harness: a TCP line receiver with latency from the
//! CEF `rt=` field, CPU time and resident memory of a process from /proc, percentiles.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// CPU seconds (user + system) and resident memory of a running process.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    pub cpu_secs: f64,
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcSample {
        cpu_secs: (utime + stime) / tck,
        rss_kb: kb("VmRSS:"),
        hwm_kb: kb("VmHWM:"),
    })
}

/// Samples a process every 50 ms and keeps the largest resident size seen.
pub struct RssWatch {
    peak_kb: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl RssWatch {
    pub fn start(pid: u32) -> RssWatch {
        let peak_kb = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, s) = (peak_kb.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match sample(pid) {
                    Some(x) => {
                        p.fetch_max(x.rss_kb.max(x.hwm_kb), Ordering::Relaxed);
                    }
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssWatch { peak_kb, stop }
    }
    pub fn peak_kb(&self) -> u64 {
        self.peak_kb.load(Ordering::Relaxed)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Counts newline-terminated messages on every accepted connection and records the
/// latency of each message that carries `rt=` (epoch ms or an ISO 8601 time).
pub struct LineReceiver {
    pub port: u16,
    state: Arc<RecvState>,
}

#[derive(Default)]
struct RecvState {
    lines: AtomicU64,
    last: Mutex<Option<Instant>>,
    latencies_us: Mutex<Vec<u32>>,
    measure: std::sync::atomic::AtomicBool,
}

impl LineReceiver {
    pub fn start(port: u16) -> LineReceiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind receiver");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(RecvState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let st = st.clone();
                std::thread::spawn(move || read_lines(conn, &st));
            }
        });
        LineReceiver { port, state }
    }

    pub fn lines(&self) -> u64 {
        self.state.lines.load(Ordering::Relaxed)
    }

    /// When the last line arrived.
    pub fn last(&self) -> Option<Instant> {
        *self.state.last.lock().unwrap()
    }

    /// Start (or stop) recording latencies; clears what was recorded.
    pub fn measure_latency(&self, on: bool) {
        self.state.latencies_us.lock().unwrap().clear();
        self.state.measure.store(on, Ordering::Relaxed);
    }

    /// Latencies in arrival order; with `LOAD_LATENCY_DUMP=path` also written there, one
    /// per line (to see when a tail happens).
    pub fn latencies_us(&self) -> Vec<u32> {
        let l = self.state.latencies_us.lock().unwrap().clone();
        if let Ok(path) = std::env::var("LOAD_LATENCY_DUMP") {
            let text: String = l.iter().map(|v| format!("{v}\n")).collect();
            if let Err(e) = std::fs::write(&path, text) {
                eprintln!("LOAD_LATENCY_DUMP {path}: {e}");
            }
        }
        l
    }

    /// Waits until `n` lines arrived or `timeout` passed; true when they all did.
    pub fn wait_for(&self, n: u64, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while self.lines() < n {
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

fn read_lines(conn: TcpStream, st: &RecvState) {
    let mut r = BufReader::with_capacity(1 << 20, conn);
    let mut line = Vec::with_capacity(8192);
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if st.measure.load(Ordering::Relaxed) {
                    if let Some(sent_us) = rt_micros(&line) {
                        let now = now_micros();
                        let lat = now.saturating_sub(sent_us).min(u32::MAX as u64) as u32;
                        st.latencies_us.lock().unwrap().push(lat);
                    }
                }
                st.lines.fetch_add(1, Ordering::Relaxed);
                *st.last.lock().unwrap() = Some(Instant::now());
            }
        }
    }
}

pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// The `rt=` value of a CEF line in microseconds since the epoch.
fn rt_micros(line: &[u8]) -> Option<u64> {
    let at = line.windows(3).position(|w| w == b"rt=")? + 3;
    let rest = &line[at..];
    let end = rest
        .iter()
        .position(|b| *b == b' ' || *b == b'\n')
        .unwrap_or(rest.len());
    let v = std::str::from_utf8(&rest[..end]).ok()?;
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<u64>().ok().map(|ms| ms * 1000);
    }
    let t = chrono::DateTime::parse_from_rfc3339(v).ok()?;
    Some(t.timestamp_micros() as u64)
}

/// The value at quantile `q` (0..=1) of unsorted samples, in milliseconds.
pub fn percentile_ms(samples: &mut [u32], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    Some(samples[i] as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rt_in_both_forms() {
        assert_eq!(
            super::rt_micros(b"CEF:0|a|b|1|x|y|5|rt=1795729622551 src=1\n"),
            Some(1795729622551000)
        );
        assert_eq!(
            super::rt_micros(b"CEF:0|a|b|1|x|y|5|rt=2026-11-29T01:00:00.0000000Z suser=a\n"),
            Some(1_795_914_000_000_000)
        );
    }
}
