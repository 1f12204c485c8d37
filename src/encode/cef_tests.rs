//! Tests of the CEF encoder: exact lines, escaping, maximums, budgets, incident splitting.

use super::*;
use crate::encode::parse::parse_cef;
use crate::encode::testutil::{alert_ocsf, event, graph_activity_ocsf, incident_ocsf, signin_ocsf};

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
        let v = crate::encode::fields::View::new(n.root(), &e.meta);
        signature(&crate::encode::fields::flat_of(&v), &e.meta).into_owned()
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

#[test]
fn sign_in_carries_application_client_location_and_result_code() {
    let (lines, _) = run(&enc(None, SplitMode::Auto), signin_ocsf(), EventKind::SignIn);
    assert_eq!(
        lines,
        vec![
            "CEF:0|Microsoft|Entra ID|1.0|signIn:300201|Authentication: Logon|5|rt=1732698845123 \
             cat=SignInLogs act=Logon outcome=Failure suser=kim@fabrikam.example suid=u-1 \
             src=203.0.113.77 sourceServiceName=Azure Portal \
             destinationServiceName=Windows Azure Service Management API \
             requestClientApplication=Mozilla/5.0 (X11; Linux x86_64) reason=Blocked by \
             Conditional Access. msg=Sign-in by kim@fabrikam.example: failure cs2Label=changeType \
             cs2=updated cs3Label=tenantId cs3=t1 cs5Label=eventUid cs5=e3 cs6Label=statusCode \
             cs6=53003 cfp1Label=sourceLatitude cfp1=-23.5505 cfp2Label=sourceLongitude \
             cfp2=-46.6333 cn1Label=ocsfClassUid cn1=3002 cn2Label=ocsfTypeUid cn2=300201"
        ]
    );
    let c = parse_cef(&lines[0]).unwrap();
    assert_eq!(c.custom("statusCode"), Some("53003"));
    assert_eq!(c.custom("sourceLatitude"), Some("-23.5505"));
    // Consumer keys: ArcSight fills them, a producer must not.
    assert_eq!((c.get("slat"), c.get("slong")), (None, None));
}

#[test]
fn graph_activity_carries_the_request() {
    let (lines, _) = run(
        &enc(None, SplitMode::Auto),
        graph_activity_ocsf(),
        EventKind::GraphActivity,
    );
    let c = parse_cef(&lines[0]).unwrap();
    // `=` in the URL is escaped on the wire and comes back whole.
    assert!(
        lines[0].contains(" request=https://graph.microsoft.com/v1.0/users?$top\\=5 "),
        "{}",
        lines[0]
    );
    assert_eq!(c.get("request"), Some("https://graph.microsoft.com/v1.0/users?$top=5"));
    assert_eq!(c.get("requestMethod"), Some("GET"));
    assert_eq!(c.get("requestClientApplication"), Some("python-requests/2.32"));
    assert_eq!(c.custom("statusCode"), Some("429"));
}

#[test]
fn location_and_user_agent_come_from_the_evidence_only_without_an_own_source_ip() {
    // A risk detection: the sign-in's IP, location and client are in its evidence.
    let mut o = alert_ocsf();
    o.as_object_mut().unwrap().remove("src_endpoint");
    o["evidences"] = serde_json::json!([{
        "src_endpoint": {"ip": "203.0.113.45", "location": {"lat": 52.3676, "long": 4.9041, "country": "NL"}},
        "http_request": {"user_agent": "Edge/131"}
    }]);
    let (lines, _) = run(&enc(None, SplitMode::Auto), o.clone(), EventKind::RiskDetection);
    let c = parse_cef(&lines[0]).unwrap();
    assert_eq!(c.get("src"), Some("203.0.113.45"));
    assert_eq!(
        (c.custom("sourceLatitude"), c.custom("sourceLongitude")),
        (Some("52.3676"), Some("4.9041"))
    );
    assert_eq!(c.get("requestClientApplication"), Some("Edge/131"));
    // With an IP of its own, an evidence's location (of another address) is not the source's.
    o["src_endpoint"] = serde_json::json!({"ip": "198.51.100.9"});
    let (lines, _) = run(&enc(None, SplitMode::Auto), o, EventKind::RiskDetection);
    let c = parse_cef(&lines[0]).unwrap();
    assert_eq!(c.get("src"), Some("198.51.100.9"));
    assert_eq!((c.custom("sourceLatitude"), c.custom("sourceLongitude")), (None, None));
    assert_eq!(c.get("requestClientApplication"), None);
}

