//! Splunk HTTP Event Collector sink: `/services/collector/event` envelopes (OCSF or the raw
//! record with the add-ons' sourcetypes), batched by events, bytes and wait, gzip, with
//! indexer acknowledgment.
//!
//! Delivery: with acknowledgments on (default), every request carries the sink's channel
//! (`X-Splunk-Request-Channel`); a reply with an `ackId` is delivered only once
//! `/services/collector/ack` reports it `true`. The wait for that does not hold the sink:
//! up to `acknowledgements.max_pending_batches` batches wait for their acknowledgments
//! while later ones are posted. A batch not acknowledged within
//! `acknowledgements.timeout_secs` is sent again (duplicates possible, never loss). A reply
//! without `ackId` (token without ack, Splunk Cloud) is delivered on code 0.
//! 503/429/5xx and network errors: the driver retries the batch with backoff. Token, index
//! and channel errors are configuration errors: logged and retried, never dropped. Data
//! errors (codes 5, 6, 12, 13, 15, HTTP 413) dead-letter the event named by
//! `invalid-event-number` (the rest is sent again), or bisect the request to find it.

mod acks;
pub mod client;

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::tls::TlsOptions;
use super::{BatchId, BatchLimits, Rejection, SendReport, Settle, Sink, SinkConfig, SinkContext, SinkError};
use crate::config::{typed, ConfigIssue, Secret};
use crate::encode::Encoder;
use crate::encode::{EncoderOptions, HecEncoder};
use crate::event::Event;
use crate::telemetry::Metrics;
use acks::AckBook;
use bytes::Bytes;
use client::{classify, HecClient, Outcome};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

/// `[sinks.NAME.batch]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchOptions {
    /// Most events in one request. Default 500.
    pub max_events: usize,
    /// Most bytes of one request body before compression. Default 1 MiB.
    pub max_bytes: usize,
    /// How long to wait for more events to fill a batch. Default 1000 ms.
    pub max_wait_ms: u64,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            max_events: 500,
            max_bytes: 1 << 20,
            max_wait_ms: 1000,
        }
    }
}

/// `[sinks.NAME.acknowledgements]`: indexer acknowledgment.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AckOptions {
    /// Wait for `ackId`s to be indexed. Default true (harmless with a token without ack).
    pub enabled: bool,
    /// Delay between `/services/collector/ack` queries. Default 1000 ms.
    pub poll_interval_ms: u64,
    /// A batch not acknowledged this long after it was sent is sent again. Default 300 (as
    /// Vector: at low volume Splunk can take minutes to acknowledge the last batches).
    pub timeout_secs: u64,
    /// Batches (of up to `batch.max_events`) posted and waiting for their acknowledgment at
    /// once; when that many wait, the sink posts nothing more until one is acknowledged.
    /// Throughput is at most about this × `batch.max_events` per `poll_interval_ms` plus
    /// the indexer's delay. Default 16.
    pub max_pending_batches: usize,
}

impl Default for AckOptions {
    fn default() -> Self {
        AckOptions {
            enabled: true,
            poll_interval_ms: 1000,
            timeout_secs: 300,
            max_pending_batches: 16,
        }
    }
}

/// `[sinks.NAME] type = "splunk_hec"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HecSinkConfig {
    /// Base URL of the collector, e.g. `https://splunk.example:8088`.
    pub endpoint: String,
    /// HEC token: `${SPLUNK_HEC_TOKEN}` or `${file:/run/secrets/hec}`.
    pub token: Secret,
    /// `gzip` (default) or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// `encoder.hec`: payload, index, source, sourcetypes, host, indexed fields.
    #[serde(default)]
    pub encoder: EncoderOptions,
    #[serde(default)]
    pub batch: BatchOptions,
    #[serde(default)]
    pub acknowledgements: AckOptions,
    #[serde(default)]
    pub tls: TlsOptions,
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// `GET /services/collector/health` at start. Default true.
    #[serde(default = "yes")]
    pub healthcheck: bool,
    /// Batches posted at once, each by its own instance on its own HEC channel. Default 8;
    /// 1 posts batches one after the other, in order (their acknowledgments are awaited
    /// meanwhile, see `acknowledgements.max_pending_batches`).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Not configuration: shared by the instances built from this config.
    #[serde(skip)]
    acked: Arc<acks::Acked>,
}

