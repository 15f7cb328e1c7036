//! The connection: one sans-I/O [`Connection`] and one transport behind a short-lived lock,
//! driven by whichever task is receiving or sending.
//!
//! Nothing is kept in the futures themselves: bytes read go straight into the protocol core's
//! buffer, and a decoded message is returned in the same poll that decoded it. Dropping a
//! `recv()` future at any `.await` therefore loses nothing (it is cancel-safe).

use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use palisade_error::{
    CloseCode, CloseFrame, ConcurrencyError, Error, Operation, PolicyKind, PolicyViolation, State,
};
use palisade_proto::connection::{Connection, Event};
use palisade_proto::message::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use crate::config::{Config, RateLimitAction};
use crate::rate::Limiter;

/// Reads are sized by the frame in progress, within these bounds.
const MIN_READ: usize = 4096;
const MAX_READ: usize = 256 * 1024;
/// How long a connection keeps its empty read and write buffers after it last read something.
const RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Traffic counters of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Data messages received.
    pub messages_in: u64,
    /// Data messages sent.
    pub messages_out: u64,
    /// Bytes read from the transport.
    pub bytes_in: u64,
    /// Bytes written to the transport.
    pub bytes_out: u64,
}

/// Wakes both the receiving and the sending task: either may be waiting for the transport to
/// accept more bytes (the receiver flushes pongs and close replies), and the transport keeps
/// only one waker for writability.
#[derive(Debug, Default)]
struct WriteWakers {
    slots: Mutex<[Option<Waker>; 2]>,
}

const READER: usize = 0;
const WRITER: usize = 1;

impl WriteWakers {
    fn register(&self, slot: usize, waker: &Waker) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match &slots[slot] {
            Some(w) if w.will_wake(waker) => {}
            _ => slots[slot] = Some(waker.clone()),
        }
    }
}

impl Wake for WriteWakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let taken = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            [slots[0].take(), slots[1].take()]
        };
        for waker in taken.into_iter().flatten() {
            waker.wake();
        }
    }
}

/// Everything behind the lock.
struct Inner<S> {
    conn: Connection,
    io: S,
    /// The unwritten rest of a chunk the transport took only part of.
    chunk: Option<Bytes>,
    /// The chunk after it, when both went to one vectored write that was cut short.
    next_chunk: Option<Bytes>,
    read_eof: bool,
    shutdown_done: bool,
    /// The transport failed: nothing more can be read or written.
    io_dead: bool,
    /// The end has been reported; every later call reports the closure again.
    terminated: bool,
    /// The error to report once the close frame it caused has been flushed.
    pending_error: Option<Error>,
    /// How long to keep trying to flush a final close frame.
    linger_until: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the last bytes were read: buffers are given back [`RELEASE_AFTER`] later. `None`
    /// before the first read, when they go back at once: a connection that never sends
    /// anything must not hold a read buffer for its first second (under a burst of new
    /// connections that second adds up, and the allocator keeps the peak).
    last_read: Option<Instant>,
    limiter: Option<Limiter>,
    stats: Stats,
    /// The `Stream` view has ended.
    stream_done: bool,
    /// The `Sink` view has queued its close frame.
    sink_closing: bool,
}

pub(crate) struct Shared<S> {
    inner: Mutex<Inner<S>>,
    reading: AtomicBool,
    write_lock: tokio::sync::Mutex<()>,
    wakers: Arc<WriteWakers>,
    write_waker: Waker,
    config: Config,
}

/// A WebSocket connection over any `AsyncRead + AsyncWrite` transport, after the opening
/// handshake. The same type serves servers and clients.
///
/// - [`WebSocket::recv`] returns the next data message; pings are answered, pongs recorded and
///   close frames handled on the way. It is cancel-safe.
/// - [`WebSocket::send`] writes a message, waiting while the peer reads slower than we write
///   (up to [`Config::write_timeout`]).
/// - [`WebSocket::close`] runs the close handshake.
/// - [`WebSocket::split`] gives a [`ReadHalf`] and a [`WriteHalf`] for different tasks;
///   [`WebSocket::sender`] gives cloneable [`Sender`]s for fan-out.
///
/// Keepalive pings, the pong deadline and the idle limit run while a task is receiving.
///
/// # After the end
///
/// Once the connection has closed, `recv` returns [`Error::ConnectionClosedOk`] (clean close
/// handshake with 1000/1001) or [`Error::ConnectionClosedError`], every time; `send`, `ping` and
/// `close` return the same. Two tasks receiving at once, or sending at once through the same
/// half, get [`Error::Concurrency`] (the second caller; the first is not disturbed).
pub struct WebSocket<S> {
    shared: Arc<Shared<S>>,
}

