//! permessage-deflate, grouped by RFC 7692 section: negotiation (§5, §7.1) for both roles,
//! then the codec (§6, §7.2) through two connected [`Connection`]s, then the size limit.

use std::time::Instant;

use bytes::BytesMut;
use flate2::{Compress, Compression, FlushCompress};
use palisade_error::{CloseCode, Error, NegotiationError, ProtocolError};

use super::*;
use crate::Role;
use crate::connection::{Connection, Event, Extension, ProtocolConfig};
use crate::handshake::{ExtensionOffer, parse_extensions};
use crate::message::Message;

fn offer(header: &str) -> ExtensionOffer {
    // The header parser refuses repeated parameters itself; build those by hand.
    if let Some((first, repeated)) = header.split_once(" twice ") {
        let mut offer = offer(first);
        let again = offer.params.iter().find(|(n, _)| n == repeated).cloned().unwrap();
        offer.params.push(again);
        return offer;
    }
    let mut offers = parse_extensions(header).unwrap();
    assert_eq!(offers.len(), 1);
    offers.remove(0)
}

fn header(element: &ExtensionOffer) -> String {
    crate::handshake::format_extensions(std::slice::from_ref(element)).unwrap()
}

fn params(snct: bool, cnct: bool, server_bits: u8, client_bits: u8) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: snct,
        client_no_context_takeover: cnct,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
    }
}

fn invalid_value(name: &str, value: Option<&str>) -> NegotiationError {
    NegotiationError::InvalidParameterValue {
        extension: EXTENSION_NAME.into(),
        name: name.into(),
        value: value.map(Into::into),
    }
}

// ----- §7.1 negotiation, server side -----

/// (server config, offer) → (response, params).
#[test]
fn server_answers_each_parameter() {
    let default = DeflateConfig::default();
    let lean = DeflateConfig::lean();
    let cases: &[(&DeflateConfig, &str, &str, DeflateParams)] = &[
        (&default, "permessage-deflate", "permessage-deflate", params(false, false, 15, 15)),
        (
            &default,
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
            params(true, false, 15, 15),
        ),
        (
            &default,
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
            params(false, true, 15, 15),
        ),
        (
            &default,
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10",
            params(false, false, 10, 15),
        ),
        (
            &default,
            "permessage-deflate; server_max_window_bits=\"8\"",
            "permessage-deflate; server_max_window_bits=8",
            params(false, false, 8, 15),
        ),
        (
            &default,
            "permessage-deflate; server_max_window_bits=15",
            "permessage-deflate; server_max_window_bits=15",
            params(false, false, 15, 15),
        ),
        (
            &default,
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
            params(false, false, 15, 15),
        ),
        (
            &default,
            "permessage-deflate; client_max_window_bits=9",
            "permessage-deflate; client_max_window_bits=9",
            params(false, false, 15, 9),
        ),
        // The lean preset limits what it may: both flags always, its own window always, the
        // client's only when the client allowed it.
        (
            &lean,
            "permessage-deflate",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10",
            params(true, true, 10, 15),
        ),
        (
            &lean,
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=10",
            params(true, true, 10, 10),
        ),
        (
            &lean,
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=9",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=9",
            params(true, true, 10, 9),
        ),
        (
            &lean,
            "permessage-deflate; server_max_window_bits=9",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=9",
            params(true, true, 9, 15),
        ),
    ];
    for (config, offered, response, expected) in cases {
        let accepted = config.accept_offer(&offer(offered)).unwrap();
        assert_eq!(header(&accepted.response), *response, "offer {offered:?}");
        assert_eq!(accepted.params, *expected, "offer {offered:?}");
    }
}

