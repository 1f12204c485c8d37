//! Test data and checks for the syslog sink tests: crafted Graph incident pages and OCSF
//! incident events, a sink built and fed directly (no pipeline), and the pycef cross-check.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use m365_forwarder::ack::Finalizer;
use m365_forwarder::encode::parse::{parse_cef, unescape_value};
use m365_forwarder::event::{Event, EventKind, EventMeta, Normalized, Position};
use m365_forwarder::sinks::{self, SinkContext};
use m365_forwarder::telemetry::{Health, Metrics};
use serde_json::json;

/// Parses CEF lines with pycef (an outside parser) when installed, and checks it agrees with
/// ours on the header and every extension pair. pycef does not undo escapes, so its values
/// are unescaped here, and it splits the header on every pipe, so lines with an escaped
/// pipe in the header are left to our parser. Returns how many lines pycef checked.
pub fn pycef_check(lines: &[String], dir: &Path) -> usize {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import pycef"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("pycef not installed: outside CEF parser check skipped (pip install pycef)");
        return 0;
    }
    let lines: Vec<&String> = lines
        .iter()
        .filter(|l| !l.split("|").take(7).any(|f| f.ends_with('\\')))
        .collect();
    let f = dir.join("cef-lines.txt");
    std::fs::write(&f, lines.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n")).unwrap();
    let script = "import pycef,sys,json\nfor l in open(sys.argv[1],encoding='utf-8'):\n  print(json.dumps(pycef.parse(l.rstrip('\\n'))))\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success(), "pycef: {}", String::from_utf8_lossy(&out.stderr));
    let parsed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), lines.len());
    let header = [
        "CEFVersion",
        "DeviceVendor",
        "DeviceProduct",
        "DeviceVersion",
        "DeviceEventClassID",
        "Name",
        "Severity",
    ];
    for (line, p) in lines.iter().zip(&parsed) {
        let ours = parse_cef(line).unwrap();
        let theirs = p.as_object().unwrap_or_else(|| panic!("pycef could not parse {line}"));
        let h = [
            &ours.version,
            &ours.vendor,
            &ours.product,
            &ours.device_version,
            &ours.signature,
            &ours.name,
            &ours.severity,
        ];
        for (k, v) in header.iter().zip(h) {
            assert_eq!(theirs[*k].as_str(), Some(v.as_str()), "{k} of {line}");
        }
        let ext: HashMap<&str, String> = theirs
            .iter()
            .filter(|(k, _)| !header.contains(&k.as_str()) && !["DeviceName", "DeviceSeverity"].contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), unescape_value(v.as_str().unwrap())))
            .collect();
        // pycef names a custom field by its label and drops the label key.
        let mine: HashMap<&str, String> = ours
            .extensions
            .iter()
            .filter(|(k, _)| !k.ends_with("Label"))
            .map(|(k, v)| (ours.get(&format!("{k}Label")).unwrap_or(k.as_str()), v.clone()))
            .collect();
        assert_eq!(ext, mine, "pycef and our parser disagree on {line}");
    }
    lines.len()
}

pub const TENANT: &str = "d13c513a-42f8-4da1-97b1-165f0971b7c4";

