//! Tests of the Kafka sink: topic templates, message keys, configuration errors, secrets.

use std::sync::Arc;

use super::*;
use crate::ack::Finalizer;
use crate::event::{EventKind, EventMeta, Normalized, Position};

fn event(kind: EventKind, category: &str, entity: Option<&str>) -> Event {
    let meta = EventMeta {
        tenant: Some(Arc::from("t1")),
        severity_id: 3,
        entity_key: entity.map(Arc::from),
        ..EventMeta::new(Arc::from("graph"), category, kind, Position::at(Arc::from("p"), 0, 0))
    };
    let mut e = Event::new(bytes::Bytes::from_static(b"{}"), meta, Finalizer::noop());
    e.normalized = Some(Arc::new(Normalized::from_value(
        2004,
        serde_json::json!({"metadata": {"uid": "u-1"}}),
    )));
    e
}

#[test]
fn topic_template_and_sanitizing() {
    let e = event(EventKind::Hunting, "AdvancedHunting-Device Events", None);
    assert_eq!(render_topic("m365.{kind}", &e), "m365.hunting");
    assert_eq!(
        render_topic("m365.{tenant}.{category}", &e),
        "m365.t1.AdvancedHunting-Device_Events"
    );
    assert_eq!(render_topic("ocsf-{class_uid}", &e), "ocsf-2004");
    // One `_` per character Kafka refuses (not per byte); at most 249 characters.
    assert_eq!(render_topic("sécurité {kind}/{unknown}x", &e), "s_curit__hunting_x");
    let long = render_topic(&format!("{}{{category}}", "a".repeat(240)), &e);
    assert_eq!(long, format!("{}AdvancedH", "a".repeat(240)));
}

#[test]
fn key_is_entity_then_uid() {
    assert_eq!(
        message_key(&event(EventKind::Alert, "GraphAlert", Some("3106"))).as_deref(),
        Some("t1:3106"),
        "scoped by tenant so one topic can carry many tenants"
    );
    assert_eq!(
        message_key(&event(EventKind::SignIn, "SignInLogs", None)).as_deref(),
        Some("u-1")
    );
}

fn issue(toml_text: &str) -> ConfigIssue {
    let v: toml::Value = toml::from_str(toml_text).unwrap();
    match factory("k", v, "sinks.k") {
        Err(i) => i,
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn config_errors_name_the_key() {
    assert_eq!(
        issue("bootstrap_servers = \"b:9092\"\ntopic = \"m365.{knd}\"").path,
        "sinks.k.topic"
    );
    assert_eq!(
        issue("bootstrap_servers = \"b:9092\"\ncompression = \"brotli\"").path,
        "sinks.k.compression"
    );
    assert_eq!(
        issue("bootstrap_servers = \"b:9092\"\nacks = \"1\"").path,
        "sinks.k.acks"
    );
    assert_eq!(
        issue("bootstrap_servers = \"b:9092\"\nencoding = \"cef\"").path,
        "sinks.k.encoding"
    );
    for key in [
        "acks",
        "request.required.acks",
        "enable.idempotence",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "delivery.report.only.error",
        "transactional.id",
    ] {
        assert_eq!(
            issue(&format!(
                "bootstrap_servers = \"b:9092\"\nlibrdkafka_options = {{ \"{key}\" = \"0\" }}"
            ))
            .path,
            format!("sinks.k.librdkafka_options.{key}"),
            "a property that would undo the delivery accounting"
        );
    }
    let ok: toml::Value =
        toml::from_str("bootstrap_servers = \"b:9092\"\nlibrdkafka_options = { \"security.protocol\" = \"SASL_SSL\" }")
            .unwrap();
    assert!(factory("k", ok, "sinks.k").is_ok());
}

#[test]
fn secrets_are_not_in_debug_output() {
    let v: toml::Value = toml::from_str("bootstrap_servers = \"b:9092\"\nsasl_password = \"hunter2\"").unwrap();
    let c: KafkaSinkConfig = typed(v, "sinks.k").unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
}

/// Messages in partition 0 of `topic` on the mock cluster (its high watermark).
fn written(servers: &str, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "count")
        .create()
        .unwrap();
    c.fetch_watermarks(topic, 0, std::time::Duration::from_secs(10))
        .unwrap()
        .1
}

/// A send that gives up part way (the broker leading one topic is down, three rounds in a
/// row) keeps what was delivered: the driver's retry of the same batch produces only the
/// rest, so the other topic's messages are written once, not again with the whole batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_partial_delivery_sends_only_the_rest() {
    let mock = rdkafka::mocking::MockCluster::new(2).unwrap();
    let servers = mock.bootstrap_servers();
    for (topic, leader) in [("up", 1), ("down", 2)] {
        mock.create_topic(topic, 1, 1).unwrap();
        mock.partition_leader(topic, 0, Some(leader)).unwrap();
    }
    let toml_text = format!(
        "bootstrap_servers = \"{servers}\"\ntopic = \"{{category}}\"\nencoding = \"raw\"\nmessage_timeout_ms = 300\n"
    );
    let config = factory("k", toml::from_str(&toml_text).unwrap(), "sinks.k").unwrap();
    let mut sink = config.build("k").unwrap();
    let batch: Vec<Event> = (0..10u64)
        .map(|i| {
            let mut e = event(EventKind::SignIn, if i % 2 == 0 { "up" } else { "down" }, None);
            e.meta.position = Position::at(Arc::from("p"), i, 0);
            e
        })
        .collect();
    mock.broker_down(2).unwrap();
    assert!(sink.send(&batch).await.is_err(), "the down topic's messages never went");
    assert_eq!(written(&servers, "up"), 5);
    mock.broker_up(2).unwrap();
    let report = sink.send(&batch).await.unwrap();
    assert!(report.rejected.is_empty());
    assert_eq!(written(&servers, "down"), 5);
    assert_eq!(written(&servers, "up"), 5, "the delivered half was not sent again");
}

