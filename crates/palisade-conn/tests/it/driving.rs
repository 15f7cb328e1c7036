//! Who reads, and who is woken: a driver beside receivers in other tasks, the `Stream` view,
//! flushes from several tasks at once, a full park queue, and a close from a supervisor.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use palisade_error::{CloseCode, Error};
use palisade_proto::Message;

use super::{duplex_pair, quiet, tcp_pair};

/// A bound on how long a test may wait for what must happen, so that a lost wake-up fails the
/// test instead of hanging CI. Not a timing assertion: everything here takes milliseconds.
const HANG: Duration = Duration::from_secs(20);

async fn bounded<F: std::future::Future>(what: &str, work: F) -> F::Output {
    match tokio::time::timeout(HANG, work).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: still waiting after {HANG:?} (a lost wake-up)"),
    }
}

/// A reader in its own task, while another task drives the connection without pause: the
/// reader is never refused with a concurrency error (the driver gives way), and every message
/// arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_beside_a_busy_driver_is_never_refused() {
    const N: usize = 5_000;
    let (client, server) = tcp_pair(quiet(), quiet()).await;
    let (read, write) = server.split();
    let driver = tokio::spawn(async move {
        let sender = write.sender();
        // Work that never ends and yields at every poll: the driver polls as often as it can.
        sender
            .drive(async {
                loop {
                    tokio::task::yield_now().await;
                }
            })
            .await
    });
    let reader = tokio::spawn(async move {
        for i in 0..N {
            let msg = read.recv().await?;
            assert_eq!(msg, Message::text(format!("m{i}")));
        }
        Ok::<_, Error>(read)
    });
    for i in 0..N {
        client.send(format!("m{i}")).await.unwrap();
    }
    let read = bounded("reader", reader).await.unwrap().unwrap();
    driver.abort();
    drop(read);
}

