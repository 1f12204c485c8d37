//! Unit tests of the sink driver: backoff, coalescing, batches settling after they are
//! written.

use super::*;
use crate::ack::{AckTracker, Finalizer};
use crate::event::{EventKind, EventMeta, Position};
use bytes::Bytes;
use std::sync::Mutex;
use tokio::sync::oneshot;

type Sent = Arc<Mutex<Vec<(String, Option<oneshot::Sender<bool>>)>>>;

/// A sink whose batches are written at once and acknowledged when the test says so.
struct Later {
    sent: Sent,
    max: usize,
}

#[async_trait::async_trait]
impl Sink for Later {
    async fn send(&mut self, events: &[Event]) -> Result<SendReport, SinkError> {
        let (tx, rx) = oneshot::channel();
        let raw = events
            .iter()
            .map(|e| String::from_utf8_lossy(&e.raw))
            .collect::<Vec<_>>()
            .join(",");
        self.sent.lock().unwrap().push((raw, Some(tx)));
        Ok(SendReport {
            bytes: 0,
            rejected: Vec::new(),
            settle: Some(Settle::new(async move {
                match rx.await {
                    Ok(true) => Ok(()),
                    _ => Err(SinkError::Unavailable {
                        kind: "test",
                        message: "not acknowledged".into(),
                    }),
                }
            })),
        })
    }

    fn max_unsettled(&self) -> usize {
        self.max
    }
}

fn ack(sent: &Sent, i: usize, ok: bool) {
    let tx = sent.lock().unwrap()[i].1.take().expect("not answered yet");
    tx.send(ok).unwrap();
}

async fn until(f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached in 2.5 s");
}

/// With no wait (the Kafka sink), the batches already queued are merged up to the limit
/// and nothing is waited for.
#[tokio::test]
async fn coalescing_without_wait_takes_only_what_is_queued() {
    let ev = |i: u64| {
        let meta = EventMeta::new(
            Arc::from("src"),
            "SignInLogs",
            EventKind::SignIn,
            Position::at(Arc::from("p"), i, 0),
        );
        Event::new(Bytes::from(format!("e{i}")), meta, Finalizer::noop())
    };
    let (tx, mut rx) = mpsc::channel(8);
    for i in 1..4 {
        tx.send(vec![ev(2 * i), ev(2 * i + 1)]).await.unwrap();
    }
    let l = BatchLimits {
        max_events: 6,
        max_wait: Duration::ZERO,
    };
    let force = CancellationToken::new();
    let mut batch = vec![ev(0), ev(1)];
    coalesce(&mut batch, &mut rx, l, &force).await;
    assert_eq!(batch.len(), 6, "two queued batches merged, up to max_events");
    let mut next = rx.recv().await.unwrap();
    let started = std::time::Instant::now();
    coalesce(&mut next, &mut rx, l, &force).await;
    assert_eq!(next.len(), 2, "nothing else queued");
    assert!(started.elapsed() < Duration::from_millis(50), "did not wait for more");
    drop(tx);
}

/// Written batches wait for their acknowledgment without holding the sink, up to
/// `max_unsettled`; nothing is acknowledged upstream before the receiver's
/// acknowledgment, and a batch whose acknowledgment fails is sent again before new input.
#[tokio::test]
async fn written_batches_settle_later_and_a_failed_one_is_sent_again_first() {
    let sent: Sent = Arc::default();
    let metrics = Arc::new(Metrics::new());
    let dir = tempfile::tempdir().unwrap();
    let driver = SinkDriver {
        name: Arc::from("s"),
        sinks: vec![Box::new(Later {
            sent: sent.clone(),
            max: 2,
        })],
        retry: RetryPolicy {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
        },
        dead_letter: Arc::new(DeadLetter::new(&dir.path().join("dl.ndjson"), metrics.clone())),
        metrics,
        health: Arc::new(Health::default()),
        force: CancellationToken::new(),
    };
    let (tx, rx) = mpsc::channel(8);
    let task = tokio::spawn(driver.run(rx));
    let upstream = AckTracker::new();
    let part: Arc<str> = Arc::from("p");
    for i in 0..4u64 {
        let n = upstream.register(&part, Some(i.to_string()));
        let meta = EventMeta::new(
            Arc::from("src"),
            "SignInLogs",
            EventKind::SignIn,
            Position::at(part.clone(), i, 0),
        );
        let e = Event::new(Bytes::from(format!("b{i}")), meta, Finalizer::new(n));
        tx.send(vec![e]).await.unwrap();
    }
    let count = || sent.lock().unwrap().len();
    until(|| count() == 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        count(),
        2,
        "at most max_unsettled batches wait for their acknowledgment"
    );
    assert_eq!(upstream.in_flight(), 4, "written is not delivered");
    // Both fail, the later one first: they are sent again in their first order, before
    // the input waiting behind them.
    ack(&sent, 1, false);
    tokio::time::sleep(Duration::from_millis(20)).await;
    ack(&sent, 0, false);
    until(|| count() == 4).await;
    {
        let s = sent.lock().unwrap();
        assert_eq!(
            (s[2].0.as_str(), s[3].0.as_str()),
            ("b0", "b1"),
            "failed batches go first, in order"
        );
    }
    assert_eq!(upstream.in_flight(), 4);
    ack(&sent, 3, true);
    until(|| count() == 5).await;
    assert_eq!(sent.lock().unwrap()[4].0, "b2");
    until(|| upstream.in_flight() == 3).await;
    assert!(upstream.take_ready().is_empty(), "b0 not delivered yet: no checkpoint");
    ack(&sent, 2, true);
    ack(&sent, 4, true);
    until(|| count() == 6).await;
    ack(&sent, 5, true);
    until(|| upstream.in_flight() == 0).await;
    assert_eq!(upstream.take_ready()[0].value, "3");
    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn backoff_grows_and_is_capped() {
    let p = RetryPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(2),
    };
    let d1 = p.delay(1);
    assert!(
        d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(101),
        "{d1:?}"
    );
    let d4 = p.delay(4);
    assert!(
        d4 >= Duration::from_millis(400) && d4 <= Duration::from_millis(801),
        "{d4:?}"
    );
    for a in 10..40 {
        assert!(p.delay(a) <= Duration::from_millis(2001));
    }
}

/// `Retry-After` makes the wait longer than the backoff, never shorter, and at most
/// `MAX_RETRY_AFTER`.
#[test]
fn retry_after_lengthens_the_backoff_up_to_a_limit() {
    let policy = RetryPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    let throttled = |secs| SinkError::Throttled {
        kind: "t",
        message: String::new(),
        retry_after: Duration::from_secs(secs),
    };
    assert_eq!(retry_delay(&policy, 1, &throttled(7)), Duration::from_secs(7));
    assert_eq!(retry_delay(&policy, 1, &throttled(86_400)), MAX_RETRY_AFTER);
    let short = retry_delay(&policy, 20, &throttled(0));
    assert!(short >= Duration::from_millis(500), "{short:?}: the backoff, not 0");
    let plain = SinkError::Unavailable {
        kind: "u",
        message: String::new(),
    };
    assert!(retry_delay(&policy, 1, &plain) <= Duration::from_millis(100));
}
