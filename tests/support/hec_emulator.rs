//! A Splunk HTTP Event Collector emulator on 127.0.0.1, built from the reference
//! (siem-outputs.md section 5): token auth (codes 1-4), `/services/collector/event` with
//! concatenated envelopes and gzip bodies, validation (codes 5, 6 with
//! `invalid-event-number`, 7, 12, 13), channels required when ack is on (10, 11), ackIds
//! counting from 0 per channel, `/services/collector/ack` reporting `true` once (14 when ack
//! is off), `/services/collector/health` (17/18). Scriptable: 503 (code 9) and 429 storms,
//! acknowledgments delayed or never given, a poison string that makes an envelope invalid.
//! An event counts as indexed once its request is acknowledged (or accepted, without ack).

// Handlers return the HTTP reply as the error of their checks; its size does not matter here.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// HTTPS for the emulator (its own file; this one is also included by path elsewhere).
#[path = "tls_listener.rs"]
pub mod tls_listener;

/// What the next requests get.
#[derive(Clone, Debug, Default)]
pub struct Script {
    /// The next N event requests answer 503 code 9 (server busy).
    pub busy_next: u32,
    /// `busy_next` starts only once this many requests were accepted.
    pub busy_after_accepted: u32,
    /// The next N event requests answer 429 code 27 (ACK channel at capacity).
    pub throttle_next: u32,
    /// The 503 and 429 answers above carry `Retry-After` with this many seconds (as a load
    /// balancer in front of HEC may send).
    pub retry_after_secs: Option<u64>,
    /// The next N acknowledgment queries answer 503 code 9 (with `retry_after_secs`).
    pub ack_busy_next: u32,
    /// The first N accepted requests are never acknowledged (nor indexed).
    pub never_ack_first: u32,
    /// After this many accepted requests the indexer restarts: the acknowledgment state of
    /// every channel is lost (ackIds count from 0 again, requests not yet acknowledged are
    /// forgotten, their events not indexed). Once.
    pub restart_after: Option<u32>,
    /// Acknowledgments become true this long after acceptance.
    pub ack_delay: Duration,
    /// The health endpoint answers 503 code 18.
    pub unhealthy: bool,
    /// An envelope containing this text, not followed by a digit, is invalid (code 6).
    pub poison: Option<String>,
    /// Keep only the count and the `evt-N` ids of indexed envelopes (load and chaos runs).
    pub count_only: bool,
}

/// One request to `/services/collector/event`, as answered.
#[derive(Clone, Debug)]
pub struct Logged {
    pub status: u16,
    pub events: usize,
    pub gzip: bool,
    pub channel: Option<String>,
    pub ack_id: Option<u64>,
    /// The `evt-N` ids of its envelopes, in order (not kept with `count_only`).
    pub ids: Vec<u64>,
    /// When the request came.
    pub at: Instant,
}

struct PendingAck {
    ready_at: Option<Instant>,
    envelopes: Vec<Envelope>,
}

/// A member that is there, `null` included (a plain `Option` reads `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue as serde::Deserialize>::deserialize(d).map(Some)
}

/// One accepted envelope: its `evt-N` id, and the whole envelope unless `count_only`.
struct Envelope {
    id: Option<u64>,
    value: Option<Value>,
}

/// What validation reads of an envelope (other members are skipped without being built).
#[derive(serde::Deserialize)]
struct EnvelopeHead<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    event: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    time: Option<&'a RawValue>,
    #[serde(borrow, default)]
    index: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Default)]
struct Channel {
    next_id: u64,
    acks: HashMap<u64, PendingAck>,
}

#[derive(Default)]
struct Emu {
    /// token → (ack enabled, disabled)
    tokens: HashMap<String, (bool, bool)>,
    indexes: Option<Vec<String>>,
    script: Script,
    accepted: u32,
    channels: HashMap<String, Channel>,
    indexed: Vec<Value>,
    indexed_count: u64,
    indexed_ids: Vec<u64>,
    log: Vec<Logged>,
    ack_queries: u32,
    ack_query_times: Vec<Instant>,
    /// The most ackIds one query asked for.
    max_ids_per_query: usize,
    health_checks: u32,
    max_pending_acks: usize,
}

