//! Every OCSF event `convert` emits for every sample in tests/data (and our own Graph inputs
//! in tests/golden/inputs) validates with outside OCSF libraries from PyPI (py-ocsf-models and
//! pydantic-ocsf, OCSF 1.5.0; pinned in tests/ocsf/requirements.txt) through
//! tests/ocsf/validate.py, run in a virtual environment that this test creates under target/
//! when it is missing. What is checked: tests/ocsf/README.md.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use support::{bin, data};

fn manifest(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

static VENV_LOCK: Mutex<()> = Mutex::new(());

/// The validator's virtual environment: created with `python3 -m venv` and filled with
/// `pip install -r tests/ocsf/requirements.txt` when missing or when the requirements changed.
fn venv_python() -> PathBuf {
    let _guard = VENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ocsf-venv");
    let python = venv.join("bin/python");
    let requirements = std::fs::read_to_string(manifest("tests/ocsf/requirements.txt")).unwrap();
    let marker = venv.join("installed-requirements.txt");
    if python.exists() && std::fs::read_to_string(&marker).ok().as_deref() == Some(requirements.as_str()) {
        return python;
    }
    if !python.exists() {
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs (install python3 and python3-venv; .ci/run does)");
        assert!(st.success(), "python3 -m venv {} failed", venv.display());
    }
    let out = Command::new(&python)
        .args(["-m", "pip", "install", "--disable-pip-version-check", "-q", "-r"])
        .arg(manifest("tests/ocsf/requirements.txt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pip install -r tests/ocsf/requirements.txt failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&marker, requirements).unwrap();
    python
}

struct Validation {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn validate(ndjson: &[u8]) -> Validation {
    let mut child = Command::new(venv_python())
        .arg(manifest("tests/ocsf/validate.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(ndjson).unwrap();
    let out = child.wait_with_output().unwrap();
    Validation {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `convert --to ocsf` of files; returns stdout and the exit code.
fn convert(from: &str, files: &[PathBuf]) -> (Vec<u8>, Option<i32>) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["convert", "--from", from, "--to", "ocsf", "--dead-letter"])
        .arg(dir.path().join("q.ndjson"))
        .args(files)
        .output()
        .unwrap();
    (out.stdout, out.status.code())
}

/// Every sample file with the `--from` it needs.
fn samples() -> Vec<(&'static str, PathBuf)> {
    let mut v = Vec::new();
    for (from, dir) in [
        ("graph", "graph"),
        ("eventhub", "eventhub"),
        ("eventhub", "eventhub/malformed"),
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(data(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json" || e == "txt"))
            .collect();
        files.sort();
        v.extend(files.into_iter().map(|p| (from, p)));
    }
    // Our own Graph inputs beside the samples (the golden cases' `golden:` files).
    let mut ours: Vec<PathBuf> = std::fs::read_dir(manifest("tests/golden/inputs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    ours.sort();
    v.extend(ours.into_iter().map(|p| ("graph", p)));
    v
}

fn line_count(b: &[u8]) -> usize {
    b.split(|&c| c == b'\n').filter(|l| !l.is_empty()).count()
}

/// The `validated N of M events: 0=.. 2004=..; py-ocsf-models: K` summary.
fn summary(stdout: &str) -> (usize, usize, Vec<(u32, usize)>, usize) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("validated "))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let good: usize = words[1].parse().unwrap();
    let total: usize = words[3].parse().unwrap();
    let (classes, py) = line
        .split_once("events: ")
        .unwrap()
        .1
        .split_once("; py-ocsf-models: ")
        .unwrap();
    let per_class = classes
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.parse().unwrap(), v.parse().unwrap())
        })
        .collect();
    (good, total, per_class, py.trim().parse().unwrap())
}

#[test]
fn every_event_of_every_sample_validates_with_outside_ocsf_libraries() {
    let mut all = Vec::new();
    let mut per_file = Vec::new();
    for (from, path) in samples() {
        let (out, code) = convert(from, std::slice::from_ref(&path));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "placeholder_blob.txt" {
            assert_eq!(code, Some(3), "{name} is quarantined");
            assert_eq!(line_count(&out), 0);
            continue;
        }
        assert_eq!(code, Some(0), "convert {name}");
        assert!(line_count(&out) > 0, "{name} gives events");
        per_file.push((name, line_count(&out)));
        all.extend_from_slice(&out);
    }
    // One run over everything too: the user cache and first-seen state then carry across
    // files (restored users, Update and Close activities).
    let mut eventhub: Vec<PathBuf> = samples()
        .into_iter()
        .filter(|(f, p)| *f == "eventhub" && p.extension().is_some_and(|e| e == "json"))
        .map(|(_, p)| p)
        .collect();
    let graph: Vec<PathBuf> = samples()
        .into_iter()
        .filter(|(f, _)| *f == "graph")
        .map(|(_, p)| p)
        .collect();
    eventhub.extend(graph);
    let (out, code) = convert("auto", &eventhub);
    assert_eq!(code, Some(0));
    all.extend_from_slice(&out);

    let total = line_count(&all);
    let v = validate(&all);
    assert!(v.ok, "invalid OCSF events:\n{}\n{}", v.stderr, v.stdout);
    let (good, n, per_class, py) = summary(&v.stdout);
    assert_eq!((good, n), (total, total), "{}", v.stdout);
    let classes: Vec<u32> = per_class.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        classes,
        vec![0, 2004, 2005, 3001, 3002, 3004, 6003],
        "every class we emit is covered: {per_file:?}"
    );
    let findings = per_class.iter().find(|(c, _)| *c == 2004).unwrap().1;
    assert_eq!(py, findings, "py-ocsf-models checked every Detection Finding");
}

/// The validator is not a rubber stamp: each broken variant of a real event fails, naming why.
#[test]
fn validator_rejects_events_that_break_ocsf() {
    let (out, _) = convert("eventhub", &[data("eventhub/signin_interactive.json")]);
    let signin: serde_json::Value = serde_json::from_slice(out.split(|&c| c == b'\n').next().unwrap()).unwrap();
    let (out, _) = convert("eventhub", &[data("eventhub/defender_alert_info_evidence.json")]);
    let finding: serde_json::Value = serde_json::from_slice(out.split(|&c| c == b'\n').next().unwrap()).unwrap();
    assert!(
        validate(format!("{signin}\n{finding}\n").as_bytes()).ok,
        "the originals are valid"
    );

    type Mutation = fn(&mut serde_json::Value);
    let cases: Vec<(&str, serde_json::Value, Mutation, &str)> = vec![
        (
            "undeclared attribute",
            signin.clone(),
            |e| e["login_name"] = "x".into(),
            "login_name: not an attribute",
        ),
        (
            "undeclared nested attribute",
            signin.clone(),
            |e| e["user"]["nick"] = "x".into(),
            "user.nick: not an attribute",
        ),
        (
            "wrong type_uid",
            signin.clone(),
            |e| e["type_uid"] = 300_299.into(),
            "type_uid",
        ),
        (
            "missing required user",
            signin.clone(),
            |e| {
                e.as_object_mut().unwrap().remove("user");
            },
            "user",
        ),
        (
            "caption disagrees with id",
            signin.clone(),
            |e| e["severity"] = "Critical".into(),
            "severity",
        ),
        (
            "time as text",
            signin.clone(),
            |e| e["time"] = "2026-11-27T09:14:05Z".into(),
            "time",
        ),
        (
            "endpoint without identifier",
            signin.clone(),
            |e| e["src_endpoint"] = serde_json::json!({"location": {"city": "Seattle"}}),
            "src_endpoint",
        ),
        (
            "device without host profile",
            signin.clone(),
            |e| {
                e["metadata"].as_object_mut().unwrap().remove("profiles");
                e["device"] = serde_json::json!({"uid": "d1", "type_id": 0});
            },
            "device: not an attribute",
        ),
        (
            "finding status 0",
            finding.clone(),
            |e| e["status_id"] = 0.into(),
            "status_id",
        ),
        (
            "observable type not in OCSF 1.5.0",
            finding.clone(),
            |e| e["observables"] = serde_json::json!([{"name": "x", "type_id": 43, "value": "cmd"}]),
            "type_id",
        ),
        (
            "finding without finding_info",
            finding.clone(),
            |e| {
                e.as_object_mut().unwrap().remove("finding_info");
            },
            "finding_info",
        ),
        (
            "wrong OCSF version",
            finding.clone(),
            |e| e["metadata"]["version"] = "1.3.0".into(),
            "metadata.version",
        ),
    ];
    for (what, mut ev, mutate, needle) in cases {
        mutate(&mut ev);
        let v = validate(format!("{ev}\n").as_bytes());
        assert!(!v.ok, "{what}: accepted\n{}", v.stdout);
        assert!(
            v.stderr.contains(needle),
            "{what}: stderr lacks {needle:?}:\n{}",
            v.stderr
        );
    }
}

/// schemas/ocsf/*.schema.json are what tests/ocsf/gen_schemas.py makes from the OCSF 1.5.0
/// schema and the golden outputs today (regenerate and review when either changes).
#[test]
fn committed_json_schemas_match_the_generator() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(venv_python())
        .arg(manifest("tests/ocsf/gen_schemas.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut n = 0;
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let committed = std::fs::read_to_string(manifest("schemas/ocsf").join(&name))
            .unwrap_or_else(|_| panic!("schemas/ocsf/{name} is missing"));
        assert_eq!(
            committed,
            std::fs::read_to_string(&p).unwrap(),
            "schemas/ocsf/{name} is stale: run tests/ocsf/gen_schemas.py"
        );
        n += 1;
    }
    assert_eq!(
        n,
        std::fs::read_dir(manifest("schemas/ocsf")).unwrap().count(),
        "no extra schema files"
    );
}
