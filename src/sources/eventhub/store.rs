//! The SDK's `CheckpointStore` of the source, over one of two backends. `embedded`: checkpoints
//! (offset and sequence number per partition) live in the forwarder's store and ownership
//! claims are kept in process with ETag semantics (one replica owns the embedded store).
//! `blob`: both live in an Azure Blob Storage container shared by every replica (see
//! `blobstore`). Either way the pipeline's committer writes checkpoints only for the
//! acknowledged prefix, and what this process already read is remembered in process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use azure_core::http::Etag;
use azure_core::time::OffsetDateTime;
use azure_messaging_eventhubs::models::{Checkpoint, Ownership};
use serde::{Deserialize, Serialize};

use super::blobstore::BlobStore;
use crate::checkpoint::{CheckpointKey, CheckpointStore as Store};

/// What the forwarder stores per partition: the position of the last message whose every
/// record was delivered or dead-lettered, and which hub it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCheckpoint {
    pub namespace: String,
    pub event_hub: String,
    pub consumer_group: String,
    pub sequence_number: i64,
    pub offset: Option<String>,
}

impl StoredCheckpoint {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("checkpoint serializes")
    }

    pub fn decode(s: &str) -> Option<StoredCheckpoint> {
        serde_json::from_str(s).ok()
    }
}

/// Identity of the hub a source reads.
#[derive(Clone, Debug)]
pub struct HubIdentity {
    pub namespace: String,
    pub event_hub: String,
    pub consumer_group: String,
}

impl HubIdentity {
    fn matches(&self, namespace: &str, event_hub: &str, consumer_group: &str) -> bool {
        self.namespace.eq_ignore_ascii_case(namespace)
            && self.event_hub == event_hub
            && self.consumer_group.eq_ignore_ascii_case(consumer_group)
    }

    pub fn checkpoint(&self, sequence_number: i64, offset: Option<String>) -> StoredCheckpoint {
        StoredCheckpoint {
            namespace: self.namespace.clone(),
            event_hub: self.event_hub.clone(),
            consumer_group: self.consumer_group.clone(),
            sequence_number,
            offset,
        }
    }
}

/// Where checkpoints and claims are kept.
pub enum Backend {
    /// The forwarder's own store, with claims in process.
    Embedded(Arc<dyn Store>),
    /// A blob container shared by the replicas.
    Blob(BlobStore),
}

/// The `CheckpointStore` of one `eventhub` source.
pub struct SourceStore {
    source: String,
    hub: HubIdentity,
    backend: Backend,
    ownerships: Mutex<HashMap<String, Ownership>>,
    /// Position read (and handed to the pipeline) in this process, per partition. A partition
    /// reopened inside the process continues after it, not after the (older) committed
    /// checkpoint, so a reconnect neither loses nor re-reads events.
    read_through: Mutex<HashMap<String, StoredCheckpoint>>,
}

impl std::fmt::Debug for SourceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceStore").field("source", &self.source).finish()
    }
}

fn error(message: String) -> azure_core::Error {
    azure_core::Error::with_message(azure_core::error::ErrorKind::Other, message)
}

impl SourceStore {
    pub fn new(source: &str, hub: HubIdentity, backend: Backend) -> SourceStore {
        SourceStore {
            source: source.to_string(),
            hub,
            backend,
            ownerships: Mutex::new(HashMap::new()),
            read_through: Mutex::new(HashMap::new()),
        }
    }

