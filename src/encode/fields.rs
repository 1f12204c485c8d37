//! Read-only access to the OCSF attributes of a normalized event, shared by the encoders.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Deref;

use serde_json::Value;

use crate::event::{EventKind, EventMeta};
use crate::json_text::trim;
use crate::normalize::{Flat, Node, Obj};

pub(crate) use super::flat_of::flat_of;
pub(crate) use super::numfmt::{floor_boundary, int_bytes, push_int, push_padded, Utc};

/// Splits `a.b.c` into `a` and `b.c` (byte search; paths are ASCII).
#[inline]
fn split_head(path: &str) -> (&str, Option<&str>) {
    match path.bytes().position(|b| b == b'.') {
        Some(i) => (&path[..i], Some(&path[i + 1..])),
        None => (path, None),
    }
}

/// The value at a dotted path (`metadata.product.name`, `finding_info.types.0`).
pub(crate) fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    let mut rest = path;
    loop {
        let (seg, next) = split_head(rest);
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
        match next {
            Some(n) => rest = n,
            None => return Some(cur),
        }
    }
}

/// A non-empty string at `path`.
pub(crate) fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    at(v, path)?.as_str().filter(|s| !s.is_empty())
}

/// The hash of the file at `file` (`file`, `process.file`) in an OCSF value: SHA-256
/// (`algorithm_id` 3), else SHA-1 (2), else the first listed.
pub(crate) fn file_hash_at<'a>(v: &'a Value, file: &str) -> Option<&'a str> {
    let list = at(v, &format!("{file}.hashes"))?.as_array()?;
    let value = |h: &'a Value| h.get("value")?.as_str().filter(|s| !s.is_empty());
    [3, 2]
        .iter()
        .find_map(|alg| {
            list.iter()
                .find(|h| h.get("algorithm_id").and_then(as_i64) == Some(*alg))
                .and_then(value)
        })
        .or_else(|| list.iter().find_map(value))
}

/// An integer at `path` (number, or a string holding one).
pub(crate) fn i64_at(v: &Value, path: &str) -> Option<i64> {
    as_i64(at(v, path)?)
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => trim(s).parse().ok(),
        _ => None,
    }
}

fn as_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) if !s.is_empty() => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// A string or number at `path` as text (ids are sometimes numbers).
pub(crate) fn text_at<'a>(v: &'a Value, path: &str) -> Option<Cow<'a, str>> {
    as_text(at(v, path)?)
}

/// A node of an OCSF event: a JSON value, or an object of the normalizer's tree (read in
/// place, no `Value` built).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Field<'a> {
    Str(&'a str),
    Val(&'a Value),
    Obj(&'a Obj),
    Arr(&'a [Node]),
    /// JSON text kept from the record (`Node::Json`): opaque to the encoders' paths.
    Json(&'a str),
}

impl<'a> From<&'a Node> for Field<'a> {
    fn from(n: &'a Node) -> Field<'a> {
        match n {
            Node::Str(s) => Field::Str(s),
            Node::Val(v) => Field::Val(v),
            Node::Obj(o) => Field::Obj(o),
            Node::Arr(a) => Field::Arr(a),
            Node::Json(j) => Field::Json(j),
        }
    }
}

impl<'a> From<&'a Value> for Field<'a> {
    fn from(v: &'a Value) -> Field<'a> {
        Field::Val(v)
    }
}

impl<'a> Field<'a> {
    /// A member (objects) or an element (arrays, by decimal index).
    pub fn member(self, seg: &str) -> Option<Field<'a>> {
        match self {
            Field::Obj(o) => o.get(seg).map(Field::from),
            Field::Val(Value::Object(m)) => m.get(seg).map(Field::Val),
            Field::Val(Value::Array(a)) => a.get(seg.parse::<usize>().ok()?).map(Field::Val),
            Field::Arr(a) => a.get(seg.parse::<usize>().ok()?).map(Field::from),
            Field::Val(_) | Field::Str(_) | Field::Json(_) => None,
        }
    }

    /// The node at a dotted path below this one.
    pub fn at(self, path: &str) -> Option<Field<'a>> {
        let mut cur = self;
        let mut rest = path;
        loop {
            let (seg, next) = split_head(rest);
            cur = cur.member(seg)?;
            match next {
                Some(n) => rest = n,
                None => return Some(cur),
            }
        }
    }

    /// The JSON value, when this node is one (not a tree object or string).
    pub fn value(self) -> Option<&'a Value> {
        match self {
            Field::Val(v) => Some(v),
            Field::Obj(_) | Field::Str(_) | Field::Arr(_) | Field::Json(_) => None,
        }
    }

    /// The string, when this node is one (empty strings included).
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            Field::Str(s) => Some(s),
            Field::Val(v) => v.as_str(),
            Field::Obj(_) | Field::Arr(_) | Field::Json(_) => None,
        }
    }

    /// An integer (number, or a string holding one).
    fn as_i64(self) -> Option<i64> {
        match self {
            Field::Str(s) => trim(s).parse().ok(),
            Field::Val(v) => as_i64(v),
            Field::Obj(_) | Field::Arr(_) | Field::Json(_) => None,
        }
    }

    /// A string or number as text.
    pub(super) fn as_text(self) -> Option<Cow<'a, str>> {
        match self {
            Field::Str(s) if !s.is_empty() => Some(Cow::Borrowed(s)),
            Field::Val(v) => as_text(v),
            _ => None,
        }
    }

    fn each(self, mut f: impl FnMut(&'a str, Field<'a>)) {
        match self {
            Field::Obj(o) => o.iter().for_each(|(k, n)| f(k, Field::from(n))),
            Field::Val(Value::Object(m)) => m.iter().for_each(|(k, v)| f(k, Field::Val(v))),
            Field::Val(_) | Field::Str(_) | Field::Arr(_) | Field::Json(_) => {}
        }
    }

    pub(super) fn is_object(self) -> bool {
        match self {
            Field::Json(j) => j.starts_with('{'),
            f => matches!(f, Field::Obj(_) | Field::Val(Value::Object(_))),
        }
    }
}

