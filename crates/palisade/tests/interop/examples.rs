//! The examples whose command lines are contracts, driven over real TCP with palisade's client
//! and Python `websockets` side by side.

use palisade::Message;
use palisade::client::Client;

use crate::support::Peer;

#[path = "../../../../examples/broadcast.rs"]
#[allow(dead_code, reason = "the example's `main` is not run here; its `serve` is")]
mod broadcast;

/// `broadcast`: each text message is acknowledged to its sender (`ack:` and the message) and
/// pushed unchanged to every other client, palisade's and Python's alike, in order; binary
/// messages are not relayed.
#[tokio::test]
async fn broadcast_acks_the_sender_and_pushes_to_every_other_client() {
    let running = broadcast::serve("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", running.local_addr());
    let mut py = Peer::spawn("client.py", &["listen", &url, "3"]);
    assert_eq!(py.line().await, "OPEN");
    let client = Client::new().with_keepalive(None, None);
    let a = client.connect(&url).await.unwrap();
    let b = client.connect(&url).await.unwrap();
    // Every connection is registered before the first message goes out.
    while running.connections() < 3 {
        tokio::task::yield_now().await;
    }
    a.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    for text in ["one", "two", "three"] {
        a.send(text).await.unwrap();
    }
    for text in ["one", "two", "three"] {
        assert_eq!(a.recv().await.unwrap(), Message::text(format!("ack:{text}")));
        assert_eq!(b.recv().await.unwrap(), Message::text(text));
        assert_eq!(py.line().await, format!("RECV {text}"));
    }
    assert_eq!(py.line().await, "CLOSED 1000");
    a.close(palisade::CloseCode::NORMAL, "").await.unwrap();
    b.close(palisade::CloseCode::NORMAL, "").await.unwrap();
    let summary = running.shutdown(std::time::Duration::from_secs(5)).await;
    assert_eq!(summary.aborted, 0);
}

#[path = "../../../../examples/coming_from_python.rs"]
mod coming_from_python;

/// The Coming from Python chapter's mapping holds: every exception of Python's `websockets`
/// (and simple-websocket's and Starlette's) has its palisade error, close code, status,
/// category, retry class and `match` arm, checked by the example the chapter includes.
#[test]
fn the_coming_from_python_mapping_holds() {
    coming_from_python::main().unwrap();
}
