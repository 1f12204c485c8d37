//! Event Hub bodies (records arrays, single records, gzip, the malformed shapes the repair
//! handles): decoding never panics, whatever normalizes encodes to well-formed output, and
//! the record parse's fast path agrees with serde_json.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::pipeline(m365_forwarder::decode::InputFormat::Eventhub, data);
    // The record parse's fast path never takes what serde_json refuses, and reads the same.
    if let Ok(text) = std::str::from_utf8(data) {
        m365_forwarder::normalize::check_typed_parse(text);
    }
    // The repairs on their own: never panic, and a repaired body is valid JSON or rejected.
    if let Some(fixed) = m365_forwarder::decode::repair::escape_control_chars_in_strings(data) {
        let _ = serde_json::from_slice::<serde_json::Value>(&fixed);
    }
    if let Some(fixed) = m365_forwarder::decode::repair::single_to_double_quotes(data) {
        let _ = serde_json::from_slice::<serde_json::Value>(&fixed);
    }
    let _ = m365_forwarder::decode::repair::compact_json(data);
});
