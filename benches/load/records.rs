//! Record generator of the load harness: realistic Entra ID and Defender XDR diagnostic
//! records built from the sample payloads in `tests/data`, with a unique id, the send time
//! (for latency) and a varying client address per record, in a 1.6 KB or a 3.6 KB mix.

use std::path::Path;

use serde_json::Value;

/// Average record size of a generated stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Sign-ins, audit, risk events, risky users and Defender tables; about 1.6 KB.
    Small,
    /// Sign-ins with many Conditional Access results and Defender evidence; about 3.6 KB.
    Large,
}

impl Mix {
    pub fn parse(s: &str) -> Option<Mix> {
        match s {
            "1.6k" | "small" => Some(Mix::Small),
            "3.6k" | "large" => Some(Mix::Large),
            _ => None,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Mix::Small => "1.6k",
            Mix::Large => "3.6k",
        }
    }
}

const TIME: &str = "@@TIME@@";
const ID: &str = "@@ID@@";
const IP: &str = "@@IP@@";

/// One record shape cut at its placeholders.
struct Template {
    parts: Vec<(String, Option<&'static str>)>,
}

impl Template {
    fn new(mut v: Value) -> Template {
        // Every time in the record becomes the send time, so that whichever one an output
        // carries as the event time measures the latency.
        stamp_times(&mut v);
        if let Some(o) = v.as_object_mut() {
            if o.contains_key("correlationId") {
                o.insert("correlationId".into(), Value::String(ID.into()));
            }
            if let Some(p) = o.get_mut("properties").and_then(Value::as_object_mut) {
                for k in ["id", "correlationId", "AlertId", "ReportId"] {
                    if p.contains_key(k) {
                        p.insert(k.into(), Value::String(ID.into()));
                    }
                }
                for k in ["ipAddress", "IPAddress", "RemoteIP"] {
                    if p.get(k).is_some_and(Value::is_string) {
                        p.insert(k.into(), Value::String(IP.into()));
                    }
                }
            }
        }
        let text = serde_json::to_string(&v).expect("sample serializes");
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        loop {
            let next = [TIME, ID, IP]
                .into_iter()
                .filter_map(|m| rest.find(m).map(|at| (at, m)))
                .min_by_key(|(at, _)| *at);
            match next {
                Some((at, m)) => {
                    parts.push((rest[..at].to_string(), Some(m)));
                    rest = &rest[at + m.len()..];
                }
                None => {
                    parts.push((rest.to_string(), None));
                    break;
                }
            }
        }
        Template { parts }
    }

    fn write(&self, out: &mut Vec<u8>, seq: u64, time: &str) {
        use std::io::Write;
        for (text, hole) in &self.parts {
            out.extend_from_slice(text.as_bytes());
            match *hole {
                Some(TIME) => out.extend_from_slice(time.as_bytes()),
                Some(ID) => {
                    let _ = write!(
                        out,
                        "4c0f{:04x}-1d2e-4f30-8a41-{:012x}",
                        seq >> 48,
                        seq & 0xffff_ffff_ffff
                    );
                }
                Some(IP) => {
                    let _ = write!(out, "198.51.{}.{}", (seq >> 8) & 0xff, seq & 0xff);
                }
                _ => {}
            }
        }
    }
}

fn looks_like_time(s: &str) -> bool {
    let b = s.as_bytes();
    let iso = b.len() >= 19 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[..4].iter().all(u8::is_ascii_digit);
    let us = s.contains('/') && (s.ends_with(" AM") || s.ends_with(" PM"));
    iso || us
}

pub(crate) fn stamp_times(v: &mut Value) {
    match v {
        Value::String(s) if looks_like_time(s) => *s = TIME.into(),
        Value::Array(a) => a.iter_mut().for_each(stamp_times),
        Value::Object(o) => o.values_mut().for_each(stamp_times),
        _ => {}
    }
}

/// Endless stream of NDJSON records in a fixed rotation.
pub struct Generator {
    templates: Vec<Template>,
    next: u64,
}

fn records_of(dir: &Path, file: &str, category: Option<&str>) -> Vec<Value> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    v["records"]
        .as_array()
        .expect("records array")
        .iter()
        .filter(|r| category.is_none_or(|c| r["category"] == c))
        .cloned()
        .collect()
}

