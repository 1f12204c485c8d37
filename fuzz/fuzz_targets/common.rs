//! Shared by the fuzz targets: decode a body, normalize every record, encode each event in
//! every format and check that what we emit is well formed (JSON parses, CEF/LEEF parse back),
//! and that a record decoded unchecked normalizes only when it is valid JSON.

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
    // What a pipeline whose every output is CEF or LEEF normalizes with (records of some
    // families without a tree): its CEF and LEEF must be those of the full normalization.
    let lean = Normalizer::new(NormalizeOptions {
        lean: true,
        ..NormalizeOptions::default()
    });
    let opts = EncoderOptions::default();
    let small = EncoderOptions {
        max_message_bytes: Some(512),
        ..EncoderOptions::default()
    };
    for (i, r) in unit.records.iter().enumerate() {
        let mut meta = EventMeta::new(Arc::from("fuzz"), &r.category, r.kind, Position::at(Arc::from("p"), 0, i as u32));
        meta.tenant = r.tenant.as_deref().map(Arc::from);
        let full = normalizer.normalize(&meta, &r.raw);
        let lean_out = lean.normalize(&meta, &r.raw);
        if r.unchecked.is_some() {
            // Decoded unchecked (nested values skipped by their brackets): when the body is
            // broken JSON, decoding it in full refuses it (no repair would have saved it),
            // the record does not normalize, and its recheck gives the decode error.
            if let Some(broken) = m365_forwarder::decode::recheck(&Bytes::copy_from_slice(data)) {
                assert!(full.is_err() && lean_out.is_err(), "broken JSON normalized: {broken}");
                assert!(m365_forwarder::decode::recheck(&r.raw).is_some(), "no decode error for broken JSON");
            }
        }
        let out = match (full, lean_out) {
            (Ok(out), Ok(l)) => {
                let mut le = Event::new(r.raw.clone(), meta.clone(), Finalizer::noop());
                le.normalized = Some(Arc::new(l.normalized));
                let mut fe = Event::new(r.raw.clone(), meta.clone(), Finalizer::noop());
                fe.normalized = Some(Arc::new(out.normalized.clone()));
                for o in [&opts, &small] {
                    for format in [Format::Cef, Format::Leef] {
                        let (mut x, mut y) = (Vec::new(), Vec::new());
                        let rx = encoder(format, o).encode(&fe, &mut x).map_err(|e| e.to_string());
                        let ry = encoder(format, o).encode(&le, &mut y).map_err(|e| e.to_string());
                        assert_eq!(rx, ry, "lean and full {format:?}");
                        assert_eq!(x, y, "lean and full {format:?}");
                    }
                }
                out
            }
            (Err(a), Err(b)) => {
                assert_eq!(a.to_string(), b.to_string(), "lean and full fail alike");
                continue;
            }
            (a, b) => panic!("full {:?}, lean {:?}", a.map(|_| ()), b.map(|_| ())),
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
