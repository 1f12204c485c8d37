//! The flat form a lean normalization builds without a tree (`normalize::direct`) equals what
//! the encoders read of the full normalization's tree (`fields::flat_of`), for every sample
//! record of the families mapped flat and for variants of each with one member left out,
//! emptied or of another type: the same values, the same errors, the same cache effects.

use std::ops::Deref;
use std::sync::Arc;

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

/// The record with each member of `properties` (and of the objects in it, two levels down)
/// left out, set to `""`, and set to a number.
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
    let mut out = Vec::new();
    for path in paths {
        for replacement in [None, Some(Value::from("")), Some(Value::from(7))] {
            let mut w = v.clone();
            let mut cur = &mut w;
            for k in &path[..path.len() - 1] {
                cur = &mut cur[k.as_str()];
            }
            let last = path.last().unwrap();
            let Value::Object(m) = cur else { continue };
            match &replacement {
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

#[test]
fn flat_forms_equal_what_the_encoders_read_of_the_full_normalization() {
    let full = Normalizer::new(NormalizeOptions::default());
    let lean = Normalizer::new(NormalizeOptions {
        lean: true,
        ..NormalizeOptions::default()
    });
    let mut flat_by_category: std::collections::BTreeMap<String, usize> = Default::default();
    let (mut compared, mut errors) = (0, 0);
    for (name, rec) in samples() {
        let mut meta = meta_of(&rec);
        meta.change_type = (compared % 3 == 1).then(|| Arc::from("updated"));
        let mut inputs = vec![rec.raw.to_vec()];
        inputs.extend(variants(&rec.raw));
        for (i, raw) in inputs.into_iter().enumerate() {
            let raw = bytes::Bytes::from(raw);
            let a = full.normalize_bytes(&meta, &raw);
            let b = lean.normalize_bytes(&meta, &raw);
            let (a, b) = match (a, b) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(x), Err(y)) => {
                    assert_eq!(x.to_string(), y.to_string(), "{name} variant {i}");
                    errors += 1;
                    continue;
                }
                (a, b) => panic!("{name} variant {i}: full {:?}, lean {:?}", a.map(|_| ()), b.map(|_| ())),
            };
            assert_eq!(
                (a.severity_id, a.event_ms, &a.entity_key, &a.tenant, a.duplicate),
                (b.severity_id, b.event_ms, &b.entity_key, &b.tenant, b.duplicate),
                "{name} variant {i}"
            );
            assert_eq!(a.normalized.class_uid, b.normalized.class_uid, "{name} variant {i}");
            assert_eq!(a.normalized.event_uid(), b.normalized.event_uid(), "{name} variant {i}");
            let Some(f) = b.normalized.flat() else { continue };
            let view = View::new(a.normalized.root(), &meta);
            assert_eq!(
                resolved(f, &meta),
                resolved(&flat_of(&view), &meta),
                "{name} variant {i}"
            );
            *flat_by_category.entry(meta.category.to_string()).or_default() += 1;
            compared += 1;
        }
    }
    for c in [
        "SignInLogs",
        "NonInteractiveUserSignInLogs",
        "ServicePrincipalSignInLogs",
        "ManagedIdentitySignInLogs",
        "AuditLogs",
        "MicrosoftGraphActivityLogs",
        "UserRiskEvents",
        "ServicePrincipalRiskEvents",
        "RiskyUsers",
        "RiskyServicePrincipals",
        "AdvancedHunting-AlertEvidence",
        "AdvancedHunting-IdentityLogonEvents",
    ] {
        assert!(
            flat_by_category.get(c).is_some_and(|n| *n >= 20),
            "{c}: {flat_by_category:?}"
        );
    }
    assert!(errors > 0, "variants that fail fail alike");
    assert!(compared > 2000, "{compared} compared");
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
