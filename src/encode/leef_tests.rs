//! Tests of the LEEF encoder: exact lines (1.0 and 2.0), replacement and truncation markers,
//! `devTime` formats, incident splitting, sign-in attributes and the delimiter option.

use super::*;
use crate::encode::parse::parse_leef;
use crate::encode::testutil::{alert_ocsf, event, incident_ocsf};

fn enc(leef: LeefOptions, max: Option<usize>, split: SplitMode) -> LeefEncoder {
    LeefEncoder::new(&EncoderOptions {
        max_message_bytes: max,
        split_incidents: split,
        leef,
        ..Default::default()
    })
}

fn run(e: &LeefEncoder, ocsf: Value, kind: EventKind) -> (Vec<String>, EncodeReport) {
    let ev = event(kind, "GraphAlert", "{}", Some(ocsf));
    let mut out = Vec::new();
    let r = e.encode(&ev, &mut out).unwrap();
    let s = String::from_utf8(out).unwrap();
    let lines: Vec<String> = s.lines().map(str::to_owned).collect();
    assert_eq!(lines.len() as u32, r.messages);
    (lines, r)
}

const ALERT_ATTRS: &str = "devTime=1732698845123^sev=8^cat=unlikelyTravel^src=203.0.113.7^\
    usrName=kim@fabrikam.example^userId=u-1^title=Atypical travel^msg=Atypical travel^\
    action=Create^outcome=New^url=https://security.microsoft.com/alerts/da637^findingId=da637^\
    tenantId=t1^changeType=updated^eventUid=e1^ocsfClass=2004^ocsfType=200401";

#[test]
fn exact_lines_v2_and_v1() {
    let (lines, r) = run(
        &enc(LeefOptions::default(), None, SplitMode::Auto),
        alert_ocsf(),
        EventKind::Alert,
    );
    assert_eq!(
        lines,
        vec![format!(
            "LEEF:2.0|Microsoft|Entra ID Protection|v1.0|AlertCreated|^|{ALERT_ATTRS}"
        )]
    );
    assert_eq!(r, EncodeReport::one(false, false));
    let v1 = LeefOptions {
        version: LeefVersion::V1,
        ..Default::default()
    };
    let (lines, _) = run(&enc(v1, None, SplitMode::Auto), alert_ocsf(), EventKind::Alert);
    assert_eq!(
        lines,
        vec![format!(
            "LEEF:1.0|Microsoft|Entra ID Protection|v1.0|AlertCreated|{}",
            ALERT_ATTRS.replace('^', "\t")
        )]
    );
    let l = parse_leef(&lines[0]).unwrap();
    assert_eq!(l.get("title"), Some("Atypical travel"));
}

#[test]
fn replacements_are_marked() {
    let mut o = alert_ocsf();
    o["finding_info"]["title"] = "a^b|c\nd=e\\f\tg".into();
    o["metadata"]["product"]["name"] = "P|Q".into();
    let (lines, r) = run(
        &enc(LeefOptions::default(), None, SplitMode::Auto),
        o.clone(),
        EventKind::Alert,
    );
    let l = &lines[0];
    assert!(
        l.starts_with("LEEF:2.0|Microsoft|P Q|v1.0|AlertCreated|^|altered=true^devTime="),
        "{l}"
    );
    assert!(l.contains("^title=a b|c d=e\\f g^"), "{l}");
    assert_eq!(r.altered, 1);
    let p = parse_leef(l).unwrap();
    assert_eq!(p.get("title"), Some("a b|c d=e\\f g"));
    // Tab delimiter in 2.0 is declared as hex; a tab in a value is replaced.
    let tab = LeefOptions {
        delimiter: LeefDelimiter::parse("tab").unwrap(),
        ..Default::default()
    };
    let (lines, _) = run(&enc(tab, None, SplitMode::Auto), o, EventKind::Alert);
    assert!(
        lines[0].contains("|AlertCreated|x09|altered=true\tdevTime="),
        "{}",
        lines[0]
    );
    let p = parse_leef(&lines[0]).unwrap();
    assert_eq!(p.delimiter, b'\t');
    assert_eq!(p.get("title"), Some("a^b|c d=e\\f g"));
}

