//! Requests in both directions over palisade-json: the client's requests are answered with an
//! ok reply or refused with an application error code, and on an `ask` event the server sends
//! the client a request of its own while its loop keeps receiving. The book's "JSON messages"
//! chapter shows its parts.
//!
//! Run it:
//!
//! ```text
//! cargo run --release --example json_requests -- --addr 127.0.0.1:9005
//! ```
//!
//! and send it `{"event":"add","id":1,"data":{"a":2,"b":3}}` (answered `{"reply":1,"status":
//! "ok","data":{"sum":5}}`), `{"event":"divide","id":2,"data":{"a":1,"b":0}}` (refused with
//! `division_by_zero`), or `{"event":"ask","data":{"question":"proceed?"}}`: the server then
//! sends `{"event":"confirm","id":0,"data":{"question":"proceed?"}}`; answer it with
//! `{"reply":0,"status":"ok","data":{"answer":"yes"}}` and it emits `confirmed`. The Python
//! client in `crates/palisade/tests/interop/py/json_client.py` speaks the same events. It prints
//! `listening on ws://ADDR` once it accepts connections and shuts down on Ctrl-C.

use palisade::json::{
    AppCode, ErrorReply, Incoming, JsonSocket, Outcome, ReplyError, Request, RequestError,
    SUBPROTOCOL,
};
use palisade::server::Server;
use palisade::{Config, WebSocket};
use serde::{Deserialize, Serialize};

// ANCHOR: messages
/// What clients send. Which of them are events and which requests is up to the handler: a
/// request the handler does not answer is answered `no_reply` for it.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum ClientEvent {
    /// Event: sent back as the same event.
    Echo(Echo),
    /// Request: answered with `{"sum": a + b}`.
    Add(Operands),
    /// Request: answered with `{"quotient": a / b}`, or refused.
    Divide(Operands),
    /// Event: the server asks the client to `confirm` and emits the answer as `confirmed`.
    Ask(Question),
}

#[derive(Debug, Deserialize, Serialize)]
struct Echo {
    seq: u64,
    text: String,
}

#[derive(Debug, Deserialize)]
struct Operands {
    a: i64,
    b: i64,
}

#[derive(Debug, Deserialize, Serialize)]
struct Question {
    question: String,
}

/// What the client answers to `confirm`.
#[derive(Debug, Deserialize, Serialize)]
struct Answer {
    answer: String,
}
// ANCHOR_END: messages

// ANCHOR: app_error
/// Why `divide` fails: the application's errors, each with a code of its own.
#[derive(Debug)]
enum DivideError {
    ByZero,
    Overflow,
}

impl ReplyError for DivideError {
    fn outcome(&self) -> Outcome {
        let (code, message, path) = match self {
            Self::ByZero => ("division_by_zero", "cannot divide by zero", "data.b"),
            Self::Overflow => ("overflow", "the quotient does not fit in 64 bits", "data"),
        };
        match AppCode::new(code) {
            Ok(code) => Outcome::Reply(ErrorReply::new(code, message).with_path(path)),
            // Both codes above are snake_case and not built in, so this is not reached; if it
            // were, the client would learn nothing but `internal`.
            Err(_) => Outcome::Reply(ErrorReply::internal()),
        }
    }
}

fn divide(Operands { a, b }: &Operands) -> Result<i64, DivideError> {
    if *b == 0 {
        return Err(DivideError::ByZero);
    }
    a.checked_div(*b).ok_or(DivideError::Overflow)
}
// ANCHOR_END: app_error

async fn handler(ws: WebSocket) -> Result<(), palisade::Error> {
    let mut socket = JsonSocket::new(ws);
    loop {
        match socket.recv::<ClientEvent>().await? {
            // ANCHOR: requests
            Incoming::Request(Request {
                message: ClientEvent::Add(Operands { a, b }),
                responder,
            }) => {
                // `i64 + i64` may overflow; an `i128` sum does not (and serializes as a number).
                let sum = i128::from(a) + i128::from(b);
                responder.reply(&serde_json::json!({ "sum": sum })).await?;
            }
            Incoming::Request(Request { message: ClientEvent::Divide(operands), responder }) => {
                match divide(&operands) {
                    Ok(quotient) => {
                        responder.reply(&serde_json::json!({ "quotient": quotient })).await?
                    }
                    Err(error) => responder.reply_error(&error).await?,
                }
            }
            // ANCHOR_END: requests
            Incoming::Event(ClientEvent::Echo(echo)) => socket.emit("echo", &echo).await?,
            // ANCHOR: ask
            Incoming::Event(ClientEvent::Ask(question)) => {
                // The reply to our request arrives through this loop's `recv`, which routes
                // it to the waiting `request`: so the request waits in a task of its own
                // while the loop goes on receiving.
                let sender = socket.sender();
                tokio::spawn(async move {
                    let why = match sender.request::<Answer, _>("confirm", &question).await {
                        Ok(answer) => return sender.emit("confirmed", &answer).await,
                        // The connection is over: nobody is left to tell.
                        Err(RequestError::Closed(err)) => return Err(err),
                        Err(RequestError::Timeout) => "timeout".to_owned(),
                        // The client's error code: `no_reply` if it dropped the request.
                        Err(RequestError::Rejected(error)) => error.code().to_string(),
                        // A reply that is not `{"answer": "…"}`, or not a valid reply at all.
                        Err(_) => "invalid_answer".to_owned(),
                    };
                    sender.emit("unconfirmed", &why).await
                });
            }
            // ANCHOR_END: ask
            // `add` and `divide` as events have nobody to answer; `echo` and `ask` as
            // requests are dropped here, which answers them `no_reply`.
            Incoming::Event(_) | Incoming::Request(_) => {}
        }
    }
}

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: json_requests [--addr HOST:PORT]

Typed JSON requests both ways, with application error codes.

  --addr HOST:PORT   where to listen (default 127.0.0.1:9005)
  -h, --help         print this and exit
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:9005".to_owned();
    let mut args = args::Args::new("json_requests", USAGE);
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
        // ANCHOR: server
        let server = Server::builder()
            .fallback(handler)
            // Clients offer `palisade.json.v1`; listing it here makes the handshake select it.
            .with_subprotocols([SUBPROTOCOL])
            .with_config(Config::default())
            .build();
        // ANCHOR_END: server
        let running = server.bind(&addr).await?;
        println!("listening on ws://{}", running.local_addr());
        tokio::signal::ctrl_c().await?;
        running.shutdown(std::time::Duration::from_secs(5)).await;
        Ok(())
    })
}
