//! The Graph security input against the Graph + login emulator, through the real pipeline:
//! paging, late alerts, overlap re-reads, shared timestamps, throttling, partial results,
//! many tenants, restarts, certificate assertions and Identity Protection state changes.

#[path = "support/graph_emulator/mod.rs"]
mod graph_emulator;
#[path = "support/graph_harness.rs"]
mod graph_harness;

use std::time::{Duration, SystemTime};

use graph_emulator::{sample, Emulator, Fault};
use graph_harness::*;
use m365_forwarder::checkpoint::CheckpointKey;
use m365_forwarder::event::EventKind;
use serde_json::{json, Value};

const SECS: Duration = Duration::from_secs(20);

fn incidents() -> Vec<Value> {
    let mut v = sample("incidents_page1.json");
    v.extend(sample("incidents_page2.json"));
    v
}

/// The `graph_incidents` source for tenant A with `extra` source keys.
fn incidents_config(emu: &Emulator, dir: &std::path::Path, extra: &str) -> m365_forwarder::config::Config {
    config(
        emu,
        dir,
        "graph_incidents",
        extra,
        &secret_tenant(TA, "client-a", "secret-a"),
    )
}

async fn emulator_with_samples() -> Emulator {
    let emu = Emulator::start().await;
    emu.add_tenant(TA, "client-a", "secret-a", incidents());
    emu
}

fn ids(got: &[Got], kind: EventKind) -> Vec<String> {
    let mut v: Vec<String> = got.iter().filter(|g| g.kind == kind).map(|g| g.id.clone()).collect();
    v.sort();
    v
}

/// (a) Three pages: the first request carries $expand, $filter and $top; the next ones are
/// the nextLinks exactly as returned; every incident and alert arrives once, as `created`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paging_follows_next_links_across_three_pages() {
    let emu = emulator_with_samples().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = incidents_config(&emu, dir.path(), "page_size = 2");
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    wait_until("11 events and a second poll", SECS, || {
        run.count() >= 11 && cycles(&emu, TA) >= 2
    })
    .await;
    let got = run.got();
    run.finish().await;

    let reqs = emu.requests(TA);
    assert_eq!(reqs[0].path, "/beta/security/incidents");
    assert_eq!(
        reqs[0].query, "$expand=alerts&$filter=lastUpdateDateTime%20ge%202026-11-19T23:55:00Z&$top=2",
        "watermark (start_time) minus the 300 s overlap"
    );
    assert!(reqs[1].query.contains("$skiptoken=") && reqs[2].query.contains("$skiptoken="));
    assert!(!reqs[3].query.contains("$skiptoken="), "the third page was the last");
    assert!(reqs.iter().all(|r| !r.query.contains("$skip=")), "never $skip");
    assert_eq!(emu.altered_links(), 0, "nextLinks were requested exactly as returned");
    assert!(reqs.iter().all(|r| r.status == 200));
    assert!(reqs
        .iter()
        .all(|r| r.prefer.as_deref() == Some("include-unknown-enum-members")));
    assert!(reqs
        .iter()
        .all(|r| r.client_request_id.as_ref().is_some_and(|c| c.len() == 36)));

    assert_eq!(ids(&got, EventKind::Incident), ["3106", "3107", "3108", "3109", "3110"]);
    assert_eq!(ids(&got, EventKind::Alert).len(), 6);
    assert!(tally(&got).values().all(|&n| n == 1), "{:?}", tally(&got));
    assert!(got
        .iter()
        .all(|g| g.change.as_deref() == Some("created") && g.fields.is_empty()));
    assert!(got.iter().all(|g| g.tenant.as_deref() == Some(TA)));
    for a in got.iter().filter(|g| g.kind == EventKind::Alert) {
        assert_eq!(
            a.entity.as_deref(),
            a.raw["incidentId"].as_str(),
            "alert keyed by its incident"
        );
        assert!(a.raw["incidentWebUrl"]
            .as_str()
            .unwrap()
            .contains(a.entity.as_deref().unwrap()));
        let ocsf = a.ocsf.as_ref().expect("normalized");
        assert_eq!(ocsf["unmapped"]["change_type"], "created");
    }
}

