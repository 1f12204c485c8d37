//! Lenient borrowed field types for typed serde parsing of Microsoft records
//! (strings that arrive as numbers, numbers as strings, `null`/`""`/`{PII Removed}` as absent,
//! objects or arrays where a scalar was expected, JSON encoded inside strings).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use crate::json_text::trim;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// A string field. Borrows from the input when it has no escapes. Numbers and booleans are
/// kept as their text; `null`, objects and arrays become absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Str<'a>(pub Option<Cow<'a, str>>);

impl<'a> Str<'a> {
    /// The value when it carries information: not empty, not only spaces, not a
    /// `{PII Removed}` placeholder.
    pub fn get(&self) -> Option<&str> {
        let s = self.0.as_deref()?;
        if trim(s).is_empty() || is_placeholder(s) {
            None
        } else {
            Some(s)
        }
    }

    /// The value was redacted by the producer (`{PII Removed}`).
    #[cfg(test)]
    pub fn is_redacted(&self) -> bool {
        self.0.as_deref().is_some_and(is_placeholder)
    }

    /// Owned copy of [`Str::get`].
    pub fn owned(&self) -> Option<String> {
        self.get().map(str::to_owned)
    }

    /// Case-insensitive comparison of [`Str::get`] with `other`.
    pub fn is(&self, other: &str) -> bool {
        self.get().is_some_and(|s| s.eq_ignore_ascii_case(other))
    }

