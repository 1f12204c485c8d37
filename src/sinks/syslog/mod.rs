//! Syslog sink: CEF, LEEF 1.0/2.0, or JSON (OCSF or raw) with an RFC 5424 or RFC 3164
//! header, over UDP, TCP or TLS (rustls), framed by octet counting or a trailer (LF).
//!
//! Delivery: UDP is fire-and-forget (one message per datagram; no guarantee). On TCP and TLS
//! a batch counts as delivered once written, flushed and acknowledged by the receiver's TCP
//! (the bytes up to its end have left the kernel send queue); the next batch is written
//! while one waits for that acknowledgment, so a receiver's delayed ACK does not hold the
//! stream. Syslog has no application acknowledgment, so the last `replay_window_ms` of
//! delivered data is kept; when the receiver closes or resets the connection, what was
//! acknowledged in that window before the close is written again first on the next
//! connection (duplicates are possible, limited to that window), and batches not yet
//! acknowledged are sent again by the driver. Connection errors make the driver retry the
//! batch with backoff, reconnecting each time.
//!
//! Size: `encoder.max_message_bytes` (default 1472 on UDP, 8192 on TCP/TLS) bounds every
//! message including its syslog header; incidents are split into one message per alert and
//! evidence, and a message still too long is cut with an explicit marker. Cuts, splits and
//! replaced characters are counted per sink.

mod conn;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio_rustls::TlsConnector;

use super::tls::TlsOptions;
use super::{Rejection, SendReport, Settle, Sink, SinkConfig, SinkContext, SinkError};
use crate::config::{typed, ConfigIssue};
use crate::encode::syslog::octet_frames;
use crate::encode::{self, EncodeReport, Encoder, EncoderOptions, Format, Framing};
use crate::event::Event;
use crate::telemetry::{Metrics, SinkLabels};
use conn::Stream;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Largest UDP payload over IPv4.
const UDP_MAX: usize = 65_507;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Udp,
    #[default]
    Tcp,
    Tls,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Udp => "udp",
            Mode::Tcp => "tcp",
            Mode::Tls => "tls",
        }
    }
}

/// `[sinks.NAME] type = "syslog"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSinkConfig {
    /// `host:port` of the receiver.
    pub address: String,
    /// `tcp` (default), `udp` or `tls`.
    #[serde(default)]
    pub mode: Mode,
    /// Payload: `cef` (default), `leef`, `ocsf` or `raw` (JSON after an RFC 5424 header).
    #[serde(default = "default_format")]
    pub encoding: Format,
    /// Size limit, splitting, CEF/LEEF and syslog header/framing options.
    #[serde(default)]
    pub encoder: EncoderOptions,
    #[serde(default)]
    pub tls: TlsOptions,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// A write, or the receiver's TCP acknowledgment of it, making no progress for this
    /// long fails the attempt (the connection is dropped and the batch retried).
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// Wait for the receiver's TCP to acknowledge every byte before a batch counts as
    /// delivered (Linux). Default true.
    #[serde(default = "yes")]
    pub wait_for_tcp_ack: bool,
    /// Data delivered this long before a connection loss is written again (TCP/TLS).
    #[serde(default = "default_replay_window_ms")]
    pub replay_window_ms: u64,
    /// Upper bound of the replay window in bytes.
    #[serde(default = "default_replay_window_max_bytes")]
    pub replay_window_max_bytes: usize,
}

fn default_format() -> Format {
    Format::Cef
}
fn yes() -> bool {
    true
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_write_timeout_ms() -> u64 {
    10_000
}
fn default_replay_window_ms() -> u64 {
    2_000
}
fn default_replay_window_max_bytes() -> usize {
    4 << 20
}

/// `host` of `host:port` (brackets kept for IPv6), when the address has that shape.
fn split_address(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
        return None;
    }
    Some((host, port))
}

/// The machine's host name for the syslog header.
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

pub fn factory(_name: &str, table: toml::Value, prefix: &str) -> Result<Box<dyn SinkConfig>, ConfigIssue> {
    Ok(Box::new(parse(table, prefix)?))
}

