//! The blocking API (`palisade::blocking`) against Python `websockets`: its client against
//! `server.py`, its server against `client.py`. The blocking calls run on tokio's blocking
//! pool, so that the peers' output is read meanwhile.

use std::net::TcpListener;
use std::time::Duration;

use palisade::blocking::{Acceptor, Client, Config, DeflateConfig, WebSocket};
use palisade::{CloseCode, Error, Message};
use tokio::task::spawn_blocking;

use crate::support::Peer;

fn client() -> Client {
    Client::new()
        .with_open_timeout(Some(Duration::from_secs(10)))
        .with_config(Config::default().with_keepalive(None, None))
}

fn url(port: u16) -> String {
    format!("ws://127.0.0.1:{port}/")
}

/// A blocking server on a free port that accepts one connection with `acceptor` and runs
/// `handler` on it, in a thread; returns its URL and the handler's result.
fn serve_one<T: Send + 'static>(
    acceptor: Acceptor,
    handler: impl FnOnce(Result<WebSocket, Error>) -> T + Send + 'static,
) -> (String, tokio::task::JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let task = spawn_blocking(move || {
        let (stream, _) = listener.accept().unwrap();
        handler(acceptor.accept(stream))
    });
    (url, task)
}

/// Echoes until the connection ends; returns how it ended.
fn echo(ws: Result<WebSocket, Error>) -> Error {
    let mut ws = match ws {
        Ok(ws) => ws,
        Err(err) => return err,
    };
    loop {
        if let Err(err) = ws.recv().and_then(|message| ws.send(message)) {
            return err;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_client_echo_and_close_with_python() {
    let (mut peer, port) = Peer::server("echo", None).await;
    spawn_blocking(move || {
        let mut ws = client().connect(&url(port)).unwrap();
        for size in [0usize, 1, 125, 126, 65_535, 65_536, 1_000_000] {
            let text = Message::text("é".repeat(size / 2));
            ws.send(text.clone()).unwrap();
            assert_eq!(ws.recv().unwrap(), text, "{size}");
            let binary = Message::binary(vec![0xA5u8; size]);
            ws.send(binary.clone()).unwrap();
            assert_eq!(ws.recv().unwrap(), binary, "{size}");
        }
        ws.close(CloseCode::NORMAL, "done").unwrap();
    })
    .await
    .unwrap();
    assert_eq!(peer.line_starting("CLOSED").await, "CLOSED 1000 done");
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_client_reads_pythons_close_codes() {
    let (_peer, port) = Peer::server("echo", None).await;
    spawn_blocking(move || {
        for (code, reason, normal) in [(1001u16, "going away", true), (1011, "oops", false)] {
            let mut ws = client().connect(&url(port)).unwrap();
            ws.send(Message::text(format!("close {code} {reason}"))).unwrap();
            let err = ws.recv().unwrap_err();
            assert_eq!(err.is_closed_ok(), normal, "{err:?}");
            let closed = err.connection_closed().unwrap();
            assert_eq!((closed.code(), closed.reason()), (CloseCode(code), reason));
            assert_eq!(closed.received_then_sent, Some(true));
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_client_compresses_with_python() {
    let (_peer, port) = Peer::server("echo", None).await;
    spawn_blocking(move || {
        let mut ws =
            client().with_compression(DeflateConfig::default()).connect(&url(port)).unwrap();
        assert!(ws.compression().is_some(), "websockets accepts permessage-deflate by default");
        let big = Message::text("compressible ".repeat(20_000));
        for message in [big.clone(), Message::binary(vec![0u8; 300_000]), big] {
            ws.send(message.clone()).unwrap();
            assert_eq!(ws.recv().unwrap(), message);
        }
        ws.close(CloseCode::NORMAL, "").unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_client_refuses_a_decompression_bomb_with_1009() {
    let (mut peer, port) = Peer::server("bomb", None).await;
    spawn_blocking(move || {
        let mut ws =
            client().with_compression(DeflateConfig::default()).connect(&url(port)).unwrap();
        let err = ws.recv().unwrap_err();
        assert!(matches!(err, Error::PayloadTooBig(_)), "{err:?}");
    })
    .await
    .unwrap();
    assert_eq!(peer.line_starting("CLOSED").await, "CLOSED 1009 message too big");
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_server_echo_with_a_python_client() {
    let acceptor = Acceptor::new()
        .with_compression(DeflateConfig::default())
        .with_config(Config::default().with_max_message_size(2 << 20));
    let (url, server) = serve_one(acceptor, echo);
    let mut py = Peer::spawn("client.py", &["echo", &url]);
    assert_eq!(py.line().await, "ECHO OK");
    assert_eq!(py.line().await, "CLOSED 1000");
    assert!(server.await.unwrap().is_closed_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_server_closes_a_python_client_over_the_limit_with_1009() {
    // 4 MiB against a 1 KiB limit: Python is still sending when the close frame goes out, and
    // reads it because the server drains instead of resetting.
    let acceptor = Acceptor::new().with_config(Config::default().with_max_message_size(1024));
    let (url, server) = serve_one(acceptor, echo);
    let mut py = Peer::spawn("client.py", &["big", &url, "4194304"]);
    assert_eq!(py.line().await, "CLOSED 1009 message too big");
    assert!(matches!(server.await.unwrap(), Error::PayloadTooBig(_)));
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_server_keepalive_closes_a_python_client_that_stops_reading() {
    let config = Config::default()
        .with_keepalive(Some(Duration::from_millis(200)), Some(Duration::from_millis(500)));
    let (url, server) = serve_one(Acceptor::new().with_config(config), echo);
    let mut py = Peer::spawn("client.py", &["silent", &url]);
    assert_eq!(py.line().await, "CLOSED 1011 internal error");
    let err = server.await.unwrap();
    assert!(err.to_string().contains("keepalive"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_server_subprotocols_and_refusals_with_python() {
    let acceptor = Acceptor::new()
        .with_subprotocols(["v2.palisade", "v1.palisade"])
        .with_subprotocol_required(true);
    let (url, server) =
        serve_one(acceptor.clone(), |ws| ws.map(|ws| ws.subprotocol().map(str::to_owned)));
    let mut py = Peer::spawn("client.py", &["handshake", &url, "v1.palisade", "v2.palisade"]);
    assert_eq!(py.line().await, "OPEN v2.palisade");
    assert_eq!(server.await.unwrap().unwrap().as_deref(), Some("v2.palisade"));

    let (url, server) = serve_one(acceptor, |ws| ws.map(drop));
    let mut py = Peer::spawn("client.py", &["handshake", &url, "other"]);
    let line = py.line().await;
    assert!(line.starts_with("STATUS 400 400 Bad Request"), "{line}");
    assert!(server.await.unwrap().is_err());
}
