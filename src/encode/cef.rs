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
//! src|c6a2 dst|c6a3 shost dhost fname filePath fileHash sproc request msg`, custom strings
//! `cs1`=url (portal link), `cs2`=changeType, `cs3`=tenantId, `cs4`=findingUid,
//! `cs5`=eventUid (metadata.uid), `cs6`=alertIds (whole incident) or part (`2/5`, split
//! parts), then `cn1`=ocsfClassUid and `cn2`=ocsfTypeUid last (numbers, so the last value
//! never has trailing spaces that receivers would strip). `externalId` only carries ids of at
//! most 40 characters (incident ids); longer ids are only in `cs4`.
//!
//! Escaping: header `\` → `\\`, `|` → `\|`; extension `\` → `\\`, `=` → `\=`, LF → `\n`,
//! CR → `\r`; other control characters (C0, DEL, C1) and header line breaks become a space
//! (counted as `altered` in the report). Empty values are omitted; keys are unique.
//!
//! Truncation: values longer than the CEF maximum of their key are cut at a UTF-8 boundary
//! (`externalId` is omitted instead); a message over `max_message_bytes` has values
//! shortened in this order: `msg`, `cs6` alert list, file/URL fields, names, categories,
//! ids and IPs (ids, IPs and URLs are dropped, never cut), finally the header name. Every
//! truncated message starts its extension with `cn3Label=truncated cn3=1`, so the marker
//! survives a receiver that cuts the tail.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::fields::{i64_at, int_bytes, ip, str_at, text_at, Ip, ProductNaming, View};
use super::record::{encode_event, evidence_type, Builder, Ctx, Extra, Record, Syntax, KEEP};
use super::{EncodeError, EncodeReport, Encoder, EncoderOptions, Format, SplitMode};
use crate::event::{Event, EventKind};

/// CEF options (`[sinks.X.encoding.cef]`).
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

    fn header<'a>(&'a self, v: &View<'a>, sig: Cow<'a, str>, name: &'a str) -> Record<'a> {
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
            cap(Cow::Borrowed(self.naming.product(v)), PRODUCT_MAX),
            cap(
                Cow::Borrowed(v.str("metadata.product.version").unwrap_or(&self.device_version)),
                VERSION_MAX,
            ),
            cap(sig, SIGNATURE_MAX),
            cap(Cow::Borrowed(name), NAME_MAX),
            Cow::Borrowed(severity(v.severity_id())),
        ];
        let mut rec = Record::new(header, Some(4));
        rec.truncated = truncated;
        rec
    }

    /// `cs2` change type and `cs3` tenant, shared by all messages of an event.
    fn common_tail<'a>(&self, rec: &mut Record<'a>, v: &View<'a>) {
        rec.text_pair("cs2", CS2, v.change_type().map(Cow::Borrowed), CS_MAX, 4, false);
        rec.text_pair("cs3", CS3, v.tenant().map(Cow::Borrowed), CS_MAX, 6, true);
    }

    /// `cn1` class and `cn2` type uid, last in every message.
    fn numbers<'a>(&self, rec: &mut Record<'a>, v: &View<'a>) {
        rec.int("cn1", CN1, v.class_uid());
        rec.int("cn2", CN2, v.type_uid());
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
pub(crate) fn signature<'a>(v: &View<'a>) -> Cow<'a, str> {
    let detector = || v.first(&["finding_info.analytic.uid", "finding_info.types.0"]);
    let kind = v.meta.kind;
    let with = |detail: Option<&str>| Cow::Owned(joined(kind_name(kind), detail.unwrap_or("").as_bytes()));
    match (v.class_uid(), kind) {
        (2005, _) => Cow::Borrowed("incident"),
        (_, EventKind::Alert | EventKind::RiskDetection) => with(detector()),
        (_, EventKind::RiskState) => Cow::Borrowed("riskState"),
        (_, EventKind::Hunting | EventKind::Generic) => with(Some(&v.meta.category)),
        (2004, _) => Cow::Owned(joined("finding", detector().unwrap_or("").as_bytes())),
        _ => Cow::Owned(joined(kind_name(kind), int_bytes(v.type_uid(), &mut [0; 20]))),
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

fn external_id<'a>(uid: Option<Cow<'a, str>>) -> Option<Cow<'a, str>> {
    uid.filter(|u| u.len() <= EXTERNAL_ID_MAX)
}

