//! Event Hub input over AMQP (`azure_messaging_eventhubs`): every partition of a hub for one
//! consumer group, through the SDK's `EventProcessor` with a checkpoint store over the
//! forwarder's embedded store (one replica) or an Azure Blob Storage container (several
//! replicas balance the partitions); checkpoints move only over the acknowledged prefix.

pub mod blob;
pub mod blobstore;
mod consumer;
mod store;
mod watch;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{Source, SourceConfig, SourceError};
use crate::config::{typed, ConfigIssue, Secret};
use crate::decode::InputFormat;

pub use store::{HubIdentity, SourceStore, StoredCheckpoint};

/// How the source authenticates to Event Hubs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventHubAuth {
    /// Shared access signature from `connection_string`.
    #[default]
    ConnectionString,
    /// Entra ID application: `tenant_id`, `client_id`, `client_secret`.
    ClientSecret,
    /// Entra ID workload identity (AKS): `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE`.
    WorkloadIdentity,
    /// Entra ID managed identity of the host; `client_id` selects a user-assigned one.
    ManagedIdentity,
}

/// Where the checkpoints and partition ownership live: `checkpoint_store = "embedded"` (the
/// default) or a `[sources.NAME.checkpoint_store]` table with `type = "blob"`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CheckpointStoreKind {
    /// The forwarder's own store (`data_dir`); one replica per hub and consumer group.
    #[default]
    Embedded,
    /// An Azure Blob Storage container shared by every replica.
    Blob(BlobStoreConfig),
}

impl CheckpointStoreKind {
    pub fn blob(&self) -> Option<&BlobStoreConfig> {
        match self {
            CheckpointStoreKind::Blob(b) => Some(b),
            CheckpointStoreKind::Embedded => None,
        }
    }
}

/// `[sources.NAME.checkpoint_store] type = "blob"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobStoreConfig {
    #[serde(rename = "type")]
    pub kind: String,
    /// The container (created when missing and the credential may).
    pub container: String,
    /// `DefaultEndpointsProtocol=...;AccountName=...;AccountKey=...` (or with
    /// `SharedAccessSignature=`), written as `${ENV}` or `${file:PATH}`.
    #[serde(default)]
    pub connection_string: Option<Secret>,
    /// `https://ACCOUNT.blob.core.windows.net`, with `sas_token` or else the source's Entra ID
    /// credential (`auth`).
    #[serde(default)]
    pub account_url: Option<String>,
    #[serde(default)]
    pub sas_token: Option<Secret>,
}

impl<'de> Deserialize<'de> for CheckpointStoreKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Table(toml::Table),
        }
        match Raw::deserialize(d)? {
            Raw::Name(n) if n == "embedded" => Ok(CheckpointStoreKind::Embedded),
            Raw::Name(n) => Err(D::Error::custom(format!(
                "unknown checkpoint store `{n}`: expected \"embedded\" or a table with type = \"blob\""
            ))),
            Raw::Table(t) => match t.get("type").and_then(|v| v.as_str()) {
                Some("embedded") if t.len() == 1 => Ok(CheckpointStoreKind::Embedded),
                Some("blob") => toml::Value::Table(t)
                    .try_into()
                    .map(CheckpointStoreKind::Blob)
                    .map_err(|e| D::Error::custom(e.message().to_string())),
                _ => Err(D::Error::custom(
                    "expected type = \"blob\" (with container and connection_string or account_url)",
                )),
            },
        }
    }
}

/// `[sources.NAME] type = "eventhub"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventHubSourceConfig {
    /// `NAMESPACE.servicebus.windows.net`; taken from `connection_string` when absent.
    #[serde(default)]
    pub fully_qualified_namespace: Option<String>,
    /// The event hub (entity) name; taken from the connection string's `EntityPath` when absent.
    #[serde(default)]
    pub event_hub: Option<String>,
    #[serde(default = "default_group")]
    pub consumer_group: String,
    #[serde(default)]
    pub auth: EventHubAuth,
    /// `Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...[;EntityPath=...]`,
    /// written as `${ENV}` or `${file:PATH}`.
    #[serde(default)]
    pub connection_string: Option<Secret>,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Where a partition without a checkpoint starts: `earliest` (default), `latest`, or an
    /// RFC 3339 enqueued time. `latest` is the partition's last event when it is first
    /// opened, stored then as its checkpoint (a reconnect or restart goes on from there).
    #[serde(default = "default_start")]
    pub start: String,
    /// Connect the socket here instead of the namespace (an emulator, a private endpoint),
    /// e.g. `amqp://127.0.0.1:5672`; the AMQP host name stays the namespace.
    #[serde(default)]
    pub custom_endpoint: Option<String>,
    /// Events each partition receiver asks for ahead (AMQP credit).
    #[serde(default = "default_prefetch")]
    pub prefetch: u32,
    #[serde(default)]
    pub format: InputFormat,
    #[serde(default)]
    pub checkpoint_store: CheckpointStoreKind,
    /// How often the processor renews ownership and reopens partitions that closed. A claim
    /// not renewed for 3 intervals + 2 s expires (another replica then takes the partition).
    #[serde(default = "default_ownership_interval")]
    pub ownership_interval_ms: u64,
    /// How often partition properties are read for the lag metric and stall detection.
    #[serde(default = "default_lag_interval")]
    pub lag_interval_ms: u64,
    /// A partition with unread events that receives nothing for this long makes the
    /// source reconnect (a receive stuck inside the client library after a connection loss).
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout_ms: u64,
}