impl<S> WebSocket<S> {
    pub(crate) fn shared(&self) -> &Shared<S> {
        &self.shared
    }
}

impl<S> std::fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a transport on which the opening handshake has completed. `leftover` is whatever
    /// was read past the handshake (the first frames may arrive with it).
    pub fn from_parts(io: S, conn: Connection, config: Config, leftover: &[u8]) -> Self {
        let mut conn = conn;
        conn.handle_bytes(leftover);
        let limiter = config.rate_limit.map(|l| Limiter::new(l, Instant::now().into_std()));
        let wakers = Arc::new(WriteWakers::default());
        let write_waker = Waker::from(wakers.clone());
        let inner = Inner {
            conn,
            io,
            chunk: None,
            next_chunk: None,
            read_eof: false,
            shutdown_done: false,
            io_dead: false,
            terminated: false,
            pending_error: None,
            linger_until: None,
            sleep: None,
            last_read: None,
            limiter,
            stats: Stats::default(),
            stream_done: false,
            sink_closing: false,
        };
        Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(inner),
                reading: AtomicBool::new(false),
                write_lock: tokio::sync::Mutex::new(()),
                wakers,
                write_waker,
                config,
            }),
        }
    }

    /// Receives the next data message. Cancel-safe.
    pub async fn recv(&self) -> Result<Message, Error> {
        self.shared.recv().await
    }

    /// Sends a message, waiting while the write buffer is above its high-water mark, then until
    /// it is written to the transport.
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.shared.send_exclusive(message.into(), true).await
    }

    /// Sends a message as [`WebSocket::send`] does, but never compressed, even when
    /// permessage-deflate is on: for data that does not compress, or secrets that must not
    /// share a compression context with attacker-chosen text.
    pub async fn send_uncompressed(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.shared.send_exclusive(message.into(), false).await
    }

    /// Queues a message without waiting: fails with [`TrySendError::Full`] (giving the message
    /// back) when the write buffer is above its high-water mark. Queued bytes are written by
    /// the next `recv`, `send` or `flush` on this connection.
    pub fn try_send(&self, message: impl Into<Message>) -> Result<(), TrySendError> {
        self.shared.try_send(message.into())
    }

    /// Writes everything queued.
    pub async fn flush(&self) -> Result<(), Error> {
        poll_fn(|cx| self.shared.poll_flush_writer(cx, 0)).await
    }

    /// Sends a ping (payload of at most 125 bytes). The pong is matched by `recv`.
    pub async fn ping(&self, payload: &[u8]) -> Result<(), Error> {
        self.shared.control(|conn| conn.ping(payload)).await
    }

    /// Starts the close handshake with `code` and `reason` (cut to 123 bytes at a character
    /// boundary), then receives until it completes or the close timeout passes, discarding
    /// messages that arrive meanwhile. Returns `Ok` once both close frames have been exchanged
    /// (whatever the codes), and the closure error otherwise (no reply in time, TCP dropped).
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.shared.close_and_wait(code, reason).await
    }

    /// The round-trip time of the last keepalive ping.
    pub fn last_rtt(&self) -> Option<Duration> {
        self.shared.lock().conn.last_rtt()
    }

    /// Traffic counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats
    }

    /// The connection's state.
    pub fn state(&self) -> State {
        self.shared.lock().conn.state()
    }

    /// A handle that can close this connection from another task (a server's shutdown, a
    /// supervisor) without taking part in sending or receiving.
    pub fn close_handle(&self) -> CloseHandle<S> {
        CloseHandle { shared: self.shared.clone() }
    }

    /// Splits into a receiving and a sending half, for two tasks.
    pub fn split(self) -> (ReadHalf<S>, WriteHalf<S>) {
        (ReadHalf { shared: self.shared.clone() }, WriteHalf { shared: self.shared })
    }

    /// A cloneable sender: concurrent sends through senders queue up behind each other
    /// (never interleaving frames) instead of failing.
    pub fn sender(&self) -> Sender<S> {
        Sender { shared: self.shared.clone() }
    }
}

