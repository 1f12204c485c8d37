//! Partition properties over a connection of their own: the per-partition lag metric (last
//! enqueued sequence number minus the checkpointed one), and stall detection: a partition
//! with unread events that received nothing for `stall_timeout_ms` ends the session, so the
//! source reconnects instead of waiting on a receive the client library never completes.

use std::time::{Duration, Instant};

use azure_messaging_eventhubs::ConsumerClient;
use tokio_util::sync::CancellationToken;

use super::consumer::{open_consumer, Shared};
use crate::telemetry::EventHubMetrics;

/// Longest wait for one management call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn watch(inner: Shared, opened: Instant, stop: CancellationToken, stalled: CancellationToken) {
    let every = Duration::from_millis(inner.cfg.config.lag_interval_ms);
    let stall = Duration::from_millis(inner.cfg.config.stall_timeout_ms);
    let mut client: Option<ConsumerClient> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        if client.is_none() {
            client = tokio::time::timeout(CALL_TIMEOUT, open_consumer(&inner.cfg))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let Some(c) = &client else { continue };
        match tokio::time::timeout(CALL_TIMEOUT, check(&inner, c, opened, stall)).await {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) => {
                stalled.cancel();
                break;
            }
            failed => {
                // A management call failed or hung: use a new connection next time.
                let error = match failed {
                    Ok(Err(e)) => e,
                    _ => "timed out".to_string(),
                };
                tracing::debug!(%error, "partition properties unavailable; reopening the management connection");
                if let Some(c) = client.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), c.close()).await;
                }
            }
        }
    }
    if let Some(c) = client {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.close()).await;
    }
}

/// Update the lag gauges; true when a partition with unread events is stalled.
async fn check(inner: &Shared, client: &ConsumerClient, opened: Instant, stall: Duration) -> Result<bool, String> {
    let props = client.get_eventhub_properties().await.map_err(|e| e.to_string())?;
    inner.ctx.health.source_ok(&inner.ctx.name);
    let mut stalled = false;
    for p in props.partition_ids {
        let pp = client.get_partition_properties(&p).await.map_err(|e| e.to_string())?;
        let done = inner
            .store
            .committed(&p)
            .await
            .map(|c| c.sequence_number)
            .unwrap_or(pp.beginning_sequence_number - 1);
        let lag = if pp.is_empty {
            0
        } else {
            (pp.last_enqueued_sequence_number - done).max(0)
        };
        inner
            .ctx
            .metrics
            .eventhub
            .partition_lag
            .get_or_create(&EventHubMetrics::partition(&inner.ctx.name, &p))
            .set(lag);
        // With a shared store another replica may own the partition: only ours can stall here.
        let ours = !inner.store.is_shared() || inner.reading.lock().unwrap_or_else(|e| e.into_inner()).contains(&p);
        // Waiting for the pipeline to take a batch (backpressure) is not a stall, and while
        // one partition waits the others can starve on the shared connection (its
        // undelivered prefetch holds the session's window): no partition is judged then.
        let waiting = !inner.sending.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
        if !ours || waiting {
            continue;
        }
        let read = inner.store.resume_point(&p).await.map(|c| c.sequence_number);
        let unread = !pp.is_empty && read.is_none_or(|r| pp.last_enqueued_sequence_number > r);
        let quiet_since = inner
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&p)
            .copied()
            .unwrap_or(opened)
            .max(opened);
        if unread && quiet_since.elapsed() > stall {
            tracing::warn!(
                partition = %p,
                last_enqueued = pp.last_enqueued_sequence_number,
                read_through = ?read,
                quiet_ms = quiet_since.elapsed().as_millis() as u64,
                "partition has unread events but receives nothing"
            );
            inner
                .ctx
                .metrics
                .eventhub
                .reconnects
                .get_or_create(&EventHubMetrics::partition(&inner.ctx.name, &p))
                .inc();
            stalled = true;
        }
    }
    Ok(stalled)
}
