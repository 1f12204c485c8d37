//! Graph pages for the load harness, and S5: `{"value":[...]}` pages of incidents with their
//! alerts expanded, as `GET /beta/security/incidents?$expand=alerts` answers them, built from
//! the sample pages in `tests/data/graph` (a unique id per incident and alert, every time the
//! send time), one page per line, fed to the forwarder's replay source (`format = "graph"`)
//! → normalize (an event per incident and per alert) → CEF → TCP.
//!
//! The Graph source itself polls at most 150 requests a minute per tenant (50 incidents a
//! page), far below what this measures: S5 is the cost of the Graph data in the pipeline,
//! not of the HTTPS polling.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::probe::{sample, LineReceiver, RssWatch};
use crate::records::{now_iso, stamp_times};
use crate::scenarios::{cef_tcp_sink, figure, latency_at_half_rate, write_config_as, Figure, Forwarder, Opts};

/// Incidents per page: what the Graph source asks for (`$top=50`, its default).
pub const PAGE_INCIDENTS: usize = 50;

const TIME: &str = "@@TIME@@";
const INCIDENT: &str = "@@INCIDENT@@";
/// Followed by the alert's index in its incident and `@@`.
const ALERT: &str = "@@ALERT";

#[derive(Clone, Copy)]
enum Hole {
    Time,
    Incident,
    Alert(u8),
}

/// One incident (with its alerts) cut at its placeholders.
struct Incident {
    parts: Vec<(String, Option<Hole>)>,
    /// The incident and its alerts.
    events: u64,
}

impl Incident {
    fn new(mut v: Value) -> Incident {
        stamp_times(&mut v);
        v["id"] = Value::String(INCIDENT.into());
        let mut alerts = 0u64;
        if let Some(list) = v["alerts"].as_array_mut() {
            for (k, a) in list.iter_mut().enumerate() {
                a["id"] = Value::String(format!("{ALERT}{k}@@"));
                a["incidentId"] = Value::String(INCIDENT.into());
                alerts += 1;
            }
        }
        let text = serde_json::to_string(&v).expect("sample serializes");
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("@@") {
            let tail = &rest[at..];
            let (hole, len) = if tail.starts_with(TIME) {
                (Hole::Time, TIME.len())
            } else if tail.starts_with(INCIDENT) {
                (Hole::Incident, INCIDENT.len())
            } else if let Some(k) = tail.strip_prefix(ALERT) {
                let end = k.find("@@").expect("alert placeholder ends");
                (
                    Hole::Alert(k[..end].parse().expect("alert index")),
                    ALERT.len() + end + 2,
                )
            } else {
                panic!("unknown placeholder at {tail:.20}")
            };
            parts.push((rest[..at].to_string(), Some(hole)));
            rest = &rest[at + len..];
        }
        parts.push((rest.to_string(), None));
        Incident {
            parts,
            events: 1 + alerts,
        }
    }

    fn write(&self, out: &mut Vec<u8>, seq: u64, time: &str) {
        for (text, hole) in &self.parts {
            out.extend_from_slice(text.as_bytes());
            let _ = match hole {
                Some(Hole::Time) => out.write_all(time.as_bytes()),
                Some(Hole::Incident) => write!(out, "{}", 100_000 + seq),
                Some(Hole::Alert(k)) => write!(out, "da{seq:016x}{k:02x}5f3c1e2d"),
                None => Ok(()),
            };
        }
    }
}

/// Endless Graph incident pages, the sample incidents in rotation.
pub struct PageGenerator {
    incidents: Vec<Incident>,
    next: u64,
}

impl PageGenerator {
    pub fn new(samples: &Path) -> PageGenerator {
        let mut incidents = Vec::new();
        for file in ["incidents_page1.json", "incidents_page2.json"] {
            let path = samples.join("graph").join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let page: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for v in page["value"].as_array().expect("a Graph page").iter().cloned() {
                incidents.push(Incident::new(v));
            }
        }
        PageGenerator { incidents, next: 0 }
    }

    /// Appends the next page and a newline; returns the events it makes (each incident and
    /// each of its alerts).
    pub fn write_page(&mut self, out: &mut Vec<u8>, time: &str) -> u64 {
        out.extend_from_slice(
            b"{\"@odata.context\":\"https://graph.microsoft.com/beta/$metadata#security/incidents(alerts())\",\"value\":[",
        );
        let mut events = 0;
        for i in 0..PAGE_INCIDENTS {
            if i > 0 {
                out.push(b',');
            }
            let inc = &self.incidents[(self.next % self.incidents.len() as u64) as usize];
            inc.write(out, self.next, time);
            events += inc.events;
            self.next += 1;
        }
        out.extend_from_slice(b"]}\n");
        events
    }

    /// Average input bytes per event over one page.
    pub fn average_event_bytes(&mut self) -> usize {
        let mut buf = Vec::new();
        let events = self.write_page(&mut buf, "2026-11-29T01:00:00.0000000Z");
        self.next = 0;
        buf.len() / events as usize
    }
}

/// Writes pages until they make at least `n` events, as fast as the consumer takes them;
/// returns the events written.
fn feed_pages(gen: &mut PageGenerator, w: &mut impl Write, n: u64) -> u64 {
    let mut buf = Vec::with_capacity(1 << 20);
    let time = now_iso();
    let mut events = 0;
    while events < n {
        buf.clear();
        while buf.len() < 1 << 19 && events < n {
            events += gen.write_page(&mut buf, &time);
        }
        w.write_all(&buf).expect("write to the forwarder");
    }
    w.flush().ok();
    events
}

/// S5: Graph incident pages on stdin → normalize → CEF (no syslog header, LF) → TCP, then
/// p50 / p99 latency with pages paced at half the saturated event rate.
pub fn s5_forwarder(opts: &Opts) -> Figure {
    let rx = LineReceiver::start(0);
    let config = write_config_as(opts, "s5-forwarder", "graph", &cef_tcp_sink(rx.port, ""));
    let mut gen = PageGenerator::new(&opts.samples);
    let avg = gen.average_event_bytes();
    let mut fwd = Forwarder::start(opts, &config);
    let idle = sample(fwd.pid()).unwrap_or_default();
    let watch = RssWatch::start(fwd.pid());
    let t0 = Instant::now();
    let mut stdin = fwd.stdin.take().unwrap();
    let events = feed_pages(&mut gen, &mut stdin, opts.events);
    assert!(
        rx.wait_for(events, Duration::from_secs(600)),
        "S5: {} of {events} lines arrived",
        rx.lines()
    );
    let secs = (rx.last().unwrap() - t0).as_secs_f64();
    let cpu = sample(fwd.pid()).unwrap_or_default().cpu_secs - idle.cpu_secs;
    let made = Opts { events, ..opts.clone() };
    let mut f = figure("S5", "m365-forwarder (Graph pages)", &made, avg, secs, cpu);
    f.mix = format!("graph, {PAGE_INCIDENTS} incidents a page");
    f.idle_rss_mb = idle.rss_kb as f64 / 1024.0;
    latency_at_half_rate(opts, &mut f, &rx, &mut stdin, |buf, time| gen.write_page(buf, time));
    f.peak_rss_mb = watch.peak_kb() as f64 / 1024.0;
    fwd.stdin = Some(stdin);
    fwd.finish();
    f
}