/// The receiving half of a [`WebSocket`].
pub struct ReadHalf<S> {
    shared: Arc<Shared<S>>,
}

impl<S> ReadHalf<S> {
    pub(crate) fn shared(&self) -> &Shared<S> {
        &self.shared
    }
}

impl<S> std::fmt::Debug for ReadHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHalf").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ReadHalf<S> {
    /// Receives the next data message. Cancel-safe; see [`WebSocket::recv`].
    pub async fn recv(&self) -> Result<Message, Error> {
        self.shared.recv().await
    }
}

/// The sending half of a [`WebSocket`].
pub struct WriteHalf<S> {
    shared: Arc<Shared<S>>,
}

impl<S> WriteHalf<S> {
    pub(crate) fn shared(&self) -> &Shared<S> {
        &self.shared
    }
}

impl<S> std::fmt::Debug for WriteHalf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHalf").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WriteHalf<S> {
    /// Sends a message; see [`WebSocket::send`].
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.shared.send_exclusive(message.into(), true).await
    }

    /// Queues a message without waiting; see [`WebSocket::try_send`].
    pub fn try_send(&self, message: impl Into<Message>) -> Result<(), TrySendError> {
        self.shared.try_send(message.into())
    }

    /// Sends a ping.
    pub async fn ping(&self, payload: &[u8]) -> Result<(), Error> {
        self.shared.control(|conn| conn.ping(payload)).await
    }

    /// Sends our close frame and returns once it is written; the [`ReadHalf`] sees the end of
    /// the handshake.
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let frame = close_frame(code, reason);
        self.shared.control(|conn| conn.close(frame)).await
    }

    /// A cloneable sender for fan-out.
    pub fn sender(&self) -> Sender<S> {
        Sender { shared: self.shared.clone() }
    }
}

/// A cloneable handle that sends on a connection from any task. Sends through senders wait
/// their turn; they never fail with [`Error::Concurrency`].
pub struct Sender<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Sender<S> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

impl<S> std::fmt::Debug for Sender<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sender<S> {
    /// Sends a message after any send in progress on this connection.
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        let _turn = self.shared.write_lock.lock().await;
        self.shared.send_locked(message.into(), true).await
    }

    /// Queues a message without waiting; see [`WebSocket::try_send`].
    pub fn try_send(&self, message: impl Into<Message>) -> Result<(), TrySendError> {
        self.shared.try_send(message.into())
    }
}

/// Closes a connection from outside the tasks that use it. The task receiving on the
/// connection sees the close handshake finish (its `recv` returns the closure).
pub struct CloseHandle<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for CloseHandle<S> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

impl<S> std::fmt::Debug for CloseHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloseHandle").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> CloseHandle<S> {
    /// Sends our close frame (unless one was already sent) and returns once it is written.
    /// Returns `Ok` if the connection was already closing.
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let frame = close_frame(code, reason);
        let already = {
            let mut inner = self.shared.lock();
            if inner.terminated || inner.io_dead {
                return Ok(());
            }
            inner.conn.close(frame).is_err()
        };
        if already {
            return Ok(());
        }
        self.shared.flush_to(0).await
    }

    /// Runs the whole close handshake: sends our close frame (unless one was already sent),
    /// then receives — discarding messages — until the peer's close frame and the end of the
    /// transport, or the close timeout. For use when no other task is receiving on the
    /// connection (a server whose handler has returned); otherwise that receiver sees the end
    /// and this returns [`Error::Concurrency`]. `Ok` once both close frames were exchanged.
    pub async fn close_and_wait(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.shared.close_and_wait(code, reason).await
    }

    /// The connection's state.
    pub fn state(&self) -> State {
        self.shared.lock().conn.state()
    }

    /// Traffic counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats
    }

    /// The close frames exchanged so far.
    pub fn close_info(&self) -> palisade_error::ConnectionClosed {
        self.shared.lock().conn.close_info()
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

fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    // An unsendable code (1005, 1006 …) becomes a close without status rather than an
    // invalid frame.
    CloseFrame::truncated(code, reason).unwrap_or_else(|_| CloseFrame::no_status())
}

/// Clears the `reading` flag when a receive ends or is cancelled.
struct ReadingGuard<'a>(&'a AtomicBool);

