//! Sources: the `Source` trait, its context (output channel, acknowledgments, checkpoints,
//! shutdown), the registry of source types, and the batch builder sources share.

pub mod eventhub;
pub mod graph;
pub mod kafka;
pub mod replay;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ack::{AckTracker, Finalizer};
use crate::checkpoint::{CheckpointError, CheckpointKey, CheckpointStore};
use crate::config::ConfigIssue;
use crate::decode::{DecodeError, DecodedRecord, DecodedUnit};
use crate::event::{Batch, Event, EventKind, EventMeta, Position};
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source {source_name}: {message}")]
    Fatal { source_name: String, message: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("source {0}: the pipeline stopped")]
    Closed(String),
    /// Shutdown came while the source waited to send; the unsent batch stays unacknowledged.
    #[error("source {0}: shutting down")]
    ShuttingDown(String),
}

/// A configured source type, validated and ready to build.
pub trait SourceConfig: Send + Sync + fmt::Debug {
    fn build(&self, name: &str) -> Result<Box<dyn Source>, SourceError>;
    /// True when the source ends by itself (files without `follow`, embedded data).
    fn is_finite(&self) -> bool;

    /// This source reading the history window of `plan` once and then ending
    /// (`m365-forwarder backfill`), or `None` when the type has no history to read.
    fn backfill(&self, _plan: &Arc<graph::backfill::Plan>) -> Option<Box<dyn SourceConfig>> {
        None
    }
}

/// What a source is given to run.
pub struct SourceContext {
    pub name: Arc<str>,
    pub out: mpsc::Sender<Batch>,
    pub acks: AckTracker,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
    pub batch_max_events: usize,
    /// Readiness: a source that cannot connect says so here.
    pub health: Arc<crate::telemetry::Health>,
}

impl SourceContext {
    pub fn checkpoint_key(&self, tenant: Option<&str>, partition: &str) -> CheckpointKey {
        CheckpointKey::new(&self.name, tenant, partition)
    }

    /// Send a batch downstream; waits while the pipeline is full (backpressure).
    pub async fn send(&self, batch: Batch) -> Result<(), SourceError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (n, bytes) = (
            batch.len() as u64,
            batch.iter().map(|e| e.raw.len() as u64).sum::<u64>(),
        );
        tokio::select! {
            biased;
            r = self.out.send(batch) => r.map_err(|_| SourceError::Closed(self.name.to_string()))?,
            _ = self.shutdown.cancelled() => return Err(SourceError::ShuttingDown(self.name.to_string())),
        }
        self.metrics.component_in(&self.name, "source", n, bytes);
        Ok(())
    }
}

#[async_trait::async_trait]
pub trait Source: Send {
    /// Read until the input ends or `ctx.shutdown` fires. Checkpoints are committed by the
    /// pipeline from `ctx.acks`; the source only registers batches.
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError>;

    /// Where this source's checkpoints go, when not the pipeline's store (a Kafka
    /// consumer group keeps its own offsets so replicas can share partitions).
    fn checkpoint_store(&self) -> Option<Arc<dyn CheckpointStore>> {
        None
    }
}

type Factory = crate::config::Factory<Box<dyn SourceConfig>>;

/// Source types by their `type` name. Add a connector here.
const REGISTRY: &[(&str, Factory)] = &[
    ("replay", replay::factory),
    ("kafka", kafka::factory),
    ("eventhub", eventhub::factory),
    ("graph_incidents", graph::incidents_factory),
    ("graph_risk_detections", graph::risk_detections_factory),
    ("graph_risky_users", graph::risky_users_factory),
];

pub fn types() -> Vec<&'static str> {
    REGISTRY.iter().map(|(n, _)| *n).collect()
}

pub fn build_config(
    ty: &str,
    name: &str,
    table: toml::Value,
    prefix: &str,
) -> Result<Box<dyn SourceConfig>, Vec<ConfigIssue>> {
    crate::config::build_component(REGISTRY, "source", ty, name, table, prefix)
}

/// A change computed by a source's state engine, carried in the event metadata.
#[derive(Clone, Debug)]
pub struct Change {
    pub change_type: Arc<str>,
    pub changed_fields: Option<Arc<[String]>>,
}

