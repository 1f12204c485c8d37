//! The contract of [`Encoder::reads_lean`]: the CEF and LEEF of a lean normalization (plain,
//! behind a syslog header, whole or with incidents split) are byte for byte those of a full
//! one, for every sample record; and only those encoders claim it.

use std::sync::Arc;

use super::{encoder, syslog_encoder, Encoder, EncoderOptions, Format, SplitMode};
use crate::ack::Finalizer;
use crate::decode::{decode_unit, DecodedRecord, InputFormat};
use crate::event::{Event, EventMeta, Position};
use crate::normalize::{NormalizeOptions, Normalizer};

/// Every record of the Event Hub bodies and Graph pages in tests/data.
pub(super) fn samples() -> Vec<(String, DecodedRecord)> {
    let mut out = Vec::new();
    for dir in ["tests/data/eventhub", "tests/data/graph", "tests/golden/inputs"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files.into_iter().filter(|f| f.extension().is_some_and(|x| x == "json")) {
            let Ok(unit) = decode_unit(InputFormat::Auto, std::fs::read(&f).unwrap().into()) else {
                continue;
            };
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            out.extend(
                unit.records
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| (format!("{name}#{i}"), r)),
            );
        }
    }
    out
}

/// The metadata a source gives a decoded record.
pub(super) fn meta_of(rec: &DecodedRecord) -> EventMeta {
    let mut meta = EventMeta::new(
        Arc::from("s"),
        &rec.category,
        rec.kind,
        Position::at(Arc::from("p"), 0, 0),
    );
    meta.tenant = rec.tenant.as_deref().map(Arc::from);
    meta.entity_key = rec.entity_key.as_deref().map(Arc::from);
    meta
}

fn event(meta: &EventMeta, raw: &bytes::Bytes, n: &Normalizer) -> Option<Event> {
    let out = n.normalize_bytes(meta, raw).ok()?;
    let mut e = Event::new(raw.clone(), meta.clone(), Finalizer::noop());
    e.meta.severity_id = out.severity_id;
    e.meta.event_ms = out.event_ms;
    e.normalized = Some(Arc::new(out.normalized));
    Some(e)
}

#[test]
fn cef_and_leef_of_a_lean_normalization_equal_those_of_a_full_one() {
    let full = Normalizer::new(NormalizeOptions::default());
    let lean = Normalizer::new(NormalizeOptions {
        lean: true,
        ..NormalizeOptions::default()
    });
    let mut encoders: Vec<(String, Box<dyn Encoder>)> = Vec::new();
    for format in [Format::Cef, Format::Leef] {
        for split in [SplitMode::Never, SplitMode::Always] {
            let opts = EncoderOptions {
                split_incidents: split,
                ..EncoderOptions::default()
            };
            encoders.push((format!("{format:?} {split:?}"), encoder(format, &opts)));
            encoders.push((format!("syslog {format:?} {split:?}"), syslog_encoder(format, &opts)));
        }
    }
    let (mut compared, mut smaller, mut with_tree) = (0, 0, 0);
    for (i, (name, rec)) in samples().into_iter().enumerate() {
        let mut meta = meta_of(&rec);
        // A change type from the Graph state engine: CEF and LEEF show it, and the lean form
        // has no `unmapped` to carry it.
        if i % 2 == 1 {
            meta.change_type = Some(Arc::from("status_changed"));
        }
        let (a, b) = (event(&meta, &rec.raw, &full), event(&meta, &rec.raw, &lean));
        let (Some(a), Some(b)) = (a, b) else {
            assert!(
                event(&meta, &rec.raw, &full).is_none(),
                "{name}: only the lean one failed"
            );
            continue;
        };
        for (label, enc) in &encoders {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            let rx = enc.encode(&a, &mut x).map_err(|e| e.to_string());
            let ry = enc.encode(&b, &mut y).map_err(|e| e.to_string());
            assert_eq!(rx, ry, "{name} {label}");
            assert_eq!(
                String::from_utf8_lossy(&x),
                String::from_utf8_lossy(&y),
                "{name} {label}"
            );
        }
        compared += 1;
        let json = |e: &Event| {
            let mut out = Vec::new();
            e.normalized.as_ref().unwrap().write_json(&mut out).unwrap();
            out.len()
        };
        // (A flat form, without a tree, has no JSON at all: see flat_tests.)
        if b.normalized.as_ref().unwrap().flat().is_none() {
            with_tree += 1;
            if json(&b) < json(&a) {
                smaller += 1;
            }
        }
    }
    assert!(compared >= 40, "{compared} records compared");
    // Most records have observables or passed-through JSON: the lean tree leaves them out.
    assert!(with_tree >= 10, "{with_tree} lean trees");
    assert!(
        smaller * 4 >= with_tree * 3,
        "lean smaller for {smaller} of {with_tree}"
    );
}

#[test]
fn only_attribute_reading_encoders_read_lean() {
    let opts = EncoderOptions::default();
    for format in [Format::Cef, Format::Leef, Format::Ocsf, Format::Raw, Format::Hec] {
        let lean = matches!(format, Format::Cef | Format::Leef);
        assert_eq!(encoder(format, &opts).reads_lean(), lean, "{format:?}");
        assert_eq!(syslog_encoder(format, &opts).reads_lean(), lean, "syslog {format:?}");
    }
}

/// The sample sign-ins, Graph activity logs and risk detections reach CEF and LEEF with the
/// members a SIEM's sign-in content reads (a path misnamed on either side would leave both
/// the lean and the full form without them, which the comparison above cannot see).
#[test]
fn sample_sign_ins_graph_calls_and_risk_detections_carry_client_request_and_location() {
    let lean = Normalizer::new(NormalizeOptions {
        lean: true,
        ..NormalizeOptions::default()
    });
    let opts = EncoderOptions::default();
    let (cef, leef) = (encoder(Format::Cef, &opts), encoder(Format::Leef, &opts));
    let mut lines = Vec::new();
    for (_, rec) in samples() {
        let Some(e) = event(&meta_of(&rec), &rec.raw, &lean) else {
            continue;
        };
        for enc in [&cef, &leef] {
            let mut out = Vec::new();
            enc.encode(&e, &mut out).unwrap();
            lines.extend(String::from_utf8(out).unwrap().lines().map(str::to_owned));
        }
    }
    let any = |prefix: &str, keys: &[&str]| {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(prefix) && keys.iter().all(|k| l.contains(k))),
            "no line with {prefix} has all of {keys:?}"
        )
    };
    any(
        "|signIn:300201|",
        &[
            " sourceServiceName=",
            " destinationServiceName=",
            " requestClientApplication=Mozilla/5.0",
            " reason=",
            " cs6Label=statusCode cs6=",
            " cfp1Label=sourceLatitude cfp1=",
            " cfp2Label=sourceLongitude cfp2=",
        ],
    );
    any(
        "|graphActivity:",
        &[
            " request=https://graph.microsoft.com/",
            " requestMethod=",
            " requestClientApplication=",
        ],
    );
    any(
        "|riskDetection:",
        &[" requestClientApplication=", " cfp1Label=sourceLatitude cfp1="],
    );
    any(
        "|SignIn|",
        &[
            "^statusCode=",
            "^resource=",
            "^application=",
            "^userAgent=",
            "^srcCountry=",
            "^srcLat=",
        ],
    );
    any(
        "|GraphActivity|",
        &["^requestUrl=https://", "^requestMethod=", "^statusCode="],
    );
}