fn default_group() -> String {
    "$Default".into()
}
fn default_start() -> String {
    "earliest".into()
}
fn default_prefetch() -> u32 {
    300
}
fn default_ownership_interval() -> u64 {
    10_000
}
fn default_lag_interval() -> u64 {
    15_000
}
fn default_stall_timeout() -> u64 {
    60_000
}

/// The first-run position of a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
    EnqueuedTime(SystemTime),
}

fn parse_start(s: &str) -> Option<Start> {
    match s {
        "earliest" => Some(Start::Earliest),
        "latest" => Some(Start::Latest),
        t => {
            let ms = chrono::DateTime::parse_from_rfc3339(t).ok()?.timestamp_millis();
            let ms = u64::try_from(ms).ok()?;
            Some(Start::EnqueuedTime(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)))
        }
    }
}

/// What a source needs to connect, resolved from the config.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub hub: HubIdentity,
    pub config: EventHubSourceConfig,
    pub start: Start,
    /// This replica's AMQP connection name, which the SDK's load balancer uses as the owner
    /// id of its partitions: unique per process (host, pid, random), kept across reconnects.
    pub instance: String,
}

fn instance_id() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty());
    format!(
        "m365-forwarder-{}-{}-{:08x}",
        host.as_deref().unwrap_or("host"),
        std::process::id(),
        rand::random::<u32>()
    )
}

pub fn factory(_name: &str, table: toml::Value, prefix: &str) -> Result<Box<dyn SourceConfig>, ConfigIssue> {
    let c: EventHubSourceConfig = typed(table, prefix)?;
    resolve(&c, prefix)?;
    Ok(Box::new(c))
}

fn required(v: &Option<String>, path: String, why: &str) -> Result<String, ConfigIssue> {
    match v.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(ConfigIssue::new(path, why)),
    }
}

