//! Golden-file tests: `convert --to ocsf` of every sample (and of a few multi-file runs where
//! state carries across inputs) must equal the reviewed output in tests/golden/*.ocsf.ndjson.
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the files (then review the diff).
//!
//! The only attribute not compared is `metadata.processed_time` (when the forwarder read the
//! record, i.e. the wall clock): it is checked to lie within the test's run instead, and the
//! golden files do not contain it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{bin, data};

struct Case {
    name: &'static str,
    from: &'static str,
    inputs: &'static [&'static str],
}

const fn case(name: &'static str, from: &'static str, inputs: &'static [&'static str]) -> Case {
    Case { name, from, inputs }
}

/// Inputs are under tests/data, or tests/golden/inputs when they start with `golden:`.
const CASES: &[Case] = &[
    case("graph_incidents_page1", "graph", &["graph/incidents_page1.json"]),
    case("graph_incidents_page2", "graph", &["graph/incidents_page2.json"]),
    case("graph_incidents_update", "graph", &["graph/incidents_update.json"]),
    case("graph_risk_detections", "graph", &["graph/risk_detections.json"]),
    case("graph_risky_users", "graph", &["graph/risky_users.json"]),
    // Defender for Office 365: the analysed message (email, its URLs), a URL and a mailbox.
    case("graph_mdo_phishing", "graph", &["golden:mdo_phishing_incident.json"]),
    case("eventhub_auditlogs", "eventhub", &["eventhub/auditlogs.json"]),
    case(
        "eventhub_defender_alert_info_evidence",
        "eventhub",
        &["eventhub/defender_alert_info_evidence.json"],
    ),
    case(
        "eventhub_defender_identity_logon_events",
        "eventhub",
        &["eventhub/defender_identity_logon_events.json"],
    ),
    case(
        "eventhub_graph_activity_logs",
        "eventhub",
        &["eventhub/graph_activity_logs.json"],
    ),
    case(
        "eventhub_managedidentity_signin",
        "eventhub",
        &["eventhub/managedidentity_signin.json"],
    ),
    case(
        "eventhub_risky_serviceprincipals",
        "eventhub",
        &["eventhub/risky_serviceprincipals.json"],
    ),
    case("eventhub_risky_users", "eventhub", &["eventhub/risky_users.json"]),
    case(
        "eventhub_serviceprincipal_risk_events",
        "eventhub",
        &["eventhub/serviceprincipal_risk_events.json"],
    ),
    case(
        "eventhub_serviceprincipal_signin",
        "eventhub",
        &["eventhub/serviceprincipal_signin.json"],
    ),
    case(
        "eventhub_signin_interactive",
        "eventhub",
        &["eventhub/signin_interactive.json"],
    ),
    case(
        "eventhub_signin_noninteractive",
        "eventhub",
        &["eventhub/signin_noninteractive.json"],
    ),
    case(
        "eventhub_user_risk_events",
        "eventhub",
        &["eventhub/user_risk_events.json"],
    ),
    case(
        "eventhub_malformed_raw_newline_in_string",
        "eventhub",
        &["eventhub/malformed/raw_newline_in_string.json"],
    ),
    case(
        "eventhub_malformed_single_quoted_properties",
        "eventhub",
        &["eventhub/malformed/single_quoted_properties.json"],
    ),
    // Incident 3106 first seen on page 1, then updated and resolved: Create, then Close.
    case(
        "graph_incidents_sequence",
        "graph",
        &[
            "graph/incidents_page1.json",
            "graph/incidents_page2.json",
            "graph/incidents_update.json",
        ],
    ),
    // An Identity Protection alert without account fields after Alex's sign-ins.
    case(
        "restored_user",
        "auto",
        &[
            "eventhub/signin_interactive.json",
            "golden:ipc_alert_without_account.json",
        ],
    ),
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn input(p: &str) -> PathBuf {
    match p.strip_prefix("golden:") {
        Some(rest) => golden_dir().join("inputs").join(rest),
        None => data(p),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Run `convert --to ocsf`; return the events with `metadata.processed_time` checked against
/// the run's wall-clock window and removed.
fn convert(from: &str, inputs: &[PathBuf]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let start = now_ms();
    let out = Command::new(bin())
        .args(["convert", "--from", from, "--to", "ocsf", "--dead-letter"])
        .arg(dir.path().join("q.ndjson"))
        .args(inputs)
        .output()
        .unwrap();
    let end = now_ms();
    assert!(
        out.status.success(),
        "convert {inputs:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let pt = v["metadata"]
                .as_object_mut()
                .expect("metadata")
                .remove("processed_time")
                .and_then(|t| t.as_i64())
                .expect("metadata.processed_time is an integer");
            assert!(
                (start..=end).contains(&pt),
                "processed_time {pt} outside the run [{start}, {end}]"
            );
            v
        })
        .collect()
}

/// Paths where two JSON values differ (at most `limit`).
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>, limit: usize) {
    if out.len() >= limit || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (va, vb) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                if x.contains_key(k) != y.contains_key(k) {
                    out.push(format!("{path}.{k}: expected {va}, got {vb}"));
                } else {
                    diff(&format!("{path}.{k}"), va, vb, out, limit);
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), va, vb, out, limit);
            }
        }
        _ => out.push(format!("{path}: expected {a}, got {b}")),
    }
}