/// An IP address classified for formats that distinguish v4 and v6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ip<'a> {
    V4(&'a str),
    V6(&'a str),
}

pub(crate) fn ip(s: &str) -> Option<Ip<'_>> {
    if s.parse::<Ipv4Addr>().is_ok() {
        Some(Ip::V4(s))
    } else if s.parse::<Ipv6Addr>().is_ok() {
        Some(Ip::V6(s))
    } else {
        None
    }
}

/// Top-level OCSF attributes resolved in one pass over the object, so that the many
/// lookups of an encoder do not each search the top-level map.
#[derive(Clone, Copy, Default)]
struct Top<'a> {
    slots: [Option<Field<'a>>; TOP_KEYS.len()],
}

/// Top-level attributes the encoders read.
const TOP_KEYS: [&str; 21] = [
    "finding_info",
    "metadata",
    "actor",
    "user",
    "src_endpoint",
    "dst_endpoint",
    "device",
    "unmapped",
    "message",
    "status",
    "activity_name",
    "type_name",
    "src_url",
    "start_time",
    "end_time",
    "class_name",
    "evidences",
    "service",
    "http_request",
    "status_code",
    "status_detail",
];

fn top_slot(key: &str) -> Option<usize> {
    Some(match key {
        "finding_info" => 0,
        "metadata" => 1,
        "actor" => 2,
        "user" => 3,
        "src_endpoint" => 4,
        "dst_endpoint" => 5,
        "device" => 6,
        "unmapped" => 7,
        "message" => 8,
        "status" => 9,
        "activity_name" => 10,
        "type_name" => 11,
        "src_url" => 12,
        "start_time" => 13,
        "end_time" => 14,
        "class_name" => 15,
        "evidences" => 16,
        "service" => 17,
        "http_request" => 18,
        "status_code" => 19,
        "status_detail" => 20,
        _ => return None,
    })
}

/// An OCSF event together with its metadata, with the base attributes decoded once.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub ocsf: Field<'a>,
    pub meta: &'a EventMeta,
    top: Top<'a>,
    class_uid: i64,
    activity_id: i64,
    type_uid: i64,
    severity_id: u8,
    time_ms: i64,
}

