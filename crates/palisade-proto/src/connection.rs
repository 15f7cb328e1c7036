//! The state machine of one WebSocket connection after the opening handshake.
//!
//! # Call order
//!
//! A driver (palisade-conn's tokio loop, or a test) owns a [`Connection`] and repeats:
//!
//! 1. **Time**: [`Connection::handle_timeout`]`(now)` whenever it wakes, before anything else.
//!    The connection has no clock; this is how it learns the time, and how keepalive pings,
//!    pong deadlines, the idle limit and the close timeout fire.
//! 2. **Input**: bytes from the transport go into [`Connection::read_buffer`] (read straight into
//!    it, without a copy) or through [`Connection::handle_bytes`]; the end of the stream is
//!    [`Connection::handle_eof`].
//! 3. **Events**: [`Connection::poll_event`] until it returns `None`. Frames are decoded lazily
//!    here, so a consumer that stops polling stops the decoding: the driver applies
//!    backpressure simply by not reading the socket while events are unconsumed.
//! 4. **Commands**: [`Connection::send`], [`Connection::ping`], [`Connection::pong`],
//!    [`Connection::close`] queue frames.
//! 5. **Output**: [`Connection::poll_transmit`] until `None`, writing each chunk in order. Then,
//!    if [`Connection::wants_transport_close`], shut the transport down.
//! 6. **Sleep** until input arrives, a command is issued, or [`Connection::poll_timeout`].
//!
//! # Failure
//!
//! When the peer breaks a rule, the connection is *failed* (RFC 6455 §7.1.7): `poll_event`
//! returns the error once, a close frame with the error's code is queued (unless one was already
//! sent), and all further input is discarded. Afterwards [`Connection::state`] is
//! [`State::Closed`] and [`Connection::closed_error`] describes the closure.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use palisade_error::{
    CloseCode, CloseFrame, ConnectionClosed, Error, InvalidState, Operation, PayloadTooBig,
    ProtocolError, SizeLimit, State, TimeoutPhase,
};

use crate::Role;
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode};
use crate::mask::apply_mask;
use crate::message::{Message, Utf8Bytes};
use crate::utf8::Utf8Validator;

/// Payloads up to this size are copied next to their header, so that a stream of small
/// messages goes out in few large writes; larger ones are queued as their own chunk, uncopied
/// (server side; a client must copy to mask anyway).
const COALESCE_MAX: usize = 4096;

/// Settings of a [`Connection`]. Every limit has a safe default.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The largest message accepted, after reassembly and decompression. Default 1 MiB.
    /// Crossing it fails the connection with 1009 (RFC 6455 §7.4.1).
    pub max_message_size: usize,
    /// The largest single frame accepted. Default 1 MiB. Checked from the frame header, before
    /// any of the payload is buffered.
    pub max_frame_size: usize,
    /// Send a ping after this long without one. Default 20 s; `None` disables keepalive.
    pub ping_interval: Option<Duration>,
    /// Fail the connection (1011) when a keepalive ping has no pong after this long.
    /// Default 20 s.
    pub ping_timeout: Option<Duration>,
    /// After our close frame, wait this long for the peer's (and, on a client, for the server to
    /// close TCP) before giving up. Default 10 s.
    pub close_timeout: Option<Duration>,
    /// Close with 1001 after this long without a data message either way. Default off.
    pub idle_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Some(Duration::from_secs(20)),
            close_timeout: Some(Duration::from_secs(10)),
            idle_timeout: None,
        }
    }
}

impl Config {
    /// Sets [`Config::max_message_size`].
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`Config::max_frame_size`].
    pub fn with_max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets [`Config::ping_interval`] and [`Config::ping_timeout`].
    pub fn with_keepalive(mut self, interval: Option<Duration>, timeout: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self.ping_timeout = timeout;
        self
    }

    /// Sets [`Config::close_timeout`].
    pub fn with_close_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`Config::idle_timeout`].
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }
}

/// Where a client's masking keys come from (RFC 6455 §5.3: "a fresh masking key … from the set
/// of allowed 32-bit values"). The core has no RNG: the runtime injects one, and tests inject a
/// deterministic sequence.
pub trait MaskSource: Send {
    /// The key for the next frame.
    fn next_mask(&mut self) -> [u8; 4];
}