fn check_case(c: &Case) -> Result<(), String> {
    let inputs: Vec<PathBuf> = c.inputs.iter().map(|p| input(p)).collect();
    let actual = convert(c.from, &inputs);
    let file = golden_dir().join(format!("{}.ocsf.ndjson", c.name));
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        let mut text = String::new();
        for v in &actual {
            text.push_str(&serde_json::to_string(v).unwrap());
            text.push('\n');
        }
        std::fs::write(&file, text).unwrap();
        return Ok(());
    }
    let text =
        std::fs::read_to_string(&file).map_err(|e| format!("{}: {e} (UPDATE_GOLDEN=1 creates it)", file.display()))?;
    let expected: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    if expected.len() != actual.len() {
        return Err(format!(
            "{}: {} events expected, {} produced",
            c.name,
            expected.len(),
            actual.len()
        ));
    }
    let mut problems = Vec::new();
    for (i, (e, a)) in expected.iter().zip(&actual).enumerate() {
        diff(&format!("{}[{i}]", c.name), e, a, &mut problems, 20);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

#[test]
fn every_input_kind_matches_its_golden_file() {
    let failures: Vec<String> = CASES.iter().filter_map(|c| check_case(c).err()).collect();
    assert!(failures.is_empty(), "golden mismatch:\n{}", failures.join("\n\n"));
}

#[test]
fn every_sample_has_a_golden_case() {
    // A new sample file must get a golden file too.
    let mut missing = Vec::new();
    for dir in ["graph", "eventhub", "eventhub/malformed"] {
        for e in std::fs::read_dir(data(dir)).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let rel = format!("{dir}/{name}");
            let skipped = name.starts_with("error_") || name == "partial_206_page.json" || name.ends_with(".txt");
            if p.extension().is_some_and(|x| x == "json")
                && !skipped
                && !CASES.iter().any(|c| c.inputs.len() == 1 && c.inputs[0] == rel)
            {
                missing.push(rel);
            }
        }
    }
    assert!(missing.is_empty(), "samples without a golden case: {missing:?}");
}

fn find<'a>(events: &'a [Value], class_uid: u64, title: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["class_uid"] == class_uid && e["finding_info"]["title"] == title)
        .unwrap_or_else(|| panic!("no {class_uid} {title}"))
}

/// Must show: an Identity Protection alert without account fields gets its user from the
/// cache (fed by a sign-in on another stream) and says so; alone it has only the object id.
#[test]
fn ipc_alert_without_account_fields_gets_its_user_from_the_cache() {
    let alert_page = input("golden:ipc_alert_without_account.json");
    let raw: Value = serde_json::from_str(&std::fs::read_to_string(&alert_page).unwrap()).unwrap();
    let account = &raw["value"][0]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["@odata.type"] == "#microsoft.graph.security.userEvidence")
        .unwrap()["userAccount"];
    assert!(account["userPrincipalName"].is_null() && account["displayName"].is_null());
    let oid = account["azureAdUserId"].as_str().unwrap();

    let alone = convert("graph", std::slice::from_ref(&alert_page));
    let a = find(&alone, 2004, "Unfamiliar sign-in properties");
    assert_eq!(a["actor"]["user"]["uid"], oid);
    assert!(a["actor"]["user"].get("name").is_none(), "nothing to restore from: {a}");
    assert!(a["unmapped"].get("user_restored_from").is_none());

    let after_signin = convert("auto", &[data("eventhub/signin_interactive.json"), alert_page]);
    let signin = after_signin
        .iter()
        .find(|e| e["class_uid"] == 3002 && e["user"]["uid"] == oid)
        .expect("the sign-in of the same user");
    let a = find(&after_signin, 2004, "Unfamiliar sign-in properties");
    assert_eq!(a["actor"]["user"]["uid"], oid);
    assert_eq!(a["actor"]["user"]["name"], signin["user"]["name"]);
    assert_eq!(a["actor"]["user"]["name"], "alex.wilber@fabrikam.example");
    assert_eq!(a["actor"]["user"]["full_name"], "Alex Wilber");
    assert_eq!(
        a["unmapped"]["user_restored_from"], "cache",
        "says where the user came from"
    );
    assert!(
        a["observables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "actor.user.name" && o["value"] == "alex.wilber@fabrikam.example"),
        "the restored user is an observable"
    );
}
