//! The typed JSON echo: every `echo` event comes back as the same event, typed on the way
//! through palisade-json's envelope. Malformed JSON, unknown events and payloads of the wrong
//! shape get an error reply and the connection goes on; a client that keeps sending garbage
//! is closed (1007 or 1008). `cargo xtask bench` runs it beside the same echo written by hand
//! with tokio-tungstenite and serde_json.
//!
//! Run it:
//!
//! ```text
//! cargo run --release --example json_echo -- --addr 127.0.0.1:9004
//! ```
//!
//! and send it `{"event":"echo","data":{"seq":1,"text":"hi"}}`; try `{"event":"echo",
//! "data":{"seq":"one"}}` or `{"event":"shout"}` to see the error replies. It prints
//! `listening on ws://ADDR` once it accepts connections and shuts down on Ctrl-C.

use palisade::json::{Incoming, JsonSocket};
use palisade::server::Server;
use palisade::{Config, WebSocket};
use serde::{Deserialize, Serialize};

// ANCHOR: messages
/// What clients send: the event name is the tag, its data the variant's payload.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum ClientEvent {
    Echo(Echo),
}

#[derive(Debug, Deserialize, Serialize)]
struct Echo {
    seq: u64,
    text: String,
}
// ANCHOR_END: messages

// ANCHOR: handler
async fn echo(ws: WebSocket) -> Result<(), palisade::Error> {
    let mut socket = JsonSocket::new(ws);
    let sender = socket.sender();
    loop {
        // Bad input never gets here: `recv` answers it with an error reply and goes on.
        match socket.recv::<ClientEvent>().await? {
            Incoming::Event(ClientEvent::Echo(echo)) => {
                sender.emit("echo", &echo).await?;
            }
            Incoming::Request(request) => {
                let ClientEvent::Echo(echo) = &request.message;
                let echo = Echo { seq: echo.seq, text: echo.text.clone() };
                request.reply(&echo).await?;
            }
        }
    }
}
// ANCHOR_END: handler

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: json_echo [--addr HOST:PORT]

The typed JSON echo: every `echo` event comes back; bad input gets an error reply.

  --addr HOST:PORT   where to listen (default 127.0.0.1:9004)
  -h, --help         print this and exit
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:9004".to_owned();
    let mut args = args::Args::new("json_echo", USAGE);
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
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let server = Server::builder()
            .fallback(echo)
            // The wire format's version, for clients that ask for it (none has to).
            .with_subprotocols([palisade::json::SUBPROTOCOL])
            .with_config(Config::default())
            .with_max_connections(200_000)
            .with_max_connections_per_ip(200_000)
            .build();
        let running = server.bind(&addr).await?;
        println!("listening on ws://{}", running.local_addr());
        tokio::signal::ctrl_c().await?;
        running.shutdown(std::time::Duration::from_secs(5)).await;
        Ok(())
    })
}