#[test]
fn coordinates_go_in_pairs_and_incidents_keep_cs6_for_their_alerts() {
    // A latitude without its longitude is no position: neither is written.
    let mut o = signin_ocsf();
    o["src_endpoint"]["location"].as_object_mut().unwrap().remove("long");
    let (lines, _) = run(&enc(None, SplitMode::Auto), o, EventKind::SignIn);
    assert!(!lines[0].contains("cfp1"), "{}", lines[0]);
    // An incident with a result code still lists its alerts in its one `cs6`.
    let mut o = incident_ocsf();
    o["status_code"] = "200".into();
    let (lines, _) = run(&enc(None, SplitMode::Never), o, EventKind::Incident);
    assert_eq!(lines[0].matches(" cs6=").count(), 1, "{}", lines[0]);
    assert_eq!(parse_cef(&lines[0]).unwrap().custom("alertIds"), Some("da1,da2"));
}

/// A Graph alert as the normalizer makes it from the sample (user evidence first, the IP
/// evidence after, no source of its own): the line carries the IP evidence's address.
#[test]
fn an_alert_takes_its_source_ip_from_the_evidence_that_has_one() {
    let page: Value = serde_json::from_str(include_str!("../../tests/data/graph/incidents_page1.json")).unwrap();
    let alert = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["alerts"].as_array().unwrap().iter())
        .find(|a| a["id"].as_str().unwrap().starts_with("ad113b42"))
        .unwrap();
    let n = crate::normalize::Normalizer::new(Default::default());
    let meta = crate::encode::testutil::meta(EventKind::Alert, "GraphAlert");
    let out = n.normalize(&meta, alert.to_string().as_bytes()).unwrap();
    let ocsf = out.normalized.ocsf().clone();
    assert!(ocsf["src_endpoint"]["ip"].is_null(), "no source IP of its own");
    let (lines, _) = run(&enc(None, SplitMode::Never), ocsf, EventKind::Alert);
    let cef = parse_cef(&lines[0]).unwrap();
    assert_eq!(cef.get("src"), Some("203.0.113.77"), "{}", lines[0]);
}

