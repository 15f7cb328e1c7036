//! palisade's server mounted on axum 0.8 and on plain hyper 1 (`palisade::axum`,
//! `palisade::hyper`), over real TCP: palisade's client and Python `websockets` connect through
//! the mount; refusals keep their whole response; typed handlers, limits, the registry and
//! graceful shutdown work as behind palisade's own accept loop. And the `axum` example's
//! command-line contract, run as a process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use palisade::client::Client;
use palisade::http::{HeaderValue, StatusCode, header};
use palisade::json::{Incoming, JsonSocket};
use palisade::server::{Accept, OriginPolicy, Rejection, Server, ServerBuilder};
use palisade::{CloseCode, Config, Error, Message, WebSocket};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::support::Peer;

async fn echo(ws: WebSocket) -> Result<(), Error> {
    loop {
        let message = ws.recv().await?;
        ws.send(message).await?;
    }
}

fn quiet() -> Config {
    Config::default().with_keepalive(None, None)
}

/// axum on 127.0.0.1 with `/health` and palisade's `server` mounted at `/ws`, served with
/// `ConnectInfo` when `connect_info` is set.
async fn axum_app(server: Server, connect_info: bool) -> SocketAddr {
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ws", palisade::axum::mount(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        if connect_info {
            let service = app.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, service).await.unwrap();
        } else {
            axum::serve(listener, app).await.unwrap();
        }
    });
    addr
}

fn client() -> Client {
    Client::new().with_keepalive(None, None)
}

/// Sends `request` as it is and returns the whole answer (the server closes after it).
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Receives until the connection ends; returns the close code the server sent.
async fn close_code(ws: &WebSocket) -> CloseCode {
    let end = loop {
        match ws.recv().await {
            Ok(_) => continue,
            Err(err) => break err,
        }
    };
    end.connection_closed().expect("a closed connection").code()
}

#[tokio::test]
async fn palisade_client_echoes_through_axum_and_the_connection_is_registered() {
    let server = Server::builder().fallback(echo).with_config(quiet()).build();
    let addr = axum_app(server.clone(), true).await;
    let ws = client().connect(&format!("ws://{addr}/ws")).await.unwrap().into_socket();
    ws.send("hello").await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::text("hello"));
    let big = vec![7u8; 300_000];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::binary(big));
    assert_eq!(server.connections().len(), 1, "the mounted connection is in the registry");
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    // axum's own routes are untouched.
    let health = raw(addr, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(health.starts_with("HTTP/1.1 200 OK"), "{health}");
    assert!(health.ends_with("ok"), "{health}");
}

#[tokio::test]
async fn a_refusal_through_axum_keeps_its_status_headers_and_json_body() {
    let server = Server::builder()
        .fallback(echo)
        .on_handshake(|request| async move {
            match request.header("authorization") {
                Some("Bearer good") => Accept::new().into(),
                _ => Rejection::unauthorized("Bearer realm=\"chat\"")
                    .with_json(&serde_json::json!({"error": "no token"}))
                    .into(),
            }
        })
        .build();
    let addr = axum_app(server, true).await;
    let err = client().connect(&format!("ws://{addr}/ws")).await.unwrap_err();
    assert_eq!(err.received_status(), Some(StatusCode::UNAUTHORIZED));
    let palisade::Error::Handshake(handshake) = &err else { panic!("{err:?}") };
    let palisade::error::HandshakeError::InvalidStatus(refusal) = &**handshake else {
        panic!("{handshake:?}")
    };
    assert_eq!(refusal.headers()[header::WWW_AUTHENTICATE], "Bearer realm=\"chat\"");
    assert_eq!(refusal.headers()[header::CONTENT_TYPE], "application/json");
    let body: serde_json::Value = serde_json::from_slice(refusal.body()).unwrap();
    assert_eq!(body, serde_json::json!({"error": "no token"}));
    assert!(!err.is_retryable());

    // With the token, the same route opens.
    let ws = client()
        .with_header(header::AUTHORIZATION, HeaderValue::from_static("Bearer good"))
        .connect(&format!("ws://{addr}/ws"))
        .await
        .unwrap()
        .into_socket();
    ws.send("in").await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::text("in"));
}

