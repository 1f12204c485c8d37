//! An Event Hubs AMQP 1.0 emulator on 127.0.0.1, on the acceptor side of fe2o3-amqp, built
//! from section 8 of the fact sheet (event-hub-streams.md): SASL ANONYMOUS, `$cbs` put-token
//! (202, or 401 for a scripted bad token), `$management` READ of the hub and its partitions
//! with exactly typed map bodies, receiver links on `<hub>/ConsumerGroups/<g>/Partitions/<id>`
//! honouring the selector filter (offset, sequence number, enqueued time, earliest, latest)
//! and the `com.microsoft:epoch` owner level (a newer receiver steals with
//! `amqp:link:stolen`), deliveries pre-settled with typed annotations under link credit.
//! Fault scripting: drop every connection now, or after N more deliveries.
//!
//! Known fe2o3 races are handled on the emulator's side: deliveries are sent pre-settled (a
//! fast peer's disposition could otherwise arrive before the sender registered the delivery),
//! and every accepted link is polled for the client's Detach.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SaslAnonymousMechanism, SessionAcceptor,
};
use fe2o3_amqp::link::delivery::Sendable;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::definitions::Role;
use fe2o3_amqp::types::definitions::{self, LinkError};
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Message, MessageAnnotations, Properties, TargetArchetype,
};
use fe2o3_amqp::types::performatives::Attach;
use fe2o3_amqp::types::primitives::{Array, OrderedMap, SimpleValue, Symbol, Timestamp, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// `EVENTHUB_EMULATOR_TRACE=1` prints what the emulator does (for debugging a test).
macro_rules! trace {
    ($($t:tt)*) => {
        if std::env::var_os("EVENTHUB_EMULATOR_TRACE").is_some() {
            eprintln!("[emulator] {}", format!($($t)*));
        }
    };
}

pub const NAMESPACE: &str = "emulated.servicebus.windows.net";

/// One stored event.
#[derive(Clone, Debug)]
struct Stored {
    sequence: i64,
    offset: i64,
    enqueued_ms: i64,
    body: Vec<u8>,
    partition_key: Option<String>,
}

/// What the emulator saw, for assertions.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub connections: u64,
    pub put_tokens: u64,
    pub rejected_tokens: u64,
    pub management_reads: u64,
    /// (partition, selector, epoch) of every receiver link attached.
    pub receivers: Vec<(String, String, Option<i64>)>,
    pub delivered: u64,
    pub stolen: u64,
    pub drops: u64,
}

/// A receiver link on a partition: (link id, epoch, steal signal).
type LiveLink = (u64, i64, CancellationToken);

#[derive(Default)]
struct Hub {
    name: String,
    partitions: Vec<Vec<Stored>>,
    next_offset: Vec<i64>,
    stats: Stats,
    /// A put-token whose token contains this is refused with 401.
    bad_token: Option<String>,
    /// Drop every connection once this many more events were delivered.
    drop_after: Option<u64>,
    /// Live receiver links per (group, partition): (link id, epoch, steal signal).
    links: HashMap<(String, String), Vec<LiveLink>>,
}

struct Shared {
    hub: Mutex<Hub>,
    new_events: Notify,
    /// Live connections (their kill switches).
    conns: Mutex<Vec<CancellationToken>>,
    next_link: AtomicU64,
    stop: CancellationToken,
}

