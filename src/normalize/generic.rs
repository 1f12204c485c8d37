//! Generic fallback → OCSF Base Event (class 0) for unknown categories and advanced hunting
//! tables without a dedicated mapping: the whole record is kept in `unmapped`, the time and
//! tenant are found where they usually are, a few observables are extracted. Never fails on a
//! JSON object.

use serde_json::{Map, Value};

use super::common::{obs, tenant_from_resource_id, uid_of, Fnv128, Obj, Observables};
use super::lenient::decode_str;
use super::ocsf::{Class, Draft};
use super::{Ctx, NormalizeError};
use crate::decode::time::{parse_time_json, ParsedTime};
use crate::event::EventKind;

/// Time fields tried in `properties` first (the event time), then at the top level.
const INNER_TIME: &[&str] = &[
    "Timestamp",
    "TimeGenerated",
    "timeGenerated",
    "createdDateTime",
    "activityDateTime",
    "eventTime",
    "timestamp",
];
const OUTER_TIME: &[&str] = &[
    "time",
    "Timestamp",
    "TimeGenerated",
    "timestamp",
    "createdDateTime",
    "eventTime",
];

fn str_at<'v>(o: &'v Map<String, Value>, k: &str) -> Option<&'v str> {
    o.get(k)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn find_time(outer: &Map<String, Value>) -> Option<(ParsedTime, String)> {
    let inner = outer.get("properties").and_then(Value::as_object);
    let tries = inner
        .into_iter()
        .flat_map(|p| INNER_TIME.iter().map(move |k| p.get(*k)))
        .chain(OUTER_TIME.iter().map(|k| outer.get(*k)));
    for v in tries.flatten() {
        if let Some(t) = parse_time_json(v) {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            return Some((t, text));
        }
    }
    None
}

fn product_for(category: &str, resource_id: Option<&str>) -> &'static str {
    if category.starts_with("AdvancedHunting-") {
        "Microsoft Defender XDR"
    } else if resource_id.is_some_and(|r| r.to_ascii_lowercase().contains("microsoft.aadiam")) {
        "Microsoft Entra ID"
    } else {
        "Microsoft"
    }
}

/// Observables from the usual advanced hunting columns.
fn hunting_observables(p: &Map<String, Value>, o: &mut Observables) {
    const COLS: &[(&str, u8)] = &[
        ("DeviceName", obs::HOSTNAME),
        ("RemoteIP", obs::IP),
        ("LocalIP", obs::IP),
        ("IPAddress", obs::IP),
        ("AccountUpn", obs::USER_NAME),
        ("AccountName", obs::USER_NAME),
        ("InitiatingProcessAccountUpn", obs::USER_NAME),
        ("SenderFromAddress", obs::EMAIL),
        ("RecipientEmailAddress", obs::EMAIL),
        ("RemoteUrl", obs::URL),
        ("Url", obs::URL),
        ("FileName", obs::FILE_NAME),
        ("SHA256", obs::HASH),
        ("SHA1", obs::HASH),
        ("MD5", obs::HASH),
        ("ProcessCommandLine", obs::COMMAND_LINE),
    ];
    for (col, t) in COLS {
        o.add(*t, format!("unmapped.properties.{col}"), str_at(p, col));
    }
}

