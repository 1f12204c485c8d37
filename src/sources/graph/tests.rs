//! Configuration checks of the Graph sources: clouds, hosts, credentials, limits, filters.

use std::path::Path;

use crate::config::{Config, ConfigError};

fn load(source: &str) -> Result<Config, String> {
    let text = format!("{source}\n[sinks.out]\ntype = \"blackhole\"\n");
    Config::from_str(&text, Path::new("graph.toml")).map_err(|e| match e {
        ConfigError::Invalid { issues, .. } => issues
            .iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    })
}

const TENANT: &str = r#"
[[sources.g.tenants]]
tenant_id = "d13c513a-42f8-4da1-97b1-165f0971b7c4"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret = "s3cret"
"#;

fn cert(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/graph/auth")
        .join(p)
        .display()
        .to_string()
}

#[test]
fn minimal_incidents_source_uses_the_documented_defaults() {
    let c = load(&format!("[sources.g]\ntype = \"graph_incidents\"\n{TENANT}")).unwrap();
    assert_eq!(c.sources.len(), 1);
    let dbg = format!("{:?}", c.sources[0].config);
    for part in [
        "graph_host: \"https://graph.microsoft.com\"",
        "login_host: \"https://login.microsoftonline.com\"",
        "api_version: \"beta\"",
        "overlap_secs: 300",
        "initial_lookback_days: 7",
        "requests_per_minute: 150",
        "page_size: Some(50)",
    ] {
        assert!(dbg.contains(part), "{part} in {dbg}");
    }
    assert!(!dbg.contains("s3cret"), "the secret is never printed");
}

#[test]
fn china_is_rejected_naming_the_key() {
    let err = load(&format!(
        "[sources.g]\ntype = \"graph_incidents\"\ncloud = \"china\"\n{TENANT}"
    ))
    .unwrap_err();
    assert!(err.starts_with("sources.g.cloud: "), "{err}");
    assert!(err.contains("not available in the China"), "{err}");
}

#[test]
fn clouds_map_to_their_hosts() {
    for (cloud, graph, login) in [
        (
            "usgov",
            "https://graph.microsoft.us",
            "https://login.microsoftonline.us",
        ),
        (
            "dod",
            "https://dod-graph.microsoft.us",
            "https://login.microsoftonline.us",
        ),
        (
            "global",
            "https://graph.microsoft.com",
            "https://login.microsoftonline.com",
        ),
    ] {
        let c = load(&format!(
            "[sources.g]\ntype = \"graph_risky_users\"\ncloud = \"{cloud}\"\n{TENANT}"
        ))
        .unwrap();
        let dbg = format!("{:?}", c.sources[0].config);
        assert!(dbg.contains(graph) && dbg.contains(login), "{cloud}: {dbg}");
    }
}

#[test]
fn custom_cloud_needs_https_hosts() {
    let base = "[sources.g]\ntype = \"graph_incidents\"\ncloud = \"custom\"\n";
    let err = load(&format!("{base}graph_host = \"https://graph.example\"\n{TENANT}")).unwrap_err();
    assert!(err.contains("sources.g.login_host: required"), "{err}");
    let err = load(&format!(
        "{base}login_host = \"http://127.0.0.1:1\"\ngraph_host = \"https://graph.example\"\n{TENANT}"
    ))
    .unwrap_err();
    assert!(err.contains("must be an https:// URL"), "{err}");
    let ok = load(&format!(
        "{base}login_host = \"https://login.example/\"\ngraph_host = \"https://127.0.0.1:8443\"\n{TENANT}"
    ))
    .unwrap();
    assert!(format!("{:?}", ok.sources[0].config).contains("login_host: \"https://login.example\""));
    let err = load(&format!(
        "[sources.g]\ntype = \"graph_incidents\"\ngraph_host = \"https://x.example\"\n{TENANT}"
    ))
    .unwrap_err();
    assert!(err.contains("only allowed with cloud = \"custom\""), "{err}");
}

