//! What the application layer stands on: sends from several places, registry handles, a
//! connection nobody reads, and reading that ends with `None`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use palisade_conn::WebSocket;
use palisade_error::{CloseCode, Error};
use palisade_proto::Message;
use tokio::time::Instant;

use super::{duplex_pair, quiet, tcp_pair};

/// A handler replies to every message while four tasks push through cloned senders, 10,000
/// messages each, to a client that reads slowly at times: every send waits its turn, nothing
/// fails, nothing is lost, and every frame arrives intact and in each sender's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_replies_while_four_senders_push_to_a_slow_reader() {
    const PUSHERS: usize = 4;
    const EACH: usize = 10_000;
    const REQUESTS: usize = 2_000;
    // A small write buffer, so that senders queue behind a full transport often.
    let server_cfg = quiet().with_write_buffer(8 * 1024, 2 * 1024);
    let (client, server) = tcp_pair(quiet(), server_cfg).await;
    let server = Arc::new(server);
    let filler = "x".repeat(200);

    let handler = tokio::spawn({
        let ws = server.clone();
        async move {
            let mut replied = 0;
            while let Some(msg) = ws.next().await {
                let Message::Text(text) = msg? else { panic!("text expected") };
                ws.send(format!("ack:{}", text.as_str())).await?;
                replied += 1;
                if replied == REQUESTS {
                    break;
                }
            }
            Ok::<usize, Error>(replied)
        }
    });
    let pushers: Vec<_> = (0..PUSHERS)
        .map(|p| {
            let sender = server.sender();
            let filler = filler.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    sender.send(format!("push:{p}:{i}:{filler}")).await?;
                }
                Ok::<(), Error>(())
            })
        })
        .collect();

    let (read, write) = client.split();
    let requests = tokio::spawn(async move {
        for i in 0..REQUESTS {
            write.send(format!("req{i}")).await?;
        }
        Ok::<_, Error>(write)
    });
    let mut pushed = [0usize; PUSHERS];
    let mut acked = 0;
    for k in 0..PUSHERS * EACH + REQUESTS {
        // Sometimes slow: the server's buffers and the kernel's fill up meanwhile.
        if k % 4_000 == 0 {
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        let Message::Text(text) = read.recv().await.unwrap() else { panic!("text expected") };
        let text = text.as_str();
        if let Some(rest) = text.strip_prefix("push:") {
            let mut parts = rest.splitn(3, ':');
            let p: usize = parts.next().unwrap().parse().unwrap();
            let i: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!(parts.next(), Some(filler.as_str()), "a pushed frame arrived whole");
            assert_eq!(i, pushed[p], "pusher {p}'s messages arrive in order");
            pushed[p] += 1;
        } else if let Some(rest) = text.strip_prefix("ack:req") {
            assert_eq!(rest.parse::<usize>().unwrap(), acked, "replies arrive in order");
            acked += 1;
        } else {
            panic!("unexpected message {text:?}");
        }
    }
    assert_eq!(pushed, [EACH; PUSHERS]);
    assert_eq!(acked, REQUESTS);
    assert_eq!(handler.await.unwrap().unwrap(), REQUESTS);
    for p in pushers {
        p.await.unwrap().unwrap();
    }
    requests.await.unwrap().unwrap();
}

/// Counts the bytes allocated and not yet freed by the current thread, so that a test on a
/// current-thread runtime measures its own connections whatever other tests run meanwhile.
struct CountingAllocator;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: a thread being torn down still allocates; its count no longer matters.
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get() + delta));
}

