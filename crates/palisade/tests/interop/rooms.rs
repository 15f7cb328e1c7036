//! palisade's rooms against a Python member written from the room protocol's description
//! alone (plain `websockets` and `json`): it joins a room, sees a palisade client join and
//! publish, is refused a private message to nobody, and leaves.

use palisade::json::{Incoming, JsonSocket, SUBPROTOCOL};
use palisade::rooms::{Rooms, RoomsConfig};
use palisade::server::{BoxError, Path, Server, State};
use palisade::{Message, WebSocket};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::Peer;

#[derive(Debug, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum Chat {
    Say { room: String, text: String },
}

async fn chat(
    ws: WebSocket,
    State(rooms): State<Rooms>,
    Path(user): Path<String>,
) -> Result<(), BoxError> {
    let mut socket = JsonSocket::new(ws);
    let session = rooms.connect(&socket, &user, json!({})).await?;
    loop {
        match session.recv::<Chat>(&mut socket).await? {
            Incoming::Event(Chat::Say { room, text }) => {
                session
                    .broadcast_others(&room, "said", &json!({ "from": user, "text": text }))
                    .await?
            }
            Incoming::Request(_) => {}
        }
    }
}

/// The next JSON frame a palisade client receives.
async fn next(ws: &WebSocket) -> Value {
    match ws.recv().await.unwrap() {
        Message::Text(text) => serde_json::from_str(&text).unwrap(),
        Message::Binary(_) => panic!("a text frame"),
    }
}

#[tokio::test]
async fn a_python_member_joins_hears_and_is_refused() {
    let running = Server::builder()
        .route("/{user}", chat)
        .with_state(Rooms::new(RoomsConfig::default()))
        .with_subprotocols([SUBPROTOCOL])
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!("ws://{}/py", running.local_addr());
    let mut py = Peer::spawn("rooms_client.py", &[&url]);
    assert_eq!(py.line().await, "JOINED lobby py");

    let rust = palisade::client::Client::new()
        .with_subprotocols([SUBPROTOCOL])
        .connect(&format!("ws://{}/rust", running.local_addr()))
        .await
        .unwrap()
        .into_socket();
    rust.send(json!({"event": "room.join", "id": 0, "data": {"room": "lobby"}}).to_string())
        .await
        .unwrap();
    let reply = next(&rust).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(py.line().await, "PRESENCE-JOIN rust");
    rust.send(json!({"event": "say", "data": {"room": "lobby", "text": "hello"}}).to_string())
        .await
        .unwrap();
    assert_eq!(py.line().await, "MESSAGE said rust hello");
    assert_eq!(py.line().await, "ERROR 2 no_such_user");
    assert_eq!(py.line().await, "LEFT lobby");
    assert_eq!(py.line().await, "CLOSED 1000");
    assert_eq!(next(&rust).await["event"], "presence.leave");
    assert!(py.wait().await.success());
}
