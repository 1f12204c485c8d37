//! ArcSight CEF:0 encoder: one line per message, incidents optionally split into parts.
//!
//! Header: `CEF:0|<vendor>|<product>|<version>|<signature>|<name>|<severity>|`, where
//! product comes from `metadata.product.name` without `Microsoft ` (`Defender XDR`,
//! `Entra ID`, `Entra ID Protection`, or the alert's product such as
//! `Defender for Endpoint`), version from `metadata.product.version`, the signature is a
//! stable event type (`incident`, `alert:<detectorId>`, `riskDetection:<riskEventType>`,
//! `riskState`, `hunting:<category>`, `generic:<category>`, else `<kind>:<type_uid>`;
//! split parts `incident:alert` and `incident:evidence`), the name the finding title (else
//! the OCSF type name), and the severity `Unknown`, 1, 3, 5, 8, 9 or 10 for OCSF
//! severity_id 0/99, 1 .. 6.
//!
//! Extension, in this order: `rt start end externalId cat act outcome suser suid duser duid
//! src|c6a2 dst|c6a3 shost dhost`, then `sourceServiceName destinationServiceName request
//! requestMethod requestClientApplication fname filePath fileHash reason` (events; the file
//! and, without an HTTP request, the URL of the first evidence with one) or `fname filePath
//! fileHash sproc request` (evidence parts), `msg`, custom strings `cs1`=url (portal link),
//! `cs2`=changeType, `cs3`=tenantId, `cs4`=findingUid, `cs5`=eventUid (metadata.uid),
//! `cs6`=alertIds (whole incident), part (`2/5`, split parts) or statusCode (any other event
//! with a result code), the source's coordinates `cfp1`=sourceLatitude and
//! `cfp2`=sourceLongitude (`slat` / `slong` are consumer keys, filled by ArcSight), then
//! `cn1`=ocsfClassUid and `cn2`=ocsfTypeUid last (numbers, so the last value never has
//! trailing spaces that receivers would strip). `externalId` only carries ids of at most 40
//! characters (incident ids); longer ids are only in `cs4`.
//!
//! Escaping: header `\` → `\\`, `|` → `\|`; extension `\` → `\\`, `=` → `\=`, LF → `\n`,
//! CR → `\r`; other control characters (C0, DEL, C1) and header line breaks become a space
//! (counted as `altered` in the report). Empty values are omitted; keys are unique.
//!
//! Truncation: values longer than the CEF maximum of their key are cut at a UTF-8 boundary
//! (`externalId`, and a result code or coordinate over 63 bytes, are left out instead); a
//! message over `max_message_bytes` has values shortened in this order: `msg`,
//! `reason` and the `cs6` alert list, file, request and user-agent fields and the
//! coordinates, names, categories, applications and methods, ids and IPs (ids, IPs, the
//! portal URL, codes and coordinates are dropped, never cut), finally the header name.
//! Every truncated message starts its extension with `cn3Label=truncated cn3=1`, so the
//! marker survives a receiver that cuts the tail.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use std::ops::Deref;

use super::fields::{file_hash_at, i64_at, int_bytes, ip, str_at, text_at, Ip, ProductNaming};
use super::record::{encode_event, evidence_type, Builder, Ctx, Extra, Record, Syntax, KEEP};
use super::{EncodeError, EncodeReport, Encoder, EncoderOptions, Format, SplitMode};
use crate::event::{Event, EventKind, EventMeta};
use crate::normalize::Flat;

/// CEF options (`[sinks.X.encoder.cef]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CefOptions {
    /// Device Vendor. Default `Microsoft`.
    pub vendor: String,
    /// Fixed Device Product. Default: from the event (`Defender XDR`, `Entra ID`, ...).
    pub product: Option<String>,
    /// Strip `Microsoft ` from product names. Default true.
    pub strip_vendor_prefix: bool,
    /// Name Defender for Identity data `Azure ATP`, like MDI's own CEF. Default false.
    pub mdi_as_azure_atp: bool,
    /// Device Version when the event has no `metadata.product.version`. Default `1.0`.
    pub device_version: String,
}

