//! One open connection: the sans-I/O core and a blocking transport, driven by whichever
//! thread calls in. There is no background thread: timers (keepalive pings, the pong deadline,
//! the idle limit, the close timeout) fire while a caller waits in [`WebSocket::recv`] or
//! [`WebSocket::recv_timeout`], whose socket read timeout is computed from
//! [`Connection::poll_timeout`].
//!
//! The rules are those of palisade's tokio driver (`palisade-conn`): a failure is reported
//! once its close frame is written (or after the close timeout, when it cannot be); after a
//! failure caused by the peer's input, what the peer still sends is drained (bounded in bytes
//! and time) before TCP is closed, so that its close frame is not destroyed by a reset.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use palisade_error::{
    CloseCode, CloseFrame, ConnectionClosed, Error, PolicyKind, PolicyViolation, State,
    TimeoutPhase,
};
use palisade_proto::Role;
use palisade_proto::connection::{Connection, Event};
use palisade_proto::deflate::DeflateParams;
use palisade_proto::message::Message;

use crate::config::Config;
use crate::transport::{Transport, is_timeout};

/// Reads are sized by the frame in progress, within these bounds.
const MIN_READ: usize = 4096;
const MAX_READ: usize = 256 * 1024;
/// After we fail a connection, how many more bytes we read and discard, at most, while the
/// peer finishes what it was sending and reads our close frame (as the tokio driver does).
const DRAIN_BYTES: u64 = 64 << 20;
/// How long dropping an open connection may block writing its 1001 close frame.
const DROP_WRITE_LIMIT: Duration = Duration::from_millis(100);
/// The shortest read timeout set: a zero timeout means "for ever" to the socket API.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// What the opening handshake agreed on.
#[derive(Debug, Default)]
pub(crate) struct Handshake {
    pub(crate) subprotocol: Option<String>,
    pub(crate) compression: Option<DeflateParams>,
    /// The client's request (server side).
    pub(crate) request: Option<Request<()>>,
    /// The server's 101 response (client side).
    pub(crate) response: Option<Response<()>>,
}

/// An open WebSocket connection over a blocking transport.
///
/// Every method takes `&mut self`: one thread drives the connection at a time. A thread per
/// connection that loops on [`WebSocket::recv`] (or iterates the socket) and sends replies is
/// the intended shape; to send from elsewhere while waiting, wait with
/// [`WebSocket::recv_timeout`] and send between waits.
///
/// ```no_run
/// # fn run() -> Result<(), palisade_error::Error> {
/// let mut ws = palisade_blocking::connect("ws://127.0.0.1:9001/chat")?;
/// ws.send(palisade_proto::Message::text("hello"))?;
/// for message in ws.incoming() {
///     println!("{:?}", message?);
/// }
/// # Ok(()) }
/// ```
///
/// Dropping an open connection sends a close frame with 1001 (going away), as far as the
/// transport takes it at once, and closes the transport.
pub struct WebSocket {
    conn: Connection,
    /// `None` only in `drop`, once handed to the draining thread.
    io: Option<Box<dyn Transport>>,
    write_timeout: Option<Duration>,
    slow_consumer_code: CloseCode,
    /// The unwritten rest of a chunk the transport took only part of.
    chunk: Option<Bytes>,
    read_eof: bool,
    shutdown_done: bool,
    /// The transport failed: nothing more can be read or written.
    io_dead: bool,
    /// The connection is over; every later call reports the closure.
    terminated: bool,
    /// The error to report first once the connection is over (then the closure, every time).
    pending_error: Option<Error>,
    /// How long to keep trying to write a final close frame after a failure.
    linger_until: Option<Instant>,
    /// Set when we failed the connection on the peer's input: how long to drain it when the
    /// connection is dropped.
    drain_for: Option<Duration>,
    /// The iterator view has ended.
    stream_done: bool,
    handshake: Handshake,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("conn", &self.conn)
            .field("terminated", &self.terminated)
            .field("subprotocol", &self.handshake.subprotocol)
            .finish_non_exhaustive()
    }
}

impl WebSocket {
    /// Wraps a transport on which the opening handshake is complete. `leftover` is what was
    /// read past the handshake's head: the first frames.
    pub(crate) fn new(
        mut io: Box<dyn Transport>,
        mut conn: Connection,
        config: &Config,
        leftover: &[u8],
        handshake: Handshake,
    ) -> Result<Self, Error> {
        io.set_write_timeout(config.write_timeout).map_err(Error::io)?;
        conn.handle_bytes(leftover);
        Ok(Self {
            conn,
            io: Some(io),
            write_timeout: config.write_timeout,
            slow_consumer_code: config.slow_consumer_code,
            chunk: None,
            read_eof: false,
            shutdown_done: false,
            io_dead: false,
            terminated: false,
            pending_error: None,
            linger_until: None,
            drain_for: None,
            stream_done: false,
            handshake,
        })
    }

