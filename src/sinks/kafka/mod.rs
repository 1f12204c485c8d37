//! Kafka sink (rdkafka): idempotent producer with `acks=all`, a topic template per event
//! kind or category, the stable entity id as key, headers, compression, every librdkafka
//! setting passed through, and delivery reports driving acknowledgments.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use serde::Deserialize;

use super::{BatchLimits, Rejection, SendReport, Sink, SinkConfig, SinkError};
use crate::config::{typed, ConfigIssue, Secret};
use crate::encode::numfmt::int_bytes;
use crate::encode::{self, Encoder, EncoderOptions, Format};
use crate::event::Event;

mod delivery;
use delivery::{is_permanent, refused_for_good, KafkaProducer, Reports};

/// `[sinks.NAME] type = "kafka"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// Topic template: `{kind}`, `{category}`, `{tenant}`, `{source}`, `{class_uid}`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Payload: `ocsf` (default) or `raw`.
    #[serde(default = "default_encoding")]
    pub encoding: Format,
    /// `none`, `gzip`, `snappy`, `lz4` (default) or `zstd`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// `all` (default), `1` or `0`.
    #[serde(default = "default_acks")]
    pub acks: String,
    /// Idempotent producer (default on; needs `acks = "all"`).
    #[serde(default = "yes")]
    pub idempotence: bool,
    /// Add headers: tenant, category, kind, class_uid, change_type, source.
    #[serde(default = "yes")]
    pub headers: bool,
    /// How long librdkafka retries one message before reporting it failed (then we retry it).
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: u64,
    /// Any librdkafka property (`security.protocol`, `ssl.ca.location`, `sasl.mechanism`,
    /// `sasl.username`, `linger.ms`, ...). Values here override the keys above.
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
    /// `sasl.password`, from `${ENV}` or `${file:PATH}`.
    #[serde(default)]
    pub sasl_password: Option<Secret>,
    /// `ssl.key.password`.
    #[serde(default)]
    pub ssl_key_password: Option<Secret>,
    #[serde(default)]
    pub encoder: EncoderOptions,
}

fn default_topic() -> String {
    "m365.{kind}".into()
}
fn default_encoding() -> Format {
    Format::Ocsf
}
fn default_compression() -> String {
    "lz4".into()
}
fn default_acks() -> String {
    "all".into()
}
fn default_message_timeout_ms() -> u64 {
    120_000
}
fn yes() -> bool {
    true
}

const TOPIC_VARS: [&str; 5] = ["kind", "category", "tenant", "source", "class_uid"];

pub fn factory(_name: &str, table: toml::Value, prefix: &str) -> Result<Box<dyn SinkConfig>, ConfigIssue> {
    let c: KafkaSinkConfig = typed(table, prefix)?;
    if c.bootstrap_servers.trim().is_empty() {
        return Err(ConfigIssue::new(
            format!("{prefix}.bootstrap_servers"),
            "must not be empty",
        ));
    }
    if !matches!(c.encoding, Format::Ocsf | Format::Raw) {
        return Err(ConfigIssue::new(
            format!("{prefix}.encoding"),
            "Kafka payloads are `ocsf` or `raw`",
        ));
    }
    if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&c.compression.as_str()) {
        return Err(ConfigIssue::new(
            format!("{prefix}.compression"),
            format!(
                "unknown compression `{}`, expected none, gzip, snappy, lz4 or zstd",
                c.compression
            ),
        ));
    }
    if c.idempotence && c.acks != "all" {
        return Err(ConfigIssue::new(
            format!("{prefix}.acks"),
            "an idempotent producer needs acks = \"all\"",
        ));
    }
    let mut rest = c.topic.as_str();
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| ConfigIssue::new(format!("{prefix}.topic"), "unclosed `{` in topic template"))?;
        let var = &rest[open + 1..open + close];
        if !TOPIC_VARS.contains(&var) {
            return Err(ConfigIssue::new(
                format!("{prefix}.topic"),
                format!(
                    "unknown variable `{{{var}}}`, expected one of {}",
                    TOPIC_VARS.join(", ")
                ),
            ));
        }
        rest = &rest[open + close + 1..];
    }
    // Properties the sink's delivery accounting depends on: set only through the typed keys.
    for (key, instead) in [
        ("acks", "use `acks`"),
        ("request.required.acks", "use `acks`"),
        ("enable.idempotence", "use `idempotence`"),
        ("message.timeout.ms", "use `message_timeout_ms`"),
        ("delivery.timeout.ms", "use `message_timeout_ms`"),
        ("delivery.report.only.error", "the sink needs every delivery report"),
        ("transactional.id", "the sink does not produce in transactions"),
    ] {
        if c.librdkafka_options.contains_key(key) {
            return Err(ConfigIssue::new(
                format!("{prefix}.librdkafka_options.{key}"),
                format!("not allowed here: {instead}"),
            ));
        }
    }
    for key in ["sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret"] {
        if let Some(v) = c.librdkafka_options.get(key) {
            if !v.is_empty() {
                tracing::warn!(
                    sink = prefix,
                    key,
                    "a secret in librdkafka_options; prefer sasl_password / ssl_key_password with ${{ENV}}"
                );
            }
        }
    }
    c.encoder
        .validate()
        .map_err(|m| ConfigIssue::new(format!("{prefix}.encoder"), m))?;
    Ok(Box::new(c))
}

