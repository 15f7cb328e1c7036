//! palisade's JSON layer against a Python client written from wire format v1's description
//! alone (plain `websockets` and `json`): events, requests and replies in both directions, and
//! error replies that keep the connection, all on one connection.

use std::time::Duration;

use palisade::error::ConnectionClosed;
use palisade::json::{AppCode, ErrorReply, Incoming, JsonSocket, Request, SUBPROTOCOL};
use palisade::server::{BoxError, ConnectionInfo, Server, State};
use palisade::{CloseCode, Error, WebSocket};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::support::Peer;

/// What the Python client sends: the event name is the tag, its data the variant's payload.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum ClientEvent {
    Echo(Echo),
    Add(Operands),
    Divide(Operands),
    Ask(Question),
}

#[derive(Debug, Deserialize, Serialize)]
struct Echo {
    seq: u64,
    text: String,
}

#[derive(Debug, Deserialize)]
struct Operands {
    a: i32,
    b: i32,
}

#[derive(Debug, Deserialize, Serialize)]
struct Question {
    question: String,
}

#[derive(Debug, Deserialize, Serialize)]
struct Answer {
    answer: String,
}

/// How a connection's handler ended, for the test to check.
#[derive(Debug)]
struct Ended {
    subprotocol: Option<String>,
    outcome: Result<ConnectionClosed, BoxError>,
}

async fn handler(
    ws: WebSocket,
    info: ConnectionInfo,
    State(ended): State<mpsc::UnboundedSender<Ended>>,
) {
    let outcome = serve(JsonSocket::new(ws)).await;
    let subprotocol = info.subprotocol().map(str::to_owned);
    // The test may be gone already if it failed.
    let _ = ended.send(Ended { subprotocol, outcome });
}

/// Serves one client until it closes normally; every other end is an error.
async fn serve(mut socket: JsonSocket) -> Result<ConnectionClosed, BoxError> {
    let mut asks = JoinSet::new();
    let closed = loop {
        // Bad input never gets here: `recv` answers it with an error reply and goes on.
        match socket.recv::<ClientEvent>().await {
            Ok(Incoming::Event(ClientEvent::Echo(echo))) => socket.emit("echo", &echo).await?,
            Ok(Incoming::Event(ClientEvent::Ask(question))) => {
                // The reply to our request is routed by this loop's `recv`, so the request
                // waits in a task of its own while the loop goes on receiving.
                let sender = socket.sender();
                asks.spawn(async move {
                    let answer: Answer = sender.request("confirm", &question).await?;
                    sender.emit("confirmed", &answer).await?;
                    Ok::<_, BoxError>(())
                });
            }
            Ok(Incoming::Request(Request {
                message: ClientEvent::Add(Operands { a, b }),
                responder,
            })) => {
                let sum = i64::from(a) + i64::from(b);
                responder.reply(&json!({ "sum": sum })).await?;
            }
            Ok(Incoming::Request(Request {
                message: ClientEvent::Divide(Operands { a, b }),
                responder,
            })) => {
                if b == 0 {
                    let code = AppCode::new("division_by_zero")?;
                    let error = ErrorReply::new(code, "cannot divide by zero");
                    responder.reply_error(&error).await?;
                } else {
                    // In i64, even `i32::MIN / -1` fits.
                    let quotient = i64::from(a) / i64::from(b);
                    responder.reply(&json!({ "quotient": quotient })).await?;
                }
            }
            // `echo` and `ask` as requests are dropped, which answers `no_reply`; `add` and
            // `divide` as events have nobody to answer.
            Ok(Incoming::Request(_) | Incoming::Event(_)) => {}
            Err(Error::ConnectionClosedOk(closed)) => break *closed,
            Err(err) => return Err(err.into()),
        }
    };
    while let Some(ask) = asks.join_next().await {
        ask??;
    }
    Ok(closed)
}

/// One connection through every kind of message, each error answered and survived; the
/// Python client prints one line per fact.
#[tokio::test]
async fn a_python_client_written_from_the_wire_format() {
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<Ended>();
    let running = Server::builder()
        .route("/json", handler)
        .with_subprotocols([SUBPROTOCOL])
        .with_state(ended_tx)
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!("ws://{}/json", running.local_addr());
    let mut py = Peer::spawn("json_client.py", &["json", &url]);
    for expected in [
        "OPEN palisade.json.v1",
        "EVENT echo 1 hi",
        "REPLY 1 ok 5",
        "ERROR null malformed",
        "AT 1 42",
        "ERROR 2 invalid_payload data.a",
        "NO-ECHO ok",
        "ERROR 3 unknown_event",
        "ERROR 4 division_by_zero",
        "SERVER-REQUEST confirm",
        "EVENT confirmed yes",
        "ERROR null unknown_reply",
        // Our reply to its close echoes the code (RFC 6455 §5.5.1), without a reason.
        "CLOSED 1000",
    ] {
        assert_eq!(py.line().await, expected);
    }
    assert!(py.wait().await.success());

    let ended = tokio::time::timeout(Duration::from_secs(10), ended_rx.recv())
        .await
        .expect("the handler did not end in time")
        .unwrap();
    assert_eq!(ended.subprotocol.as_deref(), Some(SUBPROTOCOL));
    let closed = ended.outcome.unwrap();
    assert!(closed.is_normal(), "{closed}");
    assert_eq!(closed.code(), CloseCode::NORMAL);
    let summary = running.shutdown(Duration::from_secs(5)).await;
    assert_eq!(summary.aborted, 0);
}
