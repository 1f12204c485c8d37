//! The running `eventhub` source: opens the consumer and the `EventProcessor`, reads every
//! partition it is handed, decodes bodies into events, and reconnects with backoff when the
//! connection or a partition stream fails, resuming after what it already read.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use azure_messaging_eventhubs::error::ErrorKind;
use azure_messaging_eventhubs::models::{ReceivedEventData, StartPositions};
use azure_messaging_eventhubs::processor::PartitionClient;
use azure_messaging_eventhubs::{
    ConsumerClient, EventProcessor, ProcessorStrategy, RetryOptions, StartLocation, StartPosition,
};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::blob::{parse_connection_string, BlobAuth, BlobClient};
use super::blobstore::{BlobCommitter, BlobStore};
use super::store::{Backend, SourceStore, StoredCheckpoint};
use super::{BlobStoreConfig, EventHubAuth, Resolved, Start};
use crate::checkpoint::CheckpointStore;
use crate::decode::{decode_unit, DecodeError};
use crate::event::EventKind;
use crate::sources::{BatchBuilder, Source, SourceContext, SourceError};
use crate::telemetry::EventHubMetrics;

pub(super) struct EventHubSource {
    cfg: Arc<Resolved>,
    /// The shared blob checkpoint store, when configured.
    blob: Option<BlobStore>,
}

impl EventHubSource {
    pub(super) fn new(cfg: Arc<Resolved>, blob: Option<BlobStore>) -> EventHubSource {
        EventHubSource { cfg, blob }
    }
}

/// The blob checkpoint store of a `checkpoint_store` table.
pub(super) fn blob_store(b: &BlobStoreConfig, cfg: &Resolved) -> Result<BlobStore, String> {
    let (endpoint, auth) = match (&b.connection_string, &b.account_url) {
        (Some(cs), _) => parse_connection_string(cs.expose()).map_err(|e| e.to_string())?,
        (None, Some(url)) => {
            let auth = match &b.sas_token {
                Some(sas) => BlobAuth::Sas(sas.expose().trim_start_matches('?').to_string()),
                None => BlobAuth::Bearer(credential(cfg)?),
            };
            (url.clone(), auth)
        }
        (None, None) => return Err("needs connection_string or account_url".into()),
    };
    let client = BlobClient::new(&endpoint, &b.container, auth).map_err(|e| e.to_string())?;
    Ok(BlobStore::new(client))
}

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Reopens of one partition in a row without an event before the whole connection is rebuilt.
const FAILURES_BEFORE_RECONNECT: u32 = 3;
/// How long a partition stays quiet before what was collected is sent.
const QUIET: Duration = Duration::from_millis(50);

pub(super) type Shared = Arc<Inner>;

/// What every task of the source shares.
pub(super) struct Inner {
    pub(super) cfg: Arc<Resolved>,
    pub(super) ctx: SourceContext,
    pub(super) store: Arc<SourceStore>,
    /// When each partition last received an event (or was opened), for stall detection.
    pub(super) progress: Mutex<HashMap<String, Instant>>,
    /// Partitions this replica reads now (with a shared store, the others are not its own).
    pub(super) reading: Mutex<HashSet<String>>,
    /// Partition streams that ended in a row without delivering an event.
    failures: Mutex<HashMap<String, u32>>,
    /// `start = "latest"`: each partition's last sequence number when its session started,
    /// stored as its checkpoint when it is opened without one.
    latest: Mutex<HashMap<String, StoredCheckpoint>>,
    /// Partitions waiting for the pipeline to take a batch (backpressure): not stalled.
    pub(super) sending: Mutex<HashSet<String>>,
}

impl Inner {
    pub(super) fn touch(&self, partition: &str) {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(partition.to_string(), Instant::now());
    }
}

#[async_trait::async_trait]
impl Source for EventHubSource {
    /// With a blob store, acknowledged checkpoints go to its checkpoint blobs.
    fn checkpoint_store(&self) -> Option<Arc<dyn CheckpointStore>> {
        let b = self.blob.as_ref()?;
        let container = self
            .cfg
            .config
            .checkpoint_store
            .blob()
            .map(|c| c.container.clone())
            .unwrap_or_default();
        Some(Arc::new(BlobCommitter::new(b.clone(), &container)))
    }