#[tokio::test]
async fn python_websockets_is_refused_with_403_by_the_origin_policy_through_axum() {
    let server = Server::builder()
        .fallback(echo)
        .with_config(quiet())
        .with_allowed_origins(OriginPolicy::new(["https://app.example"]))
        .build();
    let addr = axum_app(server, true).await;
    let url = format!("ws://{addr}/ws");
    let mut py = Peer::spawn("client.py", &["origin", &url, "https://evil.example"]);
    let line = py.line().await;
    assert!(line.starts_with("STATUS 403 "), "{line}");
    assert!(line.contains("origin not allowed"), "the body names the policy: {line}");
    assert!(!line.contains("evil.example"), "the body repeats nothing from the request: {line}");
    let mut py = Peer::spawn("client.py", &["origin", &url, "https://app.example"]);
    assert_eq!(py.line().await, "OPEN");
}

/// What the typed handler behind axum receives.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum ClientEvent {
    Echo(Echo),
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
struct Echo {
    seq: u64,
    text: String,
}

async fn json_echo(ws: WebSocket) -> Result<(), Error> {
    let mut socket = JsonSocket::new(ws);
    loop {
        match socket.recv::<ClientEvent>().await? {
            Incoming::Event(ClientEvent::Echo(echo)) => socket.emit("echo", &echo).await?,
            Incoming::Request(request) => {
                let ClientEvent::Echo(echo) = &request.message;
                let echo = Echo { seq: echo.seq, text: echo.text.clone() };
                request.reply(&echo).await?;
            }
        }
    }
}

#[tokio::test]
async fn a_typed_json_handler_runs_behind_axum_with_its_error_replies() {
    let server = Server::builder().route("/ws", json_echo).with_config(quiet()).build();
    let addr = axum_app(server, true).await;
    let ws = client().connect(&format!("ws://{addr}/ws")).await.unwrap().into_socket();
    let mut socket = JsonSocket::new(ws);
    let sent = Echo { seq: 1, text: "hi".into() };
    socket.emit("echo", &sent).await.unwrap();
    let Incoming::Event(ClientEvent::Echo(back)) = socket.recv::<ClientEvent>().await.unwrap()
    else {
        panic!("an event")
    };
    assert_eq!(back, sent);
    // The wrong shape gets an error reply and the connection goes on.
    socket.send_json(&serde_json::json!({"event": "echo", "data": {"seq": "one"}})).await.unwrap();
    let reply: serde_json::Value = socket.recv_json().await.unwrap();
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["error"]["code"], "invalid_payload", "{reply}");
    socket.emit("echo", &Echo { seq: 2, text: "still here".into() }).await.unwrap();
    let Incoming::Event(ClientEvent::Echo(back)) = socket.recv::<ClientEvent>().await.unwrap()
    else {
        panic!("an event")
    };
    assert_eq!(back.seq, 2);
    socket.close(CloseCode::NORMAL, "").await.unwrap();
}

/// A handler that only pushes, never receiving.
async fn feed(ws: WebSocket) -> Result<(), Error> {
    loop {
        ws.send("tick").await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_closes_connections_mounted_on_axum_with_1001_and_refuses_new_ones() {
    let server = Server::builder().fallback(feed).with_config(quiet()).build();
    let addr = axum_app(server.clone(), true).await;
    let url = format!("ws://{addr}/ws");
    let a = client().connect(&url).await.unwrap().into_socket();
    let b = client().connect(&url).await.unwrap().into_socket();
    assert_eq!(a.recv().await.unwrap(), Message::text("tick"));
    assert_eq!(b.recv().await.unwrap(), Message::text("tick"));
    let shutdown = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown(Duration::from_secs(5)).await }
    });
    assert_eq!(close_code(&a).await, CloseCode::GOING_AWAY);
    assert_eq!(close_code(&b).await, CloseCode::GOING_AWAY);
    let summary = shutdown.await.unwrap();
    assert_eq!((summary.closed, summary.aborted), (2, 0));
    let err = client().connect(&url).await.unwrap_err();
    assert_eq!(err.received_status(), Some(StatusCode::SERVICE_UNAVAILABLE));
}

fn limited(builder: ServerBuilder) -> Server {
    builder.fallback(feed).with_config(quiet()).with_retry_after(7).build()
}

