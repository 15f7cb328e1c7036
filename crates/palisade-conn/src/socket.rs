//! The handles of a connection: [`WebSocket`], its halves, [`Sender`] and [`WeakSender`]. They
//! hold no state of their own; everything lives in the shared driver (`driver.rs`).

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::Duration;

use palisade_error::{CloseCode, ConnectionClosed, Error, State};
use palisade_proto::connection::Connection;
use palisade_proto::message::Message;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Config;
use crate::driver::{Shared, Stats};

/// A connection's number, unique in this process (server, client and mounted connections
/// draw from one counter), and in every log line of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

impl ConnectionId {
    /// A number no other connection of this process has had.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A WebSocket connection after the opening handshake, over any transport (TCP, TLS, a
/// connection upgraded by another HTTP server, an in-memory duplex). The same type serves
/// servers and clients, and names no transport type.
///
/// - [`WebSocket::recv`] returns the next data message; pings are answered, pongs recorded and
///   close frames handled on the way. It is cancel-safe. [`WebSocket::next`] is the same with
///   `None` after a normal close, for `while let Some(msg) = ws.next().await`.
/// - [`WebSocket::send`] writes a message, waiting its turn behind sends from other handles and
///   while the peer reads slower than we write (up to [`Config::write_timeout`]).
/// - [`WebSocket::close`] runs the close handshake and waits for its end;
///   [`WebSocket::start_close`] only starts it.
/// - [`WebSocket::split`] gives a [`ReadHalf`] and a [`WriteHalf`] for different tasks;
///   [`WebSocket::sender`] gives cloneable [`Sender`]s, and those give [`WeakSender`]s, for
///   registries and fan-out.
///
/// Keepalive pings, the pong deadline, the idle limit and the peer's close are handled while a
/// task receives, or, while none does, by [`WebSocket::drive`] (servers drive every handler
/// this way).
///
/// # After the end
///
/// Once the connection has closed, `recv` returns [`Error::ConnectionClosedOk`] (clean close
/// handshake with 1000/1001) or [`Error::ConnectionClosedError`] — or first the error that
/// ended it — every time; `send` and `ping` return the closure. Two tasks receiving at once
/// get [`Error::Concurrency`] (the second caller; the first is not disturbed). Sends never do:
/// they queue up behind each other.
///
/// # Dropping
///
/// The `WebSocket` (or, once split, its two halves together) owns the connection. Dropping
/// the last owning handle ends it: a close frame with 1001 (going away) is queued and written
/// if the transport takes it at once, and the transport is closed; [`Sender`]s left behind
/// then report the closure and [`Sender::closed`] resolves. Close first ([`WebSocket::close`])
/// for a clean close handshake. A server's handlers are supervised ([`Sender::supervise`]):
/// the server closes with the code the handler's return calls for.
pub struct WebSocket {
    shared: Owner,
}

/// The share of an owning handle ([`WebSocket`], [`ReadHalf`], [`WriteHalf`]): when the last
/// one is dropped the connection ends (see [`WebSocket`]'s "Dropping"), as nobody would read
/// it again.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.drop_owner();
    }
}

impl std::ops::Deref for Owner {
    type Target = Arc<Shared>;

    fn deref(&self) -> &Arc<Shared> {
        &self.0
    }
}

impl fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket").field("id", &self.shared.id()).finish_non_exhaustive()
    }
}