/// (b) An alert added three days after an incident was created: one new alert event and
/// one incident `updated` naming what changed, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_alert_added_to_an_old_incident_is_emitted_once_with_the_incident_updated() {
    let emu = emulator_with_samples().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = incidents_config(&emu, dir.path(), "");
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    wait_until("first poll delivered", SECS, || run.count() >= 11).await;

    let mut inc = incidents().into_iter().find(|i| i["id"] == "3108").unwrap();
    assert_eq!(inc["createdDateTime"], "2026-11-27T07:30:05.5100000Z");
    let mut late = inc["alerts"][0].clone();
    late["id"] = json!("ad5e1a7e0d0c4b1f8a2e9c3d4f5a6b7c");
    late["title"] = json!("Password spray");
    late["createdDateTime"] = json!("2026-11-30T07:59:00Z");
    late["lastUpdateDateTime"] = json!("2026-11-30T08:00:00Z");
    late["firstActivityDateTime"] = json!("2026-11-28T18:01:00Z");
    inc["alerts"].as_array_mut().unwrap().push(late);
    inc["lastUpdateDateTime"] = json!("2026-11-30T08:00:05Z");
    let polls = cycles(&emu, TA);
    emu.upsert_incident(TA, inc);
    wait_until("the late alert", SECS, || run.count() >= 13).await;
    wait_until("three more polls", SECS, || cycles(&emu, TA) >= polls + 4).await;
    let got = run.got();
    run.finish().await;

    assert_eq!(got.len(), 13, "{:#?}", &got[11..]);
    let new: Vec<&Got> = got[11..].iter().collect();
    let alert = new.iter().find(|g| g.kind == EventKind::Alert).expect("alert event");
    assert_eq!(alert.id, "ad5e1a7e0d0c4b1f8a2e9c3d4f5a6b7c");
    assert_eq!(alert.change.as_deref(), Some("created"));
    assert_eq!(alert.entity.as_deref(), Some("3108"));
    let incident = new
        .iter()
        .find(|g| g.kind == EventKind::Incident)
        .expect("incident event");
    assert_eq!(incident.id, "3108");
    assert_eq!(incident.change.as_deref(), Some("updated"));
    assert_eq!(incident.fields, ["alerts", "evidenceCount"]);
    assert_eq!(
        incident.ocsf.as_ref().unwrap()["unmapped"]["changed_fields"],
        json!(["alerts", "evidenceCount"])
    );
    let reqs = emu.requests(TA);
    assert!(
        reqs.last().unwrap().filter.as_deref() == Some("lastUpdateDateTime ge 2026-11-30T07:55:05Z"),
        "the watermark moved to the update, minus the overlap: {:?}",
        reqs.last().unwrap().filter
    );
}

/// An incident stamped in the future (a wrong clock upstream) does not carry the watermark
/// past changes not yet read: the polls after it still ask from before now, and a later
/// change of another incident is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_timestamp_does_not_move_the_watermark_past_now() {
    let emu = emulator_with_samples().await;
    let dir = tempfile::tempdir().unwrap();
    // The watermark ends near now: the samples' state (2026-11) is kept whatever today is.
    let cfg = incidents_config(&emu, dir.path(), "state_retention_days = 36500");
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    wait_until("first poll delivered", SECS, || run.count() >= 11).await;
    let mut future = incidents().into_iter().find(|i| i["id"] == "3108").unwrap();
    future["lastUpdateDateTime"] = json!("2099-01-01T00:00:00Z");
    future["status"] = json!("resolved");
    let polls = cycles(&emu, TA);
    emu.upsert_incident(TA, future);
    wait_until("the future-dated change", SECS, || run.count() >= 12).await;
    wait_until("two more polls", SECS, || cycles(&emu, TA) >= polls + 3).await;
    let mut later = incidents().into_iter().find(|i| i["id"] == "3109").unwrap();
    // Now (the watermark is held there), and after the sample's own time.
    let sample_next = chrono::DateTime::parse_from_rfc3339("2026-11-27T09:44:12Z")
        .unwrap()
        .to_utc();
    let t = chrono::Utc::now().max(sample_next);
    later["lastUpdateDateTime"] = json!(t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    later["status"] = json!("resolved");
    emu.upsert_incident(TA, later);
    wait_until("the later change of another incident", SECS, || run.count() >= 13).await;
    let got = run.got();
    run.finish().await;
    assert_eq!(got.len(), 13, "{:#?}", &got[11..]);
    assert_eq!((got[11].id.as_str(), got[12].id.as_str()), ("3108", "3109"));
    let reqs = emu.requests(TA);
    let last = reqs.last().unwrap().filter.clone().unwrap_or_default();
    assert!(!last.contains("2099"), "the watermark stayed before now: {last}");
}