fn default_concurrency() -> usize {
    8
}

fn default_request_timeout_ms() -> u64 {
    30_000
}
fn yes() -> bool {
    true
}

pub fn factory(_name: &str, table: toml::Value, prefix: &str) -> Result<Box<dyn SinkConfig>, ConfigIssue> {
    let c: HecSinkConfig = typed(table, prefix)?;
    let issue = |k: &str, m: String| ConfigIssue::new(format!("{prefix}.{k}"), m);
    let e = c.endpoint.trim_end_matches('/');
    let rest = e.strip_prefix("https://").or_else(|| e.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains('/') => {}
        _ => {
            return Err(issue(
                "endpoint",
                format!(
                    "`{}` must be the collector's base URL, like https://splunk.example:8088",
                    c.endpoint
                ),
            ))
        }
    }
    let t = c.token.expose();
    if t.is_empty() || t.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        return Err(issue("token", "must be a non-empty token without spaces".into()));
    }
    let b = &c.batch;
    if b.max_events == 0 || b.max_bytes < 1024 {
        return Err(issue("batch", "max_events must be > 0 and max_bytes >= 1024".into()));
    }
    let a = &c.acknowledgements;
    if c.concurrency == 0 || c.concurrency > 256 {
        return Err(issue("concurrency", "must be between 1 and 256".into()));
    }
    if a.poll_interval_ms == 0 || a.timeout_secs == 0 || a.max_pending_batches == 0 || c.request_timeout_ms == 0 {
        return Err(issue(
            "acknowledgements",
            "poll_interval_ms, timeout_secs, max_pending_batches and request_timeout_ms must be > 0".into(),
        ));
    }
    c.encoder.validate().map_err(|m| issue("encoder", m))?;
    if e.starts_with("https://") {
        c.tls.check().map_err(|err| issue("tls", err.to_string()))?;
    }
    Ok(Box::new(c))
}

