//! Criterion benches of OCSF normalization per input kind, on the sample records in
//! tests/data: `normalize/records` (records/s), `normalize/bytes` (input MB/s), and
//! `normalize_serialize/records` (normalize plus writing the OCSF JSON line, what the `ocsf`
//! encoder does), and `normalize_cef/records` (a lean normalization plus the CEF line, what
//! S1 does per record). Times are the benchmark thread's CPU time (`support/cpu_time.rs`), so
//! the figures are per core used even on a busy machine. Run: `cargo bench --bench normalize`;
//! figures in BENCHMARKS.md.

#[path = "support/cpu_time.rs"]
mod cpu_time;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use m365_forwarder::ack::Finalizer;
use m365_forwarder::encode::{encoder, EncoderOptions, Format};
use m365_forwarder::event::{Event, EventKind, EventMeta, Position};
use m365_forwarder::normalize::{NormalizeOptions, Normalizer};
use serde_json::Value;

struct Kind {
    name: &'static str,
    category: &'static str,
    records: Vec<Vec<u8>>,
}

fn data(path: &str) -> Value {
    let p = format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// Records of an Event Hub body (`records`) or Graph page (`value`), compact JSON each.
fn items(path: &str) -> Vec<Value> {
    let v = data(path);
    let list = v.get("records").or_else(|| v.get("value")).unwrap();
    list.as_array().unwrap().clone()
}

fn compact(v: &[Value]) -> Vec<Vec<u8>> {
    v.iter().map(|r| serde_json::to_vec(r).unwrap()).collect()
}

fn kinds() -> Vec<Kind> {
    let eh = |name, category, file: &str| Kind {
        name,
        category,
        records: compact(&items(&format!("eventhub/{file}"))),
    };
    let incidents: Vec<Value> = ["graph/incidents_page1.json", "graph/incidents_page2.json"]
        .iter()
        .flat_map(|p| items(p))
        .collect();
    let alerts: Vec<Value> = incidents
        .iter()
        .flat_map(|i| i["alerts"].as_array().cloned().unwrap_or_default())
        .collect();
    let defender = items("eventhub/defender_alert_info_evidence.json");
    let by_category = |c: &str| -> Vec<Value> { defender.iter().filter(|r| r["category"] == c).cloned().collect() };
    vec![
        eh(
            "signin_noninteractive",
            "NonInteractiveUserSignInLogs",
            "signin_noninteractive.json",
        ),
        eh("signin_interactive", "SignInLogs", "signin_interactive.json"),
        eh(
            "signin_serviceprincipal",
            "ServicePrincipalSignInLogs",
            "serviceprincipal_signin.json",
        ),
        eh(
            "signin_managedidentity",
            "ManagedIdentitySignInLogs",
            "managedidentity_signin.json",
        ),
        eh("auditlogs", "AuditLogs", "auditlogs.json"),
        eh("user_risk_events", "UserRiskEvents", "user_risk_events.json"),
        eh("risky_users", "RiskyUsers", "risky_users.json"),
        eh(
            "sp_risk_events",
            "ServicePrincipalRiskEvents",
            "serviceprincipal_risk_events.json",
        ),
        eh("risky_sps", "RiskyServicePrincipals", "risky_serviceprincipals.json"),
        eh(
            "graph_activity_logs",
            "MicrosoftGraphActivityLogs",
            "graph_activity_logs.json",
        ),
        eh(
            "defender_identity_logon",
            "AdvancedHunting-IdentityLogonEvents",
            "defender_identity_logon_events.json",
        ),
        Kind {
            name: "defender_alert_info",
            category: "AdvancedHunting-AlertInfo",
            records: compact(&by_category("AdvancedHunting-AlertInfo")),
        },
        Kind {
            name: "defender_alert_evidence",
            category: "AdvancedHunting-AlertEvidence",
            records: compact(&by_category("AdvancedHunting-AlertEvidence")),
        },
        Kind {
            name: "graph_incident",
            category: "GraphIncident",
            records: compact(&incidents),
        },
        Kind {
            name: "graph_alert",
            category: "GraphAlert",
            records: compact(&alerts),
        },
        Kind {
            name: "graph_risk_detection",
            category: "GraphRiskDetection",
            records: compact(&items("graph/risk_detections.json")),
        },
        Kind {
            name: "graph_risky_user",
            category: "GraphRiskyUser",
            records: compact(&items("graph/risky_users.json")),
        },
    ]
}

fn meta(category: &str) -> EventMeta {
    EventMeta {
        received_ms: 1_800_000_000_000,
        ..EventMeta::new(
            Arc::from("bench"),
            category,
            EventKind::from_category(category),
            Position::at(Arc::from("0"), 0, 0),
        )
    }
}

fn bench(c: &mut Criterion<cpu_time::CpuTime>) {
    let kinds = kinds();
    let n = Normalizer::new(NormalizeOptions::default());
    for k in &kinds {
        assert!(!k.records.is_empty(), "{}: no records", k.name);
        let m = meta(k.category);
        for r in &k.records {
            n.normalize(&m, r).unwrap_or_else(|e| panic!("{}: {e}", k.name));
        }
        let bytes: usize = k.records.iter().map(Vec::len).sum();
        eprintln!(
            "{}: {} records, {} bytes on average",
            k.name,
            k.records.len(),
            bytes / k.records.len()
        );
    }

    let mut g = c.benchmark_group("normalize/records");
    for k in &kinds {
        let m = meta(k.category);
        g.throughput(Throughput::Elements(k.records.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(k.name), &k.records, |b, recs| {
            b.iter(|| {
                for r in recs {
                    std::hint::black_box(n.normalize(&m, r).unwrap());
                }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("normalize/bytes");
    for k in &kinds {
        let m = meta(k.category);
        g.throughput(Throughput::Bytes(k.records.iter().map(|r| r.len() as u64).sum()));
        g.bench_with_input(BenchmarkId::from_parameter(k.name), &k.records, |b, recs| {
            b.iter(|| {
                for r in recs {
                    std::hint::black_box(n.normalize(&m, r).unwrap());
                }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("normalize_serialize/records");
    let mut out = Vec::with_capacity(64 * 1024);
    for k in &kinds {
        let m = meta(k.category);
        g.throughput(Throughput::Elements(k.records.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(k.name), &k.records, |b, recs| {
            b.iter(|| {
                for r in recs {
                    out.clear();
                    let o = n.normalize(&m, r).unwrap();
                    o.normalized.write_json(&mut out).unwrap();
                    out.push(b'\n');
                    std::hint::black_box(&out);
                }
            })
        });
    }
    g.finish();

    // What S1 does per record: a lean normalization (no tree for the families mapped flat,
    // see `normalize::direct`) and the CEF line.
    let lean = Normalizer::new(NormalizeOptions {
        lean: true,
        ..NormalizeOptions::default()
    });
    let cef = encoder(Format::Cef, &EncoderOptions::default());
    let mut g = c.benchmark_group("normalize_cef/records");
    for k in &kinds {
        let m = meta(k.category);
        let raws: Vec<Bytes> = k.records.iter().map(|r| Bytes::from(r.clone())).collect();
        g.throughput(Throughput::Elements(raws.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(k.name), &raws, |b, recs| {
            b.iter(|| {
                for r in recs {
                    out.clear();
                    let o = lean.normalize_bytes(&m, r).unwrap();
                    let mut e = Event::new(r.clone(), m.clone(), Finalizer::noop());
                    e.meta.severity_id = o.severity_id;
                    e.meta.event_ms = o.event_ms;
                    e.normalized = Some(Arc::new(o.normalized));
                    cef.encode(&e, &mut out).unwrap();
                    std::hint::black_box(&out);
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .with_measurement(cpu_time::CpuTime)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = bench
}
criterion_main!(benches);
