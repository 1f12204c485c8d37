//! Read-only access to the OCSF attributes of a normalized event, shared by the encoders.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Deref;

use serde_json::Value;

use crate::event::{EventKind, EventMeta};
use crate::json_text::trim;
use crate::normalize::{Flat, FlatUser, Node, Obj};

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
    fn as_text(self) -> Option<Cow<'a, str>> {
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

    fn is_object(self) -> bool {
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

    /// The finding uid (incident or alert id) as text.
    fn finding_uid(&self) -> Option<Cow<'a, str>> {
        self.node("finding_info.uid").and_then(Field::as_text)
    }

    /// The Microsoft-specific type: detector id, risk event type, alert category, audit
    /// activity or log name (the input category is the encoders' fallback).
    fn ms_category(&self) -> Option<&'a str> {
        let audit = matches!(self.class_uid(), 3001 | 3004);
        self.str("finding_info.analytic.uid")
            .or_else(|| self.str("finding_info.types.0"))
            .or_else(|| audit.then(|| self.str("message")).flatten())
            .or_else(|| self.str("metadata.log_name"))
    }

    /// Human title without variable data where possible (the kind is the encoders' fallback).
    fn title(&self) -> Option<&'a str> {
        self.str("finding_info.title")
            .or_else(|| (self.class_uid() == 2005).then(|| self.str("message"))?)
            .or_else(|| self.first(&["type_name", "class_name"]))
    }

    /// The acting user (`actor.user`, else `user`) and, when both exist, the target `user`.
    fn users(&self) -> (UserRef<'a>, UserRef<'a>) {
        let actor = UserRef::of(self.node("actor.user"));
        let user = UserRef::of(self.node("user"));
        if actor.is_some() {
            (actor, user)
        } else {
            (user, UserRef::default())
        }
    }

    /// The source IP: `src_endpoint.ip`, else that of the first evidence with one (a risk
    /// detection's; an alert lists its user evidence first and the IP evidence after).
    fn src_ip(&self) -> Option<&'a str> {
        self.str("src_endpoint.ip").or_else(|| {
            self.src_evidence()
                .and_then(|e| self.str(&format!("{e}.src_endpoint.ip")))
        })
    }

    /// The destination IP: `dst_endpoint.ip`, else that of the first evidence with one (a
    /// Defender evidence row's remote address, a Graph IP evidence in the destination role).
    fn dst_ip(&self) -> Option<&'a str> {
        self.str("dst_endpoint.ip").or_else(|| {
            self.evidence_with("dst_endpoint.ip")
                .and_then(|e| self.str(&format!("{e}.dst_endpoint.ip")))
        })
    }

    /// `evidences.N` of the first evidence with a source IP (of the first 32).
    fn src_evidence(&self) -> Option<String> {
        self.evidence_with("src_endpoint.ip")
    }

    /// `evidences.N` of the first evidence (of the first 32) with a string at `leaf`.
    fn evidence_with(&self, leaf: &str) -> Option<String> {
        self.node("evidences")?;
        (0..32)
            .map(|i| format!("evidences.{i}"))
            .take_while(|e| self.node(e).is_some())
            .find(|e| self.str(&format!("{e}.{leaf}")).is_some())
    }

    /// The client's geolocation: `src_endpoint.location`, else that of the evidence whose
    /// source IP is used when the event has no source IP of its own (risk detections,
    /// alerts), so that the location always belongs to the *source IP*.
    fn src_location(&self) -> Option<Field<'a>> {
        let own = || self.node("src_endpoint.location");
        let loc = if self.has_own_src_ip() {
            own()
        } else {
            let e = self.src_evidence().unwrap_or_else(|| "evidences.0".into());
            self.node(&format!("{e}.src_endpoint.location")).or_else(own)
        };
        loc.filter(|l| l.is_object())
    }

    /// The client's user agent: `http_request.user_agent`, else, without a source IP of its
    /// own, that of the same evidence as for [`View::src_location`].
    fn user_agent(&self) -> Option<&'a str> {
        self.str("http_request.user_agent").or_else(|| {
            if self.has_own_src_ip() {
                return None;
            }
            let e = self.src_evidence().unwrap_or_else(|| "evidences.0".into());
            self.str(&format!("{e}.http_request.user_agent"))
        })
    }

    /// Whether the event names a source IP of its own: the client details of its first
    /// evidence (risk detections) are used only when it does not.
    fn has_own_src_ip(&self) -> bool {
        self.str("src_endpoint.ip").is_some()
    }
}

