//! Every error code, provoked over the wire, with the connection usable afterwards; and no
//! value of the peer's in any of them.

use serde_json::json;

use super::*;

#[tokio::test]
async fn every_error_code_end_to_end_and_the_connection_goes_on() {
    let server = serve(lenient()).await;
    let raw = Raw::open(server.local_addr()).await;
    let null = Value::Null;

    let m = raw.refused(r#"{"event":"ping""#, "malformed", null.clone()).await;
    assert_eq!(m["error"]["message"], "not valid JSON at line 1, column 15");
    raw.still_usable().await;

    let big = format!(r#"{{"event":"send","data":{{"text":"{}","room":1}}}}"#, "a".repeat(70_000));
    raw.refused(&big, "too_large", null.clone()).await;
    raw.still_usable().await;

    let deep = format!(r#"{{"event":"send","id":1,"data":{}{}}}"#, "[".repeat(40), "]".repeat(40));
    raw.refused(&deep, "too_deep", null.clone()).await;
    raw.still_usable().await;

    raw.refused(r#"["event","ping"]"#, "invalid_envelope", null.clone()).await;
    raw.refused(r#"{"event":"ping","id":-1}"#, "invalid_envelope", null.clone()).await;
    raw.refused(r#"{"event":"ping","id":9007199254740992}"#, "invalid_envelope", null.clone())
        .await;
    raw.refused(r#"{"event":"ping","id":5,"v":2}"#, "invalid_envelope", json!(5)).await;
    raw.still_usable().await;

    raw.refused(r#"{"event":"shout","id":6}"#, "unknown_event", json!(6)).await;
    raw.refused(r#"{"event":"shout"}"#, "unknown_event", null.clone()).await;
    raw.still_usable().await;

    let p = raw
        .refused(
            r#"{"event":"send","id":7,"data":{"text":"hi","room":"lobby"}}"#,
            "invalid_payload",
            json!(7),
        )
        .await;
    assert_eq!(p["error"]["path"], "data.room");
    assert_eq!(p["error"]["message"], "invalid type, expected u32");
    let p = raw
        .refused(r#"{"event":"send","id":8,"data":{"room":1}}"#, "invalid_payload", json!(8))
        .await;
    assert_eq!(p["error"]["message"], "missing field `text`");
    raw.still_usable().await;

    let long = "x".repeat(101);
    let v = raw
        .refused(
            &format!(r#"{{"event":"send","id":9,"data":{{"text":"{long}","room":1}}}}"#),
            "validation_failed",
            json!(9),
        )
        .await;
    assert_eq!(v["error"]["path"], "data.text");
    assert_eq!(v["error"]["details"]["violations"][0]["rule"], "length");
    raw.still_usable().await;

    raw.refused(r#"{"reply":77,"status":"ok","data":1}"#, "unknown_reply", null.clone()).await;
    raw.still_usable().await;

    raw.0.send(Message::binary(b"{}".to_vec())).await.unwrap();
    let u = raw.recv().await;
    assert_eq!(u["error"]["code"], "unsupported_data");
    raw.still_usable().await;

    let a = raw.refused(r#"{"event":"fail","id":10}"#, "room_full", json!(10)).await;
    assert_eq!(a["error"]["message"], "the room is full");
    raw.refused(r#"{"event":"hide","id":11}"#, "internal", json!(11)).await;
    raw.refused(r#"{"event":"ignore","id":12}"#, "no_reply", json!(12)).await;
    raw.still_usable().await;
}

#[tokio::test]
async fn error_replies_are_never_answered() {
    let server = serve(lenient()).await;
    let raw = Raw::open(server.local_addr()).await;
    // Well-formed and broken error replies, to ids the server never sent or to none: if any
    // were answered, the next frame would be that answer instead of the pong.
    raw.send(r#"{"reply":77,"status":"error","error":{"code":"x","message":"m"}}"#).await;
    raw.send(r#"{"reply":null,"status":"error","error":{"code":"x","message":"m"}}"#).await;
    raw.send(r#"{"reply":77,"status":"error","error":"bad"}"#).await;
    raw.send(r#"{"reply":"?","status":"error"}"#).await;
    raw.still_usable().await;
}

#[tokio::test]
async fn requests_and_events_reach_the_application_typed() {
    let server = serve(lenient()).await;
    let raw = Raw::open(server.local_addr()).await;
    raw.send(r#"{"event":"send","data":{"text":"hi","room":1}}"#).await;
    assert_eq!(raw.recv().await, json!({"event": "echo", "data": {"text": "hi", "room": 1}}));
    raw.send(r#"{"event":"send","id":0,"data":{"text":"hi","room":1}}"#).await;
    assert_eq!(raw.recv().await, json!({"reply": 0, "status": "ok", "data": "hi"}));
    // The largest id JavaScript holds exactly.
    raw.send(r#"{"event":"ping","id":9007199254740991}"#).await;
    assert_eq!(raw.recv().await["reply"], json!(9007199254740991u64));
}

const SECRET: &str = "sk_live_7f3a9c";

#[tokio::test]
async fn no_value_of_the_peer_is_echoed() {
    let server = serve(lenient()).await;
    let raw = Raw::open(server.local_addr()).await;
    let frames = [
        format!(r#"{{"event":"send","id":1,"data":{{"text":"x","room":"{SECRET}"}}}}"#),
        format!(r#"{{"event":"send","id":1,"data":{{"text":"x","room":1,"{SECRET}":1}}}}"#),
        format!(r#"{{"event":"send","id":1,"data":["{SECRET}"]}}"#),
        format!(r#"{{"event":"send","id":1,"data":{{"text":"x","room":1}},"{SECRET}":1}}"#),
        format!(r#"{{"event":"{SECRET}","id":1}}"#),
        format!(r#"{{"event":"{SECRET}"#),
        format!(r#"{{"event":"{SECRET}" , ]"#),
        format!(
            r#"{{"event":"send","id":1,"data":{{"text":"{SECRET}{}","room":1}}}}"#,
            "x".repeat(100)
        ),
        format!(r#"{{"reply":"{SECRET}","status":"ok"}}"#),
        format!(r#"{{"reply":1,"status":"{SECRET}"}}"#),
        format!(r#"{{"event":"send","id":1,"data":{{"text":"x","room":1.{SECRET}}}}}"#),
    ];
    for frame in &frames {
        raw.send(frame).await;
        let answer = raw.recv().await;
        assert_eq!(answer["status"], "error", "{frame}");
        let text = answer.to_string();
        assert!(!text.contains("sk_live") && !text.contains("7f3a9c"), "{frame} → {text}");
    }
}
