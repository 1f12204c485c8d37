//! Embedded JSON of a record (conditional access policies, authentication details,
//! `AdditionalFields`, ...) kept in the output tree as its compact text instead of parsed
//! into `serde_json::Value`s: the OCSF JSON line copies it, a `Value` is built only when an
//! encoder asks for one.

use std::borrow::Cow;

use bytestring::ByteString;
use serde_json::value::RawValue;
use serde_json::Value;

use super::lenient::{decode_str, is_placeholder};
use super::tree::{text, Node};
use crate::json_text::trim;

/// The node for a field that may hold JSON (`decode_embedded` is this as a `Value`):
/// objects and arrays (also when encoded inside a string) are kept as compact JSON text,
/// other strings stay strings, and `null`, empty strings, placeholders, `[]` and `{}` give
/// `None`.
pub(crate) fn embedded(raw: Option<&RawValue>) -> Option<Node> {
    let t = raw?.get();
    match t.as_bytes().first()? {
        b'[' | b'{' => container(t),
        b'"' => {
            let s: Cow<'_, str> = super::json_de::from_str(t).ok()?;
            embedded_str(&s)
        }
        b'n' => None,
        _ => super::json_de::from_str::<Value>(t).ok().map(Node::Val),
    }
}

/// [`embedded`] for an already extracted string.
pub(crate) fn embedded_str(s: &str) -> Option<Node> {
    let t = trim(s);
    if t.is_empty() || is_placeholder(t) {
        return None;
    }
    match t.as_bytes()[0] {
        b'[' | b'{' if super::json_de::from_str::<&RawValue>(t).is_ok() => container(t),
        _ => decode_str(s).map(Node::Val),
    }
}

/// Valid JSON text of an array or object as a node; `None` when it is empty.
fn container(json: &str) -> Option<Node> {
    let c = compact(json);
    if c.len() == 2 {
        return None; // `[]` or `{}`
    }
    Some(Node::Json(match c {
        Cow::Borrowed(b) => text(b),
        Cow::Owned(o) => ByteString::from(o),
    }))
}

/// Valid JSON text without the whitespace between tokens (a record written with indents or
/// line breaks must not break a JSON line); borrowed when there is none.
fn compact(json: &str) -> Cow<'_, str> {
    match crate::json_text::compact(json.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(json),
        // Only ASCII whitespace was taken out of valid UTF-8.
        Cow::Owned(o) => String::from_utf8(o).map_or(Cow::Borrowed(json), Cow::Owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn as_value(n: Option<Node>) -> Option<Value> {
        n.map(|n| {
            let mut o = crate::normalize::Obj::new();
            o.on("x", Some(n));
            o.to_value()["x"].clone()
        })
    }

    #[test]
    fn what_each_form_becomes() {
        use serde_json::json;
        let node = |s: &str| embedded(Some(&raw(s)));
        let text = |s: &str| match node(s) {
            Some(Node::Json(t)) => t.to_string(),
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(
            text(r#"[{"id":"p1","grant":["Mfa"]}]"#),
            r#"[{"id":"p1","grant":["Mfa"]}]"#
        );
        assert_eq!(text("{ \"a\" : [ 1 , { \"b\" : null } ] }"), r#"{"a":[1,{"b":null}]}"#);
        // JSON inside a string is decoded, and kept as text when it is an array or object.
        assert_eq!(
            text(r#""[{\"Key\":\"k\",\"Value\":\"v\"}]""#),
            r#"[{"Key":"k","Value":"v"}]"#
        );
        assert_eq!(text(r#"" {\"a\": 1} ""#), r#"{"a":1}"#);
        let value = |s: &str| as_value(node(s));
        assert_eq!(value(r#""Global Administrator""#), Some(json!("Global Administrator")));
        assert_eq!(value(r#""not json {""#), Some(json!("not json {")));
        assert_eq!(value(r#""[broken""#), Some(json!("[broken")));
        assert_eq!(value(r#""\"quoted\"""#), Some(json!("quoted")));
        assert_eq!(value("42"), Some(json!(42)));
        assert_eq!(value("true"), Some(json!(true)));
        for none in [r#""PII Removed""#, "[]", "{ }", r#""[ ]""#, r#""""#, "null"] {
            assert!(node(none).is_none(), "{none}");
        }
        assert!(embedded(None).is_none());
    }

    #[test]
    fn containers_are_text_shared_with_the_record() {
        let src = ByteString::from(r#"{"p":[{"id":"x"}]}"#);
        let node = crate::normalize::tree::with_source(&src, false, || {
            let r: &RawValue = serde_json::from_str(&src[5..17]).unwrap();
            embedded(Some(r))
        });
        match node {
            Some(Node::Json(t)) => {
                assert_eq!(&*t, r#"[{"id":"x"}]"#);
                assert_eq!(t.as_ptr(), src[5..].as_ptr(), "a slice of the record, not a copy");
            }
            other => panic!("expected JSON text, got {other:?}"),
        }
    }

    #[test]
    fn json_text_survives_the_disk_buffer_and_bad_text_is_refused() {
        use crate::buffer::wire::Reader;
        use crate::normalize::Obj;
        let r = raw("[ {\"id\": \"p1\"} ]");
        let mut o = Obj::new();
        o.embedded("policies", Some(&r)).s("name", Some("n"));
        let mut bytes = Vec::new();
        o.encode(&mut bytes);
        let back = Obj::decode(&mut Reader::new(&bytes), 0).unwrap();
        let mut line = Vec::new();
        back.write_json(&mut line).unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            r#"{"policies":[{"id":"p1"}],"name":"n"}"#
        );
        // The same bytes with the JSON text broken: refused, not carried into a JSON line.
        let at = bytes.windows(4).position(|w| w == b"[{\"i").unwrap();
        bytes[at] = b'x';
        assert!(Obj::decode(&mut Reader::new(&bytes), 0).is_err());
    }
}
