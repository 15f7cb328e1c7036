//! Refused handshakes: the complete HTTP response palisade's server sends, read by a raw
//! client and by this crate's client.

use std::io::{Read, Write};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use palisade_blocking::{Acceptor, Client, Error, HeadLimits, OriginPolicy};
use palisade_error::HandshakeError;

use crate::socket::UPGRADE;
use crate::support::{OneShot, WAIT};

/// Sends `request` raw and returns the whole answer.
fn answer(acceptor: Acceptor, request: &str) -> (String, Error) {
    let server = OneShot::start(acceptor, |ws| ws.map(drop).unwrap_err());
    let mut tcp = server.tcp();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    (response, server.result())
}

#[test]
fn an_origin_outside_the_list_is_refused_with_403_naming_the_policy() {
    let acceptor = Acceptor::new().with_origins(OriginPolicy::new(["https://app.example"]));
    let request = UPGRADE.replace("Host: x\r\n", "Host: x\r\nOrigin: https://evil.example\r\n");
    let (response, err) = answer(acceptor.clone(), &request);
    assert!(response.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{response}");
    assert!(response.contains("\r\nConnection: close\r\n"), "{response}");
    assert!(response.ends_with("handshake: origin not allowed.\n"), "{response}");
    assert!(!response.contains("evil"), "the request's values stay out of the body");
    assert_eq!(err.status_to_send().map(|s| s.as_u16()), Some(403));

    // This crate's client reads it as the refusal it is, body included.
    let server = OneShot::start(acceptor, |ws| ws.is_err());
    let err = Client::new()
        .with_header(
            HeaderName::from_static("origin"),
            HeaderValue::from_static("https://evil.example"),
        )
        .connect(&server.url)
        .unwrap_err();
    assert_eq!(err.received_status().map(|s| s.as_u16()), Some(403));
    assert!(!err.is_retryable());
    let Error::Handshake(h) = err else { panic!("not a handshake error") };
    let HandshakeError::InvalidStatus(refusal) = *h else { panic!("not a refusal") };
    assert!(refusal.body_text().unwrap().contains("origin not allowed"));
    assert!(server.result());
}

#[test]
fn a_plain_http_request_gets_426_with_the_upgrade_headers() {
    let (response, _) = answer(Acceptor::new(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{response}");
    assert!(response.contains("\r\nUpgrade: websocket\r\n"), "{response}");
    assert!(response.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{response}");
}

#[test]
fn a_head_over_the_limits_gets_431_and_a_silent_client_408() {
    let acceptor = Acceptor::new().with_head_limits(HeadLimits::default().with_max_headers(3));
    let (response, _) = answer(acceptor, UPGRADE);
    assert!(response.starts_with("HTTP/1.1 431 "), "{response}");

    let acceptor = Acceptor::new().with_handshake_timeout(Duration::from_millis(100));
    let (response, err) = answer(acceptor, "GET / HTTP/1.1\r\n");
    assert!(response.starts_with("HTTP/1.1 408 "), "{response}");
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
}

#[test]
fn a_required_subprotocol_missing_is_a_400_the_client_reads() {
    let acceptor = Acceptor::new().with_subprotocols(["chat.v2"]).with_subprotocol_required(true);
    let server = OneShot::start(acceptor, |ws| ws.map(drop).unwrap_err());
    let err = Client::new()
        .with_open_timeout(Some(WAIT))
        .with_subprotocols(["chat.v1"])
        .connect(&server.url)
        .unwrap_err();
    assert_eq!(err.received_status().map(|s| s.as_u16()), Some(400));
    let refused = server.result();
    assert!(matches!(refused, Error::Handshake(_)), "{refused:?}");
}

#[test]
fn the_client_names_the_phase_its_open_timeout_ran_out_in() {
    // A listener that accepts TCP and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let err = Client::new()
        .with_open_timeout(Some(Duration::from_millis(200)))
        .connect(&url)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Timeout(t) if t.phase == palisade_error::TimeoutPhase::Response),
        "{err:?}"
    );
    assert!(err.is_retryable());
    drop(listener);
    let err = Client::new().connect("ws://127.0.0.1:9/#fragment").unwrap_err();
    assert!(matches!(err, Error::InvalidUri(_)), "{err:?}");
}