    /// The SDK's streams are not `Send`, so the source runs on a thread of its own with a
    /// single-threaded runtime; it talks to the pipeline through the context's channels.
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let backend = match &self.blob {
            Some(b) => {
                if let Err(e) = b.client().create_container().await {
                    tracing::warn!(error = %e, "cannot create the checkpoint container (it must exist)");
                }
                Backend::Blob(b.clone())
            }
            None => Backend::Embedded(ctx.checkpoints.clone()),
        };
        let store = Arc::new(SourceStore::new(&ctx.name, self.cfg.hub.clone(), backend));
        let name = ctx.name.to_string();
        let inner = Arc::new(Inner {
            cfg: self.cfg.clone(),
            ctx,
            store,
            progress: Mutex::new(HashMap::new()),
            reading: Mutex::new(HashSet::new()),
            failures: Mutex::new(HashMap::new()),
            latest: Mutex::new(HashMap::new()),
            sending: Mutex::new(HashSet::new()),
        });
        // The SDK's TLS stack finds two rustls providers in this build (ring, which the
        // forwarder uses, and aws-lc-rs); name ring as the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let fatal = |message: String| SourceError::Fatal {
            source_name: name.clone(),
            message,
        };
        std::thread::Builder::new()
            .name(format!("eventhub-{name}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, reconnect_loop(inner));
                let _ = tx.send(Ok(()));
            })
            .map_err(|e| fatal(format!("cannot start the source thread: {e}")))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(fatal(format!("runtime: {e}"))),
            Err(_) => Err(fatal("the source thread ended unexpectedly".into())),
        }
    }
}

/// Connect, read until the connection fails, and connect again with backoff, until shutdown.
async fn reconnect_loop(inner: Shared) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if inner.ctx.shutdown.is_cancelled() {
            return;
        }
        let started = std::time::Instant::now();
        match session(&inner).await {
            Ok(()) => return,
            Err(e) => {
                inner.ctx.metrics.error(&inner.ctx.name, "eventhub_connection");
                inner.ctx.health.source_failing(&inner.ctx.name, &e);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "event hub connection failed; reconnecting");
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            _ = inner.ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

pub(super) fn credential(cfg: &Resolved) -> Result<Arc<dyn TokenCredential>, String> {
    let c = &cfg.config;
    let cred: Arc<dyn TokenCredential> = match c.auth {
        EventHubAuth::ClientSecret => azure_identity::ClientSecretCredential::new(
            c.tenant_id.as_deref().unwrap_or_default(),
            c.client_id.clone().unwrap_or_default(),
            azure_core::credentials::Secret::new(
                c.client_secret
                    .as_ref()
                    .map(|s| s.expose().to_string())
                    .unwrap_or_default(),
            ),
            None,
        )
        .map_err(|e| e.to_string())?,
        EventHubAuth::WorkloadIdentity => {
            azure_identity::WorkloadIdentityCredential::new(None).map_err(|e| e.to_string())?
        }
        EventHubAuth::ManagedIdentity => {
            let options = azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id: c.client_id.clone().map(azure_identity::UserAssignedId::ClientId),
                ..Default::default()
            };
            azure_identity::ManagedIdentityCredential::new(Some(options)).map_err(|e| e.to_string())?
        }
        EventHubAuth::ConnectionString => return Err("connection strings carry their own credential".into()),
    };
    Ok(cred)
}

pub(super) async fn open_consumer(cfg: &Resolved) -> Result<ConsumerClient, String> {
    let mut builder = ConsumerClient::builder()
        .with_consumer_group(cfg.hub.consumer_group.clone())
        .with_application_id(cfg.instance.clone())
        .with_retry_options(RetryOptions {
            max_delay: azure_core::time::Duration::seconds(5),
            max_total_elapsed: azure_core::time::Duration::seconds(30),
            ..Default::default()
        });
    if let Some(e) = &cfg.config.custom_endpoint {
        builder = builder.with_custom_endpoint(e.clone());
    }
    let r = match cfg.config.auth {
        EventHubAuth::ConnectionString => {
            let cs = cfg
                .config
                .connection_string
                .as_ref()
                .map(|s| s.expose())
                .unwrap_or_default();
            builder.open_with_connection_string(cs, Some(&cfg.hub.event_hub)).await
        }
        _ => {
            builder
                .open(&cfg.hub.namespace, cfg.hub.event_hub.clone(), credential(cfg)?)
                .await
        }
    };
    r.map_err(|e| format!("open consumer: {}", chain(&e)))
}