pub(crate) fn map(ctx: &Ctx<'_>, raw: &str) -> Result<Draft, NormalizeError> {
    let v: Value = super::json_de::from_str(raw).map_err(NormalizeError::InvalidJson)?;
    let Value::Object(mut rec) = v else {
        return Err(NormalizeError::NotAnObject);
    };
    let category: &str = &ctx.meta.category;
    let hunting = ctx.meta.kind == EventKind::Hunting || category.starts_with("AdvancedHunting-");
    let tenant = str_at(&rec, "tenantId")
        .map(str::to_ascii_lowercase)
        .or_else(|| str_at(&rec, "resourceId").and_then(tenant_from_resource_id));
    let found = find_time(&rec);
    let (time, original) = match &found {
        Some((t, s)) => (*t, Some(s.clone())),
        None => (
            ParsedTime {
                ms: ctx.meta.event_ms.unwrap_or(ctx.meta.received_ms),
                assumed_utc: false,
            },
            None,
        ),
    };

    let mut d = Draft::new(Class::Base, time, product_for(category, str_at(&rec, "resourceId")));
    d.feature = category.to_owned();
    d.original_time = original;
    if found.is_none() {
        d.unmapped.c("time_source", "received");
    }
    d.severity_id = if hunting { 1 } else { 0 };
    let mut h = Fnv128::default();
    h.write(raw.as_bytes());
    d.uid = uid_of(&[
        "generic",
        category,
        tenant.as_deref().unwrap_or(""),
        &format!("{:032x}", h.finish()),
    ]);
    d.correlation_uid = str_at(&rec, "correlationId").map(str::to_owned);

    let label = rec
        .get("properties")
        .and_then(Value::as_object)
        .and_then(|p| str_at(p, "ActionType"))
        .or_else(|| str_at(&rec, "operationName").filter(|s| *s != "Publish"))
        .map(str::to_owned);
    if let Some(l) = &label {
        d.activity_id = 99;
        d.activity_name = Some(l.clone());
    }
    d.body.v(
        "message",
        match &label {
            Some(l) => format!("{category}: {l}"),
            None => category.to_owned(),
        },
    );

    if let Some(Value::Object(p)) = rec.get_mut("properties") {
        if hunting {
            hunting_observables(p, &mut d.observables);
            let mut device = Obj::new();
            device
                .s("uid", str_at(p, "DeviceId"))
                .s("hostname", str_at(p, "DeviceName"));
            if !device.is_empty() {
                device.v("type_id", 0);
                d.body.o("device", device);
                d.host_profile = true;
            }
        }
        for k in ["AdditionalFields", "additionalInfo", "AdditionalInfo"] {
            if let Some(Value::String(s)) = p.get(k) {
                if let Some(decoded) = decode_str(s) {
                    p.insert(k.to_owned(), decoded);
                }
            }
        }
    } else {
        d.observables
            .add(obs::IP, "unmapped.callerIpAddress", str_at(&rec, "callerIpAddress"));
    }
    d.tenant = tenant;
    for (k, v) in rec {
        d.unmapped.insert_owned(k, v);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn unknown_category_falls_back_to_base_event() {
        let n = normalizer();
        let rec = r#"{"time":"11/28/2026 9:05:12 AM","category":"NetworkAccessTrafficLogs",
            "resourceId":"/tenants/D13C513A-42F8-4DA1-97B1-165F0971B7C4/providers/Microsoft.aadiam",
            "operationName":"Traffic","properties":{"connectionId":"c1","destinationIp":"198.51.100.1"}}"#;
        let o = run(&n, "NetworkAccessTrafficLogs", rec);
        let e = ocsf(&o);
        assert_eq!(o.normalized.class_uid, 0);
        assert_eq!(e["category_uid"], 0);
        assert_eq!(e["class_name"], "Base Event");
        assert_eq!(e["activity_id"], 99);
        assert_eq!(e["activity_name"], "Traffic");
        assert_eq!(e["type_uid"], 99);
        assert_eq!(o.severity_id, 0);
        assert_eq!(e["unmapped"]["properties"]["connectionId"], "c1");
        assert_eq!(e["metadata"]["product"]["name"], "Microsoft Entra ID");
        assert_eq!(o.tenant.as_deref(), Some(TENANT));
        assert!(o.time_assumed_utc);
        assert_eq!(o.entity_key, None);
        assert_eq!(e["raw_data"], rec);
    }

    #[test]
    fn record_without_any_time_uses_receive_time() {
        let n = normalizer();
        let o = run(&n, "SomethingNew", r#"{"a":1}"#);
        let e = ocsf(&o);
        assert_eq!(e["time"], 1_800_000_000_000i64);
        assert_eq!(e["unmapped"]["time_source"], "received");
        assert_eq!(e["activity_id"], 0);
        assert_eq!(e["type_uid"], 0);
    }

    #[test]
    fn epoch_number_time_and_properties_not_object() {
        let n = normalizer();
        let o = run(&n, "X", r#"{"time":1732780800,"properties":"{PII Removed}"}"#);
        assert_eq!(o.event_ms, Some(1_732_780_800_000));
        assert_eq!(ocsf(&o)["unmapped"]["properties"], "{PII Removed}");
    }

    #[test]
    fn hunting_row_keeps_columns_and_extracts_observables() {
        let n = normalizer();
        let rec = r#"{"time":"2026-11-27T09:41:40.1170000Z","tenantId":"d13c513a-42f8-4da1-97b1-165f0971b7c4",
            "operationName":"Publish","category":"AdvancedHunting-DeviceProcessEvents","Tenant":"DefaultTenant",
            "properties":{"Timestamp":"2026-11-27T09:40:58.66Z","DeviceName":"ws-fin-0423.corp.fabrikam.example",
            "ActionType":"ProcessCreated","FileName":"powershell.exe","ProcessCommandLine":"powershell.exe -NoProfile",
            "AccountName":"megan.bowen","ReportId":2214,
            "AdditionalFields":"{\"ThreatName\":\"Trojan:PowerShell/Obfuse.A\"}"}}"#;
        let o = run(&n, "AdvancedHunting-DeviceProcessEvents", rec);
        let e = ocsf(&o);
        assert_eq!(e["class_uid"], 0);
        assert_eq!(e["activity_name"], "ProcessCreated");
        assert_eq!(o.severity_id, 1);
        assert_eq!(
            e["time"], 1_795_772_458_660i64,
            "properties.Timestamp, not publish time"
        );
        assert_eq!(e["device"]["hostname"], "ws-fin-0423.corp.fabrikam.example");
        assert_eq!(e["metadata"]["product"]["name"], "Microsoft Defender XDR");
        assert_eq!(
            e["unmapped"]["properties"]["AdditionalFields"]["ThreatName"],
            "Trojan:PowerShell/Obfuse.A"
        );
        assert_eq!(e["unmapped"]["properties"]["ReportId"], 2214);
        assert!(observed(&o, 13).contains(&"powershell.exe -NoProfile".to_owned()));
        assert!(observed(&o, 1).contains(&"ws-fin-0423.corp.fabrikam.example".to_owned()));
    }

    #[test]
    fn duplicate_records_share_uid() {
        let n = normalizer();
        let rec = r#"{"time":"2026-11-27T09:41:40Z","x":1}"#;
        let a = run(&n, "X", rec);
        let b = run(&n, "X", rec);
        assert_eq!(ocsf(&a)["metadata"]["uid"], ocsf(&b)["metadata"]["uid"]);
    }
}
