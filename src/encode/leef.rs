//! QRadar LEEF 1.0 / 2.0 encoder: one line per message, incidents optionally split.
//!
//! Header: `LEEF:1.0|<vendor>|<product>|<version>|<EventID>|` (attributes tab-separated) or
//! `LEEF:2.0|<vendor>|<product>|<version>|<EventID>|<delim>|` (attributes separated by the
//! delimiter, declared literally when printable, else as `xHH`, e.g. `x09` for tab). Vendor
//! and product as for CEF. EventIDs are few and stable: `IncidentCreated`,
//! `IncidentUpdated`, `IncidentClosed`, `AlertCreated`, `AlertUpdated`, `AlertClosed`,
//! `RiskDetection`, `RiskState`, `Finding`, `SignIn`, `AuditChange`, `GraphActivity`,
//! `HuntingEvent`, `Generic`; split parts `IncidentAlert`, `IncidentEvidence`. The
//! Microsoft-specific type (detector id, risk event type, category) goes to `cat`.
//!
//! Attributes of an event, in this order: `devTime` (epoch ms, or formatted with
//! `devTimeFormat`), `sev` (1, 3, 5, 8, 9, 10 for OCSF severity 1..6; omitted when unknown),
//! `cat`, `src`, `dst`, `usrName`, `identSrc` + `identHostName` (authentication events
//! only), then `srcHostName dstHostName userId targetUser targetUserId title msg action
//! outcome statusCode reason resource application requestUrl requestMethod userAgent
//! fileName filePath fileHash srcCountry srcCity srcLat srcLong url findingId tenantId changeType eventUid alertIds|part
//! ocsfClass ocsfType` (custom keys but `resource`). Split parts: an alert `cat title msg url
//! findingId incidentId`, an evidence `cat src dst usrName srcHostName dstHostName userId msg
//! fileName filePath fileHash process requestUrl incidentId`, then `tenantId changeType
//! eventUid part ocsfClass ocsfType`.
//!
//! LEEF has no escapes: the delimiter, line breaks and control characters in values, and
//! pipes, line breaks and control characters in header fields, are replaced by a space;
//! such a message starts its attributes with `altered=true` and counts as `altered`.
//! Truncation is as for CEF (values longer than 1023 bytes, `usrName` 255, are cut, methods
//! and country codes at 63; result codes and coordinates over 63 bytes are left out; over
//! `max_message_bytes` values are shortened `msg` first) with `truncated=true` as the first
//! attribute.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use std::ops::Deref;

use super::fields::{file_hash_at, floor_boundary, ip, push_padded, str_at, text_at, ProductNaming, Utc};
use super::record::{encode_event, evidence_type, Builder, Ctx, Extra, Record, Syntax, KEEP};
use super::{EncodeError, EncodeReport, Encoder, EncoderOptions, Format, SplitMode};
use crate::event::{Event, EventKind, EventMeta};
use crate::normalize::Flat;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum LeefVersion {
    #[serde(rename = "1.0")]
    V1,
    #[default]
    #[serde(rename = "2.0")]
    V2,
}

/// LEEF 2.0 attribute delimiter: one ASCII character that is not alphanumeric, space, `=`
/// or `|`. Configured as the character itself (`"^"`), `"tab"`, or hex `"x09"`/`"0x5E"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeefDelimiter(pub u8);

impl Default for LeefDelimiter {
    fn default() -> Self {
        LeefDelimiter(b'^')
    }
}

