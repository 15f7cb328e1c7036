//! The strike policy: too many failures within the window close the connection, with the
//! close code of the last failure's class.

use std::time::Duration;

use super::*;

fn three_strikes() -> JsonConfig {
    JsonConfig::default().with_strike_policy(StrikePolicy::new(3, Duration::from_secs(10)))
}

/// Sends `frame` `n` times, reading each error reply, then expects the close.
async fn strike_out(frame: &str, code: &str) -> (CloseCode, String) {
    let server = serve(three_strikes()).await;
    let raw = Raw::open(server.local_addr()).await;
    for _ in 0..3 {
        raw.send(frame).await;
        assert_eq!(raw.recv().await["error"]["code"], code, "{frame}");
    }
    let close = raw.closed_with().await;
    (close, raw.0.close_info().reason().to_owned())
}

#[tokio::test]
async fn malformed_frames_strike_out_with_1007() {
    let (code, reason) = strike_out("{nope", "malformed").await;
    assert_eq!(code, CloseCode::INVALID_PAYLOAD);
    // Generic: nothing of the frames, not even which failure.
    assert_eq!(reason, "too many invalid messages");
}

#[tokio::test]
async fn wrong_shapes_strike_out_with_1007() {
    let frame = r#"{"event":"send","id":1,"data":{"text":1,"room":1}}"#;
    assert_eq!(strike_out(frame, "invalid_payload").await.0, CloseCode::INVALID_PAYLOAD);
}

#[tokio::test]
async fn unknown_events_strike_out_with_1008() {
    let (code, _) = strike_out(r#"{"event":"shout"}"#, "unknown_event").await;
    assert_eq!(code, CloseCode::POLICY_VIOLATION);
}

#[tokio::test]
async fn too_deep_frames_strike_out_with_1008() {
    let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
    assert_eq!(strike_out(&deep, "too_deep").await.0, CloseCode::POLICY_VIOLATION);
}

#[tokio::test]
async fn too_large_frames_strike_out_with_1009() {
    let big = format!(r#"{{"event":"{}"}}"#, "a".repeat(64 * 1024));
    assert_eq!(strike_out(&big, "too_large").await.0, CloseCode::MESSAGE_TOO_BIG);
}

#[tokio::test]
async fn application_errors_are_no_strikes() {
    let server = serve(three_strikes()).await;
    let raw = Raw::open(server.local_addr()).await;
    for id in 0..6 {
        raw.refused(&format!(r#"{{"event":"fail","id":{id}}}"#), "room_full", id.into()).await;
        raw.refused(&format!(r#"{{"event":"ignore","id":{id}}}"#), "no_reply", id.into()).await;
    }
    raw.still_usable().await;
}

#[tokio::test(start_paused = true)]
async fn failures_leave_the_window() {
    let server = serve(three_strikes()).await;
    let raw = Raw::open(server.local_addr()).await;
    for _ in 0..2 {
        raw.refused("{nope", "malformed", Value::Null).await;
    }
    tokio::time::sleep(Duration::from_secs(11)).await;
    // The first two have left the window: two more are not three.
    for _ in 0..2 {
        raw.refused(r#"{"event":"shout"}"#, "unknown_event", Value::Null).await;
    }
    raw.still_usable().await;
    // The third within the window closes, with the last failure's class.
    raw.refused(r#"{"event":"shout"}"#, "unknown_event", Value::Null).await;
    assert_eq!(raw.closed_with().await, CloseCode::POLICY_VIOLATION);
}
