//! The blob checkpoint store of the `eventhub` source against Azurite (tests/support/azurite.rs)
//! and the Event Hubs emulator: ETag-conditioned claims, checkpoints and listing by prefix in
//! the SDKs' blob layout; two replicas of the real binary sharing one container split the
//! partitions of a hub, deliver every event, and one takes over when the other stops.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use azure_messaging_eventhubs::models::Ownership;
use m365_forwarder::sources::eventhub::blob::{parse_connection_string, BlobAuth, BlobClient, Condition};
use m365_forwarder::sources::eventhub::blobstore::BlobStore;
use m365_forwarder::sources::eventhub::HubIdentity;
use support::azurite::{self, Azurite};
use support::eventhub_emulator::{EventHubEmulator, NAMESPACE};
use support::scaleout::*;
use support::*;

fn store(az: &Azurite) -> BlobStore {
    let (endpoint, auth) = parse_connection_string(&az.connection_string()).unwrap();
    BlobStore::new(BlobClient::new(&endpoint, CONTAINER, auth).unwrap())
}

fn ownership(partition: &str, owner: Option<&str>, etag: Option<azure_core::http::Etag>) -> Ownership {
    Ownership {
        fully_qualified_namespace: NAMESPACE.into(),
        event_hub_name: HUB.into(),
        consumer_group: GROUP.into(),
        partition_id: partition.into(),
        owner_id: owner.map(str::to_string),
        etag,
        last_modified_time: None,
    }
}

fn hub(name: &str) -> HubIdentity {
    HubIdentity {
        namespace: NAMESPACE.into(),
        event_hub: name.into(),
        consumer_group: GROUP.into(),
    }
}

