//! Splunk HEC `/services/collector/event` envelopes, one per event, concatenated without
//! separator (the batch body is the concatenation) and never containing a newline:
//!
//! `{"time":1732698845.123,"host":"fwd01","source":"m365-forwarder:graph:<tenant>",
//! "sourcetype":"m365fwd:ocsf","index":"security","event":{...},
//! "fields":{"tenant":"...","category":"...","class_uid":"2005","severity_id":"4"}}`
//!
//! `time` is the event time (epoch seconds with the milliseconds as fraction); `host` and
//! `index` are written only when configured. `event` is the OCSF object (payload `ocsf`,
//! sourcetype `m365fwd:ocsf`) or the raw record (payload `raw`, sourcetype of the existing
//! add-ons by category, see [`default_sourcetype`]; overridable by category or kind name).
//! A raw record that does not look like a JSON object or array, or that needed a repair
//! before it parsed (or any record with `validate_raw`) and is not valid JSON, is sent as a
//! JSON string, so that one bad record cannot make Splunk reject the batch (code 6).

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::fields::{push_int, push_padded, View};
use super::json::{raw_text, write_json_line};
use super::{EncodeError, EncodeReport, Encoder, EncoderOptions, Format};
use crate::event::{Event, EventKind, EventMeta};

/// What goes into `event`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HecPayload {
    /// The normalized OCSF object.
    #[default]
    Ocsf,
    /// The raw source record (so the Microsoft add-ons' props/transforms apply).
    Raw,
}

/// HEC options (`[sinks.X.encoder.hec]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HecOptions {
    /// `ocsf` (default) or `raw`.
    pub payload: HecPayload,
    /// `host` of every event. Default: not sent (Splunk uses the connection's host).
    pub host: Option<String>,
    /// `source` template with `{source}`, `{tenant}`, `{category}`, `{kind}`. Default:
    /// `m365-forwarder:{source}:{tenant}` (`:{tenant}` left out when the tenant is unknown).
    pub source: Option<String>,
    /// `index`. Default: not sent (the token's default index).
    pub index: Option<String>,
    /// Sourcetype of OCSF payloads. Default `m365fwd:ocsf`.
    pub ocsf_sourcetype: String,
    /// Raw-payload sourcetype overrides, keyed by category (`SignInLogs`) or kind name
    /// (`signin`); the category wins.
    pub sourcetypes: BTreeMap<String, String>,
    /// Send `fields` (tenant, category, class_uid, severity_id). Default true.
    pub indexed_fields: bool,
    /// Check every raw record is valid JSON (slower). Default false: only repaired ones.
    pub validate_raw: bool,
}

impl Default for HecOptions {
    fn default() -> Self {
        HecOptions {
            payload: HecPayload::Ocsf,
            host: None,
            source: None,
            index: None,
            ocsf_sourcetype: "m365fwd:ocsf".into(),
            sourcetypes: BTreeMap::new(),
            indexed_fields: true,
            validate_raw: false,
        }
    }
}

/// Sourcetype of a raw record, matching the Splunk add-ons for Microsoft Security, Azure and
/// Cloud Services (siem-outputs.md 6.1).
pub fn default_sourcetype(meta: &EventMeta) -> &'static str {
    let c = &*meta.category;
    match c {
        "GraphIncident" => return "ms365:defender:incident",
        "GraphIncidentAlert" => return "ms365:defender:incident:alerts",
        "GraphAlert" => return "ms:graph:security:alerts",
        _ => {}
    }
    if c.starts_with("AdvancedHunting-") {
        return "ms:defender:eventhub";
    }
    if c.starts_with("Graph") {
        return match meta.kind {
            EventKind::Incident => "ms365:defender:incident",
            EventKind::Alert => "ms:graph:security:alerts",
            EventKind::SignIn => "azure:aad:signin",
            EventKind::Audit => "azure:aad:audit",
            EventKind::RiskDetection => "azure:aad:risk:detection",
            _ => "m365fwd:raw",
        };
    }
    match meta.kind {
        EventKind::SignIn
        | EventKind::Audit
        | EventKind::RiskDetection
        | EventKind::RiskState
        | EventKind::GraphActivity => "azure:monitor:aad",
        _ => "mscs:azure:eventhub",
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Source,
    Tenant,
    Category,
    Kind,
}

