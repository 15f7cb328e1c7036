//! Corked and gathered writes, counted at the transport: the replies to a burst of messages
//! leave in one write, a lone message is written at once, a corked reply leaves as soon as
//! its handler waits on anything else, and frames queued while the socket was full leave
//! together once it drains.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};

use palisade_conn::{Config, TrySendError, WebSocket};
use palisade_error::CloseCode;
use palisade_proto::Message;
use palisade_proto::connection::{Connection, Event};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::{masks, quiet};

const HANG: Duration = Duration::from_secs(20);

/// How many writes and reads (that moved bytes) a transport saw.
#[derive(Debug, Default)]
struct Counts {
    writes: AtomicUsize,
    reads: AtomicUsize,
}

impl Counts {
    fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

/// A real TCP stream that counts the write and read calls that moved bytes: each is one
/// syscall on the socket.
struct Counted {
    tcp: TcpStream,
    counts: Arc<Counts>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.counts.reads.fetch_add(1, Ordering::SeqCst);
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(_))) {
            self.counts.writes.fetch_add(1, Ordering::SeqCst);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(_))) {
            self.counts.writes.fetch_add(1, Ordering::SeqCst);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A raw TCP peer speaking through a client core of its own, so that it decides exactly which
/// bytes go in which write, and a server connection over a counted transport.
async fn raw_pair(server: Config) -> (RawPeer, WebSocket, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (tcp, s) = (c.unwrap(), s.unwrap().0);
    s.set_nodelay(true).unwrap();
    tcp.set_nodelay(true).unwrap();
    let counts = Arc::new(Counts::default());
    let io = Counted { tcp: s, counts: counts.clone() };
    let now = StdInstant::now();
    let server =
        WebSocket::from_parts(io, Connection::server(server.protocol.clone(), now), server, &[]);
    let core = Connection::client(quiet().protocol, masks(), now);
    (RawPeer { tcp, core }, server, counts)
}

struct RawPeer {
    tcp: TcpStream,
    core: Connection,
}

impl RawPeer {
    /// Sends `messages` in one write.
    async fn send_in_one_write(&mut self, messages: &[Message]) {
        for message in messages {
            self.core.send(message).unwrap();
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = self.core.poll_transmit() {
            bytes.extend_from_slice(&chunk);
        }
        self.tcp.write_all(&bytes).await.unwrap();
    }

    /// The next data message from the server.
    async fn recv(&mut self) -> Message {
        let work = async {
            loop {
                while let Some(event) = self.core.poll_event() {
                    if let Event::Message(message) = event.unwrap() {
                        return message;
                    }
                }
                let n = self.tcp.read_buf(self.core.read_buffer()).await.unwrap();
                assert!(n > 0, "the server closed");
            }
        };
        tokio::time::timeout(HANG, work).await.expect("a reply within the bound")
    }
}

/// A server handler that echoes, driven as a server drives its handlers.
fn echo(server: WebSocket) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        server
            .drive(async {
                while let Ok(message) = server.recv().await {
                    if server.send(message).await.is_err() {
                        break;
                    }
                }
            })
            .await
    })
}

/// Sixteen messages arrive in one read: their sixteen echoes leave in one write.
#[tokio::test]
async fn the_replies_to_a_burst_leave_in_one_write() {
    const N: usize = 16;
    let (mut peer, server, counts) = raw_pair(quiet()).await;
    let handler = echo(server);
    let burst: Vec<_> = (0..N).map(|i| Message::text(format!("m{i}"))).collect();
    peer.send_in_one_write(&burst).await;
    for expected in &burst {
        assert_eq!(&peer.recv().await, expected);
    }
    // One segment in, so one read (loopback delivers a write of a few hundred bytes whole),
    // and every reply corked until that read's messages were handled.
    assert_eq!(counts.reads(), 1, "the burst arrived in one read");
    assert_eq!(counts.writes(), 1, "the replies left in one write");
    handler.abort();
}

/// One message in flight at a time: each reply is written as soon as it is sent, never held
/// for more input (the peer waits for it before sending the next).
#[tokio::test]
async fn a_lone_message_is_written_at_once() {
    const N: usize = 20;
    let (mut peer, server, counts) = raw_pair(quiet()).await;
    let handler = echo(server);
    for i in 0..N {
        let message = Message::text(format!("m{i}"));
        peer.send_in_one_write(std::slice::from_ref(&message)).await;
        assert_eq!(peer.recv().await, message);
    }
    assert_eq!(counts.writes(), N);
    handler.abort();
}

