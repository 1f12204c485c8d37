//! Reads a file or stdin for the replay source straight into the source's line buffer, on
//! tokio's blocking pool.
//!
//! tokio's `File` and `Stdin` read into a buffer of their own and copy from it into the
//! caller's: a second copy of every input byte (2.9 % of the instructions of a file-to-syslog
//! run, callgrind). Here the buffer itself goes to the blocking thread and comes back with
//! the bytes the kernel wrote into it.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::task::JoinHandle;

/// What is read.
pub(super) enum Input {
    File(std::fs::File),
    Stdin,
}

impl Input {
    fn fd(&self) -> RawFd {
        match self {
            Input::File(f) => f.as_raw_fd(),
            Input::Stdin => 0,
        }
    }
}

/// A read on the blocking pool: the buffer it fills and what `read(2)` returned.
type Read = (BytesMut, io::Result<usize>);

/// Reads an [`Input`] into a [`BytesMut`] (see the module docs).
pub(super) struct BlockingReader {
    input: Arc<Input>,
    /// A read that was still running when its caller stopped waiting (a timeout).
    running: Option<JoinHandle<Read>>,
}

impl BlockingReader {
    pub(super) fn new(input: Input) -> BlockingReader {
        BlockingReader {
            input: Arc::new(input),
            running: None,
        }
    }

    /// Appends what one read returns to `buf`, after making `room` bytes of room; `Ok(0)` at
    /// the end of the input. Safe to cancel: `buf` is empty while its read runs, and the next
    /// call waits for that read and puts the buffer back, with what was read appended.
    pub(super) async fn read_buf(&mut self, buf: &mut BytesMut, room: usize) -> io::Result<usize> {
        if self.running.is_none() {
            // Room is made here, not on the blocking thread: the buffer is freed here too
            // (once its lines are let go), and mimalloc reuses a thread's own memory best
            // (allocated on the blocking thread, S1 lost 6 % to fresh pages).
            buf.reserve(room);
            let mut owned = std::mem::take(buf);
            let input = self.input.clone();
            self.running = Some(tokio::task::spawn_blocking(move || {
                let n = read_into(&input, &mut owned);
                (owned, n)
            }));
        }
        let running = self.running.as_mut().expect("started above");
        let done = running.await;
        self.running = None;
        let (owned, n) = done.map_err(io::Error::other)?;
        assert!(
            buf.is_empty(),
            "the line buffer is with its read: nothing may add to it meanwhile"
        );
        *buf = owned;
        n
    }
}

/// One `read(2)` into the spare capacity of `buf` (retried when interrupted).
fn read_into(input: &Input, buf: &mut BytesMut) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let (at, room) = (spare.as_mut_ptr(), spare.len());
    loop {
        // SAFETY: `at..at + room` is the spare capacity of `buf`, valid for writes and not
        // otherwise referenced during the call; read(2) writes at most `room` bytes there.
        let n = unsafe { libc::read(input.fd(), at.cast(), room) };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: read(2) initialized the `n <= room` bytes after the current length.
            unsafe { buf.set_len(buf.len() + n) };
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        // (A process started with descriptor 0 closed has it on /dev/null: Rust's runtime
        // opens it there before `main`, so a missing stdin reads as an empty one.)
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn reads_a_file_to_its_end_appending_to_what_the_buffer_held() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        let mut r = BlockingReader::new(Input::File(f));
        let mut buf = BytesMut::from(&b"head"[..]);
        loop {
            let n = r.read_buf(&mut buf, 64 * 1024).await.unwrap();
            if n == 0 {
                break;
            }
        }
        assert_eq!(&buf[..4], b"head");
        assert_eq!(&buf[4..], &data[..]);
    }

    #[tokio::test]
    async fn a_read_cut_short_by_a_timeout_is_picked_up_by_the_next_call() {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe(2) fills both descriptors, each then owned by exactly one `File`.
        let (rx, mut tx) = unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
            use std::os::fd::FromRawFd;
            (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1]))
        };
        let mut r = BlockingReader::new(Input::File(rx));
        let mut buf = BytesMut::from(&b"partial "[..]);
        // Nothing to read yet: the caller stops waiting, the read keeps the buffer.
        let cut = tokio::time::timeout(Duration::from_millis(50), r.read_buf(&mut buf, 1024)).await;
        assert!(cut.is_err());
        assert!(buf.is_empty(), "the buffer is with the running read");
        tx.write_all(b"line\n").unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), r.read_buf(&mut buf, 1024))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 5);
        assert_eq!(&buf[..], b"partial line\n");
        drop(tx);
        assert_eq!(r.read_buf(&mut buf, 1024).await.unwrap(), 0, "end of input");
        assert_eq!(&buf[..], b"partial line\n");
    }
}
