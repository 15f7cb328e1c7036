//! permessage-deflate (RFC 7692) end to end: a server that accepts it, a client that offers it,
//! a handler that sends some messages uncompressed, the decompression-bomb limit, and a client
//! that refuses to go on without compression.
//!
//! ```text
//! cargo run --release --example compression
//! ```
//!
//! It starts two servers on 127.0.0.1 (one compressing, one not), talks to both, prints what
//! was agreed and what each message cost on the wire, and exits.

use std::process::ExitCode;
use std::time::Duration;

use palisade::client::{Client, Connected};
use palisade::error::{HandshakeError, NegotiationError};
use palisade::server::{ConnectionInfo, DeflateConfig, Server};
use palisade::{Config, WebSocket};
use palisade::{Error, Message};

/// The largest message either side accepts, after inflation.
const MAX_MESSAGE: usize = 4 << 20;

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: compression

permessage-deflate end to end: starts two servers on 127.0.0.1, talks to both, prints
what was agreed and what each message cost on the wire, and exits.

  -h, --help   print this and exit
";

#[tokio::main]
async fn main() -> ExitCode {
    args::Args::none("compression", USAGE);
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

// ANCHOR: relay
/// Echoes text compressed, and binary (already compressed data, say) uncompressed.
async fn relay(ws: WebSocket, info: ConnectionInfo) -> Result<(), Error> {
    if let Some(params) = info.compression() {
        println!(
            "server: deflate agreed, our window {} bits, context takeover {}",
            params.server_max_window_bits,
            if params.server_no_context_takeover { "off" } else { "on" },
        );
    }
    loop {
        match ws.recv().await? {
            // Images and archives are compressed already: deflating them again costs CPU and
            // saves nothing.
            message @ Message::Binary(_) => ws.send_uncompressed(message).await?,
            message => ws.send(message).await?,
        }
    }
}
// ANCHOR_END: relay

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // ANCHOR: server
    let server = Server::builder()
        .fallback(relay)
        // Keep context takeover for what the server sends (the same JSON shapes again and
        // again), drop it for what clients send, and leave short messages alone.
        .with_compression(
            DeflateConfig::default().with_client_no_context_takeover(true).with_threshold(256),
        )
        // Inflated messages up to 4 MiB; one byte more closes the connection with 1009.
        .with_config(Config::default().with_max_message_size(MAX_MESSAGE))
        .build()
        .bind("127.0.0.1:0")
        .await?;
    // ANCHOR_END: server
    let url = format!("ws://{}/", server.local_addr());

    // ANCHOR: client
    let ws = Client::new()
        .without_proxy()
        .with_compression(DeflateConfig::default())
        // The same limit on what the server sends to this client.
        .with_max_message_size(MAX_MESSAGE)
        .connect(&url)
        .await?;
    match ws.compression() {
        Some(params) => println!("client: compressed, {params:?}"),
        None => println!("client: the server declined; uncompressed"),
    }
    // ANCHOR_END: client
    exchange(&ws).await?;
    ws.close(palisade::CloseCode::NORMAL, "").await?;

    // A server without compression, and a client that will not go on without it.
    let plain = Server::builder().fallback(relay).build().bind("127.0.0.1:0").await?;
    // ANCHOR: require
    let refused = Client::new()
        .without_proxy()
        .require_compression(DeflateConfig::lean())
        .connect(&format!("ws://{}/", plain.local_addr()))
        .await;
    match refused {
        Err(Error::Handshake(e))
            if matches!(
                *e,
                HandshakeError::Negotiation(NegotiationError::MissingExtension { .. })
            ) =>
        {
            println!("client: the plain server declined compression, so we closed with 1010");
        }
        Err(e) => return Err(e.into()),
        Ok(_) => return Err("a server without compression was accepted".into()),
    }
    // ANCHOR_END: require

    server.shutdown(Duration::from_secs(1)).await;
    plain.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

/// Sends JSON-like text, then the same bytes as binary, and prints what each cost on the wire.
async fn exchange(ws: &Connected) -> Result<(), Error> {
    let records: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"type":"price","symbol":"ACME","seq":{i},"bid":{}}}"#, 100 + i % 7))
        .collect();
    let text = format!("[{}]", records.join(","));
    for message in [Message::text(text.clone()), Message::binary(text.into_bytes())] {
        let before = ws.stats();
        let size = message.len();
        ws.send(message).await?;
        let echo = ws.recv().await?;
        let after = ws.stats();
        println!(
            "{:6} {size} bytes: {} bytes sent on the wire, {} received",
            if echo.is_text() { "text" } else { "binary" },
            after.bytes_out - before.bytes_out,
            after.bytes_in - before.bytes_in,
        );
    }
    Ok(())
}