/// The sink's config from its table, checked, with the defaults that depend on the mode.
fn parse(table: toml::Value, prefix: &str) -> Result<SyslogSinkConfig, ConfigIssue> {
    let has_tls = table.get("tls").is_some();
    let mut c: SyslogSinkConfig = typed(table, prefix)?;
    if has_tls && c.mode != Mode::Tls {
        // Ignoring it would send the events in clear text, to what is likely a TLS port.
        return Err(ConfigIssue::new(
            format!("{prefix}.tls"),
            format!(
                "TLS settings with mode = \"{}\": set mode = \"tls\" to use them, or remove the table",
                c.mode.as_str()
            ),
        ));
    }
    if split_address(&c.address).is_none() {
        return Err(ConfigIssue::new(
            format!("{prefix}.address"),
            format!("`{}` is not host:port", c.address),
        ));
    }
    if c.encoding == Format::Hec {
        return Err(ConfigIssue::new(
            format!("{prefix}.encoding"),
            "hec envelopes are for the splunk_hec sink; use cef, leef, ocsf or raw",
        ));
    }
    let max = c.encoder.max_message_bytes.get_or_insert(match c.mode {
        // The largest unfragmented datagram payload over a 1500-byte MTU.
        Mode::Udp if c.address.starts_with('[') => 1452,
        Mode::Udp => 1472,
        _ => 8192,
    });
    if c.mode == Mode::Udp && *max > UDP_MAX {
        return Err(ConfigIssue::new(
            format!("{prefix}.encoder.max_message_bytes"),
            format!("{max} is more than a UDP datagram can carry ({UDP_MAX})"),
        ));
    }
    c.encoder
        .validate()
        .map_err(|m| ConfigIssue::new(format!("{prefix}.encoder"), m))?;
    if c.mode == Mode::Tls {
        c.tls
            .check()
            .map_err(|e| ConfigIssue::new(format!("{prefix}.tls"), e.to_string()))?;
    }
    for (key, v) in [
        ("connect_timeout_ms", c.connect_timeout_ms),
        ("write_timeout_ms", c.write_timeout_ms),
    ] {
        if v == 0 {
            return Err(ConfigIssue::new(format!("{prefix}.{key}"), "must be greater than 0"));
        }
    }
    Ok(c)
}

impl SyslogSinkConfig {
    /// The payload encoder wrapped in the syslog header and framing this sink sends.
    fn syslog_encoder(&self) -> Box<dyn Encoder> {
        let mut opts = self.encoder.clone();
        if opts.syslog.hostname.is_none() {
            opts.syslog.hostname = Some(local_hostname());
        }
        if self.mode == Mode::Udp {
            // One message per datagram: frame by count, then send each frame's body.
            opts.syslog.framing = Framing::OctetCounting;
        }
        encode::syslog_encoder(self.encoding, &opts)
    }
}

impl SinkConfig for SyslogSinkConfig {
    fn encoder(&self) -> Option<Box<dyn Encoder>> {
        Some(self.syslog_encoder())
    }

    fn build(&self, name: &str) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(self.sink(name)?))
    }
}

impl SyslogSinkConfig {
    fn sink(&self, name: &str) -> Result<SyslogSink, SinkError> {
        let tls = match self.mode {
            Mode::Tls => {
                if self.tls.insecure_skip_verify {
                    tracing::warn!(
                        sink = name,
                        address = %self.address,
                        "tls.insecure_skip_verify is on: the receiver's certificate is NOT verified"
                    );
                }
                let config = self.tls.client_config().map_err(|e| SinkError::Build(e.to_string()))?;
                let (host, _) = split_address(&self.address).ok_or_else(|| SinkError::Build("bad address".into()))?;
                let server = self
                    .tls
                    .server_name(host)
                    .map_err(|e| SinkError::Build(e.to_string()))?;
                Some((TlsConnector::from(Arc::new(config)), server))
            }
            _ => None,
        };
        Ok(SyslogSink {
            name: name.into(),
            address: self.address.clone(),
            mode: self.mode,
            encoder: self.syslog_encoder(),
            tls,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            wait_for_tcp_ack: self.wait_for_tcp_ack,
            replay_window: Duration::from_millis(self.replay_window_ms),
            replay_max_bytes: self.replay_window_max_bytes,
            udp: None,
            stream: None,
            window: VecDeque::new(),
            window_bytes: 0,
            pending: VecDeque::new(),
            buf: Vec::new(),
            metrics: None,
        })
    }
}

/// Bytes of one written batch, with its message count.
struct Chunk {
    at: Instant,
    data: Bytes,
    messages: u64,
    /// Bytes written on its connection up to the end of this batch (TLS records included).
    end: u64,
}