/// Repeats the Conditional Access results of a sign-in until the record is about `target` bytes.
fn grow_signin(mut v: Value, target: usize) -> Value {
    let mut policies = v["properties"]["appliedConditionalAccessPolicies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut i = 0;
    while serde_json::to_string(&v).map(|s| s.len()).unwrap_or(target) < target && i < 64 {
        policies.push(serde_json::json!({
            "id": format!("8a2e5c71-0b4d-4e6f-9a10-{i:012x}"),
            "displayName": format!("CA{:03} - Require compliant device for app group {i}", i + 10),
            "enforcedGrantControls": ["RequireCompliantDevice"],
            "enforcedSessionControls": [],
            "result": if i % 3 == 0 { "success" } else { "notApplied" },
            "conditionsSatisfied": 3,
            "conditionsNotSatisfied": 0
        }));
        v["properties"]["appliedConditionalAccessPolicies"] = Value::Array(policies.clone());
        i += 1;
    }
    v
}

impl Generator {
    pub fn new(samples: &Path, mix: Mix) -> Generator {
        let eh = samples.join("eventhub");
        let mut values = Vec::new();
        match mix {
            Mix::Small => {
                values.extend(records_of(&eh, "managedidentity_signin.json", None));
                values.extend(records_of(&eh, "signin_interactive.json", None).into_iter().take(1));
                values.extend(records_of(&eh, "auditlogs.json", None));
                values.extend(records_of(&eh, "user_risk_events.json", None));
                values.extend(records_of(&eh, "risky_users.json", None));
                values.extend(records_of(&eh, "serviceprincipal_risk_events.json", None));
                values.extend(records_of(&eh, "defender_identity_logon_events.json", None));
                values.extend(records_of(
                    &eh,
                    "defender_alert_info_evidence.json",
                    Some("AdvancedHunting-AlertEvidence"),
                ));
                values.extend(records_of(&eh, "graph_activity_logs.json", None));
            }
            Mix::Large => {
                for r in records_of(&eh, "signin_interactive.json", None)
                    .into_iter()
                    .chain(records_of(&eh, "signin_noninteractive.json", None))
                    .chain(records_of(&eh, "serviceprincipal_signin.json", None))
                {
                    values.push(grow_signin(r, 3900));
                }
                values.extend(records_of(
                    &eh,
                    "defender_alert_info_evidence.json",
                    Some("AdvancedHunting-AlertEvidence"),
                ));
            }
        }
        let templates = values.into_iter().map(Template::new).collect();
        Generator { templates, next: 0 }
    }

    /// Appends the next record and a newline; `time` is an ISO 8601 UTC time.
    pub fn write_next(&mut self, out: &mut Vec<u8>, time: &str) {
        let t = &self.templates[(self.next % self.templates.len() as u64) as usize];
        t.write(out, self.next, time);
        out.push(b'\n');
        self.next += 1;
    }

    /// Average bytes per record (newline included) over one rotation.
    pub fn average_bytes(&mut self) -> usize {
        let mut buf = Vec::new();
        let n = self.templates.len();
        for _ in 0..n {
            self.write_next(&mut buf, "2026-11-29T01:00:00.0000000Z");
        }
        self.next = 0;
        buf.len() / n
    }
}

/// The current UTC time as `2026-11-29T01:02:03.1234567Z` (Entra's 7-digit fraction).
pub fn now_iso() -> String {
    use chrono::Timelike;
    let now = chrono::Utc::now();
    format!(
        "{}.{:07}Z",
        now.format("%Y-%m-%dT%H:%M:%S"),
        now.nanosecond() % 1_000_000_000 / 100
    )
}