impl Shared {
    fn hub(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drop_all(&self) {
        trace!("dropping every connection");
        let conns: Vec<CancellationToken> = std::mem::take(&mut *self.conns.lock().unwrap());
        self.hub().stats.drops += 1;
        for c in conns {
            c.cancel();
        }
    }
}

pub struct EventHubEmulator {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Drop for EventHubEmulator {
    fn drop(&mut self) {
        self.shared.stop.cancel();
        self.shared.drop_all();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

impl EventHubEmulator {
    /// Start on a free loopback port with a hub of `partitions` empty partitions.
    pub async fn start(hub: &str, partitions: usize) -> EventHubEmulator {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            hub: Mutex::new(Hub {
                name: hub.to_string(),
                partitions: vec![Vec::new(); partitions],
                next_offset: vec![0; partitions],
                ..Hub::default()
            }),
            new_events: Notify::new(),
            conns: Mutex::new(Vec::new()),
            next_link: AtomicU64::new(1),
            stop: CancellationToken::new(),
        });
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    _ = s.stop.cancelled() => break,
                    a = listener.accept() => match a {
                        Ok((tcp, _)) => tcp,
                        Err(_) => continue,
                    },
                };
                let kill = s.stop.child_token();
                s.conns.lock().unwrap().push(kill.clone());
                s.hub().stats.connections += 1;
                tokio::spawn(serve_connection(s.clone(), tcp, kill));
            }
        });
        EventHubEmulator { port, shared }
    }

    pub fn endpoint(&self) -> String {
        format!("amqp://127.0.0.1:{}", self.port)
    }

    /// A connection string for the emulated namespace (the key is not checked).
    pub fn connection_string(&self) -> String {
        format!(
            "Endpoint=sb://{NAMESPACE}/;SharedAccessKeyName=listen;SharedAccessKey=ZW11bGF0b3Ita2V5;EntityPath={}",
            self.shared.hub().name
        )
    }

    /// Append a body to a partition; returns its sequence number.
    pub fn enqueue(&self, partition: usize, body: impl Into<Vec<u8>>) -> i64 {
        let seq = {
            let mut hub = self.shared.hub();
            let body = body.into();
            let seq = hub.partitions[partition].len() as i64;
            let offset = hub.next_offset[partition];
            hub.next_offset[partition] += body.len() as i64 + 64;
            hub.partitions[partition].push(Stored {
                sequence: seq,
                offset,
                enqueued_ms: now_ms(),
                body,
                partition_key: None,
            });
            seq
        };
        self.shared.new_events.notify_waiters();
        seq
    }

    pub fn stats(&self) -> Stats {
        self.shared.hub().stats.clone()
    }

    /// Refuse put-token requests whose token contains `marker` (401).
    pub fn reject_tokens_containing(&self, marker: &str) {
        self.shared.hub().bad_token = Some(marker.to_string());
    }

    /// Drop every live connection (TCP closed under the client) right now.
    pub fn drop_connections(&self) {
        self.shared.drop_all();
    }

    /// Drop every live connection once `n` more events were delivered.
    pub fn drop_after_deliveries(&self, n: u64) {
        let mut hub = self.shared.hub();
        hub.drop_after = Some(hub.stats.delivered + n);
    }
}

/// The TCP socket is relayed through an in-memory pipe so that a drop closes it at once,
/// whatever state the AMQP engine is in.
async fn serve_connection(s: Arc<Shared>, mut tcp: TcpStream, kill: CancellationToken) {
    let _ = tcp.set_nodelay(true);
    trace!("tcp accepted");
    let (engine_side, mut relay_side) = tokio::io::duplex(256 * 1024);
    let relay_kill = kill.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut tcp, &mut relay_side) => {}
            _ = relay_kill.cancelled() => {}
        }
        relay_kill.cancel();
        // Dropping both ends closes the client's socket and ends the engine's input.
    });
    let acceptor = ConnectionAcceptor::builder()
        .container_id("eventhub-emulator")
        .sasl_acceptor(SaslAnonymousMechanism::new())
        .build();
    let mut conn = match acceptor.accept(engine_side).await {
        Ok(c) => c,
        Err(e) => {
            trace!("connection refused: {e:?}");
            return;
        }
    };
    trace!("connection open");
    loop {
        let incoming = tokio::select! {
            _ = kill.cancelled() => break,
            i = conn.next_incoming_session() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let session = match SessionAcceptor::new()
            .accept_incoming_session(incoming, &mut conn)
            .await
        {
            Ok(session) => session,
            Err(e) => {
                trace!("session refused: {e:?}");
                break;
            }
        };
        trace!("session begun");
        tokio::spawn(serve_session(s.clone(), session, kill.clone()));
    }
    if !kill.is_cancelled() {
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
    }
    kill.cancel();
}

/// Reply links of a session by node and address (the requests' `reply-to`). The client opens
/// a session per authorization, each with its own request and reply link under the same
/// addresses, so replies are looked up in the request's own session.
type Replies = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Message<AmqpValue<Value>>>>>>;

fn source_address(attach: &Attach) -> Option<String> {
    attach.source.as_ref()?.address.clone()
}