impl Builder for CefEncoder {
    fn syntax(&self) -> &Syntax {
        &self.syntax
    }

    fn limits(&self) -> (Option<usize>, SplitMode) {
        (self.max, self.split)
    }

    fn main<'a>(&'a self, v: &View<'a>, extra: Extra) -> Record<'a> {
        let mut rec = self.header(v, signature(v), v.title());
        rec.int("rt", None, v.time_ms());
        if let Some(t) = v.int("finding_info.first_seen_time").or_else(|| v.int("start_time")) {
            rec.int("start", None, t);
        }
        if let Some(t) = v.int("finding_info.last_seen_time").or_else(|| v.int("end_time")) {
            rec.int("end", None, t);
        }
        let uid = v.finding_uid();
        rec.text_pair("externalId", None, external_id(uid.clone()), EXTERNAL_ID_MAX, 6, true);
        rec.text("cat", Some(v.ms_category()), STR_MAX, 3);
        rec.text("act", v.str("activity_name"), SHORT_MAX, 3);
        rec.text("outcome", v.str("status"), SHORT_MAX, 3);
        let (src_user, dst_user) = v.users();
        rec.text("suser", src_user.name, STR_MAX, 4);
        rec.atom("suid", src_user.uid, 5);
        rec.text("duser", dst_user.name, STR_MAX, 4);
        rec.atom("duid", dst_user.uid, 5);
        push_ip(&mut rec, "src", "c6a2", v.src_ip());
        push_ip(&mut rec, "dst", "c6a3", v.dst_ip());
        rec.text("shost", v.src_host(), STR_MAX, 4);
        rec.text("dhost", v.str("dst_endpoint.hostname"), STR_MAX, 4);
        rec.text("msg", v.str("message"), STR_MAX, 0);
        rec.text_pair("cs1", CS1, v.url().map(Cow::Borrowed), CS_MAX, 2, true);
        self.common_tail(&mut rec, v);
        rec.text_pair("cs4", CS4, uid, CS_MAX, 6, true);
        rec.text_pair("cs5", CS5, v.str("metadata.uid").map(Cow::Borrowed), CS_MAX, 6, true);
        match extra {
            Extra::Whole(ids) => rec.text_pair("cs6", CS6_ALERTS, ids.map(Cow::Owned), CS_MAX, 1, false),
            Extra::Part(p) => rec.text_pair("cs6", CS6_PART, Some(Cow::Owned(p)), CS_MAX, KEEP, true),
        }
        self.numbers(&mut rec, v);
        rec
    }