fn resolve(c: &EventHubSourceConfig, prefix: &str) -> Result<Resolved, ConfigIssue> {
    let start = parse_start(&c.start).ok_or_else(|| {
        ConfigIssue::new(
            format!("{prefix}.start"),
            "expected `earliest`, `latest` or an RFC 3339 enqueued time",
        )
    })?;
    let (mut namespace, mut hub) = (c.fully_qualified_namespace.clone(), c.event_hub.clone());
    match c.auth {
        EventHubAuth::ConnectionString => {
            let cs = c.connection_string.as_ref().ok_or_else(|| {
                ConfigIssue::new(
                    format!("{prefix}.connection_string"),
                    "required with auth = \"connection_string\" (write it as \"${ENV_VAR}\" or \"${file:PATH}\")",
                )
            })?;
            let parsed: azure_messaging_eventhubs::ConnectionString = cs.expose().parse().map_err(|_| {
                ConfigIssue::new(
                    format!("{prefix}.connection_string"),
                    "not an Event Hubs connection string",
                )
            })?;
            // The key belongs to the connection string's namespace (and, with EntityPath, to
            // that hub only): another name configured beside it could only fail at connect.
            if let Some(n) = namespace
                .as_deref()
                .filter(|n| !n.trim().eq_ignore_ascii_case(&parsed.fully_qualified_namespace))
            {
                return Err(ConfigIssue::new(
                    format!("{prefix}.fully_qualified_namespace"),
                    format!(
                        "`{n}` is not the connection string's namespace `{}`; leave it out",
                        parsed.fully_qualified_namespace
                    ),
                ));
            }
            if let (Some(h), Some(e)) = (hub.as_deref(), parsed.entity_path.as_deref()) {
                if !h.eq_ignore_ascii_case(e) {
                    return Err(ConfigIssue::new(
                        format!("{prefix}.event_hub"),
                        format!("`{h}` is not the connection string's EntityPath `{e}`, the only hub its key opens"),
                    ));
                }
            }
            namespace.get_or_insert(parsed.fully_qualified_namespace);
            if hub.is_none() {
                hub = parsed.entity_path;
            }
        }
        EventHubAuth::ClientSecret => {
            required(
                &c.tenant_id,
                format!("{prefix}.tenant_id"),
                "required with auth = \"client_secret\"",
            )?;
            required(
                &c.client_id,
                format!("{prefix}.client_id"),
                "required with auth = \"client_secret\"",
            )?;
            if c.client_secret.as_ref().is_none_or(|s| s.expose().is_empty()) {
                return Err(ConfigIssue::new(
                    format!("{prefix}.client_secret"),
                    "required with auth = \"client_secret\" (write it as \"${ENV_VAR}\" or \"${file:PATH}\")",
                ));
            }
        }
        EventHubAuth::WorkloadIdentity | EventHubAuth::ManagedIdentity => {}
    }
    if c.auth != EventHubAuth::ConnectionString && c.connection_string.is_some() {
        return Err(ConfigIssue::new(
            format!("{prefix}.connection_string"),
            "only used with auth = \"connection_string\"",
        ));
    }
    let namespace = required(
        &namespace,
        format!("{prefix}.fully_qualified_namespace"),
        "required (NAMESPACE.servicebus.windows.net)",
    )?;
    let event_hub = required(
        &hub,
        format!("{prefix}.event_hub"),
        "required (or EntityPath in the connection string)",
    )?;
    if c.consumer_group.trim().is_empty() {
        return Err(ConfigIssue::new(
            format!("{prefix}.consumer_group"),
            "must not be empty",
        ));
    }
    if c.prefetch == 0 {
        return Err(ConfigIssue::new(format!("{prefix}.prefetch"), "must be at least 1"));
    }
    if c.ownership_interval_ms < 100 {
        return Err(ConfigIssue::new(
            format!("{prefix}.ownership_interval_ms"),
            "must be at least 100",
        ));
    }
    if c.lag_interval_ms < 100 || c.stall_timeout_ms < 1000 {
        return Err(ConfigIssue::new(
            format!("{prefix}.lag_interval_ms"),
            "lag_interval_ms must be at least 100 and stall_timeout_ms at least 1000",
        ));
    }
    if let CheckpointStoreKind::Blob(b) = &c.checkpoint_store {
        let path = format!("{prefix}.checkpoint_store");
        if b.container.trim().is_empty() {
            return Err(ConfigIssue::new(format!("{path}.container"), "must not be empty"));
        }
        match (&b.connection_string, &b.account_url) {
            (Some(cs), None) => {
                if b.sas_token.is_some() {
                    return Err(ConfigIssue::new(
                        format!("{path}.sas_token"),
                        "only used with account_url (a connection string carries its own SAS)",
                    ));
                }
                blob::parse_connection_string(cs.expose())
                    .map_err(|e| ConfigIssue::new(format!("{path}.connection_string"), e.to_string()))?;
            }
            (None, Some(url)) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(ConfigIssue::new(
                        format!("{path}.account_url"),
                        "expected https://ACCOUNT.blob.core.windows.net",
                    ));
                }
                if b.sas_token.is_none() && c.auth == EventHubAuth::ConnectionString {
                    return Err(ConfigIssue::new(
                        format!("{path}.sas_token"),
                        "required with account_url when the source's auth is a connection string (or use an Entra ID auth)",
                    ));
                }
            }
            _ => {
                return Err(ConfigIssue::new(
                    path,
                    "give exactly one of connection_string (\"${ENV_VAR}\") or account_url",
                ))
            }
        }
    }
    if let Some(e) = &c.custom_endpoint {
        if !(e.starts_with("amqp://") || e.starts_with("amqps://")) {
            return Err(ConfigIssue::new(
                format!("{prefix}.custom_endpoint"),
                "expected amqp://HOST:PORT or amqps://HOST:PORT",
            ));
        }
    }
    Ok(Resolved {
        hub: HubIdentity {
            namespace,
            event_hub,
            consumer_group: c.consumer_group.clone(),
        },
        config: c.clone(),
        start,
        instance: instance_id(),
    })
}

