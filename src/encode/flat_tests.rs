//! The flat form a lean normalization builds without a tree (`normalize::direct`) equals what
//! the encoders read of the full normalization's tree (`fields::flat_of`), and the rest of
//! the normalization's output is the same: for every sample record of the families mapped
//! flat (also under the categories without a sample of their own), for variants of each
//! with one member left out, emptied, blank, a PII placeholder or a number, and with the
//! Graph samples first (so that Event Hub detections arrive correlated).

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::fields::{flat_of, View};
use super::lean_tests::{meta_of, samples};
use crate::event::EventMeta;
use crate::normalize::{Flat, NormalizeOptions, Normalizer};

/// The values as the encoders write them: fallbacks on the metadata applied.
fn resolved<S: Deref<Target = str>>(f: &Flat<S>, meta: &EventMeta) -> Flat<String> {
    let mut r = f.map(|s| s.to_string());
    r.title = Some(f.title(meta).to_owned());
    r.category = Some(f.category(meta).to_owned());
    r.tenant = f.tenant(meta).map(str::to_owned);
    r.change_type = f.change_type(meta).map(str::to_owned);
    r.finding_uid = f.finding_uid(meta).map(str::to_owned);
    r.product = Some(f.product_or_default(meta.kind).to_owned());
    r
}

/// The record with each member (the envelope's, those of `properties` and of the objects in
/// it, down to three levels below the top) left out, or set to `""`, `" "`, a PII
/// placeholder or a number.
fn variants(raw: &[u8]) -> Vec<Vec<u8>> {
    let Ok(v) = serde_json::from_slice::<Value>(raw) else {
        return Vec::new();
    };
    let mut paths: Vec<Vec<String>> = Vec::new();
    fn walk(v: &Value, at: &mut Vec<String>, depth: usize, out: &mut Vec<Vec<String>>) {
        let Value::Object(m) = v else { return };
        for (k, child) in m {
            at.push(k.clone());
            out.push(at.clone());
            if depth < 3 {
                walk(child, at, depth + 1, out);
            }
            at.pop();
        }
    }
    walk(&v, &mut Vec::new(), 0, &mut paths);
    let replacements = [
        None,
        Some(Value::from("")),
        Some(Value::from(" ")),
        Some(Value::from("{PII Removed}")),
        Some(Value::from(7)),
    ];
    let mut out = Vec::new();
    for path in paths {
        for replacement in &replacements {
            let mut w = v.clone();
            let mut cur = &mut w;
            for k in &path[..path.len() - 1] {
                cur = &mut cur[k.as_str()];
            }
            let last = path.last().unwrap();
            let Value::Object(m) = cur else { continue };
            match replacement {
                None => {
                    m.remove(last);
                }
                Some(r) => {
                    m.insert(last.clone(), r.clone());
                }
            }
            out.push(serde_json::to_vec(&w).unwrap());
        }
    }
    out
}

/// Compared so far: flat forms per category, failures, correlated flat events.
#[derive(Default)]
struct Tally {
    flat: BTreeMap<String, usize>,
    errors: usize,
    correlated: usize,
}

/// Normalizes `raw` in full and lean and compares: the same error, or the same outputs and,
/// when the lean one is flat, the same flat form as the tree's.
fn compare(full: &Normalizer, lean: &Normalizer, what: &str, meta: &EventMeta, raw: Bytes, t: &mut Tally) {
    let (a, b) = match (full.normalize_bytes(meta, &raw), lean.normalize_bytes(meta, &raw)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(x), Err(y)) => {
            assert_eq!(x.to_string(), y.to_string(), "{what}");
            t.errors += 1;
            return;
        }
        (a, b) => panic!("{what}: full {:?}, lean {:?}", a.map(|_| ()), b.map(|_| ())),
    };
    let outputs = |o: &crate::normalize::NormalizeOutput| {
        (
            o.severity_id,
            o.event_ms,
            o.entity_key.clone(),
            o.tenant.clone(),
            o.time_assumed_utc,
            o.correlated.map(|c| (c.via, c.uid)),
            o.duplicate,
            o.user_unrestored,
            o.normalized.class_uid,
            o.normalized.event_uid().map(str::to_owned),
        )
    };
    assert_eq!(outputs(&a), outputs(&b), "{what}");
    let Some(f) = b.normalized.flat() else { return };
    let view = View::new(a.normalized.root(), meta);
    assert_eq!(resolved(f, meta), resolved(&flat_of(&view), meta), "{what}");
    *t.flat.entry(meta.category.to_string()).or_default() += 1;
    if b.correlated.is_some() {
        t.correlated += 1;
    }
}

/// Categories mapped flat without a sample of their own, and the sample category they share
/// a mapper with.
const RELABELLED: [(&str, &str); 2] = [
    ("SignInLogs", "ADFSSignInLogs"),
    (
        "AdvancedHunting-IdentityLogonEvents",
        "AdvancedHunting-DeviceLogonEvents",
    ),
];