/// An `http://` endpoint on this machine (`localhost`, 127.0.0.0/8, `[::1]`): the one case
/// where clear text does not cross a network.
fn loopback_http(endpoint: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(endpoint) else {
        return false;
    };
    let host = url.host_str().unwrap_or_default();
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

impl SinkConfig for HecSinkConfig {
    fn concurrency(&self) -> usize {
        self.concurrency
    }

    fn encoder(&self) -> Option<Box<dyn Encoder>> {
        Some(Box::new(HecEncoder::new(&self.encoder)))
    }

    fn build(&self, name: &str) -> Result<Box<dyn Sink>, SinkError> {
        let tls = if self.endpoint.starts_with("https://") {
            if self.tls.insecure_skip_verify {
                tracing::warn!(sink = name, endpoint = %self.endpoint,
                    "tls.insecure_skip_verify is on: the collector's certificate is NOT verified");
            }
            self.tls.client_config()
        } else {
            if !loopback_http(&self.endpoint) {
                tracing::warn!(sink = name, endpoint = %self.endpoint,
                    "the HEC endpoint is http://: the token and the events cross the network in clear text; use https://");
            }
            // Not used for http://, but the client wants one.
            TlsOptions {
                insecure_skip_verify: true,
                ..Default::default()
            }
            .client_config()
        }
        .map_err(|e| SinkError::Build(e.to_string()))?;
        let channel = client::new_channel();
        let client = HecClient::new(
            &self.endpoint,
            &self.token,
            &channel,
            self.compression == Compression::Gzip,
            tls,
            Duration::from_millis(self.request_timeout_ms),
        )
        .map_err(SinkError::Build)?;
        Ok(Box::new(HecSink {
            name: name.into(),
            channel,
            acks: AckBook::new(
                client.clone(),
                Duration::from_millis(self.acknowledgements.poll_interval_ms),
                // A Retry-After on the acknowledgment query is waited out at most a quarter
                // of the acknowledgment timeout: the batches waiting would time out and be
                // sent again, though indexed, during a longer pause.
                Duration::from_secs(self.acknowledgements.timeout_secs) / 4,
            ),
            acked: self.acked.clone(),
            client,
            encoder: HecEncoder::new(&self.encoder),
            batch: self.batch.clone(),
            ack: self.acknowledgements.clone(),
            healthcheck: self.healthcheck,
            buf: Vec::new(),
            metrics: None,
            unfinished: None,
        }))
    }
}

pub struct HecSink {
    name: String,
    channel: String,
    /// The ackIds waiting on this sink's channel.
    acks: Arc<AckBook>,
    /// Shared by the sink's instances: what batches whose acknowledgment failed had done.
    acked: Arc<acks::Acked>,
    client: HecClient,
    encoder: HecEncoder,
    batch: BatchOptions,
    ack: AckOptions,
    healthcheck: bool,
    buf: Vec<u8>,
    metrics: Option<Arc<Metrics>>,
    /// What a send that failed part way had done: the driver sends the same batch again,
    /// and that send posts only what was not taken.
    unfinished: Option<Unfinished>,
}

/// A batch's progress when a request failed after others were taken: the events taken
/// (posted and accepted, or refused and dead-lettered), the ackIds they wait on, the
/// refusals and bytes so far.
struct Unfinished {
    batch: BatchId,
    done: Vec<bool>,
    pending: Vec<acks::Registered>,
    rejected: Vec<Rejection>,
    bytes: u64,
}

fn unavailable(kind: &'static str, message: String) -> SinkError {
    SinkError::Unavailable { kind, message }
}

/// Where an event's envelope is: encoded ahead by the pipeline (shared, not copied), or in
/// the sink's own buffer.
enum Piece {
    Ahead(Bytes),
    Buf(Range<usize>),
}

impl HecSink {
    /// Groups spans into requests of at most `max_events` and `max_bytes`.
    fn requests(&self, spans: &[(usize, Piece)]) -> VecDeque<Vec<usize>> {
        let mut out = VecDeque::new();
        let mut cur: Vec<usize> = Vec::new();
        let mut size = 0;
        for (i, (_, p)) in spans.iter().enumerate() {
            let len = self.piece(p).len() + 1;
            if !cur.is_empty() && (cur.len() >= self.batch.max_events || size + len > self.batch.max_bytes) {
                out.push_back(std::mem::take(&mut cur));
                size = 0;
            }
            cur.push(i);
            size += len;
        }
        if !cur.is_empty() {
            out.push_back(cur);
        }
        out
    }

    /// An event's envelope: encoded ahead by the pipeline, or here into `buf`.
    fn piece<'s>(&'s self, p: &'s Piece) -> &'s [u8] {
        match p {
            Piece::Ahead(b) => b,
            Piece::Buf(r) => &self.buf[r.clone()],
        }
    }

    /// The envelopes of one request, each sent followed by a newline (no copy here: the
    /// client compresses them straight from where they are).
    fn body<'s>(&'s self, spans: &'s [(usize, Piece)], req: &[usize]) -> Vec<&'s [u8]> {
        req.iter().map(|&i| self.piece(&spans[i].1)).collect()
    }

    fn count_request(&self, status: &str) {
        if let Some(m) = &self.metrics {
            Metrics::sink_code(&m.sink_requests, &self.name, status, 1);
        }
    }

    /// The wait for the indexer to acknowledge the ids of a batch's requests (this sink's
    /// channel, queried together with the other batches' ids every `poll_interval_ms`); fails
    /// after `timeout_secs` so that the batch is sent again.
    fn settle(&self, ids: Vec<acks::Registered>, batch: BatchId, rejected: &[Rejection]) -> Settle {
        acks::AckBook::settle(
            ids,
            Duration::from_secs(self.ack.timeout_secs),
            self.metrics.clone().map(|m| (m, self.name.clone())),
            acks::Remember {
                acked: self.acked.clone(),
                batch,
                rejected: rejected.to_vec(),
            },
        )
    }
}

#[async_trait::async_trait]
impl Sink for HecSink {
    async fn start(&mut self, ctx: &SinkContext) -> Result<(), SinkError> {
        self.metrics = Some(ctx.metrics.clone());
        tracing::info!(channel = %self.channel, ack = self.ack.enabled, instance = ctx.instance, "splunk HEC sink starting");
        if !self.healthcheck || ctx.instance > 0 {
            return Ok(());
        }
        match self.client.health().await {
            Ok(r) if r.status == 200 => {
                tracing::info!(reply = %r.describe(), "HEC health check passed");
                Ok(())
            }
            Ok(r) => Err(unavailable("hec_health", format!("HEC health check: {}", r.describe()))),
            Err(e) => Err(unavailable("hec_health", format!("HEC health check: {e}"))),
        }
    }

    fn batch_limits(&self) -> Option<BatchLimits> {
        Some(BatchLimits {
            max_events: self.batch.max_events,
            max_wait: Duration::from_millis(self.batch.max_wait_ms),
        })
    }

    async fn send(&mut self, events: &[Event]) -> Result<SendReport, SinkError> {
        // The same batch again after a failure part way: only what was not taken goes.
        let id = BatchId::of(events);
        let (mut done, mut pending, mut rejected, mut bytes) = match self.unfinished.take().filter(|u| u.batch == id) {
            Some(u) => (u.done, u.pending, u.rejected, u.bytes),
            None => (vec![false; events.len()], Vec::new(), Vec::new(), 0u64),
        };
        // Sent again after its acknowledgment failed: what was indexed or refused stays so.
        if let Some(taken) = self.acked.take(&id) {
            for &i in taken.indexed.iter().chain(taken.rejected.iter().map(|r| &r.index)) {
                if let Some(d) = done.get_mut(i) {
                    *d = true;
                }
            }
            rejected.extend(taken.rejected);
        }
        // Encode every event once (unless the pipeline did); requests are built from the spans.
        self.buf.clear();
        let mut spans: Vec<(usize, Piece)> = Vec::with_capacity(events.len());
        for (index, e) in events.iter().enumerate() {
            if done[index] {
                continue;
            }
            if let Some(enc) = &e.encoded {
                spans.push((index, Piece::Ahead(enc.data.clone())));
                continue;
            }
            let start = self.buf.len();
            match self.encoder.encode(e, &mut self.buf) {
                Ok(_) => spans.push((index, Piece::Buf(start..self.buf.len()))),
                Err(err) => {
                    done[index] = true;
                    rejected.push(Rejection {
                        index,
                        reason: err.reason(),
                        detail: err.to_string(),
                    })
                }
            }
        }
        let mut queue = self.requests(&spans);
        let mut failed = None;
        while let Some(req) = queue.pop_front() {
            let body = self.body(&spans, &req);
            let body_len: usize = body.iter().map(|p| p.len() + 1).sum();
            let reply = match self.client.post_events(&body).await {
                Ok(r) => r,
                Err(e) => {
                    self.count_request("error");
                    failed = Some(unavailable("hec_unavailable", e.to_string()));
                    break;
                }
            };
            self.count_request(&reply.status.to_string());
            match classify(&reply) {
                Outcome::Accepted { ack_id } => {
                    bytes += body_len as u64;
                    for &k in &req {
                        done[spans[k].0] = true;
                    }
                    if let Some(ack_id) = ack_id.filter(|_| self.ack.enabled) {
                        let events = req.iter().map(|&k| spans[k].0).collect();
                        pending.push(self.acks.register(ack_id).for_events(events));
                    }
                }
                Outcome::Retry(message, Some(retry_after)) => {
                    failed = Some(SinkError::Throttled {
                        kind: "hec_unavailable",
                        message,
                        retry_after,
                    });
                    break;
                }
                Outcome::Retry(m, None) => {
                    failed = Some(unavailable("hec_unavailable", m));
                    break;
                }
                Outcome::Config(m) => {
                    tracing::error!(reply = %m, "HEC did not take the request: check the endpoint, token, index and channel settings");
                    failed = Some(unavailable("hec_config", m));
                    break;
                }
                Outcome::Data {
                    code,
                    reason,
                    detail,
                    invalid_event,
                } => {
                    let bad = match invalid_event.filter(|&k| k < req.len()) {
                        Some(k) => Some(k),
                        None if req.len() == 1 => Some(0),
                        None => None,
                    };
                    match bad {
                        Some(k) => {
                            let (index, _) = spans[req[k]];
                            tracing::warn!(reply = %detail, event = index, "HEC refused an event; dead-lettering it");
                            if let Some(m) = &self.metrics {
                                let code = code.map_or_else(|| reply.status.to_string(), |c| c.to_string());
                                Metrics::sink_code(&m.sink_rejected, &self.name, &code, 1);
                            }
                            done[index] = true;
                            rejected.push(Rejection { index, reason, detail });
                            let rest: Vec<usize> = req
                                .iter()
                                .enumerate()
                                .filter(|&(j, _)| j != k)
                                .map(|(_, &s)| s)
                                .collect();
                            if !rest.is_empty() {
                                queue.push_front(rest);
                            }
                        }
                        None => {
                            // Find the bad event(s): send each half on its own.
                            let (a, b) = req.split_at(req.len() / 2);
                            queue.push_front(b.to_vec());
                            queue.push_front(a.to_vec());
                        }
                    }
                }
            }
        }
        if let Some(e) = failed {
            // Kept for the retry of this batch (the driver sends it again, unmoved).
            self.unfinished = Some(Unfinished {
                batch: id,
                done,
                pending,
                rejected,
                bytes,
            });
            return Err(e);
        }
        let settle = (!pending.is_empty()).then(|| self.settle(pending, id, &rejected));
        Ok(SendReport {
            bytes,
            rejected,
            settle,
        })
    }

    fn max_unsettled(&self) -> usize {
        self.ack.max_pending_batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Value {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn config_checks_and_secret_is_hidden() {
        let c = factory(
            "h",
            table("endpoint = \"http://127.0.0.1:8088\"\ntoken = \"abc-123\""),
            "sinks.h",
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("abc-123") && dbg.contains("Secret(***)"), "{dbg}");
        for (t, key) in [
            ("endpoint = \"splunk:8088\"\ntoken = \"t\"", "sinks.h.endpoint"),
            (
                "endpoint = \"https://s:8088/services/collector\"\ntoken = \"t\"",
                "sinks.h.endpoint",
            ),
            ("endpoint = \"http://s:8088\"\ntoken = \"\"", "sinks.h.token"),
            (
                "endpoint = \"http://s:8088\"\ntoken = \"t\"\nbatch.max_events = 0",
                "sinks.h.batch",
            ),
            (
                "endpoint = \"http://s:8088\"\ntoken = \"t\"\nacknowledgements.timeout_secs = 0",
                "sinks.h.acknowledgements",
            ),
            ("endpoint = \"http://s:8088\"\ntoken = \"t\"\nbogus = 1", "sinks.h"),
        ] {
            let e = factory("h", table(t), "sinks.h").unwrap_err();
            assert!(e.path.starts_with(key), "{t}: {e:?}");
        }
    }

    #[test]
    fn only_a_loopback_http_endpoint_counts_as_local() {
        for (e, local) in [
            ("http://127.0.0.1:8088", true),
            ("http://127.9.0.1:8088", true),
            ("http://localhost:8088", true),
            ("http://LOCALHOST", true),
            ("http://[::1]:8088", true),
            ("http://splunk.example:8088", false),
            ("http://10.0.0.5:8088", false),
            ("http://[fd00::5]:8088", false),
            ("http://localhost.example.com:8088", false),
        ] {
            assert_eq!(loopback_http(e), local, "{e}");
        }
    }
}