/// First-run positions. `latest` is pinned to each partition's current last sequence number,
/// so a receiver re-attached by the SDK after a connection loss does not skip what arrived
/// in between.
async fn start_positions(inner: &Inner, client: &ConsumerClient) -> Result<StartPositions, String> {
    let default = match &inner.cfg.start {
        Start::Earliest => StartPosition {
            location: StartLocation::Earliest,
            inclusive: false,
        },
        Start::Latest => StartPosition {
            location: StartLocation::Latest,
            inclusive: false,
        },
        Start::EnqueuedTime(t) => StartPosition {
            location: StartLocation::EnqueuedTime(*t),
            inclusive: true,
        },
    };
    let mut per_partition = HashMap::new();
    if inner.cfg.start == Start::Latest {
        let props = client.get_eventhub_properties().await.map_err(|e| e.to_string())?;
        for p in props.partition_ids {
            let pp = client.get_partition_properties(&p).await.map_err(|e| e.to_string())?;
            // An empty partition (new, or every event past retention) starts at its
            // beginning, and so does its pin: offset -1 (the SDK then asks for
            // `x-opt-offset > '-1'`, as for `earliest`; a sequence number filter of -1 is
            // reported not to work on a new hub) with the last sequence number it had, so
            // what comes later is read however late the partition is opened again.
            let (location, offset) = if pp.is_empty {
                (StartLocation::Earliest, Some("-1".to_string()))
            } else {
                (
                    StartLocation::SequenceNumber(pp.last_enqueued_sequence_number),
                    Some(pp.last_enqueued_offset.clone()),
                )
            };
            let pin = inner.cfg.hub.checkpoint(pp.last_enqueued_sequence_number, offset);
            inner
                .latest
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p.clone(), pin);
            per_partition.insert(
                p,
                StartPosition {
                    location,
                    inclusive: false,
                },
            );
        }
    }
    Ok(StartPositions { per_partition, default })
}

/// An error with its causes (the SDK's top-level message alone often hides the reason, such
/// as a 401 from the service), repeated messages left out.
pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = c.source();
    }
    parts.join(": ")
}

/// How long a claim lasts without renewal: three renewal intervals, plus 2 s because a blob's
/// `Last-Modified` (the claim time other replicas see) has a resolution of one second and
/// replicas' clocks differ a little. A stopped replica's partitions move after this long.
pub(super) fn expiration(interval: Duration) -> Duration {
    interval * 3 + Duration::from_secs(2)
}

/// One connection: the processor hands out partitions until shutdown or a failure.
async fn session(inner: &Shared) -> Result<(), String> {
    let client = open_consumer(&inner.cfg).await?;
    let positions = start_positions(inner, &client).await?;
    if !inner.store.is_shared() {
        inner.store.clear_ownerships();
    }
    let interval = Duration::from_millis(inner.cfg.config.ownership_interval_ms);
    let processor = EventProcessor::builder()
        .with_load_balancing_strategy(ProcessorStrategy::Greedy)
        .with_update_interval(azure_core::time::Duration::milliseconds(interval.as_millis() as i64))
        .with_partition_expiration_duration(azure_core::time::Duration::milliseconds(
            expiration(interval).as_millis() as i64,
        ))
        .with_start_positions(positions)
        .with_prefetch(inner.cfg.config.prefetch)
        .build(client, inner.store.clone())
        .await
        .map_err(|e| format!("event processor: {}", chain(&e)))?;
    tracing::info!(
        namespace = %inner.cfg.hub.namespace,
        event_hub = %inner.cfg.hub.event_hub,
        consumer_group = %inner.cfg.hub.consumer_group,
        "event hub connected"
    );

    let stop = inner.ctx.shutdown.child_token();
    let mut run = tokio::task::spawn_local({
        let p = processor.clone();
        async move { p.run().await }
    });
    // Partitions not opened yet count from now.
    let opened = Instant::now();
    inner
        .progress
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values_mut()
        .for_each(|t| *t = opened);
    let stalled = CancellationToken::new();
    let watch = tokio::task::spawn_local(super::watch::watch(
        inner.clone(),
        opened,
        stop.clone(),
        stalled.clone(),
    ));
    let mut partitions = JoinSet::new();
    let mut run_done = false;
    let result = loop {
        tokio::select! {
            _ = inner.ctx.shutdown.cancelled() => break Ok(()),
            _ = stalled.cancelled() => break Err("partitions made no progress; reconnecting".to_string()),
            r = &mut run => {
                run_done = true;
                break Err(match r {
                    Ok(Ok(())) => "event processor stopped".to_string(),
                    Ok(Err(e)) => format!("event processor: {}", chain(&e)),
                    Err(e) => format!("event processor task: {e}"),
                });
            }
            next = processor.next_partition_client() => match next {
                Ok(pc) => {
                    inner.ctx.health.source_ok(&inner.ctx.name);
                    partitions.spawn_local(read_partition(inner.clone(), pc, stop.clone(), stalled.clone()));
                }
                Err(e) => break Err(format!("next partition: {}", chain(&e))),
            },
            Some(done) = partitions.join_next(), if !partitions.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "partition task failed");
                }
            }
        }
    };
    // Stop reading; every partition task sends what it collected before it ends.
    stop.cancel();
    watch.abort();
    let _ = processor.shutdown().await;
    if !run_done {
        run.abort();
        let _ = run.await;
    }
    while let Some(done) = partitions.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "partition task failed");
        }
    }
    if let Ok(p) = Arc::try_unwrap(processor) {
        if tokio::time::timeout(Duration::from_secs(5), p.close()).await.is_err() {
            tracing::debug!("closing the event hub connection timed out");
        }
    }
    result
}

