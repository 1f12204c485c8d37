//! Event Hub bodies (records arrays, single records, gzip, the malformed shapes the repair
//! handles): decoding never panics and whatever normalizes encodes to well-formed output.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::pipeline(m365_forwarder::decode::InputFormat::Eventhub, data);
    // The repairs on their own: never panic, and a repaired body is valid JSON or rejected.
    if let Some(fixed) = m365_forwarder::decode::repair::escape_control_chars_in_strings(data) {
        let _ = serde_json::from_slice::<serde_json::Value>(&fixed);
    }
    if let Some(fixed) = m365_forwarder::decode::repair::single_to_double_quotes(data) {
        let _ = serde_json::from_slice::<serde_json::Value>(&fixed);
    }
    let _ = m365_forwarder::decode::repair::compact_json(data);
});
