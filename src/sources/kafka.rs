//! Kafka-protocol input: an rdkafka consumer group on topics (Event Hubs' Kafka endpoint or
//! any Kafka), decoded like Event Hub bodies, with offsets committed to the group only after
//! the pipeline acknowledged the events. Replicas share partitions through the group.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Deserialize;

use super::{BatchBuilder, Source, SourceConfig, SourceContext, SourceError};
use crate::checkpoint::{CheckpointError, CheckpointKey, CheckpointStore};
use crate::config::{typed, ConfigIssue, Secret};
use crate::decode::{decode_unit, InputFormat};
use crate::event::Batch;

/// `[sources.NAME] type = "kafka"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `host:port[,host:port...]`; for Event Hubs `NAMESPACE.servicebus.windows.net:9093`.
    pub bootstrap_servers: String,
    pub topics: Vec<String>,
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Where a new group starts: `earliest` (default) or `latest`.
    #[serde(default = "default_start")]
    pub start: String,
    #[serde(default)]
    pub format: InputFormat,
    /// `sasl.password` (for Event Hubs: the connection string), from `${ENV}` or `${file:}`.
    #[serde(default)]
    pub sasl_password: Option<Secret>,
    /// Any librdkafka consumer property (`security.protocol`, `sasl.mechanism`, `sasl.username`, ...).
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
}

fn default_group() -> String {
    "m365-forwarder".into()
}
fn default_start() -> String {
    "earliest".into()
}

pub fn factory(_name: &str, table: toml::Value, prefix: &str) -> Result<Box<dyn SourceConfig>, ConfigIssue> {
    let c: KafkaSourceConfig = typed(table, prefix)?;
    if c.bootstrap_servers.trim().is_empty() {
        return Err(ConfigIssue::new(
            format!("{prefix}.bootstrap_servers"),
            "must not be empty",
        ));
    }
    if c.topics.is_empty() {
        return Err(ConfigIssue::new(
            format!("{prefix}.topics"),
            "at least one topic is required",
        ));
    }
    if !["earliest", "latest"].contains(&c.start.as_str()) {
        return Err(ConfigIssue::new(
            format!("{prefix}.start"),
            "expected `earliest` or `latest`",
        ));
    }
    // Properties that keep offsets behind the sinks' acknowledgments, or that the typed
    // keys set: librdkafka's automatic commit would commit what no sink has yet. The value
    // the source sets anyway is accepted.
    for (key, safe, instead) in [
        (
            "enable.auto.commit",
            "false",
            "offsets are committed after the sinks acknowledge",
        ),
        (
            "enable.auto.offset.store",
            "false",
            "offsets are stored after the sinks acknowledge",
        ),
        ("group.id", c.group_id.as_str(), "use `group_id`"),
        ("auto.offset.reset", c.start.as_str(), "use `start`"),
    ] {
        if let Some(v) = c.librdkafka_options.get(key).filter(|v| match key {
            // Group ids are case-sensitive: only the same one, exactly.
            "group.id" => v.as_str() != safe,
            _ => !v.trim().eq_ignore_ascii_case(safe),
        }) {
            return Err(ConfigIssue::new(
                format!("{prefix}.librdkafka_options.{key}"),
                format!("`{v}` not allowed here: {instead}"),
            ));
        }
    }
    for key in ["sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret"] {
        if c.librdkafka_options.get(key).is_some_and(|v| !v.is_empty()) {
            tracing::warn!(
                source = prefix,
                key,
                "a secret in librdkafka_options; prefer sasl_password with ${{ENV}}"
            );
        }
    }
    Ok(Box::new(c))
}

impl KafkaSourceConfig {
    fn client_config(&self) -> ClientConfig {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &self.bootstrap_servers)
            .set("group.id", &self.group_id)
            .set("auto.offset.reset", &self.start)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("client.id", "m365-forwarder");
        if let Some(p) = &self.sasl_password {
            cc.set("sasl.password", p.expose());
        }
        for (k, v) in &self.librdkafka_options {
            cc.set(k, v);
        }
        cc
    }
}

impl SourceConfig for KafkaSourceConfig {
    fn build(&self, name: &str) -> Result<Box<dyn Source>, SourceError> {
        let consumer: StreamConsumer = self.client_config().create().map_err(|e| SourceError::Fatal {
            source_name: name.to_string(),
            message: format!("kafka consumer: {e}"),
        })?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| SourceError::Fatal {
            source_name: name.to_string(),
            message: format!("subscribe {topics:?}: {e}"),
        })?;
        Ok(Box::new(KafkaSource {
            consumer: Arc::new(consumer),
            format: self.format,
        }))
    }

    fn is_finite(&self) -> bool {
        false
    }
}

struct KafkaSource {
    consumer: Arc<StreamConsumer>,
    format: InputFormat,
}

