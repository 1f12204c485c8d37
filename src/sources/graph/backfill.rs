//! History backfill (`m365-forwarder backfill`): a Graph source reads the window
//! `[since, until)` once, in chunks of `Plan::chunk`, with the live source's client (auth,
//! paging, 429/Retry-After, request budget), then ends.
//!
//! Resuming: the progress is a checkpoint under the partition `backfill:<resource>` (never
//! the live watermark's key), committed like any checkpoint: only once the sinks
//! acknowledged every page before it. It holds the window, the start of the first chunk not
//! yet complete (`done`) and the objects of that chunk already acknowledged. A re-run with
//! the same `--since` reads that chunk again (nextLinks expire, so they are not kept) and
//! skips those objects: no page that was acknowledged is sent twice, and nothing is lost.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client::{GraphClient, GraphError};
use super::identity;
use super::poller::{follow, CycleError, Poller};
use super::state::{filter_time, format_time, parse_time, Micros, PollState};
use super::{GraphConfig, Resource, TenantConfig};
use crate::checkpoint::partition_id;
use crate::decode::{decode_unit, DecodedRecord, InputFormat};
use crate::event::EventKind;
use crate::sources::{BatchBuilder, SourceContext, SourceError};
use crate::telemetry::GraphMetrics;

/// What to read: the same for every backfilled source.
#[derive(Debug)]
pub struct Plan {
    /// Start of the window (inclusive), on the resource's last-updated property.
    pub since: Micros,
    /// End of the window (exclusive). `None`: the window stored by an unfinished run with
    /// the same `since`, else `default_until`.
    pub until: Option<Micros>,
    pub default_until: Micros,
    /// Length of one chunk (one `$filter` window; the unit of completion).
    pub chunk: Duration,
    /// Forget a stored progress and read the window again.
    pub restart: bool,
    pub progress: Arc<Progress>,
}

impl Plan {
    fn chunk_us(&self) -> i64 {
        (self.chunk.as_micros() as i64).max(1_000_000)
    }
}

/// Counters the command line shows while the backfill runs (written by the sources only).
#[derive(Debug, Default)]
pub struct Progress {
    /// Pages read.
    pub pages: AtomicU64,
    /// Objects read (incidents, alerts, risk records).
    pub items: AtomicU64,
    /// Events handed to the pipeline.
    pub events: AtomicU64,
    /// Objects outside the window (a server that ignored the upper bound).
    pub outside: AtomicU64,
    units: Mutex<BTreeMap<String, Unit>>,
}

/// One source × tenant × resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub since: Micros,
    pub until: Micros,
    /// Everything before this was read (the start of the chunk being read).
    pub position: Micros,
    pub complete: bool,
    /// Where a resumed run started (`None`: from `since`).
    pub resumed_at: Option<Micros>,
}

/// A consistent copy of the progress.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub pages: u64,
    pub items: u64,
    pub events: u64,
    pub outside: u64,
    pub units: BTreeMap<String, Unit>,
}

impl Snapshot {
    /// Share of the windows read, 0.0 ..= 1.0.
    pub fn fraction(&self) -> f64 {
        let total: i64 = self.units.values().map(|u| (u.until - u.since).max(0)).sum();
        if total == 0 {
            return if self.units.values().all(|u| u.complete) {
                1.0
            } else {
                0.0
            };
        }
        let done: i64 = self
            .units
            .values()
            .map(|u| {
                if u.complete {
                    (u.until - u.since).max(0)
                } else {
                    (u.position - u.since).clamp(0, (u.until - u.since).max(0))
                }
            })
            .sum();
        done as f64 / total as f64
    }

    /// The earliest position of a unit not complete (where the slowest one reads).
    pub fn position(&self) -> Option<Micros> {
        self.units.values().filter(|u| !u.complete).map(|u| u.position).min()
    }

    pub fn window(&self) -> Option<(Micros, Micros)> {
        let since = self.units.values().map(|u| u.since).min()?;
        let until = self.units.values().map(|u| u.until).max()?;
        Some((since, until))
    }
}

