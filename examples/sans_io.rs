//! The sans-I/O protocol core driven by hand: a client and a server `Connection` wired back to
//! back in memory, with no socket, no async runtime and no clock. Run it from the workspace root:
//!
//! ```text
//! cargo run --release --example sans_io
//! ```
//!
//! It prints every step: the HTTP upgrade, the frames each side queues (opcode, length, whether
//! masked), and the events the other side reports when those bytes arrive — fed to it 7 bytes at
//! a time, to show that input may come in any pieces. Look at:
//!
//! - the pong the server queued by itself when the ping arrived;
//! - the three peer mistakes: each fails the connection at once with its error, queues one close
//!   frame with the matching code (1002, 1009, 1007), and asks for the TCP connection to be
//!   closed — the 2^62-byte frame is refused after 14 bytes, from its header alone, and the bad
//!   UTF-8 is refused in the first fragment, before the message is complete;
//! - the close handshake: who replies, and that the client closes TCP only after the server has;
//! - time, which the connection learns only from `handle_timeout(now)`: a keepalive ping, then
//!   1011 when no pong comes.
//!
//! The book's chapter "Protocol core" shows these listings.

use std::time::Instant;

use palisade::proto::error::{CloseCode, CloseFrame, Error};
use palisade::proto::frame::{FrameHeader, OpCode};
use palisade::proto::handshake::{
    AcceptOptions, ClientHandshake, HeadLimits, HeadReader, ResponseOutcome, UpgradeRequest,
    write_response,
};
use palisade::proto::mask::apply_mask;
use palisade::proto::{Connection, Event, Message, ProtocolConfig};

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: sans_io

The sans-I/O protocol core driven by hand: two connections back to back in memory, every
step printed.

  -h, --help   print this and exit
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    args::Args::none("sans_io", USAGE);
    println!("== the opening handshake");
    handshake()?;

    println!("\n== messages both ways");
    // ANCHOR: connections
    let now = Instant::now();
    // A client masks every frame with a fresh key (RFC 6455 §5.3). The core has no RNG: the
    // runtime injects one. This deterministic sequence is for the demonstration only; a real
    // client must draw its keys from a random source.
    let mut state: u32 = 0x2545_f491;
    let masks = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state.to_le_bytes()
    };
    let mut client = Connection::client(ProtocolConfig::default(), masks, now);
    let mut server = Connection::server(ProtocolConfig::default(), now);
    // ANCHOR_END: connections

    // ANCHOR: messages
    client.send(&Message::text("hello"))?;
    client.send(&Message::binary(vec![1, 2, 3]))?;
    pump(&mut client, &mut server);
    server.send(&Message::text("hello to you"))?;
    pump(&mut server, &mut client);
    // ANCHOR_END: messages

    println!("\n== a ping");
    // ANCHOR: ping
    client.ping(b"are you there?")?;
    pump(&mut client, &mut server); // the server reports the ping; its pong is already queued
    pump(&mut server, &mut client); // the client receives the pong
    // ANCHOR_END: ping

    println!("\n== the close handshake");
    close_handshake(client, server)?;

    println!("\n== peer mistakes");
    // ANCHOR: violations
    let key = Some([0x37, 0xfa, 0x21, 0x3d]);
    violation("an unmasked frame from a client", &frame(true, OpCode::Text, None, b"hello"));
    // Only the 14-byte header arrives; the limit is checked before any payload is buffered.
    let mut huge = Vec::new();
    FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask: key, payload_len: 1 << 62 }
        .encode(&mut huge);
    violation("a frame announcing 2^62 bytes", &huge);
    // The first fragment of a text message (FIN clear) holding a UTF-16 surrogate, ED A0 80.
    violation(
        "invalid UTF-8 in a first fragment",
        &frame(false, OpCode::Text, key, b"ok \xED\xA0\x80"),
    );
    // ANCHOR_END: violations

    println!("\n== time");
    keepalive()?;
    Ok(())
}

