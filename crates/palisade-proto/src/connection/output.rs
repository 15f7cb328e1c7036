//! Output: the commands that queue frames (send, ping, pong, close) and the chunks the driver
//! writes, coalesced and uncopied where that pays.

use bytes::{Bytes, BytesMut};
use palisade_error::{CloseFrame, Error, InvalidState, Operation, PayloadTooBig, SizeLimit, State};

use super::{COALESCE_MAX, Connection};
use crate::Role;
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, OpCode};
use crate::mask::apply_mask;
use crate::message::Message;

impl Connection {
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

    pub(super) fn check_can_send(&self, operation: Operation) -> Result<(), Error> {
        if self.close_sent.is_some() || self.state != State::Open {
            return Err(InvalidState { operation, state: self.state }.into());
        }
        Ok(())
    }

    pub(super) fn queue_close(&mut self, frame: &CloseFrame) {
        let mut payload = Vec::with_capacity(crate::close::encoded_len(frame));
        crate::close::encode(frame, &mut payload);
        self.queue_frame(OpCode::Close, 0, &payload);
    }

    /// Queues one frame whose payload is copied.
    pub(super) fn queue_frame(&mut self, opcode: OpCode, rsv: u8, payload: &[u8]) {
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
    pub(super) fn queue_frame_bytes(&mut self, opcode: OpCode, rsv: u8, payload: Bytes) {
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

    pub(super) fn read_buf_is_spare(&self) -> bool {
        self.read_buf.capacity() > 0
            && self.read_buf.is_empty()
            && self.frame.is_none()
            && self.message.is_none()
    }

    pub(super) fn staging_is_spare(&self) -> bool {
        self.staging.capacity() > 0 && self.staging.is_empty()
    }
}

pub(super) fn check_control_payload(payload: &[u8]) -> Result<(), Error> {
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
