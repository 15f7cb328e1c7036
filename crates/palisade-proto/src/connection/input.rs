//! Input: transport bytes in, frames decoded lazily, events out; the close handshake as the
//! peer drives it, and failing the connection (RFC 6455 §7.1.7).

use bytes::{Buf, Bytes, BytesMut};
use palisade_error::{
    CloseCode, CloseFrame, Error, PayloadTooBig, ProtocolError, SizeLimit, State,
};

use super::{Connection, Event, InFrame, InMessage};
use crate::Role;
use crate::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};
use crate::mask::apply_mask;
use crate::message::{Message, Utf8Bytes};

impl Connection {
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
    pub(super) fn note_eof(&mut self) {
        self.state = State::Closed;
        self.discard_input = true;
        self.close_deadline = None;
        self.transport_close = true;
    }

    /// Decodes the next complete frame from the read buffer, unmasking (and validating text) as
    /// payload bytes arrive so that invalid UTF-8 fails as soon as it is received.
    pub(super) fn decode_frame(&mut self) -> Result<Option<(FrameHeader, Bytes)>, Error> {
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
    pub(super) fn check_header(&mut self, h: &FrameHeader) -> Result<bool, Error> {
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

    pub(super) fn handle_frame(
        &mut self,
        h: FrameHeader,
        payload: Bytes,
    ) -> Result<Option<Event>, Error> {
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

    pub(super) fn append_fragment(
        &mut self,
        payload: &[u8],
        fin: bool,
    ) -> Result<Option<Event>, Error> {
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

    pub(super) fn complete_message(&mut self, text: bool, payload: Bytes) -> Result<Event, Error> {
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

    pub(super) fn handle_close(&mut self, frame: CloseFrame) -> Event {
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
    pub(super) fn finish_close_handshake(&mut self) {
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
    pub(super) fn fail(&mut self, err: Error) -> Error {
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
}
