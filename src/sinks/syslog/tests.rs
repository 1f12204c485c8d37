//! Unit tests of the syslog sink: replay after a dying receiver, pipelined TCP
//! acknowledgments, config checks.

use super::*;
use crate::encode::testutil::{alert_ocsf, event};
use crate::event::EventKind;
use tokio::io::AsyncReadExt;

/// A receiver that takes the first connection's data into its kernel buffer and then
/// dies without reading it (what a crashing syslog daemon does): the sink must write the
/// replay window again on its next connection.
#[tokio::test]
async fn data_lost_by_a_dying_receiver_is_written_again() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let table = format!("address = \"{addr}\"\nencoder.syslog.hostname = \"h\"\nencoder.syslog.procid = \"1\"\n");
    let config = factory("s", toml::from_str(&table).unwrap(), "sinks.s").unwrap();
    let mut sink = config.build("s").unwrap();
    let ev = |id: &str| {
        let mut o = alert_ocsf();
        o["metadata"]["uid"] = id.into();
        event(EventKind::Alert, "GraphAlert", "{}", Some(o))
    };
    let first = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        (l, s)
    });
    sink.send(&[ev("first-batch")]).await.unwrap();
    let (l, dying) = first.await.unwrap();
    // Delivered to the receiver's kernel (TCP-acked), never read by the receiver.
    drop(dying);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    });
    sink.send(&[ev("second-batch")]).await.unwrap();
    sink.close().await.unwrap();
    let got = String::from_utf8(second.await.unwrap()).unwrap();
    let frames: Vec<&[u8]> = octet_frames(got.as_bytes()).collect();
    assert_eq!(frames.len(), 2, "{got}");
    assert!(
        std::str::from_utf8(frames[0]).unwrap().contains("cs5=first-batch"),
        "{got}"
    );
    assert!(
        std::str::from_utf8(frames[1]).unwrap().contains("cs5=second-batch"),
        "{got}"
    );
}

/// `n` raw events `{"tag":"TAG-i","pad":"x…"}` with `pad` bytes of padding.
fn tagged(tag: &str, n: usize, pad: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let raw = format!("{{\"tag\":\"{tag}-{i}\",\"pad\":\"{}\"}}", "x".repeat(pad));
            event(EventKind::SignIn, "SignInLogs", &raw, None)
        })
        .collect()
}

/// A listener with a small receive window (a receiver that does not read acknowledges only
/// about this much), and a raw-encoding TCP sink to it with the `extra` keys.
fn small_window_receiver(extra: &str) -> (tokio::net::TcpListener, Box<dyn Sink>) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = sock.local_addr().unwrap().to_string();
    let l = sock.listen(4).unwrap();
    let table = format!("address = \"{addr}\"\nencoding = \"raw\"\nencoder.syslog.hostname = \"h\"\n{extra}\n");
    let sink = factory("s", toml::from_str(&table).unwrap(), "sinks.s")
        .unwrap()
        .build("s")
        .unwrap();
    (l, sink)
}