/// A watermark already in the future in the checkpoint (left by a version before the
/// watermark was held to the poll's start) is repaired at start: the poller reads again from
/// where a first run starts, delivers the change made since, and nothing it sent before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_future_watermark_is_read_again_from_the_start() {
    let emu = emulator_with_samples().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let cfg = || incidents_config(&emu, dir.path(), "state_retention_days = 36500");
    let run = start(cfg(), store.clone(), usize::MAX);
    wait_until("first poll delivered", SECS, || run.count() >= 11).await;
    wait_until("its state committed", SECS, || {
        checkpoint(&store, TA, "incidents").is_some_and(|c| c["watermark"] != "2026-11-20T00:00:00.000000Z")
    })
    .await;
    run.finish().await;
    let mut cp = checkpoint(&store, TA, "incidents").unwrap();
    cp["watermark"] = json!("2099-01-01T00:00:00.000000Z");
    store
        .commit(&[(CheckpointKey::new("graph", Some(TA), "incidents"), cp.to_string())])
        .unwrap();
    let mut later = incidents().into_iter().find(|i| i["id"] == "3109").unwrap();
    later["lastUpdateDateTime"] = json!("2026-11-28T00:00:00Z");
    later["status"] = json!("resolved");
    emu.upsert_incident(TA, later);
    let run = start(cfg(), store.clone(), usize::MAX);
    wait_until("the change made since", SECS, || run.count() >= 1).await;
    let polls = cycles(&emu, TA);
    wait_until("two more polls", SECS, || cycles(&emu, TA) >= polls + 2).await;
    let got = run.got();
    run.finish().await;
    let ids: Vec<&str> = got.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, ["3109"], "the change, and nothing sent before");
    assert_eq!(got[0].change.as_deref(), Some("resolved"));
}

/// (c) Every poll re-reads everything (a three-day overlap): nothing is sent twice, and a
/// later resolution is sent once as `resolved`, with the new alert as `created`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_overlapping_rereads_send_nothing_twice() {
    let emu = emulator_with_samples().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = incidents_config(&emu, dir.path(), "overlap_secs = 259200");
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    wait_until("five polls", SECS, || cycles(&emu, TA) >= 5).await;
    assert_eq!(run.count(), 11, "five overlapping reads, each object once");
    // Polls 2 to 4 are complete: each re-read 5 incidents and 6 alerts.
    assert!(run.metric("graph_unchanged_items", &["graph", TA]) >= 3.0 * 11.0);

    let update = sample("incidents_update.json").remove(0);
    emu.upsert_incident(TA, update);
    let polls = cycles(&emu, TA);
    wait_until("the resolution", SECS, || run.count() >= 14).await;
    wait_until("three more polls", SECS, || cycles(&emu, TA) >= polls + 4).await;
    let got = run.got();
    run.finish().await;

    assert!(tally(&got[..11]).values().all(|&n| n == 1));
    assert_eq!(got.len(), 14);
    let inc = got[11..].iter().find(|g| g.kind == EventKind::Incident).unwrap();
    assert_eq!((inc.id.as_str(), inc.change.as_deref()), ("3106", Some("resolved")));
    for f in [
        "status",
        "severity",
        "classification",
        "determination",
        "alerts",
        "comments",
    ] {
        assert!(inc.fields.iter().any(|x| x == f), "{f} in {:?}", inc.fields);
    }
    let ocsf = inc.ocsf.as_ref().unwrap();
    assert_eq!(ocsf["activity_id"], 3, "OCSF Close for a resolved incident");
    let mut alerts: Vec<(String, String)> = got[11..]
        .iter()
        .filter(|g| g.kind == EventKind::Alert)
        .map(|g| (g.id[..8].to_string(), g.change.clone().unwrap()))
        .collect();
    alerts.sort();
    assert_eq!(
        alerts,
        [
            ("ad36ee73".into(), "created".into()),
            ("ad4a222e".into(), "resolved".into())
        ]
    );
}