#[test]
fn flat_forms_equal_what_the_encoders_read_of_the_full_normalization() {
    let mut records = samples();
    let mut tally = Tally::default();
    for graph_first in [false, true] {
        if graph_first {
            // Event Hub samples come first; reversed, the Graph detections are seen first
            // and the Event Hub ones arrive correlated.
            records.reverse();
        }
        let full = Normalizer::new(NormalizeOptions::default());
        let lean = Normalizer::new(NormalizeOptions {
            lean: true,
            ..NormalizeOptions::default()
        });
        for (n, (name, rec)) in records.iter().enumerate() {
            let mut meta = meta_of(rec);
            meta.change_type = (n % 3 == 1).then(|| Arc::from("updated"));
            let mut metas = vec![meta.clone()];
            for (from, to) in RELABELLED {
                if *meta.category == *from {
                    metas.push(EventMeta {
                        category: Arc::from(to),
                        ..meta.clone()
                    });
                }
            }
            for meta in metas {
                let what = format!("{name} as {}", meta.category);
                compare(&full, &lean, &what, &meta, rec.raw.clone(), &mut tally);
                if graph_first {
                    continue;
                }
                for (i, raw) in variants(&rec.raw).into_iter().enumerate() {
                    let what = format!("{what}, variant {i}");
                    compare(&full, &lean, &what, &meta, Bytes::from(raw), &mut tally);
                }
            }
        }
    }
    for c in [
        "SignInLogs",
        "NonInteractiveUserSignInLogs",
        "ServicePrincipalSignInLogs",
        "ManagedIdentitySignInLogs",
        "ADFSSignInLogs",
        "AuditLogs",
        "MicrosoftGraphActivityLogs",
        "UserRiskEvents",
        "ServicePrincipalRiskEvents",
        "RiskyUsers",
        "RiskyServicePrincipals",
        "AdvancedHunting-AlertEvidence",
        "AdvancedHunting-IdentityLogonEvents",
        "AdvancedHunting-DeviceLogonEvents",
    ] {
        assert!(tally.flat.get(c).is_some_and(|n| *n >= 20), "{c}: {:?}", tally.flat);
    }
    assert!(tally.errors > 0, "variants that fail fail alike");
    assert!(tally.correlated > 0, "no flat event was correlated");
    let compared: usize = tally.flat.values().sum();
    assert!(compared > 5000, "{compared} compared");
}

/// Records a single-member variant does not make: an audit event without any activity name
/// or operation type (activity 99 with an empty label).
#[test]
fn flat_forms_of_records_missing_several_members_equal_the_trees() {
    let full = Normalizer::new(NormalizeOptions::default());
    let lean = Normalizer::new(NormalizeOptions {
        lean: true,
        ..NormalizeOptions::default()
    });
    let cases = [
        (
            "AuditLogs",
            r#"{"time":"2026-11-27T08:00:00Z","category":"AuditLogs","properties":{"id":"a1","result":"success"}}"#,
        ),
        (
            "SignInLogs",
            r#"{"time":"2026-11-27T08:00:00Z","category":"SignInLogs","properties":{"id":"s1"}}"#,
        ),
        (
            "AdvancedHunting-IdentityLogonEvents",
            r#"{"time":"2026-11-27T08:00:00Z","category":"AdvancedHunting-IdentityLogonEvents","properties":{}}"#,
        ),
        (
            "UserRiskEvents",
            r#"{"time":"2026-11-27T08:00:00Z","properties":{"id":"r1","additionalInfo":"[{\"Key\":\"userAgent\",\"Value\":\"\"}]"}}"#,
        ),
        (
            "MicrosoftGraphActivityLogs",
            r#"{"time":"2026-11-27T08:00:00Z","properties":{"requestMethod":"get","requestUri":"https://graph.microsoft.com"}}"#,
        ),
    ];
    let mut tally = Tally::default();
    for (category, raw) in cases {
        let meta = crate::normalize::testutil::meta(category);
        compare(&full, &lean, raw, &meta, Bytes::from(raw), &mut tally);
    }
    let compared: usize = tally.flat.values().sum();
    assert_eq!(compared, cases.len(), "{:?}", tally.flat);
}

#[test]
fn only_a_lean_normalization_leaves_out_the_tree() {
    let full = Normalizer::new(NormalizeOptions::default());
    let lean = Normalizer::new(NormalizeOptions {
        lean: true,
        ..NormalizeOptions::default()
    });
    let (mut flat, mut tree) = (0, 0);
    for (_, rec) in samples() {
        let meta = meta_of(&rec);
        if let Ok(o) = full.normalize_bytes(&meta, &rec.raw) {
            assert!(o.normalized.flat().is_none() && o.normalized.is_object());
        }
        if let Ok(o) = lean.normalize_bytes(&meta, &rec.raw) {
            match o.normalized.flat() {
                Some(_) => {
                    flat += 1;
                    // Nothing but the attribute encoders can read it.
                    assert!(!o.normalized.is_object());
                }
                None => tree += 1,
            }
        }
    }
    // Graph incidents, alerts and the other families keep their tree.
    assert!(flat >= 20 && tree >= 10, "{flat} flat, {tree} with a tree");
}