    /// True when claims are shared with other replicas.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Blob(_))
    }

    /// Forget every in-process claim: a new connection of this (single) replica starts over.
    pub fn clear_ownerships(&self) {
        self.ownerships.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The committed checkpoint of a partition, if any (`None` too when it cannot be read).
    pub async fn committed(&self, partition: &str) -> Option<StoredCheckpoint> {
        match &self.backend {
            Backend::Embedded(store) => {
                let key = CheckpointKey::new(&self.source, None, partition);
                let value = store.get(&key).ok()??;
                StoredCheckpoint::decode(&value)
                    .filter(|c| self.hub.matches(&c.namespace, &c.event_hub, &c.consumer_group))
            }
            Backend::Blob(b) => match b.checkpoint(&self.hub, partition).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(partition, error = %e, "reading the checkpoint blob failed");
                    None
                }
            },
        }
    }

    pub fn read_through(&self, partition: &str) -> Option<StoredCheckpoint> {
        self.read_through
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(partition)
            .cloned()
    }

    pub fn set_read_through(&self, partition: &str, position: StoredCheckpoint) {
        self.read_through
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(partition.to_string(), position);
    }

    /// A partition opened with no checkpoint and no read position, at `pin` (the last
    /// sequence number it had when `start = "latest"` was resolved): store `pin` as its
    /// checkpoint, so a reconnect or a restart goes on from there and does not resolve
    /// `latest` again past what arrived in between. Only when no checkpoint is stored: then
    /// that one is returned (and the caller must not trust where the SDK started).
    pub async fn pin_start(&self, partition: &str, pin: StoredCheckpoint) -> Result<Option<StoredCheckpoint>, String> {
        let stored = match &self.backend {
            Backend::Embedded(store) => {
                let key = CheckpointKey::new(&self.source, None, partition);
                let current = store
                    .get(&key)
                    .map_err(|e| e.to_string())?
                    .and_then(|v| StoredCheckpoint::decode(&v))
                    .filter(|c| self.hub.matches(&c.namespace, &c.event_hub, &c.consumer_group));
                if current.is_none() {
                    store.commit(&[(key, pin.encode())]).map_err(|e| e.to_string())?;
                }
                current
            }
            Backend::Blob(b) => b
                .create_checkpoint(&self.hub, partition, &pin)
                .await
                .map_err(|e| e.to_string())?,
        };
        if stored.is_none() {
            self.set_read_through(partition, pin);
        }
        Ok(stored)
    }

    /// Where a (re)opened partition resumes: the newer of the committed checkpoint and what
    /// this process already read.
    pub async fn resume_point(&self, partition: &str) -> Option<StoredCheckpoint> {
        let committed = self.committed(partition).await;
        Self::newer(committed, self.read_through(partition))
    }

    fn newer(committed: Option<StoredCheckpoint>, read: Option<StoredCheckpoint>) -> Option<StoredCheckpoint> {
        match (committed, read) {
            (Some(c), Some(r)) => Some(if r.sequence_number > c.sequence_number { r } else { c }),
            (c, r) => c.or(r),
        }
    }

    fn claim(&self, o: &Ownership) -> Option<Ownership> {
        let mut map = self.ownerships.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = map.get(&o.partition_id) {
            if existing.etag != o.etag {
                // Someone renewed or took it since the caller listed: the claim is lost.
                tracing::debug!(partition = %o.partition_id, "ownership claim lost (etag changed)");
                return None;
            }
        } else if o.etag.is_some() {
            // The caller expects a record that no longer exists (If-Match on a missing blob).
            return None;
        }
        let mut claimed = o.clone();
        claimed.etag = Some(Etag::from(uuid_like()));
        claimed.last_modified_time = Some(OffsetDateTime::now_utc());
        map.insert(o.partition_id.clone(), claimed.clone());
        Some(claimed)
    }
}

/// A fresh ETag value (unique within the process).
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "\"{:x}-{:x}\"",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[async_trait::async_trait]
impl azure_messaging_eventhubs::CheckpointStore for SourceStore {
    async fn claim_ownership(&self, ownerships: &[Ownership]) -> azure_core::Result<Vec<Ownership>> {
        let ours = ownerships.iter().filter(|o| {
            self.hub
                .matches(&o.fully_qualified_namespace, &o.event_hub_name, &o.consumer_group)
        });
        match &self.backend {
            Backend::Embedded(_) => Ok(ours.filter_map(|o| self.claim(o)).collect()),
            Backend::Blob(b) => {
                let mut won = Vec::new();
                for o in ours {
                    if let Some(c) = b.claim(o).await.map_err(|e| error(e.to_string()))? {
                        won.push(c);
                    }
                }
                Ok(won)
            }
        }
    }

    async fn list_checkpoints(
        &self,
        namespace: &str,
        event_hub_name: &str,
        consumer_group: &str,
    ) -> azure_core::Result<Vec<Checkpoint>> {
        if !self.hub.matches(namespace, event_hub_name, consumer_group) {
            return Ok(Vec::new());
        }
        let mut committed: HashMap<String, StoredCheckpoint> = HashMap::new();
        match &self.backend {
            Backend::Embedded(store) => {
                for (k, v) in store.list(&self.source).map_err(|e| error(e.to_string()))? {
                    if let Some(c) = StoredCheckpoint::decode(&v)
                        .filter(|c| self.hub.matches(&c.namespace, &c.event_hub, &c.consumer_group))
                    {
                        committed.insert(k.partition, c);
                    }
                }
            }
            Backend::Blob(b) => {
                for c in b
                    .checkpoints(namespace, event_hub_name, consumer_group)
                    .await
                    .map_err(|e| error(e.to_string()))?
                {
                    if let Some(seq) = c.sequence_number {
                        committed.insert(c.partition_id, self.hub.checkpoint(seq, c.offset));
                    }
                }
            }
        }
        let mut partitions: Vec<String> = committed.keys().cloned().collect();
        partitions.extend(
            self.read_through
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned(),
        );
        partitions.sort();
        partitions.dedup();
        Ok(partitions
            .into_iter()
            .filter_map(|p| {
                let c = Self::newer(committed.get(&p).cloned(), self.read_through(&p))?;
                Some(Checkpoint {
                    fully_qualified_namespace: namespace.to_string(),
                    event_hub_name: event_hub_name.to_string(),
                    consumer_group: consumer_group.to_string(),
                    partition_id: p,
                    offset: c.offset,
                    sequence_number: Some(c.sequence_number),
                })
            })
            .collect())
    }

