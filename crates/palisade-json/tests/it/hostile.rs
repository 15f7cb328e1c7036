//! Hostile JSON over the wire ([hardening]): each frame is refused with its error reply, the
//! connection goes on, and the next request is served. The frames sit within the transport's
//! message limit (raised to 4 MiB here, with palisade-json's own size limit) so that the JSON
//! layer is what meets them.

use serde_json::json;

use super::*;

/// A server whose JSON size limit is 4 MiB (the transport's too): room for the big frames.
async fn roomy() -> palisade_server::Running {
    let limits = palisade_json::Limits::default().with_max_size(4 << 20);
    let config = lenient().with_limits(limits);
    let handler = move |ws: WebSocket| chat(ws, config.clone(), None);
    Server::builder()
        .fallback(handler)
        .with_config(quiet().with_max_message_size(4 << 20))
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

async fn roomy_client(addr: SocketAddr) -> Raw {
    let connected = palisade_client::Client::new()
        .with_config(quiet().with_max_message_size(4 << 20))
        .connect(&format!("ws://{addr}/"))
        .await
        .unwrap();
    Raw(connected.into_socket())
}

#[tokio::test]
async fn hostile_frames_are_answered_and_the_connection_goes_on() {
    let server = roomy().await;
    let raw = roomy_client(server.local_addr()).await;
    let null = Value::Null;

    // Nesting 100,000 deep: refused by the byte scan before any parser recurses.
    let deep = format!(
        r#"{{"event":"send","id":1,"data":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    raw.refused(&deep, "too_deep", null.clone()).await;
    raw.still_usable().await;

    // A number of 1,000,000 digits where a u32 is expected: out of any number's range.
    let number = format!(
        r#"{{"event":"send","id":2,"data":{{"text":"t","room":1{}}}}}"#,
        "0".repeat(1_000_000)
    );
    let answer = raw.refused(&number, "malformed", null.clone()).await;
    assert!(answer["error"]["message"].as_str().unwrap().starts_with("not valid JSON at line 1"));
    raw.still_usable().await;

    // Lone surrogates in escapes: not text.
    for escape in [r"\ud800", r"\udfff", r"\ud800\u0041"] {
        let frame = format!(r#"{{"event":"send","id":3,"data":{{"text":"{escape}","room":1}}}}"#);
        raw.refused(&frame, "malformed", null.clone()).await;
    }
    // A pair is a character.
    raw.send(r#"{"event":"send","id":4,"data":{"text":"\ud83d\ude00","room":1}}"#).await;
    assert_eq!(raw.recv().await, json!({"reply": 4, "status": "ok", "data": "😀"}));

    // Duplicate keys, at the top and inside `data`: refused, the key not named.
    raw.refused(r#"{"event":"ping","id":5,"id":6}"#, "malformed", null.clone()).await;
    let dup = raw
        .refused(
            r#"{"event":"send","id":7,"data":{"text":"a","text":"secret","room":1}}"#,
            "malformed",
            null.clone(),
        )
        .await;
    assert!(!dup.to_string().contains("secret"), "{dup}");
    raw.still_usable().await;

    // A million-element array within the size limit, where an object is expected.
    let many = format!(r#"{{"event":"send","id":8,"data":[{}0]}}"#, "0,".repeat(999_999));
    let answer = raw.refused(&many, "invalid_payload", json!(8)).await;
    // serde's derived structs also read a sequence of their fields in order: the first
    // element is taken as `text`, and is not a string.
    assert_eq!(answer["error"]["path"], "data[0]");
    raw.still_usable().await;
}