pub struct SyslogSink {
    name: String,
    address: String,
    mode: Mode,
    encoder: Box<dyn Encoder>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    write_timeout: Duration,
    wait_for_tcp_ack: bool,
    replay_window: Duration,
    replay_max_bytes: usize,
    udp: Option<UdpSocket>,
    stream: Option<Stream>,
    /// Recently delivered batches (TCP/TLS), oldest first.
    window: VecDeque<Chunk>,
    window_bytes: usize,
    /// Delivered batches to write again first on the next connection.
    pending: VecDeque<Chunk>,
    buf: Vec<u8>,
    metrics: Option<Arc<Metrics>>,
}

fn unavailable(kind: &'static str, e: impl std::fmt::Display) -> SinkError {
    SinkError::Unavailable {
        kind,
        message: e.to_string(),
    }
}

impl SyslogSink {
    /// Encodes the batch into `self.buf`; returns the rejections and the totals.
    fn encode(&mut self, events: &[Event]) -> (Vec<Rejection>, EncodeReport, u64) {
        // Every event encoded ahead (the usual case): a buffer of exactly their size, which
        // `send` then hands over whole.
        match events.iter().map(|e| e.encoded.as_ref().map(|x| x.data.len())).sum() {
            Some(exact) => self.buf = Vec::with_capacity(exact),
            None => self.buf.clear(),
        }
        let mut rejected = Vec::new();
        let mut total = EncodeReport::default();
        let mut split = 0;
        for (index, e) in events.iter().enumerate() {
            match encode::append(&*self.encoder, e, &mut self.buf) {
                Ok(r) => {
                    split += r.split as u64;
                    total.add(r);
                }
                Err(err) => rejected.push(Rejection {
                    index,
                    reason: err.reason(),
                    detail: err.to_string(),
                }),
            }
        }
        (rejected, total, split)
    }

    fn count(&self, pick: fn(&Metrics) -> &Family<SinkLabels, Counter>, n: u64) {
        if let Some(m) = &self.metrics {
            Metrics::sink_count(pick(m), &self.name, n);
        }
    }

    async fn send_udp(&mut self, data: &[u8]) -> Result<(), SinkError> {
        if self.udp.is_none() {
            let s = conn::udp(&self.address).await.map_err(|e| unavailable("connect", e))?;
            self.count(|m| &m.sink_connects, 1);
            self.udp = Some(s);
        }
        let sock = self.udp.as_ref().expect("set above");
        for frame in octet_frames(data) {
            if let Err(e) = sock.send(frame).await {
                self.udp = None;
                return Err(unavailable("send", e));
            }
        }
        Ok(())
    }

    /// The connection was lost at `at`: batches delivered within the replay window before
    /// it are queued to be written again.
    fn lost(&mut self, at: Instant, why: &str) {
        let cutoff = at.checked_sub(self.replay_window);
        // What the receiver's TCP had not acknowledged is sent again by the driver (its
        // acknowledgment fails); without that wait every written batch counted as delivered.
        let acked = match (&self.stream, self.wait_for_tcp_ack) {
            (Some(s), true) => s.acked_at_loss(),
            _ => u64::MAX,
        };
        let mut replay = 0u64;
        for c in self.window.drain(..) {
            if c.end <= acked && cutoff.is_none_or(|cut| c.at >= cut) {
                replay += c.messages;
                self.pending.push_back(c);
            }
        }
        self.window_bytes = 0;
        self.stream = None;
        tracing::warn!(
            address = %self.address,
            transport = self.mode.as_str(),
            reason = why,
            replay_messages = replay,
            "syslog connection lost; will reconnect and write the replay window again"
        );
    }

    /// Connects and writes the pending replay first.
    async fn connect(&mut self) -> Result<(), SinkError> {
        let tls = self.tls.as_ref().map(|(c, n)| (c, n));
        let mut s = Stream::connect(&self.address, tls, self.connect_timeout)
            .await
            .map_err(|e| unavailable("connect", e))?;
        s.reset_mid_frame(self.wait_for_tcp_ack && cfg!(target_os = "linux"));
        self.count(|m| &m.sink_connects, 1);
        tracing::info!(address = %self.address, transport = self.mode.as_str(), "syslog connected");
        if !self.pending.is_empty() {
            let mut messages = 0;
            for c in &self.pending {
                s.write(&c.data, self.write_timeout)
                    .await
                    .map_err(|e| unavailable("replay", e))?;
                messages += c.messages;
            }
            if self.wait_for_tcp_ack {
                s.wait_delivered(self.write_timeout)
                    .await
                    .map_err(|e| unavailable("replay", e))?;
            }
            let now = Instant::now();
            let end = s.written();
            for mut c in std::mem::take(&mut self.pending) {
                c.at = now;
                c.end = end;
                self.push_window(c);
            }
            self.count(|m| &m.sink_replayed, messages);
            tracing::info!(address = %self.address, messages, "replay window written again");
        }
        self.stream = Some(s);
        Ok(())
    }

