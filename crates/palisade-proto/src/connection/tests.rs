//! Unit tests of the parts of [`Connection`] that the conformance suite cannot see from outside:
//! the extension hook, output coalescing, and buffer release.

use super::*;
use crate::frame::RSV1;
use palisade_error::{CloseCode, PayloadTooBig, ProtocolError, SizeLimit};

/// A toy transform for testing the hook: "compressed" messages are the payload reversed,
/// and it refuses to produce more than `max_len` bytes, like a real inflater must.
#[derive(Debug)]
struct Reverse;

impl Extension for Reverse {
    fn rsv_bits(&self) -> u8 {
        RSV1
    }

    fn decode(
        &mut self,
        payload: &[u8],
        _fin: bool,
        out: &mut BytesMut,
        max_len: usize,
    ) -> Result<(), Error> {
        if out.len() + payload.len() > max_len {
            return Err(PayloadTooBig {
                size: None,
                max: max_len as u64,
                what: SizeLimit::Message,
            }
            .into());
        }
        // Reverse the frame's bytes and prepend: the whole message ends up reversed.
        let mut rev: Vec<u8> = payload.iter().rev().copied().collect();
        rev.extend_from_slice(out);
        out.clear();
        out.extend_from_slice(&rev);
        Ok(())
    }

    fn encode(&mut self, payload: &[u8], out: &mut BytesMut) -> Result<Option<u8>, Error> {
        if payload.len() < 4 {
            return Ok(None);
        }
        out.extend(payload.iter().rev());
        Ok(Some(RSV1))
    }
}

fn pair() -> (Connection, Connection) {
    let now = Instant::now();
    let config = ProtocolConfig::default().with_keepalive(None, None).with_max_message_size(64);
    let mut client = Connection::client(config.clone(), || [1, 2, 3, 4], now);
    let mut server = Connection::server(config, now);
    client.set_extension(Box::new(Reverse));
    server.set_extension(Box::new(Reverse));
    (client, server)
}

fn pipe(from: &mut Connection, to: &mut Connection) -> Vec<Result<Event, Error>> {
    while let Some(chunk) = from.poll_transmit() {
        to.handle_bytes(&chunk);
    }
    std::iter::from_fn(|| to.poll_event()).collect()
}

#[test]
fn extension_transforms_messages_both_ways() {
    let (mut client, mut server) = pair();
    client.send(&Message::text("hello world")).unwrap();
    client.send(&Message::text("hi")).unwrap(); // below the toy's threshold: sent as is
    let events = pipe(&mut client, &mut server);
    assert_eq!(
        events.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        vec![Event::Message(Message::text("hello world")), Event::Message(Message::text("hi"))]
    );
}

#[test]
fn extension_output_is_utf8_checked_and_size_limited() {
    let (mut client, mut server) = pair();
    // The transformed bytes are what is validated: "\xff" survives reversal as invalid.
    client.send(&Message::binary(vec![b'a', b'b', b'c', 0xff])).unwrap();
    let frames = {
        let mut v = Vec::new();
        while let Some(c) = client.poll_transmit() {
            v.extend_from_slice(&c);
        }
        v
    };
    // Flip the opcode from binary to text: an inflated text message that is not UTF-8.
    let mut text = frames.clone();
    text[0] = (text[0] & 0xF0) | 0x1;
    server.handle_bytes(&text);
    let err = server.poll_event().unwrap().unwrap_err();
    assert!(matches!(err, Error::Protocol(ProtocolError::InvalidUtf8 { .. })));

    let (mut client, mut server) = pair();
    client.send(&Message::binary(vec![7u8; 65])).unwrap();
    let err = pipe(&mut client, &mut server).pop().unwrap().unwrap_err();
    assert_eq!(err.close_code(), Some(CloseCode::MESSAGE_TOO_BIG));
}

#[test]
fn compression_bit_on_control_or_continuation_fails() {
    let (_, mut server) = pair();
    // A masked ping with RSV1.
    server.handle_bytes(&[0xC9, 0x80, 0, 0, 0, 0]);
    let err = server.poll_event().unwrap().unwrap_err();
    assert!(matches!(err, Error::Protocol(ProtocolError::UnexpectedCompressionBit)));
    // RSV2 is still reserved with an RSV1 extension.
    let (_, mut server) = pair();
    server.handle_bytes(&[0xA1, 0x80, 0, 0, 0, 0]);
    let err = server.poll_event().unwrap().unwrap_err();
    assert!(matches!(err, Error::Protocol(ProtocolError::ReservedBits { bits: 0b010 })));
}

#[test]
fn small_frames_coalesce_into_one_chunk_large_ones_are_not_copied() {
    let now = Instant::now();
    let mut server = Connection::server(ProtocolConfig::default(), now);
    for _ in 0..10 {
        server.send(&Message::text("small")).unwrap();
    }
    let chunk = server.poll_transmit().unwrap();
    assert_eq!(chunk.len(), 10 * 7);
    assert!(server.poll_transmit().is_none());

    let big = Bytes::from(vec![1u8; 100_000]);
    server.send(&Message::Binary(big.clone())).unwrap();
    let header = server.poll_transmit().unwrap();
    assert_eq!(header.len(), 10);
    let body = server.poll_transmit().unwrap();
    assert_eq!(body.as_ptr(), big.as_ptr(), "payload queued without a copy");
    assert_eq!(server.pending_transmit(), 0);
}

#[test]
fn shrink_releases_idle_buffers() {
    let now = Instant::now();
    let mut server = Connection::server(ProtocolConfig::default(), now);
    server.read_buffer().reserve(64 * 1024);
    server.send(&Message::text("x")).unwrap();
    while server.poll_transmit().is_some() {}
    assert!(server.has_spare_buffers());
    server.shrink_buffers();
    assert_eq!(server.read_buffer().capacity(), 0);
    assert!(!server.has_spare_buffers());
    // Half a frame waiting for the rest is not spare.
    server.read_buffer().extend_from_slice(&[0x81, 0x85]);
    assert!(!server.has_spare_buffers());
}