    fn alert<'a>(&'a self, v: &View<'a>, a: &'a Value, part: String) -> Record<'a> {
        let title = str_at(a, "title").unwrap_or("Incident alert");
        let mut rec = self.header(v, Cow::Borrowed("incident:alert"), title);
        rec.int("rt", None, v.time_ms());
        if let Some(t) = i64_at(a, "created_time").or_else(|| i64_at(a, "first_seen_time")) {
            rec.int("start", None, t);
        }
        if let Some(t) = i64_at(a, "modified_time").or_else(|| i64_at(a, "last_seen_time")) {
            rec.int("end", None, t);
        }
        rec.text_pair(
            "externalId",
            None,
            external_id(v.finding_uid()),
            EXTERNAL_ID_MAX,
            6,
            true,
        );
        let cat = str_at(a, "analytic.uid").or_else(|| str_at(a, "types.0"));
        rec.text("cat", cat, STR_MAX, 3);
        rec.text("msg", str_at(a, "desc"), STR_MAX, 0);
        rec.text_pair("cs1", CS1, str_at(a, "src_url").map(Cow::Borrowed), CS_MAX, 2, true);
        self.common_tail(&mut rec, v);
        rec.text_pair("cs4", CS4, text_at(a, "uid"), CS_MAX, 6, true);
        rec.text_pair("cs5", CS5, v.str("metadata.uid").map(Cow::Borrowed), CS_MAX, 6, true);
        rec.text_pair("cs6", CS6_PART, Some(Cow::Owned(part)), CS_MAX, KEEP, true);
        self.numbers(&mut rec, v);
        rec
    }

    fn evidence<'a>(&'a self, v: &View<'a>, e: &'a Value, part: String) -> Record<'a> {
        let mut rec = self.header(v, Cow::Borrowed("incident:evidence"), "Incident evidence");
        rec.int("rt", None, v.time_ms());
        rec.text_pair(
            "externalId",
            None,
            external_id(v.finding_uid()),
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
        let hash = str_at(e, "file.hashes.0.value").or_else(|| str_at(e, "process.file.hashes.0.value"));
        rec.text_pair("fileHash", None, hash.map(Cow::Borrowed), HASH_MAX, 5, true);
        rec.text("sproc", str_at(e, "process.name"), STR_MAX, 2);
        rec.text("request", str_at(e, "url.url_string"), STR_MAX, 2);
        rec.text("msg", str_at(e, "process.cmd_line"), STR_MAX, 0);
        self.common_tail(&mut rec, v);
        rec.text_pair("cs4", CS4, v.finding_uid(), CS_MAX, 6, true);
        rec.text_pair("cs5", CS5, v.str("metadata.uid").map(Cow::Borrowed), CS_MAX, 6, true);
        rec.text_pair("cs6", CS6_PART, Some(Cow::Owned(part)), CS_MAX, KEEP, true);
        self.numbers(&mut rec, v);
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
mod tests {
    use super::*;
    use crate::encode::parse::parse_cef;
    use crate::encode::testutil::{alert_ocsf, event, incident_ocsf};

    fn enc(max: Option<usize>, split: SplitMode) -> CefEncoder {
        CefEncoder::new(&EncoderOptions {
            max_message_bytes: max,
            split_incidents: split,
            ..Default::default()
        })
    }

    fn run(e: &CefEncoder, ocsf: Value, kind: EventKind) -> (Vec<String>, EncodeReport) {
        let ev = event(kind, "GraphAlert", "{}", Some(ocsf));
        let mut out = Vec::new();
        let r = e.encode(&ev, &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with('\n'));
        let lines: Vec<String> = s.lines().map(str::to_owned).collect();
        assert_eq!(lines.len() as u32, r.messages);
        (lines, r)
    }

    #[test]
    fn exact_line_for_an_alert() {
        let (lines, r) = run(&enc(None, SplitMode::Auto), alert_ocsf(), EventKind::Alert);
        assert_eq!(
            lines,
            vec![
                "CEF:0|Microsoft|Entra ID Protection|v1.0|alert:unlikelyTravel|Atypical travel|8|\
                 rt=1732698845123 start=1732698800000 externalId=da637 cat=unlikelyTravel act=Create \
                 outcome=New suser=kim@fabrikam.example suid=u-1 src=203.0.113.7 msg=Atypical travel \
                 cs1Label=url cs1=https://security.microsoft.com/alerts/da637 cs2Label=changeType \
                 cs2=updated cs3Label=tenantId cs3=t1 cs4Label=findingUid cs4=da637 cs5Label=eventUid \
                 cs5=e1 cn1Label=ocsfClassUid cn1=2004 cn2Label=ocsfTypeUid cn2=200401"
            ]
        );
        assert_eq!(r, EncodeReport::one(false, false));
    }

    #[test]
    fn escaping_in_header_and_extension() {
        let mut o = alert_ocsf();
        o["finding_info"]["title"] = "a|b\\c=d\ne".into();
        o["message"] = "x|y\\z=w\nv\rq\tt".into();
        o["metadata"]["product"]["name"] = "P|Q\\R".into();
        o["actor"]["user"]["name"] = " lead and trail ".into();
        let (lines, r) = run(&enc(None, SplitMode::Auto), o, EventKind::Alert);
        let l = &lines[0];
        assert!(
            l.starts_with("CEF:0|Microsoft|P\\|Q\\\\R|v1.0|alert:unlikelyTravel|a\\|b\\\\c=d e|8|"),
            "{l}"
        );
        assert!(l.contains(" msg=x|y\\\\z\\=w\\nv\\rq t cs1Label"), "{l}");
        assert!(l.contains(" suser= lead and trail  suid=u-1 "), "{l}");
        assert_eq!(r.altered, 1);
        let c = parse_cef(l).unwrap();
        assert_eq!(c.product, "P|Q\\R");
        assert_eq!(c.name, "a|b\\c=d e");
        assert_eq!(c.get("msg"), Some("x|y\\z=w\nv\rq t"));
        assert_eq!(c.get("suser"), Some(" lead and trail "));
    }

    #[test]
    fn field_maximums_cut_and_mark() {
        let mut o = alert_ocsf();
        o["message"] = "é".repeat(600).into(); // 1200 bytes > 1023
        o["finding_info"]["uid"] = "x".repeat(50).into(); // too long for externalId
        o["activity_name"] = "a".repeat(70).into();
        let (lines, r) = run(&enc(None, SplitMode::Auto), o, EventKind::Alert);
        let l = &lines[0];
        assert!(l.contains("|8|cn3Label=truncated cn3=1 rt="), "{l}");
        assert_eq!(r.truncated, 1);
        let c = parse_cef(l).unwrap();
        assert_eq!(c.get("msg").unwrap(), "é".repeat(511));
        assert_eq!(c.get("act").unwrap().len(), 63);
        assert_eq!(c.get("externalId"), None);
        assert_eq!(c.custom("findingUid"), Some(&*"x".repeat(50)));
        assert_eq!(c.custom("truncated"), Some("1"));
    }

    #[test]
    fn over_budget_cuts_msg_first_and_keeps_marker() {
        let mut o = alert_ocsf();
        o["message"] = "m=\\".repeat(200).into();
        let (lines, r) = run(&enc(Some(600), SplitMode::Auto), o.clone(), EventKind::Alert);
        let l = &lines[0];
        assert!((599..=600).contains(&l.len()), "{l}"); // an escape pair is never split
        assert_eq!(r.truncated, 1);
        let c = parse_cef(l).unwrap();
        assert_eq!(c.extensions[0], ("cn3Label".into(), "truncated".into()));
        let msg = c.get("msg").unwrap();
        assert!(msg.len() < 600 && "m=\\".repeat(200).starts_with(msg));
        assert_eq!(c.custom("findingUid"), Some("da637"));
        assert_eq!(c.custom("url"), Some("https://security.microsoft.com/alerts/da637"));
        // Tighter: msg gone, then the URL is dropped (never cut), ids stay.
        let (lines, _) = run(&enc(Some(400), SplitMode::Auto), o.clone(), EventKind::Alert);
        let c = parse_cef(&lines[0]).unwrap();
        assert!(lines[0].len() <= 400);
        assert_eq!(c.get("msg"), None);
        assert_eq!(c.custom("url"), None);
        assert_eq!(c.custom("findingUid"), Some("da637"));
        assert_eq!(c.get("cn2"), Some("200401"));
        // Impossible budget: error, buffer unchanged.
        let ev = event(EventKind::Alert, "GraphAlert", "{}", Some(o));
        let mut out = b"keep".to_vec();
        let err = enc(Some(60), SplitMode::Auto).encode(&ev, &mut out).unwrap_err();
        assert_eq!(err.reason(), "too_large");
        assert_eq!(out, b"keep");
    }

    #[test]
    fn reserve_shrinks_the_budget() {
        let mut o = alert_ocsf();
        o["message"] = "m".repeat(800).into();
        let ev = event(EventKind::Alert, "GraphAlert", "{}", Some(o));
        let mut out = Vec::new();
        let r = enc(Some(1000), SplitMode::Auto)
            .encode_reserving(&ev, &mut out, 100)
            .unwrap();
        assert_eq!(out.len(), 901);
        assert_eq!(r.truncated, 1);
    }

    #[test]
    fn incident_whole_lists_alert_ids() {
        let (lines, r) = run(&enc(None, SplitMode::Auto), incident_ocsf(), EventKind::Incident);
        assert_eq!(lines.len(), 1);
        assert!(!r.split);
        let c = parse_cef(&lines[0]).unwrap();
        assert_eq!(c.signature, "incident");
        assert_eq!(c.name, "Ransomware | lateral movement");
        assert_eq!(c.product, "Defender XDR");
        assert_eq!(c.get("externalId"), Some("123"));
        assert_eq!(c.custom("alertIds"), Some("da1,da2"));
        assert_eq!(c.custom("url"), Some("https://security.microsoft.com/incidents/123"));
        assert_eq!(c.get("c6a2"), Some("2001:db8::7"));
        assert_eq!(c.custom("Source IPv6 Address"), Some("2001:db8::7"));
    }

    #[test]
    fn incident_split_always() {
        let (lines, r) = run(&enc(None, SplitMode::Always), incident_ocsf(), EventKind::Incident);
        assert!(r.split);
        assert_eq!(r.messages, 4);
        let p: Vec<_> = lines.iter().map(|l| parse_cef(l).unwrap()).collect();
        let parts: Vec<_> = p.iter().map(|c| c.custom("part").unwrap()).collect();
        assert_eq!(parts, ["1/4", "2/4", "3/4", "4/4"]);
        assert_eq!(p[0].custom("alertIds"), None);
        assert_eq!(p[1].signature, "incident:alert");
        assert_eq!(p[1].name, "Suspicious PowerShell");
        assert_eq!(p[1].custom("findingUid"), Some("da1"));
        assert_eq!(p[1].get("externalId"), Some("123"));
        assert_eq!(p[1].get("cat"), Some("Execution"));
        assert_eq!(p[1].get("start"), Some("1732698000000"));
        assert_eq!(p[2].name, "Lateral movement");
        assert_eq!(p[3].signature, "incident:evidence");
        assert_eq!(p[3].get("filePath"), Some("C:\\Users\\kim\\a=b.ps1"));
        assert!(lines[3].contains(" fname=a\\=b.ps1 filePath=C:\\\\Users\\\\kim\\\\a\\=b.ps1 "));
        assert_eq!(p[3].get("suser"), Some("kim@fabrikam.example"));
        assert_eq!(p[3].get("c6a2"), Some("2001:db8::7"));
        assert_eq!(p[3].custom("findingUid"), Some("123"));
        assert!(p.iter().all(|c| c.custom("eventUid") == Some("e2")));
    }

    #[test]
    fn incident_auto_splits_only_when_over_budget() {
        let mut o = incident_ocsf();
        let (lines, _) = run(&enc(Some(2000), SplitMode::Auto), o.clone(), EventKind::Incident);
        assert_eq!(lines.len(), 1);
        o["message"] = "d".repeat(900).into();
        o["finding_info_list"][1]["desc"] = "z".repeat(900).into();
        let (lines, r) = run(&enc(Some(700), SplitMode::Auto), o.clone(), EventKind::Incident);
        assert!(r.split && r.messages == 4);
        assert!(lines.iter().all(|l| l.len() <= 700));
        assert_eq!(r.truncated, 2); // the summary's and the second alert's msg were cut
        assert!(lines[0].contains("|8|cn3Label=truncated cn3=1 rt="));
        assert!(!lines[1].contains("truncated"));
        let (lines, r) = run(&enc(Some(700), SplitMode::Never), o, EventKind::Incident);
        assert!(!r.split && lines.len() == 1 && r.truncated == 1);
    }

    #[test]
    fn signatures_and_severity() {
        let mut o = alert_ocsf();
        let ev = |o: Value, k| event(k, "SignInLogs", "{}", Some(o));
        let sig = |e: &Event| {
            let n = e.normalized.as_deref().unwrap();
            signature(&View::new(n.root(), &e.meta)).into_owned()
        };
        assert_eq!(
            sig(&ev(o.clone(), EventKind::RiskDetection)),
            "riskDetection:unlikelyTravel"
        );
        o["class_uid"] = 3002.into();
        o["type_uid"] = 300201.into();
        o["finding_info"] = Value::Null;
        assert_eq!(sig(&ev(o.clone(), EventKind::SignIn)), "signIn:300201");
        assert_eq!(sig(&ev(o, EventKind::Hunting)), "hunting:SignInLogs");
        assert_eq!(
            [0, 1, 2, 3, 4, 5, 6, 99].map(severity),
            ["Unknown", "1", "3", "5", "8", "9", "10", "Unknown"]
        );
        let e = event(EventKind::Alert, "GraphAlert", "{}", None);
        let err = enc(None, SplitMode::Auto).encode(&e, &mut Vec::new()).unwrap_err();
        assert_eq!(err.reason(), "not_normalized");
    }
}
