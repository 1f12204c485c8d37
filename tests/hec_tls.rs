//! The Splunk HEC sink over HTTPS against the HEC emulator served with a test CA's
//! certificate: the certificate is verified (by default, against the endpoint's host), a
//! certificate for another name or from another CA is refused with nothing sent and
//! nothing acknowledged, and `tls.server_name` verifies a collector reached by address
//! whose certificate carries its DNS name. The events held back by a refused collector all
//! arrive, once each, when the configuration is fixed.

mod support;

use std::path::Path;
use std::time::Duration;

use m365_forwarder::config::Config;
use m365_forwarder::pipeline::{Pipeline, RunReport};
use support::hec_emulator::tls_listener::TestPki;
use support::hec_emulator::{evt_id, HecEmulator, Script};

const TOKEN: &str = "0b6f2a44-hec-tls-token";
const EVENTS: usize = 300;
const CERT_NAME: &str = "hec.splunk.test";

/// Runs the replay source over `EVENTS` sign-ins into the HEC sink at `url` with the TLS
/// settings `tls` (TOML lines of `[sinks.splunk.tls]`); stops after `stop_after` if given.
async fn run(dir: &Path, url: &str, tls: &str, stop_after: Option<Duration>) -> RunReport {
    let input = dir.join("signins.ndjson");
    if !input.exists() {
        support::write_ndjson(&input, EVENTS);
    }
    let text = format!(
        "data_dir = {:?}\n[api]\nenabled = false\n[pipeline]\nbatch_max_events = 50\ncheckpoint_interval_ms = 50\n\
         drain_timeout_secs = 1\n[dead_letter]\npath = {:?}\n[sources.in]\ntype = \"replay\"\npaths = [{:?}]\n\
         [sinks.splunk]\ntype = \"splunk_hec\"\nendpoint = \"{url}\"\ntoken = \"{TOKEN}\"\nretry_initial_ms = 20\n\
         retry_max_ms = 200\nacknowledgements.poll_interval_ms = 50\n[sinks.splunk.tls]\n{tls}\n",
        dir.join("data").display().to_string(),
        dir.join("dead-letter.ndjson").display().to_string(),
        input.display().to_string(),
    );
    let config = Config::from_str(&text, &dir.join("test.toml")).unwrap();
    let stop = support::cancel_after(stop_after);
    tokio::time::timeout(Duration::from_secs(60), Pipeline::new(config).run(stop))
        .await
        .expect("pipeline finished in time")
        .unwrap()
}

fn ca_line(path: &Path) -> String {
    format!("ca_file = {:?}\n", path.display().to_string())
}

/// Every `evt-N` indexed exactly once.
fn assert_all_once(emu: &HecEmulator) {
    let mut ids: Vec<u64> = emu.indexed().iter().filter_map(evt_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..EVENTS as u64).collect::<Vec<_>>(), "each event indexed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_collector_verified_against_the_ca_file_and_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::make(dir.path(), &[CERT_NAME]);
    let emu = HecEmulator::start_tls(&[(TOKEN, true)], Script::default(), pki.server.clone()).await;
    assert!(emu.url().starts_with("https://127.0.0.1:"));
    let tls = format!("{}server_name = \"{CERT_NAME}\"\n", ca_line(&pki.ca));
    let report = run(dir.path(), &emu.url(), &tls, None).await;
    assert_eq!(report.unacknowledged_batches, 0);
    assert_all_once(&emu);
    assert_eq!(emu.handshake_failures(), 0);
    assert!(emu.ack_queries() > 0, "indexer acknowledgment over HTTPS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_or_from_another_ca_is_refused_and_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::make(dir.path(), &[CERT_NAME]);
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other = TestPki::make(&other_dir, &[CERT_NAME]);
    let emu = HecEmulator::start_tls(&[(TOKEN, true)], Script::default(), pki.server.clone()).await;

    // The right CA, but the certificate names hec.splunk.test, not 127.0.0.1.
    let report = run(dir.path(), &emu.url(), &ca_line(&pki.ca), Some(Duration::from_secs(2))).await;
    assert!(emu.handshake_failures() > 0, "the forwarder refused the certificate");
    assert!(emu.indexed_count() == 0 && emu.log().is_empty(), "nothing sent");
    assert!(report.unacknowledged_batches > 0, "nothing acknowledged");
    let refused = emu.handshake_failures();

    // The right name, but a CA that did not sign the certificate.
    let tls = format!("{}server_name = \"{CERT_NAME}\"\n", ca_line(&other.ca));
    let report = run(dir.path(), &emu.url(), &tls, Some(Duration::from_secs(2))).await;
    assert!(emu.handshake_failures() > refused, "refused again");
    assert!(emu.log().is_empty(), "nothing sent");
    assert!(report.unacknowledged_batches > 0);

    // Fixed: every event held back arrives, once.
    let tls = format!("{}server_name = \"{CERT_NAME}\"\n", ca_line(&pki.ca));
    let report = run(dir.path(), &emu.url(), &tls, None).await;
    assert_eq!(report.unacknowledged_batches, 0);
    assert_all_once(&emu);
}