fn parse_template(t: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        let (lit, tail) = rest.split_at(i);
        let var = ["source", "tenant", "category", "kind"]
            .into_iter()
            .find(|v| tail[1..].starts_with(v) && tail[1 + v.len()..].starts_with('}'));
        let Some(var) = var else {
            segs.push(Seg::Lit(format!("{lit}{{")));
            rest = &tail[1..];
            continue;
        };
        if !lit.is_empty() {
            segs.push(Seg::Lit(lit.to_owned()));
        }
        segs.push(match var {
            "source" => Seg::Source,
            "tenant" => Seg::Tenant,
            "category" => Seg::Category,
            _ => Seg::Kind,
        });
        rest = &tail[var.len() + 2..];
    }
    if !rest.is_empty() {
        segs.push(Seg::Lit(rest.to_owned()));
    }
    segs
}

/// Appends the body of a JSON string (no quotes) with `"`, `\` and controls escaped.
pub(crate) fn json_str_body(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(c >> 4) as usize]);
            out.push(HEX[(c & 15) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    json_str_body(out, s);
    out.push(b'"');
}

/// Appends epoch ms as seconds with a 3-digit fraction (`1732698845.123`).
pub fn write_epoch_seconds(out: &mut Vec<u8>, ms: i64) {
    // Sign, then the magnitude: -1 ms is -0.001 (whole seconds rounded down and a positive
    // fraction would read as -1.999).
    if ms < 0 {
        out.push(b'-');
    }
    let a = ms.unsigned_abs();
    push_int(out, (a / 1000) as i64);
    out.push(b'.');
    push_padded(out, (a % 1000) as u32, 3);
}

pub struct HecEncoder {
    payload: HecPayload,
    host: Option<String>,
    source: Option<Vec<Seg>>,
    index: Option<String>,
    ocsf_sourcetype: String,
    sourcetypes: BTreeMap<String, String>,
    indexed_fields: bool,
    validate_raw: bool,
}

impl HecEncoder {
    pub fn new(opts: &EncoderOptions) -> HecEncoder {
        let h = &opts.hec;
        HecEncoder {
            payload: h.payload,
            host: h.host.clone(),
            source: h.source.as_deref().map(parse_template),
            index: h.index.clone(),
            ocsf_sourcetype: h.ocsf_sourcetype.clone(),
            sourcetypes: h.sourcetypes.clone(),
            indexed_fields: h.indexed_fields,
            validate_raw: h.validate_raw,
        }
    }

    fn sourcetype<'a>(&'a self, meta: &EventMeta) -> &'a str {
        if self.payload == HecPayload::Ocsf {
            return &self.ocsf_sourcetype;
        }
        self.sourcetypes
            .get(&*meta.category)
            .or_else(|| self.sourcetypes.get(meta.kind.as_str()))
            .map_or_else(|| default_sourcetype(meta), String::as_str)
    }

    fn write_source(&self, out: &mut Vec<u8>, meta: &EventMeta, tenant: Option<&str>) {
        out.push(b'"');
        match &self.source {
            None => {
                json_str_body(out, "m365-forwarder:");
                json_str_body(out, &meta.source);
                if let Some(t) = tenant {
                    out.push(b':');
                    json_str_body(out, t);
                }
            }
            Some(segs) => {
                for s in segs {
                    json_str_body(
                        out,
                        match s {
                            Seg::Lit(l) => l,
                            Seg::Source => &meta.source,
                            Seg::Tenant => tenant.unwrap_or(""),
                            Seg::Category => &meta.category,
                            Seg::Kind => meta.kind.as_str(),
                        },
                    );
                }
            }
        }
        out.push(b'"');
    }

    /// Writes the raw record as `event`; returns whether it was altered or sent as a string.
    fn write_raw(&self, out: &mut Vec<u8>, event: &Event) -> Result<bool, EncodeError> {
        let raw = raw_text(&event.raw)?;
        let looks_json = matches!(
            (raw.as_bytes().first(), raw.as_bytes().last()),
            (Some(b'{'), Some(b'}')) | (Some(b'['), Some(b']'))
        );
        let valid = looks_json
            && (!(self.validate_raw || event.meta.repaired) || serde_json::from_str::<IgnoredAny>(raw).is_ok());
        if valid {
            Ok(write_json_line(out, raw))
        } else {
            json_str(out, raw);
            Ok(true)
        }
    }
}