/// (d) Five incidents share one lastUpdateDateTime across page boundaries, with no overlap;
/// a sixth with the same time shows up after the first poll: all six arrive, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_items_sharing_a_timestamp_across_a_page_boundary_are_all_emitted() {
    // Whole seconds: a `gt` cursor on this time would exclude the late sixth incident.
    let same = "2026-11-27T10:00:00.0000000Z";
    let mut list = incidents();
    for i in list.iter_mut() {
        i["lastUpdateDateTime"] = json!(same);
    }
    let emu = Emulator::start().await;
    emu.add_tenant(TA, "client-a", "secret-a", list.clone());
    let dir = tempfile::tempdir().unwrap();
    let cfg = incidents_config(&emu, dir.path(), "page_size = 2\noverlap_secs = 0");
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    wait_until("first poll", SECS, || run.count() >= 11 && cycles(&emu, TA) >= 2).await;
    let mut late = list[0].clone();
    late["id"] = json!("3111");
    late["displayName"] = json!("Indexed late, same timestamp");
    late["alerts"] = json!([]);
    emu.upsert_incident(TA, late);
    wait_until("the late incident", SECS, || run.count() >= 12).await;
    let polls = cycles(&emu, TA);
    wait_until("two more polls", SECS, || cycles(&emu, TA) >= polls + 2).await;
    let got = run.got();
    run.finish().await;

    assert_eq!(
        ids(&got, EventKind::Incident),
        ["3106", "3107", "3108", "3109", "3110", "3111"]
    );
    assert!(tally(&got).values().all(|&n| n == 1), "{:?}", tally(&got));
    assert_eq!(got.len(), 12);
    let later = emu
        .requests(TA)
        .into_iter()
        .filter(|r| !r.query.contains("$skiptoken"))
        .nth(1)
        .unwrap();
    assert_eq!(
        later.filter.as_deref(),
        Some("lastUpdateDateTime ge 2026-11-27T10:00:00Z"),
        "`ge` the shared second, never `gt`"
    );
}

/// (e) A 429 with Retry-After: 2 and a 503 with an HTTP-date Retry-After: the same URL is
/// sent again, never earlier than told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_retry_after_is_honoured() {
    let emu = emulator_with_samples().await;
    emu.push_fault(
        TA,
        Fault::Throttle {
            status: 429,
            retry_after: Some("2".into()),
        },
    );
    // An HTTP date about three seconds ahead (whole seconds, rounded up).
    let at = SystemTime::now() + Duration::from_millis(3999);
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let date = chrono::DateTime::from_timestamp(secs as i64, 0).unwrap();
    emu.push_fault(
        TA,
        Fault::Throttle {
            status: 503,
            retry_after: Some(date.format("%a, %d %b %Y %H:%M:%S GMT").to_string()),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = incidents_config(&emu, dir.path(), "");
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    wait_until("events after throttling", SECS, || run.count() >= 11).await;
    let waits = run.metric("graph_throttle_waits", &["graph", TA]);
    run.finish().await;

    let reqs = emu.requests(TA);
    assert_eq!((reqs[0].status, reqs[1].status, reqs[2].status), (429, 503, 200));
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "resent after {gap:?}, Retry-After was 2 s"
    );
    assert!(gap < Duration::from_millis(3500), "and not much later: {gap:?}");
    let not_before = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    assert!(reqs[2].wall >= not_before, "sent before the Retry-After date");
    assert_eq!(reqs[0].query, reqs[1].query);
    assert_eq!(reqs[1].query, reqs[2].query, "the same request was sent again");
    assert!(waits >= 2.0);
}