impl Drop for ReadingGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, Inner<S>> {
        // A panic while the lock was held cannot leave the protocol core half-updated in a way
        // that matters more than losing the connection, so keep going with the data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn recv(&self) -> Result<Message, Error> {
        if self.reading.swap(true, Ordering::AcqRel) {
            return Err(ConcurrencyError { operation: Operation::Recv }.into());
        }
        let _guard = ReadingGuard(&self.reading);
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Message, Error>> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        self.wakers.register(READER, cx.waker());
        let mut wcx = Context::from_waker(&self.write_waker);
        // The clock is read once per poll (and again when a timer fires): reading it on every
        // pass of the loop showed up in profiles of small-message echo.
        let mut now = Instant::now();
        inner.conn.handle_timeout(now.into_std());
        loop {
            if inner.terminated {
                return Poll::Ready(Err(inner.conn.closed_error()));
            }
            match inner.conn.poll_event() {
                Some(Ok(Event::Message(message))) => {
                    inner.stats.messages_in += 1;
                    match self.admit(inner, &message, now) {
                        Ok(()) => return Poll::Ready(Ok(message)),
                        // Dropped: report it, the connection stays open.
                        Err(Some(err)) => return Poll::Ready(Err(err)),
                        // Closing: the error is reported once the close frame is out.
                        Err(None) => continue,
                    }
                }
                Some(Ok(Event::Ping(_) | Event::Pong(_) | Event::Close(_))) => continue,
                Some(Ok(_)) => continue,
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "connection failed");
                    self.fail_later(inner, err, now);
                    continue;
                }
                None => {}
            }
            match poll_write_out(inner, &mut wcx) {
                Poll::Ready(Ok(())) => poll_shutdown_if_due(inner, &mut wcx),
                Poll::Ready(Err(err)) => return Poll::Ready(Err(self.io_failed(inner, err))),
                Poll::Pending => {}
            }
            let closed = inner.conn.state() == State::Closed;
            let lingered = inner.linger_until.is_some_and(|t| now >= t);
            if closed && (inner.shutdown_done || inner.io_dead || lingered) {
                inner.terminated = true;
                return Poll::Ready(Err(inner
                    .pending_error
                    .take()
                    .unwrap_or_else(|| inner.conn.closed_error())));
            }
            if !inner.read_eof && !inner.io_dead {
                let hint = inner.conn.read_hint().clamp(MIN_READ, MAX_READ);
                let buf = inner.conn.read_buffer();
                if buf.capacity() - buf.len() < MIN_READ / 4 {
                    buf.reserve(hint);
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut inner.io), cx, buf) {
                    Poll::Ready(Ok(0)) => {
                        inner.read_eof = true;
                        inner.conn.handle_eof();
                        continue;
                    }
                    Poll::Ready(Ok(n)) => {
                        inner.stats.bytes_in += n as u64;
                        inner.last_read = Some(now);
                        continue;
                    }
                    Poll::Ready(Err(err)) => {
                        return Poll::Ready(Err(self.io_failed(inner, err)));
                    }
                    Poll::Pending => {}
                }
            }
            // Buffers go back once the connection has been quiet for a while, not at every wait:
            // giving them back at every wait made each small message pay a malloc and a free.
            let mut release_at = None;
            if inner.conn.has_spare_buffers() {
                match inner.last_read.map(|t| t + RELEASE_AFTER) {
                    Some(due) if now < due => release_at = Some(due),
                    _ => inner.conn.shrink_buffers(),
                }
            }
            let deadline =
                [inner.conn.poll_timeout().map(Instant::from_std), inner.linger_until, release_at]
                    .into_iter()
                    .flatten()
                    .min();
            if let Some(deadline) = deadline {
                let sleep =
                    inner.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                // Moving the timer is a trip to tokio's timer wheel, and the keepalive deadline
                // moves later with every message: a later deadline is left to the early
                // wake-up, which finds nothing due and re-arms once.
                if deadline < sleep.deadline() || sleep.is_elapsed() {
                    sleep.as_mut().reset(deadline);
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    now = Instant::now();
                    inner.conn.handle_timeout(now.into_std());
                    continue;
                }
            }
            return Poll::Pending;
        }
    }

    /// Applies the rate limit to a received message: `Err(Some(_))` to report a dropped message,
    /// `Err(None)` when the connection is closing and the error waits for the close frame.
    fn admit(
        &self,
        inner: &mut Inner<S>,
        message: &Message,
        now: Instant,
    ) -> Result<(), Option<Error>> {
        let Some(limiter) = inner.limiter.as_mut() else { return Ok(()) };
        if limiter.admit(message.len(), now.into_std()) {
            return Ok(());
        }
        match self.config.rate_limit.map(|l| l.action) {
            Some(RateLimitAction::Close(code)) => {
                tracing::info!(code = code.0, "rate limit exceeded: closing");
                // Already closing: the first close frame stands.
                let _ = inner.conn.close(close_frame(code, "rate limit exceeded"));
                let err = PolicyViolation { kind: PolicyKind::RateLimited, code }.into();
                self.fail_later(inner, err, now);
                Err(None)
            }
            Some(RateLimitAction::Drop) | None => {
                tracing::debug!("rate limit exceeded: message dropped");
                Err(Some(
                    PolicyViolation {
                        kind: PolicyKind::RateLimited,
                        code: CloseCode::POLICY_VIOLATION,
                    }
                    .into(),
                ))
            }
        }
    }

    fn close_timeout(&self) -> Duration {
        self.config.protocol.close_timeout.unwrap_or(Duration::from_secs(10))
    }

    /// Keeps `err` to report once the close frame the core queued for it is written (or the
    /// close timeout passes).
    fn fail_later(&self, inner: &mut Inner<S>, err: Error, now: Instant) {
        inner.linger_until = Some(now + self.close_timeout());
        if inner.pending_error.is_none() {
            inner.pending_error = Some(err);
        }
    }

    fn io_failed(&self, inner: &mut Inner<S>, err: std::io::Error) -> Error {
        inner.io_dead = true;
        inner.terminated = true;
        inner.conn.handle_eof();
        while inner.conn.poll_event().is_some() {}
        tracing::debug!(error = %err, "transport failed");
        inner.pending_error.take().unwrap_or_else(|| Error::io(err))
    }

    /// Flushes queued bytes until at most `target` remain. Used by senders.
    fn poll_flush_writer(&self, cx: &mut Context<'_>, target: usize) -> Poll<Result<(), Error>> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.io_dead {
            return Poll::Ready(Err(inner.conn.closed_error()));
        }
        self.wakers.register(WRITER, cx.waker());
        let mut wcx = Context::from_waker(&self.write_waker);
        match poll_write_out(inner, &mut wcx) {
            Poll::Ready(Ok(())) => {
                poll_shutdown_if_due(inner, &mut wcx);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(self.io_failed(inner, err))),
            Poll::Pending => {
                let queued = inner.conn.pending_transmit()
                    + inner.chunk.as_ref().map_or(0, Bytes::len)
                    + inner.next_chunk.as_ref().map_or(0, Bytes::len);
                // Below the low-water mark a waiting sender may go on; the rest is written by
                // later operations.
                if target > 0 && queued <= target { Poll::Ready(Ok(())) } else { Poll::Pending }
            }
        }
    }

    async fn send_exclusive(&self, message: Message, compress: bool) -> Result<(), Error> {
        let Ok(_turn) = self.write_lock.try_lock() else {
            return Err(ConcurrencyError { operation: Operation::Send }.into());
        };
        self.send_locked(message, compress).await
    }

    /// Sends with the write turn held: waits below the high-water mark, queues, flushes.
    async fn send_locked(&self, message: Message, compress: bool) -> Result<(), Error> {
        let high = self.config.write_high_water;
        let low = self.config.write_low_water;
        let over_high = {
            let inner = self.lock();
            inner.conn.pending_transmit() > high
        };
        if over_high {
            self.flush_to(low.max(1)).await?;
        }
        {
            let mut inner = self.lock();
            if inner.terminated || inner.io_dead {
                return Err(inner.conn.closed_error());
            }
            let sent = if compress {
                inner.conn.send(&message)
            } else {
                inner.conn.send_uncompressed(&message)
            };
            match sent {
                Ok(()) => inner.stats.messages_out += 1,
                Err(Error::InvalidState(_)) => return Err(inner.conn.closed_error()),
                Err(err) => return Err(err),
            }
        }
        self.flush_to(0).await
    }

    fn try_send(&self, message: Message) -> Result<(), TrySendError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.terminated || inner.io_dead {
            return Err(TrySendError::Closed(inner.conn.closed_error()));
        }
        if inner.conn.pending_transmit() > self.config.write_high_water {
            return Err(TrySendError::Full(message));
        }
        match inner.conn.send(&message) {
            Ok(()) => inner.stats.messages_out += 1,
            Err(Error::InvalidState(_)) => {
                return Err(TrySendError::Closed(inner.conn.closed_error()));
            }
            Err(err) => return Err(TrySendError::Closed(err)),
        }
        // Write what the transport takes now; the rest goes out with the next operation.
        let mut wcx = Context::from_waker(&self.write_waker);
        if let Poll::Ready(Err(err)) = poll_write_out(inner, &mut wcx) {
            return Err(TrySendError::Closed(self.io_failed(inner, err)));
        }
        Ok(())
    }

    /// Queues a control frame with `queue` and flushes it.
    async fn control(
        &self,
        queue: impl FnOnce(&mut Connection) -> Result<(), Error>,
    ) -> Result<(), Error> {
        {
            let mut inner = self.lock();
            if inner.terminated || inner.io_dead {
                return Err(inner.conn.closed_error());
            }
            match queue(&mut inner.conn) {
                Ok(()) => {}
                Err(Error::InvalidState(_)) => return Err(inner.conn.closed_error()),
                Err(err) => return Err(err),
            }
        }
        self.flush_to(0).await
    }

    async fn close_and_wait(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let frame = close_frame(code, reason);
        {
            let mut inner = self.lock();
            if inner.terminated {
                let err = inner.conn.closed_error();
                return if err.is_closed_ok() { Ok(()) } else { Err(err) };
            }
            // Already closing: just wait for the end below.
            let _ = inner.conn.close(frame);
        }
        loop {
            match self.recv().await {
                Ok(_) => continue,
                // Both close frames exchanged, whatever the code: the handshake we started is
                // complete, which is what closing asks for.
                Err(err)
                    if err.connection_closed().is_some_and(|c| c.received_then_sent.is_some()) =>
                {
                    return Ok(());
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Runs a flush under the write timeout; a peer that stays stuck past it is dropped as a
    /// slow consumer.
    /// Flushes until at most `target` bytes are queued, within the write timeout. Most flushes
    /// finish on their first poll: only one that has to wait arms the timer, in a box, so that
    /// every send's future (which a handler holds for the connection's life) stays small and
    /// the common case registers no timer at all.
    async fn flush_to(&self, target: usize) -> Result<(), Error> {
        let first = poll_fn(|cx| Poll::Ready(self.poll_flush_writer(cx, target))).await;
        match first {
            Poll::Ready(result) => result,
            Poll::Pending => Box::pin(self.wait_flushed(target)).await,
        }
    }

    /// [`Shared::flush_to`] once the first poll found the transport full.
    async fn wait_flushed(&self, target: usize) -> Result<(), Error> {
        let flush = poll_fn(|cx| self.poll_flush_writer(cx, target));
        let Some(limit) = self.config.write_timeout else { return flush.await };
        match tokio::time::timeout(limit, flush).await {
            Ok(result) => result,
            Err(_) => {
                let code = self.config.slow_consumer_code;
                tracing::info!(code = code.0, "peer is not reading: closing");
                let mut inner = self.lock();
                let _ = inner.conn.close(close_frame(code, "slow consumer"));
                let mut wcx = Context::from_waker(&self.write_waker);
                let _ = poll_write_out(&mut inner, &mut wcx);
                inner.io_dead = true;
                inner.terminated = true;
                let err: Error = PolicyViolation { kind: PolicyKind::SlowConsumer, code }.into();
                Wake::wake_by_ref(&self.wakers);
                Err(err)
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Shared<S> {
    pub(crate) fn poll_stream(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        if self.lock().stream_done {
            return Poll::Ready(None);
        }
        if self.reading.swap(true, Ordering::AcqRel) {
            return Poll::Ready(Some(Err(ConcurrencyError { operation: Operation::Recv }.into())));
        }
        let polled = self.poll_recv(cx);
        self.reading.store(false, Ordering::Release);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(message)) => Poll::Ready(Some(Ok(message))),
            Poll::Ready(Err(err)) => {
                let ended = err.connection_closed().is_some();
                if ended {
                    self.lock().stream_done = true;
                }
                if err.is_closed_ok() { Poll::Ready(None) } else { Poll::Ready(Some(Err(err))) }
            }
        }
    }

    pub(crate) fn poll_sink_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let over_high = self.lock().conn.pending_transmit() > self.config.write_high_water;
        if over_high {
            self.poll_flush_writer(cx, self.config.write_low_water.max(1))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    pub(crate) fn start_send(&self, message: Message) -> Result<(), Error> {
        let mut inner = self.lock();
        if inner.terminated || inner.io_dead {
            return Err(inner.conn.closed_error());
        }
        match inner.conn.send(&message) {
            Ok(()) => {
                inner.stats.messages_out += 1;
                Ok(())
            }
            Err(Error::InvalidState(_)) => Err(inner.conn.closed_error()),
            Err(err) => Err(err),
        }
    }

    pub(crate) fn poll_sink_flush(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_flush_writer(cx, 0)
    }

    pub(crate) fn poll_sink_close(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        {
            let mut inner = self.lock();
            if !inner.sink_closing {
                inner.sink_closing = true;
                // Already closing or closed: nothing more to queue.
                let _ = inner.conn.close(CloseFrame::normal());
            }
        }
        self.poll_flush_writer(cx, 0)
    }
}

/// Shuts the transport's write side once the core says the connection is over (and everything
/// queued is written).
fn poll_shutdown_if_due<S: AsyncWrite + Unpin>(inner: &mut Inner<S>, cx: &mut Context<'_>) {
    if inner.conn.wants_transport_close()
        && !inner.shutdown_done
        && Pin::new(&mut inner.io).poll_shutdown(cx).is_ready()
    {
        inner.shutdown_done = true;
    }
}

/// Writes queued chunks until the core has none left or the transport pushes back.
fn poll_write_out<S: AsyncWrite + Unpin>(
    inner: &mut Inner<S>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), std::io::Error>> {
    if inner.io_dead {
        return Poll::Ready(Ok(()));
    }
    loop {
        let first = match inner.chunk.take() {
            Some(chunk) => chunk,
            None => match inner.conn.poll_transmit() {
                Some(chunk) => chunk,
                None => break,
            },
        };
        // A frame header and the payload queued without a copy after it go out in one
        // vectored write: one syscall, and one segment under TCP_NODELAY, instead of two.
        let second = match inner.next_chunk.take() {
            Some(chunk) => Some(chunk),
            None if inner.io.is_write_vectored() => inner.conn.poll_transmit(),
            None => None,
        };
        let io = Pin::new(&mut inner.io);
        let written = match &second {
            None => io.poll_write(cx, &first),
            Some(second) => {
                io.poll_write_vectored(cx, &[IoSlice::new(&first), IoSlice::new(second)])
            }
        };
        match written {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            Poll::Ready(Ok(n)) => {
                inner.stats.bytes_out += n as u64;
                if n < first.len() {
                    inner.chunk = Some(first.slice(n..));
                    inner.next_chunk = second;
                } else if let Some(second) = second {
                    let taken = n - first.len();
                    if taken < second.len() {
                        inner.chunk = Some(second.slice(taken..));
                    }
                }
            }
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Pending => {
                inner.chunk = Some(first);
                inner.next_chunk = second;
                return Poll::Pending;
            }
        }
    }
    Pin::new(&mut inner.io).poll_flush(cx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection keeps its buffers while messages flow and gives them back after a quiet
    /// second, while a task waits in `recv`; before its first message it holds none.
    #[tokio::test(start_paused = true)]
    async fn buffers_are_given_back_after_a_quiet_second() {
        use tokio::io::AsyncWriteExt as _;
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let conn = Connection::server(Default::default(), Instant::now().into_std());
        let ws = WebSocket::from_parts(ours, conn, Config::default(), &[]);
        let spare = || ws.shared.lock().conn.has_spare_buffers();
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
            ("shared state", std::mem::size_of::<Shared<tokio::io::DuplexStream>>(), 952, 1024),
            ("recv future", std::mem::size_of_val(&ws.recv()), 48, 64),
            ("send future", std::mem::size_of_val(&ws.send(Message::text("x"))), 296, 384),
        ];
        for (what, size, _measured, limit) in sizes {
            assert!(size <= limit, "{what}: {size} bytes, over {limit}");
        }
    }
}
