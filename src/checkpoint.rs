//! Checkpoint store: where sources keep offsets and watermarks, keyed by source, tenant
//! and partition. The embedded default is a JSON file replaced atomically with fsync.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint store {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

/// Identifies one checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CheckpointKey {
    pub source: String,
    pub tenant: String,
    pub partition: String,
}

impl CheckpointKey {
    pub fn new(source: &str, tenant: Option<&str>, partition: &str) -> CheckpointKey {
        CheckpointKey {
            source: source.to_string(),
            tenant: tenant.unwrap_or("-").to_string(),
            partition: partition.to_string(),
        }
    }
}

impl fmt::Display for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.source, self.tenant, self.partition)
    }
}

const TENANT_SEPARATOR: char = '\u{1f}';

/// The partition id a source registers batches under: the partition, scoped by tenant
/// when there is one. [`split_partition_id`] undoes it for the store's key.
pub fn partition_id(tenant: Option<&str>, partition: &str) -> std::sync::Arc<str> {
    match tenant {
        Some(t) => std::sync::Arc::from(format!("{t}{TENANT_SEPARATOR}{partition}")),
        None => std::sync::Arc::from(partition),
    }
}

/// `(tenant, partition)` of a partition id.
pub fn split_partition_id(id: &str) -> (Option<&str>, &str) {
    match id.split_once(TENANT_SEPARATOR) {
        Some((t, p)) => (Some(t), p),
        None => (None, id),
    }
}

/// A durable map of checkpoint values. Implementations must make a successful `commit`
/// survive a crash of the process or the machine.
pub trait CheckpointStore: Send + Sync + fmt::Debug {
    fn get(&self, key: &CheckpointKey) -> Result<Option<String>, CheckpointError>;
    /// Store several values at once, durably.
    fn commit(&self, values: &[(CheckpointKey, String)]) -> Result<(), CheckpointError>;
    /// Every stored key under a source (for status and tests).
    fn list(&self, source: &str) -> Result<Vec<(CheckpointKey, String)>, CheckpointError>;
}

#[derive(Serialize, Deserialize, Default)]
struct FileContents {
    version: u32,
    checkpoints: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    key: CheckpointKey,
    value: String,
}

/// The embedded store: `checkpoints.json` in the data directory. Each commit writes a
/// temporary file, fsyncs it, renames it over the old one and fsyncs the directory.
#[derive(Debug)]
pub struct FileCheckpointStore {
    path: PathBuf,
    map: Mutex<BTreeMap<CheckpointKey, String>>,
}

impl FileCheckpointStore {
    pub fn open(dir: &Path) -> Result<FileCheckpointStore, CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join("checkpoints.json");
        let map = match std::fs::read(&path) {
            Ok(bytes) => {
                let contents: FileContents = serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
                contents.checkpoints.into_iter().map(|e| (e.key, e.value)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: path.clone(),
                    source,
                })
            }
        };
        // A leftover temporary file is an interrupted commit: the old file is still whole.
        let _ = std::fs::remove_file(path.with_extension("json.tmp"));
        Ok(FileCheckpointStore {
            path,
            map: Mutex::new(map),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, map: &BTreeMap<CheckpointKey, String>) -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        };
        let contents = FileContents {
            version: 1,
            checkpoints: map
                .iter()
                .map(|(k, v)| Entry {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&contents).expect("checkpoint serializes");
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

impl CheckpointStore for FileCheckpointStore {
    fn get(&self, key: &CheckpointKey) -> Result<Option<String>, CheckpointError> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(key).cloned())
    }

    fn commit(&self, values: &[(CheckpointKey, String)]) -> Result<(), CheckpointError> {
        if values.is_empty() {
            return Ok(());
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = map.clone();
        for (k, v) in values {
            next.insert(k.clone(), v.clone());
        }
        self.write(&next)?;
        *map = next;
        Ok(())
    }

    fn list(&self, source: &str) -> Result<Vec<(CheckpointKey, String)>, CheckpointError> {
        Ok(entries_of(&self.map.lock().unwrap_or_else(|e| e.into_inner()), source))
    }
}

fn entries_of(map: &BTreeMap<CheckpointKey, String>, source: &str) -> Vec<(CheckpointKey, String)> {
    map.iter()
        .filter(|(k, _)| k.source == source)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A store that keeps nothing across runs (demo, convert, stdin).
#[derive(Debug, Default)]
pub struct MemoryCheckpointStore {
    map: Mutex<BTreeMap<CheckpointKey, String>>,
}

impl CheckpointStore for MemoryCheckpointStore {
    fn get(&self, key: &CheckpointKey) -> Result<Option<String>, CheckpointError> {
        Ok(self.map.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned())
    }

    fn commit(&self, values: &[(CheckpointKey, String)]) -> Result<(), CheckpointError> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in values {
            map.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    fn list(&self, source: &str) -> Result<Vec<(CheckpointKey, String)>, CheckpointError> {
        Ok(entries_of(&self.map.lock().unwrap_or_else(|e| e.into_inner()), source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_ignores_torn_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let key = CheckpointKey::new("files", None, "/var/log/a.ndjson");
        {
            let s = FileCheckpointStore::open(dir.path()).unwrap();
            assert_eq!(s.get(&key).unwrap(), None);
            s.commit(&[(key.clone(), "1234".into())]).unwrap();
            s.commit(&[(key.clone(), "5678".into())]).unwrap();
        }
        // A crash during a later commit leaves a torn temporary file behind.
        std::fs::write(dir.path().join("checkpoints.json.tmp"), b"{\"versi").unwrap();
        let s = FileCheckpointStore::open(dir.path()).unwrap();
        assert_eq!(s.get(&key).unwrap().as_deref(), Some("5678"));
        assert_eq!(s.list("files").unwrap().len(), 1);
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("checkpoints.json"), b"not json").unwrap();
        let err = FileCheckpointStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