/// The `Stream` view polled in one task while another drives: what the driver parks between
/// two polls wakes the stream's task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_in_another_task_is_woken_by_what_the_driver_parks() {
    const N: usize = 200;
    let (client, server) = tcp_pair(quiet(), quiet()).await;
    let (mut read, write) = server.split();
    let sender = write.sender();
    // Work that wakes the driver every millisecond, so that it polls the transport between
    // the stream's polls (and its waker, not the stream's, is the transport's when data comes).
    let driver = tokio::spawn(async move {
        sender
            .drive(async {
                loop {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
    });
    let reader = tokio::spawn(async move {
        for i in 0..N {
            let msg = StreamExt::next(&mut read).await.expect("open")?;
            assert_eq!(msg, Message::text(format!("m{i}")));
            // Away between polls, so that the driver reads and parks meanwhile.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok::<_, Error>(read)
    });
    for i in 0..N {
        client.send(format!("m{i}")).await.unwrap();
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let _read = bounded("stream", reader).await.unwrap().unwrap();
    driver.abort();
    drop(write);
}

/// When a receiver in another task stops, the driver takes over: the peer's close is still
/// answered, so the peer's `close` completes cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_takes_over_when_a_receiver_in_another_task_stops() {
    for _ in 0..50 {
        let (client, server) = tcp_pair(quiet(), quiet()).await;
        let (read, write) = server.split();
        let sender = write.sender();
        let driver = tokio::spawn({
            let sender = sender.clone();
            async move { sender.drive(std::future::pending::<()>()).await }
        });
        let reader = tokio::spawn(async move {
            let first = read.recv().await;
            (read, first)
        });
        client.send("one").await.unwrap();
        let (read, first) = bounded("first message", reader).await.unwrap();
        assert_eq!(first.unwrap(), Message::text("one"));
        // Nobody receives any more; only the driver can answer the close.
        bounded("close", client.close(CloseCode::NORMAL, "bye")).await.unwrap();
        let how = bounded("closed", sender.closed()).await;
        assert!(how.is_normal(), "{how:?}");
        driver.abort();
        drop((read, write));
    }
}

/// A send waiting for a full transport, a ping and a flush from other tasks at the same time:
/// once the peer reads, all of them finish (each waiting task is woken, none is lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_pings_and_flushes_waiting_together_all_finish() {
    let server_cfg = quiet()
        .with_write_buffer(16 * 1024, 4 * 1024)
        .with_write_timeout(None, CloseCode::POLICY_VIOLATION);
    let (client, server) = tcp_pair(quiet(), server_cfg).await;
    let server = Arc::new(server);
    let big = "y".repeat(64 * 1024);
    // Fill the socket buffers: the peer reads nothing yet.
    let pushers: Vec<_> = (0..3)
        .map(|_| {
            let sender = server.sender();
            let big = big.clone();
            tokio::spawn(async move {
                for _ in 0..40 {
                    sender.send(big.as_str()).await?;
                }
                Ok::<(), Error>(())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pinger = tokio::spawn({
        let server = server.clone();
        async move {
            for _ in 0..5 {
                server.ping(b"p").await?;
            }
            Ok::<(), Error>(())
        }
    });
    let flusher = tokio::spawn({
        let server = server.clone();
        async move { server.flush().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut received = 0;
    while received < 120 {
        let msg = bounded("client read", client.recv()).await.unwrap();
        assert_eq!(msg.len(), big.len());
        received += 1;
    }
    for pusher in pushers {
        bounded("pusher", pusher).await.unwrap().unwrap();
    }
    bounded("pinger", pinger).await.unwrap().unwrap();
    bounded("flusher", flusher).await.unwrap().unwrap();
}

/// A driven connection whose park queue is full stops reading; its peer is healthy (it
/// answers pings) and must not be failed by the keepalive deadline meanwhile. Once a receiver
/// comes back, every message is there, in order.
#[tokio::test(start_paused = true)]
async fn a_full_park_queue_does_not_fail_a_healthy_peer() {
    let keepalive = quiet()
        .with_keepalive(Some(Duration::from_secs(1)), Some(Duration::from_secs(2)))
        .with_max_queue(2);
    let (client, server) = duplex_pair(quiet(), keepalive);
    let sender = server.sender();
    let client = Arc::new(client);
    for i in 0..6 {
        client.send(format!("m{i}")).await.unwrap();
    }
    // The client keeps receiving (answering the server's pings) the whole time.
    let listening = tokio::spawn({
        let client = client.clone();
        async move { client.recv().await }
    });
    // Nobody receives on the server for a minute: it drives, holds two messages, reads no more.
    let held =
        tokio::time::timeout(Duration::from_secs(60), sender.drive(std::future::pending::<()>()))
            .await;
    assert!(held.is_err(), "the drive ended early");
    assert!(!sender.is_closed(), "a healthy peer was failed: {:?}", sender.close_info());
    for i in 0..6 {
        assert_eq!(server.recv().await.unwrap(), Message::text(format!("m{i}")));
    }
    server.send("bye").await.unwrap();
    assert_eq!(listening.await.unwrap().unwrap(), Message::text("bye"));
}

/// `close()` from a supervisor while the handler is between two receives: the handler's next
/// receive is not refused; it sees the closure.
#[tokio::test(start_paused = true)]
async fn a_supervisor_close_leaves_the_receiving_turn_to_the_handler() {
    let (client, server) = duplex_pair(quiet(), quiet());
    let supervisor = server.sender();
    let handler = tokio::spawn(async move {
        let first = server.recv().await?;
        // Busy, not receiving, while the supervisor closes.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = server.recv().await;
        Ok::<_, Error>((first, after))
    });
    client.send("work").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The peer answers the close late: the handler's next receive falls inside the close.
    let peer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let err = client.recv().await.unwrap_err();
        err.connection_closed().map(|c| c.code())
    });
    supervisor.close(CloseCode::GOING_AWAY, "server shutting down").await.unwrap();
    let (first, after) = handler.await.unwrap().unwrap();
    assert_eq!(first, Message::text("work"));
    let err = after.unwrap_err();
    assert!(!matches!(err, Error::Concurrency(_)), "{err:?}");
    assert!(err.is_closed_ok(), "{err:?}");
    assert_eq!(peer.await.unwrap(), Some(CloseCode::GOING_AWAY));
}

/// A receiver taking what one read brought reads the clock once per 16 messages at most
/// (`CLOCK_REUSE` in the driver): a timer that comes due meanwhile (here the keepalive ping)
/// is not lost; the ping goes out with the replies, once the read's messages are taken (the
/// writes of one read leave together), and no message is lost or reordered by it.
#[tokio::test(start_paused = true)]
async fn a_timer_due_while_a_read_is_taken_is_not_lost() {
    const SENT: usize = 48;
    let keepalive =
        quiet().with_keepalive(Some(Duration::from_secs(1)), Some(Duration::from_secs(30)));
    let (client, server) = duplex_pair(quiet(), keepalive);
    for i in 0..SENT {
        client.send(format!("m{i}")).await.unwrap();
    }
    // The first receive reads everything sent (one read), at the time of the read.
    assert_eq!(server.recv().await.unwrap(), Message::text("m0"));
    assert_eq!(server.stats().bytes_out, 0, "nothing sent yet");
    // The ping comes due while the rest waits, decoded, in the input.
    tokio::time::advance(Duration::from_secs(3)).await;
    for i in 1..SENT {
        assert_eq!(server.recv().await.unwrap(), Message::text(format!("m{i}")));
    }
    // The input used up, the next receive writes what waited: the ping (2 bytes of header).
    let idle = tokio::time::timeout(Duration::from_millis(100), server.recv()).await;
    assert!(idle.is_err(), "nothing more was sent: {idle:?}");
    assert!(server.stats().bytes_out >= 2, "the ping went out: {:?}", server.stats());
    // And the client sees it as a ping: it answers, and the server counts the pong as input.
    let before = server.stats().bytes_in;
    let answering = tokio::spawn(async move { client.recv().await });
    let _ = tokio::time::timeout(Duration::from_millis(100), server.recv()).await;
    assert!(server.stats().bytes_in > before, "the client answered the ping");
    answering.abort();
}
