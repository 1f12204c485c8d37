//! The config of one forwarder reading the Event Hubs emulator into a raw file, shared by
//! `eventhub_pipeline` (embedded checkpoints) and `scaleout` (replicas on a blob store).

use std::path::Path;

use super::eventhub_emulator::EventHubEmulator;

/// An `eh` source on `emu` and an `out` file sink; the rest is fixed.
pub struct EventHubConfig<'a> {
    pub emu: &'a EventHubEmulator,
    pub data: &'a Path,
    pub out: &'a Path,
    pub api_port: u16,
    pub stall_timeout_ms: u64,
    /// Checkpoints in this blob container (connection string from `M365FWD_TEST_STORAGE`)
    /// instead of the embedded store.
    pub blob_container: Option<&'a str>,
    /// More keys of the `eh` source (`start = "latest"`), one per line.
    pub extra: &'a str,
    /// More keys of the `out` sink (`rate_limit_eps = 1000`).
    pub sink_extra: &'a str,
}

impl EventHubConfig<'_> {
    /// The config file's text.
    pub fn text(&self) -> String {
        let store = match self.blob_container {
            Some(container) => format!(
                r#"[sources.eh.checkpoint_store]
type = "blob"
container = "{container}"
connection_string = "${{M365FWD_TEST_STORAGE}}"
"#
            ),
            None => String::new(),
        };
        format!(
            r#"
data_dir = "{data}"
[api]
address = "127.0.0.1:{api_port}"
[pipeline]
batch_max_events = 500
checkpoint_interval_ms = 50
drain_timeout_secs = 10
[sources.eh]
type = "eventhub"
connection_string = "{cs}"
custom_endpoint = "{endpoint}"
ownership_interval_ms = 500
lag_interval_ms = 200
stall_timeout_ms = {stall}
{extra}
{store}[sinks.out]
type = "file"
path = "{out}"
encoding = "raw"
{sink_extra}
"#,
            data = self.data.display(),
            api_port = self.api_port,
            cs = self.emu.connection_string(),
            endpoint = self.emu.endpoint(),
            stall = self.stall_timeout_ms,
            extra = self.extra,
            sink_extra = self.sink_extra,
            out = self.out.display(),
        )
    }
}
