//! The typed JSON echo written by hand, for the benchmarks: tokio-tungstenite and serde_json,
//! as a FastAPI-style tutorial would have it in Rust. Each text message is parsed into a typed
//! event; an `echo` event is answered with the same event; anything else gets an error object
//! and the connection goes on. The same shape as palisade's `examples/json_echo.rs` (one
//! thread, one task per connection), which does this through palisade-json's envelope.
//!
//! ```text
//! echo-json-tungstenite [--addr 127.0.0.1:9004]
//! ```

use futures_util::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Error, Message};

/// What clients send and get back.
#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum Event {
    Echo(Echo),
}

#[derive(Debug, Deserialize, Serialize)]
struct Echo {
    seq: u64,
    text: String,
}

/// The error a client gets for a message that is not a known event.
#[derive(Serialize)]
struct Failure<'a> {
    error: &'a str,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    palisade_bench::peer::serve("echo-json-tungstenite", "127.0.0.1:9004", echo)
}

async fn echo(stream: TcpStream) -> Result<(), Error> {
    stream.set_nodelay(true)?;
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    while let Some(message) = ws.next().await {
        let text = match message? {
            Message::Text(text) => text,
            Message::Close(_) => break,
            _ => continue,
        };
        let reply = match serde_json::from_str::<Event>(text.as_str()) {
            Ok(event) => serde_json::to_string(&event),
            Err(_) => serde_json::to_string(&Failure { error: "invalid message" }),
        };
        match reply {
            Ok(reply) => ws.send(Message::text(reply)).await?,
            Err(_) => break,
        }
    }
    Ok(())
}