/// The next batch is written while one waits for the receiver's TCP acknowledgment; a
/// batch the receiver never acknowledged fails its wait (the driver sends it again) and
/// is not in the replay of the next connection, while acknowledged ones are.
#[tokio::test]
async fn later_batches_are_written_while_one_waits_for_its_tcp_acknowledgment() {
    let (l, mut sink) = small_window_receiver("write_timeout_ms = 3000");
    // Small batches fit the window; big ones (4 x 3 KB) do not.
    let batch = |tag: &str, n: usize| tagged(tag, n, if n > 1 { 3000 } else { 100 });
    let accept = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        (l, s)
    });
    let small = sink.send(&batch("small", 1)).await.unwrap();
    let (l, mut receiver) = accept.await.unwrap();
    small.settle.expect("a wait on TCP").0.await.unwrap();
    // 12 KB against a window of a few KB: written, not acknowledged while nobody reads.
    let big = sink.send(&batch("big", 4)).await.unwrap();
    let mut big_wait = big.settle.unwrap().0;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut big_wait)
            .await
            .is_err(),
        "acknowledged although the receiver's window is full"
    );
    // The sink is not held: the next batch is written meanwhile.
    let next = tokio::time::timeout(Duration::from_secs(2), sink.send(&batch("next", 1)))
        .await
        .expect("send not held by the pending acknowledgment")
        .unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while !(got.ends_with(b"}") && String::from_utf8_lossy(&got).contains("next-0")) {
            let n = receiver.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        receiver
    });
    big_wait.await.unwrap();
    next.settle.unwrap().0.await.unwrap();
    let receiver = reader.await.unwrap();
    // Now a batch the receiver never acknowledges, and the receiver dies.
    let lost = sink.send(&batch("lost", 4)).await.unwrap();
    let mut lost_wait = lost.settle.unwrap().0;
    assert!(tokio::time::timeout(Duration::from_millis(200), &mut lost_wait)
        .await
        .is_err());
    drop(receiver);
    let e = tokio::time::timeout(Duration::from_secs(5), lost_wait)
        .await
        .expect("the wait ends with the connection")
        .unwrap_err();
    assert!(e.to_string().contains("unacknowledged"), "{e}");
    let second = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    });
    let last = sink.send(&batch("last", 1)).await.unwrap();
    last.settle.unwrap().0.await.unwrap();
    sink.close().await.unwrap();
    let got = String::from_utf8(second.await.unwrap()).unwrap();
    for tag in ["small-0", "big-3", "next-0", "last-0"] {
        assert!(got.contains(tag), "{tag} missing from the second connection");
    }
    assert!(
        !got.contains("lost-"),
        "an unacknowledged batch was replayed (the driver sends it)"
    );
}

fn table(s: &str) -> toml::Value {
    toml::from_str(s).unwrap()
}

#[test]
fn config_defaults_and_checks() {
    let c = factory("s", table("address = \"127.0.0.1:514\"\nmode = \"udp\""), "sinks.s").unwrap();
    let dbg = format!("{c:?}");
    assert!(dbg.contains("max_message_bytes: Some(1472)"), "{dbg}");
    // IPv6: the largest unfragmented payload over a 1500-byte MTU is 20 bytes smaller.
    let c = factory("s", table("address = \"[2001:db8::5]:514\"\nmode = \"udp\""), "sinks.s").unwrap();
    assert!(format!("{c:?}").contains("max_message_bytes: Some(1452)"));
    let c = factory("s", table("address = \"siem:6514\"\nencoding = \"leef\""), "sinks.s").unwrap();
    assert!(format!("{c:?}").contains("max_message_bytes: Some(8192)"));
    let e = factory("s", table("address = \"nohost\""), "sinks.s").unwrap_err();
    assert_eq!(e.path, "sinks.s.address");
    let e = factory("s", table("address = \"h:1\"\nencoding = \"hec\""), "sinks.s").unwrap_err();
    assert_eq!(e.path, "sinks.s.encoding");
    let e = factory(
        "s",
        table("address = \"h:1\"\nmode = \"udp\"\nencoder.max_message_bytes = 70000"),
        "sinks.s",
    )
    .unwrap_err();
    assert_eq!(e.path, "sinks.s.encoder.max_message_bytes");
    let e = factory(
        "s",
        table("address = \"h:1\"\nmode = \"tls\"\ntls.ca_file = \"/nonexistent/ca.pem\""),
        "sinks.s",
    )
    .unwrap_err();
    assert!(
        e.path == "sinks.s.tls" && e.message.contains("/nonexistent/ca.pem"),
        "{e:?}"
    );
    // TLS settings without mode = "tls" would be ignored and the events sent in clear text.
    let e = factory(
        "s",
        table("address = \"siem:6514\"\ntls.ca_file = \"/etc/ssl/ca.pem\""),
        "sinks.s",
    )
    .unwrap_err();
    assert!(e.path == "sinks.s.tls" && e.message.contains("mode = \"tcp\""), "{e:?}");
    assert!(factory("s", table("address = \"h:1\"\nbogus = 1"), "sinks.s").is_err());
    assert_eq!(split_address("[::1]:514"), Some(("[::1]", 514)));
    assert_eq!(split_address("::1:514"), None);
    assert_eq!(split_address("h:0"), None);
}

