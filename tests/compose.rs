//! The compose stack and the Dockerfile, checked the way a user would find out, without
//! Docker (no daemon or `docker compose` plugin on the development machines): services,
//! pinned images, profiles, mounted files present in the repo, the forwarder configs passing
//! `m365-forwarder validate` with the environment compose gives them, no secret literals,
//! ports, health checks, start order, a non-root read-only forwarder, and the compose-spec
//! JSON Schema shipped in the docker-compose 1.29.2 PyPI package.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn compose() -> Value {
    let mut y: serde_norway::Value =
        serde_norway::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML");
    y.apply_merge().expect("YAML merge keys resolve");
    serde_json::to_value(y).unwrap()
}

fn services(c: &Value) -> &serde_json::Map<String, Value> {
    c["services"].as_object().expect("services")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

const FORWARDERS: [&str; 2] = ["forwarder", "forwarder-live"];

/// `KEY=VALUE` lines of an env file (comments after values removed).
fn env_file(rel: &str) -> BTreeMap<String, String> {
    read(rel)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.split(" #").next().unwrap_or("").trim();
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// Compose interpolation of one value: `${VAR}`, `${VAR:?msg}`, `${VAR:-default}`, `$$`.
fn interpolate(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(a) = after.strip_prefix('{') {
            let end = a.find('}').ok_or(format!("unclosed ${{ in {s}"))?;
            let expr = &a[..end];
            let (name, op) = match expr.find([':', '-', '?']) {
                Some(p) => (&expr[..p], &expr[p..]),
                None => (expr, ""),
            };
            let val = vars.get(name).filter(|v| !v.is_empty());
            let v = match (val, op) {
                (Some(v), _) => v.clone(),
                (None, o) if o.starts_with(":-") || o.starts_with('-') => o.trim_start_matches(':')[1..].to_string(),
                (None, o) if o.starts_with(":?") || o.starts_with('?') => {
                    return Err(format!("{name} is required: {o}"))
                }
                (None, _) => String::new(),
            };
            out.push_str(&v);
            rest = &a[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The variables a user has after `cp .env.example .env`.
fn dot_env() -> BTreeMap<String, String> {
    env_file(".env.example")
}

#[test]
fn services_images_and_profiles() {
    let c = compose();
    let s = services(&c);
    let names: BTreeSet<&str> = s.keys().map(String::as_str).collect();
    for want in [
        "forwarder",
        "forwarder-live",
        "graph-emulator",
        "kafka",
        "splunk",
        "syslog-ng",
    ] {
        assert!(names.contains(want), "service {want} missing: {names:?}");
    }
    for (name, svc) in s {
        let image = svc["image"].as_str().unwrap_or_else(|| panic!("{name}: no image"));
        let (repo_name, tag) = image
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{name}: `{image}` has no tag"));
        assert!(
            !tag.is_empty() && tag != "latest",
            "{name}: `{image}` needs an explicit tag"
        );
        if svc.get("build").is_none() {
            // A published image: a version tag with digits, never a floating one.
            assert!(
                tag.chars().any(|ch| ch.is_ascii_digit()),
                "{name}: `{image}` is not a version tag"
            );
            assert!(repo_name.contains('/'), "{name}: `{image}` names its publisher");
        }
        let profiles = strings(&svc["profiles"]);
        assert!(
            !profiles.is_empty(),
            "{name}: every service belongs to demo and/or live"
        );
        assert!(
            profiles.iter().all(|p| p == "demo" || p == "live"),
            "{name}: {profiles:?}"
        );
    }
    let p = |n: &str| strings(&s[n]["profiles"]);
    assert_eq!(p("forwarder"), ["demo"]);
    assert_eq!(
        p("graph-emulator"),
        ["demo"],
        "the emulator never runs next to the live forwarder"
    );
    assert_eq!(p("forwarder-live"), ["live"]);
    for r in ["kafka", "splunk", "syslog-ng"] {
        assert_eq!(p(r), ["demo", "live"], "{r} in both profiles");
    }
    assert!(s["kafka"]["image"].as_str().unwrap().starts_with("apache/kafka:3.9."));
    assert!(s["splunk"]["image"].as_str().unwrap().starts_with("splunk/splunk:9."));
    assert!(s["syslog-ng"]["image"]
        .as_str()
        .unwrap()
        .starts_with("balabit/syslog-ng:4."));
    // KRaft, one node: broker and controller in one process, no ZooKeeper.
    let k = &s["kafka"]["environment"];
    assert_eq!(k["KAFKA_PROCESS_ROLES"], "broker,controller");
    assert!(k.get("KAFKA_ZOOKEEPER_CONNECT").is_none());
    assert_eq!(k["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"], 1);
}

#[test]
fn build_targets_exist_in_the_dockerfile() {
    let docker = read("Dockerfile");
    let stages: BTreeSet<String> = docker
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .filter_map(|l| l.split(" AS ").nth(1).map(|t| t.trim().to_string()))
        .collect();
    let c = compose();
    for (name, svc) in services(&c) {
        if let Some(b) = svc.get("build") {
            assert_eq!(b["context"], ".", "{name}");
            let target = b["target"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: build without target"));
            assert!(stages.contains(target), "{name}: target {target} not in {stages:?}");
        }
    }
}

#[test]
fn dockerfile_is_multi_stage_non_root_read_only_friendly_with_a_healthcheck() {
    let docker = read("Dockerfile");
    let froms: Vec<&str> = docker.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    let last = docker.rsplit("\nFROM ").next().unwrap();
    assert!(last.starts_with("gcr.io/distroless/"), "slim runtime: {last}");
    assert!(
        last.contains(" AS runtime"),
        "the runtime stage is the default (last) target"
    );
    assert!(last.contains("USER 65532:65532"), "non-root");
    assert!(
        last.contains("VOLUME [\"/var/lib/m365-forwarder\"]"),
        "state on a volume"
    );
    assert!(
        last.contains("--chown=65532:65532") && last.contains("/var/lib/m365-forwarder"),
        "the state directory belongs to the runtime user, so a fresh volume is writable"
    );
    let hc = last
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .take(2)
        .collect::<String>();
    assert!(hc.contains("m365-forwarder\", \"healthcheck\""), "{hc}");
    // Every COPY source of the build context exists.
    for line in docker
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
    {
        let parts: Vec<&str> = line.split_whitespace().filter(|p| !p.starts_with("--")).collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(repo().join(src).exists(), "Dockerfile copies {src}, missing");
        }
    }
}

/// Bind mounts (`./path:/target[:ro]`) of a service: (repo path, container path).
fn binds(svc: &Value) -> Vec<(PathBuf, String)> {
    strings(&svc["volumes"])
        .into_iter()
        .filter(|v| v.starts_with("./"))
        .map(|v| {
            let mut it = v.split(':');
            let src = it.next().unwrap();
            let dst = it.next().unwrap_or_else(|| panic!("{v}: no target")).to_string();
            (repo().join(src.trim_start_matches("./")), dst)
        })
        .collect()
}

#[test]
fn every_mounted_file_exists_and_configs_are_read_only() {
    let c = compose();
    for (name, svc) in services(&c) {
        for v in strings(&svc["volumes"]) {
            if v.starts_with("./") {
                assert!(v.ends_with(":ro"), "{name}: bind mount {v} should be read-only");
            } else {
                let vol = v.split(':').next().unwrap();
                assert!(
                    c["volumes"].get(vol).is_some(),
                    "{name}: named volume {vol} is declared"
                );
            }
        }
        for (src, dst) in binds(svc) {
            assert!(
                src.exists(),
                "{name}: {} (mounted at {dst}) is not in the repo",
                src.display()
            );
        }
    }
    // Splunk: the defaults turn HEC on and the post task turns indexer acknowledgment on.
    let d: serde_norway::Value = serde_norway::from_str(&read("deploy/compose/splunk/default.yml")).unwrap();
    let d = serde_json::to_value(d).unwrap();
    assert_eq!(d["splunk"]["hec"]["enable"], true);
    assert_eq!(d["splunk"]["hec"]["port"], 8088);
    assert!(strings(&d["ansible_post_tasks"]).contains(&"/tmp/defaults/hec-ack.yml".to_string()));
    let ack = read("deploy/compose/splunk/hec-ack.yml");
    let _: serde_norway::Value = serde_norway::from_str(&ack).unwrap();
    assert!(ack.contains("useACK: \"1\"") && ack.contains("lookup('env', 'SPLUNK_PASSWORD')"));
    let splunk = &services(&c)["splunk"];
    assert!(binds(splunk).iter().any(|(_, dst)| dst == "/tmp/defaults/default.yml"));
    assert!(binds(splunk).iter().any(|(_, dst)| dst == "/tmp/defaults/hec-ack.yml"));
    // syslog-ng listens where the forwarders send, and writes to its volume.
    let conf = read("deploy/compose/syslog-ng/syslog-ng.conf");
    assert!(conf.starts_with("@version: 4."));
    for port in ["port(1514)", "port(1515)", "/var/log/siem/"] {
        assert!(conf.contains(port), "syslog-ng.conf: {port}");
    }
    assert!(strings(&services(&c)["syslog-ng"]["volumes"]).contains(&"siem-logs:/var/log/siem".to_string()));
}

/// The environment compose gives a forwarder service: its `environment` (interpolated with
/// `.env`) over its `env_file`s (from their `.example`, empty secrets filled in).
fn forwarder_env(svc: &Value) -> BTreeMap<String, String> {
    let dot = dot_env();
    let mut env = BTreeMap::new();
    if let Some(files) = svc["env_file"].as_array() {
        for f in files {
            let path = f["path"].as_str().or(f.as_str()).unwrap();
            for (k, v) in env_file(&format!("{path}.example")) {
                let v = if v.is_empty() {
                    format!("placeholder-{}", k.to_lowercase())
                } else {
                    v
                };
                env.insert(k, v);
            }
        }
    }
    for (k, v) in svc["environment"].as_object().expect("environment map") {
        let raw = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        env.insert(
            k.clone(),
            interpolate(&raw, &dot).unwrap_or_else(|e| panic!("{k}: {e}")),
        );
    }
    env
}

#[test]
fn forwarder_configs_pass_validate_with_the_compose_environment() {
    let c = compose();
    let dir = tempfile::tempdir().unwrap();
    for name in FORWARDERS {
        let svc = &services(&c)[name];
        let cmd = strings(&svc["command"]);
        assert_eq!(cmd[0], "run", "{name}: {cmd:?}");
        let target = &cmd[cmd.iter().position(|a| a == "-c").expect("-c") + 1];
        let binds = binds(svc);
        let (config, _) = binds
            .iter()
            .find(|(_, dst)| dst == target)
            .unwrap_or_else(|| panic!("{name}: {target} is not mounted"));
        // Container paths of the mounted files → their repo files; data_dir → a temp dir.
        let mut text = std::fs::read_to_string(config).unwrap();
        for (src, dst) in &binds {
            text = text.replace(dst.as_str(), &src.display().to_string());
        }
        assert!(
            text.contains("data_dir = \"/var/lib/m365-forwarder\""),
            "{name}: state on the volume"
        );
        let state = strings(&svc["volumes"])
            .into_iter()
            .find(|v| v.ends_with(":/var/lib/m365-forwarder"));
        assert!(state.is_some(), "{name}: a named volume holds /var/lib/m365-forwarder");
        text = text.replace("/var/lib/m365-forwarder", &dir.path().join(name).display().to_string());
        let tmp = dir.path().join(format!("{name}.toml"));
        std::fs::write(&tmp, &text).unwrap();
        let env = forwarder_env(svc);
        let out = Command::new(env!("CARGO_BIN_EXE_m365-forwarder"))
            .args(["validate", "-c"])
            .arg(&tmp)
            .env_clear()
            .envs(&env)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {} fails validate with {env:?}:\n{}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stdout);
        for sink in ["kafka", "splunk", "qradar", "arcsight"] {
            assert!(said.contains(sink), "{name}: sink {sink}: {said}");
        }
        assert!(
            said.contains("incidents") && said.contains("risk_detections") && said.contains("risky_users"),
            "{said}"
        );
        // The addresses the forwarder sends to are services of the stack.
        for (k, port) in [
            ("KAFKA_BOOTSTRAP", "kafka:9092"),
            ("SPLUNK_HEC_URL", "http://splunk:8088"),
            ("QRADAR_SYSLOG_ADDRESS", "syslog-ng:1514"),
            ("ARCSIGHT_SYSLOG_ADDRESS", "syslog-ng:1515"),
        ] {
            assert_eq!(env[k], port, "{name}: {k}");
        }
    }
    // The demo forwarder reaches the emulator under the name its certificate carries.
    let demo = forwarder_env(&services(&c)["forwarder"]);
    let emu = &services(&c)["graph-emulator"]["environment"];
    assert_eq!(demo["GRAPH_EMULATOR_URL"], emu["EMULATOR_PUBLIC_URL"].as_str().unwrap());
    assert_eq!(demo["GRAPH_TENANT_ID"], emu["EMULATOR_TENANT_ID"].as_str().unwrap());
    assert_eq!(demo["GRAPH_CLIENT_ID"], emu["EMULATOR_CLIENT_ID"].as_str().unwrap());
    assert_eq!(
        services(&c)["forwarder"]["environment"]["GRAPH_CLIENT_SECRET"],
        emu["EMULATOR_CLIENT_SECRET"]
    );
}

#[test]
fn no_secret_literals() {
    let c = compose();
    let secretish = |k: &str| {
        let k = k.to_ascii_uppercase();
        ["SECRET", "PASSWORD", "TOKEN", "CONNECTION_STRING", "_KEY"]
            .iter()
            .any(|w| k.contains(w))
            && !k.ends_with("_KEY_FILE")
    };
    let mut checked = 0;
    for (name, svc) in services(&c) {
        let Some(env) = svc["environment"].as_object() else {
            continue;
        };
        for (k, v) in env {
            if !secretish(k) {
                continue;
            }
            checked += 1;
            let v = v.as_str().unwrap_or_default();
            let required = v.starts_with("${") && v.ends_with('}') && v.contains(":?") && !v.contains(":-");
            // A path to a mounted file is fine too (e.g. EMULATOR_KEY: /etc/graph-emulator/server.key).
            let path = v.starts_with('/');
            assert!(
                required || path,
                "{name}: {k} = `{v}` must come from .env (`${{VAR:?...}}`) or a file"
            );
        }
    }
    assert!(checked >= 5, "the stack has secrets to check ({checked})");
    // The live forwarder's secrets come from .env.live, which is git-ignored and documented.
    let live = &services(&c)["forwarder-live"];
    assert_eq!(live["env_file"][0]["path"], ".env.live");
    let ignored = read(".gitignore");
    for f in [".env", ".env.live"] {
        assert!(ignored.lines().any(|l| l.trim() == f), "{f} is in .gitignore");
    }
    let example = env_file(".env.live.example");
    for k in [
        "GRAPH_TENANT_ID",
        "GRAPH_CLIENT_ID",
        "GRAPH_CLIENT_SECRET",
        "EVENTHUB_NAMESPACE",
        "EVENTHUB_CONNECTION_STRING",
    ] {
        assert!(example.contains_key(k), ".env.live.example documents {k}");
        assert!(
            read("deploy/compose/forwarder-live.toml").contains(&format!("${{{k}}}")),
            "forwarder-live.toml reads {k}"
        );
    }
    assert_eq!(example["GRAPH_CLIENT_SECRET"], "", "the example holds no secret");
    assert_eq!(example["EVENTHUB_CONNECTION_STRING"], "");
    // Every variable the compose file requires is in .env.example.
    let text = read("docker-compose.yml");
    let dot = dot_env();
    for part in text.split("${").skip(1) {
        let name: String = part
            .chars()
            .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
            .collect();
        assert!(dot.contains_key(&name), ".env.example documents {name}");
    }
    // No literal secret-looking value in the forwarder configs either.
    for f in [
        "deploy/compose/forwarder-demo.toml",
        "deploy/compose/forwarder-live.toml",
    ] {
        for line in read(f).lines().filter(|l| !l.trim_start().starts_with('#')) {
            if let Some((k, v)) = line.split_once('=') {
                if secretish(k.trim()) || k.trim() == "sasl_password" || k.trim() == "client_secret" {
                    assert!(v.trim().starts_with("\"${"), "{f}: {line}");
                }
            }
        }
    }
}

#[test]
fn ports_healthchecks_and_start_order() {
    let c = compose();
    let s = services(&c);
    for (name, svc) in s {
        for p in strings(&svc["ports"]) {
            assert!(p.starts_with("127.0.0.1:"), "{name}: {p} is published on loopback only");
        }
        let hc = &svc["healthcheck"];
        let test = strings(&hc["test"]);
        assert!(
            test.first().is_some_and(|t| t == "CMD" || t == "CMD-SHELL"),
            "{name}: healthcheck test {test:?}"
        );
        for k in ["interval", "timeout", "retries"] {
            assert!(hc.get(k).is_some(), "{name}: healthcheck.{k}");
        }
        if let Some(deps) = svc["depends_on"].as_object() {
            let mine: BTreeSet<String> = strings(&svc["profiles"]).into_iter().collect();
            for (dep, how) in deps {
                let d = s.get(dep).unwrap_or_else(|| panic!("{name} depends on unknown {dep}"));
                assert_eq!(how["condition"], "service_healthy", "{name} → {dep}");
                assert!(d["healthcheck"].is_object(), "{dep} has a healthcheck");
                let theirs: BTreeSet<String> = strings(&d["profiles"]).into_iter().collect();
                assert!(mine.is_subset(&theirs), "{dep} runs in every profile {name} runs in");
            }
        }
    }
    for name in FORWARDERS {
        let f = &s[name];
        assert_eq!(strings(&f["ports"]), ["127.0.0.1:9598:9598"], "{name}: metrics port");
        let hc = strings(&f["healthcheck"]["test"]).join(" ");
        assert!(
            hc.contains("m365-forwarder healthcheck --address 127.0.0.1:9598"),
            "{hc}"
        );
        let deps: BTreeSet<&str> = f["depends_on"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for r in ["kafka", "splunk", "syslog-ng"] {
            assert!(deps.contains(r), "{name} starts after {r}");
        }
        // Non-root, read-only root file system, scratch space in memory.
        assert_eq!(f["read_only"], true, "{name}");
        let user = f["user"].as_str().unwrap();
        assert!(
            !user.starts_with('0') && !user.starts_with("root"),
            "{name}: user {user}"
        );
        assert!(strings(&f["tmpfs"]).contains(&"/tmp".to_string()));
        let config = read(&format!(
            "deploy/compose/{}.toml",
            if name == "forwarder" { "forwarder-demo" } else { name }
        ));
        assert!(
            config.contains("address = \"0.0.0.0:9598\""),
            "{name}: the API listens on the published port"
        );
    }
    assert!(s["forwarder"]["depends_on"].get("graph-emulator").is_some());
    assert_eq!(s["graph-emulator"]["read_only"], true);
    assert_eq!(s["graph-emulator"]["user"], "65532:65532");
}

/// The compose-spec JSON Schema of docker-compose 1.29.2 (PyPI, 2021, Apache-2.0), stored in
/// tests/data/compose. Two things the file uses are newer than that schema and are rewritten
/// to their older form first: the top-level `name` and `env_file` entries with `path` and
/// `required` (Compose 2.24).
#[test]
fn compose_file_matches_the_compose_spec_schema() {
    let schema: Value =
        serde_json::from_str(&read("tests/data/compose/compose-spec-docker-compose-1.29.2.json")).unwrap();
    let v = jsonschema::draft201909::new(&schema).expect("schema compiles");
    let mut c = compose();
    assert_eq!(c["name"], "m365-forwarder");
    c.as_object_mut().unwrap().remove("name");
    for svc in c["services"].as_object_mut().unwrap().values_mut() {
        if let Some(files) = svc.get_mut("env_file").and_then(Value::as_array_mut) {
            for f in files.iter_mut() {
                if let Some(p) = f.get("path").cloned() {
                    *f = p;
                }
            }
        }
    }
    let errors: Vec<String> = v
        .iter_errors(&c)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // And the schema is strict enough to notice a typo.
    let mut bad = c.clone();
    bad["services"]["kafka"]["helthcheck"] = serde_json::json!({});
    assert!(!v.is_valid(&bad));
}

#[test]
fn env_examples_parse_and_interpolation_works() {
    let vars: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into_iter().collect();
    assert_eq!(interpolate("x${A}y", &vars).unwrap(), "x1y");
    assert_eq!(interpolate("${B:-d}", &vars).unwrap(), "d");
    assert!(interpolate("${B:?need B}", &vars).is_err());
    assert_eq!(interpolate("$$ConnectionString", &vars).unwrap(), "$ConnectionString");
    let dot = dot_env();
    for k in ["SPLUNK_PASSWORD", "SPLUNK_HEC_TOKEN", "DEMO_GRAPH_SECRET"] {
        assert!(!dot[k].is_empty(), "{k}");
    }
    assert!(Path::new(&repo().join(".env.example")).exists());
}
