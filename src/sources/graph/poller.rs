//! The poll loop of each tenant: ask for everything updated since `watermark - overlap`,
//! follow `@odata.nextLink` verbatim, turn new versions into change events, and attach the
//! poll state to every batch so the watermark is committed only once it is acknowledged.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use futures_util::future::try_join_all;

use super::auth::{Credential, TokenProvider};
use super::client::{GraphClient, GraphError, Page};
use super::filter::NoiseFilters;
use super::identity::{self, Untracked};
use super::state::{self, filter_time, now_us, Observed, Outcome, PollState, Rule};
use super::{GraphConfig, Resource, TenantConfig};
use crate::checkpoint::partition_id;
use crate::decode::{decode_unit, DecodeError, DecodedRecord, DecodedUnit, InputFormat};
use crate::event::EventKind;
use crate::sources::{BatchBuilder, Change, Source, SourceContext, SourceError};
use crate::telemetry::GraphMetrics;

pub(super) struct GraphSource {
    pub config: Arc<GraphConfig>,
    pub http: reqwest::Client,
    pub credentials: Vec<Credential>,
}

#[async_trait::async_trait]
impl Source for GraphSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let GraphSource {
            config,
            http,
            credentials,
        } = *self;
        let pollers = config.tenants.iter().zip(credentials).map(|(t, cred)| {
            let tokens = TokenProvider::new(
                http.clone(),
                t.tenant_id.clone(),
                t.client_id.clone(),
                cred,
                &config.login_host,
                config.graph_host.clone(),
                ctx.metrics.clone(),
                ctx.name.clone(),
            );
            let client = GraphClient::new(
                http.clone(),
                tokens,
                config.graph_host.clone(),
                config.requests_per_minute,
                config.burst,
                config.retry,
                config.resource.permission(),
                ctx.metrics.clone(),
                ctx.name.clone(),
                Arc::from(t.tenant_id.as_str()),
                ctx.shutdown.clone(),
                config.resource.shared_family(),
            );
            let plan = config.backfill.clone();
            let (ctx, config) = (&ctx, &config);
            async move {
                match plan {
                    Some(plan) => super::backfill::run_tenant(ctx, config, t, client, &plan).await,
                    None => run_tenant(ctx, config, t, client).await,
                }
            }
        });
        try_join_all(pollers).await.map(|_| ())
    }
}

/// How far in the future a stored watermark may be before it is taken as broken (clocks
/// differ by a little; a watermark is never set past the start of its poll).
const FUTURE_WATERMARK_SLACK_US: i64 = 10 * 60 * 1_000_000;

