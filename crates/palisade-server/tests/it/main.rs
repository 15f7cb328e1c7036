//! Integration tests of the server over real TCP on 127.0.0.1. The test client is built from
//! the sans-I/O handshake and palisade-conn (the server must not depend on the client crate).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderName, HeaderValue, StatusCode};
use palisade_conn::{Config, WebSocket};
use palisade_error::{CloseCode, Error};
use palisade_proto::Message;
use palisade_proto::connection::Connection;
use palisade_proto::handshake::{ClientHandshake, HeadLimits, HeadReader, ResponseOutcome};
use palisade_server::{
    Accept, CloseWith, ConnectionInfo, Decision, Handshake, HandshakeRequest, OriginPolicy,
    Rejection, Server, ServerBuilder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod faults;
mod hostile;
mod mount;
mod tls;
mod ui;

/// What the server answered to an upgrade.
enum Answer {
    Open(WebSocket, Option<String>),
    Refused { status: StatusCode, headers: http::HeaderMap, body: String },
}

impl Answer {
    fn open(self) -> WebSocket {
        match self {
            Answer::Open(c, _) => c,
            Answer::Refused { status, body, .. } => panic!("refused with {status}: {body}"),
        }
    }

    fn refused(self) -> (StatusCode, http::HeaderMap, String) {
        match self {
            Answer::Open(..) => panic!("expected a refusal, the connection opened"),
            Answer::Refused { status, headers, body } => (status, headers, body),
        }
    }
}

/// Taken for writing by the test that reads the logs, for reading by the hostile-peer tests:
/// the log test installs a thread-local subscriber, and tracing caches a callsite's interest when
/// the callsite is first hit, so the hundreds of connections the hostile tests open on other
/// threads at that moment could leave the connection span cached as uninteresting.
static LOGS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn quiet() -> Config {
    Config::default().with_keepalive(None, None)
}

/// Opens a WebSocket to `addr` at `target` with extra headers and offered subprotocols.
async fn connect(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
    protocols: &[&str],
) -> Answer {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connect_on(tcp, &format!("ws://{addr}{target}"), headers, protocols).await
}

/// Runs the client side of the handshake on an open stream (TCP or TLS).
async fn connect_on<S>(
    mut stream: S,
    uri: &str,
    headers: &[(&str, &str)],
    protocols: &[&str],
) -> Answer
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let uri: http::Uri = uri.parse().unwrap();
    let mut hs = ClientHandshake::new(&uri, *b"0123456789abcdef").unwrap();
    if !protocols.is_empty() {
        hs = hs.with_subprotocols(protocols.iter().copied()).unwrap();
    }
    for (k, v) in headers {
        hs = hs
            .with_header(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            )
            .unwrap();
    }
    let mut out = Vec::new();
    hs.write_request(&mut out);
    stream.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let mut reader = HeadReader::new(HeadLimits::default());
    let head_len = loop {
        if let Some(n) = reader.feed(&buf).unwrap() {
            break n;
        }
        assert!(stream.read_buf(&mut buf).await.unwrap() > 0, "server closed during handshake");
    };
    match hs.read_response(&buf[..head_len], &HeadLimits::default()).unwrap() {
        ResponseOutcome::Upgraded(n) => {
            let conn =
                Connection::client(quiet().protocol, || [9, 8, 7, 6], std::time::Instant::now());
            let leftover = buf.split_off(head_len);
            Answer::Open(WebSocket::from_parts(stream, conn, quiet(), &leftover), n.subprotocol)
        }
        ResponseOutcome::NotUpgraded(resp) => {
            let mut rest = buf.split_off(head_len).to_vec();
            stream.read_to_end(&mut rest).await.unwrap();
            Answer::Refused {
                status: resp.status(),
                headers: resp.headers().clone(),
                body: String::from_utf8(rest).unwrap(),
            }
        }
    }
}

/// Sends raw bytes and returns the whole answer as text.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

fn upgrade_request(extra: &str) -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

async fn echo(ws: WebSocket, _: ConnectionInfo) -> Result<(), Error> {
    loop {
        let m = ws.recv().await?;
        ws.send(m).await?;
    }
}