impl Encoder for HecEncoder {
    fn encode_reserving(&self, event: &Event, out: &mut Vec<u8>, _reserve: usize) -> Result<EncodeReport, EncodeError> {
        let meta = &event.meta;
        let normalized = event.normalized.as_deref();
        if self.payload == HecPayload::Ocsf {
            match normalized {
                None => return Err(EncodeError::NotNormalized),
                Some(n) if !n.is_object() => return Err(EncodeError::InvalidOcsf),
                _ => {}
            }
        }
        let view = normalized.map(|n| View::new(n.root(), meta));
        let time = view.map_or(meta.event_ms.unwrap_or(meta.received_ms), |v| v.time_ms());
        let tenant = view.map_or(meta.tenant.as_deref(), |v| v.tenant());
        let start = out.len();
        out.extend_from_slice(b"{\"time\":");
        write_epoch_seconds(out, time);
        if let Some(h) = &self.host {
            out.extend_from_slice(b",\"host\":");
            json_str(out, h);
        }
        out.extend_from_slice(b",\"source\":");
        self.write_source(out, meta, tenant);
        out.extend_from_slice(b",\"sourcetype\":");
        json_str(out, self.sourcetype(meta));
        if let Some(i) = &self.index {
            out.extend_from_slice(b",\"index\":");
            json_str(out, i);
        }
        out.extend_from_slice(b",\"event\":");
        let altered = match (self.payload, normalized) {
            (HecPayload::Ocsf, Some(n)) => n.write_json(out).map(|_| false),
            _ => match self.write_raw(out, event) {
                Ok(a) => Ok(a),
                Err(e) => {
                    out.truncate(start);
                    return Err(e);
                }
            },
        };
        if let Err(e) = altered {
            out.truncate(start);
            return Err(e.into());
        }
        if self.indexed_fields {
            out.extend_from_slice(b",\"fields\":{");
            let mut first = true;
            let mut field = |out: &mut Vec<u8>, k: &str, v: &str| {
                if !first {
                    out.push(b',');
                }
                first = false;
                json_str(out, k);
                out.push(b':');
                json_str(out, v);
            };
            if let Some(t) = tenant {
                field(out, "tenant", t);
            }
            field(out, "category", &meta.category);
            if let Some(n) = normalized {
                field(out, "class_uid", itoa::Buffer::new().format(n.class_uid));
            }
            let sev = view.map_or(meta.severity_id, |v| v.severity_id());
            field(out, "severity_id", itoa::Buffer::new().format(sev));
            out.push(b'}');
        }
        out.push(b'}');
        Ok(EncodeReport::one(false, altered.unwrap_or(false)))
    }

    fn format(&self) -> Format {
        Format::Hec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::testutil::{alert_ocsf, event};
    use serde_json::{json, Value};

    fn enc(f: impl FnOnce(&mut HecOptions)) -> HecEncoder {
        let mut o = EncoderOptions::default();
        f(&mut o.hec);
        HecEncoder::new(&o)
    }

    fn one(e: &HecEncoder, ev: &Event) -> (Value, EncodeReport) {
        let mut out = Vec::new();
        let r = e.encode(ev, &mut out).unwrap();
        assert!(!out.contains(&b'\n'));
        (serde_json::from_slice(&out).unwrap(), r)
    }

    #[test]
    fn ocsf_envelope() {
        let ev = event(EventKind::Alert, "GraphAlert", "{}", Some(alert_ocsf()));
        let mut out = Vec::new();
        enc(|_| {}).encode(&ev, &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with(
            "{\"time\":1732698845.123,\"source\":\"m365-forwarder:graph:t1\",\"sourcetype\":\"m365fwd:ocsf\",\"event\":{"
        ), "{s}");
        assert!(s.ends_with(
            "},\"fields\":{\"tenant\":\"t1\",\"category\":\"GraphAlert\",\"class_uid\":\"2004\",\"severity_id\":\"4\"}}"
        ), "{s}");
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["event"], alert_ocsf());
        let e = event(EventKind::Alert, "GraphAlert", "{}", None);
        assert_eq!(
            enc(|_| {}).encode(&e, &mut Vec::new()).unwrap_err().reason(),
            "not_normalized"
        );
    }