impl Progress {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            pages: self.pages.load(Ordering::Relaxed),
            items: self.items.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            outside: self.outside.load(Ordering::Relaxed),
            units: self.units.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    fn set(&self, name: &str, unit: Unit) {
        self.units
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), unit);
    }
}

/// The backfill checkpoint of one tenant and resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillState {
    pub v: u32,
    pub since: String,
    pub until: String,
    /// Everything last updated in `[since, done)` was read and acknowledged.
    pub done: String,
    #[serde(default)]
    pub complete: bool,
    /// The objects of the chunk starting at `done` that were already acknowledged.
    #[serde(default)]
    pub seen: PollState,
}

impl BackfillState {
    fn new(since: Micros, until: Micros) -> BackfillState {
        BackfillState {
            v: 1,
            since: format_time(since),
            until: format_time(until),
            done: format_time(since),
            complete: until <= since,
            seen: PollState::new(since),
        }
    }

    fn since_us(&self) -> Micros {
        parse_time(&self.since).unwrap_or(0)
    }
    fn until_us(&self) -> Micros {
        parse_time(&self.until).unwrap_or(0)
    }
    fn done_us(&self) -> Micros {
        parse_time(&self.done).unwrap_or(0)
    }

    pub fn to_checkpoint(&self) -> String {
        serde_json::to_string(self).expect("backfill state serializes")
    }

    pub fn from_checkpoint(s: &str) -> Result<BackfillState, String> {
        let st: BackfillState = serde_json::from_str(s).map_err(|e| e.to_string())?;
        for (name, v) in [("since", &st.since), ("until", &st.until), ("done", &st.done)] {
            if parse_time(v).is_none() {
                return Err(format!("{name} `{v}` is not a time"));
            }
        }
        Ok(st)
    }
}

/// The checkpoint partition of a resource's backfill.
pub fn partition(resource: Resource) -> String {
    format!("backfill:{}", resource.partition())
}

/// How many times a chunk answered with a 206 is read again before the backfill stops.
const PARTIAL_ATTEMPTS: u32 = 3;

