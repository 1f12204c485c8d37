//! Indexer acknowledgment of one HEC channel: the ackIds of every batch waiting on the
//! channel are asked for together, one `/services/collector/ack` query per poll interval
//! (not one per batch), and each batch's wait ends when all of its ids are reported `true`.
//! When a wait fails, the events of the requests that were acknowledged are remembered for
//! the batch's next send ([`Acked`]): only the others are posted again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;

use super::client::{ClientError, HecClient};
use crate::sinks::{BatchId, Rejection, Settle, SinkError};
use crate::telemetry::{Metrics, SinkLabels};

/// A registered ackId: which registration it is (an id handed out again is registered
/// anew), and the wait it ends.
struct Waiter {
    serial: u64,
    tx: oneshot::Sender<()>,
}

/// The ackIds waiting on one channel, and whether its poller runs.
#[derive(Default)]
struct Waiting {
    ids: HashMap<u64, Waiter>,
    /// Registrations so far (each waiter's `serial`).
    registered: u64,
    polling: bool,
}

/// An ackId registered as soon as its request's reply came ([`AckBook::register`]), for
/// [`AckBook::settle`].
pub struct Registered {
    id: u64,
    rx: oneshot::Receiver<()>,
    /// The events (indexes in the batch) of the request the id was given for.
    events: Vec<usize>,
}

impl Registered {
    /// The events of the request this id acknowledges.
    pub fn for_events(mut self, events: Vec<usize>) -> Registered {
        self.events = events;
        self
    }
}

/// What a batch whose acknowledgment failed had done, for its next send: the events of its
/// acknowledged requests (indexed: not posted again) and the events refused for good.
pub struct Taken {
    pub indexed: Vec<usize>,
    pub rejected: Vec<Rejection>,
}

/// Batches sent again after a failed acknowledgment, shared by the sink's instances (the
/// driver gives the batch to whichever is idle). Without it the whole batch was posted
/// again, and the events of its acknowledged requests were indexed twice.
#[derive(Default)]
pub struct Acked {
    batches: Mutex<VecDeque<(BatchId, Taken)>>,
}

impl std::fmt::Debug for Acked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acked(..)")
    }
}

impl Acked {
    /// Batches remembered at most; an older one forgotten is posted again in full
    /// (duplicates, never a loss).
    const KEEP: usize = 1024;

    fn remember(&self, batch: BatchId, taken: Taken) {
        let mut b = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        b.retain(|(id, _)| *id != batch);
        if b.len() >= Self::KEEP {
            b.pop_front();
        }
        b.push_back((batch, taken));
    }

    /// What an earlier send of `batch` had done, if its acknowledgment failed.
    pub fn take(&self, batch: &BatchId) -> Option<Taken> {
        let mut b = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        let at = b.iter().position(|(id, _)| id == batch)?;
        b.remove(at).map(|(_, t)| t)
    }
}

/// Where [`AckBook::settle`] leaves what a failed wait had done.
pub struct Remember {
    pub acked: Arc<Acked>,
    pub batch: BatchId,
    pub rejected: Vec<Rejection>,
}

pub struct AckBook {
    client: HecClient,
    poll: Duration,
    /// The longest pause a `Retry-After` on the query makes.
    max_wait: Duration,
    waiting: Mutex<Waiting>,
}

impl AckBook {
    pub fn new(client: HecClient, poll: Duration, max_wait: Duration) -> Arc<AckBook> {
        Arc::new(AckBook {
            client,
            poll,
            max_wait,
            waiting: Mutex::new(Waiting::default()),
        })
    }

    /// Registers `id`, given by the reply to a request just now (not when the batch's last
    /// request is answered: an answer to a poll must not find an older request's wait under
    /// an id a newer request already has). The poller (started when none runs) resolves the
    /// wait when the id is reported indexed; a dropped [`Registered`] is forgotten at the
    /// next poll.
    ///
    /// An id already waited for was handed out again: the indexer counts ackIds from 0 per
    /// channel, so after a restart (its acknowledgment state lost) or behind a load balancer
    /// without sticky sessions (each indexer counting on its own) a new request can get the
    /// id of one still waiting. The older wait then ends in failure (its sender is dropped
    /// here) and its batch is sent again, rather than taking the new request's
    /// acknowledgment for its own; a poll asked before this registration does not resolve
    /// it either (its answer may be about the older request).
    pub fn register(self: &Arc<Self>, id: u64) -> Registered {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let (tx, rx) = oneshot::channel();
        w.registered += 1;
        let serial = w.registered;
        if w.ids
            .insert(id, Waiter { serial, tx })
            .is_some_and(|old| !old.tx.is_closed())
        {
            tracing::warn!(
                ack_id = id,
                "HEC ackId handed out again while a request still waited for it (the indexer \
                 restarted, or requests reach several indexers without sticky sessions): that \
                 request is sent again"
            );
        }
        if !w.polling {
            w.polling = true;
            tokio::spawn(self.clone().poll_loop());
        }
        Registered {
            id,
            rx,
            events: Vec::new(),
        }
    }