impl WebSocket {
    /// Wraps a transport on which the opening handshake has completed. `leftover` is whatever
    /// was read past the handshake (the first frames may arrive with it).
    pub fn from_parts<S>(
        io: S,
        conn: Connection,
        config: impl Into<Arc<Config>>,
        leftover: &[u8],
    ) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::from_parts_with_id(ConnectionId::next(), io, conn, config, leftover)
    }

    /// [`WebSocket::from_parts`] with a number drawn earlier (a server numbers a connection
    /// when it accepts TCP, for its log lines, before the handshake).
    pub fn from_parts_with_id<S>(
        id: ConnectionId,
        io: S,
        conn: Connection,
        config: impl Into<Arc<Config>>,
        leftover: &[u8],
    ) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let shared = Shared::new(id, Box::new(io), conn, config.into(), leftover);
        Self { shared: Owner(Arc::new(shared)) }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The connection's process-unique number.
    pub fn id(&self) -> ConnectionId {
        self.shared.id()
    }

    /// Receives the next data message. Cancel-safe.
    pub async fn recv(&self) -> Result<Message, Error> {
        self.shared.recv().await
    }

    /// Receives the next data message; `None` once the connection has closed normally (close
    /// handshake with 1000 or 1001), `Some(Err(_))` once for any other end (then `None`):
    ///
    /// ```text
    /// while let Some(msg) = ws.next().await {
    ///     let msg = msg?;
    ///     …
    /// }
    /// ```
    pub async fn next(&self) -> Option<Result<Message, Error>> {
        self.shared.next().await
    }

    /// Sends a message after any send in progress on this connection (from a [`Sender`], a
    /// broadcast …), waiting while the write buffer is above its high-water mark, then until it
    /// is written to the transport.
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.shared.send(message.into(), true).await
    }

    /// Sends a message as [`WebSocket::send`] does, but never compressed, even when
    /// permessage-deflate is on: for data that does not compress, or secrets that must not
    /// share a compression context with attacker-chosen text.
    pub async fn send_uncompressed(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.shared.send(message.into(), false).await
    }

    /// Queues a message without waiting: fails with [`TrySendError::Full`] (giving the message
    /// back) when the write buffer is above its high-water mark. Queued bytes are written by
    /// the next `recv`, `send` or `flush` on this connection.
    pub fn try_send(&self, message: impl Into<Message>) -> Result<(), TrySendError> {
        self.shared.try_send(message.into())
    }

    /// Queues a message without writing anything, for a batch that a [`send`](Self::send)
    /// or [`flush`](Self::flush) then writes at once; see [`Sender::feed`].
    pub fn feed(&self, message: impl Into<Message>) -> Result<(), TrySendError> {
        self.shared.feed(message.into())
    }

    /// Writes everything queued.
    pub async fn flush(&self) -> Result<(), Error> {
        self.shared.flush().await
    }

    /// Sends a ping (payload of at most 125 bytes). The pong is matched by whoever receives.
    pub async fn ping(&self, payload: &[u8]) -> Result<(), Error> {
        self.shared.ping(payload).await
    }

    /// Runs the close handshake with `code` and `reason` (cut to 123 bytes at a character
    /// boundary) and waits for its end, discarding messages that arrive meanwhile. Returns
    /// `Ok` once both close frames have been exchanged (whatever the codes), and the error
    /// that ended the connection otherwise (no reply within the close timeout, TCP dropped).
    /// Every handle's `close` does the same.
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.shared.close(code, reason).await
    }

    /// Sends our close frame (unless one was sent already) and returns once it is written,
    /// without waiting for the peer's.
    pub async fn start_close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.shared.start_close(code, reason).await
    }

    /// Runs `work` while servicing the connection whenever no task receives: pings answered,
    /// keepalive pings sent, the pong and idle deadlines enforced, the peer's close noticed
    /// (then [`Sender::closed`] resolves and sends fail). Messages that arrive wait for a
    /// receiver (see [`Config::max_queue`]). For a client that only pushes; servers drive
    /// their handlers this way already.
    pub fn drive<F: Future>(&self, work: F) -> impl Future<Output = F::Output> {
        // Not an `async fn`: one layer of future less in every server connection's task.
        drive(&self.shared, work)
    }

    /// The round-trip time of the last keepalive ping.
    pub fn last_rtt(&self) -> Option<Duration> {
        self.shared.last_rtt()
    }

    /// Traffic counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The connection's state.
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// The close frames exchanged so far.
    pub fn close_info(&self) -> ConnectionClosed {
        self.shared.close_info()
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Resolves once the connection is over, with the close frames exchanged.
    pub async fn closed(&self) -> ConnectionClosed {
        self.shared.closed().await
    }

    /// Splits into a receiving and a sending half, for two tasks.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        let shared = Arc::clone(&self.shared);
        shared.add_owner();
        (ReadHalf { shared: self.shared }, WriteHalf { shared: Owner(shared) })
    }

    /// A cloneable sender, for other tasks and registries. Sends through it wait their turn
    /// behind every other send (never interleaving frames) instead of failing.
    pub fn sender(&self) -> Sender {
        Sender { shared: self.shared.clone() }
    }
}

/// Services the connection while `work` runs (see [`WebSocket::drive`]).
pub(crate) async fn drive<F: Future>(shared: &Shared, work: F) -> F::Output {
    let mut work = pin!(work);
    let mut ended = false;
    let mut polled = DrivePolled { shared, task: 0 };
    poll_fn(|cx| {
        // Before the work: a reply it sends may be corked, since the drive below writes it
        // out if the work waits on anything but `recv`.
        polled.task = crate::driver::task_of(cx.waker());
        shared.drive_polled(polled.task);
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        if !ended {
            ended = shared.poll_drive(cx).is_ready();
        }
        Poll::Pending
    })
    .await
}