#[tokio::test]
async fn blob_claims_are_etag_conditioned_checkpoints_round_trip_and_list_by_prefix() {
    let az = Azurite::start();
    let s = store(&az);
    s.client().create_container().await.unwrap();
    s.client()
        .create_container()
        .await
        .expect("an existing container is fine");

    // Claim a new partition (If-None-Match: *); a second create loses.
    let first = s
        .claim(&ownership("0", Some("a"), None))
        .await
        .unwrap()
        .expect("claimed");
    assert!(first.etag.is_some() && first.last_modified_time.is_some(), "{first:?}");
    assert!(
        s.claim(&ownership("0", Some("b"), None)).await.unwrap().is_none(),
        "If-None-Match: * on an existing blob is refused"
    );
    // Renewal with the current ETag wins and changes it; the stale ETag then loses.
    let renewed = s
        .claim(&ownership("0", Some("a"), first.etag.clone()))
        .await
        .unwrap()
        .expect("renewed");
    assert_ne!(renewed.etag, first.etag);
    assert!(
        s.claim(&ownership("0", Some("b"), first.etag.clone()))
            .await
            .unwrap()
            .is_none(),
        "a claim with a stale ETag is refused"
    );
    s.claim(&ownership("1", Some("b"), None))
        .await
        .unwrap()
        .expect("claimed");

    let listed = s.ownerships(NAMESPACE, HUB, GROUP).await.unwrap();
    let owners: BTreeMap<String, Option<String>> = listed
        .iter()
        .map(|o| (o.partition_id.clone(), o.owner_id.clone()))
        .collect();
    assert_eq!(
        owners,
        BTreeMap::from([("0".into(), Some("a".into())), ("1".into(), Some("b".into()))])
    );
    let p0 = listed.iter().find(|o| o.partition_id == "0").unwrap();
    assert_eq!(p0.etag, renewed.etag, "the listed ETag is the one the write returned");
    assert!(p0.last_modified_time.is_some());
    // Giving a partition up leaves it without an owner.
    s.claim(&Ownership {
        owner_id: None,
        ..p0.clone()
    })
    .await
    .unwrap()
    .expect("relinquished");
    let listed = s.ownerships(NAMESPACE, HUB, GROUP).await.unwrap();
    assert_eq!(listed.iter().find(|o| o.partition_id == "0").unwrap().owner_id, None);

    // Checkpoints round-trip and never move backwards.
    let h = hub(HUB);
    s.write_checkpoint(&h, "0", &h.checkpoint(41, Some("4100".into())))
        .await
        .unwrap();
    let c = s.checkpoint(&h, "0").await.unwrap().unwrap();
    assert_eq!((c.sequence_number, c.offset.as_deref()), (41, Some("4100")));
    s.write_checkpoint(&h, "0", &h.checkpoint(30, Some("3000".into())))
        .await
        .unwrap();
    assert_eq!(s.checkpoint(&h, "0").await.unwrap().unwrap().sequence_number, 41);
    s.write_checkpoint(&h, "0", &h.checkpoint(50, Some("5000".into())))
        .await
        .unwrap();
    s.write_checkpoint(&h, "1", &h.checkpoint(7, None)).await.unwrap();
    assert!(s.checkpoint(&h, "2").await.unwrap().is_none());
    // Another hub's checkpoint is not listed under this hub's prefix.
    let other = hub("other-hub");
    s.write_checkpoint(&other, "0", &other.checkpoint(99, Some("1".into())))
        .await
        .unwrap();
    let mut cps: Vec<(String, Option<i64>, Option<String>)> = s
        .checkpoints(NAMESPACE, HUB, GROUP)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.partition_id, c.sequence_number, c.offset))
        .collect();
    cps.sort();
    assert_eq!(
        cps,
        vec![("0".into(), Some(50), Some("5000".into())), ("1".into(), Some(7), None)]
    );
    // Where `latest` starts is written only to a partition without a checkpoint.
    let kept = s
        .create_checkpoint(&h, "0", &h.checkpoint(60, Some("6000".into())))
        .await;
    assert_eq!(
        kept.unwrap().map(|c| c.sequence_number),
        Some(50),
        "the stored one wins"
    );
    assert_eq!(s.checkpoint(&h, "0").await.unwrap().unwrap().sequence_number, 50);
    let created = s
        .create_checkpoint(&other, "3", &other.checkpoint(12, Some("1200".into())))
        .await;
    assert_eq!(created.unwrap(), None);
    let c = s.checkpoint(&other, "3").await.unwrap().unwrap();
    assert_eq!((c.sequence_number, c.offset.as_deref()), (12, Some("1200")));
    // A checkpoint blob without a sequence number (another tool's) is no position: written over.
    let name = format!("{NAMESPACE}/other-hub/$default/checkpoint/4").to_lowercase();
    s.client()
        .put_blob(&name, &BTreeMap::new(), Condition::Absent)
        .await
        .unwrap();
    assert!(s.checkpoint(&other, "4").await.unwrap().is_none());
    let created = s
        .create_checkpoint(&other, "4", &other.checkpoint(-1, Some("-1".into())))
        .await;
    assert_eq!(created.unwrap(), None);
    assert_eq!(s.checkpoint(&other, "4").await.unwrap().unwrap().sequence_number, -1);

    // The layout the SDKs use: lower-cased names, metadata ownerid / sequencenumber / offset.
    let all = s.client().list("").await.unwrap();
    let names: BTreeSet<&str> = all.iter().map(|b| b.name.as_str()).collect();
    let base = format!("{NAMESPACE}/{HUB}/$default");
    for n in ["ownership/0", "ownership/1", "checkpoint/0", "checkpoint/1"] {
        assert!(names.contains(format!("{base}/{n}").as_str()), "{n} in {names:?}");
    }
    let cp0 = all.iter().find(|b| b.name == format!("{base}/checkpoint/0")).unwrap();
    assert_eq!(cp0.metadata.get("sequencenumber").map(String::as_str), Some("50"));
    assert_eq!(cp0.metadata.get("offset").map(String::as_str), Some("5000"));
    let own1 = all.iter().find(|b| b.name == format!("{base}/ownership/1")).unwrap();
    assert_eq!(own1.metadata.get("ownerid").map(String::as_str), Some("b"));

    // Azurite checks the Shared Key signature: a wrong key is refused.
    let bad = BlobClient::new(
        &az.endpoint(),
        CONTAINER,
        BlobAuth::SharedKey {
            account: azurite::ACCOUNT.into(),
            key: b"not the key".to_vec(),
        },
    )
    .unwrap();
    assert_eq!(bad.list("").await.unwrap_err().status(), Some(403));

    // A SAS works as well (no Authorization header, the token in the query).
    let sas = BlobStore::new(BlobClient::new(&az.endpoint(), CONTAINER, BlobAuth::Sas(az.account_sas())).unwrap());
    let o = sas.ownerships(NAMESPACE, HUB, GROUP).await.unwrap();
    assert_eq!(o.len(), 2);
    let p1 = o.iter().find(|o| o.partition_id == "1").unwrap();
    assert!(sas
        .claim(&Ownership {
            owner_id: Some("c".into()),
            ..p1.clone()
        })
        .await
        .unwrap()
        .is_some());
    let (_, auth) = parse_connection_string(&format!(
        "BlobEndpoint={};SharedAccessSignature={}",
        az.endpoint(),
        az.account_sas()
    ))
    .unwrap();
    let from_cs = BlobClient::new(&az.endpoint(), CONTAINER, auth).unwrap();
    assert_eq!(from_cs.list(&format!("{base}/checkpoint/")).await.unwrap().len(), 2);
    let forged = BlobClient::new(
        &az.endpoint(),
        CONTAINER,
        BlobAuth::Sas(az.account_sas().replace("sp=rwdlac", "sp=rwdlacx")),
    )
    .unwrap();
    assert_eq!(
        forged.list("").await.unwrap_err().status(),
        Some(403),
        "a SAS whose fields do not match its signature is refused"
    );
}