/// Raw bytes, metadata and (for a unit that failed to decode) the quarantine reason.
type PendingEvent = (Bytes, EventMeta, Option<(&'static str, String)>);

/// Collects decoded units of one partition into batches, attaching finalizers that
/// carry the checkpoint of the last whole unit in each batch.
pub struct BatchBuilder {
    source: Arc<str>,
    partition: Arc<str>,
    pending: Vec<PendingEvent>,
    last_checkpoint: Option<String>,
    max_events: usize,
    /// Categories and tenants seen, shared by their events (a handful per source).
    categories: Interned,
    tenants: Interned,
}

/// Strings many events carry (categories, tenants): one allocation each, shared.
#[derive(Default)]
struct Interned(Vec<Arc<str>>);

impl Interned {
    /// More distinct strings than this are not kept for sharing.
    const MAX: usize = 64;

    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.iter().find(|a| ***a == *s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        if self.0.len() < Self::MAX {
            self.0.push(a.clone());
        }
        a
    }
}

impl BatchBuilder {
    pub fn new(source: Arc<str>, partition: Arc<str>, max_events: usize) -> BatchBuilder {
        BatchBuilder {
            source,
            partition,
            pending: Vec::new(),
            last_checkpoint: None,
            max_events,
            categories: Interned::default(),
            tenants: Interned::default(),
        }
    }

    fn meta(&mut self, offset: u64, index: u32, category: &str, kind: EventKind) -> EventMeta {
        EventMeta::shared(
            self.source.clone(),
            self.categories.get(category),
            kind,
            Position::at(self.partition.clone(), offset, index),
        )
    }

    /// [`BatchBuilder::push_unit`] for a unit that also has a sequence number (an Event Hub
    /// message): every event of the unit, and its dead-letter record, carry it.
    pub fn push_unit_with_sequence(
        &mut self,
        offset: u64,
        sequence: i64,
        body: &Bytes,
        decoded: Result<DecodedUnit, DecodeError>,
        checkpoint: Option<String>,
        metrics: &Metrics,
    ) {
        let start = self.pending.len();
        self.push_unit(offset, body, decoded, checkpoint, metrics);
        for (_, meta, _) in &mut self.pending[start..] {
            meta.position.sequence = Some(sequence);
        }
    }

    /// Add one decoded unit (or its decode error, which becomes a quarantined event
    /// carrying the whole unit). `checkpoint` is the value to commit once this unit is done.
    pub fn push_unit(
        &mut self,
        offset: u64,
        body: &Bytes,
        decoded: Result<DecodedUnit, DecodeError>,
        checkpoint: Option<String>,
        metrics: &Metrics,
    ) {
        match decoded {
            Ok(unit) => {
                if let Some(repair) = unit.repaired {
                    metrics.repaired(&self.source, repair);
                }
                for (i, r) in unit.records.into_iter().enumerate() {
                    let mut meta = self.meta(offset, i as u32, &r.category, r.kind);
                    meta.tenant = r.tenant.map(|t| self.tenants.get(&t));
                    meta.entity_key = r.entity_key.map(Arc::from);
                    meta.repaired = unit.repaired.is_some();
                    meta.unchecked = r.unchecked;
                    self.pending.push((r.raw, meta, None));
                }
            }
            Err(e) => {
                let meta = self.meta(offset, 0, "Unknown", EventKind::Generic);
                self.pending
                    .push((body.clone(), meta, Some((e.reason(), e.to_string()))));
            }
        }
        self.last_checkpoint = checkpoint;
    }

    /// Add one record a source selected itself (a Graph poller's change event), with the
    /// change type and changed fields it computed. The checkpoint is set apart with
    /// [`BatchBuilder::set_checkpoint`].
    pub fn push_record(&mut self, offset: u64, index: u32, record: DecodedRecord, change: Option<Change>) {
        let mut meta = self.meta(offset, index, &record.category, record.kind);
        meta.tenant = record.tenant.map(|t| self.tenants.get(&t));
        meta.entity_key = record.entity_key.map(Arc::from);
        meta.unchecked = record.unchecked;
        if let Some(c) = change {
            meta.change_type = Some(c.change_type);
            meta.changed_fields = c.changed_fields;
        }
        self.pending.push((record.raw, meta, None));
    }

    /// The checkpoint to commit once everything pushed so far is delivered.
    pub fn set_checkpoint(&mut self, checkpoint: String) {
        self.last_checkpoint = Some(checkpoint);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.pending.len() >= self.max_events
    }

    /// Whether a checkpoint is waiting to be registered (a unit with no records).
    pub fn has_checkpoint(&self) -> bool {
        self.last_checkpoint.is_some()
    }

    /// Turn what was collected into a batch registered with the tracker.
    pub fn take(&mut self, acks: &AckTracker) -> Batch {
        let notifier = acks.register(&self.partition, self.last_checkpoint.take());
        self.pending
            .drain(..)
            .map(|(raw, meta, quarantine)| {
                let mut e = Event::new(raw, meta, Finalizer::new(notifier.clone()));
                if let Some((reason, detail)) = quarantine {
                    e.quarantine("decode", reason, detail);
                }
                e
            })
            .collect()
    }
}