/// Tells the connection that a drive future is gone, so that sends in its task no longer cork.
struct DrivePolled<'a> {
    shared: &'a Shared,
    task: usize,
}

impl Drop for DrivePolled<'_> {
    fn drop(&mut self) {
        self.shared.drive_dropped(self.task);
    }
}

/// The receiving half of a [`WebSocket`].
pub struct ReadHalf {
    shared: Owner,
}

impl ReadHalf {
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The connection's process-unique number.
    pub fn id(&self) -> ConnectionId {
        self.shared.id()
    }

    /// Receives the next data message. Cancel-safe; see [`WebSocket::recv`].
    pub async fn recv(&self) -> Result<Message, Error> {
        self.shared.recv().await
    }

    /// Receives the next data message, `None` after a normal close; see [`WebSocket::next`].
    pub async fn next(&self) -> Option<Result<Message, Error>> {
        self.shared.next().await
    }
}

impl fmt::Debug for ReadHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadHalf").field("id", &self.shared.id()).finish_non_exhaustive()
    }
}

/// The sending half of a [`WebSocket`].
pub struct WriteHalf {
    shared: Owner,
}

impl fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteHalf").field("id", &self.shared.id()).finish_non_exhaustive()
    }
}

impl WriteHalf {
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The connection's process-unique number.
    pub fn id(&self) -> ConnectionId {
        self.shared.id()
    }

    /// Sends a message in its turn; see [`WebSocket::send`].
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.shared.send(message.into(), true).await
    }

    /// Sends a message never compressed; see [`WebSocket::send_uncompressed`].
    pub async fn send_uncompressed(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.shared.send(message.into(), false).await
    }

    /// Queues a message without waiting; see [`WebSocket::try_send`].
    pub fn try_send(&self, message: impl Into<Message>) -> Result<(), TrySendError> {
        self.shared.try_send(message.into())
    }

    /// Queues a message without writing anything, for a batch: the next
    /// [`send`](Self::send) or [`flush`](Self::flush) writes every fed message at once, in
    /// one gathered write where the transport takes it. Fails as
    /// [`try_send`](Self::try_send) does: [`TrySendError::Full`] above the write buffer's
    /// high-water mark (flush, then feed the message again).
    ///
    /// Nothing fed is written until then, so a batch must end with a `send` or `flush`;
    /// `try_send`, by contrast, writes what the transport takes at once.
    pub fn feed(&self, message: impl Into<Message>) -> Result<(), TrySendError> {
        self.shared.feed(message.into())
    }

    /// Writes everything queued (what [`feed`](Self::feed) queued included).
    pub async fn flush(&self) -> Result<(), Error> {
        self.shared.flush().await
    }

    /// Sends every message of `messages`, in order, in as few writes as the transport takes:
    /// they are queued together (up to the write buffer's high-water mark, then flushed, and
    /// so on) and flushed once at the end. For a batch that waited together, such as a room
    /// member's queued broadcasts. An error ends the batch: the messages not yet queued are
    /// dropped with the iterator.
    pub async fn send_all<I>(&self, messages: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = Message>,
    {
        let mut messages = messages.into_iter();
        loop {
            let done = self.shared.feed_from(&mut messages)?;
            self.shared.flush().await?;
            if done {
                return Ok(());
            }
        }
    }

    /// Sends a ping.
    pub async fn ping(&self, payload: &[u8]) -> Result<(), Error> {
        self.shared.ping(payload).await
    }

    /// Runs the close handshake and waits for its end (the [`ReadHalf`]'s task, if one is
    /// receiving, sees it too); see [`WebSocket::close`].
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.shared.close(code, reason).await
    }

    /// Sends our close frame without waiting for the peer's; see [`WebSocket::start_close`].
    pub async fn start_close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.shared.start_close(code, reason).await
    }

    /// A cloneable sender for fan-out.
    pub fn sender(&self) -> Sender {
        Sender { shared: self.shared.clone() }
    }
}

/// A cloneable handle that sends on a connection from any task: the registry's view of a
/// connection. Sends wait their turn; they never fail with [`Error::Concurrency`]. A sender
/// keeps the connection's state alive; a [`WeakSender`] does not.
#[derive(Clone)]
pub struct Sender {
    shared: Arc<Shared>,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("id", &self.shared.id()).finish_non_exhaustive()
    }
}

