//! Graph list pages (`{"value":[...],"@odata.nextLink":...}`) and single objects: parsing and
//! normalization of incidents, alerts, risk detections and risky users never panic, and the
//! events encode to well-formed output.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::pipeline(m365_forwarder::decode::InputFormat::Graph, data);
});
