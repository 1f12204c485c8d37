//! Load scenarios: the forwarder (or the syslog-ng peer) as a child process, optionally
//! pinned to one core, fed by the generator and measured by the probes.
//! S1: records → normalize → CEF → TCP; S2: → Kafka (librdkafka mock cluster or a real
//! broker); S3: → Splunk HEC emulator (gzip, indexer acknowledgment). S4 is in `s4.rs`,
//! S5 (Graph pages) in `graph_pages.rs`.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::probe::{percentile_ms, sample, LineReceiver, RssWatch};
use crate::records::{now_iso, Generator, Mix};

/// The HEC token the forwarder is given (through the environment) in S3.
pub const HEC_TOKEN: &str = "6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f";

/// What a run is asked to do.
#[derive(Clone, Debug)]
pub struct Opts {
    pub forwarder: PathBuf,
    pub samples: PathBuf,
    pub work: PathBuf,
    pub events: u64,
    pub mix: Mix,
    /// `taskset -c CORE` for the process under test.
    pub core: Option<usize>,
    /// Seconds of paced input at half the saturated rate for the latency figures; 0 = skip.
    pub latency_secs: u64,
    pub kafka_bootstrap: Option<String>,
}

/// One line of the report.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Figure {
    pub scenario: String,
    pub subject: String,
    pub mix: String,
    pub events: u64,
    pub avg_record_bytes: usize,
    pub secs: f64,
    pub events_per_sec: f64,
    pub mib_per_sec: f64,
    pub cpu_secs_per_million: f64,
    pub idle_rss_mb: f64,
    pub peak_rss_mb: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub latency_rate: Option<f64>,
    /// Memory scenario: events inside the process when its input stalled, the input bytes
    /// they hold, and the resident memory at that moment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight_events: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight_payload_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled_rss_mb: Option<f64>,
}

