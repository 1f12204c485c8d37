//! MITRE ATT&CK helpers: tactic lookup from Microsoft category labels (`InitialAccess`,
//! `Credential access`), technique ids (`T1059.001`) and Defender's `Name (T1059.001)` form,
//! assembled into OCSF `attacks[]` objects.

use serde_json::{Map, Value};

/// Enterprise tactics: (id, name, key with spaces/underscores/dashes removed, lower case).
const TACTICS: &[(&str, &str, &str)] = &[
    ("TA0043", "Reconnaissance", "reconnaissance"),
    ("TA0042", "Resource Development", "resourcedevelopment"),
    ("TA0001", "Initial Access", "initialaccess"),
    ("TA0002", "Execution", "execution"),
    ("TA0003", "Persistence", "persistence"),
    ("TA0004", "Privilege Escalation", "privilegeescalation"),
    ("TA0005", "Defense Evasion", "defenseevasion"),
    ("TA0006", "Credential Access", "credentialaccess"),
    ("TA0007", "Discovery", "discovery"),
    ("TA0008", "Lateral Movement", "lateralmovement"),
    ("TA0009", "Collection", "collection"),
    ("TA0011", "Command and Control", "commandandcontrol"),
    ("TA0010", "Exfiltration", "exfiltration"),
    ("TA0040", "Impact", "impact"),
];

/// OCSF `tactic` object for a Microsoft category label, when it names an ATT&CK tactic.
pub(crate) fn tactic(category: &str) -> Option<Value> {
    let key: String = category
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let (uid, name, _) = TACTICS.iter().find(|(_, _, k)| *k == key)?;
    let mut o = Map::new();
    o.insert("uid".into(), (*uid).into());
    o.insert("name".into(), (*name).into());
    Some(Value::Object(o))
}

/// `"PowerShell (T1059.001)"` → (`Some("PowerShell")`, `"T1059.001"`); a bare id is accepted.
pub(crate) fn split_named_technique(s: &str) -> Option<(Option<&str>, &str)> {
    let s = s.trim();
    if let Some(open) = s.rfind('(') {
        let id = s[open + 1..].trim_end_matches(')').trim();
        let name = s[..open].trim();
        if is_technique_id(id) {
            return Some(((!name.is_empty()).then_some(name), id));
        }
    }
    is_technique_id(s).then_some((None, s))
}

fn is_technique_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 5
        && (b[0] == b'T' || b[0] == b't')
        && b[1..5].iter().all(u8::is_ascii_digit)
        && (b.len() == 5 || (b.len() == 9 && b[5] == b'.' && b[6..].iter().all(u8::is_ascii_digit)))
}

fn named(uid: &str, name: Option<&str>) -> Value {
    let mut o = Map::new();
    o.insert("uid".into(), uid.to_ascii_uppercase().into());
    if let Some(n) = name {
        o.insert("name".into(), n.into());
    }
    Value::Object(o)
}

/// One OCSF `attack` object for a technique id, with the tactic when known. Sub-techniques
/// (`T1059.001`) fill `sub_technique` and the parent `technique`.
pub(crate) fn attack(id: &str, name: Option<&str>, tactic: Option<&Value>) -> Value {
    let mut o = Map::new();
    if let Some((parent, _)) = id.split_once('.') {
        o.insert("technique".into(), named(parent, None));
        o.insert("sub_technique".into(), named(id, name));
    } else {
        o.insert("technique".into(), named(id, name));
    }
    if let Some(t) = tactic {
        o.insert("tactic".into(), t.clone());
    }
    Value::Object(o)
}

/// `attacks[]` from technique texts (ids or `Name (Id)`) and an optional tactic category.
/// With no technique but a known tactic, one tactic-only entry is returned. None in a lean
/// normalization: CEF and LEEF show no ATT&CK attribute.
pub(crate) fn attacks<'x>(techniques: impl IntoIterator<Item = &'x str>, category: Option<&str>) -> Vec<Value> {
    if super::tree::lean() {
        return Vec::new();
    }
    let tac = category.and_then(tactic);
    let mut out: Vec<Value> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for t in techniques {
        if let Some((name, id)) = split_named_technique(t) {
            let up = id.to_ascii_uppercase();
            if !ids.contains(&up) {
                out.push(attack(id, name, tac.as_ref()));
                ids.push(up);
            }
        }
    }
    if out.is_empty() {
        if let Some(t) = tac {
            let mut o = Map::new();
            o.insert("tactic".into(), t);
            out.push(Value::Object(o));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tactics_from_labels() {
        assert_eq!(tactic("InitialAccess").unwrap()["uid"], "TA0001");
        assert_eq!(tactic("Credential access").unwrap()["name"], "Credential Access");
        assert_eq!(tactic("DefenseEvasion").unwrap()["uid"], "TA0005");
        assert!(tactic("SuspiciousActivity").is_none());
    }

    #[test]
    fn technique_forms() {
        assert_eq!(
            split_named_technique("PowerShell (T1059.001)"),
            Some((Some("PowerShell"), "T1059.001"))
        );
        assert_eq!(split_named_technique("T1078"), Some((None, "T1078")));
        assert_eq!(split_named_technique("Brute Force"), None);
    }

    #[test]
    fn attack_objects() {
        let a = attacks(["T1059.001", "T1059.001", "T1027"], Some("Execution"));
        assert_eq!(a.len(), 2);
        assert_eq!(
            a[0],
            json!({
                "technique": {"uid": "T1059"},
                "sub_technique": {"uid": "T1059.001"},
                "tactic": {"uid": "TA0002", "name": "Execution"}
            })
        );
        let only_tactic = attacks([], Some("InitialAccess"));
        assert_eq!(
            only_tactic,
            vec![json!({"tactic": {"uid": "TA0001", "name": "Initial Access"}})]
        );
    }
}
