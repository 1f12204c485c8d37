//! Connections of the syslog sink: a connected UDP socket, or a TCP / TLS stream whose
//! read side is watched by a task, so that a receiver closing or resetting the connection
//! is noticed at once (syslog receivers never send anything), and whose kernel send queue
//! can be checked to know when the receiver's TCP has acknowledged every byte written.
//! Bytes handed to the socket are counted (below TLS), so the acknowledgment of one batch
//! can be awaited while later batches are written ([`Stream::settle`]).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// First address `addr` (`host:port`) resolves to.
pub async fn resolve(addr: &str) -> io::Result<std::net::SocketAddr> {
    tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolves to no address")))
}

/// A TCP connection to the first address of `addr` that accepts one, in the resolver's
/// order (an IPv6 address first on a receiver listening on IPv4 only, or a name shared by
/// several collectors with one down, must not keep the sink from the others).
async fn connect_any(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let targets: Vec<std::net::SocketAddr> = tokio::net::lookup_host(addr).await?.collect();
    // Each address gets its share of the connect timeout (a silently dropped first one must
    // not use all of it).
    let per = (timeout / targets.len().max(1) as u32).max(Duration::from_millis(500));
    let mut last = None;
    for target in targets {
        match tokio::time::timeout(per, TcpStream::connect(target)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {target} timed out"),
                ))
            }
        }
        if let Some(e) = &last {
            tracing::debug!(address = addr, %target, error = %e, "connect failed; trying the next address");
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolves to no address"))))
}

/// A UDP socket connected to the receiver (so ICMP "port unreachable" surfaces as an error).
pub async fn udp(addr: &str) -> io::Result<UdpSocket> {
    let target = resolve(addr).await?;
    let local = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(target).await?;
    Ok(sock)
}

/// When the receiver closed the connection, set by the reader task.
#[derive(Debug, Default)]
struct Closed(Mutex<Option<Instant>>);

impl Closed {
    fn mark(&self) {
        self.mark_at(Instant::now());
    }

    fn mark_at(&self, at: Instant) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.get_or_insert(at);
    }

    fn at(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Writer = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// What a connection shares with the waits for its acknowledgments.
#[derive(Debug)]
struct Shared {
    closed: Closed,
    /// Bytes handed to the socket (TLS records included).
    written: AtomicU64,
    /// A duplicate of the socket's descriptor, to read its send queue.
    fd: OwnedFd,
    /// Bytes acknowledged when the connection was found lost: fixed from then on, so that
    /// what is written again from the replay window and what is sent again for a failed
    /// acknowledgment never leave a gap.
    frozen: OnceLock<u64>,
    /// When the receiver's TCP was last seen acknowledging (or the connection was made):
    /// the last moment it is known to have been alive.
    progress: Mutex<Instant>,
}

impl Shared {
    fn progressed(&self) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn last_progress(&self) -> Instant {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes the receiver's TCP has acknowledged (a lower bound).
    fn acked(&self) -> io::Result<u64> {
        if let Some(f) = self.frozen.get() {
            return Ok(*f);
        }
        // `written` first: bytes written after it only make the queue longer.
        let written = self.written.load(Ordering::SeqCst);
        let queued = unsent_bytes(self.fd.as_raw_fd())? as u64;
        Ok(written.saturating_sub(queued))
    }

    /// Fixes the acknowledged count (first call wins) and returns it.
    fn freeze(&self) -> u64 {
        *self.frozen.get_or_init(|| {
            let written = self.written.load(Ordering::SeqCst);
            let queued = unsent_bytes(self.fd.as_raw_fd()).map_or(written, |q| q as u64);
            written.saturating_sub(queued)
        })
    }
}

/// Counts the bytes the socket accepts.
struct Counted<T> {
    inner: T,
    shared: Arc<Shared>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.shared.written.fetch_add(*n as u64, Ordering::SeqCst);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TCP or TLS connection to the receiver.
pub struct Stream {
    writer: Writer,
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    /// A write stopped part way (a stall, a cancelled send): the receiver may hold part of
    /// a message.
    mid_frame: bool,
    /// Reset such a connection instead of closing it (see [`Stream::reset_mid_frame`]).
    reset_mid_frame: bool,
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.mid_frame && self.reset_mid_frame {
            // Reset instead of a clean close: a receiver framing by line ends would take the
            // part of a message it holds for a whole one (the message is sent again).
            reset_on_close(self.shared.fd.as_raw_fd());
        }
        self.reader.abort();
        // Waits still running end now (their batches are sent again, or replayed).
        self.shared.closed.mark();
        self.shared.freeze();
    }
}

fn watch<R: AsyncRead + Send + Unpin + 'static>(mut r: R, shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                // A syslog receiver has nothing to say; ignore whatever it sends.
                Ok(_) => {}
            }
        }
        shared.closed.mark();
    })
}

