//! End-to-end acknowledgment: finalizers on events, batch notifiers, and the per-source
//! tracker that advances checkpoints only over the contiguous prefix of delivered batches.
//!
//! A source registers every batch it emits, in order, per partition, with the checkpoint
//! value that is safe to commit once that batch (and all before it) is done. Each event
//! carries a [`Finalizer`]; every copy of an event (one per sink it was routed to) must be
//! marked `Delivered` or `Rejected` (dead-lettered). A copy dropped without a mark counts
//! as `Errored`, so a bug or an aborted shutdown can never move a checkpoint past data.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Outcome of one copy of an event. Ordered: the batch takes the worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Status {
    Delivered = 0,
    /// Written to the dead-letter file: processed, counts as done.
    Rejected = 1,
    /// Not delivered: the checkpoint must not pass it.
    Errored = 2,
}

impl Status {
    fn from_u8(v: u8) -> Status {
        match v {
            0 => Status::Delivered,
            1 => Status::Rejected,
            _ => Status::Errored,
        }
    }
}

/// Shared by every event of one source batch; reports to the tracker when the last
/// event copy is finalized.
#[derive(Debug)]
pub struct BatchNotifier {
    status: AtomicU8,
    partition: Arc<str>,
    seq: u64,
    tracker: Option<Arc<TrackerShared>>,
}

impl Drop for BatchNotifier {
    fn drop(&mut self) {
        if let Some(tracker) = &self.tracker {
            let status = Status::from_u8(self.status.load(Ordering::Acquire));
            tracker.complete(&self.partition, self.seq, status);
        }
    }
}

/// The handle an event carries. Clone it for every copy of the event.
#[derive(Debug)]
pub struct Finalizer {
    batch: Option<Arc<BatchNotifier>>,
    marked: bool,
}

impl Finalizer {
    /// A finalizer attached to no source (tests, offline tools).
    pub fn noop() -> Finalizer {
        Finalizer {
            batch: None,
            marked: true,
        }
    }

    pub fn new(batch: Arc<BatchNotifier>) -> Finalizer {
        Finalizer {
            batch: Some(batch),
            marked: false,
        }
    }

    /// Record the outcome of this copy. Later marks of the same copy keep the worst.
    pub fn mark(&mut self, status: Status) {
        if let Some(b) = &self.batch {
            b.status.fetch_max(status as u8, Ordering::AcqRel);
        }
        self.marked = true;
    }
}

impl Clone for Finalizer {
    /// A new, unmarked handle on the same batch.
    fn clone(&self) -> Finalizer {
        Finalizer {
            batch: self.batch.clone(),
            marked: self.batch.is_none(),
        }
    }
}

impl Drop for Finalizer {
    fn drop(&mut self) {
        if !self.marked {
            if let Some(b) = &self.batch {
                b.status.fetch_max(Status::Errored as u8, Ordering::AcqRel);
            }
        }
    }
}

#[derive(Debug)]
struct Pending {
    checkpoint: Option<String>,
    status: Option<Status>,
}

#[derive(Debug, Default)]
struct PartitionState {
    /// Sequence number of `pending[0]`.
    base: u64,
    next: u64,
    pending: VecDeque<Pending>,
    /// Newest checkpoint over the contiguous done prefix, not yet handed to the store.
    ready: Option<String>,
    /// A batch failed: the checkpoint is held here until restart.
    stalled: bool,
}

#[derive(Debug, Default)]
struct TrackerState {
    partitions: HashMap<Arc<str>, PartitionState>,
    delivered_batches: u64,
    errored_batches: u64,
    /// The partition of the first batch that failed for good.
    first_stalled: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct TrackerShared {
    state: Mutex<TrackerState>,
    /// Woken when a partition has a new checkpoint ready, or all pending work drained.
    changed: Notify,
    /// Fired at the first batch that failed for good (its partition's checkpoint is held
    /// from then on): the pipeline stops, so a restart reads it again.
    stalled: tokio_util::sync::CancellationToken,
}

impl TrackerShared {
    fn complete(&self, partition: &Arc<str>, seq: u64, status: Status) {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *guard;
        match status {
            Status::Errored => st.errored_batches += 1,
            _ => st.delivered_batches += 1,
        }
        let Some(p) = st.partitions.get_mut(partition) else {
            return;
        };
        let Some(idx) = seq.checked_sub(p.base) else {
            return;
        };
        if let Some(slot) = p.pending.get_mut(idx as usize) {
            slot.status = Some(status);
        }
        if status == Status::Errored && !p.stalled {
            p.stalled = true;
            tracing::error!(partition = %partition, seq, "batch not delivered; checkpoint held at the last delivered batch until restart");
            if st.first_stalled.is_none() {
                st.first_stalled = Some(partition.clone());
            }
            self.stalled.cancel();
        }
        let mut advanced = false;
        while let Some(front) = p.pending.front() {
            match front.status {
                Some(Status::Delivered) | Some(Status::Rejected) => {
                    let done = p.pending.pop_front().expect("front exists");
                    p.base += 1;
                    if let Some(cp) = done.checkpoint {
                        p.ready = Some(cp);
                    }
                    advanced = true;
                }
                _ => break,
            }
        }
        drop(guard);
        if advanced || status == Status::Errored {
            self.changed.notify_waiters();
        }
    }
}

/// Tracks the batches of one source, per partition. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct AckTracker {
    shared: Arc<TrackerShared>,
}

/// A checkpoint that became safe to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyCheckpoint {
    pub partition: Arc<str>,
    pub value: String,
}