#[test]
fn server_declines_offers_with_bad_parameters() {
    let config = DeflateConfig::default();
    let dup = |name: &str| NegotiationError::DuplicateParameter {
        extension: EXTENSION_NAME.into(),
        name: name.into(),
    };
    let cases: &[(&str, NegotiationError)] = &[
        (
            "permessage-deflate; x_window_bits=10",
            NegotiationError::InvalidParameterName {
                extension: EXTENSION_NAME.into(),
                name: "x_window_bits".into(),
            },
        ),
        (
            "permessage-deflate; server_no_context_takeover twice server_no_context_takeover",
            dup("server_no_context_takeover"),
        ),
        (
            "permessage-deflate; client_max_window_bits=10 twice client_max_window_bits",
            dup("client_max_window_bits"),
        ),
        (
            "permessage-deflate; server_no_context_takeover=1",
            invalid_value("server_no_context_takeover", Some("1")),
        ),
        (
            "permessage-deflate; client_no_context_takeover=x",
            invalid_value("client_no_context_takeover", Some("x")),
        ),
        (
            "permessage-deflate; server_max_window_bits",
            invalid_value("server_max_window_bits", None),
        ),
        (
            "permessage-deflate; server_max_window_bits=7",
            invalid_value("server_max_window_bits", Some("7")),
        ),
        (
            "permessage-deflate; server_max_window_bits=16",
            invalid_value("server_max_window_bits", Some("16")),
        ),
        (
            "permessage-deflate; server_max_window_bits=08",
            invalid_value("server_max_window_bits", Some("08")),
        ),
        (
            "permessage-deflate; client_max_window_bits=0",
            invalid_value("client_max_window_bits", Some("0")),
        ),
    ];
    for (offered, expected) in cases {
        assert_eq!(config.accept_offer(&offer(offered)).unwrap_err(), *expected, "{offered}");
        assert_eq!(config.accept(&[offer(offered)]), None, "{offered}");
    }
}

#[test]
fn server_picks_the_first_acceptable_offer() {
    let offers = parse_extensions(
        "x-foo, permessage-deflate; unknown, permessage-deflate; server_max_window_bits=7, \
         permessage-deflate; client_no_context_takeover, permessage-deflate",
    )
    .unwrap();
    let accepted = DeflateConfig::default().accept(&offers).unwrap();
    assert_eq!(header(&accepted.response), "permessage-deflate; client_no_context_takeover");
    assert_eq!(DeflateConfig::default().accept(&offers[..3]), None);
    assert_eq!(DeflateConfig::default().accept(&[]), None);
}

// ----- §7.1 negotiation, client side -----