    #[cfg(test)]
    pub fn from_static(s: &'static str) -> Str<'static> {
        Str(Some(Cow::Borrowed(s)))
    }
}

/// `{PII Removed}`, `<PII Removed>`, `PII Removed` (any case).
pub(crate) fn is_placeholder(s: &str) -> bool {
    (11..=20).contains(&s.len())
        && s.trim_matches(|c: char| matches!(c, '{' | '}' | '<' | '>' | '[' | ']' | ' '))
            .eq_ignore_ascii_case("PII Removed")
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or scalar")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Some(Cow::Owned(v))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Str<'a>, E> {
                Ok(Str(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Str<'a>, E> {
                Ok(Str(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Str<'a>, E> {
                Ok(Str(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Str<'a>, E> {
                Ok(Str(Some(Cow::Borrowed(if v { "true" } else { "false" }))))
            }
            fn visit_unit<E>(self) -> Result<Str<'a>, E> {
                Ok(Str(None))
            }
            fn visit_none<E>(self) -> Result<Str<'a>, E> {
                Ok(Str(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Str<'a>, D::Error> {
                Str::deserialize(d)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Str<'a>, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Str(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Str<'a>, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Str(None))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A number field that may arrive as a JSON number or a numeric string (`"0"`, `""`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) enum Num {
    #[default]
    None,
    I(i64),
    F(f64),
}

impl Num {
    pub fn i64(self) -> Option<i64> {
        match self {
            Num::I(i) => Some(i),
            Num::F(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
            _ => None,
        }
    }
    pub fn f64(self) -> Option<f64> {
        match self {
            Num::I(i) => Some(i as f64),
            Num::F(f) => Some(f),
            Num::None => None,
        }
    }
    /// JSON form (integer when integral).
    pub fn value(self) -> Option<Value> {
        match self {
            Num::I(i) => Some(Value::from(i)),
            Num::F(f) => serde_json::Number::from_f64(f).map(Value::Number),
            Num::None => None,
        }
    }
}

fn num_from_str(s: &str) -> Num {
    let t = trim(s);
    if let Ok(i) = t.parse::<i64>() {
        Num::I(i)
    } else if let Ok(f) = t.parse::<f64>() {
        if f.is_finite() {
            Num::F(f)
        } else {
            Num::None
        }
    } else {
        Num::None
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or numeric string")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Num, E> {
                Ok(Num::I(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Num, E> {
                Ok(i64::try_from(v).map(Num::I).unwrap_or(Num::F(v as f64)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Num, E> {
                Ok(Num::F(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Num, E> {
                Ok(num_from_str(v))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Num, E> {
                Ok(Num::None)
            }
            fn visit_unit<E>(self) -> Result<Num, E> {
                Ok(Num::None)
            }
            fn visit_none<E>(self) -> Result<Num, E> {
                Ok(Num::None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Num, D::Error> {
                Num::deserialize(d)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Num, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Num::None)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Num, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Num::None)
            }
        }
        d.deserialize_any(V)
    }
}

/// A boolean that may arrive as `true`, `"True"`, `"false"`, `1` or `0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flag(pub Option<bool>);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a boolean")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Flag, E> {
                Ok(Flag(match v {
                    0 => Some(false),
                    1 => Some(true),
                    _ => None,
                }))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Flag, E> {
                Ok(Flag(match v {
                    0 => Some(false),
                    1 => Some(true),
                    _ => None,
                }))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Flag, E> {
                Ok(Flag(None))
            }
            fn visit_str<E>(self, v: &str) -> Result<Flag, E> {
                let t = trim(v);
                Ok(Flag(if t.eq_ignore_ascii_case("true") || t == "1" {
                    Some(true)
                } else if t.eq_ignore_ascii_case("false") || t == "0" {
                    Some(false)
                } else {
                    None
                }))
            }
            fn visit_unit<E>(self) -> Result<Flag, E> {
                Ok(Flag(None))
            }
            fn visit_none<E>(self) -> Result<Flag, E> {
                Ok(Flag(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Flag, D::Error> {
                Flag::deserialize(d)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Flag, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Flag(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Flag, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Flag(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// An array field; `null`, scalars and objects become an empty list.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Seq<T>(pub Vec<T>);

impl<T> Default for Seq<T> {
    fn default() -> Self {
        Seq(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Seq<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Seq<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Seq<T>, A::Error> {
                let mut v = Vec::with_capacity(s.size_hint().unwrap_or(0).min(64));
                while let Some(x) = s.next_element::<T>()? {
                    v.push(x);
                }
                Ok(Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Seq<T>, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Seq(Vec::new()))
            }
            fn visit_unit<E>(self) -> Result<Seq<T>, E> {
                Ok(Seq(Vec::new()))
            }
            fn visit_none<E>(self) -> Result<Seq<T>, E> {
                Ok(Seq(Vec::new()))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Seq<T>, D::Error> {
                Seq::deserialize(d)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Seq<T>, E> {
                Ok(Seq(Vec::new()))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Seq<T>, E> {
                Ok(Seq(Vec::new()))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Seq<T>, E> {
                Ok(Seq(Vec::new()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Seq<T>, E> {
                Ok(Seq(Vec::new()))
            }
            fn visit_str<E>(self, _: &str) -> Result<Seq<T>, E> {
                Ok(Seq(Vec::new()))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A nested object field; `null`, scalars (e.g. `"{PII Removed}"`) and arrays become absent.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Nest<T>(pub Option<T>);

impl<T> Default for Nest<T> {
    fn default() -> Self {
        Nest(None)
    }
}

impl<T> Nest<T> {
    pub fn as_ref(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Nest<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Nest<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Nest<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(m)).map(|t| Nest(Some(t)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Nest<T>, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Nest(None))
            }
            fn visit_unit<E>(self) -> Result<Nest<T>, E> {
                Ok(Nest(None))
            }
            fn visit_none<E>(self) -> Result<Nest<T>, E> {
                Ok(Nest(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Nest<T>, D::Error> {
                Nest::deserialize(d)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Nest<T>, E> {
                Ok(Nest(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Nest<T>, E> {
                Ok(Nest(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Nest<T>, E> {
                Ok(Nest(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Nest<T>, E> {
                Ok(Nest(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Nest<T>, E> {
                Ok(Nest(None))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Decode a field that may hold JSON encoded inside a string (`additionalInfo`,
/// `AdditionalFields`, `AttackTechniques`, `modifiedProperties[].newValue`, ...).
///
/// A string whose trimmed text starts with `{`, `[` or `"` and parses as JSON is replaced by
/// the decoded value; any other string stays a string; objects and arrays are kept as they
/// are; `null`, empty strings, placeholders, `[]` and `{}` give `None`.
pub(crate) fn decode_embedded(raw: Option<&RawValue>) -> Option<Value> {
    super::embedded::embedded(raw).map(super::tree::Node::into_value)
}

/// `false` for `[]` and `{}` (dropped from the output like absent values).
fn not_empty_container(v: &Value) -> bool {
    match v {
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// [`decode_embedded`] for an already extracted string.
pub(crate) fn decode_str(s: &str) -> Option<Value> {
    let t = trim(s);
    if t.is_empty() || is_placeholder(t) {
        return None;
    }
    if matches!(t.as_bytes()[0], b'{' | b'[' | b'"') {
        if let Ok(v) = super::json_de::from_str::<Value>(t) {
            return Some(v).filter(not_empty_container);
        }
    }
    Some(Value::String(s.to_owned()))
}

/// `decode_embedded(raw).map(key_value_object)` (Identity Protection's `additionalInfo`),
/// with its usual form read in one pass: a JSON string holding a list of objects, each with
/// exactly a string `Key` and a string `Value` and no other member, no string with escapes
/// (the pairs borrow their text) and no control character. Anything else, and any list
/// this pass refuses, goes the general way; `tests::key_value_info_is_the_general_way`
/// holds the two equal.
pub(crate) fn key_value_info(raw: Option<&RawValue>) -> Option<Value> {
    match raw.and_then(key_value_list) {
        Some(v) => v,
        None => decode_embedded(raw).map(key_value_object),
    }
}

/// One `{"Key": k, "Value": v}` object of [`key_value_list`]: only an object (a derived
/// `Deserialize` would also take a two-element array), each member once.
struct Pair<'a> {
    key: &'a str,
    value: &'a str,
}

impl<'de: 'a, 'a> Deserialize<'de> for Pair<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Pair<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object with a string Key and a string Value")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Pair<'a>, M::Error> {
                let (mut key, mut value) = (None, None);
                while let Some(k) = m.next_key::<&'de str>()? {
                    let slot = match k {
                        "Key" => &mut key,
                        "Value" => &mut value,
                        other => return Err(de::Error::unknown_field(other, &["Key", "Value"])),
                    };
                    if slot.replace(m.next_value::<&'de str>()?).is_some() {
                        return Err(de::Error::custom("a member twice"));
                    }
                }
                match (key, value) {
                    (Some(key), Some(value)) => Ok(Pair { key, value }),
                    _ => Err(de::Error::custom("Key or Value missing")),
                }
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// [`key_value_info`]'s one pass: `None` when the general way must decide.
fn key_value_list(raw: &RawValue) -> Option<Option<Value>> {
    let t = raw.get();
    if !t.starts_with('"') {
        return None;
    }
    let s: Cow<'_, str> = super::json_de::from_str(t).ok()?;
    let list = trim(&s);
    if !list.starts_with('[') || list.bytes().any(|b| b == b'\\' || b < 0x20) {
        return None;
    }
    let pairs: Vec<Pair<'_>> = super::json_de::from_str(list).ok()?;
    if pairs.is_empty() {
        return Some(None);
    }
    let mut out = serde_json::Map::new();
    for p in pairs {
        out.insert(p.key.to_owned(), decode_str(p.value).unwrap_or(Value::Null));
    }
    Some(Some(Value::Object(out)))
}

/// Turn a `[{"Key": k, "Value": v}]` / `[{"key": k, "value": v}]` list into an object,
/// decoding values that hold JSON. Other shapes are returned unchanged.
pub(crate) fn key_value_object(v: Value) -> Value {
    let Value::Array(items) = v else { return v };
    let mut out = serde_json::Map::new();
    for item in &items {
        let Value::Object(o) = item else {
            return Value::Array(items);
        };
        let k = o.get("Key").or_else(|| o.get("key"));
        let val = o.get("Value").or_else(|| o.get("value"));
        let Some(Value::String(k)) = k else {
            return Value::Array(items);
        };
        let val = match val {
            Some(Value::String(s)) => decode_str(s).unwrap_or(Value::Null),
            Some(other) => other.clone(),
            None => Value::Null,
        };
        out.insert(k.clone(), val);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// Every list of one to three items built from tricky keys, values and item shapes, as
    /// a JSON string (compact, spaced, pretty) and as a plain array, and other forms: the
    /// one pass and the general way give the same object.
    #[test]
    fn key_value_info_is_the_general_way() {
        let values = [
            r#""Mozilla/5.0 (Windows NT 10.0)""#,
            r#""""#,
            r#"" ""#,
            r#""PII Removed""#,
            r#""{PII Removed}""#,
            r#""[PII Removed]""#,
            r#""{\"a\":1}""#,
            r#""[1,2]""#,
            r#""[]""#,
            r#""\"q\"""#,
            r#""42""#,
            r#""[broken""#,
            r#""tab\there""#,
            "\"raw\ttab\"",
            "\"raw\u{1}control\"",
            r#""é ✓""#,
            r#""\u00e9""#,
            r#""\ud800""#,
            "42",
            "null",
            "true",
            r#"{"x":1}"#,
        ];
        let keys = [r#""userAgent""#, r#""alertUrl""#, r#""""#, r#""k\"x""#, "1"];
        let items = |k: &str, v: &str| {
            vec![
                format!(r#"{{"Key":{k},"Value":{v}}}"#),
                format!(r#"{{"Value":{v},"Key":{k}}}"#),
                format!(r#"{{"key":{k},"value":{v}}}"#),
                format!(r#"{{"Key":{k}}}"#),
                format!(r#"{{"Key":{k},"Value":{v},"Other":1}}"#),
                format!(r#"{{"Key":{k},"Key":"dup","Value":{v}}}"#),
                format!(r#"{{ "Key" : {k} , "Value" : {v} }}"#),
                format!("[{k},{v}]"),
                format!(r#"{{"Key":{k},"Value":{v},"Value":"dup"}}"#),
                "[1]".to_string(),
            ]
        };
        let mut lists = vec![
            "[]".to_string(),
            "[ ]".to_string(),
            "{}".to_string(),
            r#"{"userAgent":"x"}"#.to_string(),
        ];
        for k in keys {
            for v in values {
                for item in items(k, v) {
                    lists.push(format!("[{item}]"));
                    lists.push(format!(r#"[{item},{{"Key":"userAgent","Value":"second"}}]"#));
                    lists.push(format!("[\n  {item}\n]"));
                }
            }
        }
        lists.push(r#"[{"Key":"a","Value":"1"},{"Key":"a","Value":"2"},{"Key":"b","Value":"3"}]"#.to_string());
        lists.push(r#"[{"Key":"a","Value":"1"}] trailing"#.to_string());
        let mut checked = 0;
        let mut fast = 0;
        for list in &lists {
            let mut forms = vec![
                serde_json::to_string(list).unwrap(),
                serde_json::to_string(&format!("  {list} ")).unwrap(),
            ];
            if serde_json::from_str::<&RawValue>(list).is_ok() {
                forms.push(list.clone());
            }
            for form in forms {
                let raw = RawValue::from_string(form.clone()).unwrap();
                let want = decode_embedded(Some(&raw)).map(key_value_object);
                assert_eq!(key_value_info(Some(&raw)), want, "{form}");
                checked += 1;
                fast += usize::from(key_value_list(&raw).is_some());
            }
        }
        for other in ["null", "42", r#""""#, r#""PII Removed""#, r#""not a list""#] {
            let raw = RawValue::from_string(other.to_string()).unwrap();
            assert_eq!(
                key_value_info(Some(&raw)),
                decode_embedded(Some(&raw)).map(key_value_object)
            );
        }
        assert_eq!(key_value_info(None), None);
        // Both ways were taken, the one pass for a good share.
        assert!(fast > 200 && fast < checked, "{fast} of {checked}");
    }

    #[derive(Deserialize)]
    #[serde(bound(deserialize = "'de: 'a"))]
    struct T<'a> {
        #[serde(default)]
        s: Str<'a>,
        #[serde(default)]
        n: Num,
        #[serde(default)]
        f: Flag,
        #[serde(default)]
        l: Seq<Str<'a>>,
        #[serde(default)]
        o: Nest<Inner<'a>>,
        #[serde(default)]
        r: Option<&'a RawValue>,
    }

    #[derive(Deserialize)]
    #[serde(bound(deserialize = "'de: 'a"))]
    struct Inner<'a> {
        #[serde(default)]
        x: Str<'a>,
    }

    fn parse(s: &str) -> T<'_> {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn strings_borrow_and_tolerate_other_types() {
        let input = r#"{"s":"abc"}"#;
        let t = parse(input);
        assert!(matches!(t.s.0, Some(Cow::Borrowed("abc"))));
        assert_eq!(parse(r#"{"s":"a\"b"}"#).s.get(), Some("a\"b"));
        assert_eq!(parse(r#"{"s":1234}"#).s.get(), Some("1234"));
        assert_eq!(parse(r#"{"s":true}"#).s.get(), Some("true"));
        assert_eq!(parse(r#"{"s":null}"#).s.get(), None);
        assert_eq!(parse(r#"{"s":""}"#).s.get(), None);
        assert_eq!(parse(r#"{"s":{"a":1}}"#).s.get(), None);
        assert_eq!(parse(r#"{"s":[1,2]}"#).s.get(), None);
        let pii = parse(r#"{"s":"{PII Removed}"}"#);
        assert_eq!(pii.s.get(), None);
        assert!(pii.s.is_redacted());
        assert_eq!(parse("{}").s.get(), None);
    }

    #[test]
    fn numbers_and_flags() {
        assert_eq!(parse(r#"{"n":"0"}"#).n.i64(), Some(0));
        assert_eq!(parse(r#"{"n":1640908}"#).n.i64(), Some(1_640_908));
        assert_eq!(parse(r#"{"n":""}"#).n, Num::None);
        assert_eq!(parse(r#"{"n":52.5}"#).n.f64(), Some(52.5));
        assert_eq!(parse(r#"{"f":"True"}"#).f, Flag(Some(true)));
        assert_eq!(parse(r#"{"f":false}"#).f, Flag(Some(false)));
        assert_eq!(parse(r#"{"f":"maybe"}"#).f, Flag(None));
    }

    #[test]
    fn lists_and_nested_objects() {
        let t = parse(r#"{"l":["a",1,null],"o":{"x":"y"}}"#);
        assert_eq!(t.l.0.len(), 3);
        assert_eq!(t.l.0[1].get(), Some("1"));
        assert_eq!(t.o.as_ref().unwrap().x.get(), Some("y"));
        let t = parse(r#"{"l":null,"o":"{PII Removed}"}"#);
        assert!(t.l.0.is_empty());
        assert!(t.o.0.is_none());
    }

    #[test]
    fn embedded_json() {
        let t = parse(r#"{"r":"[{\"Key\":\"userAgent\",\"Value\":\"BAV2ROPC\"}]"}"#);
        let v = decode_embedded(t.r).unwrap();
        assert_eq!(key_value_object(v), serde_json::json!({"userAgent": "BAV2ROPC"}));
        let t = parse(r#"{"r":"\"Global Administrator\""}"#);
        assert_eq!(decode_embedded(t.r), Some(serde_json::json!("Global Administrator")));
        let t = parse(r#"{"r":"not json {"}"#);
        assert_eq!(decode_embedded(t.r), Some(serde_json::json!("not json {")));
        let t = parse(r#"{"r":"[broken"}"#);
        assert_eq!(decode_embedded(t.r), Some(serde_json::json!("[broken")));
        let t = parse(r#"{"r":{"a":1}}"#);
        assert_eq!(decode_embedded(t.r), Some(serde_json::json!({"a": 1})));
        assert_eq!(decode_embedded(parse(r#"{"r":null}"#).r), None);
        assert_eq!(decode_embedded(parse(r#"{"r":""}"#).r), None);
        assert_eq!(decode_embedded(parse(r#"{"r":"[]"}"#).r), None);
        assert_eq!(decode_embedded(parse(r#"{"r":{}}"#).r), None);
    }

    #[test]
    fn nested_key_value_values_are_decoded() {
        let v = serde_json::json!([
            {"Key": "relatedLocation", "Value": "{\"clientIP\":\"198.51.100.23\"}"},
            {"key": "User-Agent", "value": "python-requests/2.32.3"}
        ]);
        assert_eq!(
            key_value_object(v),
            serde_json::json!({
                "relatedLocation": {"clientIP": "198.51.100.23"},
                "User-Agent": "python-requests/2.32.3"
            })
        );
        let odd = serde_json::json!([1, 2]);
        assert_eq!(key_value_object(odd.clone()), odd);
    }
}