/// Two replicas share a hub of 4 partitions through one blob container: each owns two,
/// 4 × 2k events arrive once; then one replica stops mid-stream and the other takes its
/// partitions over from the checkpoints (and reads what arrives after) with no loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_split_the_partitions_and_one_takes_over_when_the_other_stops() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let az = Azurite::start();
    let emu = EventHubEmulator::start(HUB, 4).await;
    let s = store(&az);
    let mut a = replica(&dir.path().join("a"), &emu, &az);
    let mut b = replica(&dir.path().join("b"), &emu, &az);
    a.start();
    b.start();

    // The load balancers settle on two partitions each.
    settle(&s).await;

    fill(&emu, 4, 0, 200, 10);
    let ok = wait_for(Duration::from_secs(120), || merged(&[&a, &b]).len() >= 8_000).await;
    assert!(
        ok,
        "8k events: {}\nA:\n{}\nB:\n{}",
        merged(&[&a, &b]).len(),
        a.tail(),
        b.tail()
    );
    let (missing, dups) = check(&merged(&[&a, &b]), 4, 2_000);
    assert!(missing.is_empty(), "{} missing", missing.len());
    assert!(dups.is_empty(), "{} duplicates with a stable split", dups.len());
    let (pa, pb) = (a.partitions(), b.partitions());
    assert_eq!(pa.len(), 2, "A read {pa:?}");
    assert_eq!(pb.len(), 2, "B read {pb:?}");
    assert!(pa.is_disjoint(&pb), "A {pa:?} B {pb:?}");
    // Checkpoints of every partition reach the last message.
    let h = hub(HUB);
    let ok = wait_for(Duration::from_secs(20), || {
        (0..4).all(|p| {
            futures_block(s.checkpoint(&h, &p.to_string()))
                .ok()
                .flatten()
                .is_some_and(|c| c.sequence_number == 199)
        })
    })
    .await;
    assert!(ok, "checkpoints: {:?}", s.checkpoints(NAMESPACE, HUB, GROUP).await);

    // B stops while events flow; A takes its partitions over and finishes.
    fill(&emu, 4, 2_000, 100, 10);
    let ok = wait_for(Duration::from_secs(60), || count_ids(&b.out).len() >= 4_000 + 200).await;
    assert!(ok, "B reads again\n{}", b.tail());
    let b_lines = lines(&b.out);
    b.stop().await;
    // More events after B is gone: only a takeover reads them from B's partitions.
    fill(&emu, 4, 3_000, 50, 10);
    let ok = wait_for(Duration::from_secs(120), || merged(&[&a, &b]).len() >= 14_000).await;
    assert!(
        ok,
        "14k events after the takeover: {}\nA:\n{}",
        merged(&[&a, &b]).len(),
        a.tail()
    );
    let ok = wait_for(Duration::from_secs(20), || {
        let o = futures_block(owners(&s));
        o.len() == 1 && o.values().all(|p| p.len() == 4)
    })
    .await;
    assert!(ok, "A owns every partition: {:?}", owners(&s).await);
    a.stop().await;
    let all = merged(&[&a, &b]);
    let (missing, dups) = check(&all, 4, 3_500);
    assert!(
        missing.is_empty(),
        "{} missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(a.partitions().len(), 4, "A took B's partitions over");
    // Re-reads only on B's partitions, at most what B had written after its checkpoint.
    assert!(
        dups.iter().all(|i| pb.contains(&(i / STRIDE))),
        "duplicates outside B's partitions"
    );
    assert!(dups.len() <= b_lines, "{} duplicates", dups.len());
    for r in [&a, &b] {
        let log = std::fs::read_to_string(&r.fwd.log).unwrap();
        assert!(!log.contains(azurite::KEY), "no account key in a log line");
    }
    let stats = emu.stats();
    eprintln!(
        "eventhub scale-out: A {pa:?} B {pb:?}; {} duplicates after B stopped; {} receivers, {} stolen; {:?}",
        dups.len(),
        stats.receivers.len(),
        stats.stolen,
        started.elapsed()
    );
}