/// The longest an event waits in a partial batch before it is sent.
const BATCH_MAX_AGE: Duration = Duration::from_millis(50);

/// Backpressure longer than this pauses the assigned partitions while the consumer keeps
/// polling (see [`KafkaSource::send`]). Pausing drops librdkafka's prefetched messages, so
/// a short stall is waited out without it.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// A message read: topic, partition, offset and body.
type Read = (String, i32, i64, Bytes);

fn read(m: &impl Message) -> Read {
    (
        m.topic().to_string(),
        m.partition(),
        m.offset(),
        Bytes::copy_from_slice(m.payload().unwrap_or_default()),
    )
}

impl KafkaSource {
    /// Hands a batch to the pipeline. When the pipeline pushes back for longer than
    /// [`PAUSE_AFTER`], the assigned partitions are paused and the consumer is polled
    /// meanwhile: librdkafka leaves the group when the application does not poll for
    /// `max.poll.interval.ms` (5 min by default), and the partitions would go to another
    /// member (or, on rejoining, be read again from the last commit): duplicates. Messages
    /// that still arrive (prefetched, or from partitions assigned meanwhile, which are then
    /// paused too) are kept in `held`, in order, and read before the consumer again.
    async fn send(&self, ctx: &SourceContext, batch: Batch, held: &mut VecDeque<Read>) -> Result<(), SourceError> {
        let send = ctx.send(batch);
        tokio::pin!(send);
        let stalled = tokio::time::sleep(PAUSE_AFTER);
        tokio::pin!(stalled);
        let mut paused: Option<TopicPartitionList> = None;
        let result = loop {
            tokio::select! {
                r = &mut send => break r,
                _ = &mut stalled, if paused.is_none() => {
                    paused = self.pause_all(ctx);
                    if paused.is_none() {
                        stalled.as_mut().reset(tokio::time::Instant::now() + PAUSE_AFTER);
                    }
                }
                // Pending, this keeps the consumer polled: rust-rdkafka wakes it every half
                // `max.poll.interval.ms`.
                m = self.consumer.recv(), if paused.is_some() => match m {
                    Ok(m) => {
                        let r = read(&m);
                        drop(m);
                        let known = paused.as_ref().is_some_and(|p| p.find_partition(&r.0, r.1).is_some());
                        held.push_back(r);
                        if !known {
                            if let Some(p) = self.pause_all(ctx) {
                                paused = Some(p);
                            }
                        }
                    }
                    Err(e) => {
                        ctx.metrics.error(&ctx.name, "kafka_consume");
                        tracing::warn!(error = %e, "kafka consumer error while paused");
                    }
                },
            }
        };
        if let Some(p) = paused {
            match self.consumer.resume(&p) {
                Ok(()) => tracing::info!(
                    partitions = p.count(),
                    held = held.len(),
                    "pipeline took the batch; partitions resumed"
                ),
                Err(e) => {
                    // Not fatal for the data: fetching stays paused until the next resume.
                    ctx.metrics.error(&ctx.name, "kafka_resume");
                    tracing::error!(error = %e, "resuming the partitions failed");
                }
            }
        }
        result
    }

    /// Pauses every assigned partition; the list paused, or `None` (nothing assigned, or
    /// the pause failed: tried again later).
    fn pause_all(&self, ctx: &SourceContext) -> Option<TopicPartitionList> {
        let assigned = match self.consumer.assignment() {
            Ok(a) if a.count() > 0 => a,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "kafka assignment unknown; not pausing yet");
                return None;
            }
        };
        match self.consumer.pause(&assigned) {
            Ok(()) => {
                tracing::info!(
                    partitions = assigned.count(),
                    "pipeline pushing back: partitions paused, the consumer kept polled to stay in its group"
                );
                Some(assigned)
            }
            Err(e) => {
                ctx.metrics.error(&ctx.name, "kafka_pause");
                tracing::warn!(error = %e, "pausing the partitions failed; will try again");
                None
            }
        }
    }
}

/// Offsets live in the consumer group: a commit there is what lets another replica resume.
struct GroupOffsets {
    consumer: Arc<StreamConsumer>,
}

impl std::fmt::Debug for GroupOffsets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupOffsets")
    }
}

fn split_partition(p: &str) -> Option<(&str, i32)> {
    let (topic, part) = p.rsplit_once('/')?;
    Some((topic, part.parse().ok()?))
}

impl CheckpointStore for GroupOffsets {
    fn get(&self, _key: &CheckpointKey) -> Result<Option<String>, CheckpointError> {
        // The group coordinator hands out committed offsets itself.
        Ok(None)
    }

