//! WebSocket over HTTP/2 (RFC 8441), both sides in one program: palisade's server on hyper's
//! HTTP/2 with extended CONNECT (`palisade::hyper::serve_connection`), and palisade's client
//! with `with_http2` (the `http2` feature). Over cleartext with prior knowledge here; over
//! `wss://` the same client offers `h2` by ALPN and the same server takes it.
//!
//! Run it:
//!
//! ```text
//! cargo run --example http2
//! ```
//!
//! It prints the handshake's status and HTTP version (`200 HTTP/2.0`, not HTTP/1.1's `101`),
//! the echoed message, and the close code. Set `RUST_LOG=debug` to see both sides' logs.

use std::time::Duration;

use palisade::client::Client;
use palisade::server::Server;
use palisade::{CloseCode, Config, Message, WebSocket};

async fn echo(ws: WebSocket) -> Result<(), palisade::Error> {
    loop {
        let message = ws.recv().await?;
        ws.send(message).await?;
    }
}

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: http2

WebSocket over HTTP/2 (RFC 8441): palisade's server on hyper, palisade's client with h2.

  -h, --help         print this and exit
";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    args::Args::none("http2", USAGE);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    // ANCHOR: server
    let server = Server::builder().route("/ws", echo).with_config(Config::default()).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accepting = server.clone();
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            // HTTP/1.1 or HTTP/2, as the client's first bytes say; HTTP/2 with
            // SETTINGS_ENABLE_CONNECT_PROTOCOL, so that extended CONNECT is allowed.
            tokio::spawn(palisade::hyper::serve_connection(accepting.clone(), tcp, peer));
        }
    });
    // ANCHOR_END: server

    // ANCHOR: client
    let connected = Client::new().with_http2(true).connect(&format!("ws://{addr}/ws")).await?;
    let response = connected.response();
    println!("handshake: {} {:?}", response.status().as_u16(), response.version());
    let ws = connected.into_socket();
    ws.send("hello over one HTTP/2 stream").await?;
    if let Message::Text(text) = ws.recv().await? {
        println!("echo: {text}");
    }
    ws.close(CloseCode::NORMAL, "done").await?;
    // ANCHOR_END: client
    let code = ws.close_info().received.map(|frame| frame.code().0);
    println!("closed: {code:?}");
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
