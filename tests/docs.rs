//! Operator docs stay true to the code: every metric the process registers is documented in
//! docs/metrics.md, the Grafana dashboard queries only series that exist (with labels they
//! carry), and relative links in the docs point at files that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use m365_forwarder::telemetry::Metrics;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every registered family as exposed on /metrics: name (with prefix) → type.
fn registered() -> BTreeMap<String, String> {
    let text = Metrics::new().encode();
    let families: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, ty) = l.split_once(' ')?;
            Some((name.to_string(), ty.to_string()))
        })
        .collect();
    assert!(families.len() >= 40, "the registry lists its families: {families:?}");
    families
}

/// The series names a query may use for a family.
fn series(name: &str, ty: &str) -> Vec<String> {
    match ty {
        "counter" => vec![format!("{name}_total")],
        "histogram" => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|s| format!("{name}{s}"))
            .collect(),
        _ => vec![name.to_string()],
    }
}

/// The name a reader looks for: what the query language sees.
fn documented_name(name: &str, ty: &str) -> String {
    match ty {
        "counter" => format!("{name}_total"),
        _ => name.to_string(),
    }
}

/// Also read the names straight out of the sources in src/telemetry/metrics/, so a family
/// registered there but not reached by `Metrics::new()` (another registry) would be caught too.
fn names_in_source() -> BTreeSet<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("src/telemetry/metrics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    let src: String = files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    // Every family is a `("name", "help", family)` tuple in a `register_families!` call.
    let code: String = src
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = BTreeSet::new();
    for call in code.split("register_families!(").skip(1) {
        let call = &call[..call.find(");").unwrap()];
        for tuple in call.split('(').skip(1) {
            if let Some(q) = tuple.trim_start().strip_prefix('"') {
                names.insert(format!("m365fwd_{}", &q[..q.find('"').unwrap()]));
            }
        }
    }
    names
}

#[test]
fn every_registered_metric_is_documented() {
    let doc = read("docs/metrics.md");
    let reg = registered();
    let mut missing = Vec::new();
    for (name, ty) in &reg {
        let want = documented_name(name, ty);
        if !doc.contains(&format!("`{want}`")) {
            missing.push(want);
        }
    }
    assert!(missing.is_empty(), "docs/metrics.md does not describe: {missing:#?}");
    let from_source = names_in_source();
    let exposed: BTreeSet<String> = reg.keys().cloned().collect();
    let unexposed: Vec<_> = from_source.difference(&exposed).collect();
    assert!(
        unexposed.is_empty(),
        "named in src/telemetry/metrics/ but not in the registry: {unexposed:?}"
    );
    // And the doc names nothing that does not exist.
    let known: BTreeSet<String> = reg
        .iter()
        .flat_map(|(n, t)| series(n, t))
        .chain(reg.keys().cloned())
        .collect();
    for word in doc.split('`').skip(1).step_by(2) {
        if word.len() > "m365fwd_".len() && word.starts_with("m365fwd_") && !word.contains(['{', ' ', '(']) {
            assert!(
                known.contains(word),
                "docs/metrics.md names `{word}`, which is not registered"
            );
        }
    }
}

/// Label names each family carries, from a registry with one sample of every family.
fn labels_in_use() -> BTreeSet<String> {
    let m = Metrics::new();
    m.component_in("s", "source", 1, 1);
    m.component_out("k", "sink", 1, 1);
    m.error("k", "x");
    m.quarantine("decode", "x", 1);
    let text = m.encode();
    let mut labels: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('{').map(|(_, rest)| rest))
        .flat_map(|rest| {
            rest.split(',')
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.trim().to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    // Label structs of the other families (src/telemetry/metrics/labels.rs).
    for l in [
        "source",
        "category",
        "sink",
        "code",
        "tenant",
        "value",
        "le",
        "partition",
    ] {
        labels.insert(l.to_string());
    }
    // Added by Prometheus to every scraped series.
    labels.insert("job".into());
    labels.insert("instance".into());
    labels
}

fn panels(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in v["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner.iter());
        }
    }
    out
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("m365fwd_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// Label names in `{a="x", b=~"y"}` matchers and `by (a, b)` clauses.
fn label_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in expr.split('{').skip(1) {
        let inner = &part[..part.find('}').unwrap_or(part.len())];
        for m in inner.split(',') {
            if let Some(p) = m.find(['=', '!']) {
                out.push(m[..p].trim().to_string());
            }
        }
    }
    for part in expr.split("by (").skip(1) {
        let inner = &part[..part.find(')').unwrap_or(part.len())];
        out.extend(inner.split(',').map(|s| s.trim().to_string()));
    }
    out.retain(|s| !s.is_empty());
    out
}

#[test]
fn grafana_dashboard_queries_only_existing_metrics() {
    let dash: Value =
        serde_json::from_str(&read("docs/grafana/m365-forwarder-dashboard.json")).expect("dashboard is JSON");
    assert_eq!(dash["uid"], "m365-forwarder");
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    let reg = registered();
    let valid: BTreeSet<String> = reg.iter().flat_map(|(n, t)| series(n, t)).collect();
    let labels = labels_in_use();
    let mut used = BTreeSet::new();
    let mut titles = Vec::new();
    let mut ids = BTreeSet::new();
    for p in panels(&dash) {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel ids are unique");
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap().to_string();
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: target without expr"));
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: `{expr}` queries no m365fwd_ metric");
            for n in names {
                assert!(valid.contains(&n), "{title}: `{n}` does not exist (expr `{expr}`)");
                used.insert(n);
            }
            for l in label_names(expr) {
                assert!(
                    labels.contains(&l),
                    "{title}: label `{l}` is not on any metric (expr `{expr}`)"
                );
            }
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{title}: `{expr}`"
            );
        }
        titles.push(title.to_lowercase());
    }
    for want in [
        "events in",
        "delivered",
        "errors",
        "dead-letter",
        "lag",
        "sink latency",
        "buffer fill",
        "graph throttling",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "a panel for {want}: {titles:?}"
        );
    }
    assert!(
        used.len() >= 30,
        "the dashboard covers most metrics ({} used)",
        used.len()
    );
}

#[test]
fn relative_links_in_the_docs_resolve() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.push(repo().join("README.md"));
    assert!(files.len() >= 8, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for part in text.split("](").skip(1) {
            let target = &part[..part.find(')').unwrap_or(0)];
            let target = target.split('#').next().unwrap();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let base = f.parent().unwrap_or(Path::new("."));
            assert!(
                base.join(target).exists(),
                "{}: link to {target} is broken",
                f.display()
            );
        }
    }
}
