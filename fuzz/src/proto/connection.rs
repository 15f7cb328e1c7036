//! Target `connection`: the whole protocol core for both roles — the opening handshake, then
//! the connection state machine with permessage-deflate negotiated, answering each message
//! with an echo as a server (or a client) built on it would.

use std::time::Instant;

use bytes::BytesMut;
use palisade_proto::deflate::{Deflate, DeflateConfig, DeflateParams};
use palisade_proto::error::{CloseCode, CloseFrame, State};
use palisade_proto::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode, RSV1};
use palisade_proto::handshake::{
    AcceptOptions, ClientHandshake, HeadLimits, HeadReader, ResponseOutcome, UpgradeRequest,
};
use palisade_proto::mask::apply_mask;
use palisade_proto::{Connection, Event, Extension, Message, ProtocolConfig, Role};

use super::CLIENT_KEY;
use super::frame::xorshift;

/// Frame and message limits, chosen by three bits each of the first input byte.
const LIMITS: [usize; 8] = [0, 1, 7, 125, 126, 1000, 4096, 65_536];

/// The longest piece the input is cut into, chosen by three bits of the third input byte.
const PIECE_CAPS: [usize; 8] = [1, 2, 3, 7, 14, 64, 300, 4096];

/// What the three setup bytes select.
#[derive(Debug, Clone)]
struct Setup {
    role: Role,
    max_frame: usize,
    max_message: usize,
    /// The input starts with the peer's handshake (a request to a server, a response to a
    /// client); otherwise deflate is installed with `params` at once.
    handshake: bool,
    /// This end's permessage-deflate wishes (for the handshake) or `None` for no deflate.
    deflate: Option<DeflateConfig>,
    cap: usize,
    seed: u32,
}

impl Setup {
    /// Byte 0: bit 0 the role, bits 1–3 the frame limit, bits 4–6 the message limit, bit 7
    /// whether a handshake comes first. Byte 1: bit 0 deflate, bits 1–3 the server's window
    /// (8–15), bits 4–6 the client's, bit 7 server_no_context_takeover. Byte 2: bits 0–2 the
    /// piece cap, bit 3 client_no_context_takeover, bits 4–7 the seed of the cutting.
    fn new(mode: u8, deflate: u8, split: u8) -> Self {
        let config = DeflateConfig::default()
            .with_threshold(0)
            .with_server_max_window_bits(8 + ((deflate >> 1) & 0b111))
            .with_client_max_window_bits(8 + ((deflate >> 4) & 0b111))
            .with_server_no_context_takeover(deflate & 0x80 != 0)
            .with_client_no_context_takeover(split & 0b1000 != 0);
        Self {
            role: if mode & 1 == 0 { Role::Server } else { Role::Client },
            max_frame: LIMITS[usize::from((mode >> 1) & 0b111)],
            max_message: LIMITS[usize::from((mode >> 4) & 0b111)],
            handshake: mode & 0x80 != 0,
            deflate: (deflate & 1 != 0).then_some(config),
            cap: PIECE_CAPS[usize::from(split & 0b111)],
            seed: u32::from(split >> 4) + 1,
        }
    }

    /// The parameters both ends use when no handshake negotiates them: this end's wishes as
    /// they are.
    fn direct_params(config: &DeflateConfig) -> DeflateParams {
        let mut params = DeflateParams::default();
        params.server_no_context_takeover = config.server_no_context_takeover;
        params.client_no_context_takeover = config.client_no_context_takeover;
        params.server_max_window_bits = config.server_max_window_bits;
        params.client_max_window_bits = config.client_max_window_bits;
        params
    }

