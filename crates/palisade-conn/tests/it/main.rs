//! Integration tests of the tokio connection over real TCP sockets on 127.0.0.1 (and an
//! in-memory duplex where tokio's paused clock is needed).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant as StdInstant};

use futures_util::{SinkExt, StreamExt};
use palisade_conn::{Config, RateLimit, RateLimitAction, TrySendError, WebSocket};
use palisade_error::{CloseCode, Error, PolicyKind, State, TimeoutPhase};
use palisade_proto::Message;
use palisade_proto::connection::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod cork;
mod driving;
mod seam;

fn masks() -> impl FnMut() -> [u8; 4] + Send + 'static {
    let mut n = 0x1234_5678u32;
    move || {
        n = n.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        n.to_be_bytes()
    }
}

fn quiet() -> Config {
    Config::default().with_keepalive(None, None)
}

/// A connected (client, server) pair over TCP on 127.0.0.1, handshake skipped.
async fn tcp_pair(client: Config, server: Config) -> (WebSocket, WebSocket) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (c, s) = (c.unwrap(), s.unwrap().0);
    let now = StdInstant::now();
    (
        WebSocket::from_parts(
            c,
            Connection::client(client.protocol.clone(), masks(), now),
            client,
            &[],
        ),
        WebSocket::from_parts(s, Connection::server(server.protocol.clone(), now), server, &[]),
    )
}

fn duplex_pair(client: Config, server: Config) -> (WebSocket, WebSocket) {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let now = tokio::time::Instant::now().into_std();
    (
        WebSocket::from_parts(
            c,
            Connection::client(client.protocol.clone(), masks(), now),
            client,
            &[],
        ),
        WebSocket::from_parts(s, Connection::server(server.protocol.clone(), now), server, &[]),
    )
}

#[tokio::test]
async fn echo_text_and_binary() {
    let (client, server) = tcp_pair(quiet(), quiet()).await;
    let echo = tokio::spawn(async move {
        loop {
            match server.recv().await {
                Ok(m) => server.send(m).await.unwrap(),
                Err(e) => return e,
            }
        }
    });
    for size in [0usize, 10, 125, 126, 65_535, 65_536, 500_000] {
        client.send(Message::text("é".repeat(size / 2))).await.unwrap();
        assert_eq!(client.recv().await.unwrap(), Message::text("é".repeat(size / 2)));
        client.send(Message::binary(vec![3u8; size])).await.unwrap();
        assert_eq!(client.recv().await.unwrap(), Message::binary(vec![3u8; size]));
    }
    client.close(CloseCode::NORMAL, "done").await.unwrap();
    let server_end = echo.await.unwrap();
    assert!(server_end.is_closed_ok(), "{server_end:?}");
    let info = server_end.connection_closed().unwrap();
    assert_eq!(info.received.as_ref().unwrap().reason(), "done");
    assert_eq!(info.received_then_sent, Some(true));
    // Every later operation reports the same closure.
    assert!(client.recv().await.unwrap_err().is_closed_ok());
    assert!(client.send("late").await.unwrap_err().is_closed_ok());
    assert_eq!(client.state(), State::Closed);
}

#[tokio::test]
async fn each_close_code_reaches_the_peer() {
    for code in [1000u16, 1001, 1003, 1008, 1011, 1013, 3000, 3003, 4000, 4999] {
        let (client, server) = tcp_pair(quiet(), quiet()).await;
        let waiter = tokio::spawn(async move { client.recv().await.unwrap_err() });
        // The closer's `close` succeeds once the handshake completes, whatever the code.
        server.close(CloseCode(code), "reason").await.unwrap();
        let err = waiter.await.unwrap();
        let info = err.connection_closed().expect("a closed error");
        assert_eq!(info.received.as_ref().unwrap().code(), CloseCode(code));
        assert_eq!(err.is_closed_ok(), code == 1000 || code == 1001, "{code}");
    }
}