/// (e2) A throttle storm: about 80 % of requests (seeded, `STORM_SEED`) answer 429 with
/// Retry-After: 1, over `STORM_REQUESTS` requests (30 in CI) while the poller keeps polling.
/// No request of the tenant is ever sent before the Retry-After of the previous answer
/// elapsed, and every incident and alert is still forwarded, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2_throttle_storm_never_sends_early_and_forwards_everything() {
    let seed: u64 = std::env::var("STORM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let emu = emulator_with_samples().await;
    emu.set_storm(TA, seed, 80, 1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = incidents_config(&emu, dir.path(), "page_size = 2");
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    // Enough requests for the share to mean something (each 429 costs a 1 s wait).
    let want: usize = std::env::var("STORM_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    wait_until(
        "11 events and the storm's requests",
        Duration::from_secs(60 + want as u64 * 2),
        || run.count() >= 11 && emu.requests(TA).len() >= want,
    )
    .await;
    let got = run.got();
    let waits = run.metric("graph_throttle_waits", &["graph", TA]);
    run.finish().await;

    let reqs = emu.requests(TA);
    let throttled = reqs.iter().filter(|r| r.status == 429).count();
    assert!(
        throttled * 2 >= reqs.len(),
        "a storm: {throttled} of {} requests throttled",
        reqs.len()
    );
    for pair in reqs.windows(2) {
        if let Some(ra) = pair[0].retry_after.as_deref() {
            let wait = Duration::from_secs(ra.parse().unwrap());
            let gap = pair[1].at - pair[0].at;
            assert!(gap >= wait, "sent {gap:?} after a 429 with Retry-After {ra}");
        }
    }
    assert_eq!(ids(&got, EventKind::Incident), ["3106", "3107", "3108", "3109", "3110"]);
    assert_eq!(ids(&got, EventKind::Alert).len(), 6);
    assert!(tally(&got).values().all(|&n| n == 1), "{:?}", tally(&got));
    assert!(
        waits >= throttled as f64 - 1.0,
        "every 429 was waited out: {waits} waits, {throttled} 429s"
    );
    eprintln!(
        "throttle storm (seed {seed}): {} requests, {throttled} answered 429, 11 events forwarded once",
        reqs.len()
    );
}

/// Every data request of tenant A answers 206 without incident 3109 (a provider failing
/// for good), for the next 200 requests.
fn partial_for_good(emu: &Emulator) {
    for _ in 0..200 {
        emu.push_fault(
            TA,
            Fault::Partial {
                hide: vec!["3109".into()],
                warning: r#"199 - "Microsoft/MDO/503/1""#.into(),
            },
        );
    }
}

/// Every poll comes back partial (a provider failing for good): the watermark is held for
/// `max_watermark_hold_secs`, then moves on, so the window and its requests stop growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watermark_held_by_partial_polls_moves_on_after_the_hold_limit() {
    let emu = emulator_with_samples().await;
    partial_for_good(&emu);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let cfg = incidents_config(&emu, dir.path(), "max_watermark_hold_secs = 1");
    let run = start(cfg, store.clone(), usize::MAX);
    let moved = |emu: &Emulator| {
        emu.requests(TA)
            .iter()
            .any(|r| r.filter.as_deref() == Some("lastUpdateDateTime ge 2026-11-27T09:39:11Z"))
    };
    wait_until("the watermark moved", SECS, || moved(&emu)).await;
    let expired = run.metric("graph_poll_errors", &["graph", TA, "watermark_hold_expired"]);
    run.finish().await;

    let reqs = emu.requests(TA);
    assert!(reqs.iter().all(|r| r.status == 206), "every poll was partial");
    let first_moved = reqs
        .iter()
        .position(|r| r.filter.as_deref() != reqs[0].filter.as_deref())
        .unwrap();
    assert!(
        reqs[first_moved].at - reqs[0].at >= Duration::from_secs(1),
        "held for the limit first"
    );
    assert!(expired >= 1.0);
}

/// The same without a deep re-scan to read the window again: the watermark is held for
/// good, whatever the hold limit (moving it would lose what the 206s left out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_rescan_a_watermark_held_by_partial_polls_stays() {
    let emu = emulator_with_samples().await;
    partial_for_good(&emu);
    let dir = tempfile::tempdir().unwrap();
    let cfg = incidents_config(
        &emu,
        dir.path(),
        "max_watermark_hold_secs = 1\nrescan_interval_secs = 0",
    );
    let run = start(cfg, open_store(dir.path()), usize::MAX);
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_until("more polls", SECS, || cycles(&emu, TA) >= 4).await;
    run.finish().await;
    let reqs = emu.requests(TA);
    assert!(
        reqs.iter().all(|r| r.filter == reqs[0].filter),
        "the watermark never moved"
    );
}