impl KafkaSinkConfig {
    pub fn client_config(&self) -> ClientConfig {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &self.bootstrap_servers)
            .set("acks", &self.acks)
            .set("enable.idempotence", if self.idempotence { "true" } else { "false" })
            .set("compression.type", &self.compression)
            .set("message.timeout.ms", self.message_timeout_ms.to_string())
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "100000")
            .set("client.id", "m365-forwarder");
        if let Some(p) = &self.sasl_password {
            cc.set("sasl.password", p.expose());
        }
        if let Some(p) = &self.ssl_key_password {
            cc.set("ssl.key.password", p.expose());
        }
        for (k, v) in &self.librdkafka_options {
            cc.set(k, v);
        }
        cc
    }
}

impl SinkConfig for KafkaSinkConfig {
    fn build(&self, name: &str) -> Result<Box<dyn Sink>, SinkError> {
        let reports = Reports::default();
        let producer: KafkaProducer = self
            .client_config()
            .create_with_context(reports.clone())
            .map_err(|e| SinkError::Build(format!("kafka producer: {e}")))?;
        tracing::info!(sink = name, bootstrap = %self.bootstrap_servers, topic = %self.topic, "kafka producer created");
        Ok(Box::new(KafkaSink {
            producer,
            reports,
            client_config: self.client_config(),
            topic: self.topic.clone(),
            headers: self.headers,
            encoder: encode::encoder(self.encoding, &self.encoder),
            buf: Vec::new(),
            unfinished: None,
        }))
    }

    fn encoder(&self) -> Option<Box<dyn Encoder>> {
        Some(encode::encoder(self.encoding, &self.encoder))
    }
}

/// Most events one `send` takes from pipeline batches already waiting (see `batch_limits`).
const COALESCE_MAX_EVENTS: usize = 2000;

struct KafkaSink {
    producer: KafkaProducer,
    /// The producer's delivery reports.
    reports: Reports,
    /// To build a new producer after a fatal error (e.g. the broker lost the idempotent
    /// producer's state): the undelivered messages are then sent with a new producer id.
    client_config: ClientConfig,
    topic: String,
    headers: bool,
    encoder: Box<dyn Encoder>,
    buf: Vec<u8>,
    /// What the last send left of its batch when it gave up.
    unfinished: Option<delivery::Unfinished>,
}

impl KafkaSink {
    fn renew_producer(&mut self) {
        self.producer
            .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        match self.client_config.create_with_context(self.reports.clone()) {
            Ok(p) => self.producer = p,
            Err(e) => tracing::error!(error = %e, "cannot create a new kafka producer; keeping the old one"),
        }
    }
}