async fn start(builder: ServerBuilder) -> palisade_server::Running {
    builder.with_config(quiet()).build().bind("127.0.0.1:0").await.unwrap()
}

#[tokio::test]
async fn echo_on_every_path_and_clean_close() {
    let server = start(Server::builder().fallback(echo)).await;
    for path in ["/", "/a/b?c=d"] {
        let c = connect(server.local_addr(), path, &[], &[]).await.open();
        c.send("text").await.unwrap();
        assert_eq!(c.recv().await.unwrap(), Message::text("text"));
        c.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(c.recv().await.unwrap(), Message::binary(vec![1, 2, 3]));
        c.close(CloseCode::NORMAL, "bye").await.unwrap();
    }
    // Bound to port 0, it reports the real port.
    assert_ne!(server.local_addr().port(), 0);
}

#[tokio::test]
async fn hook_rejects_with_status_headers_and_json_body() {
    let server =
        start(Server::builder().fallback(echo).on_handshake(|req: HandshakeRequest| async move {
            if req.bearer_token() == Some("good") {
                Accept::new().into()
            } else {
                Decision::Reject(
                    Rejection::unauthorized("Bearer realm=\"test\"")
                        .with_json(&serde_json::json!({"error": "invalid_token"})),
                )
            }
        }))
        .await;
    let (status, headers, body) =
        connect(server.local_addr(), "/", &[("authorization", "Bearer bad")], &[]).await.refused();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"test\"");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body, r#"{"error":"invalid_token"}"#);
    connect(server.local_addr(), "/", &[("authorization", "Bearer good")], &[]).await.open();
}

#[tokio::test]
async fn hook_can_accept_then_close_for_browsers() {
    let server = start(
        Server::builder()
            .fallback(echo)
            .on_handshake(|_req| async { palisade_server::close_unauthorized("log in first") }),
    )
    .await;
    let c = connect(server.local_addr(), "/", &[], &[]).await.open();
    let err = c.recv().await.unwrap_err();
    let info = err.connection_closed().unwrap();
    assert_eq!(info.received.as_ref().unwrap().code(), CloseCode::UNAUTHORIZED);
    assert_eq!(info.received.as_ref().unwrap().reason(), "log in first");
}