/// Position of one message inside the partition, for dedup and checkpoints.
struct Read {
    sequence: i64,
    offset: Option<String>,
}

/// Read one owned partition until its stream ends, shutdown, or `stop`.
async fn read_partition(inner: Shared, pc: Arc<PartitionClient>, stop: CancellationToken, broken: CancellationToken) {
    let ctx = &inner.ctx;
    let pid = pc.get_partition_id().to_string();
    let labels = EventHubMetrics::partition(&ctx.name, &pid);
    let mut builder = BatchBuilder::new(ctx.name.clone(), Arc::from(pid.as_str()), ctx.batch_max_events);
    inner
        .reading
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pid.clone());
    // Everything at or before this sequence number was already handed to the pipeline.
    let mut last = inner.store.resume_point(&pid).await.map(|c| c.sequence_number);
    let mut abandon = false;
    if last.is_none() {
        let pin = inner
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pid)
            .cloned();
        if let Some(pin) = pin {
            let seq = pin.sequence_number;
            match inner.store.pin_start(&pid, pin).await {
                Ok(None) => last = Some(seq),
                // A checkpoint the SDK did not see (its read failed): start again from it.
                Ok(Some(c)) => {
                    tracing::warn!(partition = %pid, checkpoint = c.sequence_number, "partition has a checkpoint the connection did not start from; reconnecting");
                    broken.cancel();
                    abandon = true;
                }
                Err(e) => {
                    tracing::warn!(partition = %pid, error = %e, "cannot store where `latest` starts; reconnecting");
                    broken.cancel();
                    abandon = true;
                }
            }
        }
    }
    let mut unsent: Option<Read> = None;
    tracing::info!(partition = %pid, resume_after = ?last, "partition opened");
    let mut received = false;
    let mut stolen = false;
    if !abandon {
        let stream = pc.stream_events();
        futures_util::pin_mut!(stream);
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => break,
                n = tokio::time::timeout(QUIET, stream.next()) => n,
            };
            match next {
                Err(_) => {
                    if !flush(&inner, &pid, &mut builder, &mut unsent).await {
                        break;
                    }
                }
                Ok(None) => {
                    tracing::info!(partition = %pid, "partition stream ended");
                    ctx.metrics.eventhub.reconnects.get_or_create(&labels).inc();
                    break;
                }
                Ok(Some(Err(e))) if matches!(e.kind, ErrorKind::ConsumerDisconnected(_)) => {
                    // `amqp:link:stolen`: another receiver (a replica that claimed the
                    // partition, or an epoch receiver) took it. Not a connection failure:
                    // the processor reopens it only while this replica still owns it.
                    ctx.metrics.eventhub.stolen.get_or_create(&labels).inc();
                    // Not a stall: reconnecting would not get it back.
                    inner.touch(&pid);
                    tracing::info!(partition = %pid, "partition taken by another receiver; giving it up");
                    stolen = true;
                    break;
                }
                Ok(Some(Err(e))) => {
                    ctx.metrics.error(&ctx.name, "eventhub_receive");
                    ctx.metrics.eventhub.reconnects.get_or_create(&labels).inc();
                    tracing::warn!(partition = %pid, error = %e, "partition receive failed; it is reopened");
                    break;
                }
                Ok(Some(Ok(ev))) => {
                    inner.touch(&pid);
                    received = true;
                    let Some(seq) = ev.sequence_number() else {
                        ctx.metrics.error(&ctx.name, "eventhub_no_sequence");
                        tracing::warn!(partition = %pid, "event without a sequence number; skipped");
                        continue;
                    };
                    if last.is_some_and(|l| seq <= l) {
                        // Sent again after the SDK re-attached from its first position.
                        ctx.metrics.eventhub.redelivered.get_or_create(&labels).inc();
                        continue;
                    }
                    if let Some(l) = last {
                        if seq != l + 1 {
                            tracing::warn!(partition = %pid, after = l, got = seq, "sequence numbers skip (retention or a reset partition)");
                        }
                    }
                    last = Some(seq);
                    push_event(&inner, &pid, &mut builder, &ev, seq);
                    unsent = Some(Read {
                        sequence: seq,
                        offset: ev.offset().clone(),
                    });
                    if builder.is_full() && !flush(&inner, &pid, &mut builder, &mut unsent).await {
                        break;
                    }
                }
            }
        }
    }
    flush(&inner, &pid, &mut builder, &mut unsent).await;
    inner.reading.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
    // A partition that keeps failing before its first event has a broken connection under
    // it, which the client library does not always recover: reconnect from scratch.
    let failures = {
        let mut f = inner.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(pid.clone()).or_insert(0);
        *n = if received || stolen || stop.is_cancelled() {
            0
        } else {
            *n + 1
        };
        *n
    };
    if failures >= FAILURES_BEFORE_RECONNECT {
        tracing::warn!(partition = %pid, failures, "partition reopened repeatedly without events; reconnecting");
        inner.failures.lock().unwrap_or_else(|e| e.into_inner()).clear();
        broken.cancel();
    }
    // Closing removes the partition from the processor's map, so it reopens it on its next
    // cycle (from `resume_point`) while this process still owns it.
    match Arc::try_unwrap(pc) {
        Ok(pc) => {
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), pc.close()).await {
                tracing::debug!(partition = %pid, error = %e, "closing the partition receiver");
            }
        }
        Err(_) => tracing::warn!(partition = %pid, "partition client still shared; not closed"),
    }
}

