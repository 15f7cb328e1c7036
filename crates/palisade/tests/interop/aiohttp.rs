//! Python `aiohttp` both ways: its client against palisade's server, and palisade's client
//! against its server, plain and with permessage-deflate.

use std::time::Duration;

use palisade::client::{Client, DeflateConfig};
use palisade::server::{ConnectionInfo, Server};
use palisade::{CloseCode, Config, Error, Message, WebSocket};

use crate::support::Peer;

async fn echo(ws: WebSocket, _: ConnectionInfo) -> Result<(), Error> {
    loop {
        let message = ws.recv().await?;
        ws.send(message).await?;
    }
}

#[tokio::test]
async fn aiohttp_client_echo_plain_and_compressed() {
    let running = Server::builder()
        .fallback(echo)
        .with_config(Config::default().with_keepalive(None, None))
        .with_compression(palisade::server::DeflateConfig::default())
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!("ws://{}/", running.local_addr());

    let mut py = Peer::spawn("aiohttp_peer.py", &["client", &url]);
    assert_eq!(py.line().await, "COMPRESS 0");
    assert_eq!(py.line().await, "ECHO OK");
    assert_eq!(py.line().await, "CLOSED 1000");
    assert!(py.wait().await.success());

    let mut py = Peer::spawn("aiohttp_peer.py", &["client", &url, "compress"]);
    assert_eq!(py.line().await, "COMPRESS 15");
    assert_eq!(py.line().await, "ECHO OK");
    assert_eq!(py.line().await, "CLOSED 1000");
    assert!(py.wait().await.success());
}

#[tokio::test]
async fn palisade_client_against_an_aiohttp_server() {
    let mut server = Peer::spawn("aiohttp_peer.py", &["server"]);
    let line = server.line_starting("PORT ").await;
    let url = format!("ws://127.0.0.1:{}/chat", &line["PORT ".len()..]);
    let client = Client::new()
        .without_proxy()
        .with_open_timeout(Some(Duration::from_secs(10)))
        .with_keepalive(None, None)
        .with_max_message_size(2 << 20);
    for compressed in [false, true] {
        let client = match compressed {
            true => client.clone().with_compression(DeflateConfig::default()),
            false => client.clone(),
        };
        let ws = client.connect(&url).await.unwrap();
        assert_eq!(ws.compression().is_some(), compressed);
        for size in [0usize, 1, 125, 126, 65_535, 65_536, 1_000_000] {
            ws.send(Message::text("é".repeat(size / 2))).await.unwrap();
            assert_eq!(ws.recv().await.unwrap(), Message::text("é".repeat(size / 2)), "{size}");
            ws.send(Message::binary(vec![0xA5u8; size])).await.unwrap();
            assert_eq!(ws.recv().await.unwrap(), Message::binary(vec![0xA5u8; size]), "{size}");
        }
        ws.close(CloseCode::NORMAL, "done").await.unwrap();
        assert_eq!(server.line_starting("CLOSED").await, "CLOSED 1000");
    }
}

/// The other direction: an aiohttp server sends 4 MiB to palisade's client (limit 1 MiB). The
/// client fails with `PayloadTooBig`, sends 1009 and drains what is still coming, so the server
/// finishes its send and reads the code instead of losing the connection.
#[tokio::test]
async fn an_aiohttp_server_over_the_clients_limit_reads_1009() {
    let mut server = Peer::spawn("aiohttp_peer.py", &["server"]);
    let line = server.line_starting("PORT ").await;
    let url = format!("ws://127.0.0.1:{}/big", &line["PORT ".len()..]);
    let ws = Client::new()
        .without_proxy()
        .with_open_timeout(Some(Duration::from_secs(10)))
        .with_keepalive(None, None)
        .connect(&url)
        .await
        .unwrap();
    let err = ws.recv().await.unwrap_err();
    assert_eq!(err.close_code(), Some(CloseCode::MESSAGE_TOO_BIG), "{err:?}");
    // Let go of the connection: what the server still sends is drained in the background.
    drop(ws);
    assert_eq!(server.line_starting("CLOSED").await, "CLOSED 1009");
}