/// A Kafka topic name from the template, with characters Kafka refuses replaced by `_`.
pub fn render_topic(template: &str, e: &Event) -> String {
    let mut out = String::new();
    render_topic_into(template, e, &mut out);
    out
}

/// [`render_topic`] into `out` (cleared first), without allocating once `out` has room.
fn render_topic_into(template: &str, e: &Event, out: &mut String) {
    const MAX: usize = 249;
    let mut num = [0u8; 20];
    out.clear();
    let mut push = |piece: &str| {
        for c in piece.chars() {
            if out.len() >= MAX {
                return;
            }
            out.push(if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            });
        }
    };
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        push(&rest[..open]);
        let Some(close) = rest[open..].find('}') else { break };
        match &rest[open + 1..open + close] {
            "kind" => push(e.meta.kind.as_str()),
            "category" => push(&e.meta.category),
            "tenant" => push(e.meta.tenant.as_deref().unwrap_or("unknown")),
            "source" => push(&e.meta.source),
            "class_uid" => {
                let class = int_bytes(i64::from(class_uid(e).unwrap_or(0)), &mut num);
                push(std::str::from_utf8(class).unwrap_or("0"));
            }
            _ => {}
        }
        rest = &rest[open + close + 1..];
    }
    push(rest);
}

/// The message key: the stable entity id (incident id for an incident and its alerts),
/// scoped by tenant (`<tenant>:<id>`, so one topic can hold many tenants and still be
/// compacted), else the OCSF `metadata.uid`.
pub fn message_key(e: &Event) -> Option<String> {
    let mut out = String::new();
    message_key_into(e, &mut out).then_some(out)
}

/// [`message_key`] into `out` (cleared first); `false` when the event has no key.
fn message_key_into(e: &Event, out: &mut String) -> bool {
    out.clear();
    if let Some(k) = &e.meta.entity_key {
        if let Some(t) = &e.meta.tenant {
            out.push_str(t);
            out.push(':');
        }
        out.push_str(k);
        return true;
    }
    let uid = match &e.normalized {
        Some(n) => n.event_uid(),
        None => e.meta.uid.as_ref().map(|u| u.as_str()),
    };
    match uid {
        Some(u) => {
            out.push_str(u);
            true
        }
        None => false,
    }
}

/// The OCSF class, from the normalized form or, once that is let go, from the metadata.
fn class_uid(e: &Event) -> Option<u32> {
    e.normalized.as_ref().map(|n| n.class_uid).or(e.meta.class_uid)
}

fn headers_of(e: &Event) -> OwnedHeaders {
    let mut num = [0u8; 20];
    let class = class_uid(e).map(|c| int_bytes(i64::from(c), &mut num));
    let mut h = OwnedHeaders::new_with_capacity(6)
        .insert(Header {
            key: "source",
            value: Some(e.meta.source.as_bytes()),
        })
        .insert(Header {
            key: "category",
            value: Some(e.meta.category.as_bytes()),
        })
        .insert(Header {
            key: "kind",
            value: Some(e.meta.kind.as_str().as_bytes()),
        });
    if let Some(t) = &e.meta.tenant {
        h = h.insert(Header {
            key: "tenant",
            value: Some(t.as_bytes()),
        });
    }
    if let Some(c) = class {
        h = h.insert(Header {
            key: "class_uid",
            value: Some(c),
        });
    }
    if let Some(c) = &e.meta.change_type {
        h = h.insert(Header {
            key: "change_type",
            value: Some(c.as_bytes()),
        });
    }
    h
}

/// Where a message's bytes are: encoded ahead (the first `n` bytes of the event's
/// [`Event::encoded`]), or at `start..end` of the sink's buffer.
#[derive(Clone, Copy)]
enum Payload {
    Ahead(usize),
    Here(usize, usize),
}

impl Payload {
    fn len(self) -> usize {
        match self {
            Payload::Ahead(n) => n,
            Payload::Here(s, e) => e - s,
        }
    }
}