fn push_event(inner: &Inner, pid: &str, builder: &mut BatchBuilder, ev: &ReceivedEventData, seq: i64) {
    let ctx = &inner.ctx;
    let body = Bytes::copy_from_slice(ev.event_data().body().unwrap_or_default());
    let decoded = if body.is_empty() {
        Err(DecodeError::Empty)
    } else {
        decode_unit(inner.cfg.config.format, body.clone())
    };
    if let Ok(unit) = &decoded {
        for r in unit.records.iter().filter(|r| r.kind == EventKind::Generic) {
            ctx.metrics
                .eventhub
                .unknown_categories
                .get_or_create(&crate::telemetry::CategoryLabels {
                    source: ctx.name.to_string(),
                    category: ctx.metrics.category_label(&r.category),
                })
                .inc();
        }
    }
    let offset = ev.offset().clone();
    let position = offset
        .as_deref()
        .and_then(|o| o.parse::<u64>().ok())
        .unwrap_or(seq.max(0) as u64);
    let checkpoint = inner.cfg.hub.checkpoint(seq, offset).encode();
    tracing::trace!(partition = pid, sequence = seq, "event");
    builder.push_unit_with_sequence(position, seq, &body, decoded, Some(checkpoint), &ctx.metrics);
}

/// A partition waiting for the pipeline (a slow or failing sink) is not stalled: marked
/// while it waits, and counted as progress once the batch is taken.
struct Sending<'a> {
    inner: &'a Inner,
    pid: &'a str,
}

impl<'a> Sending<'a> {
    fn new(inner: &'a Inner, pid: &'a str) -> Sending<'a> {
        inner
            .sending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid.to_string());
        Sending { inner, pid }
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.inner
            .sending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.pid);
        self.inner.touch(self.pid);
    }
}

/// Send what was collected; remember how far this process has read. False when the
/// pipeline is closing.
async fn flush(inner: &Inner, pid: &str, builder: &mut BatchBuilder, unsent: &mut Option<Read>) -> bool {
    if builder.is_empty() && !builder.has_checkpoint() {
        return true;
    }
    let sent = {
        let _waiting = Sending::new(inner, pid);
        inner.ctx.send(builder.take(&inner.ctx.acks)).await
    };
    if let Err(e) = sent {
        tracing::debug!(partition = pid, error = %e, "batch not sent");
        return false;
    }
    if let Some(r) = unsent.take() {
        inner
            .store
            .set_read_through(pid, inner.cfg.hub.checkpoint(r.sequence, r.offset));
    }
    true
}
