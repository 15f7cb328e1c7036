//! `recv_validated` with a garde-derived message type (feature `garde`).

use serde_json::json;

use super::*;

#[derive(Debug, Deserialize, ::garde::Validate)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
enum Profile {
    Rename {
        #[garde(length(min = 3, max = 20))]
        name: String,
    },
}

async fn profiles(ws: WebSocket) -> Result<(), BoxError> {
    let mut socket = JsonSocket::with_config(ws, lenient());
    loop {
        if let Incoming::Request(r) = socket.recv_validated::<Profile>().await? {
            let Profile::Rename { name } = &r.message;
            let name = name.clone();
            r.reply(&name).await?;
        }
    }
}

#[tokio::test]
async fn garde_rules_answer_validation_failed() {
    let server = Server::builder()
        .fallback(profiles)
        .with_subprotocols([palisade_json::SUBPROTOCOL])
        .with_config(quiet())
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let raw = Raw::open(server.local_addr()).await;
    let v = raw
        .refused(r#"{"event":"rename","id":1,"data":{"name":"sk"}}"#, "validation_failed", json!(1))
        .await;
    assert_eq!(v["error"]["path"], "data.name");
    assert!(!v.to_string().contains("\"sk\""), "{v}");
    raw.send(r#"{"event":"rename","id":2,"data":{"name":"ada"}}"#).await;
    assert_eq!(raw.recv().await, json!({"reply": 2, "status": "ok", "data": "ada"}));
}
