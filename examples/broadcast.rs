//! The smallest fan-out program. Every text message a client sends is answered to that client
//! by its own handler, as `ack:` followed by the message, and pushed unchanged to every other
//! connected client through the server's registry of senders. The handler's replies and the
//! pushes from other clients' handlers reach the same socket from several tasks at once: each
//! send waits its turn, frames never interleave, and nothing fails for it.
//!
//! Run it, then connect two clients:
//!
//! ```text
//! cargo run --release --example broadcast -- --addr 127.0.0.1:9002
//! cargo run --release --example client -- ws://127.0.0.1:9002/
//! ```
//!
//! A client that falls more than the write buffer (64 KiB) behind is closed with 1008
//! (slow consumer) instead of holding the others up. Ctrl-C shuts down gracefully: every
//! client receives 1001 Going Away.

use std::time::Duration;

use palisade::WebSocket;
use palisade::conn::TrySendError;
use palisade::server::{Connections, Running, Server};
use palisade::{CloseCode, Message};

// ANCHOR: handler
/// One client's handler: replies to its client, pushes to everyone else.
async fn relay(ws: WebSocket, everyone: Connections) -> Result<(), palisade::Error> {
    while let Some(message) = ws.next().await {
        let Message::Text(text) = message? else { continue };
        for peer in everyone.senders() {
            if peer.id() == ws.id() {
                continue;
            }
            // Queued without waiting: one slow client never delays the others.
            if let Err(TrySendError::Full(_)) = peer.try_send(Message::Text(text.clone())) {
                tokio::spawn(async move {
                    let _ = peer.close(CloseCode::POLICY_VIOLATION, "slow consumer").await;
                });
            }
            // Any other error: that client has gone, and its own handler sees why.
        }
        ws.send(format!("ack:{}", text.as_str())).await?;
    }
    Ok(())
}
// ANCHOR_END: handler

/// Serves the relay on `addr`.
pub(crate) async fn serve(addr: &str) -> std::io::Result<Running> {
    Server::builder().fallback(relay).build().bind(addr).await
}

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: broadcast [--addr HOST:PORT]

The fan-out server: each text message is acknowledged to its sender and pushed to
every other client.

  --addr HOST:PORT   where to listen (default 127.0.0.1:9002)
  -h, --help         print this and exit
";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:9002".to_owned();
    let mut args = args::Args::new("broadcast", USAGE);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.value("--addr"),
            other => args.unknown(other),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours on a terminal only: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let running = serve(&addr).await?;
    println!("listening on ws://{}", running.local_addr());
    tokio::signal::ctrl_c().await?;
    let summary = running.shutdown(Duration::from_secs(5)).await;
    eprintln!("shut down: {} closed, {} aborted", summary.closed, summary.aborted);
    Ok(())
}
