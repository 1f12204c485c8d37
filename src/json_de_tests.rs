//! The fast typed parse against serde_json: the same values whenever it succeeds, never
//! success where serde_json fails, and success on every sample record.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::*;

/// What both parses give (see `check_against_serde`).
fn agree(text: &str) -> bool {
    check_against_serde(text)
}

/// A struct as the mappers write them: borrowed strings, raw members, options, ignored keys.
#[derive(Deserialize, Debug)]
struct Shape<'a> {
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    raw: Option<&'a RawValue>,
    #[serde(borrow, default)]
    list: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    text: Option<&'a str>,
    #[serde(default)]
    n: Option<i64>,
    #[serde(default)]
    f: Option<f64>,
}

fn samples() -> Vec<String> {
    let files = [
        crate::test_json::sample_files("eventhub"),
        crate::test_json::sample_files("graph"),
    ];
    let out: Vec<String> = files
        .into_iter()
        .flatten()
        .map(|(_, b)| String::from_utf8(b).unwrap())
        .collect();
    assert!(out.len() >= 15, "the samples are there");
    out
}

#[test]
fn every_sample_takes_the_fast_path_with_serde_json_values() {
    for body in samples() {
        let Ok(v) = serde_json::from_str::<Value>(&body) else {
            continue; // the malformed samples are the repairs' business
        };
        assert!(agree(&body), "{body}");
        let items = v.get("records").or_else(|| v.get("value")).and_then(Value::as_array);
        for r in items.into_iter().flatten() {
            let compact = r.to_string();
            assert!(agree(&compact), "{compact}");
            let pretty = serde_json::to_string_pretty(r).unwrap();
            assert!(agree(&pretty), "{pretty}");
        }
    }
}

