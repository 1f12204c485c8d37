//! Connections of the syslog sink: a connected UDP socket, or a TCP / TLS stream whose
//! read side is watched by a task, so that a receiver closing or resetting the connection
//! is noticed at once (syslog receivers never send anything), and whose kernel send queue
//! can be checked to know when the receiver's TCP has acknowledged every byte written.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
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
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.get_or_insert_with(Instant::now);
    }

    fn at(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Writer = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// A TCP or TLS connection to the receiver.
pub struct Stream {
    writer: Writer,
    closed: Arc<Closed>,
    reader: JoinHandle<()>,
    fd: RawFd,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn watch<R: AsyncRead + Send + Unpin + 'static>(mut r: R, closed: Arc<Closed>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                // A syslog receiver has nothing to say; ignore whatever it sends.
                Ok(_) => {}
            }
        }
        closed.mark();
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
            let target = resolve(addr).await?;
            let tcp = TcpStream::connect(target).await?;
            tcp.set_nodelay(true)?;
            let fd = tcp.as_raw_fd();
            let closed = Arc::new(Closed::default());
            Ok(match tls {
                None => {
                    let (r, w) = tcp.into_split();
                    let reader = watch(r, closed.clone());
                    Stream {
                        writer: Box::new(w),
                        closed,
                        reader,
                        fd,
                    }
                }
                Some((connector, name)) => {
                    let s = connector.connect(name.clone(), tcp).await?;
                    let (r, w) = tokio::io::split(s);
                    let reader = watch(r, closed.clone());
                    Stream {
                        writer: Box::new(w),
                        closed,
                        reader,
                        fd,
                    }
                }
            })
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// When the receiver closed or reset the connection, if it did.
    pub fn closed_at(&self) -> Option<Instant> {
        self.closed.at()
    }

    /// Writes and flushes `data` within `timeout`.
    pub async fn write(&mut self, data: &[u8], timeout: Duration) -> io::Result<()> {
        if self.closed.at().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "receiver closed the connection",
            ));
        }
        let w = &mut self.writer;
        tokio::time::timeout(timeout, async move {
            w.write_all(data).await?;
            w.flush().await
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))?
    }

    /// Waits until the receiver's TCP has acknowledged every byte written (the kernel send
    /// queue is empty). Fails when the connection closes meanwhile or the queue makes no
    /// progress for `stall`.
    pub async fn wait_delivered(&self, stall: Duration) -> io::Result<()> {
        let mut last = unsent_bytes(self.fd)?;
        let mut progress = Instant::now();
        let mut pause = Duration::from_micros(200);
        while last > 0 {
            if self.closed.at().is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    format!("receiver closed the connection with {last} bytes unacknowledged"),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
            let now = unsent_bytes(self.fd)?;
            if now < last {
                progress = Instant::now();
            } else if progress.elapsed() > stall {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{now} bytes not acknowledged by the receiver for {stall:?}"),
                ));
            }
            last = now;
        }
        Ok(())
    }

    /// Flushes, waits for the receiver's TCP acknowledgment and shuts the write side.
    pub async fn close(&mut self, timeout: Duration) -> io::Result<()> {
        self.write(&[], timeout).await?;
        self.wait_delivered(timeout).await?;
        tokio::time::timeout(timeout, self.writer.shutdown())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "shutdown timed out"))?
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

    #[tokio::test]
    async fn connect_errors_surface() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        assert!(Stream::connect(&addr, None, Duration::from_secs(5)).await.is_err());
        assert!(resolve("no-such-host.invalid:514").await.is_err());
    }
}