#[test]
fn credentials_are_checked_per_method() {
    let err =
        load("[sources.g]\ntype = \"graph_incidents\"\n[[sources.g.tenants]]\ntenant_id = \"t1\"\nclient_id = \"c\"\n")
            .unwrap_err();
    assert!(err.contains("sources.g.tenants[0].client_secret: required"), "{err}");
    let err = load(&format!(
        "[sources.g]\ntype = \"graph_incidents\"\n[[sources.g.tenants]]\ntenant_id = \"t1\"\nclient_id = \"c\"\nauth = \"certificate\"\ncertificate_path = \"{}\"\nprivate_key_path = \"{}\"\n",
        cert("app_cert.pem"),
        cert("other_key.pem")
    ))
    .unwrap_err();
    assert!(err.contains("does not match"), "{err}");
    load(&format!(
        "[sources.g]\ntype = \"graph_incidents\"\n[[sources.g.tenants]]\ntenant_id = \"t1\"\nclient_id = \"c\"\nauth = \"certificate\"\ncertificate_path = \"{}\"\nprivate_key_path = \"{}\"\n",
        cert("app_cert.pem"),
        cert("app_key.pem")
    ))
    .unwrap();
    load("[sources.g]\ntype = \"graph_incidents\"\n[[sources.g.tenants]]\ntenant_id = \"t1\"\nauth = \"managed_identity\"\n")
        .unwrap();
    let err = load(&format!("[sources.g]\ntype = \"graph_incidents\"\n{TENANT}{TENANT}")).unwrap_err();
    assert!(err.contains("listed twice"), "{err}");
}

#[test]
fn limits_and_filters_are_validated() {
    let base = "[sources.g]\ntype = \"graph_incidents\"\n";
    let err = load(&format!("{base}page_size = 5000\n{TENANT}")).unwrap_err();
    assert!(err.contains("sources.g.page_size"), "{err}");
    let err = load(&format!("{base}api_version = \"v2\"\n{TENANT}")).unwrap_err();
    assert!(err.contains("sources.g.api_version"), "{err}");
    let err = load(&format!("{base}start_time = \"last week\"\n{TENANT}")).unwrap_err();
    assert!(err.contains("sources.g.start_time"), "{err}");
    let err = load(&format!("{base}filters.include_severity = [\"high\"]\n{TENANT}")).unwrap_err();
    assert!(err.contains("unknown field `include_severity`"), "{err}");
    let err = load(&format!(
        "[sources.g]\ntype = \"graph_risky_users\"\nfilters.exclude_service_sources = [\"x\"]\n{TENANT}"
    ))
    .unwrap_err();
    assert!(err.contains("sources.g.filters: risky users have no service"), "{err}");
}

#[test]
fn the_deep_rescan_fits_the_overlap_and_the_retention() {
    let src = |extra: &str| load(&format!("[sources.g]\ntype = \"graph_incidents\"\n{extra}\n{TENANT}"));
    let dbg = |extra: &str| format!("{:?}", src(extra).unwrap().sources[0].config);
    assert!(dbg("").contains("rescan: Some(Rescan { interval: 21600s, lookback_secs: 86400 })"));
    // An overlap of three days already reaches further: no re-scan, no error.
    assert!(dbg("overlap_secs = 259200").contains("rescan: None"));
    // A one-day retention: the default lookback shrinks to half of it.
    assert!(dbg("state_retention_days = 1").contains("lookback_secs: 43200"));
    assert!(dbg("rescan_interval_secs = 0").contains("rescan: None"));
    for (extra, key) in [
        ("rescan_lookback_secs = 300", "sources.g.rescan_lookback_secs"),
        ("rescan_lookback_secs = 2000000", "sources.g.rescan_lookback_secs"),
    ] {
        let err = src(extra).unwrap_err();
        assert!(err.starts_with(key), "{extra}: {err}");
    }
}