    // ----- What the handshake agreed on -----

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.conn.role()
    }

    /// The subprotocol agreed in the handshake, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.handshake.subprotocol.as_deref()
    }

    /// The permessage-deflate parameters agreed, if compression was negotiated.
    pub fn compression(&self) -> Option<&DeflateParams> {
        self.handshake.compression.as_ref()
    }

    /// The client's upgrade request (on a connection accepted by this process): its path,
    /// query and headers.
    pub fn request(&self) -> Option<&Request<()>> {
        self.handshake.request.as_ref()
    }

    /// The server's 101 response (on a connection opened by this process).
    pub fn response(&self) -> Option<&Response<()>> {
        self.handshake.response.as_ref()
    }

    // ----- State -----

    /// The connection's state: open, closing (our close frame is out) or closed.
    pub fn state(&self) -> State {
        if self.terminated { State::Closed } else { self.conn.state() }
    }

    /// The close frames exchanged so far.
    pub fn close_info(&self) -> ConnectionClosed {
        self.conn.close_info()
    }

    /// The round-trip time of the last keepalive ping answered.
    pub fn last_rtt(&self) -> Option<Duration> {
        self.conn.last_rtt()
    }

    // ----- Receiving -----

    /// Waits for the next message, answering pings, sending keepalive pings and running the
    /// close handshake meanwhile.
    ///
    /// # Errors
    ///
    /// Once the connection is over: first the error that ended it (a protocol violation with
    /// the close code we sent, a size limit with 1009, a keepalive timeout with 1011, an I/O
    /// failure), then [`Error::ConnectionClosedOk`] after a normal close (1000/1001) or
    /// [`Error::ConnectionClosedError`] after any other, on every call.
    pub fn recv(&mut self) -> Result<Message, Error> {
        loop {
            if let Some(message) = self.pump(None)? {
                return Ok(message);
            }
        }
    }

    /// Waits at most `timeout` for the next message: `Ok(None)` when none arrived in time (the
    /// connection stays open). Otherwise as [`WebSocket::recv`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Message>, Error> {
        self.pump(Some(Instant::now() + timeout))
    }

    /// The messages as an iterator, which ends after a normal close (1000/1001) and yields the
    /// error once (then ends) after any other.
    pub fn incoming(&mut self) -> Incoming<'_> {
        Incoming { socket: self }
    }

    /// The next message for the iterator views: `None` once the stream has ended.
    fn next_message(&mut self) -> Option<Result<Message, Error>> {
        if self.stream_done {
            return None;
        }
        match self.recv() {
            Ok(message) => Some(Ok(message)),
            Err(err) => {
                if err.connection_closed().is_some() || self.terminated {
                    self.stream_done = true;
                }
                if err.is_closed_ok() { None } else { Some(Err(err)) }
            }
        }
    }

    // ----- Sending -----

    /// Sends a data message (compressed when permessage-deflate was agreed) and writes it out.
    ///
    /// # Errors
    ///
    /// The closure ([`Error::ConnectionClosedOk`] or [`Error::ConnectionClosedError`]) once our
    /// close frame is out or the connection is over; the I/O error when the transport fails;
    /// [`PolicyViolation`] (`SlowConsumer`) when a write blocks past the write timeout.
    pub fn send(&mut self, message: Message) -> Result<(), Error> {
        self.command(|conn| conn.send(&message))
    }

    /// Sends a data message uncompressed even when permessage-deflate was agreed: for data that
    /// does not compress, or that mixes secrets with attacker-chosen text. Otherwise as
    /// [`WebSocket::send`].
    pub fn send_uncompressed(&mut self, message: Message) -> Result<(), Error> {
        self.command(|conn| conn.send_uncompressed(&message))
    }

    /// Sends a ping with `payload` (at most 125 bytes; more fails with
    /// [`Error::PayloadTooBig`]). Its pong is read by `recv`.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.command(|conn| conn.ping(payload))
    }

    /// Queues a frame with `queue` and writes it out.
    fn command(
        &mut self,
        queue: impl FnOnce(&mut Connection) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if self.terminated || self.io_dead {
            return Err(self.conn.closed_error());
        }
        // The core stamps a data message as activity against the idle limit: with the time
        // of this send, not of the last `recv` (the write below costs far more than the read
        // of the clock).
        self.conn.advance_time(Instant::now());
        match queue(&mut self.conn) {
            Ok(()) => {}
            Err(Error::InvalidState(_)) => return Err(self.conn.closed_error()),
            Err(err) => return Err(err),
        }
        match self.write_out() {
            Ok(()) => {
                self.shutdown_if_due();
                Ok(())
            }
            Err(err) => {
                self.io_failed(err);
                Err(self.pending_error.take().unwrap_or_else(|| self.conn.closed_error()))
            }
        }
    }

    // ----- Closing -----

    /// Runs the close handshake: sends a close frame with `code` and `reason` (a reason over
    /// 123 bytes is cut on a character boundary), then reads until the peer's close frame and
    /// the end of the transport, within the close timeout. Messages that arrive meanwhile are
    /// dropped. `Ok` once both close frames have been exchanged, whatever the peer's code;
    /// also `Ok` when the peer closed first and we answered.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] ([`TimeoutPhase::Close`]) when the peer does not answer in time; the
    /// error that ended the connection otherwise (I/O, or a violation found while reading).
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        if !self.terminated {
            // Already closing: the first close frame stands. The close deadline counts from
            // now, not from the last `recv`.
            self.conn.advance_time(Instant::now());
            let _ = self.conn.close(CloseFrame::lossy(code, reason));
        }
        let limit = self.conn.config().close_timeout.map(|t| Instant::now() + t);
        let end = loop {
            match self.pump(limit) {
                // Dropped: the caller asked to close.
                Ok(Some(_)) => continue,
                Ok(None) => return Err(Error::timeout(TimeoutPhase::Close)),
                Err(err) => break err,
            }
        };
        if self.conn.close_info().received_then_sent.is_some() { Ok(()) } else { Err(end) }
    }

    // ----- The I/O loop -----

    /// Drives the connection until a message arrives (`Some`), `until` passes (`None`), or the
    /// connection is over (`Err`, the end as [`WebSocket::take_end`] reports it).
    fn pump(&mut self, until: Option<Instant>) -> Result<Option<Message>, Error> {
        let mut now = Instant::now();
        self.conn.handle_timeout(now);
        loop {
            if self.terminated {
                return Err(self.take_end());
            }
            match self.conn.poll_event() {
                Some(Ok(Event::Message(message))) => {
                    // Pongs and close replies queued while decoding go out now, not when the
                    // caller next waits: it may take its time with the message.
                    if let Err(err) = self.write_out() {
                        self.io_failed(err);
                    }
                    return Ok(Some(message));
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => {
                    self.fail_later(err, now);
                    continue;
                }
                None => {}
            }
            if let Err(err) = self.write_out() {
                self.io_failed(err);
                continue;
            }
            self.shutdown_if_due();
            let closed = self.conn.state() == State::Closed;
            let lingered = self.linger_until.is_some_and(|t| now >= t);
            if closed && (self.shutdown_done || self.io_dead || lingered) {
                self.terminated = true;
                continue;
            }
            if until.is_some_and(|u| now >= u) {
                return Ok(None);
            }
            let deadline =
                [self.conn.poll_timeout(), self.linger_until, until].into_iter().flatten().min();
            let wait = deadline.map(|d| d.saturating_duration_since(now));
            if wait != Some(Duration::ZERO) {
                if self.read_eof {
                    // Nothing more can arrive: only time moves the connection on. The core
                    // saw the end of input, so it is closed and a deadline is set.
                    match wait {
                        Some(wait) => std::thread::sleep(wait),
                        None => self.terminated = true,
                    }
                } else {
                    self.read_some(wait);
                }
            }
            now = Instant::now();
            self.conn.handle_timeout(now);
        }
    }

    /// One read into the core's buffer, blocking at most `wait` (`None`: until data arrives).
    fn read_some(&mut self, wait: Option<Duration>) {
        let Some(io) = self.io.as_mut() else { return };
        if let Err(err) = io.set_read_timeout(wait.map(|w| w.max(MIN_WAIT))) {
            self.io_failed(err);
            return;
        }
        let hint = self.conn.read_hint().clamp(MIN_READ, MAX_READ);
        let buf = self.conn.read_buffer();
        let start = buf.len();
        buf.resize(start + hint, 0);
        let read = io.read(&mut buf[start..]);
        let n = *read.as_ref().unwrap_or(&0);
        buf.truncate(start + n);
        match read {
            Ok(0) => {
                self.read_eof = true;
                self.conn.handle_eof();
            }
            Ok(_) => {}
            Err(err) if is_timeout(&err) || err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => self.io_failed(err),
        }
    }

    /// What a caller learns once the connection is over: the error that ended it the first
    /// time, the closure after that.
    fn take_end(&mut self) -> Error {
        self.pending_error.take().unwrap_or_else(|| self.conn.closed_error())
    }

    /// Keeps `err` to report once the close frame the core queued for it is written (or the
    /// close timeout passes).
    fn fail_later(&mut self, err: Error, now: Instant) {
        // RFC 6455 §7.1.1: the close frame is owed, but not for ever.
        let linger = self.conn.config().close_timeout.unwrap_or(Duration::from_secs(10));
        self.linger_until = Some(now + linger);
        // A deadline that passed says the peer is silent or gone: nothing to drain.
        if !matches!(err, Error::Timeout(_)) {
            self.drain_for = Some(linger);
        }
        if self.pending_error.is_none() {
            self.pending_error = Some(err);
        }
    }

    /// The transport failed: the end is reported by the next call that looks.
    fn io_failed(&mut self, err: io::Error) {
        self.io_dead = true;
        self.chunk = None;
        self.conn.handle_eof();
        while self.conn.poll_event().is_some() {}
        if self.pending_error.is_none() {
            self.pending_error = Some(if is_timeout(&err) {
                // Only writes have a timeout that fails: reads time out on purpose.
                PolicyViolation { kind: PolicyKind::SlowConsumer, code: self.slow_consumer_code }
                    .into()
            } else {
                Error::io(err)
            });
        }
        self.terminated = true;
    }

    /// Writes every queued chunk, blocking up to the write timeout for each write.
    fn write_out(&mut self) -> io::Result<()> {
        if self.io_dead {
            return Ok(());
        }
        let Some(io) = self.io.as_mut() else { return Ok(()) };
        let mut wrote = false;
        loop {
            let chunk = match self.chunk.take() {
                Some(chunk) => chunk,
                None => match self.conn.poll_transmit() {
                    Some(chunk) => chunk,
                    None => break,
                },
            };
            match io.write(&chunk) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) if n < chunk.len() => self.chunk = Some(chunk.slice(n..)),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => self.chunk = Some(chunk),
                Err(err) => return Err(err),
            }
            wrote = true;
        }
        if wrote { io.flush() } else { Ok(()) }
    }

    /// Shuts the transport's write side once the core says the connection is over (and
    /// everything queued is written).
    fn shutdown_if_due(&mut self) {
        if self.conn.wants_transport_close() && !self.shutdown_done && self.chunk.is_none() {
            self.shutdown_done = true;
            if let Some(io) = self.io.as_mut() {
                // The peer may have gone already; the connection ends either way.
                let _ = io.shutdown_write();
            }
        }
    }
}