#[test]
fn client_offers_its_configuration() {
    assert_eq!(
        DeflateConfig::default().offer_header(),
        "permessage-deflate; client_max_window_bits"
    );
    assert_eq!(
        DeflateConfig::lean().offer_header(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=10; client_max_window_bits=10"
    );
}

#[test]
fn client_accepts_valid_answers() {
    let default = DeflateConfig::default();
    let lean = DeflateConfig::lean();
    let cases: &[(&DeflateConfig, &str, DeflateParams)] = &[
        (&default, "permessage-deflate", params(false, false, 15, 15)),
        // The server may add either flag and limit its own window unasked.
        (
            &default,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            params(true, true, 15, 15),
        ),
        (&default, "permessage-deflate; server_max_window_bits=8", params(false, false, 8, 15)),
        (&default, "permessage-deflate; client_max_window_bits=8", params(false, false, 15, 8)),
        (
            &lean,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9",
            params(true, true, 9, 10),
        ),
        (
            &lean,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; \
             client_max_window_bits=9",
            params(true, true, 10, 9),
        ),
    ];
    for (config, answer, expected) in cases {
        assert_eq!(config.check_answer(&offer(answer)).unwrap(), *expected, "{answer}");
    }
}

#[test]
fn client_rejects_invalid_answers() {
    let default = DeflateConfig::default();
    let lean = DeflateConfig::lean();
    let cases: &[(&DeflateConfig, &str, NegotiationError)] = &[
        (
            &default,
            "permessage-deflate; foo",
            NegotiationError::InvalidParameterName {
                extension: EXTENSION_NAME.into(),
                name: "foo".into(),
            },
        ),
        (
            &default,
            "permessage-deflate; server_max_window_bits=10 twice server_max_window_bits",
            NegotiationError::DuplicateParameter {
                extension: EXTENSION_NAME.into(),
                name: "server_max_window_bits".into(),
            },
        ),
        (
            &default,
            "permessage-deflate; server_max_window_bits=20",
            invalid_value("server_max_window_bits", Some("20")),
        ),
        // §7.1.2.2: the answer's client_max_window_bits must have a value.
        (
            &default,
            "permessage-deflate; client_max_window_bits",
            invalid_value("client_max_window_bits", None),
        ),
        // Asked for server_no_context_takeover and a 10-bit server window: both must be
        // granted.
        (
            &lean,
            "permessage-deflate; server_max_window_bits=10",
            invalid_value("server_no_context_takeover", None),
        ),
        (
            &lean,
            "permessage-deflate; server_no_context_takeover",
            invalid_value("server_max_window_bits", None),
        ),
        (
            &lean,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=11",
            invalid_value("server_max_window_bits", Some("11")),
        ),
        (
            &lean,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; \
             client_max_window_bits=12",
            invalid_value("client_max_window_bits", Some("12")),
        ),
    ];
    for (config, answer, expected) in cases {
        assert_eq!(config.check_answer(&offer(answer)).unwrap_err(), *expected, "{answer}");
    }
}

#[test]
fn client_finds_its_answer_among_extensions() {
    let config = DeflateConfig::default();
    assert_eq!(config.check_answers(&[]).unwrap(), None);
    assert_eq!(
        config.check_answers(&[offer("Permessage-Deflate")]).unwrap(),
        Some(DeflateParams::default())
    );
    let twice = parse_extensions("permessage-deflate, permessage-deflate").unwrap();
    let err = config.check_answers(&twice).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Handshake(ref h) if matches!(**h, palisade_error::HandshakeError::Negotiation(
                NegotiationError::UnofferedExtension { .. }
            ))
        ),
        "{err:?}"
    );
}

/// Every client configuration against every server configuration: the server's answer passes
/// the client's check, and both sides agree on the parameters.
#[test]
fn both_roles_agree_on_every_combination() {
    let mut configs = Vec::new();
    for snct in [false, true] {
        for cnct in [false, true] {
            for sbits in [8, 9, 12, 15] {
                for cbits in [8, 11, 15] {
                    configs.push(
                        DeflateConfig::default()
                            .with_server_no_context_takeover(snct)
                            .with_client_no_context_takeover(cnct)
                            .with_server_max_window_bits(sbits)
                            .with_client_max_window_bits(cbits),
                    );
                }
            }
        }
    }
    for client in &configs {
        for server in &configs {
            let accepted = server.accept(&[client.offer()]).expect("a valid offer is accepted");
            let reparsed = offer(&header(&accepted.response));
            let agreed = client.check_answer(&reparsed).unwrap();
            assert_eq!(agreed, accepted.params, "client {client:?} server {server:?}");
            assert!(agreed.server_max_window_bits <= server.server_max_window_bits);
            assert!(agreed.server_max_window_bits <= client.server_max_window_bits);
            assert!(agreed.client_max_window_bits <= client.client_max_window_bits);
        }
    }
}

// ----- §6, §7.2 the codec -----

fn pair_with(
    params: DeflateParams,
    config: &DeflateConfig,
    max_message: usize,
) -> (Connection, Connection) {
    let now = Instant::now();
    let conn = ProtocolConfig::default()
        .with_keepalive(None, None)
        .with_max_message_size(max_message)
        .with_max_frame_size(max_message.max(1 << 20));
    let mut client = Connection::client(conn.clone(), || [1, 2, 3, 4], now);
    let mut server = Connection::server(conn, now);
    client.set_extension(Box::new(Deflate::new(Role::Client, params, config)));
    server.set_extension(Box::new(Deflate::new(Role::Server, params, config)));
    (client, server)
}