/// The CEF lines (lean normalization or not, line) of the sample's Defender evidence row
/// (AlertEvidence) of `entity_type`, changed by `edit`, from the full normalization and the
/// lean one.
fn evidence_row_lines(entity_type: &str, edit: impl Fn(&mut Value)) -> Vec<(bool, String)> {
    let body: Value = serde_json::from_str(include_str!(
        "../../tests/data/eventhub/defender_alert_info_evidence.json"
    ))
    .unwrap();
    let mut row = body["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["properties"]["EntityType"] == entity_type)
        .unwrap()
        .clone();
    edit(&mut row);
    let raw = row.to_string();
    let meta = crate::encode::testutil::meta(EventKind::Alert, "AdvancedHunting-AlertEvidence");
    [false, true]
        .into_iter()
        .map(|lean| {
            let n = crate::normalize::Normalizer::new(crate::normalize::NormalizeOptions {
                lean,
                ..Default::default()
            });
            let out = n.normalize(&meta, raw.as_bytes()).unwrap();
            let mut ev = event(EventKind::Alert, "AdvancedHunting-AlertEvidence", &raw, None);
            ev.normalized = Some(std::sync::Arc::new(out.normalized));
            let mut buf = Vec::new();
            enc(None, SplitMode::Never).encode(&ev, &mut buf).unwrap();
            (lean, String::from_utf8(buf).unwrap())
        })
        .collect()
}

/// A Defender evidence row (AlertEvidence) with its device's local address and a remote
/// one: the line carries them as `src` and `dst`, from the full normalization and from the
/// lean one alike.
#[test]
fn a_defender_evidence_row_carries_its_local_and_remote_addresses() {
    for (lean, line) in evidence_row_lines("Machine", |row| row["properties"]["RemoteIP"] = "198.51.100.9".into()) {
        let cef = parse_cef(&line).unwrap();
        assert_eq!(cef.get("src"), Some("192.0.2.54"), "lean {lean}: {line}");
        assert_eq!(cef.get("dst"), Some("198.51.100.9"), "lean {lean}: {line}");
    }
}

/// The file and URL of an alert's evidence reach the line of the alert itself (not only
/// the split parts of an incident): a Defender process evidence row, lean and full alike,
/// and a Graph alert whose file evidence comes after a process evidence.
#[test]
fn an_alert_carries_its_evidence_file_and_url() {
    let edit = |row: &mut Value| row["properties"]["RemoteUrl"] = "https://payload.example/x.ps1".into();
    for (lean, line) in evidence_row_lines("Process", edit) {
        let cef = parse_cef(&line).unwrap();
        assert_eq!(cef.get("fname"), Some("powershell.exe"), "lean {lean}: {line}");
        assert_eq!(
            cef.get("filePath"),
            Some(r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"),
            "lean {lean}: {line}"
        );
        assert_eq!(
            cef.get("fileHash"),
            Some("2f8104fba08f6d3682da2bd8e369316bf60b7d9b3263896cf7460650a9bcc94f"),
            "SHA-256 rather than SHA-1; lean {lean}: {line}"
        );
        assert_eq!(
            cef.get("request"),
            Some("https://payload.example/x.ps1"),
            "lean {lean}: {line}"
        );
    }

    let page: Value = serde_json::from_str(include_str!("../../tests/data/graph/incidents_page2.json")).unwrap();
    let line = cef_of_alert(&page["value"][0]["alerts"][0]);
    let cef = parse_cef(&line).unwrap();
    assert_eq!(cef.get("fname"), Some("invoice_Q4.ps1"), "the file evidence: {line}");
    assert_eq!(
        cef.get("filePath"),
        Some(r"C:\Users\megan.bowen\Downloads\invoice_Q4.ps1")
    );
    assert_eq!(
        cef.get("fileHash"),
        Some("87945818a97e1ea5db8740a527c14de4b3bf03731589573d4b8b2325a1a58892")
    );
}

/// A Defender for Office 365 alert: the recipient is the user, the sender's address the
/// source, and the message's first URL the request when no URL evidence names one.
#[test]
fn a_phishing_alert_carries_the_recipient_sender_ip_and_first_url() {
    let page: Value =
        serde_json::from_str(include_str!("../../tests/golden/inputs/mdo_phishing_incident.json")).unwrap();
    let mut alert = page["value"][0]["alerts"][0].clone();
    // Without the URL evidence: the URL comes from the message.
    alert["evidence"].as_array_mut().unwrap().remove(1);
    let line = cef_of_alert(&alert);
    let cef = parse_cef(&line).unwrap();
    assert_eq!(cef.get("suser"), Some("megan.bowen@fabrikam.example"), "{line}");
    assert_eq!(cef.get("src"), Some("203.0.113.61"), "{line}");
    assert_eq!(
        cef.get("request"),
        Some("https://contoso-pay.example/invoices/44817/login"),
        "{line}"
    );
}

/// One Graph alert normalized as the Graph source would, then encoded as one CEF line.
fn cef_of_alert(alert: &Value) -> String {
    let meta = crate::encode::testutil::meta(EventKind::Alert, "GraphAlert");
    let n = crate::normalize::Normalizer::new(Default::default());
    let out = n.normalize(&meta, alert.to_string().as_bytes()).unwrap();
    let (mut lines, _) = run(
        &enc(None, SplitMode::Never),
        out.normalized.ocsf().clone(),
        EventKind::Alert,
    );
    lines.swap_remove(0)
}
