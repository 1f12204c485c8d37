//! Config loading tests: shapes SIEM engineers write, and the errors they get.

use std::path::Path;

use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_str(text, Path::new("/etc/m365/forwarder.toml"))
}

fn issues(text: &str) -> Vec<ConfigIssue> {
    match load(text) {
        Err(ConfigError::Invalid { issues, .. }) => issues,
        Err(e) => panic!("expected validation issues, got {e}"),
        Ok(_) => panic!("expected an error"),
    }
}

const BASE: &str = r#"
[sources.eh]
type = "replay"
paths = ["/tmp/in"]
[sinks.out]
type = "file"
path = "/tmp/out"
"#;

#[test]
fn defaults_fill_in() {
    let c = load(BASE).unwrap();
    assert_eq!(c.sources[0].name, "eh");
    assert_eq!(c.sinks[0].name, "out");
    assert!(c.sinks[0].common.inputs.is_empty());
    assert_eq!(c.pipeline.batch_max_events, 128);
    assert_eq!(
        c.dead_letter_path(),
        Path::new("/var/lib/m365-forwarder/dead-letter.ndjson")
    );
}

#[test]
fn unknown_top_level_key() {
    let i = issues(&format!("data_dri = \"/x\"\n{BASE}"));
    assert_eq!(i.len(), 1);
    assert!(i[0].message.contains("data_dri"), "{:?}", i);
}

#[test]
fn unknown_component_key_has_full_path() {
    let i = issues(&BASE.replace("paths = [\"/tmp/in\"]", "paths = [\"/tmp/in\"]\nfolow = true"));
    assert_eq!(i[0].path, "sources.eh.folow");
    assert!(i[0].message.contains("folow"));
    let i = issues(&format!("{BASE}[pipeline]\nbatch_max_events = \"many\"\n"));
    assert_eq!(i[0].path, "pipeline.batch_max_events");
}

#[test]
fn unknown_types_and_missing_type() {
    let i = issues(&BASE.replace("type = \"file\"", "type = \"splonk\""));
    assert_eq!(i[0].path, "sinks.out.type");
    assert!(i[0].message.contains("splonk") && i[0].message.contains("file"));
    let i = issues(&BASE.replace("type = \"replay\"\n", ""));
    assert_eq!(i[0].path, "sources.eh.type");
}

#[test]
fn several_problems_are_reported_together() {
    let text = BASE.replace(
        "type = \"file\"",
        "type = \"file\"\ninputs = [\"nope\"]\nfilter.min_severity = \"urgent\"",
    );
    let i = issues(&text);
    let paths: Vec<_> = i.iter().map(|x| x.path.as_str()).collect();
    assert!(paths.contains(&"sinks.out.inputs"), "{paths:?}");
    assert!(paths.contains(&"sinks.out.filter.min_severity"), "{paths:?}");
}

#[test]
fn secrets_from_env_and_file_with_key_path_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("out-path"), "/tmp/from-file\n").unwrap();
    let text = BASE.replace("\"/tmp/out\"", "\"${file:out-path}\"");
    let c = Config::from_str(&text, &dir.path().join("f.toml")).unwrap();
    assert!(format!("{:?}", c).contains("out"));
    let i = issues(&BASE.replace("\"/tmp/out\"", "\"${M365FWD_NOT_SET_ANYWHERE}\""));
    assert_eq!(i[0].path, "sinks.out.path");
    assert!(i[0].message.contains("M365FWD_NOT_SET_ANYWHERE"));
}

#[test]
fn error_display_names_the_file() {
    let e = load(&BASE.replace("type = \"file\"", "type = \"nope\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/etc/m365/forwarder.toml: sinks.out.type:"), "{e}");
}

#[test]
fn literal_secrets_are_found_by_key_name() {
    let v: toml::Value = toml::from_str(
        r#"
[sinks.hec]
token = "abc"
[sinks.k]
sasl_password = "${KAFKA_PW}"
[sources.g]
tenants = [{ client_secret = "literal", client_id = "x" }]
"#,
    )
    .unwrap();
    let found = interpolate::literal_secrets(&v);
    assert_eq!(
        found,
        vec![
            "sinks.hec.token".to_string(),
            "sources.g.tenants[0].client_secret".to_string()
        ]
    );
}

#[test]
fn disk_buffer_keys_are_checked_with_file_and_key_in_the_error() {
    let ok = load(&format!(
        "{BASE}[sinks.out.buffer]\ntype = \"disk\"\nmax_bytes = 2097152\nfsync = \"always\"\n"
    ))
    .unwrap();
    let disk = ok.sinks[0].common.buffer.validate("sinks.out.buffer").unwrap().unwrap();
    assert_eq!(disk.max_bytes, 2 << 20);
    assert_eq!(disk.fsync, crate::buffer::Fsync::Always);

    let i = issues(&format!("{BASE}[sinks.out.buffer]\ntype = \"disk\"\nmax_bytes = 100\n"));
    assert_eq!(i[0].path, "sinks.out.buffer.max_bytes");
    let i = issues(&format!(
        "{BASE}[sinks.out.buffer]\ntype = \"disk\"\nfsync = \"sometimes\"\n"
    ));
    assert_eq!(i[0].path, "sinks.out.buffer.fsync", "{i:?}");
    let i = issues(&format!("{BASE}[sinks.out.buffer]\ntype = \"disk\"\nmax_size = 1\n"));
    assert!(i[0].message.contains("max_size"), "{i:?}");
    let e = load(&format!("{BASE}[sinks.out.buffer]\nmax_bytes = 2097152\n"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("/etc/m365/forwarder.toml: sinks.out.buffer.max_bytes: only for type = \"disk\""),
        "{e}"
    );
}

/// A syntax error names the file, line and column, and does not quote the line: it may hold
/// a secret written in the text.
#[test]
fn a_syntax_error_does_not_quote_the_line() {
    let text = "[sinks.s]\ntype = \"splunk_hec\"\ntoken = \"8f7a-very-secret\n";
    let e = load(text).unwrap_err().to_string();
    assert!(
        e.starts_with("/etc/m365/forwarder.toml: TOML syntax: line 3, column "),
        "{e}"
    );
    assert!(!e.contains("very-secret"), "{e}");
}

#[test]
fn dead_letter_rotation_defaults_and_a_zero_size_is_refused() {
    let c = load(BASE).unwrap();
    let r = c.dead_letter_rotation();
    assert_eq!(r.max_file_bytes, 100 * 1024 * 1024);
    assert_eq!(r.max_files, 0);
    let c = load(&format!("{BASE}[dead_letter]\nmax_file_bytes = 4096\nmax_files = 3\n")).unwrap();
    let r = c.dead_letter_rotation();
    assert_eq!((r.max_file_bytes, r.max_files), (4096, 3));
    let i = issues(&format!("{BASE}[dead_letter]\nmax_file_bytes = 0\n"));
    assert_eq!(i[0].path, "dead_letter.max_file_bytes");
    let i = issues(&format!("{BASE}[dead_letter]\nmax_file = 3\n"));
    assert_eq!(i[0].path, "dead_letter.max_file");
}
