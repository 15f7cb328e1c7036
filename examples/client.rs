//! A command-line WebSocket client: each line typed becomes a text message, and whatever the
//! server sends is printed.
//!
//! Run it against the echo server (started with `cargo run --release --example echo -- --addr
//! 127.0.0.1:9001`):
//!
//! ```text
//! cargo run --release --example client -- ws://127.0.0.1:9001/
//! ```
//!
//! Type lines; end with Ctrl-D, which closes the connection with 1000. Look at what a failure
//! prints: try `ws://127.0.0.1:1/` (refused), `http://x/` (bad URI), or a server that answers
//! 401 — each shows the error's category, the close code or HTTP status, and whether retrying
//! would help. Proxies come from `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY`.
//!
//! Its limits match the echo server's: it accepts messages up to 16 MiB, and it offers
//! permessage-deflate as browsers and Python's `websockets` do (`echo --deflate` accepts it).

use std::process::ExitCode;

use palisade::Message;
use palisade::client::{Client, DeflateConfig};
use palisade::error::HandshakeError;
use palisade::{CloseCode, Error};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The largest message accepted: the echo example's limit, so that whatever it echoes back is
/// accepted here too (the library's default is 1 MiB, as in Python's `websockets`).
const MAX_MESSAGE: usize = 16 << 20;

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: client URL

A command-line WebSocket client: each line typed becomes a text message, and whatever the
server sends is printed. End with Ctrl-D, which closes the connection with 1000.

  URL          ws://HOST:PORT/PATH or wss://…
  -h, --help   print this and exit

It accepts messages up to 16 MiB (as the echo example) and offers permessage-deflate, which
the server may decline. Proxies come from HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY.
";

#[tokio::main]
async fn main() -> ExitCode {
    let mut url = None;
    let mut args = args::Args::new("client", USAGE);
    while let Some(arg) = args.next() {
        match arg {
            arg if arg.starts_with('-') || url.is_some() => args.unknown(&arg),
            arg => url = Some(arg),
        }
    }
    let Some(url) = url else { args.fail("a URL is needed") };
    match run(&url).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err);
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str) -> Result<(), Error> {
    // ANCHOR: connect
    let ws = Client::new()
        // What Python's `websockets` and browsers offer by default; the server may decline.
        .with_compression(DeflateConfig::default())
        .with_max_message_size(MAX_MESSAGE)
        .connect(url)
        .await?;
    eprintln!(
        "connected to {}{}",
        palisade::error::redact::uri(url),
        ws.subprotocol().map(|p| format!(" (subprotocol {p})")).unwrap_or_default()
    );
    // ANCHOR_END: connect
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    // ANCHOR: session
    let mut input_open = true;
    loop {
        // Both are cancel-safe: whichever is not chosen loses nothing.
        tokio::select! {
            message = ws.recv() => match message {
                Ok(Message::Text(text)) => println!("< {}", text.as_str()),
                Ok(Message::Binary(bytes)) => println!("< [{} bytes of binary]", bytes.len()),
                Err(err) if err.is_closed_ok() => {
                    eprintln!("closed: {err}");
                    return Ok(());
                }
                Err(err) => return Err(err),
            },
            line = lines.next_line(), if input_open => match line {
                Ok(Some(line)) => ws.send(Message::text(line)).await?,
                // End of input (or unreadable input): start the close handshake and keep
                // printing what still arrives (late replies) until the server completes it.
                Ok(None) | Err(_) => {
                    input_open = false;
                    ws.start_close(CloseCode::NORMAL, "").await?;
                }
            },
        }
    }
    // ANCHOR_END: session
}

// ANCHOR: report
/// Everything a user needs to decide what to do next.
fn report(err: &Error) {
    eprintln!("error: {err}");
    eprintln!("  category: {}", err.category());
    if let Some(closed) = err.connection_closed() {
        eprintln!("  close code: {} {}", closed.code(), closed.reason());
    } else if let Some(code) = err.close_code() {
        eprintln!("  close code sent: {code}");
    }
    // The status the server answered with, when it refused the upgrade; a `101` that failed
    // its checks has none (`status_to_send()` would be what a server owes, not what it said).
    if let Some(status) = err.received_status() {
        eprintln!("  server answered: HTTP {status}");
    }
    // ANCHOR: refusal
    if let Error::Handshake(h) = err
        && let HandshakeError::InvalidStatus(refusal) = &**h
    {
        if let Some(body) = refusal.body_text().filter(|b| !b.is_empty()) {
            eprintln!("  body: {body}");
        }
        if let Some(secs) = refusal.retry_after() {
            eprintln!("  retry after: {secs} s");
        }
    }
    // ANCHOR_END: refusal
    eprintln!("  retry would help: {}", if err.is_retryable() { "yes" } else { "no" });
}
// ANCHOR_END: report