/// Length of an encoded message without its line end (line formats end with `\n`, which is
/// not part of a Kafka message).
fn message_len(encoded: &[u8]) -> usize {
    encoded.len() - usize::from(encoded.last() == Some(&b'\n'))
}

#[async_trait::async_trait]
impl Sink for KafkaSink {
    /// Pipeline batches that queued while the previous send waited for its delivery reports
    /// go out together (never waiting for more): one `linger.ms` and one delivery wait per
    /// send instead of per pipeline batch, so small batches keep latency low without
    /// costing throughput.
    fn batch_limits(&self) -> Option<BatchLimits> {
        Some(BatchLimits {
            max_events: COALESCE_MAX_EVENTS,
            max_wait: Duration::ZERO,
        })
    }

    async fn send(&mut self, events: &[Event]) -> Result<SendReport, SinkError> {
        // A fatal error (raised since the last send, or left by a producer that could not be
        // renewed) refuses every produce: start over with a new producer.
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::error!(?code, %reason, "kafka producer hit a fatal error; creating a new producer");
            self.renew_producer();
        }
        let mut report = SendReport::default();
        // Encode first: an event that cannot be encoded is rejected, not retried. Bytes
        // encoded ahead by the pipeline are sent from where they are.
        let mut payloads: Vec<Option<Payload>> = Vec::with_capacity(events.len());
        self.buf.clear();
        for (index, e) in events.iter().enumerate() {
            if let Some(enc) = &e.encoded {
                payloads.push(Some(Payload::Ahead(message_len(&enc.data))));
                continue;
            }
            let start = self.buf.len();
            match self.encoder.encode(e, &mut self.buf) {
                Ok(_) => payloads.push(Some(Payload::Here(start, start + message_len(&self.buf[start..])))),
                Err(err) => {
                    report.rejected.push(Rejection {
                        index,
                        reason: err.reason(),
                        detail: err.to_string(),
                    });
                    payloads.push(None);
                }
            }
        }
        let mut pending: Vec<usize> = (0..events.len()).filter(|i| payloads[*i].is_some()).collect();
        // The same batch again after a send that gave up part way: only what is left.
        if let Some(u) = self.unfinished.take().and_then(|u| u.of(events)) {
            pending = u.pending.into_iter().filter(|&i| payloads[i].is_some()).collect();
            report.rejected = u.rejected;
            report.bytes = u.bytes;
        }
        let mut attempt = 0u32;
        // After the broker refused a produce request for good, each message goes in a round
        // of its own, so that a refusal names the one message it is about.
        let mut alone = false;
        let (mut topic, mut key) = (String::new(), String::new());
        while !pending.is_empty() {
            let mut retry = Vec::new();
            let mut split = Vec::new();
            let mut last_error = None;
            let several = pending.len() > 1;
            // One round per send (messages past `MAX_ROUND`, only possible where a pointer
            // has 32 bits, go in further rounds).
            for round_of in pending.chunks(if alone { 1 } else { delivery::MAX_ROUND }) {
                let round = self.reports.begin(round_of.len());
                // Messages librdkafka refused for good in the produce call (see `refused_for_good`).
                let mut final_refusal = vec![false; round_of.len()];
                for (j, &i) in round_of.iter().enumerate() {
                    let e = &events[i];
                    let body: &[u8] = match payloads[i].expect("encoded") {
                        Payload::Ahead(n) => &e.encoded.as_ref().expect("encoded ahead").data[..n],
                        Payload::Here(s, end) => &self.buf[s..end],
                    };
                    render_topic_into(&self.topic, e, &mut topic);
                    let keyed = message_key_into(e, &mut key);
                    loop {
                        let mut record: BaseRecord<'_, str, [u8], usize> =
                            BaseRecord::with_opaque_to(&topic, round.tag(j)).payload(body);
                        if keyed {
                            record = record.key(key.as_str());
                        }
                        if self.headers {
                            record = record.headers(headers_of(e));
                        }
                        match self.producer.send(record) {
                            Ok(()) => break,
                            Err((err, _)) if err.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                                // Backpressure: wait for the queue to drain a little.
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            // Refused before it was queued (larger than `message.max.bytes`, a
                            // topic the cluster does not have or refuses, a fatal producer
                            // error): that message's report, judged like a delivery report. The
                            // round's other messages go on (returning here left those already
                            // queued to be delivered and then sent again with the whole batch).
                            Err((err, _)) => {
                                final_refusal[j] = refused_for_good(&err) || is_permanent(&err);
                                self.reports.refused(round, j, err);
                                break;
                            }
                        }
                    }
                }
                // librdkafka reports every message it took, at the latest when
                // `message.timeout.ms` has passed (with 0, which librdkafka takes as no
                // limit, a send waits as long as the brokers refuse its messages).
                for ((&i, delivered), refused) in round_of.iter().zip(self.reports.wait().await).zip(final_refusal) {
                    match delivered {
                        Some(Ok(())) => report.bytes += payloads[i].map_or(0, |p| p.len() as u64),
                        // The broker judges a whole record batch (its `message.max.bytes`
                        // bounds the batch, a corrupt record fails the batch): a refusal
                        // there may be about another message of the batch.
                        Some(Err(err)) if !refused && !alone && several && is_permanent(&err) => {
                            last_error = Some(err.to_string());
                            split.push(i);
                        }
                        Some(Err(err)) if refused || is_permanent(&err) => {
                            report.rejected.push(Rejection {
                                index: i,
                                reason: "kafka_rejected",
                                detail: err.to_string(),
                            });
                        }
                        Some(Err(err)) => {
                            last_error = Some(err.to_string());
                            retry.push(i);
                        }
                        None => {
                            last_error = Some("no delivery report".into());
                            retry.push(i);
                        }
                    }
                }
            }
            // A fatal error (the broker lost this idempotent producer's sequence state, ...):
            // the messages not delivered go again with a new producer, in this send, so that
            // those that were delivered are not sent again with the whole batch.
            let fatal = self.producer.client().fatal_error();
            if let Some((code, reason)) = &fatal {
                tracing::error!(?code, %reason, "kafka producer hit a fatal error; creating a new producer");
                self.renew_producer();
            }
            if !split.is_empty() {
                tracing::warn!(
                    refused = split.len(),
                    error = %last_error.as_deref().unwrap_or_default(),
                    "kafka broker refused a record batch for good; sending its messages one at a time \
                     (if this repeats, set librdkafka_options.\"batch.size\" below the topic's max.message.bytes)"
                );
                alone = true;
                retry.extend(split);
                retry.sort_unstable();
            } else if !retry.is_empty() {
                attempt += 1;
                let err = last_error.unwrap_or_default();
                tracing::warn!(failed = retry.len(), attempt, error = %err, "kafka deliveries failed; retrying those messages");
                if attempt >= 3 && retry.len() == pending.len() {
                    // Nothing gets through. A broker that restarted may have lost this
                    // producer id's sequence state and refuse it for good, so the next
                    // attempt starts with a new producer (the messages are sent again anyway);
                    // meanwhile the driver backs off and health turns red.
                    if fatal.is_none() {
                        self.renew_producer();
                    }
                    let rejected = std::mem::take(&mut report.rejected);
                    self.unfinished = Some(delivery::Unfinished::new(events, retry, rejected, report.bytes));
                    return Err(SinkError::Unavailable {
                        kind: "kafka_delivery",
                        message: err,
                    });
                }
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10)))).await;
            }
            pending = retry;
        }
        Ok(report)
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        let p = self.producer.clone();
        tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(10)))
            .await
            .map_err(|e| SinkError::Unavailable {
                kind: "kafka_flush",
                message: e.to_string(),
            })?
            .map_err(|e| SinkError::Unavailable {
                kind: "kafka_flush",
                message: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests;