/// Read the window of `plan` for one tenant, then return.
pub(super) async fn run_tenant(
    ctx: &SourceContext,
    config: &GraphConfig,
    tenant: &TenantConfig,
    client: GraphClient,
    plan: &Plan,
) -> Result<(), SourceError> {
    let resource = config.resource;
    let part = partition(resource);
    let key = ctx.checkpoint_key(Some(&tenant.tenant_id), &part);
    let unit_name = format!("{}/{}/{}", ctx.name, tenant.tenant_id, resource.partition());
    let fatal = |message: String| SourceError::Fatal {
        source_name: ctx.name.to_string(),
        message,
    };
    let stored = match ctx.checkpoints.get(&key)? {
        Some(v) => Some(BackfillState::from_checkpoint(&v).map_err(|e| {
            fatal(format!(
                "checkpoint {key} is not a backfill state ({e}); run with --restart to start over"
            ))
        })?),
        None => None,
    };
    let fresh = || BackfillState::new(plan.since, plan.until.unwrap_or(plan.default_until));
    let mut resumed_at = None;
    let mut st = match stored {
        Some(s) if !plan.restart && s.since_us() == plan.since && plan.until.is_none_or(|u| u == s.until_us()) => {
            if s.complete {
                tracing::info!(tenant = %tenant.tenant_id, resource = resource.partition(), since = %s.since, until = %s.until,
                    "this backfill window is already complete; --restart reads it again");
            } else {
                tracing::info!(tenant = %tenant.tenant_id, resource = resource.partition(), at = %s.done,
                    already = s.seen.items.len() + s.seen.alerts.len(), "resuming the backfill");
                resumed_at = Some(s.done_us());
            }
            s
        }
        Some(s) => {
            tracing::info!(tenant = %tenant.tenant_id, resource = resource.partition(), old_since = %s.since, old_until = %s.until,
                restart = plan.restart, "starting the backfill over (another window, or --restart)");
            fresh()
        }
        None => fresh(),
    };
    let (since, until) = (st.since_us(), st.until_us());
    let report = |st: &BackfillState| {
        plan.progress.set(
            &unit_name,
            Unit {
                since,
                until,
                position: st.done_us(),
                complete: st.complete,
                resumed_at,
            },
        )
    };
    report(&st);
    let mut poller = Poller {
        ctx,
        config,
        client,
        filters: config.filters_for(tenant).clone(),
        tenant: Arc::from(tenant.tenant_id.as_str()),
        partition: partition_id(Some(&tenant.tenant_id), &part),
        offset: 0,
        registered: None,
        expand_off_until: None,
        rescan_at: None,
        rescan_floor: None,
        held_since: None,
    };
    while !st.complete {
        let from = st.done_us();
        let to = from.saturating_add(plan.chunk_us()).min(until);
        // The query's bounds are whole seconds (`filter_time`): the last chunk ends at the
        // second after `until`, so that nothing of its last fraction of a second is left out.
        let to = if to >= until { whole_second_up(until) } else { to };
        let mut attempts = 0;
        loop {
            match poller.backfill_chunk(&mut st, from, to, until, plan).await {
                Ok(true) => break,
                Ok(false) => {
                    attempts += 1;
                    if attempts >= PARTIAL_ATTEMPTS {
                        return Err(fatal(format!(
                            "tenant {}: Graph answered 206 Partial Content for {}..{} {attempts} times; \
                             what was acknowledged is kept: run the same backfill again later to continue",
                            tenant.tenant_id,
                            format_time(from),
                            format_time(to)
                        )));
                    }
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(config.poll_interval) => {}
                    }
                }
                Err(CycleError::Source(SourceError::ShuttingDown(_)))
                | Err(CycleError::Graph(GraphError::ShuttingDown)) => return Ok(()),
                Err(CycleError::Source(e)) => return Err(e),
                Err(CycleError::Graph(e)) => {
                    ctx.metrics
                        .graph
                        .poll_errors
                        .get_or_create(&GraphMetrics::tenant_value(&ctx.name, &tenant.tenant_id, e.kind()))
                        .inc();
                    return Err(fatal(format!(
                        "tenant {}: {e}; what was acknowledged is kept: run the same backfill again to continue",
                        tenant.tenant_id
                    )));
                }
            }
        }
        report(&st);
    }
    Ok(())
}

/// `t` rounded down to a whole second.
fn whole_second_down(t: Micros) -> Micros {
    t - t.rem_euclid(1_000_000)
}

/// `t` rounded up to a whole second.
fn whole_second_up(t: Micros) -> Micros {
    let down = whole_second_down(t);
    if down == t {
        t
    } else {
        down.saturating_add(1_000_000)
    }
}

/// What a backfill does with a chunk it could not read whole.
const CHUNK_REDO: &str = "the chunk is read again";

