//! An Event Hubs AMQP 1.0 emulator on 127.0.0.1, on the acceptor side of fe2o3-amqp, built
//! from section 8 of the fact sheet (event-hub-streams.md): SASL ANONYMOUS, `$cbs` put-token
//! (202, or 401 for a scripted bad token), `$management` READ of the hub and its partitions
//! with exactly typed map bodies, receiver links on `<hub>/ConsumerGroups/<g>/Partitions/<id>`
//! honouring the selector filter (offset, sequence number, enqueued time, earliest, latest)
//! and the `com.microsoft:epoch` owner level (a newer receiver steals with
//! `amqp:link:stolen`), deliveries pre-settled with typed annotations under link credit.
//! Fault scripting: drop every connection now, or after N more deliveries; refuse tokens
//! (401); let another receiver with a higher epoch take a partition for a while.
//!
//! Here: the hub, its scripting and the connection and session loops; `link` serves the
//! partition receivers, `management` the `$cbs` and `$management` nodes.
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

mod link;
mod management;

use link::{parse_partition_address, register_receiver, selector_of, serve_partition};
use management::{serve_replies, serve_requests};

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
    /// Times `restart` closed and reopened the port.
    pub restarts: u64,
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
    /// Cancels the current accept loop (closes the port).
    listening: Mutex<CancellationToken>,
}

/// Accepts connections until `token` fires (then the listener is dropped: port closed).
async fn accept_loop(listener: TcpListener, s: Arc<Shared>, token: CancellationToken) {
    loop {
        let tcp = tokio::select! {
            _ = token.cancelled() => break,
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
        let listening = shared.stop.child_token();
        tokio::spawn(accept_loop(listener, shared.clone(), listening.clone()));
        EventHubEmulator {
            port,
            shared,
            listening: Mutex::new(listening),
        }
    }

    /// A restart of the service: the port closes and every connection drops, for `down`;
    /// then it listens again on the same port with the same stored events.
    pub async fn restart(&self, down: Duration) {
        self.listening.lock().unwrap().cancel();
        self.shared.drop_all();
        tokio::time::sleep(down).await;
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let token = self.shared.stop.child_token();
        *self.listening.lock().unwrap() = token.clone();
        self.shared.hub().stats.restarts += 1;
        tokio::spawn(accept_loop(listener, self.shared.clone(), token));
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

    /// Accept every token again.
    pub fn accept_all_tokens(&self) {
        self.shared.hub().bad_token = None;
    }

    /// Another consumer opens a receiver on `partition` of `group` with owner level `epoch`:
    /// receivers at or below it are detached with `amqp:link:stolen` and lower ones are
    /// refused until [`EventHubEmulator::release`] with the returned id.
    pub fn steal(&self, group: &str, partition: usize, epoch: i64) -> u64 {
        let id = self.shared.next_link.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let p = partition.to_string();
        register_receiver(
            &self.shared,
            partition,
            group,
            &p,
            "(other consumer)",
            Some(epoch),
            id,
            &token,
        )
        .unwrap_or_else(|(_, why)| panic!("steal refused: {why}"));
        id
    }

    /// The other consumer of [`EventHubEmulator::steal`] detaches.
    pub fn release(&self, id: u64) {
        for links in self.shared.hub().links.values_mut() {
            links.retain(|(l, _, _)| *l != id);
        }
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
    let relay = tokio::spawn(async move {
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
        // The engine's last frames (the `close` answering the client's) are still in the
        // relay: let it copy them out and end when both sides are done, as the service's
        // socket would, before the socket is dropped (else the client reads EOF where it
        // expects the close).
        drop(conn);
        let _ = tokio::time::timeout(Duration::from_secs(5), relay).await;
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
