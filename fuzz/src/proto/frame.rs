//! Targets `frame_decoder` and `frame_header`: the frame layer of the sans-I/O core.

use std::time::Instant;

use palisade_proto::error::{CloseCode, CloseFrame, State};
use palisade_proto::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode};
use palisade_proto::mask::apply_mask;
use palisade_proto::{Connection, Event, Message, ProtocolConfig, Role};

/// Size limits small enough for libFuzzer's inputs (4 KiB by default) to cross, including the
/// edges of the 7-bit and 16-bit length forms; chosen by three bits of the first input byte.
const LIMITS: [usize; 8] = [0, 1, 2, 7, 125, 126, 1000, 4096];

/// The longest piece the input is cut into, chosen by three bits of the second input byte.
const PIECE_CAPS: [usize; 8] = [1, 2, 3, 7, 14, 64, 300, 4096];

/// What the first two input bytes select.
#[derive(Debug, Clone, Copy)]
struct Setup {
    role: Role,
    max_frame: usize,
    max_message: usize,
    /// Feed the pieces through `read_buffer()` rather than `handle_bytes()`.
    via_read_buffer: bool,
    /// Three bits of piece-length cap, five of seed.
    split: u8,
}

impl Setup {
    /// Bit 0 of `config` is the role, bits 1–3 the frame limit, bits 4–6 the message limit,
    /// bit 7 the input path.
    fn new(config: u8, split: u8) -> Self {
        Self {
            role: if config & 1 == 0 { Role::Server } else { Role::Client },
            max_frame: LIMITS[usize::from((config >> 1) & 0b111)],
            max_message: LIMITS[usize::from((config >> 4) & 0b111)],
            via_read_buffer: config & 0x80 != 0,
            split,
        }
    }

    fn connection(&self) -> Connection {
        let config = ProtocolConfig::default()
            .with_keepalive(None, None)
            .with_max_frame_size(self.max_frame)
            .with_max_message_size(self.max_message);
        let now = Instant::now();
        match self.role {
            Role::Server => Connection::server(config, now),
            Role::Client => {
                let mut x = 0x9E37_79B9_u32;
                Connection::client(config, move || xorshift(&mut x).to_be_bytes(), now)
            }
        }
    }

    /// Cuts `stream` into pieces of pseudo-random lengths up to the cap, empty ones included
    /// (never two in a row, so the cutting always ends).
    fn pieces<'a>(&self, stream: &'a [u8]) -> Vec<&'a [u8]> {
        let cap = PIECE_CAPS[usize::from(self.split & 0b111)];
        let mut rng = u32::from(self.split >> 3) + 1;
        let mut pieces = Vec::new();
        let mut rest = stream;
        let mut last_empty = false;
        while !rest.is_empty() {
            let mut len = (xorshift(&mut rng) as usize % (cap + 1)).min(rest.len());
            if len == 0 && last_empty {
                len = 1;
            }
            last_empty = len == 0;
            let (piece, tail) = rest.split_at(len);
            pieces.push(piece);
            rest = tail;
        }
        pieces
    }
}

/// xorshift32: deterministic, and never zero from a non-zero state.
pub(super) fn xorshift(x: &mut u32) -> u32 {
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    *x
}

/// One thing `poll_event` reported.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Event(Event),
    /// A failure, by the close code it calls for, and whether it came after the end of input
    /// (when no close frame is owed).
    Error {
        code: Option<CloseCode>,
        after_eof: bool,
    },
}

/// A frame the connection sent, unmasked.
#[derive(Debug, PartialEq, Eq)]
struct Sent {
    opcode: OpCode,
    payload: Vec<u8>,
}

/// Everything observable one connection did with one input.
#[derive(Debug, Default, PartialEq, Eq)]
struct Run {
    outcomes: Vec<Outcome>,
    sent: Vec<Sent>,
}

impl Run {
    /// Whether the connection ended: a failure, or the peer's close frame (after which input is
    /// discarded, RFC 6455 §5.5.1 and §7.1.7).
    fn ended(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Error { .. } | Outcome::Event(Event::Close(_))))
    }
}