impl Default for CefOptions {
    fn default() -> Self {
        CefOptions {
            vendor: "Microsoft".into(),
            product: None,
            strip_vendor_prefix: true,
            mdi_as_azure_atp: false,
            device_version: "1.0".into(),
        }
    }
}

/// Maximum lengths (bytes) from the CEF implementation standard.
const VENDOR_MAX: usize = 63;
const PRODUCT_MAX: usize = 63;
const VERSION_MAX: usize = 31;
const SIGNATURE_MAX: usize = 1023;
const NAME_MAX: usize = 512;
const STR_MAX: usize = 1023;
const SHORT_MAX: usize = 63;
const EXTERNAL_ID_MAX: usize = 40;
const HASH_MAX: usize = 255;
const CS_MAX: usize = 4000;

const CS1: Option<(&str, &str)> = Some(("cs1Label", "url"));
const CS2: Option<(&str, &str)> = Some(("cs2Label", "changeType"));
const CS3: Option<(&str, &str)> = Some(("cs3Label", "tenantId"));
const CS4: Option<(&str, &str)> = Some(("cs4Label", "findingUid"));
const CS5: Option<(&str, &str)> = Some(("cs5Label", "eventUid"));
const CS6_ALERTS: Option<(&str, &str)> = Some(("cs6Label", "alertIds"));
const CS6_PART: Option<(&str, &str)> = Some(("cs6Label", "part"));
const CS6_STATUS: Option<(&str, &str)> = Some(("cs6Label", "statusCode"));
const CFP1: Option<(&str, &str)> = Some(("cfp1Label", "sourceLatitude"));
const CFP2: Option<(&str, &str)> = Some(("cfp2Label", "sourceLongitude"));
const CN1: Option<(&str, &str)> = Some(("cn1Label", "ocsfClassUid"));
const CN2: Option<(&str, &str)> = Some(("cn2Label", "ocsfTypeUid"));

/// The truncation marker, first in the extension of a truncated message.
pub const TRUNCATED_MARKER: &str = "cn3Label=truncated cn3=1";

pub struct CefEncoder {
    vendor: String,
    naming: ProductNaming,
    device_version: String,
    max: Option<usize>,
    split: SplitMode,
    syntax: Syntax,
}

impl CefEncoder {
    pub fn new(opts: &EncoderOptions) -> CefEncoder {
        let c = &opts.cef;
        CefEncoder {
            vendor: c.vendor.clone(),
            naming: ProductNaming {
                product: c.product.clone(),
                strip_vendor_prefix: c.strip_vendor_prefix,
                mdi_as_azure_atp: c.mdi_as_azure_atp,
            },
            device_version: c.device_version.clone(),
            max: opts.max_message_bytes,
            split: opts.split_incidents,
            syntax: Syntax {
                prefix: b"CEF:0|",
                header_tail: Vec::new(),
                sep: b' ',
                header_ctx: Ctx::CefHeader,
                value_ctx: Ctx::CefValue,
                truncated_marker: TRUNCATED_MARKER.as_bytes().to_vec(),
                altered_marker: None,
            },
        }
    }

    fn header<'a, S: Deref<Target = str>>(
        &'a self,
        f: &'a Flat<S>,
        meta: &EventMeta,
        sig: Cow<'a, str>,
        name: &'a str,
    ) -> Record<'a> {
        let mut truncated = false;
        let mut cap = |s: Cow<'a, str>, max: usize| -> Cow<'a, str> {
            if s.len() > max {
                truncated = true;
                let mut s = s;
                let n = super::fields::floor_boundary(&s, max).len();
                super::record::cut_cow(&mut s, n);
                s
            } else {
                s
            }
        };
        let header = vec![
            cap(Cow::Borrowed(&self.vendor), VENDOR_MAX),
            cap(Cow::Borrowed(self.naming.product(f, meta.kind)), PRODUCT_MAX),
            cap(
                Cow::Borrowed(f.product_version.as_deref().unwrap_or(&self.device_version)),
                VERSION_MAX,
            ),
            cap(sig, SIGNATURE_MAX),
            cap(Cow::Borrowed(name), NAME_MAX),
            Cow::Borrowed(severity(f.severity_id)),
        ];
        let mut rec = Record::new(header, Some(4));
        rec.truncated = truncated;
        rec
    }

    /// `cs2` change type and `cs3` tenant, shared by all messages of an event.
    fn common_tail<'a, S: Deref<Target = str>>(&self, rec: &mut Record<'a>, f: &'a Flat<S>, meta: &'a EventMeta) {
        rec.text_pair("cs2", CS2, f.change_type(meta).map(Cow::Borrowed), CS_MAX, 4, false);
        rec.text_pair("cs3", CS3, f.tenant(meta).map(Cow::Borrowed), CS_MAX, 6, true);
    }

    /// `cn1` class and `cn2` type uid, last in every message.
    fn numbers<S>(&self, rec: &mut Record<'_>, f: &Flat<S>) {
        rec.int("cn1", CN1, f.class_uid);
        rec.int("cn2", CN2, f.type_uid);
    }
}