fn pair(params: DeflateParams) -> (Connection, Connection) {
    pair_with(params, &DeflateConfig::default().with_threshold(0), 1 << 20)
}

/// The bytes `from` would transmit, as one buffer.
fn wire(from: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = from.poll_transmit() {
        out.extend_from_slice(&chunk);
    }
    out
}

fn events(to: &mut Connection, bytes: &[u8]) -> Vec<Result<Event, Error>> {
    to.handle_bytes(bytes);
    std::iter::from_fn(|| to.poll_event()).collect()
}

fn message(events: Vec<Result<Event, Error>>) -> Message {
    match <[_; 1]>::try_from(events) {
        Ok([Ok(Event::Message(m))]) => m,
        other => panic!("expected one message, got {other:?}"),
    }
}

/// A server-to-client frame (unmasked) with a 7-bit, 16-bit or 64-bit length.
fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// Raw deflate of `data` with a sync flush and the trailer removed, as a peer sends it.
fn compress(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        c.compress_vec(&data[c.total_in() as usize..], &mut out, FlushCompress::Sync).unwrap();
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - 4);
    out
}

fn assert_fails_with(events: Vec<Result<Event, Error>>, code: CloseCode) {
    let err = events.into_iter().find_map(Result::err).expect("an error");
    assert_eq!(err.close_code(), Some(code), "{err:?}");
}

#[test]
fn messages_round_trip_both_ways_with_rsv1_on_the_wire() {
    for p in [params(false, false, 15, 15), params(true, true, 9, 9), params(false, true, 12, 10)] {
        let (mut client, mut server) = pair(p);
        let text = "hello hello hello hello, compressed world ".repeat(20);
        for _ in 0..3 {
            client.send(&Message::text(text.clone())).unwrap();
            let bytes = wire(&mut client);
            assert_eq!(bytes[0] & 0x40, 0x40, "RSV1 on a compressed message");
            assert!(bytes.len() < text.len() / 4, "compressed: {} bytes", bytes.len());
            assert_eq!(message(events(&mut server, &bytes)), Message::text(text.clone()));

            server.send(&Message::binary(text.clone().into_bytes())).unwrap();
            let bytes = wire(&mut server);
            assert_eq!(bytes[0], 0x80 | 0x40 | 0x2);
            assert_eq!(
                message(events(&mut client, &bytes)),
                Message::binary(text.clone().into_bytes())
            );
        }
    }
}

/// An empty message after a compressed one, with context takeover and no threshold: zlib's
/// second sync flush in a row produced no bytes, and a debug assertion (that a sync flush
/// ends with the trailer) panicked. Found by the `connection` fuzz target, which echoes an
/// empty message. It now goes out uncompressed.
#[test]
fn an_empty_message_after_a_compressed_one_goes_out_uncompressed() {
    for p in [params(false, false, 15, 15), params(true, true, 9, 9)] {
        let (mut client, mut server) = pair(p);
        let long = "a message long and repetitive enough to compress, ".repeat(4);
        for text in [long.as_str(), "", "", long.as_str()] {
            client.send(&Message::text(text.to_owned())).unwrap();
            let bytes = wire(&mut client);
            assert_eq!(bytes[0] & 0x40 == 0, text.is_empty(), "RSV1 on {text:?}");
            assert_eq!(message(events(&mut server, &bytes)), Message::text(text.to_owned()));
        }
    }
}