#[tokio::test]
async fn connection_limits_count_connections_mounted_on_axum() {
    let server = limited(Server::builder().with_max_connections(2));
    let addr = axum_app(server.clone(), true).await;
    let url = format!("ws://{addr}/ws");
    let first = client().connect(&url).await.unwrap().into_socket();
    let _second = client().connect(&url).await.unwrap();
    let err = client().connect(&url).await.unwrap_err();
    assert_eq!(err.received_status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    let palisade::Error::Handshake(handshake) = &err else { panic!("{err:?}") };
    let palisade::error::HandshakeError::InvalidStatus(refusal) = &**handshake else {
        panic!("{handshake:?}")
    };
    assert_eq!(refusal.retry_after(), Some(7));
    // A connection that ends gives its place back.
    first.close(CloseCode::NORMAL, "").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.connections().len() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "the closed connection is counted out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client().connect(&url).await.unwrap();

    // Per IP: every test client is 127.0.0.1, as `ConnectInfo` reports.
    let server = limited(Server::builder().with_max_connections_per_ip(1));
    let addr = axum_app(server, true).await;
    let url = format!("ws://{addr}/ws");
    let _only = client().connect(&url).await.unwrap();
    let err = client().connect(&url).await.unwrap_err();
    assert_eq!(err.received_status(), Some(StatusCode::TOO_MANY_REQUESTS));
}

#[tokio::test]
async fn without_connect_info_axum_mounts_answer_500_instead_of_guessing_the_peer() {
    let server = Server::builder().fallback(echo).build();
    let addr = axum_app(server.clone(), false).await;
    let err = client().connect(&format!("ws://{addr}/ws")).await.unwrap_err();
    assert_eq!(err.received_status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(server.connections().len(), 0, "nothing was counted in");
}

/// hyper's HTTP/1 server on 127.0.0.1, with upgrades, handing every request to `server`.
async fn hyper_app(server: Server) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else { return };
            let server = server.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let server = server.clone();
                    async move {
                        Ok::<_, Infallible>(palisade::hyper::upgrade(&server, request, peer).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn palisade_client_echoes_through_hyper_and_refusals_keep_their_response() {
    let server = Server::builder().route("/ws", echo).with_config(quiet()).build();
    let addr = hyper_app(server.clone()).await;
    let ws = client().connect(&format!("ws://{addr}/ws")).await.unwrap().into_socket();
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::binary(vec![1, 2, 3]));
    assert_eq!(server.connections().len(), 1);
    // palisade's routing: 404 with its body, through hyper.
    let err = client().connect(&format!("ws://{addr}/elsewhere")).await.unwrap_err();
    assert_eq!(err.received_status(), Some(StatusCode::NOT_FOUND));
    // Not an upgrade: 426 naming the protocol to upgrade to.
    let answer = raw(addr, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("upgrade: websocket"), "{answer}");
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    let summary = server.shutdown(Duration::from_secs(5)).await;
    assert_eq!(summary.aborted, 0);
}

/// The `axum` example's contract, on the binary `cargo test` builds: `--addr` (port 0 here),
/// `listening on http://ADDR`, `GET /health` → 200 `ok`, the echo at `/ws` with `echo`'s
/// 16 MiB limit (a 2 MiB message passes, over the 1 MiB default), and on SIGTERM 1001 to the
/// open connection and a clean exit.
#[tokio::test]
async fn the_axum_example_keeps_its_contract() {
    let binary = crate::examples::examples_dir().join("axum");
    let mut child = tokio::process::Command::new(&binary)
        .args(["--addr", "127.0.0.1:0"])
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the example prints its address")
        .unwrap()
        .unwrap();
    let addr: SocketAddr = line
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    let health = raw(addr, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(health.starts_with("HTTP/1.1 200 OK") && health.ends_with("\r\n\r\nok"), "{health}");
    let ws = Client::new()
        .with_max_message_size(4 << 20)
        .connect(&format!("ws://{addr}/ws"))
        .await
        .unwrap()
        .into_socket();
    let big = Message::binary(vec![5u8; 2 << 20]);
    ws.send(big.clone()).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), big);
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    assert_eq!(close_code(&ws).await, CloseCode::GOING_AWAY);
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the example ends after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit}");
}