/// Poll one tenant until shutdown.
async fn run_tenant(
    ctx: &SourceContext,
    config: &GraphConfig,
    tenant: &TenantConfig,
    client: GraphClient,
) -> Result<(), SourceError> {
    let resource = config.resource;
    let key = ctx.checkpoint_key(Some(&tenant.tenant_id), resource.partition());
    let mut state = match ctx.checkpoints.get(&key)? {
        Some(v) => PollState::from_checkpoint(&v).map_err(|e| SourceError::Fatal {
            source_name: ctx.name.to_string(),
            message: format!("checkpoint {key} is not a Graph poll state ({e}); remove it to start over"),
        })?,
        None => {
            let start = config
                .start_time
                .unwrap_or_else(|| now_us() - config.initial_lookback_days as i64 * 86_400_000_000);
            PollState::new(start)
        }
    };
    // A watermark in the future can only come from a future-dated object read by a version
    // before the watermark was held to the poll's start: every change since was skipped.
    // Read again from where a first run starts (the seen-set drops what was already sent).
    if state
        .watermark_us()
        .is_some_and(|w| w > now_us() + FUTURE_WATERMARK_SLACK_US)
    {
        let back = config
            .start_time
            .unwrap_or_else(|| now_us() - config.initial_lookback_days as i64 * 86_400_000_000);
        tracing::warn!(
            tenant = %tenant.tenant_id,
            watermark = %state.watermark,
            "the stored watermark is in the future; reading again from where a first run starts"
        );
        state.set_watermark(back);
    }
    tracing::info!(tenant = %tenant.tenant_id, resource = resource.partition(), watermark = %state.watermark, "Graph poller starting");
    let mut poller = Poller {
        ctx,
        config,
        client,
        filters: config.filters_for(tenant).clone(),
        tenant: Arc::from(tenant.tenant_id.as_str()),
        partition: partition_id(Some(&tenant.tenant_id), resource.partition()),
        offset: 0,
        registered: None,
        expand_off_until: None,
        rescan_at: config.rescan.map(|r| Instant::now() + r.interval),
        rescan_floor: None,
        held_since: None,
    };
    loop {
        match poller.cycle(&mut state).await {
            Ok(()) => {}
            Err(CycleError::Source(SourceError::ShuttingDown(_)))
            | Err(CycleError::Graph(GraphError::ShuttingDown)) => return Ok(()),
            Err(CycleError::Source(e)) => return Err(e),
            Err(CycleError::Graph(e)) => {
                tracing::error!(tenant = %poller.tenant, resource = resource.partition(), error = %e, "Graph poll failed; the watermark stays where it was and the next poll tries again");
                ctx.metrics
                    .graph
                    .poll_errors
                    .get_or_create(&GraphMetrics::tenant_value(&ctx.name, &poller.tenant, e.kind()))
                    .inc();
            }
        }
        if let Some(w) = state.watermark_us() {
            ctx.metrics
                .graph
                .watermark_age_seconds
                .get_or_create(&GraphMetrics::tenant(&ctx.name, &poller.tenant))
                .set((now_us() - w) as f64 / 1e6);
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(config.poll_interval) => {}
        }
    }
}

#[derive(Debug)]
pub(super) enum CycleError {
    Graph(GraphError),
    Source(SourceError),
}

impl From<GraphError> for CycleError {
    fn from(e: GraphError) -> Self {
        CycleError::Graph(e)
    }
}

impl From<Box<GraphError>> for CycleError {
    fn from(e: Box<GraphError>) -> Self {
        CycleError::Graph(*e)
    }
}

impl From<SourceError> for CycleError {
    fn from(e: SourceError) -> Self {
        CycleError::Source(e)
    }
}

pub(super) struct Poller<'a> {
    pub(super) ctx: &'a SourceContext,
    pub(super) config: &'a GraphConfig,
    pub(super) client: GraphClient,
    pub(super) filters: NoiseFilters,
    pub(super) tenant: Arc<str>,
    pub(super) partition: Arc<str>,
    /// Pages read since start (event positions).
    pub(super) offset: u64,
    /// The checkpoint value last registered, to skip registering an unchanged one.
    pub(super) registered: Option<String>,
    /// `$expand=alerts` kept failing with 500 (very large incidents): until then, list
    /// incidents without it and fetch each incident's alerts from `alerts_v2`.
    pub(super) expand_off_until: Option<Instant>,
    /// When the next deep re-scan is due (`None`: no re-scans, as in a backfill).
    pub(super) rescan_at: Option<Instant>,
    /// During a re-scan walk: where a normal poll would have started (µs), to count what
    /// only the re-scan found.
    pub(super) rescan_floor: Option<i64>,
    /// Since when every poll came back partial (a 206, a page not understood) and the
    /// watermark was held.
    pub(super) held_since: Option<Instant>,
}

/// What a poll does with a window it could not read whole.
const POLL_REDO: &str = "the watermark is held and the same window is read again next poll";