    fn commit(&self, values: &[(CheckpointKey, String)]) -> Result<(), CheckpointError> {
        let mut tpl = TopicPartitionList::new();
        for (key, value) in values {
            let (Some((topic, partition)), Ok(offset)) = (split_partition(&key.partition), value.parse::<i64>()) else {
                continue;
            };
            tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
                .map_err(|e| CheckpointError::Corrupt {
                    path: "kafka group".into(),
                    detail: e.to_string(),
                })?;
        }
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| CheckpointError::Io {
                path: "kafka group".into(),
                source: std::io::Error::other(e.to_string()),
            })
    }

    fn list(&self, _source: &str) -> Result<Vec<(CheckpointKey, String)>, CheckpointError> {
        Ok(Vec::new())
    }
}

#[async_trait::async_trait]
impl Source for KafkaSource {
    fn checkpoint_store(&self) -> Option<Arc<dyn CheckpointStore>> {
        Some(Arc::new(GroupOffsets {
            consumer: self.consumer.clone(),
        }))
    }

    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let mut builders: HashMap<(String, i32), BatchBuilder> = HashMap::new();
        // Messages read while the partitions were paused, to be taken first.
        let mut held: VecDeque<Read> = VecDeque::new();
        // When the oldest event not yet sent was read: every partial batch is sent at the
        // latest BATCH_MAX_AGE after it, so a quiet partition's events do not wait for a
        // pause across all partitions (which a busy topic beside it never makes).
        let mut oldest: Option<tokio::time::Instant> = None;
        loop {
            let next = match held.pop_front() {
                Some(r) => Ok(Ok(r)),
                None => {
                    let wait = oldest.map_or(BATCH_MAX_AGE, |t| BATCH_MAX_AGE.saturating_sub(t.elapsed()));
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => break,
                        m = tokio::time::timeout(wait, self.consumer.recv()) => m.map(|r| r.map(|m| read(&m))),
                    }
                }
            };
            let due = oldest.is_some_and(|t| t.elapsed() >= BATCH_MAX_AGE);
            match next {
                // Quiet for a moment, or the oldest partial batch is due: send them all.
                Err(_) => {
                    for b in builders.values_mut().filter(|b| !b.is_empty() || b.has_checkpoint()) {
                        self.send(&ctx, b.take(&ctx.acks), &mut held).await?;
                    }
                    oldest = None;
                    continue;
                }
                Ok(Err(e)) => {
                    ctx.metrics.error(&ctx.name, "kafka_consume");
                    tracing::warn!(error = %e, "kafka consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(Ok((topic, partition, offset, body))) => {
                    let b = builders.entry((topic.clone(), partition)).or_insert_with(|| {
                        BatchBuilder::new(
                            ctx.name.clone(),
                            Arc::from(format!("{topic}/{partition}")),
                            ctx.batch_max_events,
                        )
                    });
                    let decoded = if body.is_empty() {
                        Err(crate::decode::DecodeError::Empty)
                    } else {
                        decode_unit(self.format, body.clone())
                    };
                    // Committing offset+1 means "this message is done".
                    b.push_unit(
                        offset as u64,
                        &body,
                        decoded,
                        Some((offset + 1).to_string()),
                        &ctx.metrics,
                    );
                    if b.is_full() {
                        self.send(&ctx, b.take(&ctx.acks), &mut held).await?;
                    }
                    oldest.get_or_insert_with(tokio::time::Instant::now);
                }
            }
            if due {
                for b in builders.values_mut().filter(|b| !b.is_empty() || b.has_checkpoint()) {
                    self.send(&ctx, b.take(&ctx.acks), &mut held).await?;
                }
                oldest = None;
            }
        }
        for b in builders.values_mut().filter(|b| !b.is_empty()) {
            let _ = ctx.send(b.take(&ctx.acks)).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Value {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn options_that_would_commit_before_the_sinks_acknowledge_are_refused() {
        let base = "bootstrap_servers = \"b:9093\"\ntopics = [\"t\"]\n";
        assert!(factory("k", table(base), "sources.k").is_ok());
        for key in [
            "enable.auto.commit",
            "enable.auto.offset.store",
            "group.id",
            "auto.offset.reset",
        ] {
            let t = table(&format!("{base}librdkafka_options = {{ \"{key}\" = \"true\" }}\n"));
            let e = factory("k", t, "sources.k").unwrap_err();
            assert_eq!(e.path, format!("sources.k.librdkafka_options.{key}"));
        }
        let t = table(&format!(
            "{base}librdkafka_options = {{ \"fetch.wait.max.ms\" = \"100\" }}\n"
        ));
        assert!(factory("k", t, "sources.k").is_ok());
        // The values the source sets anyway are harmless.
        let t = table(&format!(
            "{base}librdkafka_options = {{ \"enable.auto.commit\" = \"false\", \"group.id\" = \"m365-forwarder\" }}\n"
        ));
        assert!(factory("k", t, "sources.k").is_ok());
        let t = table(&format!(
            "{base}librdkafka_options = {{ \"group.id\" = \"M365-Forwarder\" }}\n"
        ));
        assert!(factory("k", t, "sources.k").is_err(), "another group");
    }
}