    /// Cuts `stream` into pieces of pseudo-random lengths up to the cap, empty ones included
    /// (never two in a row).
    fn pieces<'a>(&self, stream: &'a [u8]) -> Vec<&'a [u8]> {
        let mut rng = self.seed;
        let mut pieces = Vec::new();
        let mut rest = stream;
        let mut last_empty = false;
        while !rest.is_empty() {
            let mut len = (xorshift(&mut rng) as usize % (self.cap + 1)).min(rest.len());
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

/// The handshake's outcome: the parameters of deflate if it was agreed, and where the frames
/// start.
struct Opened {
    params: Option<DeflateParams>,
    frames_at: usize,
}

/// Runs the opening handshake on the head at the start of `stream`, as this end's runtime
/// would; `None` when it does not open a connection (the handshake targets check those).
fn handshake(setup: &Setup, stream: &[u8]) -> Option<Opened> {
    let limits = HeadLimits::default();
    let len = HeadReader::new(limits).feed(stream).ok()??;
    let config = setup.deflate.clone();
    let params = match setup.role {
        Role::Server => {
            let request = UpgradeRequest::parse(&stream[..len], &limits).ok()?;
            let accepted = config.and_then(|c| c.accept(request.extensions()));
            let mut options = AcceptOptions::default();
            if let Some(accepted) = &accepted {
                options = options.with_extensions(vec![accepted.response.clone()]);
            }
            let response = request.accept(options).expect("accepting what was offered succeeds");
            assert_eq!(response.status().as_u16(), 101);
            accepted.map(|a| a.params)
        }
        Role::Client => {
            let uri = "ws://example.com/chat".parse().expect("a valid URI");
            let mut client = ClientHandshake::new(&uri, CLIENT_KEY).expect("a valid handshake");
            if let Some(config) = &config {
                client =
                    client.with_extensions(&config.offer_header()).expect("our offer is valid");
            }
            let ResponseOutcome::Upgraded(negotiated) =
                client.read_response(&stream[..len], &limits).ok()?
            else {
                return None;
            };
            match &config {
                Some(config) => config.check_answers(&negotiated.extensions).ok()?,
                None => {
                    assert!(negotiated.extensions.is_empty(), "an extension nobody offered");
                    None
                }
            }
        }
    };
    Some(Opened { params, frames_at: len })
}

/// One thing `poll_event` reported.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Event(Event),
    /// A failure, by its close code, and whether the input had ended (no close frame owed).
    Error {
        code: Option<CloseCode>,
        after_eof: bool,
    },
}

/// A message or control frame the connection sent, unmasked and inflated.
#[derive(Debug, PartialEq, Eq)]
struct Sent {
    opcode: OpCode,
    compressed: bool,
    payload: Vec<u8>,
}

/// Everything one connection did with one input.
#[derive(Debug, Default, PartialEq, Eq)]
struct Run {
    outcomes: Vec<Outcome>,
    sent: Vec<Sent>,
}

impl Run {
    fn ended(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Error { .. } | Outcome::Event(Event::Close(_))))
    }
}

/// Target `connection`: `data` is three setup bytes (see `Setup::new`), then what the peer
/// sent: with bit 7 of the first byte its handshake head and the frames after it, otherwise
/// frames only, with deflate installed as the setup says.
///
/// Every message received is echoed back. Checks that the handshake agrees on deflate only as
/// RFC 7692 allows (our own answer is accepted by the server's runtime; the client checks the
/// answer); that no event follows a failure or the peer's close; that messages respect the
/// message limit after inflation, text is UTF-8 and control payloads ≤ 125 bytes; that input
/// buffered between pieces stays within the frame limit plus a header; that every chunk sent is
/// whole frames, masked as the role requires, with RSV1 only on data frames and only with
/// deflate agreed; that, inflated by the peer's codec, the frames sent are exactly an echo per
/// message, a pong per ping and one close frame last, with the right code; and that the same
/// bytes fed in one piece do exactly the same.
pub fn connection(data: &[u8]) {
    let [mode, deflate, split, stream @ ..] = data else { return };
    let setup = Setup::new(*mode, *deflate, *split);
    let (params, frames) = if setup.handshake {
        let Some(opened) = handshake(&setup, stream) else { return };
        (opened.params, &stream[opened.frames_at..])
    } else {
        (setup.deflate.as_ref().map(Setup::direct_params), stream)
    };
    let pieces = drive(&setup, params, &setup.pieces(frames));
    check_sent(&pieces);
    let whole = drive(&setup, params, &[frames]);
    assert_eq!(whole, pieces, "cutting the input changed what the connection did");
}

/// Runs one connection over `pieces`, then the end of input.
fn drive(setup: &Setup, params: Option<DeflateParams>, pieces: &[&[u8]]) -> Run {
    let config = ProtocolConfig::default()
        .with_keepalive(None, None)
        .with_max_frame_size(setup.max_frame)
        .with_max_message_size(setup.max_message);
    let now = Instant::now();
    let mut conn = match setup.role {
        Role::Server => Connection::server(config, now),
        Role::Client => {
            let mut x = 0x9E37_79B9_u32;
            Connection::client(config, move || xorshift(&mut x).to_be_bytes(), now)
        }
    };
    // The peer's codec, to inflate what we send.
    let mut peer = None;
    if let (Some(params), Some(config)) = (params, &setup.deflate) {
        conn.set_extension(Box::new(Deflate::new(setup.role, params, config)));
        let other = if setup.role == Role::Server { Role::Client } else { Role::Server };
        peer = Some(Deflate::new(other, params, config));
    }
    let mut run = Run::default();
    for piece in pieces {
        conn.handle_bytes(piece);
        step(&mut conn, setup, &mut peer, &mut run, false);
    }
    conn.handle_eof();
    step(&mut conn, setup, &mut peer, &mut run, true);
    assert_eq!(conn.state(), State::Closed, "the end of input closes the connection");
    assert!(conn.wants_transport_close(), "a closed connection releases its transport");
    run
}