/// CEF severity for an OCSF severity_id.
pub fn severity(id: u8) -> &'static str {
    match id {
        1 => "1",
        2 => "3",
        3 => "5",
        4 => "8",
        5 => "9",
        6 => "10",
        _ => "Unknown",
    }
}

fn kind_name(k: EventKind) -> &'static str {
    match k {
        EventKind::Incident => "incident",
        EventKind::Alert => "alert",
        EventKind::SignIn => "signIn",
        EventKind::Audit => "audit",
        EventKind::RiskDetection => "riskDetection",
        EventKind::RiskState => "riskState",
        EventKind::Hunting => "hunting",
        EventKind::GraphActivity => "graphActivity",
        EventKind::Generic => "generic",
    }
}

/// `base:detail` without going through `format!`.
fn joined(base: &str, detail: &[u8]) -> String {
    let mut s = String::with_capacity(base.len() + 1 + detail.len());
    s.push_str(base);
    if !detail.is_empty() {
        s.push(':');
        s.push_str(std::str::from_utf8(detail).unwrap_or_default());
    }
    s
}

/// Stable signature id of an event.
pub(crate) fn signature<'a, S: Deref<Target = str>>(f: &'a Flat<S>, meta: &'a EventMeta) -> Cow<'a, str> {
    let kind = meta.kind;
    let detector = f.detector.as_deref();
    let with = |detail: Option<&str>| Cow::Owned(joined(kind_name(kind), detail.unwrap_or("").as_bytes()));
    match (f.class_uid, kind) {
        (2005, _) => Cow::Borrowed("incident"),
        (_, EventKind::Alert | EventKind::RiskDetection) => with(detector),
        (_, EventKind::RiskState) => Cow::Borrowed("riskState"),
        (_, EventKind::Hunting | EventKind::Generic) => with(Some(&meta.category)),
        (2004, _) => Cow::Owned(joined("finding", detector.unwrap_or("").as_bytes())),
        _ => Cow::Owned(joined(kind_name(kind), int_bytes(f.type_uid, &mut [0; 20]))),
    }
}

const C6A2: (&str, &str) = ("c6a2Label", "Source IPv6 Address");
const C6A3: (&str, &str) = ("c6a3Label", "Destination IPv6 Address");

/// `src`/`dst` for IPv4, `c6a2`/`c6a3` with their labels for IPv6, nothing for non-IPs.
fn push_ip<'a>(rec: &mut Record<'a>, v4: &'static str, v6: &'static str, addr: Option<&'a str>) {
    match addr.and_then(ip) {
        Some(Ip::V4(a)) => rec.atom(v4, Some(a), 5),
        Some(Ip::V6(a)) => {
            let label = if v6 == "c6a2" { C6A2 } else { C6A3 };
            rec.text_pair(v6, Some(label), Some(Cow::Borrowed(a)), 64, 5, true)
        }
        None => {}
    }
}

fn external_id(uid: Option<&str>) -> Option<Cow<'_, str>> {
    uid.filter(|u| u.len() <= EXTERNAL_ID_MAX).map(Cow::Borrowed)
}

impl Builder for CefEncoder {
    fn syntax(&self) -> &Syntax {
        &self.syntax
    }