    #[test]
    fn raw_payload_sourcetypes_host_index() {
        let e = enc(|h| {
            h.payload = HecPayload::Raw;
            h.host = Some("fwd\"01".into());
            h.index = Some("security".into());
            h.sourcetypes.insert("SignInLogs".into(), "my:signin".into());
            h.sourcetypes.insert("audit".into(), "my:audit".into());
            h.indexed_fields = false;
        });
        let st = |kind, cat: &str| {
            let (v, _) = one(&e, &event(kind, cat, "{\"a\":1}", None));
            assert_eq!(v["event"], json!({"a": 1}));
            assert_eq!(v["host"], "fwd\"01");
            assert_eq!(v["index"], "security");
            assert!(v.get("fields").is_none());
            v["sourcetype"].as_str().unwrap().to_owned()
        };
        assert_eq!(st(EventKind::Incident, "GraphIncident"), "ms365:defender:incident");
        assert_eq!(st(EventKind::Alert, "GraphAlert"), "ms:graph:security:alerts");
        assert_eq!(
            st(EventKind::Alert, "AdvancedHunting-AlertInfo"),
            "ms:defender:eventhub"
        );
        assert_eq!(
            st(EventKind::SignIn, "NonInteractiveUserSignInLogs"),
            "azure:monitor:aad"
        );
        assert_eq!(st(EventKind::SignIn, "SignInLogs"), "my:signin");
        assert_eq!(st(EventKind::Audit, "AuditLogs"), "my:audit");
        assert_eq!(
            st(EventKind::RiskDetection, "GraphRiskDetection"),
            "azure:aad:risk:detection"
        );
        assert_eq!(st(EventKind::Generic, "SomethingNew"), "mscs:azure:eventhub");
    }

    #[test]
    fn raw_that_is_not_json_is_sent_as_string() {
        let e = enc(|h| h.payload = HecPayload::Raw);
        let mut ev = event(EventKind::SignIn, "SignInLogs", "{'a': 'x'}", None);
        ev.meta.repaired = true;
        let (v, r) = one(&e, &ev);
        assert_eq!(v["event"], "{'a': 'x'}");
        assert_eq!(r.altered, 1);
        let ev = event(EventKind::SignIn, "SignInLogs", "plain\ttext", None);
        assert_eq!(one(&e, &ev).0["event"], "plain\ttext");
        let ev = event(EventKind::SignIn, "SignInLogs", "{\"a\":\"x\ny\"}", None);
        assert_eq!(one(&e, &ev).0["event"], json!({"a": "x\ny"}));
        let v = enc(|h| {
            h.payload = HecPayload::Raw;
            h.validate_raw = true;
        });
        let ev = event(EventKind::SignIn, "SignInLogs", "{\"a\":}", None);
        assert_eq!(one(&v, &ev).0["event"], "{\"a\":}");
    }

    #[test]
    fn batch_concatenation_and_source_template() {
        let e = enc(|h| h.source = Some("{kind}/{category}:{tenant}{x}{source}".into()));
        let ev = event(EventKind::Alert, "GraphAlert", "{}", Some(alert_ocsf()));
        let mut out = Vec::new();
        e.encode(&ev, &mut out).unwrap();
        e.encode(&ev, &mut out).unwrap();
        let all: Vec<Value> = serde_json::Deserializer::from_slice(&out)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1]["source"], "alert/GraphAlert:t1{x}graph");
    }

    #[test]
    fn time_and_string_helpers() {
        let mut v = Vec::new();
        write_epoch_seconds(&mut v, 1_732_698_845_003);
        v.push(b' ');
        write_epoch_seconds(&mut v, -1);
        v.push(b' ');
        write_epoch_seconds(&mut v, -86_400_250);
        v.push(b' ');
        write_epoch_seconds(&mut v, i64::MIN);
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "1732698845.003 -0.001 -86400.250 -9223372036854775.808"
        );
        let mut s = Vec::new();
        json_str_body(&mut s, "a\"b\\c\u{1}\té");
        assert_eq!(String::from_utf8(s).unwrap(), "a\\\"b\\\\c\\u0001\\té");
    }
}
