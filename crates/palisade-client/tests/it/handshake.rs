//! Connecting: a good server, then each way a handshake can fail, one broken server each.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, header};
use palisade_client::{Client, HeadLimits};
use palisade_error::{Category, CloseCode, Error};
use palisade_error::{
    HandshakeError, HeaderProblem, InvalidMessage, NegotiationError, SecurityError, TimeoutPhase,
    TransportError, UriProblem,
};
use palisade_proto::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::support::*;

#[tokio::test]
async fn connects_sends_and_receives() {
    let server = echo_server().await;
    let ws = client().connect(&server.url("/chat")).await.unwrap();
    assert_eq!(ws.redirects(), 0);
    assert_eq!(ws.subprotocol(), None);
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![7u8; 100_000])).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::binary(vec![7u8; 100_000]));
    ws.close(CloseCode::NORMAL, "bye").await.unwrap();
}

#[tokio::test]
async fn the_request_carries_the_configured_headers() {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    let server = serve(move |mut tcp| {
        let seen = seen.clone();
        async move {
            let head = read_head(&mut tcp).await;
            seen.lock().unwrap().push(head.clone());
            let chosen = if header(&head, "sec-websocket-protocol").is_some() {
                "Sec-WebSocket-Protocol: v2\r\n"
            } else {
                ""
            };
            echo_after_head(tcp, &head, chosen).await;
        }
    })
    .await;
    let url = format!("ws://bob:s3cret@{}/path?token=abc", server.addr);
    let counter = Arc::new(Mutex::new(0));
    let fresh = counter.clone();
    let ws = client()
        .with_origin("https://app.example")
        .with_user_agent(Some("tester/1"))
        .with_subprotocols(["v1", "v2"])
        .with_header(HeaderName::from_static("x-trace"), HeaderValue::from_static("t1"))
        .with_headers_fn(move || {
            let mut n = fresh.lock().unwrap();
            *n += 1;
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static("x-token"), format!("token-{n}").parse().unwrap());
            h
        })
        .connect(&url)
        .await
        .unwrap();
    assert_eq!(ws.subprotocol(), Some("v2"));
    let head = heads.lock().unwrap()[0].clone();
    assert!(head.starts_with("GET /path?token=abc HTTP/1.1\r\n"), "{head}");
    assert_eq!(header(&head, "host"), Some(server.addr.to_string().as_str()));
    assert_eq!(header(&head, "origin"), Some("https://app.example"));
    assert_eq!(header(&head, "user-agent"), Some("tester/1"));
    assert_eq!(header(&head, "sec-websocket-protocol"), Some("v1, v2"));
    assert_eq!(header(&head, "x-trace"), Some("t1"));
    assert_eq!(header(&head, "x-token"), Some("token-1"));
    // User-info becomes basic authentication, never part of the request line.
    assert_eq!(header(&head, "authorization"), Some("Basic Ym9iOnMzY3JldA=="));
    assert!(!head.contains("bob:"));
    // A fresh key for every connection.
    let key1 = header(&head, "sec-websocket-key").unwrap().to_owned();
    let _again = client().connect(&server.url("/")).await.unwrap();
    let head2 = heads.lock().unwrap()[1].clone();
    assert_ne!(header(&head2, "sec-websocket-key").unwrap(), key1);
    assert_eq!(header(&head2, "user-agent"), Some(palisade_client::DEFAULT_USER_AGENT));
}