/// Target `frame_decoder`: `data` is two setup bytes (role, frame and message limits, input
/// path; how to cut the input) and then the bytes a peer sent a connection after the handshake.
///
/// Feeds the bytes in pieces, polling every event and draining the output after each, then ends
/// the input. Checks that nothing follows a failure or the peer's close; that every event
/// respects the limits and RFC 6455 (control payloads ≤ 125 bytes, text is UTF-8, received close
/// codes are sendable or 1005); that input buffered between pieces stays within the frame limit
/// plus one header; that `pending_transmit` counts exactly what `poll_transmit` hands out; that
/// every chunk sent is whole, well-formed frames masked as the role requires, and the frames are
/// exactly a pong per ping and, once the connection ends, one close frame with the right code,
/// last; and that the same bytes fed in one piece give the same events, errors and frames.
pub fn frame_decoder(data: &[u8]) {
    let [config, split, stream @ ..] = data else { return };
    let setup = Setup::new(*config, *split);
    let pieces = drive(&setup, &setup.pieces(stream), setup.via_read_buffer);
    check_sent(&pieces);
    let whole = drive(&setup, &[stream], false);
    assert_eq!(whole, pieces, "cutting the input changed what the connection did");
}

/// Runs one connection over `pieces`, then the end of input, checking each step.
fn drive(setup: &Setup, pieces: &[&[u8]], via_read_buffer: bool) -> Run {
    let mut conn = setup.connection();
    let mut run = Run::default();
    for piece in pieces {
        if via_read_buffer {
            conn.read_buffer().extend_from_slice(piece);
        } else {
            conn.handle_bytes(piece);
        }
        step(&mut conn, setup, &mut run, false);
    }
    conn.handle_eof();
    step(&mut conn, setup, &mut run, true);
    assert_eq!(conn.state(), State::Closed, "the end of input closes the connection");
    assert!(conn.wants_transport_close(), "a closed connection releases its transport");
    run
}

/// Polls every event, then drains the output.
fn step(conn: &mut Connection, setup: &Setup, run: &mut Run, after_eof: bool) {
    while let Some(result) = conn.poll_event() {
        assert!(!run.ended(), "an event after the connection ended: {result:?}");
        match result {
            Ok(event) => {
                check_event(&event, setup);
                if matches!(event, Event::Close(_)) {
                    assert_eq!(conn.state(), State::Closed, "after the peer's close");
                }
                run.outcomes.push(Outcome::Event(event));
            }
            Err(err) => {
                assert_eq!(conn.state(), State::Closed, "after {err}");
                run.outcomes.push(Outcome::Error { code: err.close_code(), after_eof });
            }
        }
    }
    let buffered = conn.read_buffer().len();
    assert!(
        buffered <= setup.max_frame + MAX_HEADER_LEN,
        "{buffered} bytes buffered with a frame limit of {}",
        setup.max_frame
    );
    let pending = conn.pending_transmit();
    let mut taken = 0;
    while let Some(chunk) = conn.poll_transmit() {
        taken += chunk.len();
        decode_chunk(&chunk, setup.role, &mut run.sent);
    }
    assert_eq!(taken, pending, "pending_transmit disagrees with what poll_transmit gave");
    assert_eq!(conn.pending_transmit(), 0, "output left after draining");
}

fn check_event(event: &Event, setup: &Setup) {
    match event {
        Event::Message(message) => {
            assert!(message.len() <= setup.max_message, "{message:?} over the message limit");
            if let Message::Text(text) = message {
                assert!(std::str::from_utf8(text.as_bytes()).is_ok(), "a text message not UTF-8");
            }
        }
        Event::Ping(payload) | Event::Pong(payload) => {
            assert!(payload.len() <= MAX_CONTROL_PAYLOAD, "RFC 6455 §5.5: control ≤ 125 bytes");
        }
        Event::Close(frame) => {
            assert!(
                frame.code().is_sendable() || *frame == CloseFrame::no_status(),
                "received close {frame:?}: only sendable codes arrive, or 1005 for no status"
            );
        }
        _ => {}
    }
}