impl Stream {
    /// Connects (and completes the TLS handshake when `tls` is set) within `timeout`.
    pub async fn connect(
        addr: &str,
        tls: Option<(&TlsConnector, &ServerName<'static>)>,
        timeout: Duration,
    ) -> io::Result<Stream> {
        let fut = async {
            let tcp = connect_any(addr, timeout).await?;
            tcp.set_nodelay(true)?;
            let shared = Arc::new(Shared {
                closed: Closed::default(),
                written: AtomicU64::new(0),
                fd: tcp.as_fd().try_clone_to_owned()?,
                frozen: OnceLock::new(),
                progress: Mutex::new(Instant::now()),
            });
            let tcp = Counted {
                inner: tcp,
                shared: shared.clone(),
            };
            let (reader, writer): (JoinHandle<()>, Writer) = match tls {
                None => {
                    let (r, w) = tokio::io::split(tcp);
                    (watch(r, shared.clone()), Box::new(w))
                }
                Some((connector, name)) => {
                    let s = connector.connect(name.clone(), tcp).await?;
                    let (r, w) = tokio::io::split(s);
                    (watch(r, shared.clone()), Box::new(w))
                }
            };
            Ok(Stream {
                writer,
                shared,
                reader,
                mid_frame: false,
                reset_mid_frame: false,
            })
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// Reset the connection, rather than close it, when it is dropped in the middle of a
    /// message. Only where every byte counted as delivered was acknowledged by the
    /// receiver's TCP (waiting for TCP acknowledgments, on Linux): a reset drops what is
    /// still queued, which must then all be sent again anyway.
    pub fn reset_mid_frame(&mut self, on: bool) {
        self.reset_mid_frame = on;
    }

    /// When the receiver closed or reset the connection, if it did; for a connection given
    /// up because the receiver stopped acknowledging, when it last did.
    pub fn closed_at(&self) -> Option<Instant> {
        self.shared.closed.at()
    }

    /// When the receiver's TCP was last seen acknowledging: the replay window is measured
    /// back from there (a receiver that died had taken what it acknowledged just before).
    pub fn last_progress(&self) -> Instant {
        self.shared.last_progress()
    }

    /// Bytes handed to the socket so far: the end of what was last written.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::SeqCst)
    }

    /// Fixes and returns the bytes acknowledged by the receiver when the connection is
    /// found lost: written data up to there was delivered, data after it was not.
    pub fn acked_at_loss(&self) -> u64 {
        self.shared.closed.mark();
        self.shared.freeze()
    }

    /// Waits until the receiver's TCP has acknowledged the first `end` bytes, without
    /// holding the stream (later batches are written meanwhile). Fails when the connection
    /// is lost first, or makes no progress for `stall` (the connection is then given up).
    pub fn settle(
        &self,
        end: u64,
        stall: Duration,
    ) -> impl std::future::Future<Output = io::Result<()>> + Send + 'static {
        let shared = self.shared.clone();
        async move {
            let mut last = shared.acked()?;
            let mut progress = Instant::now();
            let mut pause = Duration::from_micros(200);
            loop {
                if last >= end {
                    shared.progressed();
                    return Ok(());
                }
                if shared.closed.at().is_some() {
                    let acked = shared.freeze();
                    if acked >= end {
                        return Ok(());
                    }
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        format!("connection lost with {} bytes of the batch unacknowledged", end - acked),
                    ));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(5));
                let now = shared.acked()?;
                if now > last {
                    progress = Instant::now();
                    shared.progressed();
                } else if progress.elapsed() > stall {
                    // Lost when it stopped acknowledging, not now: the replay window reaches
                    // back from there.
                    shared.closed.mark_at(shared.last_progress());
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{} bytes not acknowledged by the receiver for {stall:?}", end - now),
                    ));
                }
                last = now;
            }
        }
    }

    /// Writes and flushes `data`; fails when the socket takes nothing for `timeout` (a
    /// receiver that reads slowly but steadily gets the whole batch, however long that takes).
    pub async fn write(&mut self, data: &[u8], timeout: Duration) -> io::Result<()> {
        if self.shared.closed.at().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "receiver closed the connection",
            ));
        }
        let stalled = || io::Error::new(io::ErrorKind::TimedOut, "write made no progress within the timeout");
        let mut rest = data;
        while !rest.is_empty() {
            // Cancel-safe: a write that is still pending when the timeout fires took nothing.
            match tokio::time::timeout(timeout, self.writer.write(rest)).await {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => {
                    // Part of the batch is out: until the rest is, the receiver may hold part
                    // of a message.
                    self.mid_frame = true;
                    rest = &rest[n..];
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(stalled()),
            }
        }
        tokio::time::timeout(timeout, self.writer.flush())
            .await
            .map_err(|_| stalled())??;
        self.mid_frame = false;
        Ok(())
    }

    /// Waits until the receiver's TCP has acknowledged every byte written (the kernel send
    /// queue is empty). Fails when the connection closes meanwhile or the queue makes no
    /// progress for `stall`.
    pub async fn wait_delivered(&self, stall: Duration) -> io::Result<()> {
        self.settle(self.written(), stall).await
    }

    /// Flushes, waits for the receiver's TCP acknowledgment and shuts the write side.
    pub async fn close(&mut self, timeout: Duration) -> io::Result<()> {
        if self.mid_frame && self.reset_mid_frame {
            // Dropped unflushed: reset (see `Drop`).
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "closed in the middle of a message",
            ));
        }
        self.write(&[], timeout).await?;
        self.wait_delivered(timeout).await?;
        tokio::time::timeout(timeout, self.writer.shutdown())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "shutdown timed out"))?
    }
}