    async fn list_ownerships(
        &self,
        namespace: &str,
        event_hub_name: &str,
        consumer_group: &str,
    ) -> azure_core::Result<Vec<Ownership>> {
        if !self.hub.matches(namespace, event_hub_name, consumer_group) {
            return Ok(Vec::new());
        }
        if let Backend::Blob(b) = &self.backend {
            return b
                .ownerships(namespace, event_hub_name, consumer_group)
                .await
                .map_err(|e| error(e.to_string()));
        }
        let mut v: Vec<Ownership> = self
            .ownerships
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.partition_id.cmp(&b.partition_id));
        Ok(v)
    }

    /// Not used by the forwarder (its committer writes acknowledged checkpoints); kept
    /// correct for any caller of `PartitionClient::update_checkpoint`.
    async fn update_checkpoint(&self, checkpoint: Checkpoint) -> azure_core::Result<()> {
        let Some(seq) = checkpoint.sequence_number else {
            return Err(error("checkpoint without a sequence number".into()));
        };
        let c = self.hub.checkpoint(seq, checkpoint.offset);
        match &self.backend {
            Backend::Embedded(store) => {
                let key = CheckpointKey::new(&self.source, None, &checkpoint.partition_id);
                store.commit(&[(key, c.encode())]).map_err(|e| error(e.to_string()))
            }
            Backend::Blob(b) => b
                .write_checkpoint(&self.hub, &checkpoint.partition_id, &c)
                .await
                .map_err(|e| error(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::MemoryCheckpointStore;
    use azure_messaging_eventhubs::CheckpointStore as _;

    fn hub() -> HubIdentity {
        HubIdentity {
            namespace: "ns.servicebus.windows.net".into(),
            event_hub: "hub".into(),
            consumer_group: "$Default".into(),
        }
    }

    fn ownership(p: &str, etag: Option<Etag>) -> Ownership {
        Ownership {
            fully_qualified_namespace: "ns.servicebus.windows.net".into(),
            event_hub_name: "hub".into(),
            consumer_group: "$Default".into(),
            partition_id: p.into(),
            owner_id: Some("me".into()),
            etag,
            last_modified_time: None,
        }
    }

    #[tokio::test]
    async fn claims_follow_etags_and_checkpoints_take_the_newer_position() {
        let mem: Arc<dyn Store> = Arc::new(MemoryCheckpointStore::default());
        let s = SourceStore::new("eh", hub(), Backend::Embedded(mem.clone()));
        let first = s.claim_ownership(&[ownership("0", None)]).await.unwrap();
        assert_eq!(first.len(), 1);
        // A second create of the same partition loses (If-None-Match: *).
        assert!(s.claim_ownership(&[ownership("0", None)]).await.unwrap().is_empty());
        // A renewal with the current etag wins and rotates it; the old etag then loses.
        let renewed = s.claim_ownership(&[first[0].clone()]).await.unwrap();
        assert_eq!(renewed.len(), 1);
        assert_ne!(renewed[0].etag, first[0].etag);
        assert!(s.claim_ownership(&[first[0].clone()]).await.unwrap().is_empty());

        mem.commit(&[(
            CheckpointKey::new("eh", None, "0"),
            hub().checkpoint(41, Some("4100".into())).encode(),
        )])
        .unwrap();
        let cps = s
            .list_checkpoints("ns.servicebus.windows.net", "hub", "$Default")
            .await
            .unwrap();
        assert_eq!(cps[0].sequence_number, Some(41));
        s.set_read_through("0", hub().checkpoint(50, Some("5000".into())));
        let cps = s
            .list_checkpoints("ns.servicebus.windows.net", "hub", "$Default")
            .await
            .unwrap();
        assert_eq!(
            (cps[0].sequence_number, cps[0].offset.as_deref()),
            (Some(50), Some("5000"))
        );
        // Another hub's checkpoints are not ours.
        assert!(s
            .list_checkpoints("ns.servicebus.windows.net", "other", "$Default")
            .await
            .unwrap()
            .is_empty());
    }
}