/// A sink on `topic` of the mock cluster and ten raw events in one batch.
fn sink_and_batch(servers: &str, topic: &str) -> (Box<dyn Sink>, Vec<Event>) {
    let toml_text = format!(
        "bootstrap_servers = \"{servers}\"\ntopic = \"{topic}\"\nencoding = \"raw\"\nmessage_timeout_ms = 5000\n"
    );
    let config = factory("k", toml::from_str(&toml_text).unwrap(), "sinks.k").unwrap();
    let batch = (0..10u64)
        .map(|i| {
            let mut e = event(EventKind::SignIn, topic, None);
            e.meta.position = Position::at(Arc::from("p"), i, 0);
            e
        })
        .collect();
    (config.build("k").unwrap(), batch)
}

type MockCluster = rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

/// A mock cluster with topic `t` whose next `refusals` produce requests are refused as
/// too large, its bootstrap servers, a sink on `t` and ten events for it.
fn refusing_cluster(refusals: usize) -> (MockCluster, String, Box<dyn Sink>, Vec<Event>) {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    let servers = mock.bootstrap_servers();
    mock.create_topic("t", 1, 1).unwrap();
    let (sink, batch) = sink_and_batch(&servers, "t");
    let errors = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; refusals];
    mock.request_errors(RDKafkaApiKey::Produce, &errors);
    (mock, servers, sink, batch)
}

/// The broker refuses a produce request for good as too large (its `message.max.bytes`
/// bounds a record batch, not one message): the batch's messages go again one at a time,
/// and none is dead-lettered for a refusal that was about the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_as_too_large_is_sent_again_message_by_message() {
    let (_mock, servers, mut sink, batch) = refusing_cluster(1);
    let report = sink.send(&batch).await.unwrap();
    let refused: Vec<_> = report.rejected.iter().map(|r| (r.index, r.detail.clone())).collect();
    assert!(refused.is_empty(), "dead-lettered for the batch's refusal: {refused:?}");
    assert_eq!(written(&servers, "t"), 10);
}

/// Refused again when sent alone, each message is dead-lettered with the broker's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_refused_alone_is_dead_lettered_with_the_reason() {
    let (mock, servers, mut sink, batch) = refusing_cluster(40);
    let report = sink.send(&batch).await.unwrap();
    mock.clear_request_errors(rdkafka::types::RDKafkaApiKey::Produce);
    let mut refused: Vec<usize> = report.rejected.iter().map(|r| r.index).collect();
    refused.sort_unstable();
    assert_eq!(refused, (0..10).collect::<Vec<_>>());
    for r in &report.rejected {
        assert_eq!(r.reason, "kafka_rejected");
        assert!(r.detail.contains("too large"), "{}", r.detail);
    }
    assert_eq!(written(&servers, "t"), 0);
}