impl Sender {
    /// The connection's process-unique number.
    pub fn id(&self) -> ConnectionId {
        self.shared.id()
    }

    /// Sends a message after any send in progress on this connection.
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.shared.send(message.into(), true).await
    }

    /// Sends a message never compressed; see [`WebSocket::send_uncompressed`].
    pub async fn send_uncompressed(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.shared.send(message.into(), false).await
    }

    /// Queues a message without waiting; see [`WebSocket::try_send`].
    pub fn try_send(&self, message: impl Into<Message>) -> Result<(), TrySendError> {
        self.shared.try_send(message.into())
    }

    /// Queues a message without writing anything, for a batch: the next
    /// [`send`](Self::send) or [`flush`](Self::flush) writes every fed message at once, in
    /// one gathered write where the transport takes it. Fails as
    /// [`try_send`](Self::try_send) does: [`TrySendError::Full`] above the write buffer's
    /// high-water mark (flush, then feed the message again).
    ///
    /// Nothing fed is written until then, so a batch must end with a `send` or `flush`;
    /// `try_send`, by contrast, writes what the transport takes at once.
    pub fn feed(&self, message: impl Into<Message>) -> Result<(), TrySendError> {
        self.shared.feed(message.into())
    }

    /// Writes everything queued (what [`feed`](Self::feed) queued included).
    pub async fn flush(&self) -> Result<(), Error> {
        self.shared.flush().await
    }

    /// Sends every message of `messages`, in order, in as few writes as the transport takes:
    /// they are queued together (up to the write buffer's high-water mark, then flushed, and
    /// so on) and flushed once at the end. For a batch that waited together, such as a room
    /// member's queued broadcasts. An error ends the batch: the messages not yet queued are
    /// dropped with the iterator.
    pub async fn send_all<I>(&self, messages: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = Message>,
    {
        let mut messages = messages.into_iter();
        loop {
            let done = self.shared.feed_from(&mut messages)?;
            self.shared.flush().await?;
            if done {
                return Ok(());
            }
        }
    }

    /// Runs the close handshake and waits for its end; see [`WebSocket::close`]. A server's
    /// shutdown or a supervisor closes connections this way.
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.shared.close(code, reason).await
    }

    /// Sends our close frame without waiting for the peer's; see [`WebSocket::start_close`].
    pub async fn start_close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.shared.start_close(code, reason).await
    }

    /// Runs `work` while servicing the connection; see [`WebSocket::drive`].
    pub fn drive<F: Future>(&self, work: F) -> impl Future<Output = F::Output> {
        // Not an `async fn`: one layer of future less in every server connection's task.
        drive(&self.shared, work)
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Resolves once the connection is over, with the close frames exchanged (which say how
    /// it ended: [`ConnectionClosed::code`], [`ConnectionClosed::is_normal`]).
    pub async fn closed(&self) -> ConnectionClosed {
        self.shared.closed().await
    }

    /// The connection's state.
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// Traffic counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The close frames exchanged so far.
    pub fn close_info(&self) -> ConnectionClosed {
        self.shared.close_info()
    }

    /// The round-trip time of the last keepalive ping.
    pub fn last_rtt(&self) -> Option<Duration> {
        self.shared.last_rtt()
    }

    /// Takes the connection's end over from its owners: dropping the [`WebSocket`] (or both
    /// halves) no longer ends it, and whoever called this closes it instead (a server does,
    /// after the handler returns, with the code its return calls for). Until then it is
    /// serviced only while some task receives or drives it.
    pub fn supervise(&self) {
        self.shared.supervise();
    }

    /// A handle that does not keep the connection alive.
    pub fn downgrade(&self) -> WeakSender {
        WeakSender { shared: Arc::downgrade(&self.shared), id: self.shared.id() }
    }
}

/// A [`Sender`] that keeps neither the socket, nor its buffers, nor its compressor alive: once
/// every strong handle is gone, all that remains is a small header (measured in the
/// `weak_senders_keep_nothing_of_ended_connections` test).
#[derive(Clone)]
pub struct WeakSender {
    shared: Weak<Shared>,
    id: ConnectionId,
}

impl fmt::Debug for WeakSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakSender").field("id", &self.id).finish_non_exhaustive()
    }
}

impl WeakSender {
    /// The connection's process-unique number.
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// A sender, if the connection's state is still alive.
    pub fn upgrade(&self) -> Option<Sender> {
        self.shared.upgrade().map(|shared| Sender { shared })
    }