/// A message whose first inflated byte is already past the limit, with bad data after it in the
/// same frame, fails as too big (1009): that comes first in the stream. It failed as invalid
/// (1002), because zlib reported the bad data from the same call that wrote the byte. Found by
/// the `deflate_inflate` fuzz target, whose plain-zlib reference saw the byte first.
#[test]
fn a_byte_past_the_limit_before_bad_data_is_too_big() {
    // A fixed-Huffman block with a literal, then a stored block whose lengths do not match.
    let payload = [0x62, 0x07, 0x00, 0x00, 0x0c, 0x72, 0x62, 0x61, 0x23, 0x61, 0x23, 0x67, 0x65];
    let mut codec = Deflate::new(Role::Server, DeflateParams::default(), &DeflateConfig::default());
    let mut out = BytesMut::new();
    let err = codec.decode(&payload, false, &mut out, 0).unwrap_err();
    assert_eq!(err.close_code(), Some(CloseCode::MESSAGE_TOO_BIG), "{err}");
    assert!(out.is_empty());
}

#[test]
fn context_takeover_shrinks_repeats_and_no_takeover_does_not() {
    let text = "a message that repeats across messages, with enough entropy: 0123456789";
    for (no_takeover, expect_smaller) in [(false, true), (true, false)] {
        let (mut client, mut server) = pair(params(no_takeover, no_takeover, 15, 15));
        let mut sizes = Vec::new();
        for _ in 0..3 {
            client.send(&Message::text(text)).unwrap();
            let c2s = wire(&mut client);
            assert_eq!(message(events(&mut server, &c2s)), Message::text(text));
            server.send(&Message::text(text)).unwrap();
            let s2c = wire(&mut server);
            assert_eq!(message(events(&mut client, &s2c)), Message::text(text));
            sizes.push((c2s.len(), s2c.len()));
        }
        if expect_smaller {
            assert!(sizes[1].0 < sizes[0].0 && sizes[1].1 < sizes[0].1, "{sizes:?}");
        } else {
            assert_eq!(sizes[1], sizes[0]);
            assert_eq!(sizes[2], sizes[0]);
        }
    }
}

#[test]
fn short_messages_opted_out_and_eight_bit_windows_go_uncompressed() {
    let (mut client, mut server) =
        pair_with(DeflateParams::default(), &DeflateConfig::default(), 1 << 20);
    client.send(&Message::text("short")).unwrap();
    let bytes = wire(&mut client);
    assert_eq!(bytes[0], 0x81, "below the threshold: no RSV1");
    assert_eq!(message(events(&mut server, &bytes)), Message::text("short"));

    let long = "x".repeat(1000);
    server.send_uncompressed(&Message::text(long.clone())).unwrap();
    let bytes = wire(&mut server);
    assert_eq!(bytes[0], 0x81, "opted out: no RSV1");
    assert_eq!(message(events(&mut client, &bytes)), Message::text(long.clone()));

    // An 8-bit server window: zlib cannot honour it, so the server never compresses, while
    // the client's compressed messages still inflate.
    let (mut client, mut server) = pair(params(false, false, 8, 8));
    server.send(&Message::text(long.clone())).unwrap();
    let bytes = wire(&mut server);
    assert_eq!(bytes[0], 0x81);
    assert_eq!(message(events(&mut client, &bytes)), Message::text(long.clone()));
    let peer = compress(long.as_bytes());
    assert_eq!(message(events(&mut client, &frame(true, true, 1, &peer))), Message::text(long));
}

#[test]
fn no_takeover_sends_incompressible_data_as_is() {
    let (mut client, mut server) = pair(params(true, true, 15, 15));
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..2000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    server.send(&Message::binary(noise.clone())).unwrap();
    let bytes = wire(&mut server);
    assert_eq!(bytes[0], 0x82, "deflate did not help: sent without RSV1");
    assert_eq!(message(events(&mut client, &bytes)), Message::binary(noise));
}