/// A Graph incident page: `alerts` alerts, each with a file and a user evidence item.
pub fn incident_page(
    id: &str,
    name: &str,
    alerts: usize,
    desc: &str,
    file_dir: &str,
    file_name: &str,
) -> serde_json::Value {
    let t = "2026-11-27T09:14:05.123Z";
    let alerts: Vec<_> = (0..alerts)
        .map(|i| {
            json!({
                "@odata.type": "#microsoft.graph.security.alert",
                "id": format!("da{id}-{i:04}-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
                "incidentId": id, "status": "new", "severity": "high",
                "serviceSource": "microsoftDefenderForEndpoint", "detectionSource": "antivirus",
                "productName": "Microsoft Defender for Endpoint", "detectorId": format!("det-{i}"),
                "tenantId": TENANT, "title": format!("Suspicious script {i} a=b ^ c"), "description": desc,
                "category": "Execution", "createdDateTime": t, "lastUpdateDateTime": t,
                "firstActivityDateTime": t, "lastActivityDateTime": t,
                "alertWebUrl": format!("https://security.microsoft.com/alerts/da{id}-{i}"),
                "evidence": [
                    {"@odata.type": "#microsoft.graph.security.fileEvidence", "createdDateTime": t,
                     "verdict": "malicious", "remediationStatus": "none", "roles": [],
                     "fileDetails": {"fileName": file_name, "filePath": file_dir,
                                     "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}},
                    {"@odata.type": "#microsoft.graph.security.userEvidence", "createdDateTime": t,
                     "verdict": "suspicious", "remediationStatus": "none", "roles": ["compromised"],
                     "userAccount": {"accountName": "kim", "domainName": "fabrikam.example",
                                     "userPrincipalName": format!("kim{i}@fabrikam.example"), "displayName": "Kim"}}
                ]
            })
        })
        .collect();
    json!({"value": [{
        "@odata.type": "#microsoft.graph.security.incident", "id": id,
        "incidentWebUrl": format!("https://security.microsoft.com/incidents/{id}?tid={TENANT}"),
        "tenantId": TENANT, "displayName": name, "description": desc,
        "createdDateTime": t, "lastUpdateDateTime": t, "status": "active", "severity": "high",
        "classification": "unknown", "determination": "unknown", "alerts": alerts
    }]})
}

/// An OCSF incident with an alert and a file evidence, as an event (no pipeline).
pub fn incident_event() -> Event {
    let ocsf = json!({
        "class_uid": 2005, "activity_id": 2, "activity_name": "Update", "type_uid": 200502,
        "severity_id": 4, "status": "New", "time": 1795770845123i64,
        "message": "Ransomware | lateral movement",
        "metadata": {"uid": "e2", "product": {"name": "Microsoft Defender XDR", "version": "v1.0"}},
        "finding_info": {"uid": "4242", "title": "Ransomware | lateral movement"},
        "finding_info_list": [{"uid": "da1", "title": "Suspicious script", "desc": "First line.\nSecond line."}],
        "evidences": [{"file": {"name": "a=b.ps1", "path": "C:\\Users\\kim\\a=b.ps1"}}]
    });
    let meta = EventMeta {
        tenant: Some(Arc::from(TENANT)),
        received_ms: 1795770900000,
        event_ms: Some(1795770845123),
        severity_id: 4,
        entity_key: Some(Arc::from("4242")),
        ..EventMeta::new(
            Arc::from("graph"),
            "GraphIncident",
            EventKind::Incident,
            Position::at(Arc::from("p0"), 0, 0),
        )
    };
    let mut e = Event::new(bytes::Bytes::from_static(b"{}"), meta, Finalizer::noop());
    e.normalized = Some(Arc::new(Normalized::from_value(2005, ocsf)));
    e
}

/// Builds a sink from its TOML table the way the config does, starts it and sends `events`.
pub async fn send_direct(table: &str, events: &[Event]) -> Arc<Metrics> {
    let value: toml::Value = toml::from_str(table).unwrap();
    let mut t = value.as_table().unwrap().clone();
    let ty = t.remove("type").unwrap();
    let config = sinks::build_config(ty.as_str().unwrap(), "direct", toml::Value::Table(t), "sinks.direct").unwrap();
    let mut sink = config.build("direct").unwrap();
    let metrics = Arc::new(Metrics::new());
    let ctx = SinkContext {
        instance: 0,
        name: Arc::from("direct"),
        metrics: metrics.clone(),
        health: Arc::new(Health::default()),
    };
    sink.start(&ctx).await.unwrap();
    let report = sink.send(events).await.unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    sink.close().await.unwrap();
    metrics
}
