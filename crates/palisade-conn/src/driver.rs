//! What drives a connection's I/O: one sans-I/O [`Connection`] and one transport behind a
//! short-lived lock, fed and drained by whichever task is receiving, sending or driving.
//!
//! Nothing is kept in the futures themselves: bytes read go straight into the protocol core's
//! buffer, and a decoded message is returned in the same poll that decoded it (or parked in a
//! short queue when the connection is driven while nobody receives). Dropping a `recv()`
//! future at any `.await` therefore loses nothing (it is cancel-safe).
//!
//! The handles users hold (`WebSocket`, the halves, `Sender`) live in `socket.rs`; they call
//! into [`Shared`] and hold no state of their own.
//!
//! Writes are gathered and corked. Every chunk the core has queued goes to one vectored write
//! ([`poll_write_out`]). A send from a handler that is driven (the server's case) and has more
//! input waiting — parked messages, or bytes not yet decoded — leaves its frame queued: the
//! handler's next `recv` returns the next message without writing, and once the input is
//! drained the I/O loop writes every reply in one syscall before it reads or waits. Nothing
//! waits on a timer: if the handler waits on anything else, the drive around it writes the
//! queue in the same poll, and with one message in flight the input is empty when the reply
//! is sent, so it is written at once ([`Shared::corks`]).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use palisade_error::{
    CloseCode, CloseFrame, ConcurrencyError, ConnectionClosed, Error, Operation, PolicyKind,
    PolicyViolation, State,
};
use palisade_proto::Role;
use palisade_proto::connection::{Connection, Event};
use palisade_proto::message::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::config::{Config, RateLimitAction};
use crate::rate::Limiter;
use crate::socket::{ConnectionId, TrySendError};

/// Reads are sized by the frame in progress, within these bounds.
const MIN_READ: usize = 4096;
const MAX_READ: usize = 256 * 1024;
/// Reads of small frames grow up to this while each read fills the buffer (a pipelining peer).
const BURST_READ: usize = 64 * 1024;
/// How many polls of a receiver in a row may hand over a message already in the input without
/// reading the clock, after a poll that did (see [`Shared::poll_io`]).
const CLOCK_REUSE: u8 = 16;
/// How long a connection keeps its empty read and write buffers after it last read something.
const RELEASE_AFTER: Duration = Duration::from_secs(1);
/// After we fail a connection, how many more bytes we read and discard, at most, while the
/// peer finishes what it was sending and reads our close frame (see `Inner::drain_for`).
const DRAIN_BYTES: u64 = 64 << 20;
/// At most this many chunks go to one vectored write (Linux takes 1024; a few dozen already
/// make the syscall's cost per message small)...
const GATHER_SLICES: usize = 64;
/// ... and no more chunks are gathered once this many bytes are (a large write is cut short by
/// the socket buffer anyway).
const GATHER_BYTES: usize = 64 * 1024;

/// The byte stream under a connection: anything tokio can read and write, boxed so that no
/// handle names its type (a registry holds server, client and mounted connections alike).
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

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

/// The tasks waiting on one connection, by what they wait for.
///
/// The transport keeps one waker for writability, so [`Shared::write_waker`] (built on this)
/// wakes every task that may be waiting for it: the receiver and the driver (either may be
/// flushing pongs and close replies) and every writer (a sender in its turn, and `flush`,
/// `ping`, `close` or the `Sink`, which do not take the turn). Reads wake the task that
/// polled last directly. Besides, the driver waits for a receiver in another task to stop,
/// and a receiver between two polls of the `Stream` view waits for what the driver parks.
#[derive(Debug, Default)]
struct Wakers {
    slots: Mutex<Slots>,
    /// The driver slot is set: a receiver that stops must wake it.
    driver_waiting: AtomicBool,
    /// The driving task (its waker's data pointer), to tell it from the receiver's.
    driver_task: AtomicUsize,
}

#[derive(Debug, Default)]
struct Slots {
    reader: Option<Waker>,
    driver: Option<Waker>,
    /// Every task waiting to flush; a list, because several may wait at once (a sender in its
    /// turn, and a ping or a flush that does not take it), and a waker lost is a task stuck.
    writers: Vec<Waker>,
}

impl Wakers {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register_reader(&self, waker: &Waker) {
        let mut slots = self.slots();
        match &slots.reader {
            Some(w) if w.will_wake(waker) => {}
            _ => slots.reader = Some(waker.clone()),
        }
    }

    fn register_writer(&self, waker: &Waker) {
        let mut slots = self.slots();
        if !slots.writers.iter().any(|w| w.will_wake(waker)) {
            slots.writers.push(waker.clone());
        }
    }

    /// Registers the driving task, to be woken when a receiver in another task stops (it then
    /// takes over reading, and its waker goes back to the transport) or the transport takes
    /// more bytes.
    fn register_driver(&self, waker: &Waker) {
        let mut slots = self.slots();
        match &slots.driver {
            Some(w) if w.will_wake(waker) => {}
            _ => slots.driver = Some(waker.clone()),
        }
        self.driver_task.store(task_of(waker), Ordering::Relaxed);
        // Set under the lock and before the driver looks at the turn: a receiver that stops
        // after that look finds it set (`Shared::poll_drive`).
        self.driver_waiting.store(true, Ordering::SeqCst);
    }

