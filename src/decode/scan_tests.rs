//! The fast scan against serde_json: it never accepts what serde_json rejects, and reads
//! the same heads.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::*;

fn serde_head(text: &str) -> (Option<String>, Option<String>, Option<String>) {
    // The serde path's own record head.
    let h: crate::decode::RecordHead = serde_json::from_str(text).unwrap();
    let own = |c: Option<Cow<'_, str>>| c.map(Cow::into_owned);
    (own(h.category), own(h.tenant_id), own(h.resource_id))
}

fn head_tuple(h: &Head<'_>) -> (Option<String>, Option<String>, Option<String>) {
    let own = |c: Option<&str>| c.map(str::to_owned);
    (own(h.category), own(h.tenant_id), own(h.resource_id))
}

fn samples() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/eventhub");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            out.push(std::fs::read(path).unwrap());
        }
    }
    assert!(out.len() >= 10, "the Event Hub samples are there");
    out
}

/// Checks one input: accepted only when serde_json accepts it, with the same heads.
fn check(body: &[u8]) -> bool {
    let trimmed = body.trim_ascii();
    if !trimmed.starts_with(b"{") {
        return false;
    }
    let Some(scanned) = scan(trimmed) else {
        return false;
    };
    let text = std::str::from_utf8(trimmed).expect("accepted input is UTF-8 here");
    assert!(
        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(),
        "the scan accepted invalid JSON: {text}"
    );
    match scanned {
        Scanned::Single(h) => assert_eq!(head_tuple(&h), serde_head(text), "{text}"),
        Scanned::Records(list) => {
            #[derive(Deserialize)]
            struct Body<'a> {
                #[serde(borrow)]
                records: Vec<&'a RawValue>,
            }
            let b: Body = serde_json::from_str(text).unwrap();
            assert_eq!(b.records.len(), list.len());
            for (r, (bytes, h)) in b.records.iter().zip(&list) {
                assert_eq!(r.get().as_bytes(), *bytes, "record span");
                assert_eq!(head_tuple(h), serde_head(r.get()));
            }
        }
    }
    true
}

#[test]
fn every_sample_body_and_record_takes_the_fast_path() {
    for body in samples() {
        assert!(check(&body), "{}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for r in v["records"].as_array().unwrap() {
            let line = serde_json::to_vec(r).unwrap();
            assert!(check(&line), "{}", String::from_utf8_lossy(&line));
        }
    }
}

#[test]
fn never_accepts_what_serde_rejects() {
    // Every truncation and many one-byte changes of a record and of a body.
    let record = br#"{"time":"2026-11-02T08:00:00Z","category":"SignInLogs","tenantId":"t-1","properties":{"a":[1,-2.5e3,true,false,null,{"b":"c\"\\\/\b\f\n\r\t\u00e9"}],"e":{},"f":[]},"level":4}"#;
    let body = [&b"{\"records\":["[..], &record[..], b",", &record[..], b"]}"].concat();
    let swaps = b",:{}[]\"\\\n\t 'x0-.eE+/u";
    for input in [&record[..], &body[..]] {
        assert!(check(input));
        for cut in 0..input.len() {
            check(&input[..cut]);
        }
        for at in 0..input.len() {
            for &c in swaps {
                let mut m = input.to_vec();
                m[at] = c;
                check(&m);
            }
            let mut m = input.to_vec();
            m.remove(at);
            check(&m);
        }
    }
}

#[test]
fn what_it_leaves_to_serde() {
    let none = |s: &str| assert_eq!(scan(s.as_bytes()), None, "{s}");
    none(r#"{"value":[{"id":"1"}],"@odata.nextLink":"x"}"#);
    none(r#"{"category":"A","category":"B"}"#);
    none(r#"{"category":1}"#);
    none(r#"{"category":null}"#);
    none(r#"{"categ\u006fry":"A"}"#);
    none(r#"{"category":"A\u0042"}"#);
    none(r#"{"records":[1]}"#);
    none(r#"{"records":[{"a":1}],"records":[]}"#);
    none(r#"{'category':'A'}"#);
    none("{\"category\":\"line\nbreak\"}");
    none(r#"{"a":1} {"b":2}"#);
    none(r#"{"a":01}"#);
    none(r#"{"a":1.}"#);
    none(r#"{"a":[1,]}"#);
    none(r#"{"a":{"b":1,}}"#);
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
    none(&deep);
    assert_eq!(scan(br#"{"records":[]}"#), Some(Scanned::Records(Vec::new())));
    assert_eq!(
        scan(br#" {"category" : "AuditLogs" , "x" : [ ] } "#.trim_ascii()),
        Some(Scanned::Single(Head {
            category: Some("AuditLogs"),
            ..Head::default()
        }))
    );
}
