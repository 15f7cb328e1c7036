//! The MessagePack codec end to end: the same envelope in binary frames.

use palisade_json::{Codec, RequestError, while_receiving};
use serde_json::json;

use super::*;

fn msgpack() -> JsonConfig {
    lenient().with_codec(Codec::MessagePack)
}

/// The next frame, which must be binary, decoded.
async fn recv_binary(ws: &WebSocket) -> Value {
    match ws.recv().await.unwrap() {
        Message::Binary(bytes) => rmp_serde::from_slice(&bytes).unwrap(),
        Message::Text(_) => panic!("expected a binary frame"),
    }
}

#[tokio::test]
async fn requests_and_events_in_binary_frames() {
    let server = serve(msgpack()).await;
    let mut c = JsonSocket::with_config(open(server.local_addr()).await, msgpack());
    let s = c.sender();
    let mut got: Vec<Incoming<FromServer>> = Vec::new();
    let pong = while_receiving(&mut c, s.request::<String, _>("ping", &()), |m| got.push(m))
        .await
        .unwrap();
    assert_eq!(pong.unwrap(), "pong");
    let fail = while_receiving(&mut c, s.request::<String, _>("fail", &()), |m| got.push(m))
        .await
        .unwrap();
    assert!(matches!(fail, Err(RequestError::Rejected(e)) if e.code().as_str() == "room_full"));
    assert!(got.is_empty());
    let text = Text { text: "hi".into(), room: 1 };
    c.emit("send", &text).await.unwrap();
    match c.recv::<FromServer>().await.unwrap() {
        Incoming::Event(FromServer::Echo(echo)) => assert_eq!(echo, text),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn text_and_garbage_are_refused_in_binary() {
    let server = serve(msgpack()).await;
    let ws = open(server.local_addr()).await;
    ws.send(r#"{"event":"ping","id":1}"#).await.unwrap();
    let answer = recv_binary(&ws).await;
    assert_eq!(answer["error"]["code"], "unsupported_data");
    ws.send(Message::binary(vec![0xc1, 0x00])).await.unwrap();
    assert_eq!(recv_binary(&ws).await["error"]["code"], "malformed");
    let ping = rmp_serde::to_vec_named(&json!({"event": "ping", "id": 2})).unwrap();
    ws.send(Message::binary(ping)).await.unwrap();
    assert_eq!(recv_binary(&ws).await, json!({"reply": 2, "status": "ok", "data": "pong"}));
}