    /// Wakes the driver once a receiver in `receiver_task` has stopped, unless the driver is
    /// that same task (a handler inside `recv`, the common case): it goes on by itself, and
    /// waking it for nothing after every message would cost a poll each.
    fn wake_driver_after(&self, receiver_task: usize) {
        if self.driver_task.load(Ordering::Relaxed) == receiver_task {
            return;
        }
        if self.driver_waiting.swap(false, Ordering::SeqCst) {
            let waker = self.slots().driver.take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Wakes the last receiver, unless it is `current` (the task parking the message).
    fn wake_reader(&self, current: usize) {
        let waker = {
            let mut slots = self.slots();
            match &slots.reader {
                Some(w) if task_of(w) != current => slots.reader.take(),
                _ => None,
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let (reader, driver, writers) = {
            let mut slots = self.slots();
            (slots.reader.take(), slots.driver.take(), std::mem::take(&mut slots.writers))
        };
        if driver.is_some() {
            self.driver_waiting.store(false, Ordering::SeqCst);
        }
        for waker in reader.into_iter().chain(driver).chain(writers) {
            waker.wake();
        }
    }
}

/// Who has the receiving turn ([`Shared::turn`]).
const IDLE: u8 = 0;
/// A task receives (`recv`, `next`, or one poll of the `Stream` view).
const RECEIVING: u8 = 1;
/// The driver is inside one poll of the I/O loop; a receiver may take the turn from it.
const DRIVING: u8 = 2;

/// Everything behind the lock. Boxed inside [`Shared`], so that a weak handle, which keeps
/// only `Shared`'s allocation, keeps none of this once the connection is gone.
struct Inner {
    conn: Connection,
    io: Box<dyn Io>,
    /// Chunks taken from the core for the next vectored write, oldest first (the first may be
    /// the rest of one the transport took only part of); see [`poll_write_out`].
    unsent: VecDeque<Bytes>,
    /// Their length in bytes.
    unsent_bytes: usize,
    /// How much to read at once, at least: [`MIN_READ`], doubled after each read that filled
    /// the buffer, up to [`BURST_READ`]; back to the minimum when the buffers are given back.
    read_size: usize,
    /// Messages decoded while the connection was driven with nobody receiving, oldest first;
    /// `recv` takes them before reading on.
    parked: VecDeque<Message>,
    parked_bytes: usize,
    read_eof: bool,
    shutdown_done: bool,
    /// The transport failed: nothing more can be read or written.
    io_dead: bool,
    /// The connection is over; every later call reports the closure.
    terminated: bool,
    /// The error to report first once the connection is over (then the closure, every time).
    pending_error: Option<Error>,
    /// How long to keep trying to flush a final close frame (and to drain the peer's input
    /// after a failure).
    linger_until: Option<Instant>,
    /// Set when we failed the connection on the peer's input: how long to go on draining it
    /// once the connection is let go. A peer that is still sending when our close frame goes
    /// out (a message over the size limit, say) would get a reset if we closed TCP with its
    /// bytes unread, and a reset can destroy our close frame before the peer reads it: it
    /// would never learn why (1009, 1007 …). So the transport is handed to a task that reads
    /// and discards until the peer closes, or [`DRAIN_BYTES`], or this long ([`drain`]).
    drain_for: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// How many more polls of a receiver may take a message from the input without reading
    /// the clock ([`CLOCK_REUSE`] after a poll that read it and handed over a message).
    clock_reuse: u8,
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

impl Inner {
    /// Lets the transport go: at once, or, after a failure on the peer's input, to a task that
    /// drains what the peer still sends ([`Inner::drain_for`]).
    fn release_io(&mut self) {
        let io = std::mem::replace(&mut self.io, Box::new(tokio::io::empty()));
        let Some(window) = self.drain_for.take() else { return };
        if self.read_eof {
            return;
        }
        // Outside a runtime (a blocking caller dropping its last handle) there is nothing to
        // drain with: the transport closes at once.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(io, Instant::now() + window));
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.release_io();
    }
}

/// Reads and discards until the peer closes, [`DRAIN_BYTES`] have gone by, or `deadline`, then
/// closes the transport. Holds the transport and an 8 KiB buffer, nothing else.
async fn drain(mut io: Box<dyn Io>, deadline: Instant) {
    use tokio::io::AsyncReadExt as _;
    let _ = tokio::time::timeout_at(deadline, async {
        let mut buf = [0u8; 8192];
        let mut left = DRAIN_BYTES;
        while left > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n as u64),
            }
        }
    })
    .await;
    tracing::debug!("failed connection drained");
}

/// The state every handle of one connection shares.
pub(crate) struct Shared {
    id: ConnectionId,
    inner: Mutex<Box<Inner>>,
    /// Who reads: [`IDLE`], [`RECEIVING`] (a second receiver gets a concurrency error) or
    /// [`DRIVING`].
    turn: AtomicU8,
    /// The handles that own the connection (a `WebSocket`, or its two halves): when the last
    /// goes, the connection ends ([`Shared::abandon`]) unless it is supervised.
    owners: AtomicUsize,
    /// Someone else closes the connection when its owners are gone (a server, after the
    /// handler returns, with the code its return calls for).
    supervised: AtomicBool,
    /// Mirrors `Inner::terminated`, readable without the lock.
    ended: AtomicBool,
    /// The task receiving now (its waker's data pointer), so that a driver in the same task
    /// knows it has nothing to do without taking a lock.
    receiver_task: AtomicUsize,
    /// The task whose [`drive`](crate::socket::drive) future was polled last and is not
    /// dropped (0 when none): a reply sent from inside it may be corked ([`Shared::corks`]),
    /// since that future writes it out as soon as the work inside waits on anything else.
    drive_task: AtomicUsize,
    /// Woken when the connection ends ([`Shared::closed`]).
    ended_notify: Notify,
    /// Senders take turns in the order they asked (tokio's mutex is fair).
    write_lock: tokio::sync::Mutex<()>,
    wakers: Arc<Wakers>,
    write_waker: Waker,
    config: Arc<Config>,
}

/// Whether a poll of the I/O loop returns messages or parks them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A receiver: return the first message.
    Recv,
    /// Nobody receives: park messages (up to the limit), answer pings, run timers, notice the
    /// end.
    Drive,
}

/// Gives the receiving turn back when a receive ends or is cancelled, and wakes the task that
/// drives the connection in the background (if it is another task), so that it takes over.
struct ReadingGuard<'a>(&'a Shared);

