//! The targets on the protocol core (palisade-proto), one function per target: the handshake's
//! here, the frame layer's in `frame.rs`, permessage-deflate's inflater in `deflate.rs`, and the
//! whole core (handshake, connection, deflate) in `core.rs`.
//!
//! The stable test module `crates/palisade-proto/tests/it/fuzz_corpus.rs` includes this file
//! and replays the corpora of these targets through the same functions, so a crash found once
//! stays a regression test. Each function states the properties it checks beyond "does not
//! panic".

mod connection;
mod deflate;
mod frame;

pub use connection::connection;
pub use deflate::deflate_inflate;
pub use frame::{frame_decoder, frame_header};
use palisade_proto::handshake::{
    AcceptOptions, ClientHandshake, HeadLimits, HeadReader, Key, ResponseOutcome, UpgradeRequest,
    format_extensions, parse_extensions, parse_subprotocols, rejection, write_response,
};

/// Limits small enough for libFuzzer's inputs (4 KiB by default) to cross each of them.
fn limits() -> HeadLimits {
    HeadLimits::default()
        .with_max_start_line(256)
        .with_max_header_line(256)
        .with_max_headers(16)
        .with_max_head(2048)
}

/// Reads a head from `data` both in one piece and one byte at a time, and checks that the
/// verdicts agree. Feeding byte by byte is cheap only because the reader is linear: a
/// quadratic regression shows up as fuzzer timeouts.
fn read_head(data: &[u8], limits: HeadLimits) -> Option<usize> {
    let whole = HeadReader::new(limits).feed(data);
    let mut reader = HeadReader::new(limits);
    let mut bytewise = Ok(None);
    for end in 0..=data.len() {
        let scanned = reader.scanned();
        bytewise = reader.feed(&data[..end]);
        assert!(reader.scanned() >= scanned, "the scan position moved backwards");
        if !matches!(bytewise, Ok(None)) {
            break;
        }
    }
    assert_eq!(format!("{whole:?}"), format!("{bytewise:?}"), "split input changed the verdict");
    match whole {
        Ok(Some(len)) => Some(len),
        Ok(None) => None,
        Err(err) => {
            check_rejection(&err);
            None
        }
    }
}

/// A rejection always has an error status and a body matching its `Content-Length`.
fn check_rejection(err: &palisade_proto::error::Error) {
    let response = rejection(err);
    assert!(response.status().as_u16() >= 300, "{err}");
    let length = response.headers()["content-length"].to_str().expect("ASCII digits");
    assert_eq!(length, response.body().len().to_string());
    let mut out = Vec::new();
    write_response(&response, response.body(), &mut out);
}

/// Target `handshake_request`: `data` is what a client sent a server.
///
/// Checks that the head reader gives the same verdict however the input is split, that a
/// refusal is a well-formed error response, and that a valid request can be accepted with its
/// first offered subprotocol and extension.
pub fn handshake_request(data: &[u8]) {
    let limits = limits();
    let Some(len) = read_head(data, limits) else { return };
    match UpgradeRequest::parse(&data[..len], &limits) {
        Ok(request) => {
            let mut options = AcceptOptions::default();
            if let Some(protocol) = request.subprotocols().first() {
                options = options.with_subprotocol(protocol.clone());
            }
            options =
                options.with_extensions(request.extensions().iter().take(1).cloned().collect());
            let response = request.accept(options).expect("accepting what was offered succeeds");
            // Parsed bytes are HTTP/1.1, which always has a key (HTTP/2's form comes only
            // from a request marked by an HTTP/2 server).
            let key = request.key().expect("an HTTP/1.1 upgrade has a key");
            assert_eq!(response.headers()["sec-websocket-accept"], key.accept().as_str());
            let mut out = Vec::new();
            write_response(&response, &[], &mut out);
        }
        Err(err) => check_rejection(&err),
    }
}

/// The key of the client in [`handshake_response`]: RFC 6455 §1.3's sample nonce, so that
/// seeds can carry the matching `Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
const CLIENT_KEY: [u8; 16] = *b"the sample nonce";

/// Target `handshake_response`: `data` is what a server answered a client that offered the
/// subprotocols `chat` and `superchat` and the extensions `permessage-deflate` and `x-foo`.
///
/// Checks that a 101 accepted as valid chose only what was offered.
pub fn handshake_response(data: &[u8]) {
    let uri = "ws://example.com/chat".parse().expect("a valid URI");
    let client = ClientHandshake::new(&uri, CLIENT_KEY)
        .and_then(|c| c.with_subprotocols(["chat", "superchat"]))
        .and_then(|c| c.with_extensions("permessage-deflate; client_max_window_bits, x-foo"))
        .expect("a valid handshake");
    let limits = limits();
    let Some(len) = read_head(data, limits) else { return };
    match client.read_response(&data[..len], &limits) {
        Ok(ResponseOutcome::Upgraded(negotiated)) => {
            if let Some(protocol) = &negotiated.subprotocol {
                assert!(client.subprotocols().contains(protocol));
            }
            for accepted in &negotiated.extensions {
                assert!(
                    client.extensions().iter().any(|o| o.name.eq_ignore_ascii_case(&accepted.name))
                );
            }
        }
        Ok(ResponseOutcome::NotUpgraded(response)) => {
            assert_ne!(response.status().as_u16(), 101);
        }
        Err(_) => {}
    }
}

/// Target `extensions_header`: `data` is a header value.
///
/// Checks that whatever `parse_extensions` accepts, `format_extensions` formats, and parsing
/// that gives the same offers back; and that what `parse_subprotocols` accepts are tokens.
pub fn extensions_header(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else { return };
    if let Ok(protocols) = parse_subprotocols(value) {
        assert!(!protocols.is_empty());
        assert!(protocols.iter().all(|p| palisade_proto::handshake::is_token(p)));
    }
    if let Ok(offers) = parse_extensions(value) {
        let formatted = format_extensions(&offers).expect("parsed offers format");
        let again = parse_extensions(&formatted).expect("formatted offers parse");
        assert_eq!(again, offers);
    }
    let _ = Key::parse(value);
}
