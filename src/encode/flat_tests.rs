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
use crate::event::{EventKind, EventMeta};
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
/// placeholder or a number; `into_lists`: also the members of objects in arrays (a Graph
/// alert's evidence list, the user account in it).
fn variants(raw: &[u8], into_lists: bool) -> Vec<Vec<u8>> {
    let Ok(v) = serde_json::from_slice::<Value>(raw) else {
        return Vec::new();
    };
    /// A member's key, or an element's index in an array.
    #[derive(Clone)]
    enum Step {
        Key(String),
        At(usize),
    }
    let mut paths: Vec<Vec<Step>> = Vec::new();
    fn walk(v: &Value, at: &mut Vec<Step>, depth: usize, lists: bool, out: &mut Vec<Vec<Step>>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    at.push(Step::Key(k.clone()));
                    out.push(at.clone());
                    if depth < 3 {
                        walk(child, at, depth + 1, lists, out);
                    }
                    at.pop();
                }
            }
            Value::Array(list) if lists => {
                for (i, child) in list.iter().enumerate() {
                    at.push(Step::At(i));
                    walk(child, at, depth, lists, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }
    walk(&v, &mut Vec::new(), 0, into_lists, &mut paths);
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
            for step in &path[..path.len() - 1] {
                cur = match step {
                    Step::Key(k) => &mut cur[k.as_str()],
                    Step::At(i) => &mut cur[*i],
                };
            }
            let (Some(Step::Key(last)), Value::Object(m)) = (path.last(), cur) else {
                continue;
            };
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
                let graph = matches!(meta.kind, EventKind::Alert | EventKind::Incident);
                for (i, raw) in variants(&rec.raw, graph).into_iter().enumerate() {
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
        "GraphAlert",
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

/// A Graph alert whose evidence list has what the samples lack: an IP in the destination
/// role first, an IP without an address but with a location, a file known only by its MD5,
/// a process image, a message with URLs and a sender but no URL evidence, a device that
/// names only its OS, a mailbox, and more than the 32 evidences the encoders look at (a URL
/// evidence past them). Its flat form, and those of its variants (each evidence member left
/// out, emptied, blank, a placeholder or a number; each evidence dropped), equal the tree's.
#[test]
fn flat_forms_of_graph_alerts_with_varied_evidence_equal_the_trees() {
    use serde_json::json;
    let ev = |t: &str, rest: Value| {
        let mut e = json!({"@odata.type": format!("#microsoft.graph.security.{t}"), "roles": []});
        e.as_object_mut().unwrap().extend(rest.as_object().unwrap().clone());
        e
    };
    let mut evidence = vec![
        ev(
            "ipEvidence",
            json!({"ipAddress": "203.0.113.9", "roles": ["destination"]}),
        ),
        ev(
            "ipEvidence",
            json!({"countryLetterCode": "NL", "location": {"city": "Delft", "latitude": 52.0, "longitude": 4.36}}),
        ),
        ev("deviceEvidence", json!({"osPlatform": "Linux"})),
        ev("deviceEvidence", json!({"hostName": "srv-07", "mdeDeviceId": "d7"})),
        ev(
            "fileHashEvidence",
            json!({"fileDetails": {"md5": "0cc175b9c0f1b6a831c399e269772661"}}),
        ),
        ev(
            "processEvidence",
            json!({"imageFile": {"fileName": "cmd.exe", "filePath": "C:\\Windows\\System32", "sha1": "a9993e36"}}),
        ),
        ev(
            "analyzedMessageEvidence",
            json!({"senderIp": "198.51.100.3", "urls": ["", "https://a.example/x"], "p1Sender": {"emailAddress": "p1@a.example"}}),
        ),
        ev(
            "ipEvidence",
            json!({"ipAddress": "192.0.2.80", "location": {"city": "Oslo", "countryName": "Norway", "latitude": 59.9, "longitude": 10.7}}),
        ),
        ev(
            "mailboxEvidence",
            json!({"primaryAddress": "kim@fabrikam.example", "displayName": "Kim"}),
        ),
        ev(
            "userEvidence",
            json!({"roles": ["attacked"], "userAccount": {"accountName": "kim", "azureAdUserId": "a1b2c3d4-0000-4000-8000-000000000001"}}),
        ),
    ];
    for i in 0..24 {
        evidence.push(ev(
            "ipEvidence",
            json!({"ipAddress": format!("10.0.0.{i}"), "roles": ["destination"]}),
        ));
    }
    evidence.push(ev("urlEvidence", json!({"url": "https://past.example/the-32nd"})));
    let alert = json!({
        "@odata.type": "#microsoft.graph.security.alert",
        "id": "da-varied-1", "incidentId": "77", "status": "inProgress", "severity": "medium",
        "serviceSource": "microsoftDefenderForOffice365", "category": "InitialAccess",
        "tenantId": "D13C513A-42F8-4DA1-97B1-165F0971B7C4", "title": "Varied evidence",
        "createdDateTime": "2026-11-27T09:41:33Z", "lastUpdateDateTime": "2026-11-27T09:44:10Z",
        "firstActivityDateTime": "2026-11-27T09:40:58Z", "evidence": evidence,
    });
    let mut records = vec![serde_json::to_vec(&alert).unwrap()];
    records.extend(variants(&records[0], true));
    for i in 0..alert["evidence"].as_array().unwrap().len() {
        let mut fewer = alert.clone();
        fewer["evidence"].as_array_mut().unwrap().remove(i);
        records.push(serde_json::to_vec(&fewer).unwrap());
    }
    let full = Normalizer::new(NormalizeOptions::default());
    let lean = Normalizer::new(NormalizeOptions {
        lean: true,
        ..NormalizeOptions::default()
    });
    let meta = crate::encode::testutil::meta(EventKind::Alert, "GraphAlert");
    let mut tally = Tally::default();
    for (i, raw) in records.into_iter().enumerate() {
        compare(
            &full,
            &lean,
            &format!("variant {i}"),
            &meta,
            Bytes::from(raw),
            &mut tally,
        );
    }
    assert!(tally.flat["GraphAlert"] > 600, "{:?}", tally.flat);
    // What the encoders get of the alert itself: the message's sender is the first source
    // IP (the IP evidence before it has no address), the URL is the message's (the URL
    // evidence is past the 32nd), the file is known by its MD5 only.
    let out = lean
        .normalize_bytes(&meta, &Bytes::from(serde_json::to_vec(&alert).unwrap()))
        .unwrap();
    let f = out.normalized.flat().unwrap().map(|s| s.to_string());
    assert_eq!(f.src_ip.as_deref(), Some("198.51.100.3"));
    assert_eq!(f.dst_ip.as_deref(), Some("203.0.113.9"));
    assert_eq!(f.url.as_deref(), Some("https://a.example/x"));
    assert_eq!(
        (f.file_name, f.file_hash.as_deref()),
        (None, Some("0cc175b9c0f1b6a831c399e269772661"))
    );
    assert_eq!(f.src_user.name.as_deref(), Some("kim"));
    assert_eq!(f.country, None, "the location belongs to the source IP's evidence");
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
    // Graph incidents (the encoders list or split out their alerts from the tree) and the
    // other families keep their tree.
    assert!(flat >= 20 && tree >= 10, "{flat} flat, {tree} with a tree");
}