impl<F: FnMut() -> [u8; 4] + Send> MaskSource for F {
    fn next_mask(&mut self) -> [u8; 4] {
        self()
    }
}

/// A per-message transform negotiated in the handshake, such as permessage-deflate (RFC 7692).
///
/// The codec calls it for every data message whose first frame carries one of its RSV bits, and
/// for every message sent. It never sees control frames.
pub trait Extension: Send + fmt::Debug {
    /// The RSV bits the extension gives meaning to (permessage-deflate: [`crate::frame::RSV1`]).
    /// Frames with other RSV bits set still fail the connection.
    fn rsv_bits(&self) -> u8;

    /// Decodes the payload of one frame of a transformed message, appending the result to
    /// `out`. `fin` marks the last frame. Must never let `out` grow past `max_len` bytes: return
    /// [`Error::PayloadTooBig`] instead, so a decompression bomb costs nothing.
    fn decode(
        &mut self,
        payload: &[u8],
        fin: bool,
        out: &mut BytesMut,
        max_len: usize,
    ) -> Result<(), Error>;

    /// Encodes an outgoing message into `out` and returns the RSV bits to set on its first
    /// frame, or returns `None` (leaving `out` untouched) to send the message as it is.
    fn encode(&mut self, payload: &[u8], out: &mut BytesMut) -> Result<Option<u8>, Error>;
}

/// What [`Connection::poll_event`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A complete data message.
    Message(Message),
    /// A ping arrived; the pong is already queued (RFC 6455 §5.5.2).
    Ping(Bytes),
    /// A pong arrived (solicited or not; RFC 6455 §5.5.3).
    Pong(Bytes),
    /// The peer's close frame arrived; if we had not sent ours, the reply is queued. A close
    /// without a status is reported as 1005.
    Close(CloseFrame),
}

/// The frame whose header has been decoded and whose payload is arriving.
#[derive(Debug)]
struct InFrame {
    header: FrameHeader,
    /// Payload bytes at the front of the read buffer already unmasked and, for text, validated.
    processed: usize,
    /// Whether the payload is text to validate as it arrives (uncompressed text only).
    validate_utf8: bool,
}

/// A fragmented (or compressed) message being reassembled.
#[derive(Debug)]
struct InMessage {
    text: bool,
    compressed: bool,
    /// Bytes received so far on the wire, for the size limit on compressed input.
    wire_len: u64,
    buf: BytesMut,
}

/// The sans-I/O WebSocket connection. See the [module documentation](self) for the call order.
pub struct Connection {
    role: Role,
    config: Config,
    state: State,
    masks: Option<Box<dyn MaskSource>>,
    extension: Option<Box<dyn Extension>>,

    read_buf: BytesMut,
    frame: Option<InFrame>,
    message: Option<InMessage>,
    /// Validates the text message in progress (fragmented or not) as its bytes arrive.
    utf8: Utf8Validator,
    /// Text bytes fed to `utf8` in the message in progress, for error positions.
    discard_input: bool,
    eof: bool,
    pending_error: Option<Error>,

    out: VecDeque<Bytes>,
    staging: BytesMut,
    out_len: usize,

    close_sent: Option<CloseFrame>,
    close_received: Option<CloseFrame>,
    received_then_sent: Option<bool>,
    transport_close: bool,

    now: Instant,
    close_deadline: Option<Instant>,
    next_ping: Option<Instant>,
    ping_outstanding: Option<(Instant, [u8; 4])>,
    ping_counter: u32,
    last_rtt: Option<Duration>,
    last_activity: Instant,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("buffered_in", &self.read_buf.len())
            .field("buffered_out", &self.out_len)
            .field("close_sent", &self.close_sent)
            .field("close_received", &self.close_received)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A server-side connection, open, at time `now`.
    pub fn server(config: Config, now: Instant) -> Self {
        Self::new(Role::Server, config, None, now)
    }

    /// A client-side connection, open, at time `now`, masking with keys from `masks`.
    pub fn client(config: Config, masks: impl MaskSource + 'static, now: Instant) -> Self {
        Self::new(Role::Client, config, Some(Box::new(masks)), now)
    }