#[test]
fn formatted_dev_time() {
    let o = LeefOptions {
        dev_time: DevTime::Formatted,
        ..Default::default()
    };
    let (lines, _) = run(&enc(o, None, SplitMode::Auto), alert_ocsf(), EventKind::Alert);
    let p = parse_leef(&lines[0]).unwrap();
    assert_eq!(p.get("devTime"), Some("Nov 27 2024 09:14:05.123 UTC"));
    assert_eq!(p.get("devTimeFormat"), Some(DEV_TIME_FORMAT));
    assert_eq!(format_time(-1), "Dec 31 1969 23:59:59.999 UTC");
}

#[test]
fn truncation_marker_first() {
    let mut o = alert_ocsf();
    o["message"] = "x^".repeat(400).into();
    let (lines, r) = run(
        &enc(LeefOptions::default(), Some(500), SplitMode::Auto),
        o,
        EventKind::Alert,
    );
    let l = &lines[0];
    assert!(l.len() <= 500);
    assert!(l.contains("|^|truncated=true^altered=true^devTime="), "{l}");
    assert_eq!((r.truncated, r.altered), (1, 1));
    let p = parse_leef(l).unwrap();
    assert_eq!(p.get("findingId"), Some("da637"));
    assert!(p.get("msg").unwrap().starts_with("x x x"));
}

#[test]
fn incident_split_and_event_ids() {
    let (lines, r) = run(
        &enc(LeefOptions::default(), None, SplitMode::Always),
        incident_ocsf(),
        EventKind::Incident,
    );
    assert!(r.split);
    let p: Vec<_> = lines.iter().map(|l| parse_leef(l).unwrap()).collect();
    let ids: Vec<_> = p.iter().map(|l| l.event_id.as_str()).collect();
    assert_eq!(
        ids,
        ["IncidentUpdated", "IncidentAlert", "IncidentAlert", "IncidentEvidence"]
    );
    assert_eq!(p[1].get("findingId"), Some("da1"));
    assert_eq!(p[1].get("incidentId"), Some("123"));
    assert_eq!(p[3].get("src"), Some("2001:db8::7"));
    assert_eq!(p[3].get("filePath"), Some("C:\\Users\\kim\\a=b.ps1"));
    assert_eq!(p[3].get("part"), Some("4/4"));
    let (lines, _) = run(
        &enc(LeefOptions::default(), None, SplitMode::Auto),
        incident_ocsf(),
        EventKind::Incident,
    );
    assert_eq!(parse_leef(&lines[0]).unwrap().get("alertIds"), Some("da1,da2"));
}

#[test]
fn sign_in_identity_attributes() {
    let o = serde_json::json!({
        "class_uid": 3002, "activity_id": 1, "type_uid": 300201, "severity_id": 1,
        "time": 1732698845123i64, "type_name": "Authentication: Logon",
        "metadata": {"product": {"name": "Microsoft Entra ID"}, "log_name": "SignInLogs"},
        "user": {"name": "kim@fabrikam.example", "uid": "u-1"},
        "src_endpoint": {"ip": "198.51.100.4", "hostname": "kim-laptop"}, "status": "Failure"
    });
    let (lines, _) = run(
        &enc(LeefOptions::default(), None, SplitMode::Auto),
        o,
        EventKind::SignIn,
    );
    let p = parse_leef(&lines[0]).unwrap();
    assert_eq!(p.event_id, "SignIn");
    assert_eq!(p.product, "Entra ID");
    assert_eq!(p.get("sev"), Some("1"));
    assert_eq!(p.get("cat"), Some("SignInLogs"));
    assert_eq!(p.get("identSrc"), Some("198.51.100.4"));
    assert_eq!(p.get("identHostName"), Some("kim-laptop"));
    assert_eq!(p.get("usrName"), Some("kim@fabrikam.example"));
    assert_eq!(p.get("title"), Some("Authentication: Logon"));
}