impl<'a> View<'a> {
    pub fn new(ocsf: impl Into<Field<'a>>, meta: &'a EventMeta) -> View<'a> {
        let ocsf = ocsf.into();
        let mut top = Top::default();
        let (mut class_uid, mut activity_id, mut type_uid, mut severity, mut time) = (None, None, None, None, None);
        let int = |f: Field<'a>| f.as_i64();
        ocsf.each(|k, v| match k {
            "class_uid" => class_uid = int(v),
            "activity_id" => activity_id = int(v),
            "type_uid" => type_uid = int(v),
            "severity_id" => severity = int(v),
            "time" => time = int(v),
            k => {
                if let Some(i) = top_slot(k) {
                    top.slots[i] = Some(v);
                }
            }
        });
        let class_uid = class_uid.unwrap_or(0);
        let activity_id = activity_id.unwrap_or(0);
        View {
            ocsf,
            meta,
            top,
            class_uid,
            activity_id,
            type_uid: type_uid.unwrap_or(class_uid * 100 + activity_id),
            severity_id: match severity {
                Some(s @ (0..=6 | 99)) => s as u8,
                _ => meta.severity_id,
            },
            time_ms: time.or(meta.event_ms).unwrap_or(meta.received_ms),
        }
    }

    /// The node at a dotted path.
    pub fn node(&self, path: &str) -> Option<Field<'a>> {
        let (head, rest) = split_head(path);
        let v = match top_slot(head) {
            Some(i) => self.top.slots[i]?,
            None => self.ocsf.member(head)?,
        };
        match rest {
            Some(r) => v.at(r),
            None => Some(v),
        }
    }

    /// The JSON value at a dotted path (`None` for an object or a string of the normalizer's
    /// tree: use [`View::str`] for strings).
    pub fn get(&self, path: &str) -> Option<&'a Value> {
        self.node(path)?.value()
    }

    pub fn str(&self, path: &str) -> Option<&'a str> {
        self.node(path)?.as_str().filter(|s| !s.is_empty())
    }

    pub fn int(&self, path: &str) -> Option<i64> {
        self.node(path)?.as_i64()
    }

    /// A string or number at a dotted path as text.
    pub fn text(&self, path: &str) -> Option<Cow<'a, str>> {
        self.node(path)?.as_text()
    }

    pub fn first(&self, paths: &[&str]) -> Option<&'a str> {
        paths.iter().find_map(|p| self.str(p))
    }

    /// The array at `path` (empty when absent).
    pub fn array(&self, path: &str) -> &'a [Value] {
        match self.get(path) {
            Some(Value::Array(a)) => a,
            _ => &[],
        }
    }

    /// Event time in epoch ms: OCSF `time`, else the metadata event time, else receipt time.
    pub fn time_ms(&self) -> i64 {
        self.time_ms
    }

    /// OCSF `severity_id` when valid, else the metadata's.
    pub fn severity_id(&self) -> u8 {
        self.severity_id
    }

    pub fn class_uid(&self) -> i64 {
        self.class_uid
    }

    pub fn activity_id(&self) -> i64 {
        self.activity_id
    }

    pub fn type_uid(&self) -> i64 {
        self.type_uid
    }

    /// `metadata.tenant_uid`, else the source's tenant.
    pub fn tenant(&self) -> Option<&'a str> {
        self.str("metadata.tenant_uid")
            .or(self.meta.tenant.as_deref())
            .filter(|s| !s.is_empty())
    }
}

/// Product naming for CEF/LEEF headers.
#[derive(Clone, Debug)]
pub(crate) struct ProductNaming {
    pub product: Option<String>,
    pub strip_vendor_prefix: bool,
    pub mdi_as_azure_atp: bool,
}

impl ProductNaming {
    /// Product of the event: the configured override, else `metadata.product.name`, else a
    /// default by kind; `Microsoft ` is stripped from the front when configured.
    pub fn product<'a, S: Deref<Target = str>>(&'a self, f: &'a Flat<S>, kind: EventKind) -> &'a str {
        if let Some(p) = &self.product {
            return p;
        }
        let name = f.product_or_default(kind);
        let short = name.strip_prefix("Microsoft ").unwrap_or(name);
        if self.mdi_as_azure_atp && short == "Defender for Identity" {
            return "Azure ATP";
        }
        if self.strip_vendor_prefix && !short.is_empty() {
            short
        } else {
            name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let v = serde_json::json!({"a": {"b": [{"c": "x"}], "n": 5, "s": "7", "e": ""}});
        assert_eq!(str_at(&v, "a.b.0.c"), Some("x"));
        assert_eq!(str_at(&v, "a.b.1.c"), None);
        assert_eq!(i64_at(&v, "a.n"), Some(5));
        assert_eq!(i64_at(&v, "a.s"), Some(7));
        assert_eq!(str_at(&v, "a.e"), None);
        assert_eq!(text_at(&v, "a.n").as_deref(), Some("5"));
        assert_eq!(ip("10.0.0.1"), Some(Ip::V4("10.0.0.1")));
        assert_eq!(ip("2001:db8::1"), Some(Ip::V6("2001:db8::1")));
        assert_eq!(ip("nope"), None);
    }
}