#[test]
fn typed_members_match_serde_json() {
    let text = r#" { "name" : "caf\u00e9 \"x\"", "skip": {"a":[1,{"b":null}],"c":"\\"},
        "raw" : {"k": [1, 2.5, "s"]} , "list": [ true, "x", {"y":[]} ], "n": -42, "f": 1e3 } "#;
    let ours: Shape = fast(text).unwrap();
    let theirs: Shape = serde_json::from_str(text).unwrap();
    assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
    assert_eq!(ours.raw.unwrap().get(), r#"{"k": [1, 2.5, "s"]}"#);
    assert_eq!(ours.list.len(), 3);
    assert_eq!(ours.name.as_deref(), Some("café \"x\""));
    assert_eq!((ours.n, ours.f), (Some(-42), Some(1000.0)));
    // A string without escapes is lent, as serde_json lends it.
    let plain: Shape = fast(r#"{"text":"plain"}"#).unwrap();
    assert_eq!(plain.text, Some("plain"));
    // A null raw member is absent.
    let none: Shape = fast(r#"{"raw":null}"#).unwrap();
    assert!(none.raw.is_none());
}

#[test]
fn numbers_are_serde_jsons() {
    for n in [
        "0",
        "-0",
        "7",
        "-7",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "1.5",
        "-0.0",
        "2.2250738585072011e-308",
        "0.1e1",
        "1E+2",
        "123456789012345678901234567890",
        "4.35",
        "47.6062",
        "-122.3321",
    ] {
        assert!(agree(&format!("[{n}]")), "{n}");
        let ours = fast::<f64>(n).unwrap();
        assert_eq!(ours.to_bits(), serde_json::from_str::<f64>(n).unwrap().to_bits(), "{n}");
    }
    for bad in ["01", "1.", ".5", "-", "1e", "+1", "0x1", "1e400", "--1"] {
        assert!(!agree(&format!("[{bad}]")), "{bad}");
    }
}

#[test]
fn escapes_are_serde_jsons() {
    for s in [
        r#""\ud83d\ude00""#,
        r#""\u00e9\u20ac/\/\b\f\n\r\t\"\\""#,
        r#""a\u0000b""#,
        r#""🙂 é""#,
    ] {
        assert!(agree(s), "{s}");
    }
    // Lone surrogates and bad escapes: serde_json decides.
    for s in [
        r#""\ud83d""#,
        r#""\ude00x""#,
        r#""\ud83d\u0041""#,
        r#""\x""#,
        r#""\u12""#,
        "\"a\u{1}b\"",
    ] {
        assert!(!agree(s), "{s}");
        assert_eq!(
            from_str::<Value>(s).map_err(|e| e.to_string()),
            serde_json::from_str::<Value>(s).map_err(|e| e.to_string())
        );
    }
}

#[test]
fn errors_are_serde_jsons() {
    for text in [
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"[1,]"#,
        r#"{"a":1} x"#,
        r#"{"a":tru}"#,
        r#"{1:2}"#,
        "",
        "{",
    ] {
        assert!(!agree(text), "{text}");
        let ours = from_str::<Shape>(text).map(|_| ()).map_err(|e| e.to_string());
        let theirs = serde_json::from_str::<Shape>(text)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(ours, theirs, "{text}");
    }
    // Data errors: the value parses, the struct does not.
    for text in [r#"{"n":"x"}"#, r#"{"text":"a\"b"}"#, r#"{"n":1,"n":2}"#] {
        assert!(agree(text), "{text}");
        let ours = from_str::<Shape>(text).map(|_| ()).map_err(|e| e.to_string());
        let theirs = serde_json::from_str::<Shape>(text)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(theirs.is_err(), "{text}");
        assert_eq!(ours, theirs, "{text}");
    }
    // serde_json's nesting limit: 127 containers in one another parse, 128 do not.
    for (levels, ok) in [(127, true), (128, false), (200, false)] {
        let deep = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert_eq!(agree(&deep), ok, "{levels}");
        assert_eq!(serde_json::from_str::<Value>(&deep).is_ok(), ok, "{levels}");
    }
}

/// Generated documents parse to serde_json's values, and none of their one-byte changes
/// is taken where serde_json refuses it.
#[test]
fn generated_documents_and_changes_agree() {
    let mut g = crate::test_json::Gen(0x2545_f491_4f6c_dd1d);
    for _ in 0..500 {
        let mut text = String::new();
        g.value(&mut text, 0);
        assert!(agree(&text), "{text}");
        for _ in 0..40 {
            if let Ok(s) = String::from_utf8(g.change(text.as_bytes(), b",:{}[]\"\\ x0\n\x01e-.u")) {
                agree(&s);
            }
        }
    }
}

/// Every sample record that normalizes does so on the fast path: the mappers' structs (raw
/// members, lenient types, options) never send a well-formed record to serde_json.
#[test]
fn sample_records_normalize_without_serde_json() {
    use crate::decode::{decode_unit, InputFormat};
    use crate::normalize::testutil::{meta, normalizer};
    let n = normalizer();
    let mut normalized = 0;
    let dir = format!("{}/tests/data", env!("CARGO_MANIFEST_DIR"));
    let graph = [
        ("graph/incidents_page1.json", "GraphIncident"),
        ("graph/incidents_page2.json", "GraphIncident"),
        ("graph/risk_detections.json", "GraphRiskDetection"),
        ("graph/risky_users.json", "GraphRiskyUser"),
    ];
    let mut inputs: Vec<(String, Vec<u8>, InputFormat, Option<&str>)> = graph
        .iter()
        .map(|(f, c)| {
            let path = format!("{dir}/{f}");
            let body = std::fs::read(&path).unwrap();
            (path, body, InputFormat::Graph, Some(*c))
        })
        .collect();
    for (path, body) in crate::test_json::sample_files("eventhub") {
        inputs.push((path.display().to_string(), body, InputFormat::Eventhub, None));
    }
    for (path, body, format, category) in inputs {
        let Ok(unit) = decode_unit(format, body.into()) else {
            continue;
        };
        for r in unit.records {
            FALLBACKS.with(|c| c.set(0));
            let out = n.normalize(&meta(category.unwrap_or(&r.category)), &r.raw);
            if out.is_ok() {
                normalized += 1;
                assert_eq!(
                    FALLBACKS.with(|c| c.get()),
                    0,
                    "{path}: {}",
                    String::from_utf8_lossy(&r.raw)
                );
            }
        }
    }
    assert!(normalized >= 40, "{normalized} records");
}