#[test]
fn fragmented_compressed_message_inflates_with_rsv1_on_the_first_frame_only() {
    let (mut client, _server) = pair(DeflateParams::default());
    let text = "fragmented and compressed: ".repeat(50);
    let data = compress(text.as_bytes());
    let (a, rest) = data.split_at(data.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut bytes = frame(false, true, 1, a);
    // A control frame between fragments, never compressed.
    bytes.extend(frame(true, false, 9, b"ping"));
    bytes.extend(frame(false, false, 0, b));
    bytes.extend(frame(true, false, 0, c));
    let got = events(&mut client, &bytes);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(matches!(got[0], Ok(Event::Ping(_))));
    assert!(matches!(&got[1], Ok(Event::Message(m)) if *m == Message::text(text.clone())));
    // Byte by byte, too, and an empty final fragment.
    let (mut client, _server) = pair(DeflateParams::default());
    let mut bytes = frame(false, true, 2, &data);
    bytes.extend(frame(true, false, 0, b""));
    let mut got = Vec::new();
    for byte in bytes {
        got.extend(events(&mut client, &[byte]));
    }
    assert_eq!(message(got), Message::binary(text.into_bytes()));
}

#[test]
fn control_frames_are_never_compressed() {
    let (mut client, mut server) = pair(DeflateParams::default());
    client.ping(&[b'p'; 100]).unwrap();
    let bytes = wire(&mut client);
    assert_eq!(bytes[0], 0x89);
    let _ = events(&mut server, &bytes);
    let pong = wire(&mut server);
    assert_eq!(pong[0], 0x8a);
    // RFC 7692 §6: RSV1 on a control frame or a continuation fails the connection.
    let (mut client, _server) = pair(DeflateParams::default());
    assert_fails_with(events(&mut client, &frame(true, true, 9, b"")), CloseCode::PROTOCOL_ERROR);
    let (mut client, _server) = pair(DeflateParams::default());
    let mut bytes = frame(false, true, 1, &compress(b"abc"));
    bytes.extend(frame(true, true, 0, b""));
    assert_fails_with(events(&mut client, &bytes), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn a_final_block_from_the_peer_is_accepted() {
    // Some peers end each message with BFINAL (Z_FINISH) instead of a sync flush.
    let (mut client, _server) = pair(DeflateParams::default());
    for text in ["first message, finished", "second message, a new stream"] {
        let mut c = Compress::new(Compression::default(), false);
        let mut data = Vec::with_capacity(256);
        c.compress_vec(text.as_bytes(), &mut data, FlushCompress::Finish).unwrap();
        assert_eq!(message(events(&mut client, &frame(true, true, 1, &data))), Message::text(text));
    }
}

#[test]
fn corrupt_data_fails_with_1002() {
    let (mut client, _server) = pair(DeflateParams::default());
    let got = events(&mut client, &frame(true, true, 1, &[0xff, 0xfe, 0xfd, 0xfc]));
    let err = got.into_iter().find_map(Result::err).unwrap();
    assert!(
        matches!(&err, Error::Protocol(p) if *p == ProtocolError::InvalidCompressedData),
        "{err:?}"
    );
    assert_eq!(err.close_code(), Some(CloseCode::PROTOCOL_ERROR));
    // The close frame owed to the peer is queued, uncompressed.
    let bytes = wire(&mut client);
    assert_eq!(bytes[0], 0x88);
}

#[test]
fn invalid_utf8_after_inflate_fails_with_1007() {
    let (mut client, _server) = pair(DeflateParams::default());
    let data = compress(&[b'a', 0xff, b'b']);
    assert_fails_with(
        events(&mut client, &frame(true, true, 1, &data)),
        CloseCode::INVALID_PAYLOAD,
    );
}

// ----- the size limit: decompression bombs -----

#[test]
fn inflated_size_limit_is_exact() {
    let limit = 4096;
    let config = DeflateConfig::default().with_threshold(0);
    let (mut client, _server) = pair_with(DeflateParams::default(), &config, limit);
    let fits = vec![b'z'; limit];
    assert_eq!(
        message(events(&mut client, &frame(true, true, 2, &compress(&fits)))),
        Message::binary(fits)
    );
    let over = vec![b'z'; limit + 1];
    assert_fails_with(
        events(&mut client, &frame(true, true, 2, &compress(&over))),
        CloseCode::MESSAGE_TOO_BIG,
    );
}

#[test]
fn bomb_stops_at_the_limit_without_inflating_further() {
    const LIMIT: usize = 1 << 20;
    let zeros = vec![0u8; 10 << 20];
    let bomb = compress(&zeros);
    assert!(bomb.len() < 20 << 10, "10 MB of zeros deflates to {} bytes", bomb.len());

    // The codec alone: the output never exceeds the limit, in length or in capacity.
    let mut codec = Deflate::new(Role::Client, DeflateParams::default(), &DeflateConfig::default());
    let mut out = BytesMut::new();
    let err = codec.decode(&bomb, true, &mut out, LIMIT).unwrap_err();
    assert_eq!(err.close_code(), Some(CloseCode::MESSAGE_TOO_BIG));
    assert_eq!(out.len(), LIMIT);
    assert!(out.capacity() <= LIMIT, "capacity {}", out.capacity());

    // Split over many frames, through a connection: 1009 and a close frame queued.
    let (mut client, _server) =
        pair_with(DeflateParams::default(), &DeflateConfig::default(), LIMIT);
    let chunks: Vec<&[u8]> = bomb.chunks(1000).collect();
    let mut bytes = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        bytes.extend(frame(i + 1 == chunks.len(), i == 0, if i == 0 { 2 } else { 0 }, chunk));
    }
    assert_fails_with(events(&mut client, &bytes), CloseCode::MESSAGE_TOO_BIG);
    let close = wire(&mut client);
    assert_eq!(close[0], 0x88);
    // A client's frame: 2 header bytes, the mask [1, 2, 3, 4], then the masked code.
    assert_eq!([close[6] ^ 1, close[7] ^ 2], 1009u16.to_be_bytes());
}

#[test]
fn small_messages_do_not_pin_large_buffers() {
    let mut codec = Deflate::new(Role::Client, DeflateParams::default(), &DeflateConfig::default());
    let text = b"a short message, compressed, compressed, compressed";
    let mut out = BytesMut::new();
    codec.decode(&compress(text), true, &mut out, 1 << 20).unwrap();
    assert_eq!(&out[..], text);
    assert!(out.capacity() <= 4096, "capacity {}", out.capacity());
}

// ----- context takeover without kept streams (`DeflateConfig::retain_streams` off) -----

/// JSON-like records from a small vocabulary, different for each `seed`: they repeat within
/// and across messages, as chat traffic does.
fn records(seed: u64, len: usize) -> String {
    const WORDS: [&str; 8] = ["alpha", "bravo", "charlie", "delta", "echo", "golf", "kilo", "lima"];
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = String::with_capacity(len + 64);
    while out.len() < len {
        let n = next();
        out.push_str(&format!(
            "{{\"user\":\"{}\",\"seq\":{},\"text\":\"{} {}\"}},",
            WORDS[(n % 8) as usize],
            n % 10_000,
            WORDS[((n >> 8) % 8) as usize],
            WORDS[((n >> 16) % 8) as usize],
        ));
    }
    out.truncate(len);
    out
}

/// The payload length of the one frame in `bytes` (unmasked or masked).
fn payload_len(bytes: &[u8]) -> usize {
    let mask = if bytes[1] & 0x80 != 0 { 4 } else { 0 };
    match bytes[1] & 0x7f {
        126 => bytes.len() - 4 - mask,
        127 => bytes.len() - 10 - mask,
        _ => bytes.len() - 2 - mask,
    }
}

#[test]
fn rebuilt_streams_continue_the_peers_stream_in_both_directions() {
    // One end keeps only the windows' bytes, the other keeps zlib's streams: every message,
    // over many windows' worth of traffic, must inflate on both, with back-references into
    // earlier messages (a repeat comes out far smaller than its first copy).
    for bits in [9, 12, 15] {
        for compact_role in [Role::Client, Role::Server] {
            let p = params(false, false, bits, bits);
            let compact = DeflateConfig::default().with_threshold(0);
            let retained = compact.clone().with_retained_streams(true);
            let (client_config, server_config) = match compact_role {
                Role::Client => (&compact, &retained),
                Role::Server => (&retained, &compact),
            };
            let now = Instant::now();
            let conn = ProtocolConfig::default().with_keepalive(None, None);
            let mut client = Connection::client(conn.clone(), || [1, 2, 3, 4], now);
            let mut server = Connection::server(conn, now);
            client.set_extension(Box::new(Deflate::new(Role::Client, p, client_config)));
            server.set_extension(Box::new(Deflate::new(Role::Server, p, server_config)));
            let window = 1usize << bits;
            let mut total = 0;
            let mut seed = 0;
            while total < 4 * window + 100_000 {
                seed += 1;
                // Sizes from a few bytes to twice the window, so that history is cut at
                // every place.
                let len = [7, 300, 1000, window / 2, window + 10, 2 * window][seed as usize % 6];
                let text = records(seed % 5, len);
                total += len;
                client.send(&Message::text(text.clone())).unwrap();
                let c2s = wire(&mut client);
                assert_eq!(message(events(&mut server, &c2s)), Message::text(text.clone()));
                server.send(&Message::text(text.clone())).unwrap();
                let s2c = wire(&mut server);
                assert_eq!(message(events(&mut client, &s2c)), Message::text(text.clone()));
            }
            // A message the window still holds whole goes out as little more than references.
            let text = records(99, window / 4);
            let mut sizes = Vec::new();
            for _ in 0..2 {
                client.send(&Message::text(text.clone())).unwrap();
                let c2s = wire(&mut client);
                assert_eq!(message(events(&mut server, &c2s)), Message::text(text.clone()));
                server.send(&Message::text(text.clone())).unwrap();
                let s2c = wire(&mut server);
                assert_eq!(message(events(&mut client, &s2c)), Message::text(text.clone()));
                sizes.push((payload_len(&c2s), payload_len(&s2c)));
            }
            assert!(
                sizes[1].0 * 4 < sizes[0].0 && sizes[1].1 * 4 < sizes[0].1,
                "{bits} bits, compact {compact_role:?}: {sizes:?}"
            );
        }
    }
}

#[test]
fn rebuilt_streams_inflate_fragments_and_forget_after_a_final_block() {
    // A peer's continuous stream, fragmented, arriving at an end that keeps only the window.
    let (mut client, _server) = pair(DeflateParams::default());
    let mut peer = Compress::new_with_window_bits(Compression::default(), false, 15);
    let mut sync = |data: &[u8]| {
        let mut out = Vec::with_capacity(data.len() + 1024);
        let start = peer.total_in();
        while peer.total_in() - start < data.len() as u64 || out.len() == out.capacity() {
            let done = (peer.total_in() - start) as usize;
            out.reserve(1024);
            peer.compress_vec(&data[done..], &mut out, FlushCompress::Sync).unwrap();
        }
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        out
    };
    for seed in 0..20 {
        let text = records(seed % 3, 3000);
        let data = sync(text.as_bytes());
        let (a, b) = data.split_at(data.len() / 2);
        let mut bytes = frame(false, true, 1, a);
        bytes.extend(frame(true, false, 0, b));
        assert_eq!(message(events(&mut client, &bytes)), Message::text(text));
    }
    // After a message that ends its stream, the next one starts from nothing.
    let mut finisher = Compress::new(Compression::default(), false);
    let mut data = Vec::with_capacity(4096);
    finisher.compress_vec(records(1, 500).as_bytes(), &mut data, FlushCompress::Finish).unwrap();
    assert_eq!(
        message(events(&mut client, &frame(true, true, 1, &data))),
        Message::text(records(1, 500))
    );
    let fresh = compress(records(2, 500).as_bytes());
    assert_eq!(
        message(events(&mut client, &frame(true, true, 1, &fresh))),
        Message::text(records(2, 500))
    );
}
