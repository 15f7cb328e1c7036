//! permessage-deflate (RFC 7692) with Python `websockets`, which compresses by default: our
//! server against its client, our client against its server, the negotiated parameters, and
//! the decompression-bomb limit from both sides. Then Node `ws` with `perMessageDeflate`, both
//! ways.

use std::time::Duration;

use palisade::Message;
use palisade::client::{Client, DeflateConfig, DeflateParams};
use palisade::error::{HandshakeError, NegotiationError};
use palisade::server::{ConnectionInfo, Running, Server};
use palisade::{CloseCode, Error};
use palisade::{Config, WebSocket};
use tokio::sync::mpsc;

use crate::support::Peer;

fn params(snct: bool, cnct: bool, server_bits: u8, client_bits: u8) -> DeflateParams {
    let mut p = DeflateParams::default();
    p.server_no_context_takeover = snct;
    p.client_no_context_takeover = cnct;
    p.server_max_window_bits = server_bits;
    p.client_max_window_bits = client_bits;
    p
}

/// An echo server with compression `config`, reporting each connection's agreed parameters.
async fn server(
    config: DeflateConfig,
    max_message: usize,
) -> (Running, String, mpsc::UnboundedReceiver<Option<DeflateParams>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = move |ws: WebSocket, info: ConnectionInfo| {
        let _ = tx.send(info.compression().copied());
        async move {
            loop {
                let message = ws.recv().await?;
                ws.send(message).await?;
            }
            #[allow(unreachable_code, reason = "gives the future its error type")]
            Ok::<(), Error>(())
        }
    };
    let running = Server::builder()
        .fallback(handler)
        .with_compression(config)
        .with_config(
            Config::default().with_keepalive(None, None).with_max_message_size(max_message),
        )
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!("ws://{}/", running.local_addr());
    (running, url, rx)
}

#[tokio::test]
async fn python_client_default_offer_against_our_server() {
    let (_server, url, mut agreed) = server(DeflateConfig::default(), 4 << 20).await;
    let mut py = Peer::spawn("client.py", &["deflate", &url, "default"]);
    // websockets offers `client_max_window_bits`; our default answers without parameters.
    assert_eq!(py.line().await, "EXT permessage-deflate");
    assert_eq!(py.line().await, "ECHO OK");
    assert_eq!(py.line().await, "CLOSED 1000");
    assert_eq!(agreed.recv().await.unwrap(), Some(DeflateParams::default()));
}

#[tokio::test]
async fn python_client_lean_offer_against_our_lean_server() {
    let (_server, url, mut agreed) = server(DeflateConfig::lean(), 4 << 20).await;
    let mut py = Peer::spawn("client.py", &["deflate", &url, "lean"]);
    assert_eq!(
        py.line().await,
        "EXT permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=10; client_max_window_bits=9"
    );
    assert_eq!(py.line().await, "ECHO OK");
    assert_eq!(py.line().await, "CLOSED 1000");
    assert_eq!(agreed.recv().await.unwrap(), Some(params(true, true, 10, 9)));
}

#[tokio::test]
async fn python_client_bomb_is_stopped_with_1009() {
    // 10 MB of zeros, about 10 KB on the wire, against a 1 MiB limit.
    let (_server, url, _agreed) = server(DeflateConfig::default(), 1 << 20).await;
    let mut py = Peer::spawn("client.py", &["big", &url, "10000000"]);
    assert_eq!(py.line().await, "CLOSED 1009 message too big");
}

fn client(config: DeflateConfig) -> Client {
    Client::new()
        .without_proxy()
        .with_open_timeout(Some(Duration::from_secs(10)))
        .with_compression(config)
}

async fn echo_all(ws: &palisade::client::Connected) {
    let noise: Vec<u8> =
        (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let messages = [
        Message::text("hello, compressed world ".repeat(40)),
        Message::text("hello, compressed world ".repeat(40)),
        Message::text("short"),
        Message::text("é".repeat(100_000)),
        Message::binary(vec![0u8; 1_000_000]),
        Message::binary(noise),
        Message::text(""),
    ];
    for message in messages {
        ws.send(message.clone()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), message);
    }
}