fn live_bytes() -> isize {
    LIVE_BYTES.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to the system allocator; the wrapper only counts.
// Test instrumentation, not product code: the workspace's one product `unsafe` stays in
// palisade-proto's mask.rs.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: `ptr` came from `System` with this layout (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: as for `dealloc`, and the caller's contract for `realloc` is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// 10,000 weak senders held after their connections ended keep none of the connections'
/// memory: no socket, no buffers, no protocol state — only each handle's small header.
#[tokio::test]
async fn weak_senders_keep_nothing_of_ended_connections() {
    const N: usize = 10_000;
    let before = live_bytes();
    let mut weak = Vec::with_capacity(N);
    let mut open = Vec::with_capacity(N);
    for i in 0..N {
        let (client, server) = duplex_pair(quiet(), quiet());
        client.send(format!("hello {i}")).await.unwrap();
        assert_eq!(server.recv().await.unwrap(), Message::text(format!("hello {i}")));
        weak.push(server.sender().downgrade());
        open.push((client, server));
    }
    let while_open = live_bytes() - before;
    // Each ends with a complete close handshake.
    for (client, server) in &open {
        let (closed, seen) = tokio::join!(client.close(CloseCode::NORMAL, ""), server.next());
        closed.unwrap();
        assert!(seen.is_none(), "a normal close ends the reading");
    }
    drop(open);
    let held = live_bytes() - before;
    let per_open = while_open / N as isize;
    let per_weak = held / N as isize;
    eprintln!("{N} connections: {per_open} B each while open; {per_weak} B per weak sender after");
    assert!(weak.iter().all(|w| w.upgrade().is_none() && w.is_closed()));
    // Measured when written: 6,867 B per open pair (both ends and the in-memory pipe), 168 B
    // per weak sender (its 16 B slot in the vector and the handles' shared header).
    assert!(per_weak <= 256, "a weak sender keeps {per_weak} B");
    assert!(per_open >= 20 * per_weak, "open: {per_open} B, weak: {per_weak} B");
}

/// A handler that only pushes, never receiving, on tokio's paused clock: the driven
/// connection answers the client's pings, sends its own keepalive pings, and notices the
/// peer's close; then its sends fail and `closed()` says how it ended.
#[tokio::test(start_paused = true)]
async fn a_connection_nobody_reads_answers_pings_keeps_alive_and_sees_the_close() {
    let keepalive =
        quiet().with_keepalive(Some(Duration::from_secs(1)), Some(Duration::from_secs(2)));
    let (client, server) = duplex_pair(keepalive.clone(), keepalive);
    let sender = server.sender();
    let id = server.id();
    assert_eq!(sender.id(), id);
    let feed = tokio::spawn(async move {
        server
            .drive(async {
                let mut n = 0u32;
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if let Err(err) = server.send(format!("tick {n}")).await {
                        return (n, err);
                    }
                    n += 1;
                }
            })
            .await
    });
    let until = Instant::now() + Duration::from_secs(10);
    let mut ticks = 0;
    while let Ok(message) = tokio::time::timeout_at(until, client.recv()).await {
        assert_eq!(message.unwrap(), Message::text(format!("tick {ticks}")));
        ticks += 1;
    }
    assert!(ticks >= 18, "{ticks} ticks in 10 s");
    assert!(client.last_rtt().is_some(), "the server answered the client's keepalive pings");
    assert!(sender.last_rtt().is_some(), "the server sent keepalive pings and saw the pongs");
    assert!(!sender.is_closed());

    client.close(CloseCode::NORMAL, "bye").await.unwrap();
    let how = sender.closed().await;
    assert!(how.is_normal(), "{how:?}");
    assert_eq!(how.code(), CloseCode::NORMAL);
    assert!(sender.is_closed());
    let (_, err) = feed.await.unwrap();
    assert!(err.is_closed_ok(), "{err:?}");
}

/// A feed whose peer went silent (it reads nothing and answers no ping) is closed by the
/// keepalive deadline, with nobody receiving.
#[tokio::test(start_paused = true)]
async fn a_connection_nobody_reads_notices_a_dead_peer() {
    let keepalive =
        quiet().with_keepalive(Some(Duration::from_secs(1)), Some(Duration::from_secs(2)));
    let (silent_client, server) = duplex_pair(quiet(), keepalive);
    let sender = server.sender();
    let feed = tokio::spawn(async move {
        server
            .drive(async {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Err(err) = server.send("tick").await {
                        return err;
                    }
                }
            })
            .await
    });
    let started = Instant::now();
    let how = sender.closed().await;
    assert_eq!(how.sent.as_ref().map(|f| f.code()), Some(CloseCode::INTERNAL_ERROR), "{how:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "noticed within the deadlines");
    let err = feed.await.unwrap();
    assert!(err.connection_closed().is_some(), "{err:?}");
    drop(silent_client);
}

/// `next()` reads like Python's `async for`: `None` after a normal close, the error once
/// (then `None`) after any other.
#[tokio::test]
async fn next_ends_with_none_after_a_normal_close_and_reports_others_once() {
    let (client, server) = tcp_pair(quiet(), quiet()).await;
    client.send("one").await.unwrap();
    let closing = tokio::spawn(async move { client.close(CloseCode::GOING_AWAY, "").await });
    assert_eq!(server.next().await.unwrap().unwrap(), Message::text("one"));
    assert!(server.next().await.is_none());
    assert!(server.next().await.is_none());
    closing.await.unwrap().unwrap();

    let (client, server) = tcp_pair(quiet(), quiet()).await;
    let closing = tokio::spawn(async move { client.close(CloseCode::POLICY_VIOLATION, "").await });
    let err = server.next().await.unwrap().unwrap_err();
    assert_eq!(err.connection_closed().unwrap().code(), CloseCode::POLICY_VIOLATION);
    assert!(server.next().await.is_none());
    closing.await.unwrap().unwrap();
}

/// Connection ids are unique across every connection of the process, and every handle of
/// one connection reports the same.
#[tokio::test]
async fn connection_ids_are_unique_and_shared_by_handles() {
    let mut ids = std::collections::HashSet::new();
    let mut keep: Vec<WebSocket> = Vec::new();
    for _ in 0..50 {
        let (a, b) = duplex_pair(quiet(), quiet());
        assert!(ids.insert(a.id()) && ids.insert(b.id()));
        assert_eq!(a.sender().downgrade().id(), a.id());
        keep.push(a);
        keep.push(b);
    }
}