fn target_address(attach: &Attach) -> Option<String> {
    match attach.target.as_deref()? {
        TargetArchetype::Target(t) => t.address.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

async fn serve_session(s: Arc<Shared>, mut session: ListenerSessionHandle, kill: CancellationToken) {
    let acceptor = LinkAcceptor::new();
    let replies: Replies = Arc::new(Mutex::new(HashMap::new()));
    loop {
        let attach = tokio::select! {
            _ = kill.cancelled() => break,
            a = session.next_incoming_attach() => match a {
                Some(a) => a,
                None => break,
            },
        };
        let (source, target, role) = (source_address(&attach), target_address(&attach), attach.role.clone());
        trace!("attach {} {:?} source={source:?} target={target:?}", attach.name, role);
        let epoch = attach
            .properties
            .as_ref()
            .and_then(|p| p.get(&Symbol::from("com.microsoft:epoch")))
            .and_then(|v| match v {
                Value::Long(e) => Some(*e),
                Value::Int(e) => Some(*e as i64),
                _ => None,
            });
        let selector = selector_of(&attach);
        let link = match acceptor.accept_incoming_attach(attach, &mut session).await {
            Ok(l) => l,
            Err(e) => {
                trace!("attach refused: {e:?}");
                continue;
            }
        };
        match (role, link) {
            (Role::Sender, LinkEndpoint::Receiver(r)) => {
                // The client sends requests to $cbs or $management.
                let node = target.unwrap_or_default();
                tokio::spawn(serve_requests(s.clone(), node, r, replies.clone(), kill.clone()));
            }
            (Role::Receiver, LinkEndpoint::Sender(snd)) => {
                let src = source.unwrap_or_default();
                if src == "$cbs" || src == "$management" {
                    let (tx, rx) = mpsc::unbounded_channel();
                    replies
                        .lock()
                        .unwrap()
                        .insert(format!("{src}|{}", target.unwrap_or_default()), tx);
                    tokio::spawn(serve_replies(snd, rx, kill.clone()));
                } else if let Some((group, partition)) = parse_partition_address(&src) {
                    tokio::spawn(serve_partition(
                        s.clone(),
                        snd,
                        group,
                        partition,
                        selector.unwrap_or_default(),
                        epoch,
                        kill.clone(),
                    ));
                } else {
                    let _ = snd
                        .close_with_error(definitions::Error::new(
                            definitions::AmqpError::NotFound,
                            Some(format!("no entity {src}")),
                            None,
                        ))
                        .await;
                }
            }
            _ => {}
        }
    }
    if !kill.is_cancelled() {
        let _ = tokio::time::timeout(Duration::from_secs(2), session.end()).await;
    }
}

/// `amqps://ns/<hub>/ConsumerGroups/<group>/Partitions/<id>` → (group, id).
fn parse_partition_address(addr: &str) -> Option<(String, String)> {
    let i = addr.find("/ConsumerGroups/")?;
    let rest = &addr[i + "/ConsumerGroups/".len()..];
    let (group, rest) = rest.split_once("/Partitions/")?;
    Some((group.to_string(), rest.trim_end_matches('/').to_string()))
}

fn selector_of(attach: &Attach) -> Option<String> {
    let filter = attach.source.as_ref()?.filter.as_ref()?;
    let v = filter.get(&Symbol::from("apache.org:selector-filter:string"))?;
    match v {
        Value::Described(d) => match &d.value {
            Value::String(s) => Some(s.clone()),
            _ => None,
        },
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Where a selector starts in `events`: the index of the first event it admits.
pub(crate) fn start_index(selector: &str, events: &[(i64, i64, i64)]) -> usize {
    // events: (sequence, offset, enqueued ms)
    let parse = |field: &str| -> Option<(bool, String)> {
        let i = selector.find(field)?;
        let rest = selector[i + field.len()..].trim_start();
        let (inclusive, rest) = match rest.strip_prefix(">=") {
            Some(r) => (true, r),
            None => (false, rest.strip_prefix('>')?),
        };
        let v = rest.trim().trim_matches('\'').to_string();
        Some((inclusive, v))
    };
    let first = |key: fn(&(i64, i64, i64)) -> i64, inclusive: bool, v: i64| {
        events
            .iter()
            .position(|e| if inclusive { key(e) >= v } else { key(e) > v })
            .unwrap_or(events.len())
    };
    if let Some((inc, v)) = parse("amqp.annotation.x-opt-offset") {
        if v == "@latest" {
            return events.len();
        }
        return first(|e| e.1, inc, v.parse().unwrap_or(-1));
    }
    if let Some((inc, v)) = parse("amqp.annotation.x-opt-sequence-number") {
        return first(|e| e.0, inc, v.parse().unwrap_or(-1));
    }
    if let Some((inc, v)) = parse("amqp.annotation.x-opt-enqueued-time") {
        return first(|e| e.2, inc, v.parse().unwrap_or(0));
    }
    // No filter: the service's default is the end of the stream.
    events.len()
}

fn event_message(e: &Stored) -> Message<Data> {
    let mut annotations = MessageAnnotations::builder()
        .insert(Symbol::from("x-opt-sequence-number"), Value::Long(e.sequence))
        .insert(Symbol::from("x-opt-offset"), Value::String(e.offset.to_string()))
        .insert(
            Symbol::from("x-opt-enqueued-time"),
            Value::Timestamp(Timestamp::from_milliseconds(e.enqueued_ms)),
        );
    if let Some(k) = &e.partition_key {
        annotations = annotations.insert(Symbol::from("x-opt-partition-key"), Value::String(k.clone()));
    }
    Message::builder()
        .message_annotations(annotations.build())
        .data(e.body.clone())
        .build()
}

/// Register a receiver link on a partition and find where its selector starts; or the error
/// it is refused with.
#[allow(clippy::too_many_arguments)]
fn register_receiver(
    s: &Shared,
    pidx: usize,
    group: &str,
    partition: &str,
    selector: &str,
    epoch: Option<i64>,
    link_id: u64,
    steal: &CancellationToken,
) -> Result<usize, (definitions::ErrorCondition, &'static str)> {
    let mut hub = s.hub();
    if pidx >= hub.partitions.len() {
        return Err((definitions::AmqpError::NotFound.into(), "no such partition"));
    }
    hub.stats
        .receivers
        .push((partition.to_string(), selector.to_string(), epoch));
    let e = epoch.unwrap_or(-1);
    let key = (group.to_string(), partition.to_string());
    let blocked = hub
        .links
        .get(&key)
        .is_some_and(|links| links.iter().any(|(_, other, _)| *other > e));
    if blocked {
        return Err((LinkError::Stolen.into(), "a receiver with a higher epoch is connected"));
    }
    // Epoch receivers take the partition from every receiver at or below their level.
    if epoch.is_some() {
        let mut stolen = 0;
        if let Some(links) = hub.links.get_mut(&key) {
            links.retain(|(_, other, token)| {
                if *other <= e {
                    token.cancel();
                    stolen += 1;
                    false
                } else {
                    true
                }
            });
        }
        hub.stats.stolen += stolen;
    }
    hub.links.entry(key).or_default().push((link_id, e, steal.clone()));
    let keys: Vec<(i64, i64, i64)> = hub.partitions[pidx]
        .iter()
        .map(|e| (e.sequence, e.offset, e.enqueued_ms))
        .collect();
    Ok(start_index(selector, &keys))
}

#[allow(clippy::too_many_arguments)]
async fn serve_partition(
    s: Arc<Shared>,
    mut sender: Sender,
    group: String,
    partition: String,
    selector: String,
    epoch: Option<i64>,
    kill: CancellationToken,
) {
    let Ok(pidx) = partition.parse::<usize>() else {
        let _ = sender
            .close_with_error(definitions::Error::new(
                definitions::AmqpError::NotFound,
                Some("no such partition".to_string()),
                None,
            ))
            .await;
        return;
    };
    let link_id = s.next_link.fetch_add(1, Ordering::Relaxed);
    let steal = CancellationToken::new();
    let admitted = register_receiver(&s, pidx, &group, &partition, &selector, epoch, link_id, &steal);
    let mut next = match admitted {
        Ok(next) => next,
        Err((condition, text)) => {
            let _ = sender
                .close_with_error(definitions::Error::new(condition, Some(text.to_string()), None))
                .await;
            return;
        }
    };
    let unregister = |s: &Shared| {
        let mut hub = s.hub();
        if let Some(v) = hub.links.get_mut(&(group.clone(), partition.clone())) {
            v.retain(|(id, _, _)| *id != link_id);
        }
    };
    'outer: loop {
        // Everything available now, each pre-settled, as credit allows.
        loop {
            let event = s.hub().partitions[pidx].get(next).cloned();
            let Some(event) = event else { break };
            let sendable = Sendable::builder().message(event_message(&event)).settled(true).build();
            tokio::select! {
                r = sender.send(sendable) => if r.is_err() { break 'outer },
                _ = steal.cancelled() => break 'outer,
                _ = kill.cancelled() => break 'outer,
            }
            next += 1;
            let drop_all = {
                let mut hub = s.hub();
                hub.stats.delivered += 1;
                match hub.drop_after {
                    Some(n) if hub.stats.delivered >= n => {
                        hub.drop_after = None;
                        true
                    }
                    _ => false,
                }
            };
            if drop_all {
                s.drop_all();
                break 'outer;
            }
        }
        let notified = s.new_events.notified();
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = sender.on_detach() => { unregister(&s); return; }
            _ = steal.cancelled() => break,
            _ = kill.cancelled() => break,
        }
    }
    unregister(&s);
    if steal.is_cancelled() && !kill.is_cancelled() {
        let _ = sender
            .close_with_error(definitions::Error::new(
                LinkError::Stolen,
                Some("New receiver with higher epoch is created".to_string()),
                None,
            ))
            .await;
    } else if !kill.is_cancelled() {
        let _ = tokio::time::timeout(Duration::from_secs(2), sender.close()).await;
    }
}

async fn serve_replies(
    mut sender: Sender,
    mut rx: mpsc::UnboundedReceiver<Message<AmqpValue<Value>>>,
    kill: CancellationToken,
) {
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => {
                    let sendable = Sendable::builder().message(m).settled(true).build();
                    if let Err(e) = sender.send(sendable).await {
                        trace!("reply not sent: {e:?}");
                        return;
                    }
                }
                None => break,
            },
            _ = sender.on_detach() => return,
            _ = kill.cancelled() => return,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sender.close()).await;
}

fn prop<'a>(ap: &'a Option<ApplicationProperties>, key: &str) -> Option<&'a SimpleValue> {
    ap.as_ref()?.0.get(key)
}