/// Polls every event (echoing messages), then drains the output.
fn step(
    conn: &mut Connection,
    setup: &Setup,
    peer: &mut Option<Deflate>,
    run: &mut Run,
    after_eof: bool,
) {
    while let Some(result) = conn.poll_event() {
        assert!(!run.ended(), "an event after the connection ended: {result:?}");
        match result {
            Ok(event) => {
                check_event(&event, setup);
                if let Event::Message(message) = &event {
                    conn.send(message).expect("an open connection sends");
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
    let mut sent = Vec::new();
    while let Some(chunk) = conn.poll_transmit() {
        taken += chunk.len();
        sent.extend_from_slice(&chunk);
    }
    assert_eq!(taken, pending, "pending_transmit disagrees with what poll_transmit gave");
    decode_sent(&sent, setup.role, peer, &mut run.sent);
}

fn check_event(event: &Event, setup: &Setup) {
    match event {
        Event::Message(message) => {
            assert!(message.len() <= setup.max_message, "a message over the limit");
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
                "received close {frame:?}"
            );
        }
        _ => {}
    }
}

/// Decodes what the connection sent in one step: whole frames, final (we never fragment),
/// masked by a client only, RSV1 only on data frames of a connection with deflate, inflated
/// by the peer's codec.
fn decode_sent(mut rest: &[u8], role: Role, peer: &mut Option<Deflate>, sent: &mut Vec<Sent>) {
    while !rest.is_empty() {
        let (header, header_len) = FrameHeader::decode(rest)
            .unwrap_or_else(|e| panic!("sent an invalid frame header ({e}): {rest:02x?}"))
            .unwrap_or_else(|| panic!("output ends inside a frame header: {rest:02x?}"));
        assert_eq!(header.mask.is_some(), role == Role::Client, "RFC 6455 §5.1: {header:?}");
        assert!(header.fin, "sent {header:?}");
        let end = usize::try_from(header.payload_len)
            .ok()
            .and_then(|len| header_len.checked_add(len))
            .filter(|&end| end <= rest.len())
            .unwrap_or_else(|| panic!("output ends inside a frame: {header:?}"));
        let mut payload = rest[header_len..end].to_vec();
        if let Some(key) = header.mask {
            apply_mask(&mut payload, key, 0);
        }
        let compressed = header.rsv != 0;
        if compressed {
            assert_eq!(header.rsv, RSV1, "RFC 7692 §6: only RSV1, {header:?}");
            assert!(!header.opcode.is_control(), "RFC 7692 §6.1: a compressed control frame");
            let codec = peer.as_mut().expect("RFC 6455 §5.2: RSV1 without deflate agreed");
            let mut inflated = BytesMut::new();
            codec
                .decode(&payload, true, &mut inflated, usize::MAX)
                .expect("the peer inflates what we compressed");
            payload = inflated.to_vec();
        }
        sent.push(Sent { opcode: header.opcode, compressed, payload });
        rest = &rest[end..];
    }
}

/// The frames sent are exactly those the outcomes call for, in order: the echo of each
/// message, a pong echoing each ping, and once the connection ends a close frame — echoing the
/// peer's code (RFC 6455 §5.5.1) or with the failure's (§7.1.7) unless the input had ended —
/// and nothing after it.
fn check_sent(run: &Run) {
    let mut frames = run.sent.iter();
    for outcome in &run.outcomes {
        let expected_close = match outcome {
            Outcome::Event(Event::Message(message)) => {
                let opcode = if message.is_text() { OpCode::Text } else { OpCode::Binary };
                let echo = frames.next().unwrap_or_else(|| panic!("no echo of {message:?}"));
                assert_eq!(echo.opcode, opcode);
                assert_eq!(echo.payload, message.payload()[..], "the echo differs");
                continue;
            }
            Outcome::Event(Event::Ping(payload)) => {
                let pong = frames.next().unwrap_or_else(|| panic!("no pong for {payload:?}"));
                assert_eq!((pong.opcode, &pong.payload[..]), (OpCode::Pong, &payload[..]));
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
