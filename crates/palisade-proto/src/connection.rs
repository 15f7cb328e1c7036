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
//!    [`Connection::close`] queue frames. A command issued between wake-ups (a send from
//!    another task, a close after a quiet minute) first tells the connection the time with
//!    [`Connection::advance_time`], which fires no timer: the close deadline, and a send's
//!    place against the idle limit, count from the time they are given.
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

use bytes::{Bytes, BytesMut};
use palisade_error::{CloseFrame, ConnectionClosed, Error, State};

use crate::Role;
use crate::frame::FrameHeader;
use crate::message::Message;
use crate::utf8::Utf8Validator;

/// Payloads up to this size are copied next to their header, so that a stream of small
/// messages goes out in few large writes; larger ones are queued as their own chunk, uncopied
/// (server side; a client must copy to mask anyway).
const COALESCE_MAX: usize = 4096;

/// Settings of a [`Connection`]. Every limit has a safe default.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProtocolConfig {
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

impl Default for ProtocolConfig {
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

impl ProtocolConfig {
    /// Sets [`ProtocolConfig::max_message_size`].
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`ProtocolConfig::max_frame_size`].
    pub fn with_max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets [`ProtocolConfig::ping_interval`] and [`ProtocolConfig::ping_timeout`].
    pub fn with_keepalive(mut self, interval: Option<Duration>, timeout: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self.ping_timeout = timeout;
        self
    }

    /// Sets [`ProtocolConfig::close_timeout`].
    pub fn with_close_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`ProtocolConfig::idle_timeout`].
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
    config: ProtocolConfig,
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
    pub fn server(config: ProtocolConfig, now: Instant) -> Self {
        Self::new(Role::Server, config, None, now)
    }

    /// A client-side connection, open, at time `now`, masking with keys from `masks`.
    pub fn client(config: ProtocolConfig, masks: impl MaskSource + 'static, now: Instant) -> Self {
        Self::new(Role::Client, config, Some(Box::new(masks)), now)
    }

    fn new(
        role: Role,
        config: ProtocolConfig,
        masks: Option<Box<dyn MaskSource>>,
        now: Instant,
    ) -> Self {
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
    pub fn config(&self) -> &ProtocolConfig {
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

mod input;
mod output;
mod timers;

#[cfg(test)]
mod tests;
