//! A deterministic harness: one [`Connection`] under test and a hand-driven peer that writes raw
//! frames at it and reads what it sends back. A virtual clock and seeded masks make every run
//! identical.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use palisade_proto::connection::{Connection, Event, ProtocolConfig};
use palisade_proto::error::{CloseCode, Error, State};
use palisade_proto::frame::{FrameHeader, OpCode};
use palisade_proto::mask::apply_mask;

/// A deterministic sequence of masking keys.
pub(crate) fn seeded_masks(seed: u32) -> impl FnMut() -> [u8; 4] + Send + 'static {
    let mut x = seed.max(1);
    move || {
        // xorshift32: deterministic, never zero.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x.to_be_bytes()
    }
}

/// One connection under test and its raw peer.
pub(crate) struct Harness {
    pub(crate) conn: Connection,
    pub(crate) start: Instant,
    pub(crate) now: Instant,
    peer_masks: Box<dyn FnMut() -> [u8; 4] + Send>,
    /// Bytes the connection sent that `sent_frames` has not decoded yet.
    sent: BytesMut,
}

/// A frame the connection sent, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sent {
    pub(crate) header: FrameHeader,
    pub(crate) payload: Vec<u8>,
}

impl Sent {
    /// The close code in a sent close frame (None for an empty close body).
    pub(crate) fn close_code(&self) -> Option<CloseCode> {
        assert_eq!(self.header.opcode, OpCode::Close);
        (self.payload.len() >= 2)
            .then(|| CloseCode(u16::from_be_bytes([self.payload[0], self.payload[1]])))
    }
}

impl Harness {
    /// A server connection, with keepalive off unless the test turns it on.
    pub(crate) fn server() -> Self {
        Self::server_with(ProtocolConfig::default().with_keepalive(None, None))
    }

    pub(crate) fn server_with(config: ProtocolConfig) -> Self {
        let start = Instant::now();
        Self::new(Connection::server(config, start), start)
    }

    pub(crate) fn client() -> Self {
        Self::client_with(ProtocolConfig::default().with_keepalive(None, None))
    }

    pub(crate) fn client_with(config: ProtocolConfig) -> Self {
        let start = Instant::now();
        Self::new(Connection::client(config, seeded_masks(7), start), start)
    }

    fn new(conn: Connection, start: Instant) -> Self {
        Self {
            conn,
            start,
            now: start,
            peer_masks: Box::new(seeded_masks(99)),
            sent: BytesMut::new(),
        }
    }

    fn peer_masks(&self) -> bool {
        self.conn.role() == palisade_proto::Role::Server
    }

    /// Encodes a frame as the peer would (masked when the peer is a client).
    pub(crate) fn frame(&mut self, fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = self.peer_masks().then(|| (self.peer_masks)());
        let mut out = Vec::new();
        // Build the header by hand so reserved opcodes can be sent too.
        let b0 = (u8::from(fin) << 7) | (rsv << 4) | opcode;
        out.push(b0);
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => out.push(m | n as u8),
            n @ 126..=0xFFFF => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if let Some(key) = mask {
            out.extend_from_slice(&key);
        }
        let body = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut out[body..], key, 0);
        }
        out
    }

    /// Sends one frame from the peer.
    pub(crate) fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let bytes = self.frame(fin, 0, opcode, payload);
        self.conn.handle_bytes(&bytes);
    }

    pub(crate) fn send_text(&mut self, text: &str) {
        self.send_frame(true, 0x1, text.as_bytes());
    }

    pub(crate) fn send_close(&mut self, code: u16, reason: &str) {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        self.send_frame(true, 0x8, &p);
    }

    /// All events available now.
    pub(crate) fn events(&mut self) -> Vec<Result<Event, Error>> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// All events, which must all be `Ok`.
    pub(crate) fn ok_events(&mut self) -> Vec<Event> {
        self.events().into_iter().map(|e| e.expect("no error expected")).collect()
    }

    /// Decodes everything the connection has transmitted since the last call.
    pub(crate) fn sent_frames(&mut self) -> Vec<Sent> {
        while let Some(chunk) = self.conn.poll_transmit() {
            self.sent.extend_from_slice(&chunk);
        }
        let mut frames = Vec::new();
        while let Some((header, n)) = FrameHeader::decode(&self.sent).expect("we send valid frames")
        {
            let len = header.payload_len as usize;
            if self.sent.len() < n + len {
                break;
            }
            let _ = self.sent.split_to(n);
            let mut payload = self.sent.split_to(len).to_vec();
            if let Some(key) = header.mask {
                apply_mask(&mut payload, key, 0);
            }
            frames.push(Sent { header, payload });
        }
        frames
    }

    /// Advances the virtual clock.
    pub(crate) fn advance(&mut self, d: Duration) {
        self.now += d;
        self.conn.handle_timeout(self.now);
    }

    /// Asserts the connection failed: the error has `code` as its close code, a close frame
    /// with `code` went out, the connection is closed and discards input.
    pub(crate) fn assert_failed_with(&mut self, code: CloseCode) -> Error {
        let events = self.events();
        let err = events
            .into_iter()
            .find_map(Result::err)
            .unwrap_or_else(|| panic!("expected a failure with {code}"));
        assert_eq!(err.close_code(), Some(code), "error {err:?}");
        self.assert_sent_close(code);
        assert_eq!(self.conn.state(), State::Closed);
        assert!(self.conn.wants_transport_close());
        // Input after a failure is discarded (RFC 6455 §7.1.7).
        self.send_text("ignored");
        assert!(self.events().is_empty());
        err
    }

    /// Asserts that the last frame sent is a close with `code`.
    pub(crate) fn assert_sent_close(&mut self, code: CloseCode) {
        let frames = self.sent_frames();
        let last = frames.last().unwrap_or_else(|| panic!("no frame sent, expected close {code}"));
        assert_eq!(last.close_code(), Some(code), "sent {frames:?}");
    }
}