/// `link`, the next page of a walk (`scope`: a poll or a chunk), unless it came before in
/// the same walk: Graph paging in a loop is an error, not an endless read.
pub(super) fn follow(links: &mut HashSet<String>, link: String, scope: &str) -> Result<String, Box<GraphError>> {
    if !links.insert(link.clone()) {
        return Err(Box::new(GraphError::Unexpected {
            status: 200,
            detail: format!("paging loop: nextLink {link} came twice in one {scope}"),
        }));
    }
    Ok(link)
}

impl Poller<'_> {
    fn first_url(&self, since: state::Micros) -> String {
        let c = self.config;
        let r = c.resource;
        let mut q = Vec::new();
        if r == Resource::Incidents && !self.expand_off() {
            q.push("$expand=alerts".to_string());
        }
        q.push(format!("$filter={}%20ge%20{}", r.watermark_field(), filter_time(since)));
        if let Some(n) = c.page_size {
            q.push(format!("$top={n}"));
        }
        format!("{}/{}/{}?{}", c.graph_host, c.api_version, r.path(), q.join("&"))
    }

    pub(super) fn expand_off(&self) -> bool {
        self.expand_off_until.is_some_and(|t| Instant::now() < t)
    }

    /// Fallback without `$expand`: put each incident's alerts (from `alerts_v2`) into it, so
    /// the page looks like an expanded one. `partial` is set when an alerts page was a 206.
    pub(super) async fn attach_alerts(&self, body: &Bytes, partial: &mut bool) -> Result<Bytes, GraphError> {
        let mut page: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => return Ok(body.clone()),
        };
        let Some(incidents) = page.get_mut("value").and_then(|v| v.as_array_mut()) else {
            return Ok(body.clone());
        };
        let c = self.config;
        for inc in incidents.iter_mut() {
            if inc.get("alerts").is_some_and(|a| a.is_array()) {
                continue;
            }
            let Some(id) = inc.get("id").and_then(|v| v.as_str()).map(str::to_string) else {
                continue;
            };
            let id: String = id
                .chars()
                .filter(|ch| ch.is_ascii_alphanumeric() || *ch == '-')
                .collect();
            let mut url = format!(
                "{}/{}/security/alerts_v2?$filter=incidentId%20eq%20'{id}'",
                c.graph_host, c.api_version
            );
            let mut alerts = Vec::new();
            let mut links = HashSet::new();
            loop {
                let p = self.client.get(&url).await?;
                *partial |= p.partial.is_some();
                let v: serde_json::Value = serde_json::from_slice(&p.body).map_err(|e| GraphError::Unexpected {
                    status: 200,
                    detail: format!("alerts_v2 page is not JSON: {e}"),
                })?;
                alerts.extend(v["value"].as_array().cloned().unwrap_or_default());
                match v["@odata.nextLink"].as_str() {
                    Some(next) => url = follow(&mut links, next.to_string(), "incident's alerts").map_err(|e| *e)?,
                    None => break,
                }
            }
            inc["alerts"] = serde_json::Value::Array(alerts);
        }
        Ok(Bytes::from(page.to_string()))
    }

    pub(super) fn labels(&self) -> crate::telemetry::TenantLabels {
        GraphMetrics::tenant(&self.ctx.name, &self.tenant)
    }

    pub(super) fn count(
        &self,
        family: &prometheus_client::metrics::family::Family<
            crate::telemetry::TenantValueLabels,
            prometheus_client::metrics::counter::Counter,
        >,
        value: &str,
    ) {
        family
            .get_or_create(&GraphMetrics::tenant_value(&self.ctx.name, &self.tenant, value))
            .inc();
    }

    /// GET one list page at `url` (a poll's or a backfill chunk's). When `$expand=alerts`
    /// keeps failing with 500, expansion is off for `expand_fallback_secs` and the walk starts
    /// again at `restart` (its links forgotten); while it is off, each incident's alerts come
    /// from `alerts_v2`. A 206 sets `partial`: what came is forwarded, and `redo` says what
    /// happens to the walk's progress.
    pub(super) async fn get_page(
        &mut self,
        url: &mut String,
        restart: impl Fn(&Self) -> String,
        links: &mut HashSet<String>,
        partial: &mut bool,
        redo: &'static str,
    ) -> Result<Page, CycleError> {
        let page = loop {
            match self.client.get(url).await {
                Err(GraphError::Exhausted { status: Some(500), .. })
                    if self.config.resource == Resource::Incidents && !self.expand_off() =>
                {
                    tracing::warn!(tenant = %self.tenant, "$expand=alerts keeps failing with 500; listing incidents without it and reading their alerts from alerts_v2 for the next hour");
                    self.count(&self.ctx.metrics.graph.poll_errors, "expand_fallback");
                    self.expand_off_until = Some(Instant::now() + self.config.expand_fallback);
                    *url = restart(self);
                    links.clear();
                }
                r => break r?,
            }
        };
        // While expansion is off, and on a page that came without it: a walk begun while it
        // was off follows nextLinks without `$expand` after it is back on.
        let unexpanded = || memchr::memmem::find(&page.body, b"\"alerts\"").is_none();
        let page = if self.config.resource == Resource::Incidents && (self.expand_off() || unexpanded()) {
            let body = self.attach_alerts(&page.body, partial).await?;
            Page { body, ..page }
        } else {
            page
        };
        self.offset += 1;
        self.ctx.metrics.graph.pages.get_or_create(&self.labels()).inc();
        if let Some(warning) = &page.partial {
            *partial = true;
            self.ctx.metrics.graph.partial_pages.get_or_create(&self.labels()).inc();
            tracing::warn!(tenant = %self.tenant, providers = %warning, then = redo, "206 Partial Content: forwarding what came");
        }
        Ok(page)
    }

    /// An answer that is not a Graph list page: quarantined as one unit (the caller holds
    /// the walk's progress; `redo` says how).
    pub(super) fn quarantine_page(
        &self,
        b: &mut BatchBuilder,
        body: &Bytes,
        decoded: Result<DecodedUnit, DecodeError>,
        redo: &'static str,
    ) {
        let detail = match &decoded {
            Err(e) => e.to_string(),
            Ok(_) => "the answer has no `value` list".into(),
        };
        tracing::error!(tenant = %self.tenant, %detail, then = redo, "Graph page not understood; quarantined");
        let err = decoded.and_then(|_| Err(DecodeError::NotRecords(detail)));
        b.push_unit(self.offset, body, err, None, &self.ctx.metrics);
    }

    /// One poll: every page from `watermark - overlap` on.
    async fn cycle(&mut self, state: &mut PollState) -> Result<(), CycleError> {
        // The watermark never passes the start of this walk: an object updated while the
        // pages were read (its new time above what it was read at) and one stamped in the
        // future (a clock gone wrong upstream) must not move it past changes not yet read;
        // the next polls read from here again and the seen-set drops what is unchanged.
        let walk_started = now_us();
        let old_watermark = state.watermark_us().unwrap_or(0);
        let mut since = old_watermark - self.config.overlap_secs as i64 * 1_000_000;
        let rescan = self
            .config
            .rescan
            .filter(|_| self.rescan_at.is_some_and(|t| Instant::now() >= t) && state.watermark_us().is_some());
        self.rescan_floor = None;
        if let Some(r) = rescan {
            // Due again one interval from now, whether this walk goes through or not (a
            // failing deep walk is not tried again at every poll).
            self.rescan_at = Some(Instant::now() + r.interval);
            self.rescan_floor = Some(since);
            since = since.min(old_watermark - r.lookback_secs as i64 * 1_000_000);
            tracing::info!(tenant = %self.tenant, since = %state::format_time(since), "deep re-scan: reading further back than the overlap for objects listed late");
            self.ctx.metrics.graph.rescans.get_or_create(&self.labels()).inc();
        }
        let mut url = self.first_url(since);
        let mut newest = old_watermark;
        let mut partial = false;
        // A page not understood ends the walk: what follows it was not read at all.
        let mut cut_short = false;
        let mut links = HashSet::new();
        let mut b = BatchBuilder::new(self.ctx.name.clone(), self.partition.clone(), self.ctx.batch_max_events);
        loop {
            let restart = |p: &Self| p.first_url(since);
            let page = self
                .get_page(&mut url, restart, &mut links, &mut partial, POLL_REDO)
                .await?;
            let next = match decode_unit(InputFormat::Graph, page.body.clone()) {
                Ok(unit) if unit.is_graph_page => {
                    for (i, rec) in unit.records.into_iter().enumerate() {
                        self.record(state, &mut b, i as u32, rec, &mut newest);
                        if b.is_full() {
                            self.ctx.send(b.take(&self.ctx.acks)).await?;
                        }
                    }
                    unit.next_link
                }
                other => {
                    self.quarantine_page(&mut b, &page.body, other, POLL_REDO);
                    partial = true;
                    cut_short = true;
                    None
                }
            };
            let last = next.is_none();
            if last {
                let newest = newest.min(walk_started.max(old_watermark));
                // A window that never reads whole because a provider keeps failing (206 for
                // days) is not held for good: its queries and state would grow without end.
                // Past `max_watermark_hold_secs` the watermark moves anyway, but only when
                // the deep re-scan reaches back over that hold (it reads the window again),
                // and never past a walk cut short by a page not understood (the pages after
                // it were not read at all).
                let held = if partial {
                    self.held_since.get_or_insert_with(Instant::now).elapsed()
                } else {
                    self.held_since = None;
                    Duration::ZERO
                };
                let reread = self.config.rescan.is_some_and(|r| {
                    r.lookback_secs > self.config.max_watermark_hold.as_secs() + self.config.overlap_secs
                });
                let give_up = partial && !cut_short && reread && held >= self.config.max_watermark_hold;
                if give_up && newest > old_watermark {
                    tracing::warn!(tenant = %self.tenant, held_secs = held.as_secs(), "every poll came back partial for max_watermark_hold_secs: moving the watermark on (the deep re-scan reads this window again)");
                    self.count(&self.ctx.metrics.graph.poll_errors, "watermark_hold_expired");
                }
                if (!partial || give_up) && newest > old_watermark {
                    state.set_watermark(newest);
                }
                let horizon =
                    state.watermark_us().unwrap_or(0) - self.config.state_retention_days as i64 * 86_400_000_000;
                let pruned = state.prune(horizon, self.config.max_tracked_items);
                if pruned > 0 {
                    tracing::debug!(tenant = %self.tenant, pruned, "dropped state of objects not updated within the retention");
                }
            }
            let checkpoint = state.to_checkpoint();
            if self.registered.as_deref() != Some(checkpoint.as_str()) {
                b.set_checkpoint(checkpoint.clone());
                self.registered = Some(checkpoint);
            }
            if !b.is_empty() || b.has_checkpoint() {
                self.ctx.send(b.take(&self.ctx.acks)).await?;
            }
            match next {
                Some(link) => url = follow(&mut links, link, "poll")?,
                None => break,
            }
        }
        self.rescan_floor = None;
        tracing::debug!(tenant = %self.tenant, watermark = %state.watermark, partial, "poll done");
        Ok(())
    }

    /// Judge one record against the state; push it when it is a change that passes the filters.
    pub(super) fn record(
        &self,
        state: &mut PollState,
        b: &mut BatchBuilder,
        index: u32,
        rec: DecodedRecord,
        newest: &mut i64,
    ) {
        self.ctx.metrics.graph.items.get_or_create(&self.labels()).inc();
        let is_alert = rec.kind == EventKind::Alert;
        let viewed = match (self.config.resource, rec.kind) {
            (Resource::Incidents, EventKind::Incident) => identity::incident(&rec.raw),
            (Resource::Incidents, EventKind::Alert) => identity::alert(&rec.raw),
            (Resource::RiskDetections, _) => identity::risk_detection(&rec.raw),
            (Resource::RiskyUsers, _) => identity::risky_user(&rec.raw),
            (_, kind) => Err(Untracked(format!("unexpected {kind} object in an incidents list"))),
        };
        let (obs, subject): (Observed, _) = match viewed {
            Ok(x) => x,
            Err(Untracked(why)) => {
                tracing::warn!(tenant = %self.tenant, %why, "forwarding an object the state engine cannot track");
                self.count(&self.ctx.metrics.graph.change_events, "untracked");
                b.push_record(self.offset, index, rec, None);
                return;
            }
        };
        if !is_alert {
            *newest = (*newest).max(obs.t);
        }
        let verdict = self.filters.check(&subject);
        let (map, rule) = match (is_alert, self.config.resource) {
            (true, _) => (&mut state.alerts, Rule::Finding),
            (false, Resource::Incidents) => (&mut state.items, Rule::Finding),
            (false, _) => (&mut state.items, Rule::Risk),
        };
        match state::observe(map, &obs, rule, verdict.is_ok()) {
            Outcome::Seen | Outcome::Unchanged => {
                self.ctx
                    .metrics
                    .graph
                    .unchanged_items
                    .get_or_create(&self.labels())
                    .inc();
            }
            Outcome::Changed { change_type, fields } if self.rescan_floor.is_some_and(|f| obs.t < f) => {
                // Listed late: a poll reading from the overlap had passed it.
                tracing::warn!(tenant = %self.tenant, id = %obs.id, time = %state::format_time(obs.t), "the deep re-scan found an object the polls had missed");
                self.ctx.metrics.graph.rescan_found.get_or_create(&self.labels()).inc();
                self.changed(b, index, rec, change_type, fields, verdict);
            }
            Outcome::Changed { change_type, fields } => self.changed(b, index, rec, change_type, fields, verdict),
        }
    }

    /// Push a changed object that passes the filters (count it as filtered otherwise).
    fn changed(
        &self,
        b: &mut BatchBuilder,
        index: u32,
        rec: DecodedRecord,
        change_type: String,
        fields: Vec<String>,
        verdict: Result<(), &'static str>,
    ) {
        match verdict {
            Err(reason) => self.count(&self.ctx.metrics.graph.filtered, reason),
            Ok(()) => {
                self.count(&self.ctx.metrics.graph.change_events, &change_type);
                let change = Change {
                    change_type: Arc::from(change_type),
                    changed_fields: (!fields.is_empty()).then(|| Arc::from(fields)),
                };
                let mut rec = rec;
                if rec.tenant.is_none() {
                    // The GUID when the token named it: Event Hub records carry the
                    // GUID, and the user cache and tenant routes key by it.
                    let t = self.client.tokens.tenant_guid();
                    rec.tenant = Some(t.as_deref().unwrap_or(&self.tenant).to_string());
                }
                b.push_record(self.offset, index, rec, Some(change));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_next_link_that_came_before_in_the_same_walk_is_a_paging_loop() {
        let mut links = HashSet::new();
        let a = "https://graph.microsoft.com/beta/security/incidents?$skiptoken=a".to_string();
        let b = "https://graph.microsoft.com/beta/security/incidents?$skiptoken=b".to_string();
        assert_eq!(follow(&mut links, a.clone(), "poll").unwrap(), a);
        assert_eq!(follow(&mut links, b.clone(), "poll").unwrap(), b);
        match follow(&mut links, a.clone(), "chunk") {
            Err(e) if matches!(*e, GraphError::Unexpected { status: 200, .. }) => {
                let detail = e.to_string();
                assert!(
                    detail.contains("skiptoken=a") && detail.ends_with("twice in one chunk)"),
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