impl Drop for WebSocket {
    fn drop(&mut self) {
        if !self.terminated && !self.io_dead {
            // Nobody will read this connection again: tell the peer (1001), without waiting
            // for its answer. Already closing: the first close frame stands.
            let _ = self.conn.close(CloseFrame::lossy(CloseCode::GOING_AWAY, ""));
            if let Some(io) = self.io.as_mut() {
                let limited =
                    self.write_timeout.map_or(DROP_WRITE_LIMIT, |t| t.min(DROP_WRITE_LIMIT));
                let _ = io.set_write_timeout(Some(limited));
            }
            if self.write_out().is_ok()
                && let Some(io) = self.io.as_mut()
            {
                let _ = io.shutdown_write();
            }
        }
        let (Some(io), Some(window)) = (self.io.take(), self.drain_for) else { return };
        if self.read_eof || self.io_dead {
            return;
        }
        // A peer still sending when our close frame went out (a message over the size limit,
        // say) would get a reset if we closed with its bytes unread, and a reset can destroy
        // our close frame before the peer reads it. A short-lived thread reads and discards.
        let deadline = Instant::now() + window;
        let _ = std::thread::Builder::new()
            .name("palisade-drain".to_owned())
            .spawn(move || drain(io, deadline));
    }
}

/// Reads and discards until the peer closes, [`DRAIN_BYTES`] have gone by, or `deadline`,
/// then drops (closes) the transport.
fn drain(mut io: Box<dyn Transport>, deadline: Instant) {
    let mut buf = [0u8; 8192];
    let mut left = DRAIN_BYTES;
    while left > 0 {
        let now = Instant::now();
        if now >= deadline || io.set_read_timeout(Some((deadline - now).max(MIN_WAIT))).is_err() {
            break;
        }
        match io.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n as u64),
        }
    }
}

impl Iterator for WebSocket {
    type Item = Result<Message, Error>;

    /// As [`WebSocket::incoming`]'s iterator.
    fn next(&mut self) -> Option<Self::Item> {
        self.next_message()
    }
}

/// The messages of a [`WebSocket`] ([`WebSocket::incoming`]): ends after a normal close,
/// yields the error once after any other end.
#[derive(Debug)]
pub struct Incoming<'a> {
    socket: &'a mut WebSocket,
}

impl Iterator for Incoming<'_> {
    type Item = Result<Message, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.socket.next_message()
    }
}
