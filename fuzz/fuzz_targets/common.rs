//! Shared by the fuzz targets: decode a body, normalize every record, encode each event in
//! every format and check that what we emit is well formed (JSON parses, CEF/LEEF parse back).

use std::sync::Arc;

use bytes::Bytes;
use m365_forwarder::ack::Finalizer;
use m365_forwarder::decode::{decode_unit, InputFormat};
use m365_forwarder::encode::parse::{parse_cef, parse_leef};
use m365_forwarder::encode::{encoder, EncoderOptions, Format};
use m365_forwarder::event::{Event, EventMeta, Position};
use m365_forwarder::normalize::{NormalizeOptions, Normalizer};

pub fn pipeline(format: InputFormat, data: &[u8]) {
    let Ok(unit) = decode_unit(format, Bytes::copy_from_slice(data)) else {
        return;
    };
    let normalizer = Normalizer::new(NormalizeOptions::default());
    let opts = EncoderOptions::default();
    let small = EncoderOptions {
        max_message_bytes: Some(512),
        ..EncoderOptions::default()
    };
    for (i, r) in unit.records.iter().enumerate() {
        let mut meta = EventMeta::new(Arc::from("fuzz"), &r.category, r.kind, Position::at(Arc::from("p"), 0, i as u32));
        meta.tenant = r.tenant.as_deref().map(Arc::from);
        let Ok(out) = normalizer.normalize(&meta, &r.raw) else {
            continue;
        };
        let mut event = Event::new(r.raw.clone(), meta, Finalizer::noop());
        event.normalized = Some(Arc::new(out.normalized));
        for o in [&opts, &small] {
            check(&event, Format::Ocsf, o);
            check(&event, Format::Cef, o);
            check(&event, Format::Leef, o);
            check(&event, Format::Hec, o);
        }
    }
}

fn check(event: &Event, format: Format, opts: &EncoderOptions) {
    let mut out = Vec::new();
    let Ok(report) = encoder(format, opts).encode(event, &mut out) else {
        return;
    };
    let text = std::str::from_utf8(&out).expect("encoders emit UTF-8");
    match format {
        Format::Ocsf => {
            let v: serde_json::Value = serde_json::from_str(text.trim_end()).expect("OCSF line is JSON");
            assert!(v.is_object());
        }
        Format::Hec => {
            let n = serde_json::Deserializer::from_str(text)
                .into_iter::<serde_json::Value>()
                .map(|v| v.expect("HEC envelopes are JSON"))
                .count();
            assert!(n >= 1);
        }
        Format::Cef | Format::Leef => {
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len() as u32, report.messages, "one line per message");
            for l in lines {
                if let Some(max) = opts.max_message_bytes {
                    assert!(l.len() <= max, "message over max_message_bytes: {} > {max}", l.len());
                }
                if format == Format::Cef {
                    parse_cef(l).expect("our CEF parses");
                } else {
                    parse_leef(l).expect("our LEEF parses");
                }
            }
        }
        _ => {}
    }
}