/// A reply corked because more input is waiting leaves as soon as the handler waits on
/// something other than `recv`: the drive around the handler writes it.
#[tokio::test]
async fn a_corked_reply_leaves_when_its_handler_waits_on_something_else() {
    let (mut peer, server, _counts) = raw_pair(quiet()).await;
    let handler = tokio::spawn(async move {
        server
            .drive(async {
                let first = server.recv().await.unwrap();
                server.send(first).await.unwrap();
                // Busy elsewhere for good, with the second message unread.
                std::future::pending::<()>().await;
            })
            .await
    });
    peer.send_in_one_write(&[Message::text("first"), Message::text("second")]).await;
    assert_eq!(peer.recv().await, Message::text("first"));
    handler.abort();
}

/// A peer that does not read fills the socket; the large frames queued meanwhile (each a
/// header and a payload chunk, as a member's broadcasts are) leave in a few vectored writes
/// once it reads, not in one write per frame.
#[tokio::test]
async fn frames_queued_while_the_socket_was_full_leave_together() {
    const PAYLOAD: usize = 5_000;
    let server_cfg = quiet()
        .with_write_buffer(256 * 1024, 64 * 1024)
        .with_write_timeout(None, CloseCode::POLICY_VIOLATION);
    let (mut peer, server, counts) = raw_pair(server_cfg).await;
    let sender = server.sender();
    let payload = bytes::Bytes::from(vec![7u8; PAYLOAD]);
    let mut sent = 0usize;
    // While the socket takes them, each frame is written at once; then they queue, until
    // the write buffer is over its high-water mark.
    loop {
        match sender.try_send(Message::binary(payload.clone())) {
            Ok(()) => sent += 1,
            Err(TrySendError::Full(_)) => break,
            Err(err) => panic!("{err:?}"),
        }
        if sent.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    }
    let at_full = counts.writes();
    let flusher = tokio::spawn(async move { server.flush().await });
    for _ in 0..sent {
        assert_eq!(peer.recv().await.len(), PAYLOAD);
    }
    tokio::time::timeout(HANG, flusher).await.unwrap().unwrap().unwrap();
    // At least 256 KiB / 5 KB = 52 frames were queued when the buffer was full.
    let after = counts.writes() - at_full;
    assert!(after <= 12, "{after} writes for the frames queued while the socket was full");
}

/// Fed messages wait, unwritten, for the flush, and then leave in one write; `try_send`
/// writes at once. (The rooms layer feeds a member's queued broadcasts this way.)
#[tokio::test]
async fn fed_messages_leave_together_at_the_flush() {
    const N: usize = 32;
    let (mut peer, server, counts) = raw_pair(quiet()).await;
    let sender = server.sender();
    let batch: Vec<_> = (0..N).map(|i| Message::text(format!("fed {i}"))).collect();
    for message in &batch {
        sender.feed(message.clone()).unwrap();
    }
    assert_eq!(counts.writes(), 0, "nothing is written before the flush");
    sender.flush().await.unwrap();
    assert_eq!(counts.writes(), 1, "the batch left in one write");
    for expected in &batch {
        assert_eq!(&peer.recv().await, expected);
    }
    assert_eq!(server.stats().messages_out, N as u64);

    sender.try_send(Message::text("at once")).unwrap();
    assert_eq!(counts.writes(), 2, "try_send writes what the transport takes");
    assert_eq!(peer.recv().await, Message::text("at once"));

    // Above the high-water mark, feeding gives the message back.
    let config = quiet().with_write_buffer(64, 16);
    let (_peer, server, _counts) = raw_pair(config).await;
    let big = Message::text("x".repeat(100));
    server.feed(big.clone()).unwrap();
    assert!(matches!(server.feed(big.clone()), Err(TrySendError::Full(back)) if back == big));
}

/// `send_all` sends a batch in order in one write, and a batch past the high-water mark in
/// several, each up to the mark, with nothing lost.
#[tokio::test]
async fn send_all_writes_a_batch_in_as_few_writes_as_it_may() {
    let (mut peer, server, counts) = raw_pair(quiet()).await;
    let batch: Vec<_> = (0..40).map(|i| Message::text(format!("b{i}"))).collect();
    server.sender().send_all(batch.clone()).await.unwrap();
    assert_eq!(counts.writes(), 1);
    for expected in &batch {
        assert_eq!(&peer.recv().await, expected);
    }

    let (mut peer, server, counts) = raw_pair(quiet().with_write_buffer(1024, 256)).await;
    let big: Vec<_> =
        (0..64).map(|i| Message::text(format!("{i:>3}{}", "y".repeat(200)))).collect();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..64 {
            got.push(peer.recv().await);
        }
        got
    });
    server.sender().send_all(big.clone()).await.unwrap();
    assert_eq!(reader.await.unwrap(), big);
    // About 13.5 KiB in batches of at most 1 KiB (plus one message) each.
    assert!(counts.writes() >= 10, "{} writes", counts.writes());
}
