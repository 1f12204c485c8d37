//! The load harness (benches/load) runs end to end at a tiny size: S1 through a real TCP
//! receiver and, when syslog-ng is installed, the peer; S2 to librdkafka's mock cluster;
//! S3 to the HEC emulator; S4 from the Event Hub emulator to the mock cluster; S5 Graph
//! incident pages through a real TCP receiver. Figures are not asserted here (benchmarks are not timed tests):
//! only that every event arrived and that the probes produced plausible readings.

#[allow(dead_code, unused_imports)]
#[path = "support/eventhub_emulator/mod.rs"]
mod eventhub_emulator;
#[allow(dead_code)]
#[path = "../benches/load/graph_pages.rs"]
mod graph_pages;
#[allow(dead_code)]
#[path = "support/hec_emulator.rs"]
mod hec_emulator;
#[allow(dead_code)]
#[path = "../benches/load/probe.rs"]
mod probe;
#[allow(dead_code)]
#[path = "../benches/load/records.rs"]
mod records;
#[allow(dead_code)]
#[path = "../benches/load/s4.rs"]
mod s4;
#[allow(dead_code)]
#[path = "../benches/load/scenarios.rs"]
mod scenarios;

use std::path::PathBuf;

fn opts(dir: &std::path::Path) -> scenarios::Opts {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    scenarios::Opts {
        forwarder: PathBuf::from(env!("CARGO_BIN_EXE_m365-forwarder")),
        samples: root.join("tests/data"),
        work: dir.to_path_buf(),
        events: 3000,
        mix: records::Mix::Small,
        core: None,
        latency_secs: 1,
        kafka_bootstrap: None,
    }
}

#[test]
fn generator_mixes_have_the_advertised_sizes_and_parse() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for (mix, lo, hi) in [(records::Mix::Small, 1200, 1800), (records::Mix::Large, 3000, 4200)] {
        let mut g = records::Generator::new(&root, mix);
        let avg = g.average_bytes();
        assert!((lo..=hi).contains(&avg), "{mix:?}: average {avg} bytes");
        let mut buf = Vec::new();
        for _ in 0..50 {
            g.write_next(&mut buf, &records::now_iso());
        }
        let lines: std::collections::HashSet<&[u8]> = buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        for l in &lines {
            let v: serde_json::Value = serde_json::from_slice(l).expect("generated record is JSON");
            assert!(v["category"].is_string() && v["time"].is_string(), "{v}");
        }
        assert_eq!(lines.len(), 50, "every record is distinct (id, address)");
    }
}

#[test]
fn s1_delivers_every_event_and_measures_latency() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let f = scenarios::s1_forwarder(&o);
    assert_eq!(f.events, 3000);
    assert!(f.events_per_sec > 0.0 && f.cpu_secs_per_million > 0.0, "{f:?}");
    assert!(f.peak_rss_mb >= f.idle_rss_mb && f.idle_rss_mb > 1.0, "{f:?}");
    let (p50, p99) = (f.p50_ms.expect("latency measured"), f.p99_ms.unwrap());
    assert!(p50 <= p99 && p99 < 60_000.0, "{f:?}");
}

#[test]
fn s1_peer_runs_when_syslog_ng_is_installed() {
    if std::process::Command::new("syslog-ng")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("syslog-ng not installed: peer run skipped");
        return;
    }
    let conf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/load/syslog-ng-s1.conf");
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.latency_secs = 0;
    let f = scenarios::s1_syslog_ng(&o, &conf);
    assert!(f.events_per_sec > 0.0, "{f:?}");
}

#[test]
fn s2_mock_cluster_and_s3_hec_deliver_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let f = scenarios::s2_forwarder(&o);
    assert!(f.events_per_sec > 0.0, "{f:?}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt.block_on(hec_emulator::HecEmulator::start(
        &[(scenarios::HEC_TOKEN, true)],
        hec_emulator::Script {
            count_only: true,
            ..Default::default()
        },
    ));
    let f = scenarios::s3_forwarder(&o, &emu.url());
    assert_eq!(emu.indexed_count(), 3000, "{f:?}");
}

#[test]
fn s4_event_hub_emulator_to_mock_cluster_delivers_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // s4_forwarder waits until the sink reports all 3000 events sent, or fails.
    let f = s4::s4_forwarder(&o, &rt);
    assert_eq!(f.events, 3000);
    assert!(f.events_per_sec > 0.0 && f.peak_rss_mb > 1.0, "{f:?}");
}

#[test]
fn graph_pages_hold_fifty_incidents_with_unique_ids() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut g = graph_pages::PageGenerator::new(&root);
    let avg = g.average_event_bytes();
    assert!((1000..4000).contains(&avg), "average {avg} bytes per event");
    let mut ids = std::collections::HashSet::new();
    for _ in 0..3 {
        let mut buf = Vec::new();
        let made = g.write_page(&mut buf, &records::now_iso());
        assert_eq!(buf.iter().filter(|b| **b == b'\n').count(), 1, "one page a line");
        let page: serde_json::Value = serde_json::from_slice(&buf).expect("a page is JSON");
        let incidents = page["value"].as_array().unwrap();
        assert_eq!(incidents.len(), graph_pages::PAGE_INCIDENTS);
        let mut events = 0;
        for inc in incidents {
            assert!(
                ids.insert(inc["id"].as_str().unwrap().to_string()),
                "incident id repeated"
            );
            events += 1;
            for a in inc["alerts"].as_array().unwrap() {
                assert_eq!(a["incidentId"], inc["id"]);
                assert!(ids.insert(a["id"].as_str().unwrap().to_string()), "alert id repeated");
                events += 1;
            }
        }
        assert_eq!(made, events);
    }
}

#[test]
fn s5_graph_pages_deliver_an_event_per_incident_and_alert() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let f = graph_pages::s5_forwarder(&o);
    // Whole pages: at least the events asked for, less than a page more.
    assert!((3000..3000 + 50 * 4).contains(&f.events), "{f:?}");
    assert!(f.events_per_sec > 0.0 && f.cpu_secs_per_million > 0.0, "{f:?}");
    let (p50, p99) = (f.p50_ms.expect("latency measured"), f.p99_ms.unwrap());
    assert!(p50 <= p99 && p99 < 60_000.0, "{f:?}");
}