fn prop_str(ap: &Option<ApplicationProperties>, key: &str) -> Option<String> {
    match prop(ap, key)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

fn reply(status: i32, description: &str, request: &Message<Body<Value>>, body: Value) -> Message<AmqpValue<Value>> {
    let correlation = request.properties.as_ref().and_then(|p| p.message_id.clone());
    Message::builder()
        .properties(Properties {
            correlation_id: correlation,
            ..Default::default()
        })
        .application_properties(
            ApplicationProperties::builder()
                .insert("status-code", SimpleValue::Int(status))
                .insert("status-description", SimpleValue::String(description.to_string()))
                .build(),
        )
        .value(body)
        .build()
}

fn body_string(m: &Message<Body<Value>>) -> String {
    match &m.body {
        Body::Value(v) => match &v.0 {
            Value::String(s) => s.clone(),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut m = OrderedMap::new();
    for (k, v) in entries {
        m.insert(Value::String(k.to_string()), v);
    }
    Value::Map(m)
}

fn management_read(s: &Shared, request: &Message<Body<Value>>) -> Message<AmqpValue<Value>> {
    let ap = &request.application_properties;
    let ty = prop_str(ap, "type").unwrap_or_default();
    let name = prop_str(ap, "name").unwrap_or_default();
    let mut hub = s.hub();
    hub.stats.management_reads += 1;
    if prop_str(ap, "operation").as_deref() != Some("READ") {
        return reply(400, "unsupported operation", request, Value::Null);
    }
    if name != hub.name {
        return reply(404, "no such event hub", request, Value::Null);
    }
    match ty.as_str() {
        "com.microsoft:eventhub" => {
            let ids: Vec<Value> = (0..hub.partitions.len())
                .map(|i| Value::String(i.to_string()))
                .collect();
            let body = map(vec![
                ("name", Value::String(hub.name.clone())),
                (
                    "created_at",
                    Value::Timestamp(Timestamp::from_milliseconds(1_700_000_000_000)),
                ),
                ("partition_count", Value::Int(hub.partitions.len() as i32)),
                ("partition_ids", Value::Array(Array::from(ids))),
            ]);
            reply(200, "OK", request, body)
        }
        "com.microsoft:partition" => {
            let pid = prop_str(ap, "partition").unwrap_or_default();
            let Some(events) = pid.parse::<usize>().ok().and_then(|i| hub.partitions.get(i)) else {
                return reply(404, "no such partition", request, Value::Null);
            };
            let last = events.last();
            let body = map(vec![
                ("name", Value::String(hub.name.clone())),
                ("partition", Value::String(pid.clone())),
                ("type", Value::String("com.microsoft:partition".to_string())),
                (
                    "begin_sequence_number",
                    Value::Long(events.first().map_or(0, |e| e.sequence)),
                ),
                (
                    "last_enqueued_sequence_number",
                    Value::Long(last.map_or(-1, |e| e.sequence)),
                ),
                ("last_enqueued_sequence_number_epoch", Value::Long(0)),
                (
                    "last_enqueued_offset",
                    Value::String(last.map_or(-1, |e| e.offset).to_string()),
                ),
                (
                    "last_enqueued_time_utc",
                    Value::Timestamp(Timestamp::from_milliseconds(last.map_or(0, |e| e.enqueued_ms))),
                ),
                ("is_partition_empty", Value::Bool(events.is_empty())),
            ]);
            reply(200, "OK", request, body)
        }
        _ => reply(404, "unknown entity type", request, Value::Null),
    }
}

fn put_token(s: &Shared, request: &Message<Body<Value>>) -> Message<AmqpValue<Value>> {
    let token = body_string(request);
    let mut hub = s.hub();
    hub.stats.put_tokens += 1;
    let ok = prop_str(&request.application_properties, "operation").as_deref() == Some("put-token")
        && !token.is_empty()
        && hub.bad_token.as_ref().is_none_or(|b| !token.contains(b.as_str()));
    if ok {
        reply(202, "Accepted", request, Value::Null)
    } else {
        hub.stats.rejected_tokens += 1;
        reply(401, "Unauthorized", request, Value::Null)
    }
}

async fn serve_requests(
    s: Arc<Shared>,
    node: String,
    mut receiver: Receiver,
    replies: Replies,
    kill: CancellationToken,
) {
    loop {
        let delivery = tokio::select! {
            _ = kill.cancelled() => return,
            d = receiver.recv::<Body<Value>>() => match d {
                Ok(d) => d,
                Err(e) => {
                    trace!("request link on {node} ended: {e:?}");
                    return;
                }
            },
        };
        if receiver.accept(&delivery).await.is_err() {
            return;
        }
        let request = delivery.message();
        trace!(
            "request on {node}: {:?}",
            request.application_properties.as_ref().map(|a| a.0.get("operation"))
        );
        let response = if node == "$cbs" {
            put_token(&s, request)
        } else {
            management_read(&s, request)
        };
        let reply_to = request
            .properties
            .as_ref()
            .and_then(|p| p.reply_to.clone())
            .unwrap_or_default();
        // The reply link is attached before the first request; allow for it arriving late.
        let mut tx = None;
        for _ in 0..100 {
            tx = replies.lock().unwrap().get(&format!("{node}|{reply_to}")).cloned();
            if tx.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match tx {
            Some(tx) => {
                if tx.send(response).is_err() {
                    trace!("reply link to {reply_to} is gone");
                }
            }
            None => trace!("no reply link {reply_to}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::start_index;

    #[test]
    fn selectors() {
        let ev = [(0, 0, 1000), (1, 100, 2000), (2, 200, 3000)];
        assert_eq!(start_index("amqp.annotation.x-opt-offset > '-1'", &ev), 0);
        assert_eq!(start_index("amqp.annotation.x-opt-offset > '@latest'", &ev), 3);
        assert_eq!(start_index("amqp.annotation.x-opt-offset >'100'", &ev), 2);
        assert_eq!(start_index("amqp.annotation.x-opt-offset >='100'", &ev), 1);
        assert_eq!(start_index("amqp.annotation.x-opt-sequence-number >'0'", &ev), 1);
        assert_eq!(start_index("amqp.annotation.x-opt-enqueued-time >='2000'", &ev), 1);
    }
}
