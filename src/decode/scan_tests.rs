//! The fast scan against serde_json: it never accepts what serde_json rejects, and reads
//! the same heads. A single record whose nested values it only skipped (unchecked) may be
//! invalid JSON, but then one that decoding in full refuses without a repair.

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
    let out: Vec<Vec<u8>> = crate::test_json::sample_files("eventhub")
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert!(out.len() >= 10, "the Event Hub samples are there");
    out
}

/// Checks one input both ways. Checking everything, the scan accepts it only when
/// serde_json does, with the same heads. Skipping nested values unchecked, it accepts the
/// same valid inputs with the same heads, and an invalid one only as an unchecked single
/// record that decoding in full refuses (without a repair). Returns whether the checking
/// scan accepted it.
fn check(body: &[u8]) -> bool {
    let trimmed = body.trim_ascii();
    if !trimmed.starts_with(b"{") {
        return false;
    }
    let (full, quick) = (scan(trimmed, false), scan(trimmed, true));
    let Ok(text) = std::str::from_utf8(trimmed) else {
        // The scan leaves UTF-8 to the normalizer, which checks each record's text.
        return full.is_some();
    };
    let valid = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    if !valid {
        assert!(full.is_none(), "the scan accepted invalid JSON: {text}");
        if let Some(q) = quick {
            assert!(matches!(q, Scanned::Single { checked: false, .. }), "{text}");
            let err = crate::decode::recheck(&bytes::Bytes::copy_from_slice(trimmed));
            assert!(err.is_some(), "no decode error for broken JSON: {text}");
        }
        return false;
    }
    assert_eq!(full.is_some(), quick.is_some(), "{text}");
    let (Some(full), Some(quick)) = (full, quick) else {
        return false;
    };
    for scanned in [quick, full] {
        match scanned {
            Scanned::Single { head, .. } => assert_eq!(head_tuple(&head), serde_head(text), "{text}"),
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
    let none = |s: &str| {
        assert_eq!(scan(s.as_bytes(), false), None, "{s}");
        assert_eq!(scan(s.as_bytes(), true), None, "{s}");
    };
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
    // Nested values of a single record are skipped unchecked: the normalizer's parse
    // refuses these, and decoding in full then does too.
    for broken in [
        r#"{"a":[1,]}"#,
        r#"{"a":{"b":1,}}"#,
        r#"{"a":{"b":tru}}"#,
        r#"{"a":[1,2}}"#,
    ] {
        let quick = scan(broken.as_bytes(), true);
        assert!(
            matches!(quick, Some(Scanned::Single { checked: false, .. })),
            "{broken}"
        );
        assert!(!check(broken.as_bytes()), "{broken}");
    }
    // Inside an Event Hub body they are checked; beside one, the body goes to serde.
    none(r#"{"records":[{"a":[1,]}]}"#);
    for beside in [r#"{"x":[1],"records":[]}"#, r#"{"records":[],"x":{}}"#] {
        assert_eq!(scan(beside.as_bytes(), true), None, "{beside}");
        assert_eq!(scan(beside.as_bytes(), false), Some(Scanned::Records(Vec::new())));
    }
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
    none(&deep);
    // The nesting limit is the same checked or not: 119 containers in a member, not 120.
    let nested = |n: usize| format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
    none(&nested(120));
    assert!(matches!(
        scan(nested(119).as_bytes(), true),
        Some(Scanned::Single { checked: false, .. })
    ));
    assert!(matches!(
        scan(nested(119).as_bytes(), false),
        Some(Scanned::Single { checked: true, .. })
    ));
    assert_eq!(scan(br#"{"records":[]}"#, true), Some(Scanned::Records(Vec::new())));
    assert_eq!(
        scan(br#" {"category" : "AuditLogs" , "x" : [ ] } "#.trim_ascii(), true),
        Some(Scanned::Single {
            head: Head {
                category: Some("AuditLogs"),
                ..Head::default()
            },
            checked: false,
        })
    );
}

/// Strings whose escapes, quotes and backslash runs fall on every offset from the start of
/// the text and around the 8- and 16-byte steps of the string search (shifted by a key of
/// 0-70 bytes): accepted, with the same heads; broken ones rejected.
#[test]
fn escapes_at_every_offset() {
    let tricky = [
        r#""\\""#,
        r#""\\\\""#,
        r#""a\"b""#,
        r#""\\\"""#,
        r#""x\\\\\\\"y""#,
        r#""\u00e9\u20AC""#,
        r#""/\/\b\f\n\r\t""#,
        r#""{\"k\":[1,\"v\"]}""#,
    ];
    for pad in 0..70 {
        for t in tricky {
            let key = "k".repeat(pad);
            let record =
                format!(r#"{{"{key}":{t},"category":"SignInLogs","n":[-0.5e-3,{t},true,null],"tenantId":"t-{pad}"}}"#);
            assert!(check(record.as_bytes()), "{record}");
            let body = format!(r#"{{"records":[{record},{record}]}}"#);
            assert!(check(body.as_bytes()), "{body}");
            // Broken: a lone backslash before the closing quote, a raw control character.
            let open = format!(r#"{{"{key}":"\","category":"A"}}"#);
            assert!(!check(open.as_bytes()), "{open}");
            let ctrl = format!("{{\"{key}\":\"a\u{1}b\",\"category\":\"A\"}}");
            assert!(!check(ctrl.as_bytes()), "{ctrl}");
            let bad_escape = format!(r#"{{"{key}":"\x","category":"A"}}"#);
            assert!(!check(bad_escape.as_bytes()), "{bad_escape}");
        }
    }
}

/// Generated records and bodies are accepted with the heads serde reads; every one-byte
/// change of them is accepted only when serde_json accepts it.
#[test]
fn generated_documents_agree_with_serde() {
    let mut g = crate::test_json::Gen(0x9e37_79b9_7f4a_7c15);
    for round in 0..400 {
        let mut record = String::from("{\"category\":\"AuditLogs\"");
        for k in 0..g.pick(8) {
            // A record's own keys without escapes (an escaped one is left to serde).
            record.push_str(&format!(",\"k{k}\":"));
            g.value(&mut record, 1);
        }
        record.push_str(&format!(",\"tenantId\":\"t{round}\"}}"));
        assert!(check(record.as_bytes()), "{record}");
        let body = format!("{{\"records\":[{record}, {record}]}}");
        assert!(check(body.as_bytes()), "{body}");
        for _ in 0..60 {
            check(&g.change(body.as_bytes(), b",:{}[]\"\\ x0\n\x01e-"));
        }
    }
}