pub struct HecEmulator {
    pub addr: SocketAddr,
    state: Arc<Mutex<Emu>>,
    stop: CancellationToken,
    tls: bool,
    /// TLS handshakes that failed (HTTPS only).
    handshake_failures: Arc<AtomicU64>,
}

impl Drop for HecEmulator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn reply(status: u16, code: i64, text: &str) -> Response {
    reply_json(status, json!({"text": text, "code": code}))
}

fn reply_json(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).expect("valid status"),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

impl Emu {
    /// Token check: `Err` is the reply.
    fn auth(&self, headers: &HeaderMap) -> Result<bool, Response> {
        let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Err(reply(401, 2, "Token is required"));
        };
        let Some(tok) = v.strip_prefix("Splunk ") else {
            return Err(reply(401, 3, "Invalid authorization"));
        };
        match self.tokens.get(tok) {
            None => Err(reply(403, 4, "Invalid token")),
            Some((_, true)) => Err(reply(403, 1, "Token disabled")),
            Some((ack, false)) => Ok(*ack),
        }
    }

    fn index(&mut self, envelopes: Vec<Envelope>) {
        self.indexed_count += envelopes.len() as u64;
        for e in envelopes {
            match e.value {
                Some(v) => self.indexed.push(v),
                None => self.indexed_ids.extend(e.id),
            }
        }
    }

    fn channel(headers: &HeaderMap, uri: &Uri, ack: bool) -> Result<Option<String>, Response> {
        let from_query = uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("channel="))
                .map(str::to_owned)
        });
        let ch = headers
            .get("x-splunk-request-channel")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or(from_query);
        match ch {
            None if ack => Err(reply(400, 10, "Data channel is missing")),
            Some(c) if !is_guid(&c) => Err(reply(400, 11, "Invalid data channel")),
            c => Ok(c),
        }
    }

    /// Validates the envelopes; `Err` is the reply.
    fn envelopes(&self, body: &[u8]) -> Result<Vec<Envelope>, Response> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(reply(400, 5, "No data"));
        }
        let invalid = |n: usize| {
            reply_json(
                400,
                json!({"text": "Invalid data format", "code": 6, "invalid-event-number": n}),
            )
        };
        let mut out = Vec::new();
        for (n, raw) in serde_json::Deserializer::from_slice(body)
            .into_iter::<Box<RawValue>>()
            .enumerate()
        {
            let Ok(raw) = raw else { return Err(invalid(n)) };
            if self.script.poison.as_deref().is_some_and(|p| {
                raw.get()
                    .match_indices(p)
                    .any(|(i, _)| !raw.get()[i + p.len()..].starts_with(|c: char| c.is_ascii_digit()))
            }) {
                return Err(invalid(n));
            }
            if !raw.get().starts_with('{') {
                return Err(invalid(n));
            }
            let head: EnvelopeHead = serde_json::from_str(raw.get()).map_err(|_| invalid(n))?;
            match head.event.map(RawValue::get) {
                None => return Err(reply(400, 12, "Event field is required")),
                Some("null") | Some("\"\"") => return Err(reply(400, 13, "Event field cannot be blank")),
                _ => {}
            }
            if head
                .time
                .is_some_and(|t| !t.get().starts_with(|c: char| c == '-' || c.is_ascii_digit()))
            {
                return Err(invalid(n));
            }
            if let (Some(allowed), Some(idx)) = (&self.indexes, head.index.as_deref()) {
                if !allowed.iter().any(|a| a == idx) {
                    return Err(reply(400, 7, "Incorrect index"));
                }
            }
            let value = if self.script.count_only {
                None
            } else {
                Some(serde_json::from_str::<Value>(raw.get()).map_err(|_| invalid(n))?)
            };
            let v = Envelope {
                id: id_in(raw.get()),
                value,
            };
            out.push(v);
        }
        Ok(out)
    }
}

