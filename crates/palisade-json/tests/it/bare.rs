//! Bare values without an envelope: `recv_json` and `send_json`.

use serde_json::json;

use super::*;

#[derive(Debug, Deserialize, Serialize)]
struct Point {
    x: i32,
    y: i32,
}

/// Doubles every point it receives.
async fn doubler(ws: WebSocket) -> Result<(), BoxError> {
    let mut socket = JsonSocket::with_config(ws, lenient());
    loop {
        let p: Point = socket.recv_json().await?;
        socket.send_json(&Point { x: p.x * 2, y: p.y * 2 }).await?;
    }
}

#[tokio::test]
async fn bare_values_both_ways_and_bad_ones_answered() {
    let server = Server::builder()
        .fallback(doubler)
        .with_config(quiet())
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let ws = palisade_client::Client::new()
        .with_config(quiet())
        .connect(&format!("ws://{}/", server.local_addr()))
        .await
        .unwrap()
        .into_socket();
    let raw = Raw(ws);
    raw.send(r#"{"x":1,"y":-2}"#).await;
    assert_eq!(raw.recv().await, json!({"x": 2, "y": -4}));
    // No envelope, so no id: every error reply has `"reply": null`; paths start at `data`,
    // the value itself.
    let e = raw.refused(r#"{"x":"sk_live_1","y":1}"#, "invalid_payload", Value::Null).await;
    assert_eq!(e["error"]["path"], "data.x");
    assert!(!e.to_string().contains("sk_live"));
    raw.refused("[1,", "malformed", Value::Null).await;
    raw.refused(&"[".repeat(40), "too_deep", Value::Null).await;
    raw.send(r#"{"x":3,"y":4}"#).await;
    assert_eq!(raw.recv().await, json!({"x": 6, "y": 8}));
}