#[tokio::test]
async fn invalid_urls_fail_before_any_io() {
    // `.invalid` never resolves: an `InvalidUri` (not a transport error) shows no DNS query ran.
    for (url, problem) in [
        ("http://host.invalid/", UriProblem::Scheme),
        ("ws://host.invalid/#x", UriProblem::Fragment),
        ("ws://host.invalid:0/", UriProblem::Port),
        ("ws://host.invalid:70000/", UriProblem::Port),
        ("ws:///nohost", UriProblem::Host),
        ("not a url", UriProblem::Syntax),
    ] {
        match client().connect(url).await {
            Err(Error::InvalidUri(u)) => assert_eq!(u.reason(), problem, "{url}"),
            other => panic!("{url}: {other:?}"),
        }
    }
    let err = client().connect("http://host.invalid/").await.unwrap_err();
    assert_eq!(err.category(), Category::Uri);
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn dns_and_connect_failures_are_transport_errors() {
    let err =
        client().with_open_timeout(None).connect("ws://nonexistent.invalid/").await.unwrap_err();
    assert!(matches!(&err, Error::Transport(t) if matches!(**t, TransportError::Io(_))), "{err:?}");
    assert!(err.to_string().contains("nonexistent.invalid"), "{err}");
    assert!(err.is_retryable());

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = client().connect(&format!("ws://{addr}/")).await.unwrap_err();
    match &err {
        Error::Transport(t) => match &**t {
            TransportError::Io(io) => {
                assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused, "{io}")
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_wrong_accept_key_is_refused() {
    let server = serve(|mut tcp| async move {
        read_head(&mut tcp).await;
        let _ = tcp
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            )
            .await;
    })
    .await;
    let err = client().connect(&server.url("/")).await.unwrap_err();
    assert!(!err.is_retryable());
    match handshake_error(err) {
        HandshakeError::InvalidHeader(h) => {
            assert_eq!(h.name(), "sec-websocket-accept");
            assert!(matches!(h.problem(), HeaderProblem::BadValue { .. }));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn missing_upgrade_headers_are_refused() {
    let server = serve(|mut tcp| async move {
        let head = read_head(&mut tcp).await;
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_for(&head)
        );
        let _ = tcp.write_all(response.as_bytes()).await;
    })
    .await;
    let err = client().connect(&server.url("/")).await.unwrap_err();
    match handshake_error(err) {
        HandshakeError::InvalidUpgrade { header, value } => {
            assert_eq!((header, value), ("upgrade", None))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unoffered_subprotocol_is_refused() {
    let server = serve(|mut tcp| async move {
        let head = read_head(&mut tcp).await;
        let _ =
            tcp.write_all(switching(&head, "Sec-WebSocket-Protocol: admin\r\n").as_bytes()).await;
    })
    .await;
    let err = client().with_subprotocols(["chat"]).connect(&server.url("/")).await.unwrap_err();
    match handshake_error(err) {
        HandshakeError::Negotiation(NegotiationError::UnofferedSubprotocol { protocol }) => {
            assert_eq!(protocol, "admin")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unoffered_extension_is_refused() {
    let server = serve(|mut tcp| async move {
        let head = read_head(&mut tcp).await;
        let _ = tcp
            .write_all(
                switching(&head, "Sec-WebSocket-Extensions: permessage-deflate\r\n").as_bytes(),
            )
            .await;
    })
    .await;
    let err = client().connect(&server.url("/")).await.unwrap_err();
    match handshake_error(err) {
        HandshakeError::Negotiation(NegotiationError::UnofferedExtension { name }) => {
            assert_eq!(name, "permessage-deflate")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_accepts_then_drops_is_a_retryable_transport_error() {
    let server = serve(|mut tcp| async move {
        read_head(&mut tcp).await;
        drop(tcp);
    })
    .await;
    let err = client().connect(&server.url("/")).await.unwrap_err();
    assert!(
        matches!(&err, Error::Transport(t) if matches!(**t, TransportError::UnexpectedEof)),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_truncated_head_is_an_incomplete_message() {
    let server = answering("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n").await;
    let err = client().connect(&server.url("/")).await.unwrap_err();
    assert!(matches!(
        handshake_error(err),
        HandshakeError::InvalidMessage(InvalidMessage::Incomplete)
    ));
}

#[tokio::test]
async fn a_response_head_over_the_limit_is_refused() {
    let server = serve(|mut tcp| async move {
        let head = read_head(&mut tcp).await;
        let padding = format!("X-Pad: {}\r\n", "p".repeat(200));
        let _ = tcp.write_all(switching(&head, &padding).as_bytes()).await;
    })
    .await;
    // Just under: accepted.
    let limits = HeadLimits::default().with_max_head(400);
    client().with_head_limits(limits).connect(&server.url("/")).await.unwrap();
    // Just over: refused while reading, as a security error.
    let limits = HeadLimits::default().with_max_head(250);
    let err = client().with_head_limits(limits).connect(&server.url("/")).await.unwrap_err();
    assert_eq!(err.category(), Category::Security);
    assert!(matches!(
        handshake_error(err),
        HandshakeError::Security(SecurityError::HeadTooLarge { max: 250, .. })
    ));
}

#[tokio::test]
async fn reserved_and_invalid_headers_are_refused_before_sending() {
    let server = echo_server().await;
    let err = client()
        .with_header(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("mine"))
        .connect(&server.url("/"))
        .await
        .unwrap_err();
    assert!(
        matches!(handshake_error(err), HandshakeError::InvalidHeader(h) if h.name() == "sec-websocket-key")
    );
    let err = client().with_origin("bad\r\nvalue").connect(&server.url("/")).await.unwrap_err();
    assert!(
        matches!(handshake_error(err), HandshakeError::InvalidHeader(h) if h.name() == "origin")
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_hits_the_open_timeout() {
    let server = serve(|tcp| async move {
        // Accept, read nothing, answer nothing, keep the connection open.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(tcp);
    })
    .await;
    let err = Client::new()
        .without_proxy()
        .with_open_timeout(Some(Duration::from_secs(10)))
        .connect(&server.url("/"))
        .await
        .unwrap_err();
    // TCP was accepted: the time ran out waiting for the server's answer, which the error says.
    assert!(matches!(err, Error::Timeout(t) if t.phase == TimeoutPhase::Response), "{err:?}");
    assert_eq!(
        err.to_string(),
        "timed out during opening handshake (waiting for the server's response)"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn frames_sent_with_the_101_are_not_lost() {
    let server = serve(|mut tcp| async move {
        let head = read_head(&mut tcp).await;
        let mut bytes = switching(&head, "").into_bytes();
        bytes.extend_from_slice(b"\x81\x05early");
        let _ = tcp.write_all(&bytes).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let ws = client().connect(&server.url("/")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::text("early"));
}

#[cfg(not(feature = "rustls"))]
#[tokio::test]
async fn wss_without_the_rustls_feature_is_a_tls_error() {
    let server = echo_server().await;
    let err = client().connect(&format!("wss://{}/", server.addr)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Transport(t) if matches!(**t, TransportError::Tls { .. })),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}