/// (f) A 206 page misses incident 3109: what came is forwarded, the watermark is held (the
/// next poll asks for the same window), 3109 arrives on that poll, and only then does the
/// watermark move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_partial_page_holds_the_watermark_until_the_missing_items_arrive() {
    let emu = emulator_with_samples().await;
    emu.push_fault(
        TA,
        Fault::Partial {
            hide: vec!["3109".into()],
            warning: r#"199 - "Microsoft/MDE/504/10000", 199 - "Microsoft/MDI/403/12""#.into(),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let cfg = incidents_config(&emu, dir.path(), "");
    let run = start(cfg, store.clone(), usize::MAX);
    wait_until("three polls", SECS, || cycles(&emu, TA) >= 3 && run.count() >= 11).await;
    let got = run.got();
    let partial = run.metric("graph_partial_pages", &["graph", TA]);
    run.finish().await;

    let reqs = emu.requests(TA);
    assert_eq!(reqs[0].status, 206);
    assert_eq!(reqs[1].status, 200);
    assert_eq!(reqs[0].filter, reqs[1].filter, "watermark held after the 206");
    assert_eq!(
        reqs[0].filter.as_deref(),
        Some("lastUpdateDateTime ge 2026-11-19T23:55:00Z")
    );
    assert_eq!(
        reqs[2].filter.as_deref(),
        Some("lastUpdateDateTime ge 2026-11-27T09:39:11Z"),
        "moved after the complete poll: newest (09:44:11.27) minus 300 s"
    );
    assert_eq!(partial, 1.0);
    let pos = |id: &str| {
        got.iter()
            .position(|g| g.kind == EventKind::Incident && g.id == id)
            .unwrap()
    };
    assert!(pos("3109") > pos("3110"), "3109 came with the second poll");
    assert!(tally(&got).values().all(|&n| n == 1));
    assert_eq!(got.len(), 11);
    let cp = checkpoint(&store, TA, "incidents").unwrap();
    assert_eq!(cp["watermark"], "2026-11-27T09:44:11.270000Z");
}

/// (g) Two tenants in one process: separate tokens, budgets (1 request/s each, burst 1)
/// and watermarks; one tenant's long paging does not slow the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g_two_tenants_have_separate_budgets_and_watermarks() {
    let emu = emulator_with_samples().await;
    let mut b_list: Vec<Value> = sample("incidents_page2.json");
    for (n, i) in b_list.iter_mut().enumerate() {
        i["id"] = json!(format!("9{n}"));
        i["tenantId"] = json!(TB);
        i["lastUpdateDateTime"] = json!(format!("2026-11-25T0{n}:00:00Z"));
    }
    emu.add_tenant(TB, "client-b", "secret-b", b_list);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let tenants = format!(
        "{}{}",
        secret_tenant(TA, "client-a", "secret-a"),
        secret_tenant(TB, "client-b", "secret-b")
    );
    let extra = "page_size = 1\nrequests_per_minute = 60\nburst = 1\npoll_interval_secs = 30";
    let cfg = config(&emu, dir.path(), "graph_incidents", extra, &tenants);
    let run = start(cfg, store.clone(), usize::MAX);
    wait_until("both tenants' first polls", SECS, || {
        emu.requests(TA).len() >= 5 && emu.requests(TB).len() >= 2
    })
    .await;
    wait_until("checkpoints", SECS, || {
        checkpoint(&store, TA, "incidents").is_some_and(|c| c["watermark"] != "2026-11-20T00:00:00.000000Z")
            && checkpoint(&store, TB, "incidents").is_some_and(|c| c["watermark"] != "2026-11-20T00:00:00.000000Z")
    })
    .await;
    let got = run.got();
    run.finish().await;

    let (a, b) = (emu.requests(TA), emu.requests(TB));
    for w in a.windows(2).take(4) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(900),
            "tenant A held to 1 request/s: {gap:?}"
        );
    }
    let b_gap = b[1].at - b[0].at;
    assert!(
        b_gap >= Duration::from_millis(900),
        "tenant B has its own 1/s budget: {b_gap:?}"
    );
    assert!(b[1].at < a[3].at, "B's second page did not wait behind A's budget");
    let start_gap = if a[0].at > b[0].at {
        a[0].at - b[0].at
    } else {
        b[0].at - a[0].at
    };
    assert!(start_gap < Duration::from_millis(500));
    assert_eq!(emu.token_requests(TA).len(), 1, "one cached token per tenant");
    assert_eq!(emu.token_requests(TB).len(), 1);

    let wa = checkpoint(&store, TA, "incidents").unwrap()["watermark"].clone();
    let wb = checkpoint(&store, TB, "incidents").unwrap()["watermark"].clone();
    assert_eq!(wa, "2026-11-27T09:44:11.270000Z");
    assert_eq!(wb, "2026-11-25T01:00:00.000000Z");
    let of = |t: &str| {
        got.iter()
            .filter(|g| g.kind == EventKind::Incident && g.tenant.as_deref() == Some(t))
            .count()
    };
    assert_eq!((of(TA), of(TB)), (5, 2));
}
