//! schemas/ocsf/*.schema.json (the JSON Schema of each emitted OCSF 1.5.0 class, our subset)
//! accept every golden output of their class, and reject what we do not emit.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// class_uid → (file name, compiled validator).
fn schemas() -> BTreeMap<u64, (String, jsonschema::Validator)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(root().join("schemas/ocsf")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".schema.json") {
            continue;
        }
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(schema["x-ocsf-version"], "1.5.0", "{name} pins OCSF 1.5.0");
        assert_eq!(
            schema["properties"]["metadata"]["properties"]["version"]["const"], "1.5.0",
            "{name}"
        );
        let class_uid = schema["properties"]["class_uid"]["const"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: class_uid const"));
        assert_eq!(schema["x-ocsf-class-uid"], class_uid, "{name}");
        let v = jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            out.insert(class_uid, (name, v)).is_none(),
            "two schemas for {class_uid}"
        );
    }
    out
}

fn golden_events() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root().join("tests/golden")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".ocsf.ndjson") {
            continue;
        }
        for (i, line) in std::fs::read_to_string(&p).unwrap().lines().enumerate() {
            out.push((format!("{name}:{}", i + 1), serde_json::from_str(line).unwrap()));
        }
    }
    out
}

#[test]
fn every_golden_event_validates_against_the_schema_of_its_class() {
    let schemas = schemas();
    assert_eq!(
        schemas.keys().copied().collect::<Vec<_>>(),
        vec![0, 2004, 2005, 3001, 3002, 3004, 6003],
        "one schema per emitted class"
    );
    let events = golden_events();
    assert!(events.len() > 50, "{} golden events", events.len());
    let mut used: BTreeMap<u64, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for (at, ev) in &events {
        let class = ev["class_uid"].as_u64().unwrap();
        let Some((file, v)) = schemas.get(&class) else {
            problems.push(format!("{at}: no schema for class {class}"));
            continue;
        };
        *used.entry(class).or_default() += 1;
        for err in v.iter_errors(ev) {
            problems.push(format!("{at} ({file}) {}: {err}", err.instance_path()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(used.len(), schemas.len(), "every schema checks some golden event");
}

#[test]
fn schemas_reject_what_we_do_not_emit() {
    let schemas = schemas();
    let events = golden_events();
    let (_, signin) = events.iter().find(|(_, e)| e["class_uid"] == 3002).unwrap();
    let v = &schemas[&3002].1;
    assert!(v.is_valid(signin));
    type Mutation = fn(&mut Value);
    let cases: &[(&str, Mutation)] = &[
        ("attribute we never emit", |e| e["auth_factors"] = serde_json::json!([])),
        ("nested attribute we never emit", |e| {
            e["user"]["groups"] = serde_json::json!([])
        }),
        ("time as text", |e| e["time"] = "2026-11-27T09:14:05Z".into()),
        ("other class", |e| e["class_uid"] = 3001.into()),
        ("type_uid of another class", |e| e["type_uid"] = 300_101.into()),
        ("severity outside the enum", |e| e["severity_id"] = 7.into()),
        ("other OCSF version", |e| e["metadata"]["version"] = "1.3.0".into()),
        ("metadata.uid not 32 hex", |e| e["metadata"]["uid"] = "abc".into()),
        ("required user missing", |e| {
            e.as_object_mut().unwrap().remove("user");
        }),
    ];
    for (what, mutate) in cases {
        let mut ev = signin.clone();
        mutate(&mut ev);
        assert!(!v.is_valid(&ev), "{what}: accepted");
    }
    // Free-form `unmapped` stays open.
    let mut ev = signin.clone();
    ev["unmapped"]["anything_new"] = serde_json::json!({"nested": [1, 2]});
    assert!(v.is_valid(&ev));
}