/// Events encoded ahead (the pipeline's usual case) are sent from a buffer of exactly their
/// size, handed to the replay window as it is: the window holds no more than the bytes it
/// counts, and the sink keeps no buffer sized by an earlier, larger batch.
#[tokio::test]
async fn a_batch_encoded_ahead_is_kept_in_the_window_at_its_size() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let config = parse(
        toml::from_str(&format!("address = \"{addr}\"\nencoder.syslog.hostname = \"h\"\n")).unwrap(),
        "sinks.s",
    )
    .unwrap();
    let mut sink = config.sink("s").unwrap();
    let encoder = config.syslog_encoder();
    let ahead = |n: usize| -> Vec<Event> {
        (0..n)
            .map(|i| {
                let mut o = alert_ocsf();
                o["metadata"]["uid"] = format!("evt-{i}").into();
                let mut e = event(EventKind::Alert, "GraphAlert", "{}", Some(o));
                let mut data = Vec::new();
                let report = encoder.encode(&e, &mut data).unwrap();
                e.encoded = Some(crate::encode::Encoded {
                    data: Bytes::from(data),
                    report,
                });
                e
            })
            .collect()
    };
    let reader = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    });
    for n in [200, 1, 3] {
        let batch = ahead(n);
        let size: usize = batch.iter().map(|e| e.encoded.as_ref().unwrap().data.len()).sum();
        sink.encode(&batch);
        assert_eq!(
            (sink.buf.len(), sink.buf.capacity()),
            (size, size),
            "a buffer of exactly the batch, whatever the last one held"
        );
        let sent = sink.send(&batch).await.unwrap();
        assert_eq!(sent.bytes as usize, size);
        assert_eq!(sink.buf.capacity(), 0, "the batch's buffer went with it");
        assert_eq!(sink.window.back().unwrap().data.len(), size);
    }
    assert_eq!(
        sink.window_bytes,
        sink.window.iter().map(|c| c.data.len()).sum::<usize>()
    );
    sink.close().await.unwrap();
    let got = reader.await.unwrap();
    assert_eq!(octet_frames(&got).count(), 204);
}

/// A receiver that stops acknowledging (a hung or dead host: nothing comes back, not even
/// a reset) is found lost only after `write_timeout`, longer than the replay window: the
/// window still reaches back from when it last acknowledged, so the batch it took just
/// before is written again on the next connection.
#[tokio::test]
async fn the_replay_window_reaches_back_from_the_receivers_last_acknowledgment() {
    let (l, mut sink) = small_window_receiver("write_timeout_ms = 1000\nreplay_window_ms = 300");
    let accept = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        (l, s)
    });
    // Taken into the receiver's buffer and acknowledged; the receiver never reads again.
    let taken = sink.send(&tagged("taken", 1, 100)).await.unwrap();
    let (l, hung) = accept.await.unwrap();
    taken.settle.expect("a wait on TCP").0.await.unwrap();
    // More than its window: acknowledged in part at once, then never; found lost after
    // write_timeout, more than the replay window after the receiver last acknowledged.
    let stuck = sink.send(&tagged("stuck", 4, 3000)).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), stuck.settle.unwrap().0)
        .await
        .expect("the stall is found")
        .unwrap_err();
    assert!(e.to_string().contains("not acknowledged"), "{e}");
    drop(hung);
    let second = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    });
    let last = sink.send(&tagged("last", 1, 100)).await.unwrap();
    last.settle.unwrap().0.await.unwrap();
    sink.close().await.unwrap();
    let got = String::from_utf8(second.await.unwrap()).unwrap();
    assert!(
        got.contains("taken-0"),
        "the batch taken before the stall is written again: {got}"
    );
    assert!(got.contains("last-0"));
}