/// The HTTP/1.1 upgrade, both roles, as bytes.
fn handshake() -> Result<(), Box<dyn std::error::Error>> {
    // ANCHOR: handshake
    // Client: the request. The 16-byte key comes from an RNG in a real client.
    let uri = "ws://example.com/chat".parse()?;
    let client = ClientHandshake::new(&uri, *b"not random, demo")?.with_subprotocols(["chat"])?;
    let mut request = Vec::new();
    client.write_request(&mut request);

    // Server: find the end of the head within the limits (call `feed` again with the whole
    // buffer each time more bytes arrive), validate the upgrade, answer 101.
    let mut reader = HeadReader::new(HeadLimits::default());
    let head_len = reader.feed(&request)?.ok_or("the head is incomplete")?;
    let upgrade = UpgradeRequest::parse(&request[..head_len], reader.limits())?;
    let response = upgrade.accept(AcceptOptions::default().with_subprotocol("chat"))?;
    let mut answer = Vec::new();
    write_response(&response, &[], &mut answer);

    // Client: check the answer (status, headers, accept key, subprotocol offered).
    match client.read_response(&answer, &HeadLimits::default())? {
        ResponseOutcome::Upgraded(negotiated) => {
            println!("  open, subprotocol {:?}", negotiated.subprotocol);
        }
        ResponseOutcome::NotUpgraded(refused) => {
            return Err(format!("refused with {}", refused.status()).into());
        }
    }
    // ANCHOR_END: handshake
    print_head("client → server", &request);
    print_head("server → client", &answer);
    Ok(())
}

/// The close handshake, started by the client.
fn close_handshake(
    mut client: Connection,
    mut server: Connection,
) -> Result<(), Box<dyn std::error::Error>> {
    // ANCHOR: close
    client.close(CloseFrame::new(CloseCode::NORMAL, "done")?)?;
    println!("  client: {:?}", client.state());
    pump(&mut client, &mut server); // the server reports the close and queues its reply
    println!("  server: {:?}; close TCP now: {}", server.state(), server.wants_transport_close());
    pump(&mut server, &mut client);
    // RFC 6455 §7.1.1: the server closes TCP first; the client waits for that (up to the close
    // timeout) rather than closing its end while the server's close frame may be in flight.
    println!("  client: {:?}; close TCP now: {}", client.state(), client.wants_transport_close());
    client.handle_eof(); // the server's TCP close reached the client
    while let Some(event) = client.poll_event() {
        println!("  client event: {}", describe(&event));
    }
    println!(
        "  client, after the server's TCP close: close TCP now: {}",
        client.wants_transport_close()
    );
    println!("  client ended with: {}", client.closed_error());
    println!("  server ended with: {}", server.closed_error());
    // ANCHOR_END: close
    match client.send(&Message::text("too late")) {
        Err(err) => println!("  send after close: {err}"),
        Ok(()) => println!("  send after close was accepted (unexpected)"),
    }
    Ok(())
}

// ANCHOR: violation
/// Feeds `bytes` to a fresh server connection and shows how it fails.
fn violation(what: &str, bytes: &[u8]) {
    let mut server = Connection::server(ProtocolConfig::default(), Instant::now());
    server.handle_bytes(bytes);
    match server.poll_event() {
        Some(Err(err)) => println!("  {what}: {err} → close code {}", code(&err)),
        other => println!("  {what}: unexpected {other:?}"),
    }
    let out = transmit(&mut server);
    println!(
        "    queued {}; close TCP after writing it: {}",
        frames(&out),
        server.wants_transport_close()
    );
    // Whatever the peer sends now is discarded (RFC 6455 §7.1.7).
    server.handle_bytes(&frame(true, OpCode::Text, Some([1, 2, 3, 4]), b"more"));
    assert!(server.poll_event().is_none());
}
// ANCHOR_END: violation