    fn limits(&self) -> (Option<usize>, SplitMode) {
        (self.max, self.split)
    }

    fn main<'a, S: Deref<Target = str>>(&'a self, f: &'a Flat<S>, meta: &'a EventMeta, extra: Extra) -> Record<'a> {
        let mut rec = self.header(f, meta, signature(f, meta), f.title(meta));
        rec.int("rt", None, f.time_ms);
        if let Some(t) = f.start_ms {
            rec.int("start", None, t);
        }
        if let Some(t) = f.end_ms {
            rec.int("end", None, t);
        }
        let uid = f.finding_uid(meta);
        rec.text_pair("externalId", None, external_id(uid), EXTERNAL_ID_MAX, 6, true);
        rec.text("cat", Some(f.category(meta)), STR_MAX, 3);
        rec.text("act", f.activity_name.as_deref(), SHORT_MAX, 3);
        rec.text("outcome", f.status.as_deref(), SHORT_MAX, 3);
        rec.text("suser", f.src_user.name.as_deref(), STR_MAX, 4);
        rec.atom("suid", f.src_user.uid.as_deref(), 5);
        rec.text("duser", f.dst_user.name.as_deref(), STR_MAX, 4);
        rec.atom("duid", f.dst_user.uid.as_deref(), 5);
        push_ip(&mut rec, "src", "c6a2", f.src_ip.as_deref());
        push_ip(&mut rec, "dst", "c6a3", f.dst_ip.as_deref());
        rec.text("shost", f.src_host.as_deref(), STR_MAX, 4);
        rec.text("dhost", f.dst_host.as_deref(), STR_MAX, 4);
        rec.text("sourceServiceName", f.app_name.as_deref(), STR_MAX, 3);
        rec.text("destinationServiceName", f.service_name.as_deref(), STR_MAX, 3);
        rec.text("request", f.request_url.as_deref().or(f.url.as_deref()), STR_MAX, 2);
        rec.text("requestMethod", f.request_method.as_deref(), SHORT_MAX, 3);
        rec.text("requestClientApplication", f.user_agent.as_deref(), STR_MAX, 2);
        rec.text("fname", f.file_name.as_deref(), STR_MAX, 2);
        rec.text("filePath", f.file_path.as_deref(), STR_MAX, 2);
        let hash = f.file_hash.as_deref().map(Cow::Borrowed);
        rec.text_pair("fileHash", None, hash, HASH_MAX, 5, true);
        rec.text("reason", f.status_detail.as_deref(), STR_MAX, 1);
        rec.text("msg", f.message.as_deref(), STR_MAX, 0);
        rec.text_pair("cs1", CS1, f.portal_url.as_deref().map(Cow::Borrowed), CS_MAX, 2, true);
        self.common_tail(&mut rec, f, meta);
        rec.text_pair("cs4", CS4, uid.map(Cow::Borrowed), CS_MAX, 6, true);
        rec.text_pair("cs5", CS5, f.event_uid.as_deref().map(Cow::Borrowed), CS_MAX, 6, true);
        match extra {
            Extra::Whole(Some(ids)) => rec.text_pair("cs6", CS6_ALERTS, Some(Cow::Owned(ids)), CS_MAX, 1, false),
            // Only incidents list alerts: other events carry their result code there.
            Extra::Whole(None) => {
                let code = f.status_code.as_deref().map(Cow::Borrowed);
                rec.text_pair("cs6", CS6_STATUS, code, SHORT_MAX, 5, true)
            }
            Extra::Part(p) => rec.text_pair("cs6", CS6_PART, Some(Cow::Owned(p)), CS_MAX, KEEP, true),
        }
        // `slat` / `slong` are consumer keys (ArcSight fills them from its own geolocation):
        // the location the source gave goes to custom floating-point fields.
        if let (Some(lat), Some(long)) = (f.lat.as_deref(), f.long.as_deref()) {
            rec.text_pair("cfp1", CFP1, Some(Cow::Borrowed(lat)), SHORT_MAX, 2, true);
            rec.text_pair("cfp2", CFP2, Some(Cow::Borrowed(long)), SHORT_MAX, 2, true);
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
        let title = str_at(a, "title").unwrap_or("Incident alert");
        let mut rec = self.header(f, meta, Cow::Borrowed("incident:alert"), title);
        rec.int("rt", None, f.time_ms);
        if let Some(t) = i64_at(a, "created_time").or_else(|| i64_at(a, "first_seen_time")) {
            rec.int("start", None, t);
        }
        if let Some(t) = i64_at(a, "modified_time").or_else(|| i64_at(a, "last_seen_time")) {
            rec.int("end", None, t);
        }
        rec.text_pair(
            "externalId",
            None,
            external_id(f.finding_uid(meta)),
            EXTERNAL_ID_MAX,
            6,
            true,
        );
        let cat = str_at(a, "analytic.uid").or_else(|| str_at(a, "types.0"));
        rec.text("cat", cat, STR_MAX, 3);
        rec.text("msg", str_at(a, "desc"), STR_MAX, 0);
        rec.text_pair("cs1", CS1, str_at(a, "src_url").map(Cow::Borrowed), CS_MAX, 2, true);
        self.common_tail(&mut rec, f, meta);
        rec.text_pair("cs4", CS4, text_at(a, "uid"), CS_MAX, 6, true);
        rec.text_pair("cs5", CS5, f.event_uid.as_deref().map(Cow::Borrowed), CS_MAX, 6, true);
        rec.text_pair("cs6", CS6_PART, Some(Cow::Owned(part)), CS_MAX, KEEP, true);
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
        let mut rec = self.header(f, meta, Cow::Borrowed("incident:evidence"), "Incident evidence");
        rec.int("rt", None, f.time_ms);
        rec.text_pair(
            "externalId",
            None,
            external_id(f.finding_uid(meta)),
            EXTERNAL_ID_MAX,
            6,
            true,
        );
        rec.text("cat", Some(evidence_type(e)), STR_MAX, 3);
        rec.text("suser", str_at(e, "user.name"), STR_MAX, 4);
        rec.atom("suid", str_at(e, "user.uid"), 5);
        let src = str_at(e, "src_endpoint.ip").or_else(|| str_at(e, "device.ip"));
        push_ip(&mut rec, "src", "c6a2", src);
        push_ip(&mut rec, "dst", "c6a3", str_at(e, "dst_endpoint.ip"));
        rec.text("shost", str_at(e, "device.hostname"), STR_MAX, 4);
        rec.text("dhost", str_at(e, "dst_endpoint.hostname"), STR_MAX, 4);
        let fname = str_at(e, "file.name").or_else(|| str_at(e, "process.file.name"));
        rec.text("fname", fname, STR_MAX, 2);
        let path = str_at(e, "file.path").or_else(|| str_at(e, "process.file.path"));
        rec.text("filePath", path, STR_MAX, 2);
        let hash = file_hash_at(e, "file").or_else(|| file_hash_at(e, "process.file"));
        rec.text_pair("fileHash", None, hash.map(Cow::Borrowed), HASH_MAX, 5, true);
        rec.text("sproc", str_at(e, "process.name"), STR_MAX, 2);
        rec.text("request", str_at(e, "url.url_string"), STR_MAX, 2);
        rec.text("msg", str_at(e, "process.cmd_line"), STR_MAX, 0);
        self.common_tail(&mut rec, f, meta);
        rec.text_pair("cs4", CS4, f.finding_uid(meta).map(Cow::Borrowed), CS_MAX, 6, true);
        rec.text_pair("cs5", CS5, f.event_uid.as_deref().map(Cow::Borrowed), CS_MAX, 6, true);
        rec.text_pair("cs6", CS6_PART, Some(Cow::Owned(part)), CS_MAX, KEEP, true);
        self.numbers(&mut rec, f);
        rec
    }
}

impl Encoder for CefEncoder {
    fn encode_reserving(&self, event: &Event, out: &mut Vec<u8>, reserve: usize) -> Result<EncodeReport, EncodeError> {
        encode_event(self, event, out, reserve)
    }

    fn format(&self) -> Format {
        Format::Cef
    }

    fn reads_lean(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[path = "cef_tests.rs"]
mod tests;