    fn new(role: Role, config: Config, masks: Option<Box<dyn MaskSource>>, now: Instant) -> Self {
        let next_ping = config.ping_interval.map(|i| now + i);
        Self {
            role,
            config,
            state: State::Open,
            masks,
            extension: None,
            read_buf: BytesMut::new(),
            frame: None,
            message: None,
            utf8: Utf8Validator::new(),
            discard_input: false,
            eof: false,
            pending_error: None,
            out: VecDeque::new(),
            staging: BytesMut::new(),
            out_len: 0,
            close_sent: None,
            close_received: None,
            received_then_sent: None,
            transport_close: false,
            now,
            close_deadline: None,
            next_ping,
            ping_outstanding: None,
            ping_counter: 0,
            last_rtt: None,
            last_activity: now,
        }
    }

    /// Installs the extension negotiated in the handshake (at most one; a second replaces the
    /// first).
    pub fn set_extension(&mut self, extension: Box<dyn Extension>) {
        self.extension = Some(extension);
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The connection's state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The round-trip time of the last keepalive ping answered.
    pub fn last_rtt(&self) -> Option<Duration> {
        self.last_rtt
    }

    // ----- time -----

    /// Tells the connection the time and fires the timers due: keepalive pings, the pong
    /// deadline (fails with 1011), the idle limit (closes with 1001) and the close timeout.
    /// Errors are reported by the next [`Connection::poll_event`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if let Some(deadline) = self.close_deadline
            && now >= deadline
        {
            // The peer did not finish the close handshake in time: give up on it.
            self.close_deadline = None;
            self.state = State::Closed;
            self.transport_close = true;
            self.discard_input = true;
            if self.pending_error.is_none() && self.close_received.is_none() {
                self.pending_error = Some(Error::timeout(TimeoutPhase::Close));
            }
            return;
        }
        if self.state != State::Open {
            return;
        }
        if let (Some((sent_at, _)), Some(timeout)) =
            (self.ping_outstanding, self.config.ping_timeout)
            && now >= sent_at + timeout
        {
            let err = self.fail(Error::timeout(TimeoutPhase::Keepalive));
            self.pending_error = Some(err);
            return;
        }
        if let Some(idle) = self.config.idle_timeout
            && now >= self.last_activity + idle
        {
            let err = self.fail(Error::timeout(TimeoutPhase::Idle));
            self.pending_error = Some(err);
            return;
        }
        if let (Some(at), Some(interval)) = (self.next_ping, self.config.ping_interval)
            && now >= at
        {
            self.next_ping = Some(now + interval);
            if self.ping_outstanding.is_none() {
                self.ping_counter = self.ping_counter.wrapping_add(1);
                let payload = self.ping_counter.to_be_bytes();
                self.queue_frame(OpCode::Ping, 0, &payload);
                self.ping_outstanding = Some((now, payload));
            }
        }
    }

