//! Checkpoints and partition ownership in an Azure Blob Storage container, in the layout the
//! official Event Hubs SDKs use, so several forwarder replicas (or other SDK consumers of the
//! same group) share partitions: one empty blob per partition,
//! `{namespace}/{eventhub}/{consumergroup}/ownership/{partition}` with metadata `ownerid`, and
//! `.../checkpoint/{partition}` with `sequencenumber` and `offset`. The three name parts are
//! lower-cased, as the .NET store does (the Go and Rust stores keep them as given: with the
//! usual lower-case namespace and hub, a group such as `$Default` is where they differ, so
//! share a container with those only under a lower-case group name). A claim is a write
//! conditioned on the ETag the claimant listed (`If-Match`), or `If-None-Match: *` for a
//! partition nobody claimed yet; 412 or 409 means another replica won, which is not an error.
//! A checkpoint write never moves a partition's checkpoint backwards (a replica that lost a
//! partition may still commit what it had in flight).

use std::collections::BTreeMap;

use azure_core::http::Etag;
use azure_core::time::OffsetDateTime;
use azure_messaging_eventhubs::models::{Checkpoint, Ownership};

use super::blob::{BlobClient, BlobError, BlobItem, Condition};
use super::store::{HubIdentity, StoredCheckpoint};
use crate::checkpoint::{CheckpointError, CheckpointKey, CheckpointStore as Store};

const OWNER_ID: &str = "ownerid";
const OFFSET: &str = "offset";
const SEQUENCE_NUMBER: &str = "sequencenumber";

/// `{namespace}/{eventhub}/{consumergroup}/{kind}/`, lower-cased.
pub fn prefix(namespace: &str, event_hub: &str, consumer_group: &str, kind: &str) -> String {
    format!("{namespace}/{event_hub}/{consumer_group}/{kind}/").to_ascii_lowercase()
}

/// The blob checkpoint store of one hub and consumer group.
#[derive(Clone, Debug)]
pub struct BlobStore {
    client: BlobClient,
}

fn is_lost_race(e: &BlobError) -> bool {
    matches!(e.status(), Some(409) | Some(412))
}

fn partition_of(name: &str) -> String {
    name.rsplit('/').next().unwrap_or_default().to_string()
}

fn modified(item: &BlobItem) -> Option<OffsetDateTime> {
    azure_core::time::parse_rfc7231(&item.last_modified).ok()
}

impl BlobStore {
    pub fn new(client: BlobClient) -> BlobStore {
        BlobStore { client }
    }

    pub fn client(&self) -> &BlobClient {
        &self.client
    }