#[tokio::test]
async fn recv_is_cancel_safe_in_select() {
    let (client, server) = tcp_pair(quiet(), quiet()).await;
    let sender = tokio::spawn(async move {
        for i in 0..200u32 {
            server.send(Message::binary(i.to_be_bytes().repeat(300))).await.unwrap();
            if i % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        server
    });
    let mut got = 0u32;
    let mut ticks = 0u32;
    while got < 200 {
        tokio::select! {
            m = client.recv() => {
                assert_eq!(m.unwrap(), Message::binary(got.to_be_bytes().repeat(300)), "message {got} intact and in order");
                got += 1;
            }
            // Cancels the pending recv() over and over.
            _ = tokio::task::yield_now() => ticks += 1,
        }
    }
    assert!(ticks > 0, "recv was cancelled at least once");
    drop(sender.await.unwrap());
}

#[tokio::test]
async fn two_receivers_get_a_concurrency_error() {
    let (client, _server) = tcp_pair(quiet(), quiet()).await;
    let client = std::sync::Arc::new(client);
    let first = tokio::spawn({
        let c = client.clone();
        async move { c.recv().await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = client.recv().await;
    assert!(matches!(second, Err(Error::Concurrency(_))), "{second:?}");
    first.abort();
}

#[tokio::test]
async fn two_sends_on_one_half_wait_their_turn() {
    // A tiny write buffer and a peer that does not read yet make the first send wait.
    let cfg =
        quiet().with_write_buffer(1024, 512).with_write_timeout(None, CloseCode::POLICY_VIOLATION);
    let (client, server) = tcp_pair(cfg, quiet().with_max_message_size(16 << 20)).await;
    let (_read, write) = client.split();
    let write = std::sync::Arc::new(write);
    let big = Message::binary(vec![7u8; 8 << 20]);
    let first = tokio::spawn({
        let w = write.clone();
        async move { w.send(big).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = tokio::spawn({
        let w = write.clone();
        async move { w.send("x").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!second.is_finished(), "the second send waits behind the first");
    let Message::Binary(b) = server.recv().await.unwrap() else { panic!("binary expected") };
    assert!(b.len() == 8 << 20 && b.iter().all(|&x| x == 7));
    assert_eq!(server.recv().await.unwrap(), Message::text("x"));
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
}

#[tokio::test]
async fn split_halves_and_cloned_senders_fan_out_without_interleaving() {
    let (client, server) = tcp_pair(quiet(), quiet()).await;
    let (read, write) = server.split();
    let sender = write.sender();
    let mut tasks = Vec::new();
    for t in 0..4u8 {
        let s = sender.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50u8 {
                s.send(Message::binary(vec![t; 10_000 + usize::from(i)])).await.unwrap();
            }
        }));
    }
    let mut counts = [0usize; 4];
    for _ in 0..200 {
        let Message::Binary(b) = client.recv().await.unwrap() else { panic!("binary expected") };
        let t = b[0];
        assert!(b.iter().all(|&x| x == t), "a frame never mixes senders");
        counts[usize::from(t)] += 1;
    }
    assert_eq!(counts, [50; 4]);
    for t in tasks {
        t.await.unwrap();
    }
    // The read half still works independently.
    client.send("to the read half").await.unwrap();
    assert_eq!(read.recv().await.unwrap(), Message::text("to the read half"));
}

#[tokio::test]
async fn stream_and_sink() {
    let (mut client, mut server) = tcp_pair(quiet(), quiet()).await;
    client.send(Message::text("a")).await.unwrap();
    SinkExt::send(&mut client, Message::text("b")).await.unwrap();
    assert_eq!(StreamExt::next(&mut server).await.unwrap().unwrap(), Message::text("a"));
    assert_eq!(StreamExt::next(&mut server).await.unwrap().unwrap(), Message::text("b"));
    SinkExt::close(&mut client).await.unwrap();
    // The stream ends without an error after a normal close.
    assert!(StreamExt::next(&mut server).await.is_none());
    assert!(StreamExt::next(&mut server).await.is_none());
}

#[tokio::test]
async fn peer_that_stops_reading_is_closed_as_slow_consumer() {
    let cfg = quiet()
        .with_write_buffer(16 * 1024, 4 * 1024)
        .with_write_timeout(Some(Duration::from_millis(300)), CloseCode::TRY_AGAIN_LATER);
    let (client, server) = tcp_pair(quiet(), cfg).await;
    // The client never reads; the server keeps sending until the kernel buffers fill.
    let mut last = Ok(());
    for _ in 0..10_000 {
        last = server.send(Message::binary(vec![1u8; 64 * 1024])).await;
        if last.is_err() {
            break;
        }
    }
    let err = last.unwrap_err();
    assert!(
        matches!(err, Error::Policy(p) if p.kind == PolicyKind::SlowConsumer && p.code == CloseCode::TRY_AGAIN_LATER),
        "{err:?}"
    );
    assert!(server.send("more").await.is_err());
    drop(client);
}

#[tokio::test]
async fn try_send_fails_fast_when_the_buffer_is_full() {
    let cfg = quiet().with_write_buffer(8 * 1024, 1024);
    let (_client, server) = tcp_pair(quiet(), cfg).await;
    let mut full = None;
    for i in 0..100_000 {
        match server.try_send(Message::binary(vec![0u8; 4096])) {
            Ok(()) => continue,
            Err(TrySendError::Full(m)) => {
                full = Some((i, m.len()));
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let (_, len) = full.expect("the buffer fills while the peer does not read");
    assert_eq!(len, 4096, "the refused message is given back");
}

#[tokio::test(start_paused = true)]
async fn keepalive_timeout_closes_with_1011() {
    let cfg = Config::default()
        .with_keepalive(Some(Duration::from_secs(20)), Some(Duration::from_secs(20)));
    let (client, server) = duplex_pair(quiet(), cfg);
    // The client never reads, so it never answers pings.
    let err = server.recv().await.unwrap_err();
    assert!(matches!(err, Error::Timeout(t) if t.phase == TimeoutPhase::Keepalive), "{err:?}");
    assert_eq!(err.close_code(), Some(CloseCode::INTERNAL_ERROR));
    // The client sees the close frame with 1011 once it reads.
    let c = client.recv().await.unwrap_err();
    assert_eq!(
        c.connection_closed().unwrap().received.as_ref().unwrap().code(),
        CloseCode::INTERNAL_ERROR
    );
}

#[tokio::test(start_paused = true)]
async fn keepalive_measures_rtt_when_the_peer_answers() {
    let cfg = Config::default()
        .with_keepalive(Some(Duration::from_secs(1)), Some(Duration::from_secs(5)));
    let (client, server) = duplex_pair(quiet(), cfg);
    let peer = tokio::spawn(async move { client.recv().await });
    let r = tokio::time::timeout(Duration::from_secs(3), server.recv()).await;
    assert!(r.is_err(), "no message, no failure: pongs keep the connection alive");
    assert!(server.last_rtt().is_some());
    peer.abort();
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_with_1001() {
    let cfg = quiet().with_idle_timeout(Some(Duration::from_secs(30)));
    let (client, server) = duplex_pair(quiet(), cfg);
    let peer = tokio::spawn(async move { client.recv().await.unwrap_err() });
    let err = server.recv().await.unwrap_err();
    assert!(matches!(err, Error::Timeout(t) if t.phase == TimeoutPhase::Idle));
    let c = peer.await.unwrap();
    assert_eq!(c.connection_closed().unwrap().code(), CloseCode::GOING_AWAY);
}

#[tokio::test]
async fn rate_limit_drop_keeps_the_connection() {
    let limit =
        RateLimit::messages(1.0).with_burst(2.0, f64::INFINITY).with_action(RateLimitAction::Drop);
    let (client, server) = tcp_pair(quiet(), quiet().with_rate_limit(Some(limit))).await;
    for i in 0..4 {
        client.send(format!("m{i}")).await.unwrap();
    }
    assert_eq!(server.recv().await.unwrap(), Message::text("m0"));
    assert_eq!(server.recv().await.unwrap(), Message::text("m1"));
    let dropped = server.recv().await.unwrap_err();
    assert!(matches!(dropped, Error::Policy(p) if p.kind == PolicyKind::RateLimited));
    assert_eq!(server.state(), State::Open);
}

#[tokio::test]
async fn rate_limit_judges_each_message_when_the_receiver_takes_it() {
    // Three messages arrive in one read; the receiver takes one every 150 ms. At 10 per second
    // with a burst of one, each is admitted: the limit reads the clock as each is taken, not
    // when the read brought them (a clock kept from an earlier poll fails this test).
    let limit =
        RateLimit::messages(10.0).with_burst(1.0, f64::INFINITY).with_action(RateLimitAction::Drop);
    let (client, server) = tcp_pair(quiet(), quiet().with_rate_limit(Some(limit))).await;
    for i in 0..3 {
        client.send(format!("m{i}")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..3 {
        assert_eq!(server.recv().await.unwrap(), Message::text(format!("m{i}")));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(server.state(), State::Open);
}

#[tokio::test]
async fn rate_limit_close_sends_the_chosen_code() {
    let limit = RateLimit::messages(1.0)
        .with_burst(1.0, f64::INFINITY)
        .with_action(RateLimitAction::Close(CloseCode::TRY_AGAIN_LATER));
    let (client, server) = tcp_pair(quiet(), quiet().with_rate_limit(Some(limit))).await;
    client.send("one").await.unwrap();
    client.send("two").await.unwrap();
    assert_eq!(server.recv().await.unwrap(), Message::text("one"));
    assert!(matches!(server.recv().await.unwrap_err(), Error::Policy(_)));
    let c = client.recv().await.unwrap_err();
    assert_eq!(c.connection_closed().unwrap().code(), CloseCode::TRY_AGAIN_LATER);
    assert!(c.is_retryable(), "1013 tells the client to come back later");
}

#[tokio::test]
async fn protocol_violation_gets_a_close_frame_before_tcp_close() {
    // A raw peer sends an unmasked frame to a server: the server answers 1002, then closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (raw, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let mut raw = raw.unwrap();
    let server = WebSocket::from_parts(
        accepted.unwrap().0,
        Connection::server(quiet().protocol, StdInstant::now()),
        quiet(),
        &[],
    );
    raw.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let err = server.recv().await.unwrap_err();
    assert_eq!(err.close_code(), Some(CloseCode::PROTOCOL_ERROR));
    let mut got = Vec::new();
    raw.read_to_end(&mut got).await.unwrap();
    assert_eq!(&got[..4], &[0x88, 16, 0x03, 0xEA], "close frame with 1002, then EOF");
    assert_eq!(&got[4..], b"protocol error");
}

#[tokio::test]
async fn abrupt_tcp_close_is_1006_and_retryable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let client = WebSocket::from_parts(
        c.unwrap(),
        Connection::client(quiet().protocol, masks(), StdInstant::now()),
        quiet(),
        &[],
    );
    // The peer's TCP goes without a close frame.
    drop(s.unwrap().0);
    let err = client.recv().await.unwrap_err();
    assert!(!err.is_closed_ok());
    assert_eq!(err.connection_closed().map(|c| c.code()), Some(CloseCode::ABNORMAL));
    assert!(err.is_retryable());
}

/// Dropping the socket ends the connection for senders left behind: the peer gets 1001, the
/// senders the closure, and `closed()` resolves.
#[tokio::test]
async fn dropping_the_socket_closes_with_1001_for_senders_left_behind() {
    let (client, server) = tcp_pair(quiet(), quiet()).await;
    let sender = server.sender();
    let weak = sender.downgrade();
    drop(server);
    assert!(sender.is_closed());
    let closed = sender.closed().await;
    assert_eq!(closed.sent.map(|f| f.code()), Some(CloseCode::GOING_AWAY));
    assert!(sender.send(Message::text("late")).await.is_err());
    let err = client.recv().await.unwrap_err();
    assert_eq!(err.connection_closed().map(|c| c.code()), Some(CloseCode::GOING_AWAY));
    // Split halves own it together: the connection lives while either does.
    let (client, server) = tcp_pair(quiet(), quiet()).await;
    let (read, write) = server.split();
    drop(read);
    write.send(Message::text("still open")).await.unwrap();
    assert_eq!(client.recv().await.unwrap(), Message::text("still open"));
    drop(write);
    let err = client.recv().await.unwrap_err();
    assert_eq!(err.connection_closed().map(|c| c.code()), Some(CloseCode::GOING_AWAY));
    drop(sender);
    assert!(weak.upgrade().is_none());
}

#[tokio::test]
async fn too_big_message_closes_with_1009() {
    let (client, server) = tcp_pair(quiet(), quiet().with_max_message_size(1000)).await;
    client.send(Message::binary(vec![0u8; 1001])).await.unwrap();
    let err = server.recv().await.unwrap_err();
    assert_eq!(err.close_code(), Some(CloseCode::MESSAGE_TOO_BIG));
    let c = client.recv().await.unwrap_err();
    assert_eq!(c.connection_closed().unwrap().code(), CloseCode::MESSAGE_TOO_BIG);
}

/// A peer still sending a message over the limit when we fail the connection learns why: we
/// go on reading (and discarding) after our close frame, so its writes complete instead of
/// being reset, and it reads 1009 before the end of the stream.
#[tokio::test]
async fn a_peer_mid_send_reads_the_1009_close_frame() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (raw, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let mut raw = raw.unwrap();
    let limit = quiet().with_max_message_size(1 << 20);
    let server = WebSocket::from_parts(
        accepted.unwrap().0,
        Connection::server(limit.protocol.clone(), StdInstant::now()),
        limit,
        &[],
    );
    let handler = tokio::spawn(async move { server.recv().await.unwrap_err() });
    // A masked binary frame announcing 4 MiB (over the 1 MiB limit), then its 4 MiB payload:
    // far more than the socket buffers hold, so the writes only complete if the server reads.
    const LEN: u64 = 4 << 20;
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&LEN.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    raw.write_all(&header).await.unwrap();
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..LEN / chunk.len() as u64 {
        raw.write_all(&chunk).await.expect("the server drains what it refused");
    }
    let mut got = Vec::new();
    raw.read_to_end(&mut got).await.expect("a clean end, not a reset");
    assert_eq!(&got[..4], &[0x88, 17, 0x03, 0xF1], "close frame with 1009: {got:?}");
    assert_eq!(&got[4..], b"message too big");
    // The peer closes in turn: the server stops draining and reports the failure.
    drop(raw);
    let err = handler.await.unwrap();
    assert_eq!(err.close_code(), Some(CloseCode::MESSAGE_TOO_BIG));
}

#[tokio::test(start_paused = true)]
async fn a_failure_whose_close_frame_cannot_be_written_ends_after_the_close_timeout() {
    // A 256-byte pipe that the peer never reads: once it is full, nothing more can be written.
    let (raw, server_io) = tokio::io::duplex(256);
    let cfg = quiet().with_close_timeout(Some(Duration::from_secs(2)));
    let server = WebSocket::from_parts(
        server_io,
        Connection::server(cfg.protocol.clone(), tokio::time::Instant::now().into_std()),
        cfg,
        &[],
    );
    // Fill the pipe and leave more queued behind it.
    for _ in 0..8 {
        server.try_send(Message::binary(vec![0u8; 200])).unwrap();
    }
    // The peer breaks the protocol (an unmasked frame to a server), then reads nothing.
    let (_reader, mut writer) = tokio::io::split(raw);
    writer.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    // The 1002 close frame is stuck behind the unread bytes; `recv` must still end, after
    // the close timeout, with the protocol error.
    let err = tokio::time::timeout(Duration::from_secs(60), server.recv())
        .await
        .expect("recv gave up after the close timeout instead of hanging")
        .unwrap_err();
    assert_eq!(err.close_code(), Some(CloseCode::PROTOCOL_ERROR), "{err:?}");
    assert!(server.recv().await.is_err(), "every later call reports the end");
}

#[tokio::test(start_paused = true)]
async fn a_close_after_a_quiet_spell_waits_its_whole_close_timeout() {
    // Nothing happens for a minute, so nothing has told the connection the time since it was
    // made. The close deadline must count from the close, not from the last wake-up: the peer
    // answers 5 s into a 10 s close timeout, and the handshake completes.
    let cfg = quiet().with_close_timeout(Some(Duration::from_secs(10)));
    let (client, server) = duplex_pair(quiet(), cfg);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let peer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        client.recv().await.unwrap_err()
    });
    let started = tokio::time::Instant::now();
    server.close(CloseCode::NORMAL, "bye").await.expect("the peer answered in time");
    assert!(started.elapsed() >= Duration::from_secs(5), "closed before the peer answered");
    let seen = peer.await.unwrap();
    assert_eq!(seen.connection_closed().unwrap().code(), CloseCode::NORMAL);
}

#[tokio::test(start_paused = true)]
async fn messages_sent_count_as_activity_for_the_idle_timeout() {
    // The server only sends, every 10 s, for 100 s, with a 30 s idle timeout; its receiver
    // waits the whole time. Each send is activity: no idle close until 30 s after the last.
    let cfg = quiet().with_idle_timeout(Some(Duration::from_secs(30)));
    let (client, server) = duplex_pair(quiet(), cfg);
    let (read, write) = server.split();
    let receiver = tokio::spawn(async move {
        let err = read.recv().await.unwrap_err();
        (err, tokio::time::Instant::now())
    });
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while client.recv().await.is_ok() {
            got += 1;
        }
        got
    });
    let start = tokio::time::Instant::now();
    for i in 0..10 {
        write.send(format!("tick {i}")).await.expect("no idle close while sending");
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let last_send = start + Duration::from_secs(90);
    let (err, at) = receiver.await.unwrap();
    assert!(matches!(err, Error::Timeout(t) if t.phase == TimeoutPhase::Idle), "{err:?}");
    assert!(
        at >= last_send + Duration::from_secs(30),
        "idle close {:?} after the last send",
        at - last_send
    );
    assert_eq!(reader.await.unwrap(), 10);
}
