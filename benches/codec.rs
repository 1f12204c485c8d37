//! Criterion benches of the stages around normalization: `decode/bytes` (Event Hub bodies,
//! plain, gzip and repaired, and a Graph page, split into records; input MB/s) and
//! `encode/bytes` (each payload encoder and the syslog-wrapped ones over normalized sample
//! events; output MB/s, with events/s in `encode/records`). CPU time of the benchmark thread
//! (`support/cpu_time.rs`). Run: `cargo bench --bench codec`; figures in BENCHMARKS.md.

#[path = "support/cpu_time.rs"]
mod cpu_time;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use m365_forwarder::ack::Finalizer;
use m365_forwarder::decode::{decode_unit, InputFormat};
use m365_forwarder::encode::{encoder, syslog_encoder, Encoder, EncoderOptions, Format};
use m365_forwarder::event::{Event, EventMeta, Position};
use m365_forwarder::normalize::{NormalizeOptions, Normalizer};

fn read(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Bodies as they arrive: (name, format, bytes).
fn bodies() -> Vec<(&'static str, InputFormat, Bytes)> {
    let signins = read("eventhub/signin_interactive.json");
    vec![
        (
            "eventhub_signin_body",
            InputFormat::Eventhub,
            Bytes::from(signins.clone()),
        ),
        (
            "eventhub_signin_body_gzip",
            InputFormat::Eventhub,
            Bytes::from(gzip(&signins)),
        ),
        (
            "eventhub_audit_body",
            InputFormat::Eventhub,
            Bytes::from(read("eventhub/auditlogs.json")),
        ),
        (
            "eventhub_repaired_single_quotes",
            InputFormat::Eventhub,
            Bytes::from(read("eventhub/malformed/single_quoted_properties.json")),
        ),
        (
            "eventhub_repaired_raw_newline",
            InputFormat::Eventhub,
            Bytes::from(read("eventhub/malformed/raw_newline_in_string.json")),
        ),
        (
            "graph_incidents_page",
            InputFormat::Graph,
            Bytes::from(read("graph/incidents_page1.json")),
        ),
    ]
}

/// Decoded and normalized events of several kinds, as the encoders get them.
fn events() -> Vec<Event> {
    let n = Normalizer::new(NormalizeOptions::default());
    let mut out = Vec::new();
    for (name, format, body) in bodies() {
        if name.contains("gzip") || name.contains("repaired") {
            continue;
        }
        let unit = decode_unit(format, body).unwrap();
        for (i, r) in unit.records.into_iter().enumerate() {
            let meta = EventMeta {
                received_ms: 1_800_000_000_000,
                ..EventMeta::new(
                    Arc::from("bench"),
                    &r.category,
                    r.kind,
                    Position::at(Arc::from("0"), 0, i as u32),
                )
            };
            let o = n.normalize(&meta, &r.raw).unwrap();
            let mut e = Event::new(r.raw, meta, Finalizer::noop());
            e.meta.severity_id = o.severity_id;
            e.meta.event_ms = o.event_ms;
            e.meta.tenant = o.tenant.map(Arc::from);
            e.normalized = Some(Arc::new(o.normalized));
            out.push(e);
        }
    }
    out
}

/// Every event encoded into `out` (cleared first), one after the other as a sink's batch.
fn encode_all(enc: &dyn Encoder, events: &[Event], out: &mut Vec<u8>) {
    out.clear();
    for e in events {
        enc.encode(e, out).unwrap();
    }
}

fn bench(c: &mut Criterion<cpu_time::CpuTime>) {
    let mut g = c.benchmark_group("decode/bytes");
    for (name, format, body) in bodies() {
        let records = decode_unit(format, body.clone()).unwrap().records.len();
        eprintln!("{name}: {} bytes, {records} records", body.len());
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| std::hint::black_box(decode_unit(format, body.clone()).unwrap()))
        });
    }
    g.finish();

    let events = events();
    let opts = EncoderOptions::default();
    let encoders: Vec<(&str, Box<dyn Encoder>)> = vec![
        ("ocsf", encoder(Format::Ocsf, &opts)),
        ("raw", encoder(Format::Raw, &opts)),
        ("cef", encoder(Format::Cef, &opts)),
        ("leef", encoder(Format::Leef, &opts)),
        ("hec", encoder(Format::Hec, &opts)),
        ("syslog_rfc5424_cef", syslog_encoder(Format::Cef, &opts)),
        ("syslog_rfc5424_leef", syslog_encoder(Format::Leef, &opts)),
        ("syslog_rfc5424_ocsf", syslog_encoder(Format::Ocsf, &opts)),
    ];
    let mut out = Vec::with_capacity(1 << 20);
    let mut g = c.benchmark_group("encode/bytes");
    for (name, enc) in &encoders {
        encode_all(enc.as_ref(), &events, &mut out);
        eprintln!("{name}: {} events, {} bytes out", events.len(), out.len());
        g.throughput(Throughput::Bytes(out.len() as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                encode_all(enc.as_ref(), &events, &mut out);
                std::hint::black_box(&out);
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("encode/records");
    g.throughput(Throughput::Elements(events.len() as u64));
    for (name, enc) in &encoders {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                encode_all(enc.as_ref(), &events, &mut out);
                std::hint::black_box(&out);
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