impl LeefDelimiter {
    pub fn parse(s: &str) -> Result<LeefDelimiter, String> {
        let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix('x'));
        let b = match (s, hex) {
            ("tab", _) => b'\t',
            (_, Some(h)) if (1..=4).contains(&h.len()) => {
                u8::from_str_radix(h, 16).map_err(|_| format!("bad hex delimiter {s:?}"))?
            }
            _ if s.len() == 1 => s.as_bytes()[0],
            _ => return Err(format!("delimiter {s:?} must be one character, `tab` or xHH")),
        };
        if !b.is_ascii() || b.is_ascii_alphanumeric() || matches!(b, b' ' | b'=' | b'|' | b'\n' | b'\r') {
            return Err(format!("delimiter {s:?} is not usable"));
        }
        Ok(LeefDelimiter(b))
    }

    /// The header declaration: the character when printable, else `xHH`.
    pub fn declaration(&self) -> Vec<u8> {
        if self.0.is_ascii_graphic() {
            vec![self.0]
        } else {
            format!("x{:02X}", self.0).into_bytes()
        }
    }
}

impl<'de> Deserialize<'de> for LeefDelimiter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LeefDelimiter::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for LeefDelimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.declaration()))
    }
}

/// How `devTime` is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DevTime {
    /// 13-digit epoch milliseconds (no `devTimeFormat` needed).
    #[default]
    Epoch,
    /// `MMM dd yyyy HH:mm:ss.SSS z` in UTC, with `devTimeFormat`.
    Formatted,
}

/// Java SimpleDateFormat of [`DevTime::Formatted`].
pub const DEV_TIME_FORMAT: &str = "MMM dd yyyy HH:mm:ss.SSS z";

/// LEEF options (`[sinks.X.encoder.leef]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeefOptions {
    /// `"1.0"` (tab-separated) or `"2.0"` (default, with delimiter declaration).
    pub version: LeefVersion,
    /// LEEF 2.0 delimiter. Default `^`.
    pub delimiter: LeefDelimiter,
    /// Default `Microsoft`.
    pub vendor: String,
    /// Fixed product. Default: from the event (`Defender XDR`, `Entra ID`, ...).
    pub product: Option<String>,
    /// Strip `Microsoft ` from product names. Default true.
    pub strip_vendor_prefix: bool,
    /// Version when the event has no `metadata.product.version`. Default `1.0`.
    pub device_version: String,
    /// `epoch` (default) or `formatted`.
    pub dev_time: DevTime,
}

impl Default for LeefOptions {
    fn default() -> Self {
        LeefOptions {
            version: LeefVersion::V2,
            delimiter: LeefDelimiter::default(),
            vendor: "Microsoft".into(),
            product: None,
            strip_vendor_prefix: true,
            device_version: "1.0".into(),
            dev_time: DevTime::Epoch,
        }
    }
}

const STR_MAX: usize = 1023;
/// Codes, methods, country codes and coordinates: anything longer is not one.
const SHORT_MAX: usize = 63;
const USER_MAX: usize = 255;
const EVENT_ID_MAX: usize = 255;
const HEADER_MAX: usize = 255;

pub struct LeefEncoder {
    vendor: String,
    naming: ProductNaming,
    device_version: String,
    dev_time: DevTime,
    max: Option<usize>,
    split: SplitMode,
    syntax: Syntax,
}

impl LeefEncoder {
    pub fn new(opts: &EncoderOptions) -> LeefEncoder {
        let l = &opts.leef;
        let (prefix, delim, tail): (&'static [u8], u8, Vec<u8>) = match l.version {
            LeefVersion::V1 => (b"LEEF:1.0|", b'\t', Vec::new()),
            LeefVersion::V2 => {
                let mut t = l.delimiter.declaration();
                t.push(b'|');
                (b"LEEF:2.0|", l.delimiter.0, t)
            }
        };
        LeefEncoder {
            vendor: l.vendor.clone(),
            naming: ProductNaming {
                product: l.product.clone(),
                strip_vendor_prefix: l.strip_vendor_prefix,
                mdi_as_azure_atp: false,
            },
            device_version: l.device_version.clone(),
            dev_time: l.dev_time,
            max: opts.max_message_bytes,
            split: opts.split_incidents,
            syntax: Syntax {
                prefix,
                header_tail: tail,
                sep: delim,
                header_ctx: Ctx::LeefHeader,
                value_ctx: Ctx::LeefValue(delim),
                truncated_marker: b"truncated=true".to_vec(),
                altered_marker: Some(b"altered=true".to_vec()),
            },
        }
    }

