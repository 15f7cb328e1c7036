//! Requests and replies in both directions, timeouts on tokio's paused clock, late and
//! unknown replies, and `request_many`.

use std::time::Duration;

use futures_util::StreamExt;
use palisade_json::{ErrorCode, RequestError, request_many, while_receiving};
use serde_json::json;
use tokio::time::Instant;

use super::*;

async fn client(addr: SocketAddr) -> JsonSocket {
    JsonSocket::new(open(addr).await)
}

/// Runs `work` while `socket` receives; the messages that arrived meanwhile.
macro_rules! receiving {
    ($socket:expr, $work:expr) => {{
        let mut got: Vec<Incoming<FromServer>> = Vec::new();
        let out = while_receiving($socket, $work, |m| got.push(m)).await.unwrap();
        (out, got)
    }};
}

#[tokio::test]
async fn client_requests_server() {
    let server = serve(lenient()).await;
    let mut c = client(server.local_addr()).await;
    let s = c.sender();
    let (pong, got) = receiving!(&mut c, s.request::<String, _>("ping", &()));
    assert_eq!(pong.unwrap(), "pong");
    assert!(got.is_empty());
    let text = Text { text: "hello".into(), room: 3 };
    let (echoed, _) = receiving!(&mut c, s.request::<String, _>("send", &text));
    assert_eq!(echoed.unwrap(), "hello");
    // Events go the other way without a reply.
    c.emit("send", &text).await.unwrap();
    match c.recv::<FromServer>().await.unwrap() {
        Incoming::Event(FromServer::Echo(echo)) => assert_eq!(echo, text),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn refusals_reach_the_request() {
    let server = serve(lenient()).await;
    let mut c = client(server.local_addr()).await;
    let s = c.sender();
    let (r, _) = receiving!(&mut c, s.request::<String, _>("fail", &()));
    match r {
        Err(RequestError::Rejected(e)) => {
            assert_eq!(e.code().as_str(), "room_full");
            assert_eq!(e.message(), "the room is full");
        }
        other => panic!("{other:?}"),
    }
    let (r, _) = receiving!(&mut c, s.request::<String, _>("ignore", &()));
    assert!(matches!(r, Err(RequestError::Rejected(e)) if *e.code() == ErrorCode::NoReply));
    let (r, _) = receiving!(&mut c, s.request::<String, _>("shout", &()));
    assert!(matches!(r, Err(RequestError::Rejected(e)) if *e.code() == ErrorCode::UnknownEvent));
    // The reply is there but is not a number.
    let (r, _) = receiving!(&mut c, s.request::<u32, _>("ping", &()));
    match r {
        Err(RequestError::Decode(e)) => {
            assert_eq!(e.path(), Some("data"));
            assert_eq!(e.message(), "invalid type, expected u32");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn server_requests_client() {
    let server = serve(lenient()).await;
    let mut c = client(server.local_addr()).await;
    c.emit("ask", &json!({"question": "six times seven?"})).await.unwrap();
    // The server's request arrives as a request; its answer comes back as an event.
    match c.recv::<FromServer>().await.unwrap() {
        Incoming::Request(Request { message: FromServer::Question(q), responder }) => {
            assert_eq!(q, "six times seven?");
            responder.reply("42").await.unwrap();
        }
        other => panic!("{other:?}"),
    }
    match c.recv::<FromServer>().await.unwrap() {
        Incoming::Event(FromServer::Answer(a)) => assert_eq!(a, "42"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_dropped_request_answers_no_reply_to_the_server() {
    let server = serve(lenient()).await;
    let mut c = client(server.local_addr()).await;
    c.emit("ask", &json!({"question": "?"})).await.unwrap();
    match c.recv::<FromServer>().await.unwrap() {
        Incoming::Request(request) => drop(request),
        other => panic!("{other:?}"),
    }
    match c.recv::<FromServer>().await.unwrap() {
        Incoming::Event(FromServer::Answer(a)) => {
            assert!(a.contains("no_reply"), "{a}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn requests_time_out_and_late_replies_are_dropped() {
    let server = serve(lenient()).await;
    let mut c = client(server.local_addr()).await;
    let s = c.sender();
    let start = Instant::now();
    // Answered after 15 s; the default timeout is 10 s.
    let (r, got) = receiving!(&mut c, s.request::<String, _>("slow", &json!({"after_ms": 15_000})));
    assert!(matches!(r, Err(RequestError::Timeout)), "{r:?}");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(10) && waited < Duration::from_secs(11), "{waited:?}");
    assert!(got.is_empty());
    // The late reply arrives at 15 s and is dropped: nothing reaches the application.
    let ((), got) = receiving!(&mut c, tokio::time::sleep(Duration::from_secs(10)));
    assert!(got.is_empty(), "{got:?}");
    // A reply within a timeout of its own is delivered; the connection is fine.
    let (r, _) = receiving!(
        &mut c,
        s.request_timeout::<String, _>("slow", &json!({"after_ms": 1_000}), Duration::from_secs(2))
    );
    assert_eq!(r.unwrap(), "slow");
}

#[tokio::test(start_paused = true)]
async fn request_many_waits_for_one_deadline() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = serve_with(lenient(), Some(tx)).await;
    // Client A answers every question, client B never does (it keeps the requests, so no
    // `no_reply` goes out either).
    let mut a = client(server.local_addr()).await;
    let a_id = rx.recv().await.unwrap();
    let mut b = client(server.local_addr()).await;
    let b_id = rx.recv().await.unwrap();
    let senders = vec![a_id.clone(), b_id.clone()];
    tokio::spawn(async move {
        while let Ok(Incoming::Request(r)) = a.recv::<FromServer>().await {
            r.reply("yes").await.unwrap();
        }
    });
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok(incoming) = b.recv::<FromServer>().await {
            held.push(incoming);
        }
    });
    let start = Instant::now();
    let deadline = start + Duration::from_secs(5);
    let results: Vec<_> =
        request_many::<String, _>(senders, "question", "ready?", deadline).unwrap().collect().await;
    assert_eq!(results.len(), 2);
    // A's answer comes first, B's timeout at the deadline.
    assert_eq!(results[0].0, a_id.id());
    assert_eq!(results[0].1.as_ref().unwrap(), "yes");
    assert_eq!(results[1].0, b_id.id());
    assert!(matches!(results[1].1, Err(RequestError::Timeout)));
    assert!(start.elapsed() >= Duration::from_secs(5));
}

/// A server that answers by hand: a broken reply to the first request, a late one to the
/// second, and reports every frame it receives.
async fn hand_made(ws: WebSocket, seen: mpsc::UnboundedSender<Value>) -> Result<(), BoxError> {
    let raw = Raw(ws);
    let first = raw.recv().await;
    seen.send(first.clone())?;
    let id = &first["id"];
    raw.send(&format!(r#"{{"reply":{id},"status":"ok","data":1,"x":1}}"#)).await;
    let second = raw.recv().await;
    seen.send(second.clone())?;
    let third = raw.recv().await;
    seen.send(third.clone())?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    raw.send(&format!(r#"{{"reply":{},"status":"ok","data":"late"}}"#, third["id"])).await;
    loop {
        seen.send(raw.recv().await)?;
    }
}

#[tokio::test(start_paused = true)]
async fn broken_and_late_replies_from_a_hand_made_server() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let server = Server::builder()
        .fallback(move |ws: WebSocket| hand_made(ws, tx.clone()))
        .with_subprotocols([palisade_json::SUBPROTOCOL])
        .with_config(quiet())
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let mut c = client(server.local_addr()).await;
    let s = c.sender();

    // A broken reply fails the request it names, and the server is told (with `reply: null`:
    // the id in a reply is ours, not the server's).
    let (r, _) = receiving!(&mut c, s.request::<u32, _>("q", &1));
    assert!(
        matches!(&r, Err(RequestError::InvalidReply(e)) if *e.code() == ErrorCode::InvalidEnvelope),
        "{r:?}"
    );
    assert_eq!(seen.recv().await.unwrap()["id"], 0);
    let told = seen.recv().await.unwrap();
    assert_eq!(told["reply"], Value::Null);
    assert_eq!(told["error"]["code"], "invalid_envelope");

    // A reply after the timeout is dropped quietly: no `unknown_reply` goes back, so the next
    // thing the server sees is our next request.
    let (r, _) =
        receiving!(&mut c, s.request_timeout::<String, _>("q", &2, Duration::from_secs(1)));
    assert!(matches!(r, Err(RequestError::Timeout)), "{r:?}");
    assert_eq!(seen.recv().await.unwrap()["id"], 1);
    let ((), got) = receiving!(&mut c, tokio::time::sleep(Duration::from_secs(5)));
    assert!(got.is_empty());
    c.emit("after", &()).await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), serde_json::json!({"event": "after", "data": null}));
}