async fn event(State(st): State<Arc<Mutex<Emu>>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut emu = st.lock().unwrap();
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let channel = Emu::channel(&headers, &uri, false).ok().flatten();
    let mut log = Logged {
        status: 200,
        events: 0,
        gzip,
        channel: channel.clone(),
        ack_id: None,
        ids: Vec::new(),
        at: Instant::now(),
    };
    let resp = (|| {
        let ack = emu.auth(&headers)?;
        let channel = Emu::channel(&headers, &uri, ack)?;
        if emu.script.busy_next > 0 && emu.accepted >= emu.script.busy_after_accepted {
            emu.script.busy_next -= 1;
            return Err(wait(reply(503, 9, "Server is busy"), emu.script.retry_after_secs));
        }
        if emu.script.throttle_next > 0 {
            emu.script.throttle_next -= 1;
            return Err(wait(
                reply(429, 27, "ACK channel at capacity"),
                emu.script.retry_after_secs,
            ));
        }
        let mut plain = Vec::new();
        let data: &[u8] = if gzip {
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut plain)
                .map_err(|_| reply(400, 6, "Invalid data format"))?;
            &plain
        } else {
            &body
        };
        let envelopes = emu.envelopes(data)?;
        log.events = envelopes.len();
        if !emu.script.count_only {
            log.ids = envelopes.iter().filter_map(|e| e.id).collect();
        }
        emu.accepted += 1;
        if !ack {
            emu.index(envelopes);
            return Ok(reply(200, 0, "Success"));
        }
        if emu.script.restart_after.is_some_and(|n| emu.accepted > n) {
            emu.script.restart_after = None;
            emu.channels.clear();
        }
        let never = emu.accepted <= emu.script.never_ack_first;
        let ready_at = (!never).then(|| Instant::now() + emu.script.ack_delay);
        let ch = emu.channels.entry(channel.unwrap_or_default()).or_default();
        let id = ch.next_id;
        ch.next_id += 1;
        ch.acks.insert(id, PendingAck { ready_at, envelopes });
        log.ack_id = Some(id);
        let pending = emu.channels.values().map(|c| c.acks.len()).sum();
        emu.max_pending_acks = emu.max_pending_acks.max(pending);
        Ok(reply_json(200, json!({"text": "Success", "code": 0, "ackId": id})))
    })()
    .unwrap_or_else(|e| e);
    log.status = resp.status().as_u16();
    emu.log.push(log);
    resp
}

/// `r` with `Retry-After: secs` when given.
fn wait(mut r: Response, secs: Option<u64>) -> Response {
    if let Some(s) = secs {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(s));
    }
    r
}

async fn ack(State(st): State<Arc<Mutex<Emu>>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut emu = st.lock().unwrap();
    emu.ack_queries += 1;
    emu.ack_query_times.push(Instant::now());
    let r = (|| {
        if !emu.auth(&headers)? {
            return Err(reply(400, 14, "ACK is disabled"));
        }
        if emu.script.ack_busy_next > 0 {
            emu.script.ack_busy_next -= 1;
            return Err(wait(reply(503, 9, "Server is busy"), emu.script.retry_after_secs));
        }
        let channel = Emu::channel(&headers, &uri, true)?.unwrap_or_default();
        let ids: Vec<u64> = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| serde_json::from_value(v.get("acks")?.clone()).ok())
            .ok_or_else(|| reply(400, 6, "Invalid data format"))?;
        emu.max_ids_per_query = emu.max_ids_per_query.max(ids.len());
        let now = Instant::now();
        let mut answer = serde_json::Map::new();
        let mut newly = Vec::new();
        if let Some(ch) = emu.channels.get_mut(&channel) {
            for id in ids.iter() {
                let done = ch.acks.get(id).and_then(|p| p.ready_at).is_some_and(|t| t <= now);
                if done {
                    // Reported true once, then forgotten.
                    newly.extend(ch.acks.remove(id).map(|p| p.envelopes).unwrap_or_default());
                }
                answer.insert(id.to_string(), Value::Bool(done));
            }
        } else {
            answer.extend(ids.iter().map(|id| (id.to_string(), Value::Bool(false))));
        }
        emu.index(newly);
        Ok(reply_json(200, json!({ "acks": answer })))
    })();
    r.unwrap_or_else(|e| e)
}