#[tokio::test]
async fn accept_hands_data_to_the_handler_and_picks_a_subprotocol() {
    // Neither `Clone` nor `Sync`: the value is moved into the handler.
    struct User(&'static str, std::cell::Cell<u8>);
    let server = start(
        Server::builder()
            .fallback(
                |ws: WebSocket, Handshake(user): Handshake<User>, info: ConnectionInfo| async move {
                    assert_eq!(user.1.get(), 0);
                    let user = user.0;
                    ws.send(format!("{user} via {}", info.subprotocol().unwrap_or("-"))).await?;
                    ws.recv().await.map(|_| ())
                },
            )
            .on_handshake(|req: HandshakeRequest| async move {
                // A token smuggled in as a subprotocol: accept with the real protocol.
                match req.subprotocol_token("token.") {
                    Some("t1") => Accept::new()
                        .with_subprotocol("chat")
                        .with_value(User("alice", std::cell::Cell::new(0)))
                        .into(),
                    _ => Rejection::forbidden().into(),
                }
            }),
    )
    .await;
    let Answer::Open(c, proto) =
        connect(server.local_addr(), "/", &[], &["chat", "token.t1"]).await
    else {
        panic!("refused")
    };
    assert_eq!(proto.as_deref(), Some("chat"), "the token is never echoed as the protocol");
    assert_eq!(c.recv().await.unwrap(), Message::text("alice via chat"));
}

#[tokio::test]
async fn origin_allow_list() {
    let server = start(
        Server::builder().fallback(echo).with_allowed_origins(
            OriginPolicy::new(["https://app.example.com", "https://*.example.org"])
                .with_missing_allowed(false),
        ),
    )
    .await;
    let addr = server.local_addr();
    connect(addr, "/", &[("origin", "https://app.example.com")], &[]).await.open();
    connect(addr, "/", &[("origin", "https://x.example.org")], &[]).await.open();
    for bad in [Some("https://evil.example.net"), Some("null"), None] {
        let headers: Vec<(&str, &str)> = bad.map(|o| ("origin", o)).into_iter().collect();
        let (status, _, body) = connect(addr, "/", &headers, &[]).await.refused();
        assert_eq!(status, StatusCode::FORBIDDEN, "{bad:?}");
        // The body names the policy, never the origin received.
        assert_eq!(
            body,
            "403 Forbidden\n\nThis server did not accept the WebSocket handshake: origin not \
             allowed.\n"
        );
    }
}

/// `with_same_host_allowed`: the `Origin` Python's `websocket-client` makes up from its URL
/// (`http://HOST:PORT`) is the request's `Host`, and is let in; other origins are not.
#[tokio::test]
async fn origin_of_the_same_host_when_allowed() {
    let server = start(Server::builder().fallback(echo).with_allowed_origins(
        OriginPolicy::new(["https://app.example.com"]).with_same_host_allowed(true),
    ))
    .await;
    let addr = server.local_addr();
    let same = format!("http://{addr}");
    connect(addr, "/", &[("origin", &same)], &[]).await.open();
    let (status, _, _) =
        connect(addr, "/", &[("origin", "http://127.0.0.1:1")], &[]).await.refused();
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn subprotocol_preference_and_requirement() {
    let server = start(
        Server::builder().fallback(echo).with_subprotocols(["v2", "v1"]).require_subprotocol(true),
    )
    .await;
    let addr = server.local_addr();
    let Answer::Open(_, p) = connect(addr, "/", &[], &["v1", "v2"]).await else { panic!() };
    assert_eq!(p.as_deref(), Some("v2"), "server preference wins");
    let Answer::Open(_, p) = connect(addr, "/", &[], &["v1"]).await else { panic!() };
    assert_eq!(p.as_deref(), Some("v1"));
    let (status, _, _) = connect(addr, "/", &[], &["v3"]).await.refused();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = connect(addr, "/", &[], &[]).await.refused();
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn routing_by_path_and_404() {
    let server =
        start(Server::builder().route("/echo", echo).route(
            "/hello",
            |ws: WebSocket, _: ConnectionInfo| async move { ws.send("hello").await },
        ))
        .await;
    let addr = server.local_addr();
    let c = connect(addr, "/hello", &[], &[]).await.open();
    assert_eq!(c.recv().await.unwrap(), Message::text("hello"));
    connect(addr, "/echo", &[], &[]).await.open();
    let (status, _, _) = connect(addr, "/nope", &[], &[]).await.refused();
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn connection_limits_total_and_per_ip() {
    let server =
        start(Server::builder().fallback(echo).with_max_connections(2).with_retry_after(7)).await;
    let addr = server.local_addr();
    let _a = connect(addr, "/", &[], &[]).await.open();
    let _b = connect(addr, "/", &[], &[]).await.open();
    let (status, headers, _) = connect(addr, "/", &[], &[]).await.refused();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "7");

    let server = start(Server::builder().fallback(echo).with_max_connections_per_ip(1)).await;
    let addr = server.local_addr();
    let a = connect(addr, "/", &[], &[]).await.open();
    let (status, headers, _) = connect(addr, "/", &[], &[]).await.refused();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key("retry-after"));
    // Closing one frees its slot.
    a.close(CloseCode::NORMAL, "").await.unwrap();
    let mut opened = false;
    for _ in 0..50 {
        if let Answer::Open(..) = connect(addr, "/", &[], &[]).await {
            opened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(opened, "the slot is released after close");
}

/// A refused connection counts against the limit until its refusal is written and the server
/// lets go of it, not only until the decision.
#[tokio::test]
async fn a_refused_connection_counts_until_its_refusal_is_done() {
    let server = start(Server::builder().route("/echo", echo).with_max_connections(1)).await;
    let addr = server.local_addr();
    let mut refused = TcpStream::connect(addr).await.unwrap();
    refused
        .write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    refused.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 404");
    // The server is still draining the refused connection (its client has not closed).
    let (status, _, _) = connect(addr, "/echo", &[], &[]).await.refused();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    drop(refused);
    let mut opened = false;
    for _ in 0..50 {
        if let Answer::Open(..) = connect(addr, "/echo", &[], &[]).await {
            opened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(opened, "the slot is released once the refused client is gone");
}

#[tokio::test]
async fn slowloris_gets_408_after_the_handshake_timeout() {
    let server =
        start(Server::builder().fallback(echo).with_handshake_timeout(Duration::from_millis(200)))
            .await;
    let answer = raw(server.local_addr(), b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn plain_http_answers_for_what_is_not_a_valid_upgrade() {
    let server = start(Server::builder().fallback(echo)).await;
    let addr = server.local_addr();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"POST / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "HTTP/1.1 405"),
        (b"GET / HTTP/1.0\r\nHost: x\r\n\r\n".to_vec(), "HTTP/1.1 505"),
        (
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000)).into_bytes(),
            "HTTP/1.1 414",
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(9000))
                .into_bytes(),
            "HTTP/1.1 431",
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-H: 1\r\n".repeat(100)).into_bytes(),
            "HTTP/1.1 431",
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "HTTP/1.1 426"),
        (b"garbage\r\n\r\n".to_vec(), "HTTP/1.1 400"),
    ];
    for (request, expected) in cases {
        let answer = raw(addr, &request).await;
        assert!(answer.starts_with(expected), "expected {expected}, got {answer}");
    }
    let mut v8 = upgrade_request("");
    let text = String::from_utf8(v8.clone()).unwrap().replace("Version: 13", "Version: 8");
    v8 = text.into_bytes();
    let answer = raw(addr, &v8).await;
    assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
    assert!(
        answer.contains("Sec-WebSocket-Version: 13")
            || answer.contains("sec-websocket-version: 13"),
        "{answer}"
    );
    let no_key = String::from_utf8(upgrade_request(""))
        .unwrap()
        .replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    assert!(raw(addr, no_key.as_bytes()).await.starts_with("HTTP/1.1 400"));
    // The 101 answer for the RFC's example key.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&upgrade_request("")).await.unwrap();
    let mut buf = vec![0; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(answer.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
}

#[tokio::test]
async fn http_hook_answers_plain_requests() {
    let server =
        start(Server::builder().fallback(echo).on_http(|req: HandshakeRequest| async move {
            (req.path() == "/health").then(|| http::Response::new(bytes::Bytes::from_static(b"ok")))
        }))
        .await;
    let answer = raw(server.local_addr(), b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"));
    connect(server.local_addr(), "/ws", &[], &[]).await.open();
}

#[tokio::test]
async fn handler_errors_map_to_close_codes_and_panics_are_contained() {
    let server = start(Server::builder().fallback(|ws: WebSocket, _: ConnectionInfo| async move {
        let m = ws.recv().await?;
        match m.as_text() {
            Some("fail") => Err::<(), Box<dyn std::error::Error + Send + Sync>>(
                "db password=hunter2 down".into(),
            ),
            Some("custom") => Err(CloseWith::new(CloseCode(4004), "not found").into()),
            Some("panic") => panic!("handler bug"),
            _ => Ok(()),
        }
    }))
    .await;
    let addr = server.local_addr();
    for (msg, code, reason) in [
        ("fail", CloseCode::INTERNAL_ERROR, "internal error"),
        ("custom", CloseCode(4004), "not found"),
        ("panic", CloseCode::INTERNAL_ERROR, "internal error"),
        ("ok", CloseCode::NORMAL, ""),
    ] {
        let c = connect(addr, "/", &[], &[]).await.open();
        c.send(msg).await.unwrap();
        let err = c.recv().await.unwrap_err();
        let frame = err.connection_closed().unwrap().received.clone().unwrap();
        assert_eq!((frame.code(), frame.reason()), (code, reason), "{msg}");
    }
    // The server lives on after the panic.
    connect(addr, "/", &[], &[]).await.open();
}

/// An error wrapped in another (a `Box<dyn Error>` whose source it is, an `anyhow` context)
/// still chooses its close frame; an application's own code reaches the peer with its reason;
/// a handler may also return `()`.
#[tokio::test]
async fn wrapped_and_application_errors_choose_their_close_frame() {
    #[derive(Debug)]
    struct Joining(CloseWith);
    impl std::fmt::Display for Joining {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("while joining")
        }
    }
    impl std::error::Error for Joining {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let boxed = |ws: WebSocket| async move {
        ws.recv().await?;
        Err::<(), palisade_server::BoxError>(Box::new(Joining(CloseWith::new(
            CloseCode(4004),
            "no such room",
        ))))
    };
    let application = |ws: WebSocket| async move {
        ws.recv().await?;
        let ended = palisade_error::ApplicationError::closed(CloseCode(4009), "kicked").unwrap();
        Err::<(), Error>(ended.into())
    };
    let undecodable = |ws: WebSocket| async move {
        ws.recv().await?;
        Err::<(), Error>(
            palisade_error::ApplicationError::UndecodablePayload {
                format: "JSON",
                detail: "expected value at line 1 column 1: secret-input".into(),
            }
            .into(),
        )
    };
    let unit = |ws: WebSocket| async move {
        let _ = ws.recv().await;
    };
    let builder = Server::builder()
        .route("/boxed", boxed)
        .route("/application", application)
        .route("/undecodable", undecodable)
        .route("/unit", unit);
    #[cfg(feature = "anyhow")]
    let builder = builder.route("/anyhow", |ws: WebSocket| async move {
        ws.recv().await?;
        let err = anyhow::Error::new(CloseWith::new(CloseCode(4005), "full"));
        Err::<(), anyhow::Error>(err.context("joining the room"))
    });
    let server = start(builder).await;
    let mut cases = vec![
        ("/boxed", CloseCode(4004), "no such room"),
        ("/application", CloseCode(4009), "kicked"),
        ("/undecodable", CloseCode::INVALID_PAYLOAD, "invalid payload data"),
        ("/unit", CloseCode::NORMAL, ""),
    ];
    if cfg!(feature = "anyhow") {
        cases.push(("/anyhow", CloseCode(4005), "full"));
    }
    for (path, code, reason) in cases {
        let c = connect(server.local_addr(), path, &[], &[]).await.open();
        c.send("go").await.unwrap();
        let err = c.recv().await.unwrap_err();
        let frame = err.connection_closed().unwrap().received.clone().unwrap();
        assert_eq!((frame.code(), frame.reason()), (code, reason), "{path}");
    }
}

#[tokio::test]
async fn graceful_shutdown_sends_1001_and_reports() {
    let server = start(Server::builder().fallback(echo)).await;
    let addr = server.local_addr();
    let c1 = connect(addr, "/", &[], &[]).await.open();
    let c2 = connect(addr, "/", &[], &[]).await.open();
    // Clients that answer the close handshake.
    let t1 = tokio::spawn(async move { c1.recv().await.unwrap_err() });
    let t2 = tokio::spawn(async move { c2.recv().await.unwrap_err() });
    let summary = server.shutdown(Duration::from_secs(5)).await;
    assert_eq!((summary.closed, summary.aborted), (2, 0));
    for t in [t1, t2] {
        let err = t.await.unwrap();
        assert!(err.is_closed_ok(), "{err:?}");
        assert_eq!(err.connection_closed().unwrap().code(), CloseCode::GOING_AWAY);
        assert!(err.is_retryable(), "1001: come back later");
    }
    assert!(
        TcpStream::connect(addr).await.is_err() || raw(addr, &upgrade_request("")).await.is_empty()
    );
}

#[tokio::test]
async fn shutdown_waits_for_the_peers_close_even_when_the_handler_gives_up_first() {
    // The handler takes a message and answers it 100 ms later: by then the shutdown's 1001 is
    // out, its send fails, and it returns the closure. The peer answers the close only 500 ms
    // in. Until then the connection is not over: the shutdown must wait for that answer
    // (dropping the socket earlier, with the peer's bytes unread, would reset it).
    let server = start(Server::builder().fallback(|ws: WebSocket, _: ConnectionInfo| async move {
        let message = ws.recv().await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        ws.send(message).await
    }))
    .await;
    let c = connect(server.local_addr(), "/", &[], &[]).await.open();
    c.send("hello").await.unwrap();
    let peer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Reading answers the close frame that has been waiting.
        let answering = tokio::time::Instant::now();
        (c.recv().await.unwrap_err(), answering)
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let summary = server.shutdown(Duration::from_secs(5)).await;
    let returned = tokio::time::Instant::now();
    assert_eq!((summary.closed, summary.aborted), (1, 0));
    let (err, answered) = peer.await.unwrap();
    assert_eq!(err.connection_closed().unwrap().code(), CloseCode::GOING_AWAY);
    assert!(
        returned > answered,
        "shutdown returned {:?} before the peer answered",
        answered.saturating_duration_since(returned)
    );
}

#[tokio::test]
async fn a_handler_returning_another_connections_closure_closes_its_own_with_1011() {
    // The closure a handler returns may be some other connection's (an upstream it relayed):
    // its own connection is still open, and is closed as for any failed handler.
    let server = start(Server::builder().fallback(|ws: WebSocket, _: ConnectionInfo| async move {
        ws.recv().await?;
        Err::<(), Error>(Error::ConnectionClosedOk(Box::new(
            palisade_error::ConnectionClosed::abnormal(),
        )))
    }))
    .await;
    let c = connect(server.local_addr(), "/", &[], &[]).await.open();
    c.send("go").await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), c.recv())
        .await
        .expect("closed, not left open")
        .unwrap_err();
    assert_eq!(err.connection_closed().unwrap().code(), CloseCode::INTERNAL_ERROR);
}

#[tokio::test]
async fn shutdown_aborts_connections_that_do_not_close_in_time() {
    let server =
        start(Server::builder().fallback(|_ws: WebSocket, _: ConnectionInfo| async move {
            // A handler that never reads, so the close handshake never completes.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<(), Error>(())
        }))
        .await;
    let _c = connect(server.local_addr(), "/", &[], &[]).await.open();
    let summary = server.shutdown(Duration::from_millis(200)).await;
    assert_eq!((summary.closed, summary.aborted), (0, 1));
}

#[tokio::test]
async fn too_big_message_closes_with_1009() {
    let server = Server::builder()
        .fallback(echo)
        .with_config(quiet().with_max_message_size(1024))
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let c = connect(server.local_addr(), "/", &[], &[]).await.open();
    c.send(Message::binary(vec![0; 2048])).await.unwrap();
    let err = c.recv().await.unwrap_err();
    assert_eq!(err.connection_closed().unwrap().code(), CloseCode::MESSAGE_TOO_BIG);
}

#[tokio::test]
async fn first_message_must_arrive_before_the_deadline() {
    let server = start(Server::builder().fallback(|ws: WebSocket, _: ConnectionInfo| async move {
        let token = palisade_server::auth::first_message(&ws, Duration::from_millis(300)).await?;
        if token.as_text() != Some("token:ok") {
            return Err(CloseWith::new(CloseCode::FORBIDDEN, "bad token").into());
        }
        ws.send("welcome").await?;
        ws.recv().await?;
        Ok::<(), palisade_server::BoxError>(())
    }))
    .await;
    let addr = server.local_addr();
    // On time, with a good token.
    let c = connect(addr, "/", &[], &[]).await.open();
    c.send("token:ok").await.unwrap();
    assert_eq!(c.recv().await.unwrap(), Message::text("welcome"));
    // A bad token: 3003.
    let c = connect(addr, "/", &[], &[]).await.open();
    c.send("token:bad").await.unwrap();
    let err = c.recv().await.unwrap_err();
    assert_eq!(err.connection_closed().unwrap().code(), CloseCode::FORBIDDEN);
    // Silence: 1008 after the deadline.
    let c = connect(addr, "/", &[], &[]).await.open();
    let err = c.recv().await.unwrap_err();
    let frame = err.connection_closed().unwrap().received.clone().unwrap();
    assert_eq!(
        (frame.code(), frame.reason()),
        (CloseCode::POLICY_VIOLATION, "authentication timeout")
    );
}

#[tokio::test]
async fn serves_several_listeners_at_once() {
    let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l2 = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let server =
        Server::builder().fallback(echo).with_config(quiet()).build().serve([l1, l2]).unwrap();
    assert_eq!(server.local_addrs().len(), 2);
    for addr in server.local_addrs().to_vec() {
        let c = connect(addr, "/", &[], &[]).await.open();
        c.send("hi").await.unwrap();
        assert_eq!(c.recv().await.unwrap(), Message::text("hi"));
    }
}

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn logs_say_what_happened_and_never_a_secret() {
    let _alone = LOGS.write().await;
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let secret = "s3cr3t-t0k3n";
    let server = start(
        Server::builder()
            .fallback(echo)
            .with_allowed_origins(OriginPolicy::new(["https://app.example.com"]))
            .on_handshake(move |req: HandshakeRequest| async move {
                match req.query_param("token").as_deref() {
                    Some("good") => Accept::new().into(),
                    _ => Rejection::unauthorized("Bearer").with_log_reason("bad token").into(),
                }
            }),
    )
    .await;
    let addr = server.local_addr();
    let c =
        connect(addr, "/chat?token=good", &[("authorization", &format!("Bearer {secret}"))], &[])
            .await
            .open();
    c.send("hello").await.unwrap();
    c.recv().await.unwrap();
    c.close(CloseCode::NORMAL, "bye").await.unwrap();
    let _ = connect(addr, &format!("/chat?token={secret}"), &[], &[]).await.refused();
    let _ = connect(addr, "/chat?token=good", &[("origin", "https://evil.example")], &[])
        .await
        .refused();
    // Let the server tasks log the ends of the connections.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("connection open"), "{text}");
    assert!(text.contains("connection closed"), "{text}");
    // Both close frames, each under its own name: the client's 1000 "bye", and our answer.
    assert!(text.contains("received_code=1000 received_reason=\"bye\""), "{text}");
    assert!(text.contains("sent_code=1000"), "{text}");
    assert!(text.contains("messages_in=1"), "{text}");
    assert!(text.contains("path=\"/chat\""), "a span per connection names the path: {text}");
    assert!(text.contains("status=401") && text.contains("bad token"), "{text}");
    assert!(text.contains("status=403") && text.contains("evil.example"), "{text}");
    assert!(!text.contains(secret), "a secret reached the log: {text}");
}

#[tokio::test]
async fn compression_declines_a_malformed_offer_and_takes_the_next() {
    use palisade_server::DeflateConfig;
    let server =
        start(Server::builder().fallback(echo).with_compression(DeflateConfig::default())).await;
    let addr = server.local_addr();
    // Reads the response head only: an opened connection would keep `raw` waiting.
    let head = async |request: &[u8]| {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut byte)).await;
            assert_eq!(n.unwrap().unwrap(), 1, "the head ended early: {got:?}");
            got.push(byte[0]);
        }
        String::from_utf8(got).unwrap().to_ascii_lowercase()
    };
    // RFC 7692 §7: a repeated parameter makes the server decline that offer, not the handshake.
    let offers = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
                  server_no_context_takeover, permessage-deflate; client_max_window_bits=10\r\n";
    let answer = head(&upgrade_request(offers)).await;
    assert!(answer.starts_with("http/1.1 101"), "{answer}");
    assert!(
        answer.contains("sec-websocket-extensions: permessage-deflate; client_max_window_bits=10"),
        "{answer}"
    );
    // The only offer declined: the connection opens uncompressed.
    let alone = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=9; \
                 client_max_window_bits=9\r\n";
    let answer = head(&upgrade_request(alone)).await;
    assert!(answer.starts_with("http/1.1 101"), "{answer}");
    assert!(!answer.contains("sec-websocket-extensions"), "{answer}");
    // Syntax the grammar refuses is still 400.
    let broken = "Sec-WebSocket-Extensions: permessage-deflate; =1\r\n";
    let answer = raw(addr, &upgrade_request(broken)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    server.shutdown(Duration::from_secs(1)).await;
}
