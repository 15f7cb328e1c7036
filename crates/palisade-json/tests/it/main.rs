//! End-to-end tests of palisade-json: a real palisade server and a real palisade client over
//! TCP on 127.0.0.1. The server runs [`chat`]; clients either speak through a `JsonSocket` or
//! send hand-made frames ([`Raw`]) to provoke each error.
//!
//! Note on palisade-conn's API (reported, not changed): replies to our own requests can only
//! be routed by whoever receives, because a `WebSocket` has one receive queue and no way to
//! hand some frames to another consumer. A task that waits on its own request must therefore
//! keep receiving meanwhile; `palisade_json::while_receiving` does that for the tests' client.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use palisade_conn::{Config, WebSocket};
use palisade_error::{CloseCode, Error};
use palisade_json::{
    AppCode, ErrorReply, Incoming, Invalid, JsonConfig, JsonSender, JsonSocket, Request,
    StrikePolicy, Validate,
};
use palisade_proto::Message;
use palisade_server::{BoxError, Server};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

mod bare;
mod errors;
mod fuzz_corpus;
mod hostile;
#[cfg(feature = "msgpack")]
mod msgpack;
mod requests;
mod strikes;
#[cfg(feature = "garde")]
mod validated;

/// What clients send the test server.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum Chat {
    /// Event: echoed back as `echo`. Request: answered with the text.
    Send(Text),
    /// Request: answered with `"pong"`.
    Ping,
    /// Event: the server asks the client `question` (a request) and emits its answer.
    Ask { question: String },
    /// Request: answered after `after_ms`.
    Slow { after_ms: u64 },
    /// Request: refused with the application code `room_full`.
    Fail,
    /// Request: refused with `internal`.
    Hide,
    /// Request: dropped without a reply.
    Ignore,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Text {
    text: String,
    room: u32,
}

impl Validate for Chat {
    fn validate(&self) -> Result<(), Invalid> {
        match self {
            Chat::Send(t) if t.text.chars().count() > 100 => {
                Err(Invalid::single("text", "length", "at most 100 characters"))
            }
            _ => Ok(()),
        }
    }
}

/// What the test server sends clients.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum FromServer {
    Echo(Text),
    Answer(String),
    Question(String),
}

/// The test server's handler.
async fn chat(
    ws: WebSocket,
    config: JsonConfig,
    registry: Option<mpsc::UnboundedSender<JsonSender>>,
) -> Result<(), BoxError> {
    let mut socket = JsonSocket::with_config(ws, config);
    if let Some(registry) = registry {
        registry.send(socket.sender())?;
    }
    loop {
        match socket.recv_validated::<Chat>().await? {
            Incoming::Event(Chat::Send(text)) => socket.emit("echo", &text).await?,
            Incoming::Event(Chat::Ask { question }) => {
                let sender = socket.sender();
                tokio::spawn(async move {
                    let answer = match sender.request::<String, _>("question", &question).await {
                        Ok(answer) => answer,
                        Err(err) => format!("request failed: {err}"),
                    };
                    sender.emit("answer", &answer).await
                });
            }
            Incoming::Event(_) => {}
            Incoming::Request(Request { message, responder }) => match message {
                Chat::Send(text) => responder.reply(&text.text).await?,
                Chat::Ping => responder.reply("pong").await?,
                Chat::Ask { .. } => responder.reply(&()).await?,
                Chat::Slow { after_ms } => {
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(after_ms)).await;
                        responder.reply("slow").await
                    });
                }
                Chat::Fail => {
                    let full = AppCode::new("room_full").unwrap();
                    responder.reply_error(&ErrorReply::new(full, "the room is full")).await?
                }
                Chat::Hide => responder.reply_error(&ErrorReply::internal()).await?,
                Chat::Ignore => drop(responder),
            },
        }
    }
}

/// Keepalive off: nothing but the test's own frames on the wire.
fn quiet() -> Config {
    Config::default().with_keepalive(None, None)
}

/// Starts the test server with `config`; with `registry`, every connection's sender goes
/// there.
async fn serve_with(
    config: JsonConfig,
    registry: Option<mpsc::UnboundedSender<JsonSender>>,
) -> palisade_server::Running {
    let handler = move |ws: WebSocket| chat(ws, config.clone(), registry.clone());
    Server::builder()
        .fallback(handler)
        .with_subprotocols([palisade_json::SUBPROTOCOL])
        .with_config(quiet())
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

async fn serve(config: JsonConfig) -> palisade_server::Running {
    serve_with(config, None).await
}

/// A client connection, offering the format's subprotocol.
async fn open(addr: SocketAddr) -> WebSocket {
    let connected = palisade_client::Client::new()
        .with_config(quiet())
        .with_subprotocols([palisade_json::SUBPROTOCOL])
        .connect(&format!("ws://{addr}/"))
        .await
        .unwrap();
    assert_eq!(connected.subprotocol(), Some(palisade_json::SUBPROTOCOL));
    connected.into_socket()
}

/// A client that sends frames by hand and reads the server's as JSON.
struct Raw(WebSocket);

impl Raw {
    async fn open(addr: SocketAddr) -> Self {
        Self(open(addr).await)
    }

    async fn send(&self, frame: &str) {
        self.0.send(frame.to_owned()).await.unwrap();
    }

    async fn recv(&self) -> Value {
        match self.0.recv().await.unwrap() {
            Message::Text(text) => serde_json::from_str(&text).unwrap(),
            Message::Binary(_) => panic!("expected a text frame"),
        }
    }

    /// Sends `frame` and returns the error reply it earns, checking its code and `reply`.
    async fn refused(&self, frame: &str, code: &str, reply: Value) -> Value {
        self.send(frame).await;
        let answer = self.recv().await;
        assert_eq!(answer["status"], "error", "{frame} → {answer}");
        assert_eq!(answer["error"]["code"], code, "{frame} → {answer}");
        assert_eq!(answer["reply"], reply, "{frame} → {answer}");
        answer
    }

    /// The connection still serves requests.
    async fn still_usable(&self) {
        self.send(r#"{"event":"ping","id":4242}"#).await;
        let answer = self.recv().await;
        assert_eq!(answer, serde_json::json!({"reply": 4242, "status": "ok", "data": "pong"}));
    }

    /// Receives until the connection ends; the close code it ended with.
    async fn closed_with(&self) -> CloseCode {
        loop {
            match self.0.recv().await {
                Ok(_) => {}
                Err(Error::ConnectionClosedError(closed) | Error::ConnectionClosedOk(closed)) => {
                    return closed.code();
                }
                Err(other) => panic!("ended with {other}"),
            }
        }
    }
}

/// Strikes off: each test provokes as many errors as it likes.
fn lenient() -> JsonConfig {
    JsonConfig::default().with_strike_policy(StrikePolicy::off())
}