/// Keepalive and its timeout: the connection has no clock and learns the time from the caller.
fn keepalive() -> Result<(), Box<dyn std::error::Error>> {
    // ANCHOR: time
    let t0 = Instant::now();
    let mut server = Connection::server(ProtocolConfig::default(), t0);
    let wake = server.poll_timeout().ok_or("keepalive is on by default")?;
    println!("  first timer at +{:?}", wake - t0);
    server.handle_timeout(wake);
    println!("  at +{:?} queued {}", wake - t0, frames(&transmit(&mut server)));
    // No pong comes back. The next timer is the pong deadline.
    let deadline = server.poll_timeout().ok_or("a pong deadline")?;
    server.handle_timeout(deadline);
    if let Some(Err(err)) = server.poll_event() {
        println!("  at +{:?}: {err} → close code {}", deadline - t0, code(&err));
    }
    println!("    queued {}", frames(&transmit(&mut server)));
    // ANCHOR_END: time
    Ok(())
}

// ANCHOR: pump
/// Carries what `from` has queued to `to`, as a socket would, and prints what `to` reports.
fn pump(from: &mut Connection, to: &mut Connection) {
    // Output: every chunk queued, in order.
    let wire = transmit(from);
    println!("  {:?} → {:?}: {} bytes: {}", from.role(), to.role(), wire.len(), frames(&wire));
    // Input: bytes may arrive in any pieces; feed each, then poll events until there are none.
    for piece in wire.chunks(7) {
        to.handle_bytes(piece);
        while let Some(event) = to.poll_event() {
            println!("  {:?} event: {}", to.role(), describe(&event));
        }
    }
}

/// Takes everything the connection has queued for the transport.
fn transmit(conn: &mut Connection) -> Vec<u8> {
    let mut wire = Vec::new();
    while let Some(chunk) = conn.poll_transmit() {
        wire.extend_from_slice(&chunk);
    }
    wire
}
// ANCHOR_END: pump

fn describe(event: &Result<Event, Error>) -> String {
    match event {
        Ok(Event::Message(Message::Text(text))) => format!("text message {:?}", text.as_str()),
        Ok(Event::Message(Message::Binary(bytes))) => format!("binary message {:?}", &bytes[..]),
        Ok(Event::Ping(payload)) => format!("ping {payload:?} (pong queued)"),
        Ok(Event::Pong(payload)) => format!("pong {payload:?}"),
        Ok(Event::Close(frame)) => format!("close frame {frame}"),
        Ok(other) => format!("{other:?}"),
        Err(err) => format!("error: {err}"),
    }
}

/// The close code an error calls for, for display.
fn code(err: &Error) -> String {
    err.close_code().map_or_else(|| "none".to_owned(), |code| code.to_string())
}

/// One frame's bytes, masked with `mask` if given.
fn frame(fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    FrameHeader { fin, rsv: 0, opcode, mask, payload_len: payload.len() as u64 }.encode(&mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

/// The frames in `wire`, decoded for display: each header, and a close frame's code and reason.
fn frames(mut wire: &[u8]) -> String {
    let mut shown = Vec::new();
    while let Ok(Some((header, header_len))) = FrameHeader::decode(wire) {
        let end = usize::try_from(header.payload_len).map_or(usize::MAX, |n| n + header_len);
        let Some(payload) = wire.get(header_len..end) else {
            shown.push(format!("{header:?} (payload not here)"));
            break;
        };
        let mut payload = payload.to_vec();
        if let Some(key) = header.mask {
            apply_mask(&mut payload, key, 0);
        }
        match header.opcode {
            OpCode::Close => match palisade::proto::close::decode(&payload) {
                Ok(close) => shown.push(format!("{header:?} [{close}]")),
                Err(err) => shown.push(format!("{header:?} [bad close payload: {err}]")),
            },
            _ => shown.push(format!("{header:?}")),
        }
        wire = &wire[end..];
    }
    if shown.is_empty() { "nothing".to_owned() } else { shown.join(", ") }
}

fn print_head(direction: &str, head: &[u8]) {
    println!("  {direction}:");
    for line in String::from_utf8_lossy(head).lines().filter(|l| !l.is_empty()) {
        println!("    {line}");
    }
}