impl Drop for ReadingGuard<'_> {
    fn drop(&mut self) {
        self.0.end_receiving();
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        id: ConnectionId,
        io: Box<dyn Io>,
        mut conn: Connection,
        config: Arc<Config>,
        leftover: &[u8],
    ) -> Self {
        conn.handle_bytes(leftover);
        let limiter = config.rate_limit.map(|l| Limiter::new(l, Instant::now().into_std()));
        let wakers = Arc::new(Wakers::default());
        let write_waker = Waker::from(wakers.clone());
        let inner = Inner {
            conn,
            io,
            unsent: VecDeque::new(),
            unsent_bytes: 0,
            read_size: MIN_READ,
            parked: VecDeque::new(),
            parked_bytes: 0,
            read_eof: false,
            shutdown_done: false,
            io_dead: false,
            terminated: false,
            pending_error: None,
            linger_until: None,
            drain_for: None,
            sleep: None,
            clock_reuse: 0,
            last_read: None,
            limiter,
            stats: Stats::default(),
            stream_done: false,
            sink_closing: false,
        };
        Shared {
            id,
            inner: Mutex::new(Box::new(inner)),
            turn: AtomicU8::new(IDLE),
            owners: AtomicUsize::new(1),
            supervised: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            receiver_task: AtomicUsize::new(0),
            drive_task: AtomicUsize::new(0),
            ended_notify: Notify::new(),
            write_lock: tokio::sync::Mutex::new(()),
            wakers,
            write_waker,
            config,
        }
    }

    pub(crate) fn id(&self) -> ConnectionId {
        self.id
    }

    fn lock(&self) -> MutexGuard<'_, Box<Inner>> {
        // A panic while the lock was held cannot leave the protocol core half-updated in a way
        // that matters more than losing the connection, so keep going with the data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ----- What the handles read -----

    pub(crate) fn stats(&self) -> Stats {
        self.lock().stats
    }

    pub(crate) fn state(&self) -> State {
        self.lock().conn.state()
    }

    pub(crate) fn last_rtt(&self) -> Option<Duration> {
        self.lock().conn.last_rtt()
    }

    pub(crate) fn close_info(&self) -> ConnectionClosed {
        self.lock().conn.close_info()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Resolves once the connection is over, with the close frames exchanged.
    pub(crate) async fn closed(&self) -> ConnectionClosed {
        loop {
            let notified = self.ended_notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so an end between the two is not missed.
            notified.as_mut().enable();
            if self.is_closed() {
                return self.close_info();
            }
            notified.await;
        }
    }

    fn mark_terminated(&self, inner: &mut Inner) {
        inner.terminated = true;
        if !self.ended.swap(true, Ordering::AcqRel) {
            self.ended_notify.notify_waiters();
            // Senders waiting for the transport learn of the end now, not at their timeout.
            Wake::wake_by_ref(&self.wakers);
        }
    }

    // ----- Receiving and driving -----

    /// Takes the receiving turn: from nobody, or from the driver (which bails out of its poll
    /// when it sees this, under the lock, so that the receiver's waker is the transport's).
    /// `false` while another task receives.
    fn start_receiving(&self) -> bool {
        self.turn.swap(RECEIVING, Ordering::SeqCst) != RECEIVING
    }

    fn end_receiving(&self) {
        self.turn.store(IDLE, Ordering::SeqCst);
        self.wakers.wake_driver_after(self.receiver_task.load(Ordering::Relaxed));
    }

    pub(crate) async fn recv(&self) -> Result<Message, Error> {
        if !self.start_receiving() {
            return Err(ConcurrencyError { operation: Operation::Recv }.into());
        }
        let _guard = ReadingGuard(self);
        poll_fn(|cx| self.poll_io(cx, Mode::Recv)).await
    }

    /// Like `recv`, but `None` after a normal close (1000/1001), and the error once (then
    /// `None`) after any other end.
    pub(crate) async fn next(&self) -> Option<Result<Message, Error>> {
        if !self.start_receiving() {
            return Some(Err(ConcurrencyError { operation: Operation::Recv }.into()));
        }
        // Held across polls, as `recv` does, so that the driver stays out of the way.
        let _guard = ReadingGuard(self);
        poll_fn(|cx| self.poll_next_turn(cx)).await
    }

    /// Services the connection while nobody receives: answers pings, sends keepalive pings,
    /// runs the timers, notices the peer's close or its silence, and parks the messages that
    /// arrive (reading stops while the park queue is full). Never completes before the end;
    /// `Ready` once the connection is over. Does nothing while a task receives.
    pub(crate) fn poll_drive(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_closed() {
            return Poll::Ready(());
        }
        let me = task_of(cx.waker());
        if self.turn.load(Ordering::SeqCst) == RECEIVING
            && self.receiver_task.load(Ordering::Relaxed) == me
        {
            // A receiver in this very task (a handler inside `recv`): it drives, and this task
            // goes on by itself when it stops.
            return Poll::Pending;
        }
        // Registered before looking at the turn: a receiver in another task that stops after
        // the look wakes this task (`Wakers::wake_driver_after`). It stays registered after a
        // poll of its own too: a receiver may start and stop before the next one.
        self.wakers.register_driver(cx.waker());
        if self.turn.compare_exchange(IDLE, DRIVING, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return Poll::Pending;
        }
        let polled = self.poll_io(cx, Mode::Drive);
        // A receiver may have taken the turn meanwhile: then it keeps it.
        let _ = self.turn.compare_exchange(DRIVING, IDLE, Ordering::SeqCst, Ordering::SeqCst);
        match polled {
            Poll::Ready(_) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The I/O loop: handles timers, decodes events, writes what is queued, reads.
    fn poll_io(&self, cx: &mut Context<'_>, mode: Mode) -> Poll<Result<Message, Error>> {
        let mut guard = self.lock();
        let inner = &mut **guard;
        let me = task_of(cx.waker());
        match mode {
            Mode::Recv => {
                self.receiver_task.store(me, Ordering::Relaxed);
                if let Some(message) = inner.parked.pop_front() {
                    inner.parked_bytes -= message.len();
                    return Poll::Ready(Ok(message));
                }
                self.wakers.register_reader(cx.waker());
            }
            // A receiver took the turn before this poll got the lock: it polls the transport
            // with its own waker (before or after this), and the driver must not replace it.
            Mode::Drive if self.turn.load(Ordering::SeqCst) != DRIVING => return Poll::Pending,
            Mode::Drive => {}
        }
        // A receiver taking the messages one read brought, one poll each, hands the next one
        // over without reading the clock or telling the core the time, for up to
        // [`CLOCK_REUSE`] polls after one that did: one read of the clock per message was 5%
        // of a pipelined echo's server time. The core's time is then that of the poll that
        // read the bytes it decodes, which is when they arrived. Timers that came due meanwhile
        // fire at the next full poll, at most that many messages later (or as soon as the
        // input is used up). Not with a rate limit, which judges each message by the clock;
        // and whatever needs the time from outside a poll (a close, a send against an idle
        // limit) reads it itself ([`close_core`], [`queue_message`]).
        let mut early = None;
        if mode == Mode::Recv && inner.clock_reuse > 0 {
            inner.clock_reuse -= 1;
            if !inner.terminated && inner.limiter.is_none() {
                match inner.conn.poll_event() {
                    Some(Ok(Event::Message(message))) => {
                        inner.stats.messages_in += 1;
                        return Poll::Ready(Ok(message));
                    }
                    // Anything else is handled below, after the core has been told the time.
                    other => early = other,
                }
            }
        }
        inner.clock_reuse = 0;
        let mut wcx = Context::from_waker(&self.write_waker);
        // The clock is read once per poll (and again when a timer fires): reading it on every
        // pass of the loop showed up in profiles of small-message echo.
        let mut now = Instant::now();
        self.tick(inner, mode, now);
        loop {
            if inner.terminated {
                return Poll::Ready(Err(self.take_end(inner, mode)));
            }
            let park_full = self.park_full(inner);
            // While the connection is open, a full park queue holds reading back: the peer is
            // held by TCP, as while a receiver has not taken its message yet. Once it closes,
            // messages past the queue are dropped instead, so that the close handshake goes on
            // to the peer's close frame.
            let hold = mode == Mode::Drive && park_full && inner.conn.state() == State::Open;
            if !hold {
                match early.take().or_else(|| inner.conn.poll_event()) {
                    Some(Ok(Event::Message(message))) => {
                        inner.stats.messages_in += 1;
                        match self.admit(inner, &message, now) {
                            Ok(()) if mode == Mode::Recv => {
                                // The next poll will likely find the next message of this read.
                                inner.clock_reuse = CLOCK_REUSE;
                                return Poll::Ready(Ok(message));
                            }
                            Ok(()) if park_full => {
                                tracing::debug!("message dropped: closing, and nobody receives");
                                continue;
                            }
                            Ok(()) => {
                                inner.parked_bytes += message.len();
                                inner.parked.push_back(message);
                                // A receiver between two polls of the `Stream` view, in
                                // another task, waits for exactly this.
                                self.wakers.wake_reader(me);
                                continue;
                            }
                            // Dropped: report it to a receiver; the connection stays open.
                            Err(Some(err)) if mode == Mode::Recv => return Poll::Ready(Err(err)),
                            Err(Some(_)) => continue,
                            // Closing: the error is reported once the close frame is out.
                            Err(None) => continue,
                        }
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => {
                        tracing::debug!(error = %err, "connection failed");
                        self.fail_later(inner, err, now);
                        continue;
                    }
                    None => {}
                }
            }
            match poll_write_out(inner, &mut wcx) {
                Poll::Ready(Ok(())) => poll_shutdown_if_due(inner, &mut wcx),
                Poll::Ready(Err(err)) => {
                    self.io_failed_later(inner, err);
                    continue;
                }
                Poll::Pending => {}
            }
            let closed = inner.conn.state() == State::Closed;
            let lingered = inner.linger_until.is_some_and(|t| now >= t);
            if closed && (inner.shutdown_done || inner.io_dead || lingered) {
                self.mark_terminated(inner);
                continue;
            }
            if !hold && !inner.read_eof && !inner.io_dead {
                let hint = inner.conn.read_hint().clamp(inner.read_size, MAX_READ);
                let low = inner.read_size / 4;
                let buf = inner.conn.read_buffer();
                if buf.capacity() - buf.len() < low {
                    buf.reserve(hint);
                }
                let room = buf.capacity() - buf.len();
                match tokio_util::io::poll_read_buf(Pin::new(&mut inner.io), cx, buf) {
                    Poll::Ready(Ok(0)) => {
                        inner.read_eof = true;
                        inner.conn.handle_eof();
                        continue;
                    }
                    Poll::Ready(Ok(n)) => {
                        inner.stats.bytes_in += n as u64;
                        inner.last_read = Some(now);
                        // A read that filled the buffer says the peer sends faster than we
                        // read: read more at once, so that a burst of small messages is
                        // handled (and its replies corked into one write) per read, not per
                        // few kilobytes.
                        if n == room {
                            inner.read_size = (inner.read_size * 2).min(BURST_READ);
                        }
                        continue;
                    }
                    Poll::Ready(Err(err)) => {
                        self.io_failed_later(inner, err);
                        continue;
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
                    _ => {
                        inner.conn.shrink_buffers();
                        inner.read_size = MIN_READ;
                        // A burst of large frames may have grown the gather list.
                        if inner.unsent.is_empty() && inner.unsent.capacity() > 8 {
                            inner.unsent = VecDeque::new();
                        }
                    }
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
                    self.tick(inner, mode, now);
                    continue;
                }
            }
            return Poll::Pending;
        }
    }

    /// Whether the park queue is full (driving stops reading, or drops, until a receiver
    /// takes from it).
    fn park_full(&self, inner: &Inner) -> bool {
        inner.parked.len() >= self.config.max_queue.max(1)
            || inner.parked_bytes >= self.config.protocol.max_message_size
    }

    /// Tells the core the time. While a full park queue holds reading back, the deadlines
    /// that wait on the peer's data start again (the peer is not at fault: its pong may be
    /// unread in the transport).
    fn tick(&self, inner: &mut Inner, mode: Mode, now: Instant) {
        if mode == Mode::Drive && self.park_full(inner) {
            inner.conn.hold_input(now.into_std());
        }
        inner.conn.handle_timeout(now.into_std());
    }

    /// What a receiver learns once the connection is over: the error that ended it the first
    /// time (a driver leaves it for the receiver), the closure after that.
    fn take_end(&self, inner: &mut Inner, mode: Mode) -> Error {
        match mode {
            Mode::Recv => inner.pending_error.take().unwrap_or_else(|| inner.conn.closed_error()),
            Mode::Drive => inner.conn.closed_error(),
        }
    }

    /// Applies the rate limit to a received message: `Err(Some(_))` to report a dropped message,
    /// `Err(None)` when the connection is closing and the error waits for the close frame.
    fn admit(
        &self,
        inner: &mut Inner,
        message: &Message,
        now: Instant,
    ) -> Result<(), Option<Error>> {
        let Some(limiter) = inner.limiter.as_mut() else { return Ok(()) };
        if limiter.admit(message.len(), now.into_std()) {
            return Ok(());
        }
        match self.config.rate_limit.map(|l| l.action) {
            Some(RateLimitAction::Close(code)) => {
                // One line per connection: the messages of the same read that follow are over
                // the limit too, and each comes through here.
                if inner.pending_error.is_none() {
                    tracing::info!(code = code.0, "rate limit exceeded: closing");
                }
                // Already closing: the first close frame stands.
                let _ = close_core(inner, CloseFrame::lossy(code, "rate limit exceeded"));
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

    /// Keeps `err` to report once the close frame the core queued for it is written (or the
    /// close timeout passes).
    fn fail_later(&self, inner: &mut Inner, err: Error, now: Instant) {
        // RFC 6455 §7.1.1: the close frame is owed, but not forever. A failed connection whose
        // close frame cannot be written ends after the close timeout, or 10 s without one: a
        // failure never waits on the peer indefinitely.
        let linger = self.config.protocol.close_timeout.unwrap_or(Duration::from_secs(10));
        inner.linger_until = Some(now + linger);
        // A deadline that passed says the peer is silent or gone: nothing to drain.
        if !matches!(err, Error::Timeout(_)) {
            inner.drain_for = Some(linger);
        }
        if inner.pending_error.is_none() {
            inner.pending_error = Some(err);
        }
    }

    /// The transport failed under the I/O loop: the end is reported by the loop.
    fn io_failed_later(&self, inner: &mut Inner, err: std::io::Error) {
        tracing::debug!(error = %err, "transport failed");
        inner.io_dead = true;
        inner.conn.handle_eof();
        while inner.conn.poll_event().is_some() {}
        if inner.pending_error.is_none() {
            inner.pending_error = Some(Error::io(err));
        }
        self.mark_terminated(inner);
    }

    /// The transport failed under a sender: the sender gets the error now.
    fn io_failed(&self, inner: &mut Inner, err: std::io::Error) -> Error {
        self.io_failed_later(inner, err);
        inner.pending_error.take().unwrap_or_else(|| inner.conn.closed_error())
    }

    // ----- Sending -----

    /// Flushes queued bytes until at most `target` remain. Used by senders.
    pub(crate) fn poll_flush_writer(
        &self,
        cx: &mut Context<'_>,
        target: usize,
    ) -> Poll<Result<(), Error>> {
        let mut guard = self.lock();
        self.poll_flush_locked(&mut guard, cx, target)
    }

    /// [`Shared::poll_flush_writer`] with the lock held.
    fn poll_flush_locked(
        &self,
        inner: &mut Inner,
        cx: &mut Context<'_>,
        target: usize,
    ) -> Poll<Result<(), Error>> {
        if inner.io_dead || inner.terminated {
            return Poll::Ready(Err(inner.conn.closed_error()));
        }
        self.wakers.register_writer(cx.waker());
        let mut wcx = Context::from_waker(&self.write_waker);
        match poll_write_out(inner, &mut wcx) {
            Poll::Ready(Ok(())) => {
                poll_shutdown_if_due(inner, &mut wcx);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(self.io_failed(inner, err))),
            Poll::Pending => {
                let queued = inner.conn.pending_transmit() + inner.unsent_bytes;
                // Below the low-water mark a waiting sender may go on; the rest is written by
                // later operations.
                if target > 0 && queued <= target { Poll::Ready(Ok(())) } else { Poll::Pending }
            }
        }
    }

    /// Sends after any send in progress: every sender waits its turn, in the order it asked,
    /// and frames never interleave.
    pub(crate) async fn send(&self, message: Message, compress: bool) -> Result<(), Error> {
        // `try_lock` first: the turn is free almost always, and taking it so costs one atomic
        // operation where the queued `lock` builds and drops a waiter (measured in the echo
        // benchmark). It cannot jump the queue: tokio hands a released permit to the first
        // waiter, never back to the pool, while anyone waits.
        let _turn = match self.write_lock.try_lock() {
            Ok(turn) => turn,
            Err(_) => self.write_lock.lock().await,
        };
        self.send_locked(message, compress).await
    }

    /// Sends with the write turn held: waits below the high-water mark, queues, flushes.
    ///
    /// Below the high-water mark (almost always) the check, the queueing and the first flush
    /// (or the cork) take the lock once ([`Shared::poll_send_below`]): taking it three times
    /// per message showed in callgrind profiles of the pipelined echo.
    async fn send_locked(&self, message: Message, compress: bool) -> Result<(), Error> {
        let mut message = Some(message);
        let first =
            poll_fn(|cx| Poll::Ready(self.poll_send_below(cx, &mut message, compress))).await;
        // The rare paths are boxed, so that every send's future stays small.
        match (message, first) {
            (None, Poll::Ready(result)) => result,
            (None, Poll::Pending) => Box::pin(self.wait_flushed(0)).await,
            (Some(message), _) => Box::pin(self.send_over_high(message, compress)).await,
        }
    }

    /// A send that found the write buffer above its high-water mark: the message waits,
    /// unqueued, for the low one, then is queued and flushed.
    async fn send_over_high(&self, message: Message, compress: bool) -> Result<(), Error> {
        self.flush_to(self.config.write_low_water.max(1)).await?;
        self.queue(message, compress)?;
        match poll_fn(|cx| Poll::Ready(self.poll_flush_reply(cx))).await {
            Poll::Ready(result) => result,
            Poll::Pending => self.wait_flushed(0).await,
        }
    }

    /// The first step of a send under one lock: unless the write buffer is above its
    /// high-water mark (then `Pending`, with `message` left in place), queues `message` and
    /// flushes as [`Shared::poll_flush_reply`] does (`Pending` from there with `message`
    /// taken: the transport is full).
    fn poll_send_below(
        &self,
        cx: &mut Context<'_>,
        message: &mut Option<Message>,
        compress: bool,
    ) -> Poll<Result<(), Error>> {
        let mut guard = self.lock();
        let inner = &mut **guard;
        if inner.conn.pending_transmit() > self.config.write_high_water {
            return Poll::Pending;
        }
        let Some(message) = message.take() else { return Poll::Ready(Ok(())) };
        if inner.terminated || inner.io_dead {
            return Poll::Ready(Err(inner.conn.closed_error()));
        }
        if let Err(err) = queue_message(inner, &message, compress) {
            return Poll::Ready(Err(err));
        }
        if self.corks(inner, task_of(cx.waker())) {
            return Poll::Ready(Ok(()));
        }
        self.poll_flush_locked(inner, cx, 0)
    }

    /// The first flush of a send: none while the reply is corked ([`Shared::corks`]), else as
    /// [`Shared::poll_flush_writer`] to empty.
    fn poll_flush_reply(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut guard = self.lock();
        let inner = &mut **guard;
        if self.corks(inner, task_of(cx.waker())) {
            return Poll::Ready(Ok(()));
        }
        self.poll_flush_locked(inner, cx, 0)
    }

    /// Whether a send from `task` may leave its frame queued, to go out with the replies to
    /// the messages still in the input, in one write: the task received last and is driven
    /// (so the next `recv`, or the drive as soon as the task waits on anything else, writes
    /// everything queued before it waits: nothing is held for a timer, and one message in
    /// flight is written at once), the input holds more (parked messages or unread bytes),
    /// and less than [`GATHER_BYTES`] (and the high-water mark) is queued.
    fn corks(&self, inner: &mut Inner, task: usize) -> bool {
        self.drive_task.load(Ordering::Relaxed) == task
            && self.receiver_task.load(Ordering::Relaxed) == task
            && self.turn.load(Ordering::SeqCst) != RECEIVING
            && !inner.terminated
            && !inner.io_dead
            && (!inner.parked.is_empty() || !inner.conn.read_buffer().is_empty())
            && inner.conn.pending_transmit() + inner.unsent_bytes
                < GATHER_BYTES.min(self.config.write_high_water)
    }

    /// A drive future in `task` is being polled (see [`Shared::drive_task`]).
    pub(crate) fn drive_polled(&self, task: usize) {
        self.drive_task.store(task, Ordering::Relaxed);
    }

    /// The drive future of `task` is gone.
    pub(crate) fn drive_dropped(&self, task: usize) {
        let _ = self.drive_task.compare_exchange(task, 0, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Hands a message to the core, counted; the closure error if the connection cannot send.
    fn queue(&self, message: Message, compress: bool) -> Result<(), Error> {
        let mut inner = self.lock();
        if inner.terminated || inner.io_dead {
            return Err(inner.conn.closed_error());
        }
        queue_message(&mut inner, &message, compress)
    }

    pub(crate) fn try_send(&self, message: Message) -> Result<(), TrySendError> {
        let mut guard = self.lock();
        let inner = &mut **guard;
        self.try_queue(inner, message)?;
        // Write what the transport takes now; the rest goes out with the next operation.
        let mut wcx = Context::from_waker(&self.write_waker);
        if let Poll::Ready(Err(err)) = poll_write_out(inner, &mut wcx) {
            return Err(TrySendError::Closed(self.io_failed(inner, err)));
        }
        Ok(())
    }

    /// Queues a message without writing anything: the caller flushes (or sends) after a
    /// batch, which then leaves in one gathered write.
    pub(crate) fn feed(&self, message: Message) -> Result<(), TrySendError> {
        self.try_queue(&mut self.lock(), message)
    }

    /// Feeds from `messages`, under one lock, while the write buffer is below its high-water
    /// mark; `Ok(true)` once `messages` is exhausted, `Ok(false)` when it stopped for room.
    pub(crate) fn feed_from(
        &self,
        messages: &mut dyn Iterator<Item = Message>,
    ) -> Result<bool, Error> {
        let mut guard = self.lock();
        let inner = &mut **guard;
        if inner.terminated || inner.io_dead {
            return Err(inner.conn.closed_error());
        }
        while inner.conn.pending_transmit() <= self.config.write_high_water {
            let Some(message) = messages.next() else { return Ok(true) };
            queue_message(inner, &message, true)?;
        }
        Ok(false)
    }

    /// One message into the core's output, unless the connection is over or the write
    /// buffer is above its high-water mark (then the message comes back).
    fn try_queue(&self, inner: &mut Inner, message: Message) -> Result<(), TrySendError> {
        if inner.terminated || inner.io_dead {
            return Err(TrySendError::Closed(inner.conn.closed_error()));
        }
        if inner.conn.pending_transmit() > self.config.write_high_water {
            return Err(TrySendError::Full(message));
        }
        queue_message(inner, &message, true).map_err(TrySendError::Closed)
    }

    pub(crate) async fn flush(&self) -> Result<(), Error> {
        poll_fn(|cx| self.poll_flush_writer(cx, 0)).await
    }

    pub(crate) async fn ping(&self, payload: &[u8]) -> Result<(), Error> {
        self.control(|conn| conn.ping(payload)).await
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

    // ----- Closing -----

    /// Starts the close handshake: queues our close frame (unless one was sent already) and
    /// writes it. `Ok` when the connection was already closing or closed.
    pub(crate) async fn start_close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let frame = CloseFrame::lossy(code, reason);
        let already = {
            let mut inner = self.lock();
            if inner.terminated || inner.io_dead {
                return Ok(());
            }
            close_core(&mut inner, frame).is_err()
        };
        if already {
            return Ok(());
        }
        self.flush_to(0).await
    }

    /// Starts the close handshake and waits for its end, within the close timeout. It never
    /// takes the receiving turn: a task that receives (in any task) goes on getting the
    /// messages that arrive before the peer's close frame, then the closure; while none does,
    /// this drives the connection (parking what arrives, and dropping what the park queue
    /// cannot hold). `Ok` once both close frames have been exchanged, whatever the codes.
    pub(crate) async fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let frame = CloseFrame::lossy(code, reason);
        {
            let mut inner = self.lock();
            if !inner.terminated {
                // Already closing: just wait for the end below.
                let _ = close_core(&mut inner, frame);
            }
        }
        let flushed = self.flush_to(0).await;
        let ended = crate::socket::drive(self, self.closed());
        let info = match self.config.protocol.close_timeout {
            Some(limit) => match tokio::time::timeout(limit, ended).await {
                Ok(info) => info,
                Err(_) => {
                    flushed?;
                    return Err(Error::timeout(palisade_error::TimeoutPhase::Close));
                }
            },
            None => ended.await,
        };
        // Both close frames exchanged, whatever the code: the handshake we started is
        // complete, which is what closing asks for.
        if info.received_then_sent.is_some() {
            return Ok(());
        }
        let mut inner = self.lock();
        Err(inner.pending_error.take().unwrap_or_else(|| inner.conn.closed_error()))
    }

    // ----- Owners -----

    /// One more owning handle (a `WebSocket` split into two halves).
    pub(crate) fn add_owner(&self) {
        self.owners.fetch_add(1, Ordering::Relaxed);
    }

    /// An owning handle is gone; the last one ends the connection unless it is supervised.
    pub(crate) fn drop_owner(&self) {
        if self.owners.fetch_sub(1, Ordering::AcqRel) == 1
            && !self.supervised.load(Ordering::Acquire)
        {
            self.abandon();
        }
    }

    pub(crate) fn supervise(&self) {
        self.supervised.store(true, Ordering::Release);
    }

    /// Ends a connection whose owners are all gone: nobody will read it again, so nobody would
    /// answer its pings or see its close. Queues a close frame with 1001 (going away), writes
    /// what the transport takes at once, and lets the transport go; senders left behind get
    /// the closure, and `closed()` resolves.
    fn abandon(&self) {
        let mut guard = self.lock();
        let inner = &mut **guard;
        if inner.terminated {
            return;
        }
        tracing::debug!("every owning handle dropped: closing with 1001");
        // Already closing: the first close frame stands.
        let _ = close_core(inner, CloseFrame::lossy(CloseCode::GOING_AWAY, ""));
        let mut wcx = Context::from_waker(&self.write_waker);
        if let Poll::Ready(Ok(())) = poll_write_out(inner, &mut wcx) {
            let _ = Pin::new(&mut inner.io).poll_shutdown(&mut wcx);
        }
        inner.io_dead = true;
        // The socket goes now, not when the last sender does (a registry may hold one long).
        inner.release_io();
        inner.unsent = VecDeque::new();
        inner.unsent_bytes = 0;
        inner.parked.clear();
        inner.parked_bytes = 0;
        self.mark_terminated(inner);
    }

    /// Flushes until at most `target` bytes are queued, within the write timeout. Most flushes
    /// finish on their first poll: only one that has to wait arms the timer, in a box, so that
    /// every send's future (which a handler holds for the connection's life) stays small and
    /// the common case registers no timer at all. A peer that stays stuck past the timeout is
    /// dropped as a slow consumer.
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
                let mut guard = self.lock();
                let inner = &mut **guard;
                let _ = close_core(inner, CloseFrame::lossy(code, "slow consumer"));
                let mut wcx = Context::from_waker(&self.write_waker);
                let _ = poll_write_out(inner, &mut wcx);
                inner.io_dead = true;
                self.mark_terminated(inner);
                let err: Error = PolicyViolation { kind: PolicyKind::SlowConsumer, code }.into();
                Wake::wake_by_ref(&self.wakers);
                Err(err)
            }
        }
    }

    // ----- The `Stream` and `Sink` views -----

    /// One poll of the `Stream` view: takes the receiving turn for the poll only.
    pub(crate) fn poll_stream(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        if !self.start_receiving() {
            return Poll::Ready(Some(Err(ConcurrencyError { operation: Operation::Recv }.into())));
        }
        let polled = self.poll_next_turn(cx);
        self.end_receiving();
        polled
    }

    /// The next message for a task that holds the receiving turn: `None` once the stream has
    /// ended (after a normal close, or after the error that ended it was reported).
    fn poll_next_turn(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        if self.lock().stream_done {
            return Poll::Ready(None);
        }
        match self.poll_io(cx, Mode::Recv) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(message)) => Poll::Ready(Some(Ok(message))),
            Poll::Ready(Err(err)) => {
                let ended = err.connection_closed().is_some() || self.is_closed();
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
        self.queue(message, true)
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
                let _ = close_core(&mut inner, CloseFrame::normal());
            }
        }
        self.poll_flush_writer(cx, 0)
    }

    #[cfg(test)]
    pub(crate) fn has_spare_buffers(&self) -> bool {
        self.lock().conn.has_spare_buffers()
    }
}

/// Which task a waker wakes, as a number: its data pointer (a tokio task's header), enough to
/// tell the driver's task from the receiver's.
pub(crate) fn task_of(waker: &Waker) -> usize {
    waker.data() as usize
}

/// Shuts the transport's write side once the core says the connection is over (and everything
/// queued is written).
fn poll_shutdown_if_due(inner: &mut Inner, cx: &mut Context<'_>) {
    if !inner.conn.wants_transport_close() || inner.shutdown_done {
        return;
    }
    // A client that failed on the server's input leaves the transport to the drain
    // (`Inner::release_io`) without a FIN: the server is still sending, and some servers
    // (asyncio's transports close themselves on EOF) would drop the connection on our FIN
    // before reading the close frame that says why. RFC 6455 §7.1.1: the server closes the
    // TCP connection first; the drain reads until it does.
    if inner.drain_for.is_some() && inner.conn.role() == Role::Client {
        inner.shutdown_done = true;
        // The drain starts now, not when the last handle goes: the server may be blocked
        // sending to us until someone reads.
        inner.io_dead = true;
        inner.release_io();
        return;
    }
    if Pin::new(&mut inner.io).poll_shutdown(cx).is_ready() {
        inner.shutdown_done = true;
    }
}

/// Writes queued chunks until the core has none left or the transport pushes back.
///
/// Every chunk the core has queued goes to one vectored write, up to [`GATHER_SLICES`] chunks
/// and [`GATHER_BYTES`] bytes: replies corked while a burst of input was handled, and messages
/// queued while the transport was full (a member's broadcasts), leave in one syscall — one
/// segment where they fit — instead of one per message.
fn poll_write_out(inner: &mut Inner, cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
    if inner.io_dead {
        return Poll::Ready(Ok(()));
    }
    let vectored = inner.io.is_write_vectored();
    loop {
        // Top the gathered chunks up from the core. A transport that cannot write vectored
        // gets one chunk at a time: the rest stays in the core, counted by `pending_transmit`.
        let slices_max = if vectored { GATHER_SLICES } else { 1 };
        while inner.unsent.len() < slices_max && inner.unsent_bytes < GATHER_BYTES {
            let Some(chunk) = inner.conn.poll_transmit() else { break };
            inner.unsent_bytes += chunk.len();
            inner.unsent.push_back(chunk);
        }
        let io = Pin::new(&mut inner.io);
        let written = match inner.unsent.len() {
            0 => break,
            1 => io.poll_write(cx, &inner.unsent[0]),
            _ => {
                let mut slices = [IoSlice::new(&[]); GATHER_SLICES];
                let count = inner.unsent.len().min(GATHER_SLICES);
                for (slot, chunk) in slices.iter_mut().zip(&inner.unsent) {
                    *slot = IoSlice::new(chunk);
                }
                io.poll_write_vectored(cx, &slices[..count])
            }
        };
        match written {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            Poll::Ready(Ok(n)) => {
                inner.stats.bytes_out += n as u64;
                inner.unsent_bytes -= n;
                let mut left = n;
                while left > 0 {
                    let Some(front) = inner.unsent.front_mut() else { break };
                    if left < front.len() {
                        // Cut short: the rest of this chunk goes first next time.
                        bytes::Buf::advance(front, left);
                        break;
                    }
                    left -= front.len();
                    inner.unsent.pop_front();
                }
            }
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Pin::new(&mut inner.io).poll_flush(cx)
}

/// Starts the core's close handshake, telling it the time first: the close deadline counts
/// from now, not from the last wake-up (a quiet connection's may be a keepalive interval old).
fn close_core(inner: &mut Inner, frame: CloseFrame) -> Result<(), Error> {
    inner.conn.advance_time(Instant::now().into_std());
    inner.conn.close(frame)
}

/// Hands a data message to the core and counts it; a core past its close says why the
/// connection ended. With an idle limit, the core is told the time first, so that the message
/// counts as activity from now (without one, nothing in the core reads the time of a send, and
/// the clock is not read).
fn queue_message(inner: &mut Inner, message: &Message, compress: bool) -> Result<(), Error> {
    if inner.conn.config().idle_timeout.is_some() {
        inner.conn.advance_time(Instant::now().into_std());
    }
    let sent =
        if compress { inner.conn.send(message) } else { inner.conn.send_uncompressed(message) };
    match sent {
        Ok(()) => {
            inner.stats.messages_out += 1;
            Ok(())
        }
        Err(Error::InvalidState(_)) => Err(inner.conn.closed_error()),
        Err(err) => Err(err),
    }
}