/// What the attribute encoders write of a tree's event, read once.
pub(crate) fn flat_of<'a>(v: &View<'a>) -> Flat<Cow<'a, str>> {
    let s = |path: &str| v.str(path).map(Cow::Borrowed);
    let b = |x: Option<&'a str>| x.map(Cow::Borrowed);
    let user = |u: UserRef<'a>| FlatUser {
        name: b(u.name),
        uid: b(u.uid),
    };
    let (src_user, dst_user) = v.users();
    let loc = v.src_location();
    let ls = |k: &str| b(loc?.member(k)?.as_str().filter(|s| !s.is_empty()));
    let ln = |k: &str| loc?.member(k)?.as_text();
    let (lat, long) = match (ln("lat"), ln("long")) {
        (Some(lat), Some(long)) => (Some(lat), Some(long)),
        _ => (None, None),
    };
    Flat {
        class_uid: v.class_uid(),
        activity_id: v.activity_id(),
        type_uid: v.type_uid(),
        severity_id: v.severity_id(),
        time_ms: v.time_ms(),
        start_ms: v.int("finding_info.first_seen_time").or_else(|| v.int("start_time")),
        end_ms: v.int("finding_info.last_seen_time").or_else(|| v.int("end_time")),
        product: s("metadata.product.name"),
        product_version: s("metadata.product.version"),
        detector: b(v.first(&["finding_info.analytic.uid", "finding_info.types.0"])),
        title: b(v.title()),
        category: b(v.ms_category()),
        finding_uid: v.finding_uid(),
        activity_name: s("activity_name"),
        status: s("status"),
        message: s("message"),
        src_user: user(src_user),
        dst_user: user(dst_user),
        src_ip: b(v.src_ip()),
        dst_ip: b(v.dst_ip()),
        src_host: b(v.first(&["src_endpoint.hostname", "device.hostname"])),
        dst_host: s("dst_endpoint.hostname"),
        app_name: s("actor.app_name"),
        service_name: s("service.name"),
        request_url: s("http_request.url.url_string"),
        request_method: s("http_request.http_method"),
        user_agent: b(v.user_agent()),
        status_code: v.text("status_code"),
        status_detail: s("status_detail"),
        portal_url: b(v.first(&["finding_info.src_url", "src_url"])),
        country: ls("country"),
        city: ls("city"),
        lat,
        long,
        tenant: s("metadata.tenant_uid"),
        change_type: s("unmapped.change_type"),
        event_uid: s("metadata.uid"),
    }
}

/// Name and uid of an OCSF user object.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UserRef<'a> {
    pub name: Option<&'a str>,
    pub uid: Option<&'a str>,
}

impl<'a> UserRef<'a> {
    pub fn of(v: Option<Field<'a>>) -> UserRef<'a> {
        let s = |u: Field<'a>, k: &str| u.member(k)?.as_str().filter(|s| !s.is_empty());
        match v.filter(|u| u.is_object()) {
            Some(u) => UserRef {
                name: s(u, "name").or_else(|| s(u, "email_addr")),
                uid: s(u, "uid"),
            },
            None => UserRef::default(),
        }
    }

    pub fn is_some(&self) -> bool {
        self.name.is_some() || self.uid.is_some()
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