impl Poller<'_> {
    fn window_url(&self, from: Micros, to: Micros) -> String {
        let c = self.config;
        let r = c.resource;
        let f = r.watermark_field();
        let mut q = Vec::new();
        if r == Resource::Incidents && !self.expand_off() {
            q.push("$expand=alerts".to_string());
        }
        q.push(format!(
            "$filter={f}%20ge%20{}%20and%20{f}%20lt%20{}",
            filter_time(from),
            filter_time(to)
        ));
        if let Some(n) = c.page_size {
            q.push(format!("$top={n}"));
        }
        format!("{}/{}/{}?{}", c.graph_host, c.api_version, r.path(), q.join("&"))
    }

    /// Whether a record belongs to `[from, to)`. Alerts go with their incident.
    fn in_window(&self, rec: &DecodedRecord, from: Micros, to: Micros, outside: &mut HashSet<String>) -> bool {
        let viewed = match (self.config.resource, rec.kind) {
            (Resource::Incidents, EventKind::Alert) => {
                return !rec.entity_key.as_ref().is_some_and(|k| outside.contains(k.as_str()));
            }
            (Resource::Incidents, EventKind::Incident) => identity::incident(&rec.raw),
            (Resource::RiskDetections, _) => identity::risk_detection(&rec.raw),
            (Resource::RiskyUsers, _) => identity::risky_user(&rec.raw),
            _ => return true,
        };
        // The bounds the query had (`window_url`: whole seconds, rounded down): what the
        // server gave for `[from, to)` is judged by them, or an object in the fraction of a
        // second before a chunk's exact start, left out of the chunk before by its `lt`,
        // would be dropped here as outside.
        let (from, to) = (whole_second_down(from), whole_second_down(to));
        match viewed {
            Ok((obs, _)) => {
                let inside = obs.t >= from && obs.t < to;
                if !inside {
                    outside.insert(obs.id);
                }
                inside
            }
            // No time to judge by: forwarded (and counted as untracked) like the live source does.
            Err(_) => true,
        }
    }

    async fn flush(&self, b: &mut BatchBuilder, plan: &Plan) -> Result<(), SourceError> {
        plan.progress.events.fetch_add(b.len() as u64, Ordering::Relaxed);
        self.ctx.send(b.take(&self.ctx.acks)).await
    }

    /// Read every page of `[from, to)`. `Ok(false)`: a page was partial (206) or not
    /// understood; the chunk must be read again.
    async fn backfill_chunk(
        &mut self,
        st: &mut BackfillState,
        from: Micros,
        to: Micros,
        until: Micros,
        plan: &Plan,
    ) -> Result<bool, CycleError> {
        let mut url = self.window_url(from, to);
        let mut partial = false;
        let mut links = HashSet::new();
        let mut outside = HashSet::new();
        let mut newest = 0;
        let mut b = BatchBuilder::new(self.ctx.name.clone(), self.partition.clone(), self.ctx.batch_max_events);
        loop {
            let restart = |p: &Self| p.window_url(from, to);
            let page = self
                .get_page(&mut url, restart, &mut links, &mut partial, CHUNK_REDO)
                .await?;
            plan.progress.pages.fetch_add(1, Ordering::Relaxed);
            let next = match decode_unit(InputFormat::Graph, page.body.clone()) {
                Ok(unit) if unit.is_graph_page => {
                    for (i, rec) in unit.records.into_iter().enumerate() {
                        plan.progress.items.fetch_add(1, Ordering::Relaxed);
                        if !self.in_window(&rec, from, to, &mut outside) {
                            plan.progress.outside.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        self.record(&mut st.seen, &mut b, i as u32, rec, &mut newest);
                        if b.is_full() {
                            self.flush(&mut b, plan).await?;
                        }
                    }
                    unit.next_link
                }
                other => {
                    self.quarantine_page(&mut b, &page.body, other, CHUNK_REDO);
                    partial = true;
                    None
                }
            };
            if next.is_none() && !partial {
                st.done = format_time(to);
                st.seen = PollState::new(to);
                st.complete = to >= until;
            }
            b.set_checkpoint(st.to_checkpoint());
            self.flush(&mut b, plan).await?;
            match next {
                Some(link) => url = follow(&mut links, link, "chunk")?,
                None => break,
            }
        }
        Ok(!partial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_rejects_garbage() {
        let st = BackfillState::new(1_000_000, 5_000_000);
        let back = BackfillState::from_checkpoint(&st.to_checkpoint()).unwrap();
        assert_eq!(back, st);
        assert!(!back.complete);
        assert!(BackfillState::new(5, 5).complete, "an empty window is complete at once");
        assert!(BackfillState::from_checkpoint("{\"v\":1,\"since\":\"x\",\"until\":\"y\",\"done\":\"z\"}").is_err());
    }

    #[test]
    fn snapshot_fraction_and_position() {
        let p = Progress::default();
        p.set(
            "a",
            Unit {
                since: 0,
                until: 100,
                position: 50,
                complete: false,
                resumed_at: None,
            },
        );
        p.set(
            "b",
            Unit {
                since: 0,
                until: 100,
                position: 100,
                complete: true,
                resumed_at: None,
            },
        );
        let s = p.snapshot();
        assert!((s.fraction() - 0.75).abs() < 1e-9);
        assert_eq!(s.position(), Some(50));
        assert_eq!(s.window(), Some((0, 100)));
    }
}