impl AckTracker {
    pub fn new() -> AckTracker {
        AckTracker::default()
    }

    /// Register the next batch of `partition`, in emission order. `checkpoint` is the value
    /// to commit once this batch and every earlier batch of the partition are done; `None`
    /// for a batch that ends in the middle of a unit.
    pub fn register(&self, partition: &Arc<str>, checkpoint: Option<String>) -> Arc<BatchNotifier> {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let p = st.partitions.entry(partition.clone()).or_default();
        let seq = p.next;
        p.next += 1;
        p.pending.push_back(Pending {
            checkpoint,
            status: None,
        });
        Arc::new(BatchNotifier {
            status: AtomicU8::new(Status::Delivered as u8),
            partition: partition.clone(),
            seq,
            tracker: Some(self.shared.clone()),
        })
    }

    /// Take the checkpoints that became ready since the last call.
    pub fn take_ready(&self) -> Vec<ReadyCheckpoint> {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.partitions
            .iter_mut()
            .filter_map(|(k, p)| {
                p.ready.take().map(|value| ReadyCheckpoint {
                    partition: k.clone(),
                    value,
                })
            })
            .collect()
    }

    /// Give back checkpoints taken with [`AckTracker::take_ready`] whose commit failed, so
    /// the next commit retries them even if their partition gets no new acknowledgment;
    /// a newer value made ready meanwhile is kept instead.
    pub fn restore_ready(&self, ready: Vec<ReadyCheckpoint>) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        for r in ready {
            if let Some(p) = st.partitions.get_mut(&r.partition) {
                p.ready.get_or_insert(r.value);
            }
        }
    }

    /// The partition of the first batch that failed for good, if one did.
    pub fn first_stalled(&self) -> Option<Arc<str>> {
        if !self.shared.stalled.is_cancelled() {
            return None;
        }
        let st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.first_stalled.clone()
    }

    /// Resolves, with the partition's name, once a batch failed for good (no sink or
    /// dead-letter file took it): its partition's checkpoint is held until a restart, so
    /// running on would only pile up what a restart reads again.
    pub async fn stalled(&self) -> Arc<str> {
        self.shared.stalled.cancelled().await;
        let st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.first_stalled.clone().unwrap_or_else(|| Arc::from("?"))
    }

    /// Batches registered but not yet finalized, over all partitions.
    pub fn in_flight(&self) -> usize {
        let st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.partitions
            .values()
            .map(|p| p.pending.iter().filter(|x| x.status.is_none()).count())
            .sum()
    }

    /// (delivered or dead-lettered batches, errored batches) so far.
    pub fn counts(&self) -> (u64, u64) {
        let st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        (st.delivered_batches, st.errored_batches)
    }

    /// Wait until something changed (a checkpoint became ready or a batch errored).
    pub async fn changed(&self) {
        self.shared.changed.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn commits_only_contiguous_prefix() {
        let t = AckTracker::new();
        let p = part("p0");
        let b1 = t.register(&p, Some("10".into()));
        let b2 = t.register(&p, Some("20".into()));
        let b3 = t.register(&p, Some("30".into()));
        let mut f1 = Finalizer::new(b1);
        let mut f2 = Finalizer::new(b2);
        let mut f3 = Finalizer::new(b3);
        f3.mark(Status::Delivered);
        drop(f3);
        assert!(t.take_ready().is_empty(), "batch 3 done but 1 and 2 are not");
        f1.mark(Status::Delivered);
        drop(f1);
        assert_eq!(t.take_ready()[0].value, "10");
        f2.mark(Status::Rejected);
        drop(f2);
        assert_eq!(t.take_ready()[0].value, "30");
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn unmarked_copy_blocks_checkpoint() {
        let t = AckTracker::new();
        let p = part("p0");
        let b1 = t.register(&p, Some("1".into()));
        let b2 = t.register(&p, Some("2".into()));
        let mut a = Finalizer::new(b1);
        let copy = a.clone();
        a.mark(Status::Delivered);
        drop(a);
        drop(copy); // a sink dropped its copy without delivering
        let mut c = Finalizer::new(b2);
        c.mark(Status::Delivered);
        drop(c);
        assert!(t.take_ready().is_empty());
        assert_eq!(t.counts(), (1, 1));
    }

    #[test]
    fn fan_out_waits_for_every_copy() {
        let t = AckTracker::new();
        let p = part("p0");
        let b = t.register(&p, Some("x".into()));
        let mut orig = Finalizer::new(b);
        let mut s1 = orig.clone();
        let mut s2 = orig.clone();
        orig.mark(Status::Delivered);
        drop(orig);
        s1.mark(Status::Delivered);
        drop(s1);
        assert!(t.take_ready().is_empty(), "second sink has not acknowledged");
        s2.mark(Status::Delivered);
        drop(s2);
        assert_eq!(t.take_ready().len(), 1);
    }

    #[test]
    fn partitions_are_independent() {
        let t = AckTracker::new();
        let (a, b) = (part("a"), part("b"));
        let ba = t.register(&a, Some("a1".into()));
        let bb = t.register(&b, Some("b1".into()));
        let mut fb = Finalizer::new(bb);
        fb.mark(Status::Delivered);
        drop(fb);
        let ready = t.take_ready();
        assert_eq!(ready.len(), 1);
        assert_eq!(&*ready[0].partition, "b");
        drop(Finalizer::new(ba)); // errored
        assert!(t.take_ready().is_empty());
    }
}