fn pinned(opts: &Opts, program: &Path) -> Command {
    match opts.core {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c.to_string()).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Writes `n` records as fast as the consumer takes them.
fn feed(gen: &mut Generator, w: &mut impl Write, n: u64) {
    let mut buf = Vec::with_capacity(1 << 20);
    let time = now_iso();
    let mut sent = 0;
    while sent < n {
        buf.clear();
        while buf.len() < (1 << 20) - 8192 && sent < n {
            gen.write_next(&mut buf, &time);
            sent += 1;
        }
        w.write_all(&buf).expect("write to the process under test");
    }
    w.flush().ok();
}

/// Writes at `rate` events per second for `secs`, each unit when its events are due and
/// stamped with its send time; `write_unit` appends one unit (a record, a page) and says
/// how many events it holds. Returns the events written.
fn feed_paced(w: &mut impl Write, rate: f64, secs: u64, mut write_unit: impl FnMut(&mut Vec<u8>, &str) -> u64) -> u64 {
    let start = Instant::now();
    let mut sent = 0u64;
    let mut buf = Vec::with_capacity(1 << 16);
    while start.elapsed() < Duration::from_secs(secs) {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        if due > sent {
            buf.clear();
            let time = now_iso();
            while sent < due {
                sent += write_unit(&mut buf, &time);
            }
            w.write_all(&buf).expect("write to the process under test");
            w.flush().ok();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    sent
}

/// A syslog sink writing CEF lines (no syslog header, LF framing) over TCP to `port`;
/// `extra` adds members to `[sinks.out]`.
pub(crate) fn cef_tcp_sink(port: u16, extra: &str) -> String {
    format!(
        "[sinks.out]\ntype = \"syslog\"\naddress = \"127.0.0.1:{port}\"\nmode = \"tcp\"\nencoding = \"cef\"\n{extra}\
         [sinks.out.encoder.syslog]\nheader = \"none\"\nframing = \"lf\"\n"
    )
}

pub(crate) fn write_config(opts: &Opts, name: &str, sink: &str) -> PathBuf {
    write_config_as(opts, name, "eventhub", sink)
}

/// The forwarder's config: the replay source on stdin reading `format`, then `sink`.
pub(crate) fn write_config_as(opts: &Opts, name: &str, format: &str, sink: &str) -> PathBuf {
    let dir = opts.work.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "data_dir = {data:?}\n[api]\nenabled = false\n\
         [normalize]\nraw_data = \"drop\"\n\
         [sources.load]\ntype = \"replay\"\npaths = [\"-\"]\nformat = \"{format}\"\n\n{sink}\n",
        data = dir.join("data"),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) struct Forwarder {
    child: Child,
    pub(crate) stdin: Option<ChildStdin>,
}

impl Forwarder {
    pub(crate) fn start(opts: &Opts, config: &Path) -> Forwarder {
        let mut child = pinned(opts, &opts.forwarder)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .env("LOAD_HEC_TOKEN", HEC_TOKEN)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the forwarder");
        let stdin = child.stdin.take();
        std::thread::sleep(Duration::from_millis(500));
        Forwarder { child, stdin }
    }
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Closes the input and waits for the process to drain and exit.
    pub(crate) fn finish(mut self) -> Instant {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for the forwarder");
        assert!(status.success(), "forwarder exited with {status}");
        Instant::now()
    }
}

pub(crate) fn figure(scenario: &str, subject: &str, opts: &Opts, avg: usize, secs: f64, cpu: f64) -> Figure {
    let eps = opts.events as f64 / secs;
    Figure {
        scenario: scenario.into(),
        subject: subject.into(),
        mix: opts.mix.label().into(),
        events: opts.events,
        avg_record_bytes: avg,
        secs,
        events_per_sec: eps,
        mib_per_sec: eps * avg as f64 / (1024.0 * 1024.0),
        cpu_secs_per_million: cpu / opts.events as f64 * 1e6,
        ..Figure::default()
    }
}

/// S1 for the forwarder: NDJSON on stdin → normalize → CEF (no syslog header, LF) → TCP.
pub fn s1_forwarder(opts: &Opts) -> Figure {
    let rx = LineReceiver::start(0);
    let config = write_config(opts, "s1-forwarder", &cef_tcp_sink(rx.port, ""));
    let mut gen = Generator::new(&opts.samples, opts.mix);
    let avg = gen.average_bytes();
    let mut fwd = Forwarder::start(opts, &config);
    let idle = sample(fwd.pid()).unwrap_or_default();
    let watch = RssWatch::start(fwd.pid());
    let cpu0 = idle.cpu_secs;
    let t0 = Instant::now();
    let mut stdin = fwd.stdin.take().unwrap();
    feed(&mut gen, &mut stdin, opts.events);
    assert!(
        rx.wait_for(opts.events, Duration::from_secs(600)),
        "S1: {} of {} lines arrived",
        rx.lines(),
        opts.events
    );
    let secs = (rx.last().unwrap() - t0).as_secs_f64();
    let cpu = sample(fwd.pid()).unwrap_or_default().cpu_secs - cpu0;
    let mut f = figure("S1", "m365-forwarder", opts, avg, secs, cpu);
    f.idle_rss_mb = idle.rss_kb as f64 / 1024.0;
    latency_at_half_rate(opts, &mut f, &rx, &mut stdin, record(&mut gen));
    f.peak_rss_mb = watch.peak_kb() as f64 / 1024.0;
    fwd.stdin = Some(stdin);
    fwd.finish();
    f
}

/// p50 / p99 latency at half the saturated rate just measured in `f` (`--latency-secs` of
/// units from `write_unit` paced into `to`, timed from their send time to their arrival
/// at `rx`).
pub(crate) fn latency_at_half_rate(
    opts: &Opts,
    f: &mut Figure,
    rx: &LineReceiver,
    to: &mut impl Write,
    write_unit: impl FnMut(&mut Vec<u8>, &str) -> u64,
) {
    if opts.latency_secs == 0 {
        return;
    }
    let rate = f.events_per_sec / 2.0;
    rx.measure_latency(true);
    let before = rx.lines();
    let n = feed_paced(to, rate, opts.latency_secs, write_unit);
    rx.wait_for(before + n, Duration::from_secs(60));
    let mut l = rx.latencies_us();
    f.p50_ms = percentile_ms(&mut l, 0.5);
    f.p99_ms = percentile_ms(&mut l, 0.99);
    f.latency_rate = Some(rate);
}

/// One generated record as a paced unit.
fn record(gen: &mut Generator) -> impl FnMut(&mut Vec<u8>, &str) -> u64 + '_ {
    |buf, time| {
        gen.write_next(buf, time);
        1
    }
}

/// S1 for the peer: syslog-ng 3.38 with `shared/bench/syslog-ng-s1.conf` (TCP 5140 → 5141).
pub fn s1_syslog_ng(opts: &Opts, conf: &Path) -> Figure {
    let rx = LineReceiver::start(5141);
    let dir = opts.work.join("s1-syslog-ng");
    let (mut child, mut conn) = start_syslog_ng(opts, conf, &dir);
    // taskset execs syslog-ng: the child's pid is the daemon's.
    let pid = child.id();
    let mut gen = Generator::new(&opts.samples, opts.mix);
    let avg = gen.average_bytes();
    let idle = sample(pid).unwrap_or_default();
    let watch = RssWatch::start(pid);
    let t0 = Instant::now();
    feed(&mut gen, &mut conn, opts.events);
    let ok = rx.wait_for(opts.events, Duration::from_secs(600));
    let secs = (rx.last().unwrap_or_else(Instant::now) - t0).as_secs_f64();
    let cpu = sample(pid).unwrap_or_default().cpu_secs - idle.cpu_secs;
    assert!(ok, "peer S1: {} of {} lines arrived", rx.lines(), opts.events);
    let mut f = figure("S1", "syslog-ng 3.38", opts, avg, secs, cpu);
    f.idle_rss_mb = idle.rss_kb as f64 / 1024.0;
    latency_at_half_rate(opts, &mut f, &rx, &mut conn, record(&mut gen));
    f.peak_rss_mb = watch.peak_kb() as f64 / 1024.0;
    drop(conn);
    let _ = child.kill();
    let _ = child.wait();
    f
}

/// Runs the forwarder until stdin closes and every event is acknowledged by the sink:
/// the time to exit is the time to deliver all (S2, S3).
fn until_exit(opts: &Opts, scenario: &str, subject: &str, name: &str, sink: &str) -> Figure {
    let config = write_config(opts, name, sink);
    let mut gen = Generator::new(&opts.samples, opts.mix);
    let avg = gen.average_bytes();
    let mut fwd = Forwarder::start(opts, &config);
    let pid = fwd.pid();
    let idle = sample(pid).unwrap_or_default();
    let watch = RssWatch::start(pid);
    let t0 = Instant::now();
    let mut stdin = fwd.stdin.take().unwrap();
    feed(&mut gen, &mut stdin, opts.events);
    // The last sample before exit: close enough for CPU per million at these sizes.
    let cpu_probe = std::thread::spawn(move || {
        let mut last = 0.0;
        while let Some(s) = sample(pid) {
            last = s.cpu_secs;
            std::thread::sleep(Duration::from_millis(20));
        }
        last
    });
    fwd.stdin = Some(stdin);
    let end = fwd.finish();
    let cpu = cpu_probe.join().unwrap_or(0.0) - idle.cpu_secs;
    let secs = (end - t0).as_secs_f64();
    let mut f = figure(scenario, subject, opts, avg, secs, cpu);
    f.idle_rss_mb = idle.rss_kb as f64 / 1024.0;
    f.peak_rss_mb = watch.peak_kb() as f64 / 1024.0;
    f
}

/// S2: → Kafka, OCSF JSON values, lz4; the librdkafka mock cluster unless a broker is given.
pub fn s2_forwarder(opts: &Opts) -> Figure {
    let (bootstrap, extra, subject) = match &opts.kafka_bootstrap {
        Some(b) => (b.clone(), String::new(), "m365-forwarder → broker"),
        None => (
            "127.0.0.1:9".to_string(),
            "[sinks.out.librdkafka_options]\n\"test.mock.num.brokers\" = \"1\"\n".to_string(),
            "m365-forwarder → mock cluster",
        ),
    };
    let sink = format!(
        "[sinks.out]\ntype = \"kafka\"\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"load\"\n\
         encoding = \"ocsf\"\ncompression = \"lz4\"\n{extra}"
    );
    until_exit(opts, "S2", subject, "s2-forwarder", &sink)
}

/// S3: → a Splunk HEC endpoint (gzip batches, indexer acknowledgment) at `url`.
pub fn s3_forwarder(opts: &Opts, url: &str) -> Figure {
    let sink = format!(
        "[sinks.out]\ntype = \"splunk_hec\"\nendpoint = \"{url}\"\ntoken = \"${{LOAD_HEC_TOKEN}}\"\n\
         compression = \"gzip\"\nacknowledgements.poll_interval_ms = 200\n"
    );
    until_exit(opts, "S3", "m365-forwarder", "s3-forwarder", &sink)
}

/// Starts syslog-ng (pinned like the forwarder) with `conf` and connects to its TCP source.
fn start_syslog_ng(opts: &Opts, conf: &Path, dir: &Path) -> (Child, TcpStream) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = pinned(opts, Path::new("syslog-ng"));
    cmd.arg("-F")
        .arg("-f")
        .arg(conf)
        .arg("-R")
        .arg(dir.join("persist"))
        .arg("-p")
        .arg(dir.join("pid"))
        .arg("-c")
        .arg(dir.join("ctl"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().expect("start syslog-ng");
    let end = Instant::now() + Duration::from_secs(20);
    let conn = loop {
        match TcpStream::connect("127.0.0.1:5140") {
            Ok(c) => break c,
            Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("syslog-ng did not listen on 5140: {e}"),
        }
    };
    (child, conn)
}

/// The largest `written` counter of a destination whose stats line mentions `dest`.
fn syslog_ng_written(ctl: &Path, dest: &str) -> u64 {
    let out = Command::new("syslog-ng-ctl").arg("stats").arg("-c").arg(ctl).output();
    let Ok(out) = out else { return 0 };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(dest) && l.contains(";written;"))
        .filter_map(|l| l.rsplit(';').next()?.trim().parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// S2 for the peer: syslog-ng 3.38 json-parser → kafka-c on librdkafka's mock cluster; done
/// when its Kafka destination reports every message written.
pub fn s2_syslog_ng(opts: &Opts, conf: &Path) -> Figure {
    let dir = opts.work.join("s2-syslog-ng");
    let (mut child, mut conn) = start_syslog_ng(opts, conf, &dir);
    let pid = child.id();
    let mut gen = Generator::new(&opts.samples, opts.mix);
    let avg = gen.average_bytes();
    std::thread::sleep(Duration::from_millis(500));
    let idle = sample(pid).unwrap_or_default();
    let watch = RssWatch::start(pid);
    let t0 = Instant::now();
    feed(&mut gen, &mut conn, opts.events);
    let ctl = dir.join("ctl");
    let deadline = Instant::now() + Duration::from_secs(600);
    while syslog_ng_written(&ctl, "kafka") < opts.events {
        assert!(
            Instant::now() < deadline,
            "peer S2: {} written",
            syslog_ng_written(&ctl, "kafka")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = sample(pid).unwrap_or_default().cpu_secs - idle.cpu_secs;
    let mut f = figure("S2", "syslog-ng 3.38 → mock cluster", opts, avg, secs, cpu);
    f.idle_rss_mb = idle.rss_kb as f64 / 1024.0;
    f.peak_rss_mb = watch.peak_kb() as f64 / 1024.0;
    drop(conn);
    let _ = child.kill();
    let _ = child.wait();
    f
}