async fn health(State(st): State<Arc<Mutex<Emu>>>, headers: HeaderMap) -> Response {
    let mut emu = st.lock().unwrap();
    emu.health_checks += 1;
    if headers.contains_key(header::AUTHORIZATION) && emu.auth(&headers).is_err() {
        return reply(400, 21, "Invalid token");
    }
    if emu.script.unhealthy {
        return reply(503, 18, "HEC is unhealthy, queues are full");
    }
    reply(200, 17, "HEC is healthy")
}

impl HecEmulator {
    /// Starts on a free port; `tokens` are `(token, ack enabled)`.
    pub async fn start(tokens: &[(&str, bool)], script: Script) -> HecEmulator {
        Self::start_on(tokens, script, None).await
    }

    /// The same over HTTPS with `tls`'s certificate.
    pub async fn start_tls(tokens: &[(&str, bool)], script: Script, tls: Arc<rustls::ServerConfig>) -> HecEmulator {
        Self::start_on(tokens, script, Some(tls)).await
    }

    async fn start_on(tokens: &[(&str, bool)], script: Script, tls: Option<Arc<rustls::ServerConfig>>) -> HecEmulator {
        let emu = Emu {
            tokens: tokens.iter().map(|(t, a)| (t.to_string(), (*a, false))).collect(),
            script,
            ..Emu::default()
        };
        let state = Arc::new(Mutex::new(emu));
        let app = Router::new()
            .route("/services/collector/event", post(event))
            .route("/services/collector", post(event))
            .route("/services/collector/event/1.0", post(event))
            .route("/services/collector/ack", post(ack))
            .route("/services/collector/health", get(health))
            .route("/services/collector/health/1.0", get(health))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let s = stop.clone();
        let handshake_failures = Arc::new(AtomicU64::new(0));
        let https = tls.is_some();
        match tls {
            None => {
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move { s.cancelled().await })
                        .await;
                });
            }
            Some(config) => {
                let listener = tls_listener::TlsListener::new(listener, config, handshake_failures.clone());
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move { s.cancelled().await })
                        .await;
                });
            }
        }
        HecEmulator {
            addr,
            state,
            stop,
            tls: https,
            handshake_failures,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    pub fn handshake_failures(&self) -> u64 {
        self.handshake_failures.load(Ordering::SeqCst)
    }

    pub fn script(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.state.lock().unwrap().script);
    }

    pub fn allow_indexes(&self, idx: &[&str]) {
        self.state.lock().unwrap().indexes = Some(idx.iter().map(|s| s.to_string()).collect());
    }

    pub fn disable_token(&self, token: &str) {
        if let Some(t) = self.state.lock().unwrap().tokens.get_mut(token) {
            t.1 = true;
        }
    }

    /// Envelopes indexed so far.
    pub fn indexed(&self) -> Vec<Value> {
        self.state.lock().unwrap().indexed.clone()
    }

    /// How many envelopes were indexed so far (also with `count_only`).
    pub fn indexed_count(&self) -> u64 {
        self.state.lock().unwrap().indexed_count
    }

    /// The `evt-N` ids of what was indexed with `count_only` (repeats included).
    pub fn indexed_ids(&self) -> Vec<u64> {
        self.state.lock().unwrap().indexed_ids.clone()
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// The most requests that were accepted and not yet acknowledged at one time.
    pub fn max_pending_acks(&self) -> usize {
        self.state.lock().unwrap().max_pending_acks
    }

    /// The most ackIds one `/services/collector/ack` query asked for.
    pub fn max_ids_per_query(&self) -> usize {
        self.state.lock().unwrap().max_ids_per_query
    }

    pub fn ack_queries(&self) -> u32 {
        self.state.lock().unwrap().ack_queries
    }

    /// When each acknowledgment query came.
    pub fn ack_query_times(&self) -> Vec<Instant> {
        self.state.lock().unwrap().ack_query_times.clone()
    }

    pub fn health_checks(&self) -> u32 {
        self.state.lock().unwrap().health_checks
    }
}

/// The `evt-N` number inside an envelope, if any.
pub fn evt_id(v: &Value) -> Option<u64> {
    id_in(&v.to_string())
}

/// The first `evt-N` id in JSON text.
fn id_in(s: &str) -> Option<u64> {
    let i = s.find("evt-")? + 4;
    let rest = &s[i..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}
