//! Secret hygiene: with known secrets in the environment and every log level on, no secret
//! appears in any output line of `validate` or `run`, even while the sinks fail and retry.

mod support;

use std::time::Duration;

use support::forwarder::Forwarder;
use support::*;

const HEC_TOKEN: &str = "hec-4c1f9a7e-secret-token-value";
const KAFKA_PASSWORD: &str = "kafka-pw-93b2e1d0-secret";
const GRAPH_SECRET: &str = "graph-client-secret-7f3a-secret";

#[test]
fn no_secret_in_any_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    write_ndjson(&input, 50);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut fwd = Forwarder::write(
        dir.path(),
        &format!(
            r#"
data_dir = "{data}"
[api]
address = "127.0.0.1:0"
[pipeline]
drain_timeout_secs = 1
[sources.files]
type = "replay"
paths = ["{input}"]
follow = true
[sources.graph]
type = "graph_incidents"
cloud = "custom"
login_host = "https://{closed}"
graph_host = "https://{closed}"
poll_interval_secs = 1
[[sources.graph.tenants]]
tenant_id = "d13c513a-42f8-4da1-97b1-165f0971b7c4"
client_id = "3f2d6c1e-8a4b-4c5d-9e6f-7a8b9c0d1e2f"
client_secret = "${{M365FWD_TEST_GRAPH_SECRET}}"
[sinks.splunk]
type = "splunk_hec"
endpoint = "http://{closed}"
token = "${{M365FWD_TEST_HEC_TOKEN}}"
retry_initial_ms = 50
retry_max_ms = 200
[sinks.kafka]
type = "kafka"
bootstrap_servers = "{closed}"
topic = "m365.{{kind}}"
sasl_password = "${{M365FWD_TEST_KAFKA_PASSWORD}}"
librdkafka_options = {{ "security.protocol" = "SASL_PLAINTEXT", "sasl.mechanism" = "PLAIN", "sasl.username" = "forwarder", "debug" = "security,broker" }}
"#,
            data = dir.path().join("data").display(),
            input = input.display(),
        ),
    )
    .env("M365FWD_TEST_HEC_TOKEN", HEC_TOKEN)
    .env("M365FWD_TEST_KAFKA_PASSWORD", KAFKA_PASSWORD)
    .env("M365FWD_TEST_GRAPH_SECRET", GRAPH_SECRET)
    .env("RUST_LOG", "trace")
    .capture_stdout();
    let out = fwd.command(&["validate"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut all = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);

    fwd.spawn();
    // Let the sinks fail and retry, and the Graph poller fail to get a token, for a while.
    std::thread::sleep(Duration::from_secs(4));
    fwd.terminate();
    let out = fwd.wait_with_output().unwrap();
    all += &String::from_utf8_lossy(&out.stdout);
    let run_log = std::fs::read_to_string(&fwd.log).unwrap();
    assert!(run_log.lines().count() > 20, "trace logging produced output: {run_log}");
    assert!(run_log.contains("send failed"), "the failing sinks were logged");
    all += &run_log;
    for secret in [HEC_TOKEN, KAFKA_PASSWORD, GRAPH_SECRET] {
        let hits: Vec<&str> = all.lines().filter(|l| l.contains(secret)).take(3).collect();
        assert!(hits.is_empty(), "secret found in output: {hits:?}");
    }
}
