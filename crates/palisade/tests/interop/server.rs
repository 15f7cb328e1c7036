//! palisade's server against Python `websockets` clients.

use std::time::Duration;

use palisade::server::{CloseWith, ConnectionInfo, Rejection, Running, Server, ServerBuilder};
use palisade::{CloseCode, Error};
use palisade::{Config, WebSocket};
use tokio::sync::mpsc;

use crate::support::Peer;

async fn echo(ws: WebSocket, _: ConnectionInfo) -> Result<(), Error> {
    loop {
        let message = ws.recv().await?;
        ws.send(message).await?;
    }
}

async fn start(builder: ServerBuilder) -> (Running, String) {
    let running = builder.build().bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", running.local_addr());
    (running, url)
}

fn quiet() -> Config {
    Config::default().with_keepalive(None, None)
}

#[tokio::test]
async fn python_client_echo() {
    let (_server, url) =
        start(Server::builder().fallback(echo).with_config(quiet().with_max_message_size(2 << 20)))
            .await;
    let mut py = Peer::spawn("client.py", &["echo", &url]);
    assert_eq!(py.line().await, "ECHO OK");
    // Our reply to its close echoes the code (RFC 6455 §5.5.1), without a reason.
    assert_eq!(py.line().await, "CLOSED 1000");
}

#[tokio::test]
async fn each_close_code_reaches_a_python_client() {
    // The handler closes with the code and reason the client asks for.
    let handler = |ws: WebSocket, _: ConnectionInfo| async move {
        let m = ws.recv().await?;
        let text = m.as_text().unwrap_or_default().to_owned();
        let (code, reason) = text.split_once(' ').unwrap_or((&text, ""));
        let code: u16 = code.parse().unwrap_or(1000);
        Err::<(), palisade::server::BoxError>(CloseWith::new(CloseCode(code), reason).into())
    };
    let (_server, url) = start(Server::builder().fallback(handler).with_config(quiet())).await;
    for (code, reason) in [
        (1000u16, "normal"),
        (1001, "going away"),
        (1008, "policy"),
        (1011, "oops"),
        (3000, "unauthorized"),
        (4000, "app"),
    ] {
        let mut py = Peer::spawn("client.py", &["send", &url, &format!("{code} {reason}")]);
        assert_eq!(py.line().await, format!("CLOSED {code} {reason}"));
    }
}

#[tokio::test]
async fn rejection_reaches_python_as_invalid_status_with_the_body() {
    let (_server, url) = start(Server::builder().fallback(echo).on_handshake(|_req| async {
        Rejection::unauthorized("Bearer")
            .with_json(&serde_json::json!({"error": "no token"}))
            .into()
    }))
    .await;
    let mut py = Peer::spawn("client.py", &["handshake", &url]);
    assert_eq!(py.line().await, r#"STATUS 401 {"error":"no token"}"#);

    let (_server, url) = start(
        Server::builder()
            .fallback(echo)
            .on_handshake(|_req| async { Rejection::forbidden().with_text("not here").into() }),
    )
    .await;
    let mut py = Peer::spawn("client.py", &["handshake", &url]);
    assert_eq!(py.line().await, "STATUS 403 not here");
}

#[tokio::test]
async fn subprotocol_negotiation_with_python() {
    let (_server, url) = start(
        Server::builder()
            .fallback(echo)
            .with_subprotocols(["v2.palisade", "v1.palisade"])
            .require_subprotocol(true),
    )
    .await;
    let mut py = Peer::spawn("client.py", &["handshake", &url, "v1.palisade", "v2.palisade"]);
    assert_eq!(py.line().await, "OPEN v2.palisade");
    let mut py = Peer::spawn("client.py", &["handshake", &url, "other"]);
    assert!(py.line().await.starts_with("STATUS 400"));
}

#[tokio::test]
async fn too_big_message_closes_python_with_1009() {
    let (_server, url) =
        start(Server::builder().fallback(echo).with_config(quiet().with_max_message_size(1024)))
            .await;
    let mut py = Peer::spawn("client.py", &["big", &url, "4096"]);
    assert_eq!(py.line().await, "CLOSED 1009 message too big");
}

#[tokio::test]
async fn keepalive_timeout_against_a_python_client_that_stops_reading() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = move |ws: WebSocket, _: ConnectionInfo| {
        let tx = tx.clone();
        async move {
            let err = ws.recv().await.unwrap_err();
            let _ = tx.send(err.to_string());
            Err::<(), Error>(err)
        }
    };
    let config = Config::default()
        .with_keepalive(Some(Duration::from_millis(200)), Some(Duration::from_millis(500)));
    let (_server, url) = start(Server::builder().fallback(handler).with_config(config)).await;
    let mut py = Peer::spawn("client.py", &["silent", &url]);
    let err = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert!(err.contains("keepalive"), "{err}");
    assert_eq!(py.line().await, "CLOSED 1011 internal error");
}

#[tokio::test]
async fn graceful_shutdown_delivers_1001_to_python() {
    let (server, url) = start(Server::builder().fallback(echo).with_config(quiet())).await;
    let mut py = Peer::spawn("client.py", &["wait", &url]);
    assert_eq!(py.line().await, "OPEN");
    let summary = server.shutdown(Duration::from_secs(5)).await;
    assert_eq!((summary.closed, summary.aborted), (1, 0));
    assert_eq!(py.line().await, "CLOSED 1001 server shutting down");
}