    /// Every `poll`: one query for every id still waited for; ends when none is left.
    async fn poll_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.poll).await;
            // The ids asked for, each with the registration it was asked for.
            let asked: HashMap<u64, u64> = {
                let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                w.ids.retain(|_, x| !x.tx.is_closed());
                if w.ids.is_empty() {
                    w.polling = false;
                    return;
                }
                w.ids.iter().map(|(&id, x)| (id, x.serial)).collect()
            };
            let ids: Vec<u64> = asked.keys().copied().collect();
            match self.client.query_acks(&ids).await {
                Ok(acks) => {
                    let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                    for (id, done) in acks {
                        let same = |x: &Waiter| asked.get(&id) == Some(&x.serial);
                        if done && w.ids.get(&id).is_some_and(same) {
                            if let Some(x) = w.ids.remove(&id) {
                                let _ = x.tx.send(());
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, pending = ids.len(), "HEC acknowledgment query failed; will ask again");
                    // Asked to wait: the next query comes no sooner (at most a quarter of
                    // the acknowledgment timeout, and five minutes).
                    if let ClientError::AckWait { retry_after, .. } = e {
                        let d = retry_after
                            .min(crate::sinks::driver::MAX_RETRY_AFTER)
                            .min(self.max_wait);
                        tokio::time::sleep(d.saturating_sub(self.poll)).await;
                    }
                }
            }
        }
    }

    /// The wait for the indexer to acknowledge the `registered` ids; fails after `timeout`
    /// (the batch is then sent again). With the sink's metrics and name, the ids waiting are
    /// counted in `sink_acks_pending` and the late ones in `sink_ack_timeouts_total`. When
    /// the wait fails, the events of the ids that were acknowledged go to `remember`.
    pub fn settle(
        registered: Vec<Registered>,
        timeout: Duration,
        metrics: Option<(Arc<Metrics>, String)>,
        remember: Remember,
    ) -> Settle {
        let pending: Option<Gauge> = metrics.as_ref().map(|(m, name)| {
            m.sink_acks_pending
                .get_or_create(&SinkLabels { sink: name.clone() })
                .clone()
        });
        if let Some(g) = &pending {
            g.inc_by(registered.len() as i64);
        }
        Settle::new(async move {
            let mut indexed: Vec<usize> = Vec::new();
            let mut rxs = registered.into_iter().map(|r| (r.rx, r.id, r.events)).peekable();
            let all = async {
                while let Some((rx, id, _)) = rxs.peek_mut() {
                    let id = *id;
                    // Resolved when the id is reported indexed; dropped unresolved only when
                    // the id was handed out again for another request (see `register`).
                    if rx.await.is_err() {
                        return Err(id);
                    }
                    if let Some((_, _, events)) = rxs.next() {
                        indexed.extend(events);
                    }
                    if let Some(g) = &pending {
                        g.dec();
                    }
                }
                Ok(())
            };
            let result = tokio::time::timeout(timeout, all).await;
            // Of the ids not yet seen, some may have been acknowledged meanwhile.
            let mut late: Vec<u64> = Vec::new();
            let mut left = 0;
            for (mut rx, id, events) in rxs {
                left += 1;
                match rx.try_recv() {
                    Ok(()) => indexed.extend(events),
                    Err(_) => late.push(id),
                }
            }
            if let Some(g) = &pending {
                g.dec_by(left);
            }
            if !matches!(result, Ok(Ok(()))) {
                let Remember { acked, batch, rejected } = remember;
                if !indexed.is_empty() {
                    tracing::info!(
                        events = indexed.len(),
                        "of the batch sent again, the events of acknowledged requests are not posted again"
                    );
                }
                acked.remember(batch, Taken { indexed, rejected });
            }
            match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(id)) => Err(SinkError::Unavailable {
                    kind: "hec_ack_lost",
                    message: format!("ackId {id} was handed out again before it was acknowledged"),
                }),
                Err(_) => {
                    tracing::warn!(
                        ack_ids = ?late,
                        timeout_secs = timeout.as_secs(),
                        "HEC requests not acknowledged in time; sending the batch again"
                    );
                    if let Some((m, name)) = &metrics {
                        Metrics::sink_count(&m.sink_ack_timeouts, name, late.len() as u64);
                    }
                    Err(SinkError::Unavailable {
                        kind: "hec_ack_timeout",
                        message: format!(
                            "{} request(s) not acknowledged within {} s",
                            late.len(),
                            timeout.as_secs()
                        ),
                    })
                }
            }
        })
    }
}