/// Decodes a chunk the connection sent: whole frames only (nothing here sends a payload large
/// enough to be queued as a chunk of its own), final, without RSV bits, masked by a client only.
fn decode_chunk(chunk: &[u8], role: Role, sent: &mut Vec<Sent>) {
    let mut rest = chunk;
    while !rest.is_empty() {
        let (header, header_len) = FrameHeader::decode(rest)
            .unwrap_or_else(|e| panic!("sent an invalid frame header ({e}): {rest:02x?}"))
            .unwrap_or_else(|| panic!("a chunk ends inside a frame header: {rest:02x?}"));
        assert_eq!(header.mask.is_some(), role == Role::Client, "RFC 6455 §5.1: {header:?}");
        assert!(header.fin && header.rsv == 0, "sent {header:?}");
        let end = usize::try_from(header.payload_len)
            .ok()
            .and_then(|len| header_len.checked_add(len))
            .filter(|&end| end <= rest.len())
            .unwrap_or_else(|| panic!("a chunk ends inside a frame: {header:?}"));
        let mut payload = rest[header_len..end].to_vec();
        if let Some(key) = header.mask {
            apply_mask(&mut payload, key, 0);
        }
        sent.push(Sent { opcode: header.opcode, payload });
        rest = &rest[end..];
    }
}

/// The frames sent are exactly those the outcomes call for, in order: a pong echoing each ping,
/// and once the connection ends a close frame — echoing the peer's code (RFC 6455 §5.5.1), or
/// with the failure's code (§7.1.7) unless the input had already ended — and nothing after it.
fn check_sent(run: &Run) {
    let mut frames = run.sent.iter();
    for outcome in &run.outcomes {
        let expected_close = match outcome {
            Outcome::Event(Event::Ping(payload)) => {
                let pong = Sent { opcode: OpCode::Pong, payload: payload.to_vec() };
                assert_eq!(frames.next(), Some(&pong), "RFC 6455 §5.5.2: a ping is answered");
                continue;
            }
            Outcome::Event(Event::Close(frame)) => {
                Some(frame.code().is_sendable().then_some(frame.code()))
            }
            Outcome::Error { code, after_eof: false } => {
                Some(Some(code.unwrap_or(CloseCode::PROTOCOL_ERROR)))
            }
            _ => None,
        };
        let Some(code) = expected_close else { continue };
        let close = frames.next().unwrap_or_else(|| panic!("no close frame after {outcome:?}"));
        assert_eq!(close.opcode, OpCode::Close, "after {outcome:?}");
        let sent = palisade_proto::close::decode(&close.payload)
            .unwrap_or_else(|e| panic!("sent an invalid close payload ({e}) after {outcome:?}"));
        match code {
            Some(code) => assert_eq!(sent.code(), code, "after {outcome:?}"),
            None => assert_eq!(sent, CloseFrame::no_status(), "after {outcome:?}"),
        }
    }
    assert_eq!(frames.next(), None, "a frame no event called for, after {:?}", run.outcomes);
}

/// Target `frame_header`: `data` starts with a frame header, or not.
///
/// Checks that `FrameHeader::decode` reads at most `MAX_HEADER_LEN` bytes and that every prefix
/// of the input either asks for more or reaches the same verdict; and that a decoded header
/// encodes to `encoded_len()` bytes that decode to the same header, no longer than the input's
/// form of it and byte-identical when that form was already minimal (RFC 6455 §5.2).
pub fn frame_header(data: &[u8]) {
    let verdict = FrameHeader::decode(data);
    let head = &data[..data.len().min(MAX_HEADER_LEN)];
    assert_eq!(FrameHeader::decode(head), verdict, "decode read past the longest header");
    let mut decided = false;
    for end in 0..=head.len() {
        match FrameHeader::decode(&head[..end]) {
            Ok(None) => assert!(!decided, "asked for more after a verdict, at {end} bytes"),
            prefix => {
                assert_eq!(prefix, verdict, "the verdict on the first {end} bytes");
                decided = true;
            }
        }
    }
    let Ok(Some((header, len))) = verdict else { return };
    assert!(len <= head.len(), "consumed {len} of {} bytes", data.len());
    assert!(header.rsv <= 0b111 && header.payload_len >> 63 == 0, "{header:?}");
    if header.opcode.is_control() {
        assert!(header.fin && header.payload_len <= MAX_CONTROL_PAYLOAD as u64, "{header:?}");
    }
    let mut encoded = Vec::new();
    header.encode(&mut encoded);
    assert_eq!(encoded.len(), header.encoded_len(), "{header:?}");
    assert_eq!(FrameHeader::decode(&encoded), Ok(Some((header, encoded.len()))));
    assert!(encoded.len() <= len, "the encoding of {header:?} is not minimal");
    if encoded.len() == len {
        assert_eq!(encoded, head[..len], "a minimal header re-encodes to other bytes");
    }
}
