//! Load harness: end-to-end throughput, CPU per million events, latency at half load and
//! resident memory of the forwarder (and of the syslog-ng peer) in scenarios S1-S5.
//!
//! ```sh
//! cargo bench --bench load -- --scenarios s1,s1-peer,s2,s3 --events 200000 --core 1
//! ```
//! `benches/load.sh` runs the whole set that BENCHMARKS.md reports.

mod graph_pages;
mod memory;
mod probe;
mod records;
mod s4;
mod scenarios;

#[allow(dead_code, unused_imports)]
#[path = "../../tests/support/eventhub_emulator/mod.rs"]
mod eventhub_emulator;
#[allow(dead_code)]
#[path = "../../tests/support/hec_emulator.rs"]
mod hec_emulator;
#[path = "../../tests/support/kafka_broker.rs"]
mod kafka_broker;

use std::path::PathBuf;

use scenarios::{Figure, Opts};

fn usage() -> ! {
    eprintln!(
        "usage: cargo bench --bench load -- [--scenarios s1,s1-peer,s1-memory,s2,s2-peer,s2-broker,s3,s4,s5] [--events N] \
         [--mix 1.6k|3.6k] [--core N] [--latency-secs S] [--out FILE] [--forwarder BINARY]"
    );
    std::process::exit(2)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut opts = Opts {
        forwarder: PathBuf::from(env!("CARGO_BIN_EXE_m365-forwarder")),
        samples: root.join("tests/data"),
        work: root.join("target/load"),
        events: 200_000,
        mix: records::Mix::Small,
        core: None,
        latency_secs: 10,
        kafka_bootstrap: None,
    };
    let mut scenarios = vec!["s1".to_string(), "s1-peer".to_string()];
    let mut out = root.join("target/load/report.ndjson");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--scenarios" => scenarios = val().split(',').map(str::to_string).collect(),
            "--events" => opts.events = val().parse().unwrap_or_else(|_| usage()),
            "--mix" => opts.mix = records::Mix::parse(&val()).unwrap_or_else(|| usage()),
            "--core" => opts.core = Some(val().parse().unwrap_or_else(|_| usage())),
            "--latency-secs" => opts.latency_secs = val().parse().unwrap_or_else(|_| usage()),
            "--out" => out = PathBuf::from(val()),
            // Another build of the forwarder (A/B comparisons of two commits).
            "--forwarder" => opts.forwarder = PathBuf::from(val()),
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            _ => usage(),
        }
    }
    std::fs::create_dir_all(&opts.work).unwrap();
    let mut figures: Vec<Figure> = Vec::new();
    for s in &scenarios {
        eprintln!("== {s} ({} events, mix {})", opts.events, opts.mix.label());
        let f = match s.as_str() {
            "s1" => scenarios::s1_forwarder(&opts),
            // Resident memory with 100k events in flight (`--events` at least twice that).
            "s1-memory" => memory::s1_memory(&opts, 100_000),
            "s1-peer" => scenarios::s1_syslog_ng(&opts, &root.join("benches/load/syslog-ng-s1.conf")),
            "s2" => scenarios::s2_forwarder(&opts),
            "s2-peer" => scenarios::s2_syslog_ng(&opts, &root.join("benches/load/syslog-ng-s2.conf")),
            "s2-broker" => {
                let dir = tempfile::tempdir().unwrap();
                let broker = kafka_broker::Broker::start(dir.path());
                broker.create_topic("load", 1);
                let o = Opts {
                    kafka_bootstrap: Some(broker.bootstrap()),
                    ..opts.clone()
                };
                scenarios::s2_forwarder(&o)
            }
            "s3" => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap();
                let emu = rt.block_on(hec_emulator::HecEmulator::start(
                    &[(scenarios::HEC_TOKEN, true)],
                    hec_emulator::Script {
                        count_only: true,
                        ..Default::default()
                    },
                ));
                let f = scenarios::s3_forwarder(&opts, &emu.url());
                assert_eq!(emu.indexed_count(), opts.events, "S3: the emulator indexed every event");
                f
            }
            "s4" => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap();
                s4::s4_forwarder(&opts, &rt)
            }
            // Graph incident pages (an event per incident and per alert) → CEF → TCP.
            "s5" => graph_pages::s5_forwarder(&opts),
            _ => usage(),
        };
        eprintln!("{f:?}");
        figures.push(f);
    }
    print_table(&figures);
    for f in figures.iter().filter(|f| f.in_flight_events.is_some()) {
        println!(
            "{}: {} events in flight ({:.1} MB of records): resident {:.1} MB ({:.2}x the payload), idle {:.1} MB, peak {:.1} MB",
            f.scenario,
            f.in_flight_events.unwrap_or(0),
            f.in_flight_payload_mb.unwrap_or(0.0),
            f.stalled_rss_mb.unwrap_or(0.0),
            f.stalled_rss_mb.unwrap_or(0.0) / f.in_flight_payload_mb.unwrap_or(f64::NAN),
            f.idle_rss_mb,
            f.peak_rss_mb
        );
    }
    let mut lines = String::new();
    for f in &figures {
        lines.push_str(&serde_json::to_string(f).unwrap());
        lines.push('\n');
    }
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out)
        .and_then(|mut f| f.write_all(lines.as_bytes()))
        .expect("write the report");
    eprintln!("appended to {}", out.display());
}

fn print_table(figures: &[Figure]) {
    println!(
        "| Scenario | Subject | Mix | Events | Avg bytes | Events/s | MiB/s | CPU s / M events | Idle RSS MB | Peak RSS MB | p50 ms | p99 ms (at events/s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
    for f in figures {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.1} | {:.2} | {:.1} | {:.1} | {} | {} ({}) |",
            f.scenario,
            f.subject,
            f.mix,
            f.events,
            f.avg_record_bytes,
            f.events_per_sec,
            f.mib_per_sec,
            f.cpu_secs_per_million,
            f.idle_rss_mb,
            f.peak_rss_mb,
            opt(f.p50_ms),
            opt(f.p99_ms),
            f.latency_rate.map(|r| format!("{r:.0}")).unwrap_or_else(|| "-".into()),
        );
    }
}