#[tokio::test]
async fn our_client_against_python_default_server() {
    let (mut peer, port) = Peer::server("echo", None).await;
    let ws =
        client(DeflateConfig::default()).connect(&format!("ws://127.0.0.1:{port}/")).await.unwrap();
    // websockets' default: 12-bit windows both ways, context takeover kept.
    assert_eq!(ws.compression(), Some(&params(false, false, 12, 12)));
    echo_all(&ws).await;
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    assert_eq!(peer.line_starting("CLOSED").await, "CLOSED 1000 done");
}

#[tokio::test]
async fn our_lean_client_against_python_lean_server() {
    let (mut peer, port) = Peer::server("lean", None).await;
    let ws =
        client(DeflateConfig::lean()).connect(&format!("ws://127.0.0.1:{port}/")).await.unwrap();
    assert_eq!(ws.compression(), Some(&params(true, true, 10, 10)));
    echo_all(&ws).await;
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    assert_eq!(peer.line_starting("CLOSED").await, "CLOSED 1000 done");
}

#[tokio::test]
async fn our_client_without_a_compressing_server_runs_uncompressed() {
    let (_peer, port) = Peer::server("plain", None).await;
    let ws =
        client(DeflateConfig::default()).connect(&format!("ws://127.0.0.1:{port}/")).await.unwrap();
    assert_eq!(ws.compression(), None);
    echo_all(&ws).await;
}

#[tokio::test]
async fn our_client_requiring_compression_closes_with_1010_when_declined() {
    let (mut peer, port) = Peer::server("plain", None).await;
    let err = Client::new()
        .without_proxy()
        .require_compression(DeflateConfig::default())
        .connect(&format!("ws://127.0.0.1:{port}/"))
        .await
        .unwrap_err();
    let missing = match &err {
        Error::Handshake(h) => {
            matches!(**h, HandshakeError::Negotiation(NegotiationError::MissingExtension { .. }))
        }
        _ => false,
    };
    assert!(missing, "{err:?}");
    assert_eq!(err.close_code(), Some(CloseCode::MANDATORY_EXTENSION));
    assert!(!err.is_retryable());
    assert_eq!(peer.line_starting("CLOSED").await, "CLOSED 1010 permessage-deflate");
}

#[tokio::test]
async fn python_server_bomb_is_stopped_with_1009() {
    let (mut peer, port) = Peer::server("bomb", None).await;
    let ws = client(DeflateConfig::default())
        .with_max_message_size(1 << 20)
        .connect(&format!("ws://127.0.0.1:{port}/"))
        .await
        .unwrap();
    let err = ws.recv().await.unwrap_err();
    let code = err.connection_closed().map_or(err.close_code(), |c| Some(c.code()));
    assert_eq!(code, Some(CloseCode::MESSAGE_TOO_BIG), "{err:?}");
    assert_eq!(peer.line_starting("CLOSED").await, "CLOSED 1009 message too big");
}

#[tokio::test]
async fn node_ws_client_against_our_server() {
    let (_server, url, mut agreed) = server(DeflateConfig::default(), 4 << 20).await;
    let mut node = Peer::spawn_node(&["client", &url]);
    // ws offers `client_max_window_bits`; our default answers without parameters.
    assert_eq!(node.line().await, "EXT permessage-deflate");
    assert_eq!(node.line().await, "ECHO OK");
    assert_eq!(node.line().await, "CLOSED 1000");
    assert_eq!(agreed.recv().await.unwrap(), Some(DeflateParams::default()));
}

#[tokio::test]
async fn our_client_against_node_ws_server() {
    let mut node = Peer::spawn_node(&["server"]);
    let port: u16 = node.line_starting("PORT ").await["PORT ".len()..].trim().parse().unwrap();
    for config in [DeflateConfig::default(), DeflateConfig::lean()] {
        let ws = client(config.clone()).connect(&format!("ws://127.0.0.1:{port}/")).await.unwrap();
        let ext = node.line_starting("EXT ").await;
        assert!(ext.starts_with("EXT permessage-deflate"), "{ext}");
        let agreed = *ws.compression().expect("ws accepts permessage-deflate");
        if config == DeflateConfig::lean() {
            assert_eq!(agreed, params(true, true, 10, 10), "{ext}");
        }
        echo_all(&ws).await;
        ws.close(CloseCode::NORMAL, "done").await.unwrap();
        assert_eq!(node.line_starting("CLOSED").await, "CLOSED 1000 done");
    }
}
