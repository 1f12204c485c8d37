//! Resident memory with a known number of events in flight: the S1 pipeline (records →
//! normalize → CEF → TCP) whose receiver accepts the connection but holds off reading, so
//! the forwarder fills its bounded buffers and then pushes back on its input. When the input
//! stalls, the events inside the process are those written to it minus those still in the
//! input pipe and in the two kernel socket buffers (read off `/proc/net/tcp`); resident
//! memory is sampled there, then the receiver reads everything and the count is checked.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::probe::{sample, RssWatch};
use crate::records::{now_iso, Generator};
use crate::scenarios::{cef_tcp_sink, figure, write_config, Figure, Forwarder, Opts};

/// Default pipe capacity on Linux: what the input pipe is taken to hold when its fill
/// cannot be read (the forwarder widens its stdin pipe to 1 MiB).
const PIPE_BYTES: u64 = 64 * 1024;

/// A receiver that reads nothing until released, then counts lines and bytes.
struct HeldReceiver {
    port: u16,
    release: Arc<AtomicBool>,
    lines: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl HeldReceiver {
    fn start() -> HeldReceiver {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind receiver");
        let port = listener.local_addr().unwrap().port();
        let release = Arc::new(AtomicBool::new(false));
        let lines = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (r, l, b) = (release.clone(), lines.clone(), bytes.clone());
        std::thread::spawn(move || {
            let Ok((conn, _)) = listener.accept() else { return };
            while !r.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut rd = BufReader::with_capacity(1 << 20, conn);
            let mut line = Vec::new();
            while let Ok(n) = rd.read_until(b'\n', &mut line) {
                if n == 0 {
                    break;
                }
                l.fetch_add(1, Ordering::Relaxed);
                b.fetch_add(n as u64, Ordering::Relaxed);
                line.clear();
            }
        });
        HeldReceiver {
            port,
            release,
            lines,
            bytes,
        }
    }
}

/// Bytes queued in the kernel for TCP connections to or from `port` on loopback (send
/// queue of the forwarder's socket plus receive queue of the receiver's).
fn queued_bytes(port: u16) -> u64 {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_of = |addr: &str| addr.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
    let mut total = 0;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[3] != "01" {
            continue; // only established connections
        }
        if port_of(f[1]) != Some(port) && port_of(f[2]) != Some(port) {
            continue;
        }
        let mut q = f[4].split(':').map(|h| u64::from_str_radix(h, 16).unwrap_or(0));
        total += q.next().unwrap_or(0) + q.next().unwrap_or(0);
    }
    total
}

/// `target` events in flight (the sink's buffer sized for them), resident memory against
/// the payload they hold.
pub fn s1_memory(opts: &Opts, target: u64) -> Figure {
    let rx = HeldReceiver::start();
    let batch = 500u64;
    let buffered = format!("buffer_max_batches = {}\n", (target / batch).max(1));
    let sink = format!(
        "{}[pipeline]\nbatch_max_events = {batch}\n",
        cef_tcp_sink(rx.port, &buffered)
    );
    let config = write_config(opts, "s1-memory", &sink);
    let mut gen = Generator::new(&opts.samples, opts.mix);
    let avg = gen.average_bytes();
    let mut fwd = Forwarder::start(opts, &config);
    let idle = sample(fwd.pid()).unwrap_or_default();
    let watch = RssWatch::start(fwd.pid());
    let total = opts.events.max(target * 2);
    let fed = Arc::new(AtomicU64::new(0));
    let mut stdin = fwd.stdin.take().unwrap();
    let pipe_fd = std::os::fd::AsRawFd::as_raw_fd(&stdin);
    let f2 = fed.clone();
    let feeder = std::thread::spawn(move || {
        let mut buf = Vec::with_capacity(1 << 16);
        let time = now_iso();
        for _ in 0..total {
            buf.clear();
            gen.write_next(&mut buf, &time);
            stdin.write_all(&buf).expect("feed the forwarder");
            f2.fetch_add(1, Ordering::Relaxed);
        }
        drop(stdin);
    });
    // Wait for the input to stall: nothing written for 3 s.
    let (mut last, mut since) = (0, Instant::now());
    let t0 = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = fed.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > Duration::from_secs(3) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "the input never stalled");
    }
    let stalled = sample(fwd.pid()).unwrap_or_default();
    let kernel = queued_bytes(rx.port);
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD on the write end of the input pipe, which the feeder (blocked in a
    // write) still holds open; it only reports the bytes in the pipe.
    let piped = match unsafe { libc::ioctl(pipe_fd, libc::FIONREAD, &mut queued) } {
        0 => queued as u64,
        _ => PIPE_BYTES,
    };
    rx.release.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while rx.lines.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = rx.lines.load(Ordering::Relaxed);
    assert_eq!(got, total, "memory: every event arrived after the release");
    let line_bytes = rx.bytes.load(Ordering::Relaxed) as f64 / got as f64;
    let in_kernel = (kernel as f64 / line_bytes) as u64;
    let in_pipe = piped / avg as u64;
    let in_flight = last.saturating_sub(in_kernel + in_pipe);
    let mut f = figure("S1 memory", "m365-forwarder", opts, avg, 0.0, 0.0);
    f.events = total;
    f.events_per_sec = 0.0;
    f.mib_per_sec = 0.0;
    f.idle_rss_mb = idle.rss_kb as f64 / 1024.0;
    f.peak_rss_mb = watch.peak_kb() as f64 / 1024.0;
    f.in_flight_events = Some(in_flight);
    f.in_flight_payload_mb = Some(in_flight as f64 * avg as f64 / (1024.0 * 1024.0));
    f.stalled_rss_mb = Some(stalled.rss_kb as f64 / 1024.0);
    eprintln!(
        "memory: {last} written when the input stalled, {in_kernel} in kernel socket buffers \
         ({kernel} bytes), ~{in_pipe} in the pipe: {in_flight} in the process; RSS then {:.1} MB, \
         payload {:.1} MB",
        stalled.rss_kb as f64 / 1024.0,
        in_flight as f64 * avg as f64 / (1024.0 * 1024.0)
    );
    fwd.finish();
    f
}