    fn start<'a, S: Deref<Target = str>>(&'a self, f: &'a Flat<S>, meta: &EventMeta, event_id: &'a str) -> Record<'a> {
        let mut truncated = false;
        let mut cap = |s: &'a str, max: usize| -> Cow<'a, str> {
            let c = floor_boundary(s, max);
            truncated |= c.len() < s.len();
            Cow::Borrowed(c)
        };
        let header = vec![
            cap(&self.vendor, HEADER_MAX),
            cap(self.naming.product(f, meta.kind), HEADER_MAX),
            cap(f.product_version.as_deref().unwrap_or(&self.device_version), HEADER_MAX),
            cap(event_id, EVENT_ID_MAX),
        ];
        let mut rec = Record::new(header, None);
        rec.truncated = truncated;
        let t = f.time_ms;
        match self.dev_time {
            DevTime::Epoch => rec.int("devTime", None, t),
            DevTime::Formatted => {
                rec.text_pair(
                    "devTime",
                    None,
                    Some(Cow::Owned(format_time(t))),
                    usize::MAX,
                    KEEP,
                    true,
                );
                rec.text_pair(
                    "devTimeFormat",
                    None,
                    Some(Cow::Borrowed(DEV_TIME_FORMAT)),
                    usize::MAX,
                    KEEP,
                    true,
                );
            }
        }
        if let Some(s) = sev(f.severity_id) {
            rec.int("sev", None, s);
        }
        rec
    }

    fn tail<'a, S: Deref<Target = str>>(&self, rec: &mut Record<'a>, f: &'a Flat<S>, meta: &'a EventMeta) {
        rec.atom("tenantId", f.tenant(meta), 6);
        rec.text("changeType", f.change_type(meta), STR_MAX, 4);
        rec.atom("eventUid", f.event_uid.as_deref(), 6);
    }

    fn numbers<S>(&self, rec: &mut Record<'_>, f: &Flat<S>) {
        rec.int("ocsfClass", None, f.class_uid);
        rec.int("ocsfType", None, f.type_uid);
    }
}

/// QRadar `sev` (1-10) for an OCSF severity_id; `None` when unknown.
pub fn sev(id: u8) -> Option<i64> {
    Some(match id {
        1 => 1,
        2 => 3,
        3 => 5,
        4 => 8,
        5 => 9,
        6 => 10,
        _ => return None,
    })
}

/// `MMM dd yyyy HH:mm:ss.SSS z` in UTC.
pub fn format_time(ms: i64) -> String {
    let u = Utc::from_ms(ms);
    let mut b = Vec::with_capacity(28);
    b.extend_from_slice(u.month_abbr());
    b.push(b' ');
    push_padded(&mut b, u.day, 2);
    b.push(b' ');
    push_padded(&mut b, u.year.clamp(0, 9999) as u32, 4);
    b.push(b' ');
    push_padded(&mut b, u.hour, 2);
    b.push(b':');
    push_padded(&mut b, u.minute, 2);
    b.push(b':');
    push_padded(&mut b, u.second, 2);
    b.push(b'.');
    push_padded(&mut b, u.milli, 3);
    b.extend_from_slice(b" UTC");
    String::from_utf8(b).unwrap_or_default()
}

/// The stable EventID of an event.
pub(crate) fn event_id<S>(f: &Flat<S>, meta: &EventMeta) -> &'static str {
    let by_activity = |c: &'static str, u: &'static str, x: &'static str, other: &'static str| match f.activity_id {
        1 => c,
        2 => u,
        3 => x,
        _ => other,
    };
    match (f.class_uid, meta.kind) {
        (2005, _) => by_activity("IncidentCreated", "IncidentUpdated", "IncidentClosed", "Incident"),
        (_, EventKind::Alert) => by_activity("AlertCreated", "AlertUpdated", "AlertClosed", "Alert"),
        (_, EventKind::RiskDetection) => "RiskDetection",
        (_, EventKind::RiskState) => "RiskState",
        (2004, _) => "Finding",
        (3002, _) => "SignIn",
        (3001 | 3004, _) => "AuditChange",
        (6003, _) => "GraphActivity",
        (_, EventKind::Hunting) => "HuntingEvent",
        _ => "Generic",
    }
}