/// `SO_LINGER` with a zero timeout: closing the socket sends a reset and drops what is
/// unsent.
fn reset_on_close(fd: RawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is the socket's descriptor, open while the `Stream` lives; the option
    // value is a `linger` of the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Bytes in the socket's send queue: written but not yet acknowledged by the peer's TCP.
#[cfg(target_os = "linux")]
fn unsent_bytes(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: `fd` is a socket owned by the `Stream` that calls this, open while it lives;
    // TIOCOUTQ (SIOCOUTQ for sockets) writes exactly one c_int to the pointer.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n.max(0) as usize)
    }
}

/// Elsewhere the send queue cannot be read: delivery means written and flushed.
#[cfg(not(target_os = "linux"))]
fn unsent_bytes(_fd: RawFd) -> io::Result<usize> {
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn notices_a_closed_connection_and_waits_for_tcp_acks() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let accept = tokio::spawn(async move { l.accept().await.unwrap().0 });
        let mut s = Stream::connect(&addr, None, Duration::from_secs(5)).await.unwrap();
        let mut peer = accept.await.unwrap();
        s.write(b"5 hello", Duration::from_secs(5)).await.unwrap();
        s.wait_delivered(Duration::from_secs(5)).await.unwrap();
        let mut got = [0u8; 7];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"5 hello");
        assert!(s.closed_at().is_none());
        drop(peer);
        let start = Instant::now();
        while s.closed_at().is_none() && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(s.closed_at().is_some(), "the reader task saw the close");
        let e = s.write(b"x", Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }

    /// The write timeout limits a stall, not the whole batch: a receiver that reads slowly
    /// but steadily gets a batch that takes far longer than the timeout to go through.
    #[tokio::test]
    async fn a_slow_steady_receiver_gets_a_batch_longer_than_the_write_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        const BATCH: usize = 24 << 20;
        let reader = tokio::spawn(async move {
            let mut peer = l.accept().await.unwrap().0;
            let mut buf = vec![0u8; 256 << 10];
            let mut got = 0;
            while got < BATCH {
                let n = peer.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed after {got} bytes");
                got += n;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            got
        });
        let mut s = Stream::connect(&addr, None, Duration::from_secs(5)).await.unwrap();
        let start = Instant::now();
        s.write(&vec![b'x'; BATCH], Duration::from_millis(400)).await.unwrap();
        s.wait_delivered(Duration::from_secs(5)).await.unwrap();
        assert_eq!(reader.await.unwrap(), BATCH);
        assert!(
            start.elapsed() > Duration::from_millis(400),
            "the batch went through faster than the timeout ({:?}): the test shows nothing",
            start.elapsed()
        );
    }

    /// A write that stalls part way (the receiver stopped reading): the connection is reset
    /// when dropped, not closed cleanly, so a receiver framing by line ends does not take
    /// the part of a message it holds for a whole one.
    #[tokio::test]
    async fn a_connection_given_up_in_the_middle_of_a_message_is_reset() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let accept = tokio::spawn(async move { l.accept().await.unwrap().0 });
        let mut s = Stream::connect(&addr, None, Duration::from_secs(5)).await.unwrap();
        s.reset_mid_frame(true);
        let mut peer = accept.await.unwrap();
        // Far more than the socket buffers hold, as one line.
        let mut line = vec![b'x'; 64 << 20];
        line.push(b'\n');
        let e = s.write(&line, Duration::from_millis(300)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(
            s.close(Duration::from_secs(1)).await.is_err(),
            "no clean close mid-message"
        );
        drop(s);
        let mut got = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(10), peer.read_to_end(&mut got))
            .await
            .expect("the receiver sees the end");
        let e = r.expect_err("a reset, not a clean end after part of the line");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        assert!(!got.contains(&b'\n'));
    }

    #[tokio::test]
    async fn connect_errors_surface() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        assert!(Stream::connect(&addr, None, Duration::from_secs(5)).await.is_err());
        assert!(resolve("no-such-host.invalid:514").await.is_err());
    }
}
