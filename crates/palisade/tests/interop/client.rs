//! palisade's client against Python `websockets` servers.

use std::time::Duration;

use palisade::Message;
use palisade::client::{Backoff, Client};
use palisade::error::{HandshakeError, TimeoutPhase};
use palisade::{CloseCode, Error};
use tokio::sync::mpsc;

use crate::support::Peer;

fn client() -> Client {
    Client::new().without_proxy().with_open_timeout(Some(Duration::from_secs(10)))
}

fn url(port: u16) -> String {
    format!("ws://127.0.0.1:{port}/")
}

#[tokio::test]
async fn echo_text_and_binary() {
    let (mut peer, port) = Peer::server("echo", None).await;
    assert!(peer.pid().is_some());
    let ws = client().connect(&url(port)).await.unwrap();
    for size in [0usize, 1, 125, 126, 65_535, 65_536, 1_000_000] {
        ws.send(Message::text("é".repeat(size / 2))).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Message::text("é".repeat(size / 2)), "{size}");
        ws.send(Message::binary(vec![0xA5u8; size])).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Message::binary(vec![0xA5u8; size]), "{size}");
    }
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    assert_eq!(peer.line_starting("CLOSED").await, "CLOSED 1000 done");
}

#[tokio::test]
async fn close_codes_from_the_server() {
    let (_peer, port) = Peer::server("echo", None).await;
    for (code, reason, normal) in [
        (1000u16, "bye", true),
        (1001, "going away", true),
        (1011, "oops", false),
        (4000, "custom", false),
    ] {
        let ws = client().connect(&url(port)).await.unwrap();
        ws.send(Message::text(format!("close {code} {reason}"))).await.unwrap();
        let err = ws.recv().await.unwrap_err();
        assert_eq!(err.is_closed_ok(), normal, "{code}: {err:?}");
        let closed = err.connection_closed().unwrap();
        assert_eq!(closed.code(), CloseCode::from(code), "{err:?}");
        assert_eq!(closed.reason(), reason);
        assert_eq!(closed.received_then_sent, Some(true));
    }
}

#[tokio::test]
async fn close_codes_from_the_client() {
    let (mut peer, port) = Peer::server("echo", None).await;
    for (code, reason) in [(1000u16, "done"), (1001, "leaving"), (4001, "from palisade")] {
        let ws = client().connect(&url(port)).await.unwrap();
        // A completed close handshake: `Ok` for 1000/1001, the closure as an error otherwise.
        if let Err(err) = ws.close(CloseCode::from(code), reason).await {
            let closed = err.connection_closed().unwrap();
            assert_eq!(closed.received_then_sent, Some(false), "{err:?}");
            assert_eq!(closed.code(), CloseCode::from(code));
        }
        assert_eq!(peer.line_starting("CLOSED").await, format!("CLOSED {code} {reason}"));
    }
}

#[tokio::test]
async fn a_401_from_process_request_keeps_its_json_body() {
    let (_peer, port) = Peer::server("auth401", None).await;
    let err = client().connect(&url(port)).await.unwrap_err();
    assert_eq!(err.received_status().map(|s| s.as_u16()), Some(401));
    assert!(!err.is_retryable());
    let Error::Handshake(h) = err else { panic!("not a handshake error") };
    let HandshakeError::InvalidStatus(refusal) = *h else { panic!("not a refusal: {h:?}") };
    assert_eq!(refusal.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
    let body: serde_json::Value = serde_json::from_slice(refusal.body()).unwrap();
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["detail"], "token expired");
}

#[tokio::test]
async fn a_server_that_stops_answering_pings_times_out() {
    let (_peer, port) = Peer::server("noping", None).await;
    let ws = client()
        .with_keepalive(Some(Duration::from_millis(100)), Some(Duration::from_millis(200)))
        .connect(&url(port))
        .await
        .unwrap();
    let err = ws.recv().await.unwrap_err();
    assert!(matches!(err, Error::Timeout(t) if t.phase == TimeoutPhase::Keepalive), "{err:?}");
    // What we owe the peer: 1011, and the failure is worth a retry.
    assert_eq!(err.close_code(), Some(CloseCode::INTERNAL_ERROR));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn subprotocol_negotiation() {
    let (_peer, port) = Peer::server("subproto", None).await;
    let ws = client().with_subprotocols(["nope", "chat"]).connect(&url(port)).await.unwrap();
    assert_eq!(ws.subprotocol(), Some("chat"));
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::text("hi"));
    let ws = client().with_subprotocols(["superchat"]).connect(&url(port)).await.unwrap();
    assert_eq!(ws.subprotocol(), Some("superchat"));
    // No common subprotocol: websockets refuses the handshake.
    let err = client().with_subprotocols(["nope"]).connect(&url(port)).await.unwrap_err();
    assert_eq!(err.received_status().map(|s| s.as_u16()), Some(400), "{err:?}");
}

#[tokio::test]
async fn reconnecting_survives_a_server_restart() {
    let (peer, port) = Peer::server("echo", None).await;
    let (failed_tx, mut failed) = mpsc::unbounded_channel();
    let mut reconnecting = client()
        .reconnecting(url(port))
        .with_backoff(
            Backoff::default()
                .with_initial(Duration::from_millis(20))
                .with_max(Duration::from_millis(200)),
        )
        .with_on_attempt(move |attempt| {
            if attempt.result.is_err() {
                let _ = failed_tx.send(attempt.retry_in);
            }
        });
    let conn = reconnecting.next().await.unwrap();
    conn.send(Message::text("before")).await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), Message::text("before"));

    // Kill the server: the connection ends without a close frame (1006), worth a retry.
    peer.kill().await;
    let end = conn.recv().await.unwrap_err();
    assert!(end.is_retryable(), "{end:?}");
    assert_eq!(end.connection_closed().map(|c| c.code()), Some(CloseCode::ABNORMAL), "{end:?}");

    let again = tokio::spawn(async move { (reconnecting.next().await, reconnecting) });
    // At least one attempt fails while the server is down, with a wait before the next.
    assert!(failed.recv().await.unwrap().is_some());
    let (_peer, _) = Peer::server("echo", Some(port)).await;
    let (conn, reconnecting) = again.await.unwrap();
    let conn = conn.unwrap();
    conn.send(Message::text("after")).await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), Message::text("after"));
    assert!(reconnecting.attempts() >= 3);
}