fn ip_of(s: Option<&str>) -> Option<&str> {
    s.filter(|a| ip(a).is_some())
}

impl Builder for LeefEncoder {
    fn syntax(&self) -> &Syntax {
        &self.syntax
    }

    fn limits(&self) -> (Option<usize>, SplitMode) {
        (self.max, self.split)
    }

    fn main<'a, S: Deref<Target = str>>(&'a self, f: &'a Flat<S>, meta: &'a EventMeta, extra: Extra) -> Record<'a> {
        let mut rec = self.start(f, meta, event_id(f, meta));
        rec.text("cat", Some(f.category(meta)), STR_MAX, 3);
        let src = ip_of(f.src_ip.as_deref());
        rec.atom("src", src, 5);
        rec.atom("dst", ip_of(f.dst_ip.as_deref()), 5);
        rec.text("usrName", f.src_user.name.as_deref(), USER_MAX, 4);
        if f.class_uid == 3002 {
            if let Some(s) = src {
                rec.atom("identSrc", Some(s), 5);
                rec.text("identHostName", f.src_host.as_deref(), STR_MAX, 4);
            }
        }
        rec.text("srcHostName", f.src_host.as_deref(), STR_MAX, 4);
        rec.text("dstHostName", f.dst_host.as_deref(), STR_MAX, 4);
        rec.atom("userId", f.src_user.uid.as_deref(), 5);
        rec.text("targetUser", f.dst_user.name.as_deref(), STR_MAX, 4);
        rec.atom("targetUserId", f.dst_user.uid.as_deref(), 5);
        rec.text("title", Some(f.title(meta)), STR_MAX, 1);
        rec.text("msg", f.message.as_deref(), STR_MAX, 0);
        rec.text("action", f.activity_name.as_deref(), STR_MAX, 3);
        rec.text("outcome", f.status.as_deref(), STR_MAX, 3);
        let code = f.status_code.as_deref().map(Cow::Borrowed);
        rec.text_pair("statusCode", None, code, SHORT_MAX, 5, true);
        rec.text("reason", f.status_detail.as_deref(), STR_MAX, 1);
        rec.text("resource", f.service_name.as_deref(), STR_MAX, 3);
        rec.text("application", f.app_name.as_deref(), STR_MAX, 3);
        rec.text("requestUrl", f.request_url.as_deref().or(f.url.as_deref()), STR_MAX, 2);
        rec.text("requestMethod", f.request_method.as_deref(), SHORT_MAX, 3);
        rec.text("userAgent", f.user_agent.as_deref(), STR_MAX, 2);
        rec.text("fileName", f.file_name.as_deref(), STR_MAX, 2);
        rec.text("filePath", f.file_path.as_deref(), STR_MAX, 2);
        rec.atom("fileHash", f.file_hash.as_deref(), 5);
        rec.text("srcCountry", f.country.as_deref(), SHORT_MAX, 3);
        rec.text("srcCity", f.city.as_deref(), STR_MAX, 3);
        if let (Some(lat), Some(long)) = (f.lat.as_deref(), f.long.as_deref()) {
            rec.text_pair("srcLat", None, Some(Cow::Borrowed(lat)), SHORT_MAX, 2, true);
            rec.text_pair("srcLong", None, Some(Cow::Borrowed(long)), SHORT_MAX, 2, true);
        }
        rec.atom("url", f.portal_url.as_deref(), 2);
        let uid = f.finding_uid(meta).map(Cow::Borrowed);
        rec.text_pair("findingId", None, uid, STR_MAX, 6, true);
        self.tail(&mut rec, f, meta);
        match extra {
            Extra::Whole(ids) => rec.text_pair("alertIds", None, ids.map(Cow::Owned), STR_MAX * 4, 1, false),
            Extra::Part(p) => rec.text_pair("part", None, Some(Cow::Owned(p)), STR_MAX, KEEP, true),
        }
        self.numbers(&mut rec, f);
        rec
    }

    fn alert<'a, S: Deref<Target = str>>(
        &'a self,
        f: &'a Flat<S>,
        meta: &'a EventMeta,
        a: &'a Value,
        part: String,
    ) -> Record<'a> {
        let mut rec = self.start(f, meta, "IncidentAlert");
        let cat = str_at(a, "analytic.uid").or_else(|| str_at(a, "types.0"));
        rec.text("cat", cat, STR_MAX, 3);
        rec.text("title", str_at(a, "title"), STR_MAX, 1);
        rec.text("msg", str_at(a, "desc"), STR_MAX, 0);
        rec.atom("url", str_at(a, "src_url"), 2);
        rec.text_pair("findingId", None, text_at(a, "uid"), STR_MAX, 6, true);
        let incident = f.finding_uid(meta).map(Cow::Borrowed);
        rec.text_pair("incidentId", None, incident, STR_MAX, 6, true);
        self.tail(&mut rec, f, meta);
        rec.text_pair("part", None, Some(Cow::Owned(part)), STR_MAX, KEEP, true);
        self.numbers(&mut rec, f);
        rec
    }

    fn evidence<'a, S: Deref<Target = str>>(
        &'a self,
        f: &'a Flat<S>,
        meta: &'a EventMeta,
        e: &'a Value,
        part: String,
    ) -> Record<'a> {
        let mut rec = self.start(f, meta, "IncidentEvidence");
        rec.text("cat", Some(evidence_type(e)), STR_MAX, 3);
        rec.atom(
            "src",
            ip_of(str_at(e, "src_endpoint.ip").or_else(|| str_at(e, "device.ip"))),
            5,
        );
        rec.atom("dst", ip_of(str_at(e, "dst_endpoint.ip")), 5);
        rec.text("usrName", str_at(e, "user.name"), USER_MAX, 4);
        rec.text("srcHostName", str_at(e, "device.hostname"), STR_MAX, 4);
        rec.text("dstHostName", str_at(e, "dst_endpoint.hostname"), STR_MAX, 4);
        rec.atom("userId", str_at(e, "user.uid"), 5);
        rec.text("msg", str_at(e, "process.cmd_line"), STR_MAX, 0);
        let file = |k: &str| str_at(e, &format!("file.{k}")).or_else(|| str_at(e, &format!("process.file.{k}")));
        rec.text("fileName", file("name"), STR_MAX, 2);
        rec.text("filePath", file("path"), STR_MAX, 2);
        rec.atom(
            "fileHash",
            file_hash_at(e, "file").or_else(|| file_hash_at(e, "process.file")),
            5,
        );
        rec.text("process", str_at(e, "process.name"), STR_MAX, 2);
        rec.text("requestUrl", str_at(e, "url.url_string"), STR_MAX, 2);
        let incident = f.finding_uid(meta).map(Cow::Borrowed);
        rec.text_pair("incidentId", None, incident, STR_MAX, 6, true);
        self.tail(&mut rec, f, meta);
        rec.text_pair("part", None, Some(Cow::Owned(part)), STR_MAX, KEEP, true);
        self.numbers(&mut rec, f);
        rec
    }
}

impl Encoder for LeefEncoder {
    fn encode_reserving(&self, event: &Event, out: &mut Vec<u8>, reserve: usize) -> Result<EncodeReport, EncodeError> {
        encode_event(self, event, out, reserve)
    }

    fn format(&self) -> Format {
        Format::Leef
    }

    fn reads_lean(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[path = "leef_tests.rs"]
mod tests;