    /// The next instant at which [`Connection::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return self.close_deadline;
        }
        let pong_deadline =
            self.ping_outstanding.and_then(|(sent, _)| self.config.ping_timeout.map(|t| sent + t));
        let idle = self
            .config
            .idle_timeout
            .filter(|_| self.state == State::Open)
            .map(|t| self.last_activity + t);
        let next_ping = self.next_ping.filter(|_| self.state == State::Open);
        [self.close_deadline, pong_deadline, idle, next_ping].into_iter().flatten().min()
    }

    // ----- input -----

    /// The buffer the driver reads transport bytes into (append only).
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        &mut self.read_buf
    }

    /// How many more bytes the frame in progress needs (at least a header's worth), as a hint
    /// for sizing reads.
    pub fn read_hint(&self) -> usize {
        match &self.frame {
            Some(f) => (f.header.payload_len as usize).saturating_sub(self.read_buf.len()).max(1),
            None => MAX_HEADER_LEN.saturating_sub(self.read_buf.len()).max(1),
        }
    }

    /// Feeds bytes received from the transport (copying them; prefer
    /// [`Connection::read_buffer`]).
    pub fn handle_bytes(&mut self, data: &[u8]) {
        if !self.discard_input {
            self.read_buf.extend_from_slice(data);
        }
    }

    /// The transport's read side reached its end.
    pub fn handle_eof(&mut self) {
        self.eof = true;
    }

    /// The next event, or `None` when more input is needed or the connection is closed.
    ///
    /// An `Err` is returned once, for the failure that ended the connection; every later call
    /// returns `None`, and [`Connection::closed_error`] describes the closure.
    pub fn poll_event(&mut self) -> Option<Result<Event, Error>> {
        if let Some(err) = self.pending_error.take() {
            return Some(Err(err));
        }
        loop {
            if self.discard_input {
                self.read_buf.clear();
                if self.eof {
                    self.note_eof();
                }
                return None;
            }
            match self.decode_frame() {
                Ok(Some((header, payload))) => match self.handle_frame(header, payload) {
                    Ok(Some(event)) => return Some(Ok(event)),
                    Ok(None) => continue,
                    Err(err) => return Some(Err(self.fail(err))),
                },
                Ok(None) => {
                    if self.eof {
                        self.note_eof();
                    }
                    return None;
                }
                Err(err) => return Some(Err(self.fail(err))),
            }
        }
    }

    /// The peer closed TCP and everything before it was decoded. Before a completed close
    /// handshake that is an abnormal closure (1006); after it, the end RFC 6455 §7.1.1 expects.
    fn note_eof(&mut self) {
        self.state = State::Closed;
        self.discard_input = true;
        self.close_deadline = None;
        self.transport_close = true;
    }

    /// Decodes the next complete frame from the read buffer, unmasking (and validating text) as
    /// payload bytes arrive so that invalid UTF-8 fails as soon as it is received.
    fn decode_frame(&mut self) -> Result<Option<(FrameHeader, Bytes)>, Error> {
        if self.frame.is_none() {
            let Some((header, header_len)) = FrameHeader::decode(&self.read_buf)? else {
                return Ok(None);
            };
            let validate_utf8 = self.check_header(&header)?;
            self.read_buf.advance(header_len);
            self.frame = Some(InFrame { header, processed: 0, validate_utf8 });
        }
        let Some(frame) = self.frame.as_mut() else { return Ok(None) };
        // Fits in usize: check_header refused anything over the frame size limit.
        let len = frame.header.payload_len as usize;
        let available = self.read_buf.len().min(len);
        if available > frame.processed {
            let fresh = &mut self.read_buf[frame.processed..available];
            if let Some(key) = frame.header.mask {
                apply_mask(fresh, key, frame.processed);
            }
            if frame.validate_utf8
                && let Err(pos) = self.utf8.feed(fresh)
            {
                return Err(ProtocolError::InvalidUtf8 { position: pos }.into());
            }
            frame.processed = available;
        }
        if available < len {
            return Ok(None);
        }
        let header = frame.header;
        self.frame = None;
        Ok(Some((header, self.read_buf.split_to(len).freeze())))
    }

    /// The rules a header must follow on this connection, beyond those of the header itself.
    /// Returns whether the payload is text to validate as it arrives.
    fn check_header(&mut self, h: &FrameHeader) -> Result<bool, Error> {
        // RFC 6455 §5.1: clients mask every frame, servers none.
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame.into()),
            (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame.into()),
            _ => {}
        }
        // RFC 6455 §5.2: RSV bits only with an extension that defines them.
        let allowed = self.extension.as_ref().map_or(0, |e| e.rsv_bits());
        if h.rsv & !allowed != 0 {
            return Err(ProtocolError::ReservedBits { bits: h.rsv }.into());
        }
        // RFC 7692 §6: the compression bit belongs to the first frame of a data message.
        if h.rsv != 0 && (h.opcode.is_control() || h.opcode == OpCode::Continuation) {
            return Err(ProtocolError::UnexpectedCompressionBit.into());
        }
        if h.payload_len > self.config.max_frame_size as u64 {
            return Err(PayloadTooBig {
                size: Some(h.payload_len),
                max: self.config.max_frame_size as u64,
                what: SizeLimit::Frame,
            }
            .into());
        }
        let max_message = self.config.max_message_size as u64;
        match h.opcode {
            OpCode::Text | OpCode::Binary => {
                if self.message.is_some() {
                    return Err(ProtocolError::MissingContinuation.into());
                }
                if h.payload_len > max_message {
                    return Err(PayloadTooBig {
                        size: Some(h.payload_len),
                        max: max_message,
                        what: SizeLimit::Message,
                    }
                    .into());
                }
                let compressed = h.rsv != 0;
                Ok(h.opcode == OpCode::Text && !compressed)
            }
            OpCode::Continuation => {
                let Some(msg) = &self.message else {
                    return Err(ProtocolError::UnexpectedContinuation.into());
                };
                let total = msg.wire_len.saturating_add(h.payload_len);
                if total > max_message {
                    return Err(PayloadTooBig {
                        size: Some(total),
                        max: max_message,
                        what: SizeLimit::Message,
                    }
                    .into());
                }
                Ok(msg.text && !msg.compressed)
            }
            OpCode::Close | OpCode::Ping | OpCode::Pong => Ok(false),
        }
    }

    fn handle_frame(&mut self, h: FrameHeader, payload: Bytes) -> Result<Option<Event>, Error> {
        match h.opcode {
            OpCode::Ping => {
                // RFC 6455 §5.5.2: answer with a pong carrying the same payload, unless our
                // close frame already went out (§5.5.1: nothing after close).
                if self.close_sent.is_none() {
                    self.queue_frame(OpCode::Pong, 0, &payload);
                }
                Ok(Some(Event::Ping(payload)))
            }
            OpCode::Pong => {
                if let Some((sent_at, expected)) = self.ping_outstanding
                    && payload[..] == expected[..]
                {
                    self.last_rtt = Some(self.now.saturating_duration_since(sent_at));
                    self.ping_outstanding = None;
                }
                Ok(Some(Event::Pong(payload)))
            }
            OpCode::Close => {
                let frame = crate::close::decode(&payload)?;
                Ok(Some(self.handle_close(frame)))
            }
            OpCode::Text | OpCode::Binary => {
                let text = h.opcode == OpCode::Text;
                let compressed = h.rsv != 0;
                if h.fin && !compressed {
                    // The common case: a whole message in one frame, delivered without a copy.
                    return self.complete_message(text, payload).map(Some);
                }
                self.message = Some(InMessage {
                    text,
                    compressed,
                    wire_len: 0,
                    buf: BytesMut::with_capacity(if compressed { 0 } else { payload.len() }),
                });
                self.append_fragment(&payload, h.fin)
            }
            OpCode::Continuation => self.append_fragment(&payload, h.fin),
        }
    }

    fn append_fragment(&mut self, payload: &[u8], fin: bool) -> Result<Option<Event>, Error> {
        let max = self.config.max_message_size;
        let Some(msg) = self.message.as_mut() else {
            return Err(ProtocolError::UnexpectedContinuation.into());
        };
        msg.wire_len += payload.len() as u64;
        if msg.compressed {
            let Some(ext) = self.extension.as_mut() else {
                return Err(ProtocolError::ReservedBits { bits: crate::frame::RSV1 }.into());
            };
            let before = msg.buf.len();
            ext.decode(payload, fin, &mut msg.buf, max)?;
            if msg.text
                && let Err(pos) = self.utf8.feed(&msg.buf[before..])
            {
                return Err(ProtocolError::InvalidUtf8 { position: pos }.into());
            }
        } else {
            // The size was checked from the header before the payload was buffered.
            msg.buf.extend_from_slice(payload);
        }
        if !fin {
            return Ok(None);
        }
        let Some(msg) = self.message.take() else { return Ok(None) };
        self.complete_message(msg.text, msg.buf.freeze()).map(Some)
    }

    fn complete_message(&mut self, text: bool, payload: Bytes) -> Result<Event, Error> {
        self.last_activity = self.now;
        if !text {
            return Ok(Event::Message(Message::Binary(payload)));
        }
        let verdict = self.utf8.finish();
        self.utf8.reset();
        match verdict {
            Ok(()) => Ok(Event::Message(Message::Text(Utf8Bytes::from_validated(payload)))),
            Err(position) => Err(ProtocolError::InvalidUtf8 { position }.into()),
        }
    }

    fn handle_close(&mut self, frame: CloseFrame) -> Event {
        self.close_received = Some(frame.clone());
        // Whatever follows a close frame is not processed (RFC 6455 §5.5.1), and an unfinished
        // fragmented message is abandoned.
        self.discard_input = true;
        self.message = None;
        match &self.close_sent {
            None => {
                // RFC 6455 §5.5.1: reply with a close frame, typically echoing the code.
                let reply = if frame.code().is_sendable() {
                    CloseFrame::from_wire_unchecked(frame.code(), "")
                } else {
                    CloseFrame::no_status()
                };
                self.queue_close(&reply);
                self.close_sent = Some(reply);
                self.received_then_sent = Some(true);
            }
            Some(_) => {
                self.received_then_sent = Some(false);
            }
        }
        self.state = State::Closed;
        self.finish_close_handshake();
        Event::Close(frame)
    }

    /// Both close frames are exchanged. RFC 6455 §7.1.1: the server closes TCP first; the
    /// client waits for that, up to the close timeout.
    fn finish_close_handshake(&mut self) {
        match self.role {
            Role::Server => {
                self.transport_close = true;
                self.close_deadline = None;
            }
            Role::Client => {
                if self.eof {
                    self.transport_close = true;
                    self.close_deadline = None;
                } else {
                    self.close_deadline = self.config.close_timeout.map(|t| self.now + t);
                }
            }
        }
    }

    /// Fails the connection (RFC 6455 §7.1.7): queue the close frame the error calls for,
    /// discard further input, and return the error for the caller to report.
    fn fail(&mut self, err: Error) -> Error {
        if self.close_sent.is_none() && !self.eof {
            let code = err.close_code().unwrap_or(CloseCode::PROTOCOL_ERROR);
            let frame = CloseFrame::lossy(code, code.generic_reason());
            self.queue_close(&frame);
            self.close_sent = Some(frame);
        }
        self.state = State::Closed;
        self.discard_input = true;
        self.message = None;
        self.frame = None;
        self.read_buf.clear();
        self.finish_close_handshake();
        if self.role == Role::Client {
            // A client that fails the connection need not wait for the server's TCP close.
            self.transport_close = true;
        }
        err
    }

    // ----- commands -----

    /// Queues a data message. Refused with [`Error::InvalidState`] once our close frame is out.
    pub fn send(&mut self, message: &Message) -> Result<(), Error> {
        self.check_can_send(Operation::Send)?;
        let opcode = if message.is_text() { OpCode::Text } else { OpCode::Binary };
        let payload = message.payload();
        if let Some(ext) = self.extension.as_mut() {
            let mut encoded = BytesMut::new();
            if let Some(rsv) = ext.encode(payload, &mut encoded)? {
                self.queue_frame_bytes(opcode, rsv, encoded.freeze());
                self.last_activity = self.now;
                return Ok(());
            }
        }
        self.queue_frame_bytes(opcode, 0, payload.clone());
        self.last_activity = self.now;
        Ok(())
    }

    /// Queues a data message as it is, bypassing the extension (permessage-deflate): for
    /// payloads known not to compress (already compressed media) or that mix secrets with
    /// attacker-chosen data in one compression context. Otherwise as [`Connection::send`].
    pub fn send_uncompressed(&mut self, message: &Message) -> Result<(), Error> {
        self.check_can_send(Operation::Send)?;
        let opcode = if message.is_text() { OpCode::Text } else { OpCode::Binary };
        self.queue_frame_bytes(opcode, 0, message.payload().clone());
        self.last_activity = self.now;
        Ok(())
    }

    /// Queues a ping with `payload` (at most 125 bytes).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.check_can_send(Operation::Ping)?;
        check_control_payload(payload)?;
        self.queue_frame(OpCode::Ping, 0, payload);
        Ok(())
    }

    /// Queues an unsolicited pong with `payload` (at most 125 bytes), e.g. as a heartbeat.
    pub fn pong(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.check_can_send(Operation::Pong)?;
        check_control_payload(payload)?;
        self.queue_frame(OpCode::Pong, 0, payload);
        Ok(())
    }

    /// Starts the close handshake with `frame` (a [`CloseFrame::no_status`] frame sends an empty
    /// close body). Refused with [`Error::InvalidState`] if our close frame already went out.
    pub fn close(&mut self, frame: CloseFrame) -> Result<(), Error> {
        self.check_can_send(Operation::Close)?;
        self.queue_close(&frame);
        self.close_sent = Some(frame);
        self.received_then_sent = None;
        self.state = State::Closing;
        self.close_deadline = self.config.close_timeout.map(|t| self.now + t);
        Ok(())
    }

    fn check_can_send(&self, operation: Operation) -> Result<(), Error> {
        if self.close_sent.is_some() || self.state != State::Open {
            return Err(InvalidState { operation, state: self.state }.into());
        }
        Ok(())
    }

    fn queue_close(&mut self, frame: &CloseFrame) {
        let mut payload = Vec::with_capacity(crate::close::encoded_len(frame));
        crate::close::encode(frame, &mut payload);
        self.queue_frame(OpCode::Close, 0, &payload);
    }

    /// Queues one frame whose payload is copied.
    fn queue_frame(&mut self, opcode: OpCode, rsv: u8, payload: &[u8]) {
        let mask = self.masks.as_mut().map(|m| m.next_mask());
        let header =
            FrameHeader { fin: true, rsv, opcode, mask, payload_len: payload.len() as u64 };
        self.staging.reserve(header.encoded_len() + payload.len());
        header.encode(&mut self.staging);
        let start = self.staging.len();
        self.staging.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut self.staging[start..], key, 0);
        }
        self.out_len += header.encoded_len() + payload.len();
    }

    /// Queues one frame, keeping a large payload as its own chunk instead of copying it.
    fn queue_frame_bytes(&mut self, opcode: OpCode, rsv: u8, payload: Bytes) {
        if self.role == Role::Client || payload.len() <= COALESCE_MAX {
            self.queue_frame(opcode, rsv, &payload);
            return;
        }
        let header =
            FrameHeader { fin: true, rsv, opcode, mask: None, payload_len: payload.len() as u64 };
        header.encode(&mut self.staging);
        self.out.push_back(self.staging.split().freeze());
        self.out_len += header.encoded_len() + payload.len();
        self.out.push_back(payload);
    }

    // ----- output -----

    /// The next chunk of bytes to write to the transport, in order.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let chunk = match self.out.pop_front() {
            Some(chunk) => chunk,
            None if !self.staging.is_empty() => self.staging.split().freeze(),
            None => return None,
        };
        self.out_len -= chunk.len();
        Some(chunk)
    }

    /// Bytes queued for the transport and not yet taken by [`Connection::poll_transmit`]; the
    /// driver compares this with its high-water mark for backpressure.
    pub fn pending_transmit(&self) -> usize {
        self.out_len
    }

    /// Whether the driver should close the transport once the queued bytes are written: the
    /// close handshake is over (server), or the connection failed or timed out.
    pub fn wants_transport_close(&self) -> bool {
        self.transport_close
    }

    /// Releases buffer memory while the connection is idle (nothing buffered either way), so an
    /// idle connection costs little more than its bookkeeping.
    pub fn shrink_buffers(&mut self) {
        if self.read_buf_is_spare() {
            self.read_buf = BytesMut::new();
        }
        if self.staging_is_spare() {
            self.staging = BytesMut::new();
        }
    }

    /// Whether [`Connection::shrink_buffers`] would give memory back now.
    pub fn has_spare_buffers(&self) -> bool {
        self.read_buf_is_spare() || self.staging_is_spare()
    }

    fn read_buf_is_spare(&self) -> bool {
        self.read_buf.capacity() > 0
            && self.read_buf.is_empty()
            && self.frame.is_none()
            && self.message.is_none()
    }

    fn staging_is_spare(&self) -> bool {
        self.staging.capacity() > 0 && self.staging.is_empty()
    }

    // ----- closure -----

    /// The close frames exchanged so far.
    pub fn close_info(&self) -> ConnectionClosed {
        ConnectionClosed {
            received: self.close_received.clone(),
            sent: self.close_sent.clone(),
            received_then_sent: if self.close_received.is_some() && self.close_sent.is_some() {
                self.received_then_sent
            } else {
                None
            },
        }
    }

    /// The error every operation returns once the connection is closed:
    /// [`Error::ConnectionClosedOk`] after a normal close handshake,
    /// [`Error::ConnectionClosedError`] otherwise.
    pub fn closed_error(&self) -> Error {
        Error::closed(self.close_info())
    }
}

fn check_control_payload(payload: &[u8]) -> Result<(), Error> {
    if payload.len() > MAX_CONTROL_PAYLOAD {
        return Err(PayloadTooBig {
            size: Some(payload.len() as u64),
            max: MAX_CONTROL_PAYLOAD as u64,
            what: SizeLimit::Frame,
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
