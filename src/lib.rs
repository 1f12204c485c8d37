//! m365-forwarder: Microsoft Defender XDR incidents and Entra ID signals to Kafka, syslog
//! (CEF/LEEF) and Splunk HEC, normalized to OCSF, with end-to-end acknowledgments.
//!
//! Data flows one way: source → decode → normalize → route → encode → sink, and
//! acknowledgments flow back through each event's finalizer to the source's checkpoint.

pub mod ack;
pub mod buffer;
pub(crate) mod byte_search;
pub mod checkpoint;
pub mod config;
pub mod deadletter;
pub mod decode;
pub mod encode;
pub mod event;
pub(crate) mod json_de;
pub(crate) mod json_text;
pub(crate) mod line_file;
pub mod normalize;
pub mod pipeline;
pub mod sinks;
pub mod sources;
pub mod telemetry;
#[cfg(test)]
mod test_json;