    /// Claim one partition: `Some` with the new ETag when this write won.
    pub async fn claim(&self, o: &Ownership) -> Result<Option<Ownership>, BlobError> {
        let name = prefix(
            &o.fully_qualified_namespace,
            &o.event_hub_name,
            &o.consumer_group,
            "ownership",
        ) + &o.partition_id;
        let mut meta = BTreeMap::new();
        // An ownership given up (no owner) keeps an empty owner id, as the other SDKs write it.
        meta.insert(OWNER_ID.to_string(), o.owner_id.clone().unwrap_or_default());
        let result = match &o.etag {
            Some(etag) => {
                self.client
                    .set_metadata(&name, &meta, Condition::Match(etag.as_ref()))
                    .await
            }
            None => self.client.put_blob(&name, &meta, Condition::Absent).await,
        };
        match result {
            Ok(item) => Ok(Some(Ownership {
                etag: Some(Etag::from(item.etag.clone())),
                last_modified_time: modified(&item),
                ..o.clone()
            })),
            Err(e) if is_lost_race(&e) || (o.etag.is_some() && e.status() == Some(404)) => {
                tracing::debug!(partition = %o.partition_id, status = ?e.status(), "ownership claim lost");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub async fn ownerships(&self, namespace: &str, event_hub: &str, group: &str) -> Result<Vec<Ownership>, BlobError> {
        let items = self
            .client
            .list(&prefix(namespace, event_hub, group, "ownership"))
            .await?;
        Ok(items
            .iter()
            .map(|item| Ownership {
                fully_qualified_namespace: namespace.to_string(),
                event_hub_name: event_hub.to_string(),
                consumer_group: group.to_string(),
                partition_id: partition_of(&item.name),
                owner_id: item.metadata.get(OWNER_ID).filter(|s| !s.is_empty()).cloned(),
                etag: Some(Etag::from(item.etag.clone())),
                last_modified_time: modified(item),
            })
            .collect())
    }

    pub async fn checkpoints(
        &self,
        namespace: &str,
        event_hub: &str,
        group: &str,
    ) -> Result<Vec<Checkpoint>, BlobError> {
        let items = self
            .client
            .list(&prefix(namespace, event_hub, group, "checkpoint"))
            .await?;
        Ok(items
            .iter()
            .map(|item| Checkpoint {
                fully_qualified_namespace: namespace.to_string(),
                event_hub_name: event_hub.to_string(),
                consumer_group: group.to_string(),
                partition_id: partition_of(&item.name),
                offset: item.metadata.get(OFFSET).filter(|s| !s.is_empty()).cloned(),
                sequence_number: item.metadata.get(SEQUENCE_NUMBER).and_then(|s| s.parse().ok()),
            })
            .collect())
    }

    /// The checkpoint of one partition.
    pub async fn checkpoint(&self, hub: &HubIdentity, partition: &str) -> Result<Option<StoredCheckpoint>, BlobError> {
        let name = prefix(&hub.namespace, &hub.event_hub, &hub.consumer_group, "checkpoint") + partition;
        let item = self.client.properties(&name).await?;
        Ok(item.and_then(|i| {
            let seq = i.metadata.get(SEQUENCE_NUMBER)?.parse().ok()?;
            Some(hub.checkpoint(seq, i.metadata.get(OFFSET).filter(|s| !s.is_empty()).cloned()))
        }))
    }

    /// Write a checkpoint unless the stored one is already at or past it.
    pub async fn write_checkpoint(
        &self,
        hub: &HubIdentity,
        partition: &str,
        c: &StoredCheckpoint,
    ) -> Result<(), BlobError> {
        let name = prefix(&hub.namespace, &hub.event_hub, &hub.consumer_group, "checkpoint") + partition;
        let mut meta = BTreeMap::new();
        meta.insert(SEQUENCE_NUMBER.to_string(), c.sequence_number.to_string());
        if let Some(o) = &c.offset {
            meta.insert(OFFSET.to_string(), o.clone());
        }
        for _ in 0..5 {
            let current = self.client.properties(&name).await?;
            let result = match &current {
                Some(item) => {
                    let stored: Option<i64> = item.metadata.get(SEQUENCE_NUMBER).and_then(|s| s.parse().ok());
                    if stored.is_some_and(|s| s >= c.sequence_number) {
                        return Ok(());
                    }
                    self.client
                        .set_metadata(&name, &meta, Condition::Match(&item.etag))
                        .await
                }
                None => self.client.put_blob(&name, &meta, Condition::Absent).await,
            };
            match result {
                Ok(_) => return Ok(()),
                // Another replica wrote in between: read again.
                Err(e) if is_lost_race(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(BlobError::Response(format!(
            "checkpoint of partition {partition} kept changing under the write"
        )))
    }

    /// Write `c` only if the partition has no checkpoint; else the stored one (which wins).
    pub async fn create_checkpoint(
        &self,
        hub: &HubIdentity,
        partition: &str,
        c: &StoredCheckpoint,
    ) -> Result<Option<StoredCheckpoint>, BlobError> {
        if let Some(stored) = self.checkpoint(hub, partition).await? {
            return Ok(Some(stored));
        }
        let name = prefix(&hub.namespace, &hub.event_hub, &hub.consumer_group, "checkpoint") + partition;
        let mut meta = BTreeMap::new();
        meta.insert(SEQUENCE_NUMBER.to_string(), c.sequence_number.to_string());
        if let Some(o) = &c.offset {
            meta.insert(OFFSET.to_string(), o.clone());
        }
        match self.client.put_blob(&name, &meta, Condition::Absent).await {
            Ok(_) => Ok(None),
            // Another writer created it first: that one stands. One without a readable
            // sequence number (another tool's) is no position: write over it (never past a
            // readable one another replica may have written meanwhile), then say which won.
            Err(e) if is_lost_race(&e) => match self.checkpoint(hub, partition).await? {
                Some(c) => Ok(Some(c)),
                None => {
                    self.write_checkpoint(hub, partition, c).await?;
                    Ok(self.checkpoint(hub, partition).await?.filter(|stored| stored != c))
                }
            },
            Err(e) => Err(e),
        }
    }
}

/// The pipeline committer's view of the blob store: acknowledged checkpoints (the values the
/// source attached to its batches) go to the checkpoint blobs. The committer calls `commit`
/// on a blocking thread; each call runs on a short-lived runtime of its own.
#[derive(Debug)]
pub struct BlobCommitter {
    store: BlobStore,
    container: String,
}

impl BlobCommitter {
    pub fn new(store: BlobStore, container: &str) -> BlobCommitter {
        BlobCommitter {
            store,
            container: container.to_string(),
        }
    }

    fn run<T: Send>(
        &self,
        f: impl std::future::Future<Output = Result<T, BlobError>> + Send,
    ) -> Result<T, CheckpointError> {
        let io = |e: String| CheckpointError::Io {
            path: format!("blob container {}", self.container).into(),
            source: std::io::Error::other(e),
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| io(e.to_string()))?;
                rt.block_on(f).map_err(|e| io(e.to_string()))
            })
            .join()
            .unwrap_or_else(|_| Err(io("blob checkpoint thread panicked".into())))
        })
    }
}

impl Store for BlobCommitter {
    fn get(&self, _key: &CheckpointKey) -> Result<Option<String>, CheckpointError> {
        // Positions are read by the source from the blobs themselves (with their hub).
        Ok(None)
    }

    fn commit(&self, values: &[(CheckpointKey, String)]) -> Result<(), CheckpointError> {
        let decoded: Vec<(String, StoredCheckpoint)> = values
            .iter()
            .filter_map(|(k, v)| Some((k.partition.clone(), StoredCheckpoint::decode(v)?)))
            .collect();
        self.run(async {
            for (partition, c) in &decoded {
                let hub = HubIdentity {
                    namespace: c.namespace.clone(),
                    event_hub: c.event_hub.clone(),
                    consumer_group: c.consumer_group.clone(),
                };
                self.store.write_checkpoint(&hub, partition, c).await?;
            }
            Ok(())
        })
    }

    fn list(&self, _source: &str) -> Result<Vec<(CheckpointKey, String)>, CheckpointError> {
        Ok(Vec::new())
    }
}