impl SourceConfig for EventHubSourceConfig {
    fn build(&self, name: &str) -> Result<Box<dyn Source>, SourceError> {
        let resolved = resolve(self, &format!("sources.{name}")).map_err(|e| SourceError::Fatal {
            source_name: name.to_string(),
            message: format!("{}: {}", e.path, e.message),
        })?;
        let blob = match &self.checkpoint_store {
            CheckpointStoreKind::Embedded => None,
            CheckpointStoreKind::Blob(b) => {
                Some(
                    consumer::blob_store(b, &resolved).map_err(|message| SourceError::Fatal {
                        source_name: name.to_string(),
                        message: format!("checkpoint_store: {message}"),
                    })?,
                )
            }
        };
        Ok(Box::new(consumer::EventHubSource::new(Arc::new(resolved), blob)))
    }

    fn is_finite(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Value {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn connection_string_gives_namespace_and_hub() {
        let c = factory(
            "eh",
            table(
                r#"connection_string = "Endpoint=sb://ns1.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=a2V5;EntityPath=signins""#,
            ),
            "sources.eh",
        );
        assert!(c.is_ok(), "{c:?}");
    }

    #[test]
    fn names_beside_a_connection_string_must_be_its_own() {
        let cs = r#"connection_string = "Endpoint=sb://ns1.servicebus.windows.net/;SharedAccessKeyName=l;SharedAccessKey=a2V5;EntityPath=signins"
"#;
        let with = |extra: &str| factory("eh", table(&format!("{cs}{extra}")), "sources.eh");
        assert!(with("event_hub = \"SignIns\"\nfully_qualified_namespace = \"NS1.servicebus.windows.net\"").is_ok());
        let e = with("event_hub = \"audit\"").unwrap_err();
        assert!(
            e.path.ends_with(".event_hub") && e.message.contains("EntityPath `signins`"),
            "{e:?}"
        );
        let e = with("fully_qualified_namespace = \"ns2.servicebus.windows.net\"").unwrap_err();
        assert!(e.path.ends_with(".fully_qualified_namespace"), "{e:?}");
        // A namespace-wide key (no EntityPath) opens any hub of the namespace.
        let ns = r#"connection_string = "Endpoint=sb://ns1.servicebus.windows.net/;SharedAccessKeyName=l;SharedAccessKey=a2V5"
event_hub = "audit"
"#;
        assert!(factory("eh", table(ns), "sources.eh").is_ok());
    }

    #[test]
    fn rejects_bad_values() {
        for (t, path) in [
            (r#"fully_qualified_namespace = "ns""#, "connection_string"),
            (
                r#"auth = "client_secret"
                   fully_qualified_namespace = "ns"
                   event_hub = "h"
                   tenant_id = "t""#,
                "client_id",
            ),
            (
                r#"auth = "managed_identity"
                   fully_qualified_namespace = "ns"
                   event_hub = "h"
                   start = "yesterday""#,
                "start",
            ),
            (
                r#"auth = "managed_identity"
                   fully_qualified_namespace = "ns"
                   event_hub = "h"
                   lease = 1"#,
                "lease",
            ),
        ] {
            let e = factory("eh", table(t), "sources.eh").unwrap_err();
            assert!(e.path.contains(path), "{t}: {e:?}");
        }
    }

    #[test]
    fn checkpoint_store_is_embedded_or_a_blob_table() {
        let base = r#"connection_string = "Endpoint=sb://ns1.servicebus.windows.net/;SharedAccessKeyName=l;SharedAccessKey=a2V5;EntityPath=h"
"#;
        let ok = |extra: &str| factory("eh", table(&format!("{base}{extra}")), "sources.eh");
        assert!(ok(r#"checkpoint_store = "embedded""#).is_ok());
        let blob = r#"[checkpoint_store]
type = "blob"
container = "checkpoints"
connection_string = "UseDevelopmentStorage=true"
"#;
        assert!(ok(blob).is_ok(), "{:?}", ok(blob));
        for (extra, path) in [
            (r#"checkpoint_store = "blob""#, "checkpoint_store"),
            (
                "[checkpoint_store]\ntype = 'blob'\ncontainer = 'c'\n",
                "checkpoint_store",
            ),
            (
                "[checkpoint_store]\ntype = 'blob'\ncontainer = 'c'\naccount_url = 'https://a.blob.core.windows.net'\n",
                "checkpoint_store.sas_token",
            ),
            (
                "[checkpoint_store]\ntype = 'blob'\ncontainer = 'c'\nconnection_string = 'x'\nlease = 1\n",
                "checkpoint_store",
            ),
        ] {
            let e = ok(extra).unwrap_err();
            assert!(e.path.ends_with(path), "{extra}: {e:?}");
        }
    }

    #[test]
    fn start_accepts_an_enqueued_time() {
        assert_eq!(parse_start("earliest"), Some(Start::Earliest));
        assert!(matches!(
            parse_start("2026-11-27T00:00:00Z"),
            Some(Start::EnqueuedTime(_))
        ));
    }
}