#[test]
fn delimiter_option() {
    let d = |s: &str| LeefDelimiter::parse(s).map(|d| d.0);
    assert_eq!(d("^"), Ok(b'^'));
    assert_eq!(d("x5E"), Ok(b'^'));
    assert_eq!(d("0x09"), Ok(b'\t'));
    assert_eq!(d("tab"), Ok(b'\t'));
    for bad in ["a", "=", "|", " ", "xZZ", "^^", "é"] {
        assert!(d(bad).is_err(), "{bad}");
    }
    assert!(serde_json::from_str::<LeefOptions>(r#"{"delimiter": "x7C"}"#).is_err());
    let o: LeefOptions = serde_json::from_str(r#"{"version": "1.0", "delimiter": "~"}"#).unwrap();
    assert_eq!((o.version, o.delimiter.0), (LeefVersion::V1, b'~'));
    assert_eq!(sev(0), None);
}

#[test]
fn sign_in_result_application_client_and_location() {
    let (lines, _) = run(
        &enc(LeefOptions::default(), None, SplitMode::Auto),
        crate::encode::testutil::signin_ocsf(),
        EventKind::SignIn,
    );
    let p = parse_leef(&lines[0]).unwrap();
    assert_eq!(p.get("statusCode"), Some("53003"));
    assert_eq!(p.get("reason"), Some("Blocked by Conditional Access."));
    assert_eq!(p.get("resource"), Some("Windows Azure Service Management API"));
    assert_eq!(p.get("application"), Some("Azure Portal"));
    assert_eq!(p.get("userAgent"), Some("Mozilla/5.0 (X11; Linux x86_64)"));
    assert_eq!(p.get("srcCountry"), Some("BR"));
    assert_eq!(p.get("srcCity"), Some("Sao Paulo"));
    assert_eq!(
        (p.get("srcLat"), p.get("srcLong")),
        (Some("-23.5505"), Some("-46.6333"))
    );
    assert!(
        lines[0].contains("^outcome=Failure^statusCode=53003^reason=Blocked by Conditional Access.^resource="),
        "{}",
        lines[0]
    );
    let (lines, _) = run(
        &enc(LeefOptions::default(), None, SplitMode::Auto),
        crate::encode::testutil::graph_activity_ocsf(),
        EventKind::GraphActivity,
    );
    let p = parse_leef(&lines[0]).unwrap();
    assert_eq!(p.event_id, "GraphActivity");
    assert_eq!(
        p.get("requestUrl"),
        Some("https://graph.microsoft.com/v1.0/users?$top=5")
    );
    assert_eq!(p.get("requestMethod"), Some("GET"));
    assert_eq!(p.get("statusCode"), Some("429"));
}

/// A Graph alert's file evidence and a URL evidence reach the alert's own message.
#[test]
fn an_alert_carries_its_evidence_file_and_url() {
    let page: Value = serde_json::from_str(include_str!("../../tests/data/graph/incidents_page2.json")).unwrap();
    let mut alert = page["value"][0]["alerts"][0].clone();
    alert["evidence"].as_array_mut().unwrap().push(serde_json::json!({
        "@odata.type": "#microsoft.graph.security.urlEvidence",
        "verdict": "malicious",
        "url": "https://payload.example/invoice"
    }));
    let n = crate::normalize::Normalizer::new(Default::default());
    let meta = crate::encode::testutil::meta(EventKind::Alert, "GraphAlert");
    let out = n.normalize(&meta, alert.to_string().as_bytes()).unwrap();
    let (lines, _) = run(
        &enc(LeefOptions::default(), None, SplitMode::Never),
        out.normalized.ocsf().clone(),
        EventKind::Alert,
    );
    let l = parse_leef(&lines[0]).unwrap();
    assert_eq!(l.get("fileName"), Some("invoice_Q4.ps1"), "{}", lines[0]);
    assert_eq!(
        l.get("filePath"),
        Some(r"C:\Users\megan.bowen\Downloads\invoice_Q4.ps1")
    );
    assert_eq!(
        l.get("fileHash"),
        Some("87945818a97e1ea5db8740a527c14de4b3bf03731589573d4b8b2325a1a58892")
    );
    assert_eq!(l.get("requestUrl"), Some("https://payload.example/invoice"));
}