/// `kill -9` of one replica mid-stream: after its claims expire the other takes its
/// partitions over from the last checkpoints; nothing is lost, and the only duplicates are
/// events of the killed replica's partitions that it had read past its checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_is_replaced_with_duplicates_only_from_its_in_flight_window() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let az = Azurite::start();
    let emu = EventHubEmulator::start(HUB, 4).await;
    let s = store(&az);
    let mut a = replica(&dir.path().join("a"), &emu, &az);
    let mut b = replica(&dir.path().join("b"), &emu, &az);
    a.start();
    b.start();
    settle(&s).await;
    fill(&emu, 4, 0, 300, 10);
    let ok = wait_for(Duration::from_secs(60), || lines(&b.out) >= 1_000).await;
    assert!(ok, "B reads\n{}", b.tail());
    // B's partitions, by its owner id (`m365-forwarder-HOST-PID-random`).
    let pid = format!("-{}-", b.fwd.id());
    let pb: BTreeSet<u64> = owners(&s)
        .await
        .into_iter()
        .filter(|(owner, _)| owner.contains(&pid))
        .flat_map(|(_, p)| p)
        .map(|p| p.parse::<u64>().unwrap())
        .collect();
    assert_eq!(pb.len(), 2, "B owns two partitions");
    b.fwd.kill9();
    let b_lines = lines(&b.out);
    let ok = wait_for(Duration::from_secs(120), || merged(&[&a, &b]).len() >= 12_000).await;
    assert!(
        ok,
        "12k events after the takeover: {}\nA:\n{}",
        merged(&[&a, &b]).len(),
        a.tail()
    );
    a.stop().await;
    let (missing, dups) = check(&merged(&[&a, &b]), 4, 3_000);
    assert!(missing.is_empty(), "{} missing", missing.len());
    assert!(
        dups.iter().all(|i| pb.contains(&(i / STRIDE))),
        "duplicates only on the killed replica's partitions {pb:?}"
    );
    assert!(dups.len() <= b_lines, "{} duplicates, B wrote {b_lines}", dups.len());
    eprintln!(
        "eventhub scale-out kill -9: B had {pb:?} and wrote {b_lines}; {} duplicates; {:?}",
        dups.len(),
        started.elapsed()
    );
}

/// Blob Storage out of reach (nothing listens): the source reports it, `/ready` fails and
/// nothing is read (no partition is read without a claim).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_blob_store_fails_readiness_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let az = Azurite::start();
    let emu = EventHubEmulator::start(HUB, 2).await;
    fill(&emu, 2, 0, 10, 10);
    let port = free_port();
    let storage = az
        .connection_string()
        .replace(&format!(":{}/", az.port), &format!(":{port}/"));
    let mut r = replica_with_storage(dir.path(), &emu, &storage);
    r.start();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        if let Ok(resp) = client
            .get(format!("http://127.0.0.1:{}/ready", r.api_port))
            .send()
            .await
        {
            last = (resp.status().as_u16(), resp.text().await.unwrap_or_default());
            if last.0 == 503 && last.1.contains("source eh failing") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        last.0 == 503 && last.1.contains("blob storage"),
        "readiness names the store: {last:?}\n{}",
        r.tail()
    );
    assert_eq!(lines(&r.out), 0, "nothing read without a claim");
    r.stop().await;
}
