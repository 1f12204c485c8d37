//! CEF and LEEF encoding round-trips: arbitrary text in the fields an encoder writes comes
//! back unchanged from our parser whenever the encoder reports nothing altered or cut, and the
//! output always parses.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use bytes::Bytes;
use m365_forwarder::ack::Finalizer;
use m365_forwarder::encode::parse::{parse_cef, parse_leef};
use m365_forwarder::encode::{encoder, EncoderOptions, Format};
use m365_forwarder::event::{Event, EventKind, EventMeta, Normalized, Position};
use serde_json::json;

#[derive(Arbitrary, Debug)]
struct Input {
    title: String,
    message: String,
    user: String,
    product: String,
    url: String,
    limit: Option<u16>,
}

libfuzzer_sys::fuzz_target!(|i: Input| {
    let ocsf = json!({
        "class_uid": 2004, "class_name": "Detection Finding", "activity_id": 1,
        "activity_name": "Create", "type_uid": 200401, "severity_id": 4, "status": "New",
        "time": 1732698845123i64,
        "message": i.message,
        "metadata": {"uid": "e1", "product": {"name": i.product, "vendor_name": "Microsoft"}},
        "finding_info": {"uid": "da637", "title": i.title, "src_url": i.url, "types": ["unlikelyTravel"]},
        "actor": {"user": {"name": i.user, "uid": "u-1"}},
        "src_endpoint": {"ip": "203.0.113.7"}
    });
    let meta = EventMeta::new(Arc::from("fuzz"), "GraphAlert", EventKind::Alert, Position::at(Arc::from("p"), 0, 0));
    let mut event = Event::new(Bytes::from_static(b"{}"), meta, Finalizer::noop());
    event.normalized = Some(Arc::new(Normalized::from_value(2004, ocsf)));
    let opts = EncoderOptions {
        max_message_bytes: i.limit.map(|l| usize::from(l).max(256)),
        ..EncoderOptions::default()
    };
    for format in [Format::Cef, Format::Leef] {
        let mut out = Vec::new();
        let Ok(r) = encoder(format, &opts).encode(&event, &mut out) else { continue };
        let text = std::str::from_utf8(&out).expect("UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u32, r.messages);
        let exact = r.altered == 0 && r.truncated == 0;
        for l in lines {
            if let Some(max) = opts.max_message_bytes {
                assert!(l.len() <= max, "{} > {max}", l.len());
            }
            if format == Format::Cef {
                let c = parse_cef(l).unwrap_or_else(|e| panic!("CEF does not parse: {e}: {l}"));
                if exact {
                    if !i.message.is_empty() {
                        assert_eq!(c.get("msg"), Some(i.message.as_str()), "{l}");
                    }
                    if !i.user.is_empty() {
                        assert_eq!(c.get("suser"), Some(i.user.as_str()), "{l}");
                    }
                    if !i.title.is_empty() {
                        assert_eq!(c.name, i.title, "{l}");
                    }
                }
            } else {
                let p = parse_leef(l).unwrap_or_else(|e| panic!("LEEF does not parse: {e}: {l}"));
                if exact && !i.title.is_empty() {
                    assert_eq!(p.get("title"), Some(i.title.as_str()), "{l}");
                }
            }
        }
    }
});
