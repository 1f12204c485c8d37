//! Delivery reports of the Kafka sink: librdkafka's report for each message of a round (the
//! messages of one send), collected in one table that the send waits on once, and which
//! failures are final.
//!
//! rdkafka's `FutureProducer` allocates a channel and a boxed sender per message and wakes
//! the waiting task per report; here a message carries its index in the round as its
//! delivery tag (a plain integer, no allocation), the producer's polling thread records each
//! report in the table, and the send is woken once, when the round's last report is in.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use tokio::sync::Notify;

use crate::event::Event;
use crate::sinks::{BatchId, Rejection};

/// The sink's producer: its context is the report table.
pub(super) type KafkaProducer = ThreadedProducer<Reports>;

/// A message's delivery report: delivered, or the error it failed with.
pub(super) type Report = Result<(), KafkaError>;

/// Bits of a delivery tag that hold the message's index; the others hold the round (32 on
/// 64-bit targets; on 32-bit ones 16, so a round number comes back after 65,536 sends).
const INDEX_BITS: u32 = usize::BITS / 2;
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;

/// Most messages in one round (the index must fit its bits of the tag).
pub(super) const MAX_ROUND: usize = INDEX_MASK;

/// What a send that gave up left of its batch: the messages still to deliver and what the
/// delivered part reported. The driver sends the same batch again; that send takes up
/// from here instead of producing the delivered messages a second time.
pub(super) struct Unfinished {
    batch: BatchId,
    pub pending: Vec<usize>,
    pub rejected: Vec<Rejection>,
    pub bytes: u64,
}

impl Unfinished {
    pub fn new(events: &[Event], pending: Vec<usize>, rejected: Vec<Rejection>, bytes: u64) -> Unfinished {
        Unfinished {
            batch: BatchId::of(events),
            pending,
            rejected,
            bytes,
        }
    }

    /// This, if it was left by the same batch.
    pub fn of(self, events: &[Event]) -> Option<Unfinished> {
        (self.batch == BatchId::of(events)).then_some(self)
    }
}

/// The producer's context: where its delivery reports are recorded.
#[derive(Clone, Default)]
pub(super) struct Reports {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    table: Mutex<Table>,
    /// Woken when a round's last report is in.
    done: Notify,
}

#[derive(Default)]
struct Table {
    /// The round the table is for. Reports of an earlier round (one its send gave up on, or
    /// messages purged from a replaced producer) do not match it and are ignored.
    round: usize,
    reports: Vec<Option<Report>>,
    outstanding: usize,
}

impl Reports {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.shared.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a round of `n` messages (at most [`MAX_ROUND`]); message `i` of it is sent
    /// with the delivery tag [`Round::tag`]`(i)`. An unfinished round is abandoned.
    pub(super) fn begin(&self, n: usize) -> Round {
        debug_assert!(n <= MAX_ROUND);
        let mut t = self.table();
        t.round = (t.round + 1) & (usize::MAX >> INDEX_BITS);
        t.reports.clear();
        t.reports.resize_with(n, || None);
        t.outstanding = n;
        Round(t.round)
    }

    /// Waits until every message of the round has its report; the reports, in the order
    /// of the round's indexes.
    pub(super) async fn wait(&self) -> Vec<Option<Report>> {
        loop {
            // A report that completes the round between this check and the wait leaves a
            // permit in `done`, so the wait returns at once.
            {
                let mut t = self.table();
                if t.outstanding == 0 {
                    return std::mem::take(&mut t.reports);
                }
            }
            self.shared.done.notified().await;
        }
    }

    /// Records a report for message `index` of `round` that librdkafka refused to take (its
    /// produce call failed), so the round's wait counts it like a delivery report.
    pub(super) fn refused(&self, round: Round, index: usize, err: rdkafka::error::KafkaError) {
        self.record(round.tag(index), Err(err));
    }

    fn record(&self, tag: usize, report: Report) {
        let (round, index) = (tag >> INDEX_BITS, tag & INDEX_MASK);
        let mut t = self.table();
        if t.round != round {
            return;
        }
        let Some(slot) = t.reports.get_mut(index) else {
            return;
        };
        let first = slot.is_none();
        *slot = Some(report);
        if first {
            t.outstanding -= 1;
            if t.outstanding == 0 {
                drop(t);
                self.shared.done.notify_one();
            }
        }
    }
}

/// A round of messages (see [`Reports::begin`]).
#[derive(Clone, Copy)]
pub(super) struct Round(usize);

impl Round {
    /// The delivery tag of the round's message `index`.
    pub(super) fn tag(self, index: usize) -> usize {
        self.0 << INDEX_BITS | index
    }
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: usize) {
        self.record(tag, result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

/// Refusals in the produce call itself that no retry fixes, besides [`is_permanent`]: the
/// cluster's metadata has no such topic (with topic creation off), or the topic is not
/// ours to write. Retried, the whole send would fail and be sent again (with the messages
/// that did go) for as long as the topic is missing: the message is dead-lettered instead,
/// with librdkafka's error in the detail, and the rest goes on. (In a delivery report the same codes
/// can be a moment of a topic being created or moved: retried there.)
pub(super) fn refused_for_good(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
        )
    )
}

/// Delivery errors that no retry can fix: the message goes to the dead-letter file (from a
/// delivery report, only once it was refused in a round of its own).
pub(super) fn is_permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidTopic
        )
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdkafka::types::RDKafkaErrorCode;

    use super::*;

    fn failed() -> Report {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut))
    }

    #[tokio::test]
    async fn a_round_ends_when_its_last_report_is_in() {
        let r = Reports::default();
        let round = r.begin(3);
        r.record(round.tag(2), Ok(()));
        r.record(round.tag(0), failed());
        let waiting = tokio::spawn({
            let r = r.clone();
            async move { r.wait().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "one report is still missing");
        r.record(round.tag(1), Ok(()));
        let reports = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reports.len(), 3);
        assert!(matches!(
            reports[0],
            Some(Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)))
        ));
        assert!(matches!(reports[1], Some(Ok(()))));
        assert!(matches!(reports[2], Some(Ok(()))));
    }

    #[tokio::test]
    async fn reports_of_an_abandoned_round_are_ignored() {
        let r = Reports::default();
        let old = r.begin(2);
        r.record(old.tag(0), Ok(()));
        let new = r.begin(2);
        // The old round's messages report late (purged): they must not count for the new one.
        r.record(old.tag(1), failed());
        r.record(old.tag(0), failed());
        r.record(new.tag(0), Ok(()));
        let pending = tokio::time::timeout(Duration::from_millis(50), r.wait()).await;
        assert!(pending.is_err(), "the new round still waits for its message 1");
        r.record(new.tag(1), failed());
        let reports = tokio::time::timeout(Duration::from_secs(5), r.wait()).await.unwrap();
        assert!(matches!(reports[0], Some(Ok(()))));
        assert!(matches!(reports[1], Some(Err(_))));
    }

    #[tokio::test]
    async fn an_empty_round_is_done_at_once_and_a_repeated_report_counts_once() {
        let r = Reports::default();
        r.begin(0);
        assert!(r.wait().await.is_empty());
        let round = r.begin(2);
        r.record(round.tag(0), Ok(()));
        r.record(round.tag(0), Ok(()));
        r.record(round.tag(7), Ok(())); // no such message
        assert!(tokio::time::timeout(Duration::from_millis(50), r.wait()).await.is_err());
        r.record(round.tag(1), Ok(()));
        assert_eq!(r.wait().await.len(), 2);
    }
}
