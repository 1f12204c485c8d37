//! S4: the Event Hub AMQP emulator (tests/support) → the forwarder's `eventhub` source →
//! normalize → Kafka (librdkafka's mock cluster, as S2). The hub is filled before the
//! forwarder starts (bodies of `BODY_RECORDS` records, `{"records":[...]}`, over
//! `PARTITIONS` partitions); throughput is measured from the first delivered event to the
//! last, read off the forwarder's `/metrics` (`component_sent_events_total` of the sink).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::eventhub_emulator::EventHubEmulator;
use crate::probe::{sample, RssWatch};
use crate::records::{now_iso, Generator};
use crate::scenarios::{Figure, Opts};

const PARTITIONS: usize = 2;
const BODY_RECORDS: usize = 50;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `m365fwd_component_sent_events_total` of sink `out`, or `None` while `/metrics` is down.
fn sent_events(port: u16) -> Option<u64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let total = text
        .lines()
        .filter(|l| l.starts_with("m365fwd_component_sent_events_total{") && l.contains("component=\"out\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    Some(total as u64)
}

pub fn s4_forwarder(opts: &Opts, rt: &tokio::runtime::Runtime) -> Figure {
    let emu = rt.block_on(EventHubEmulator::start("load", PARTITIONS));
    let mut gen = Generator::new(&opts.samples, opts.mix);
    let avg = gen.average_bytes();
    let time = now_iso();
    let (mut line, mut body) = (Vec::with_capacity(8192), Vec::with_capacity(BODY_RECORDS * 4096));
    let mut made = 0u64;
    let mut n = 0usize;
    while made < opts.events {
        body.clear();
        body.extend_from_slice(b"{\"records\":[");
        let mut k = 0;
        while k < BODY_RECORDS && made < opts.events {
            line.clear();
            gen.write_next(&mut line, &time);
            if k > 0 {
                body.push(b',');
            }
            body.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(&line));
            k += 1;
            made += 1;
        }
        body.extend_from_slice(b"]}");
        emu.enqueue(n % PARTITIONS, body.clone());
        n += 1;
    }

    let dir = opts.work.join("s4-forwarder");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let api = free_port();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[api]\naddress = \"127.0.0.1:{api}\"\n\
             [normalize]\nraw_data = \"drop\"\n\
             [sources.load]\ntype = \"eventhub\"\nconnection_string = \"{cs}\"\ncustom_endpoint = \"{ep}\"\n\
             start = \"earliest\"\n\n\
             [sinks.out]\ntype = \"kafka\"\nbootstrap_servers = \"127.0.0.1:9\"\ntopic = \"load\"\n\
             encoding = \"ocsf\"\ncompression = \"lz4\"\n\
             [sinks.out.librdkafka_options]\n\"test.mock.num.brokers\" = \"1\"\n",
            data = dir.join("data"),
            cs = emu.connection_string(),
            ep = emu.endpoint(),
        ),
    )
    .unwrap();
    let mut cmd = match opts.core {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c.to_string()).arg(&opts.forwarder);
            cmd
        }
        None => Command::new(&opts.forwarder),
    };
    let mut child = cmd
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the forwarder");
    let pid = child.id();
    let watch = RssWatch::start(pid);
    let deadline = Instant::now() + Duration::from_secs(600);
    // The first delivery starts the clock (connection set-up is not throughput).
    let (t0, first, cpu0) = loop {
        assert!(Instant::now() < deadline, "S4: nothing delivered");
        if let Some(k) = sent_events(api).filter(|&k| k > 0) {
            break (Instant::now(), k, sample(pid).map_or(0.0, |s| s.cpu_secs));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let idle = idle_rss_mb(pid);
    let (t1, cpu1) = loop {
        assert!(Instant::now() < deadline, "S4: not every event delivered in time");
        if sent_events(api).is_some_and(|k| k >= opts.events) {
            break (Instant::now(), sample(pid).map_or(0.0, |s| s.cpu_secs));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let status = child.wait().expect("wait for the forwarder");
    assert!(status.success(), "S4: the forwarder exited with {status}");
    let measured = (opts.events - first) as f64;
    let secs = (t1 - t0).as_secs_f64();
    let eps = measured / secs;
    Figure {
        scenario: "S4".into(),
        subject: "Event Hub emulator → m365-forwarder → mock cluster".into(),
        mix: opts.mix.label().into(),
        events: opts.events,
        avg_record_bytes: avg,
        secs,
        events_per_sec: eps,
        mib_per_sec: eps * avg as f64 / (1024.0 * 1024.0),
        cpu_secs_per_million: (cpu1 - cpu0) / measured * 1e6,
        idle_rss_mb: idle,
        peak_rss_mb: watch.peak_kb() as f64 / 1024.0,
        ..Figure::default()
    }
}

/// Resident memory when the first events arrive (connected, buffers still filling): the
/// hub is full before the start, so there is no idle moment to sample.
fn idle_rss_mb(pid: u32) -> f64 {
    sample(pid).map_or(0.0, |s| s.rss_kb as f64 / 1024.0)
}