    /// Whether the connection is over (or gone).
    pub fn is_closed(&self) -> bool {
        self.shared.upgrade().is_none_or(|s| s.is_closed())
    }
}

/// Why [`WebSocket::try_send`] did not queue a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// The write buffer is above its high-water mark: the peer is reading slower than we write.
    /// The message is given back.
    #[error("write buffer is full")]
    Full(Message),
    /// The connection cannot send (closed, or closing).
    #[error(transparent)]
    Closed(Error),
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::pin::Pin;
    use std::sync::Mutex;
    use std::task::Context;

    use tokio::time::Instant;

    use super::*;

    /// A connection keeps its buffers while messages flow and gives them back after a quiet
    /// second, while a task waits in `recv`; before its first message it holds none.
    #[tokio::test(start_paused = true)]
    async fn buffers_are_given_back_after_a_quiet_second() {
        use tokio::io::AsyncWriteExt as _;
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let conn = Connection::server(Default::default(), Instant::now().into_std());
        let ws = WebSocket::from_parts(ours, conn, Config::default(), &[]);
        let spare = || ws.shared.has_spare_buffers();
        // Nothing read yet: the buffer reserved for the first read goes back at once.
        let waited = tokio::time::timeout(Duration::from_millis(10), ws.recv()).await;
        assert!(waited.is_err() && !spare(), "no buffer held before anything arrived");
        // A masked text frame "hi" (key 0).
        theirs.write_all(&[0x81, 0x82, 0, 0, 0, 0, b'h', b'i']).await.expect("written");
        assert_eq!(ws.recv().await.expect("a message"), Message::text("hi"));
        assert!(spare(), "kept right after a message");
        let waited = tokio::time::timeout(Duration::from_millis(500), ws.recv()).await;
        assert!(waited.is_err() && spare(), "kept half a second later");
        let waited = tokio::time::timeout(Duration::from_millis(700), ws.recv()).await;
        assert!(waited.is_err() && !spare(), "given back after a quiet second");
    }

    /// A transport that takes at most 7 bytes per write, vectored or not, records them, and
    /// pushes back (then wakes at once) on every other write.
    struct Trickle(Arc<Mutex<Vec<u8>>>, bool);

    impl tokio::io::AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }
    }

    impl tokio::io::AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            self.1 = !self.1;
            if self.1 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut out = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let mut taken = 0;
            for buf in bufs {
                let n = buf.len().min(7 - taken);
                out.extend_from_slice(&buf[..n]);
                taken += n;
            }
            Poll::Ready(Ok(taken))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A header and an uncopied payload go out in vectored writes, and writes cut anywhere
    /// (in the header, between the two, in the payload) resume at the right byte.
    #[tokio::test]
    async fn vectored_writes_cut_short_resume_at_the_right_byte() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let conn = Connection::server(Default::default(), Instant::now().into_std());
        let trickle = Trickle(written.clone(), false);
        let ws = WebSocket::from_parts(trickle, conn, Config::default(), &[]);
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        // Queued while the first is part written, so that a write takes the rest of one and
        // the start of the other.
        ws.try_send(Message::binary(payload.clone())).expect("queued");
        ws.try_send(Message::text("after")).expect("queued");
        ws.flush().await.expect("flushed");
        let out = written.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Binary, 16-bit length, then the payload; then a small text frame.
        let mut expected = vec![0x82, 126, 0x27, 0x10];
        expected.extend_from_slice(&payload);
        expected.extend_from_slice(&[0x81, 5]);
        expected.extend_from_slice(b"after");
        assert_eq!(out.len(), expected.len());
        assert!(out == expected, "the bytes written differ from the frames");
    }

    /// What an idle connection costs is mostly these: the shared state, and the futures of
    /// `recv` and `send` that a handler holds while it waits.
    #[tokio::test]
    async fn connection_state_and_futures_stay_small() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let conn = Connection::server(Default::default(), Instant::now().into_std());
        let ws = WebSocket::from_parts(ours, conn, Config::default(), &[]);
        // (measured when written, limit). While `send` carried its write timer inline, the
        // echo example's handler future took 1,207 bytes per connection (massif).
        let sizes = [
            ("shared state", std::mem::size_of::<Shared>(), 144, 256),
            ("recv future", std::mem::size_of_val(&ws.recv()), 48, 64),
            ("send future", std::mem::size_of_val(&ws.send(Message::text("x"))), 304, 384),
        ];
        for (what, size, _measured, limit) in sizes {
            assert!(size <= limit, "{what}: {size} bytes, over {limit}");
        }
    }
}