    fn push_window(&mut self, c: Chunk) {
        if self.replay_window.is_zero() || self.replay_max_bytes == 0 {
            return;
        }
        self.window_bytes += c.data.len();
        self.window.push_back(c);
        // Drop what is older than the window or over its size, always keeping the newest.
        // Older counts from when the receiver last acknowledged, not from now: while it has
        // stopped (its loss not yet detected), what it took just before must stay.
        let now = Instant::now();
        let anchor = match &self.stream {
            Some(s) if self.wait_for_tcp_ack => s.last_progress().min(now),
            _ => now,
        };
        while self.window.len() > 1 {
            let front = &self.window[0];
            let old = anchor.saturating_duration_since(front.at) > self.replay_window;
            if !old && self.window_bytes <= self.replay_max_bytes {
                break;
            }
            self.window_bytes -= front.data.len();
            self.window.pop_front();
        }
    }

    /// Writes one batch; with `wait_for_tcp_ack`, returns the wait for its acknowledgment.
    async fn send_stream(&mut self, data: Bytes, messages: u64) -> Result<Option<Settle>, SinkError> {
        if let Some(at) = self.stream.as_ref().and_then(Stream::closed_at) {
            self.lost(at, "receiver closed the connection");
        }
        if self.stream.is_none() {
            self.connect().await?;
        }
        let s = self.stream.as_mut().expect("connected above");
        match s.write(&data, self.write_timeout).await {
            Ok(()) => {
                let end = s.written();
                let settle = self.wait_for_tcp_ack.then(|| {
                    let wait = s.settle(end, self.write_timeout);
                    Settle::new(async move { wait.await.map_err(|e| unavailable("tcp_ack", e)) })
                });
                self.push_window(Chunk {
                    at: Instant::now(),
                    data,
                    messages,
                    end,
                });
                Ok(settle)
            }
            Err(e) => {
                // A write that stalled: the receiver stopped reading; it was last known
                // alive when it last acknowledged.
                let at = s.closed_at().unwrap_or_else(|| match self.wait_for_tcp_ack {
                    true => s.last_progress(),
                    false => Instant::now(),
                });
                self.lost(at, &e.to_string());
                Err(unavailable("write", e))
            }
        }
    }
}

#[async_trait::async_trait]
impl Sink for SyslogSink {
    async fn start(&mut self, ctx: &SinkContext) -> Result<(), SinkError> {
        self.metrics = Some(ctx.metrics.clone());
        Ok(())
    }

    async fn send(&mut self, events: &[Event]) -> Result<SendReport, SinkError> {
        let (rejected, report, split) = self.encode(events);
        let bytes = self.buf.len() as u64;
        let mut settle = None;
        if !self.buf.is_empty() {
            // A buffer of exactly the batch is sent and kept for the replay window as it is
            // (no copy); one with room to spare is copied, so that the window holds no more
            // than the bytes it counts (`replay_window_max_bytes`).
            let data = if self.buf.len() == self.buf.capacity() {
                Bytes::from(std::mem::take(&mut self.buf))
            } else {
                Bytes::copy_from_slice(&self.buf)
            };
            match self.mode {
                Mode::Udp => self.send_udp(&data).await?,
                Mode::Tcp | Mode::Tls => settle = self.send_stream(data, report.messages as u64).await?,
            }
        }
        // Counted when written (a batch sent again after a failed acknowledgment counts again).
        self.count(|m| &m.sink_messages, report.messages as u64);
        self.count(|m| &m.sink_truncated, report.truncated as u64);
        self.count(|m| &m.sink_altered, report.altered as u64);
        self.count(|m| &m.sink_split, split);
        if report.truncated > 0 {
            tracing::debug!(
                truncated = report.truncated,
                "messages cut to max_message_bytes, with a marker"
            );
        }
        Ok(SendReport {
            bytes,
            rejected,
            settle,
        })
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        if let Some(mut s) = self.stream.take() {
            s.close(self.write_timeout).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
