//! The reconnecting client: retries what can be retried, stops on what cannot, honours
//! `Retry-After`, produces headers afresh, and resets its backoff after a success.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use palisade_client::{Attempt, Backoff};
use palisade_error::Error;
use palisade_error::{HandshakeError, TransportError};
use palisade_proto::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::support::*;

/// What the attempt callback saw: number, success, wait before the next attempt.
type Log = Arc<Mutex<Vec<(u64, bool, Option<Duration>)>>>;

fn recorder(log: &Log) -> impl FnMut(&Attempt<'_>) + Send + 'static {
    let log = log.clone();
    move |a: &Attempt<'_>| log.lock().unwrap().push((a.number, a.result.is_ok(), a.retry_in))
}

fn fast() -> Backoff {
    Backoff::default()
        .with_initial(Duration::from_millis(5))
        .with_factor(2.0)
        .with_max(Duration::from_millis(40))
}

#[tokio::test]
async fn reconnects_after_the_server_restarts() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = serve_on(listener, |mut tcp| async move {
        let head = read_head(&mut tcp).await;
        echo_after_head(tcp, &head, "").await;
    });

    let log: Log = Arc::default();
    let (failures_tx, mut failures) = mpsc::unbounded_channel();
    let mut record = recorder(&log);
    let mut reconnecting = client()
        .reconnecting(format!("ws://{addr}/feed"))
        .with_backoff(fast())
        .with_on_attempt(move |a| {
            record(a);
            if a.result.is_err() {
                let _ = failures_tx.send(());
            }
        });

    let conn = reconnecting.next().await.unwrap();
    assert_eq!(reconnecting.gap(), None, "the first connection follows no outage");
    conn.send(Message::text("one")).await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), Message::text("one"));

    // Stop the server: the connection ends abnormally, which is worth retrying.
    drop(server);
    let end = conn.send(Message::text("lost")).await.and(conn.recv().await.map(|_| ()));
    let end = match end {
        Err(e) => e,
        Ok(()) => conn.recv().await.unwrap_err(),
    };
    assert!(end.is_retryable(), "{end:?}");
    drop(conn);

    // Reconnect while the server is down: attempts fail with refused connections...
    let again = tokio::spawn(async move {
        let conn = reconnecting.next().await;
        (conn, reconnecting)
    });
    failures.recv().await.unwrap();
    failures.recv().await.unwrap();
    // ...until it comes back on the same port.
    let listener = TcpListener::bind(addr).await.unwrap();
    let _server = serve_on(listener, |mut tcp| async move {
        let head = read_head(&mut tcp).await;
        echo_after_head(tcp, &head, "").await;
    });
    let (conn, reconnecting) = again.await.unwrap();
    let conn = conn.unwrap();
    conn.send(Message::text("two")).await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), Message::text("two"));
    assert!(reconnecting.last_error().is_none());
    // The outage it rode through: the attempts that failed while the server was down.
    let gap = reconnecting.gap().unwrap();
    assert_eq!(gap.reconnection, 1);
    assert!(gap.failed_attempts >= 2, "{gap:?}");
    assert!(gap.down_for > Duration::ZERO, "{gap:?}");

    let log = log.lock().unwrap().clone();
    assert_eq!(log.first(), Some(&(1, true, None)));
    assert_eq!(log.last().map(|e| e.1), Some(true));
    let failed: Vec<_> = log.iter().filter(|e| !e.1).collect();
    assert!(failed.len() >= 2, "{log:?}");
    // Each wait is within its backoff ceiling. The first connection ended at once, which counts
    // as one failure (only a connection that stayed up resets the backoff).
    for (i, (_, _, retry_in)) in failed.iter().enumerate() {
        let ceiling = fast().ceiling(u32::try_from(i + 1).unwrap());
        assert!(retry_in.unwrap() <= ceiling, "{i}: {retry_in:?} > {ceiling:?}");
    }
    assert_eq!(reconnecting.attempts(), log.len() as u64);
}

#[tokio::test]
async fn a_failure_that_cannot_be_fixed_stops_at_once() {
    let server =
        answering("HTTP/1.1 401 Unauthorized\r\nContent-Length: 15\r\n\r\n{\"error\":\"no\"}")
            .await;
    let log: Log = Arc::default();
    let mut reconnecting =
        client().reconnecting(server.url("/")).with_backoff(fast()).with_on_attempt(recorder(&log));
    assert!(reconnecting.next().await.is_none());
    assert!(reconnecting.next().await.is_none());
    assert_eq!(reconnecting.attempts(), 1);
    assert_eq!(*log.lock().unwrap(), [(1, false, None)]);
    match reconnecting.take_error().unwrap() {
        Error::Handshake(h) => match *h {
            HandshakeError::InvalidStatus(s) => {
                assert_eq!(s.body_text(), Some("{\"error\":\"no\"}"))
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }

    // A bad URL: no attempt at all.
    let mut bad = client().reconnecting("wss://host.invalid/#fragment");
    assert!(bad.next().await.is_none());
    assert_eq!(bad.attempts(), 0);
    assert!(matches!(bad.last_error(), Some(Error::InvalidUri(_))));
}

#[tokio::test]
async fn the_attempt_limit_stops_retrying() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut reconnecting = client()
        .reconnecting(format!("ws://{addr}/"))
        .with_backoff(fast())
        .with_max_attempts(Some(3));
    assert!(reconnecting.next().await.is_none());
    assert_eq!(reconnecting.attempts(), 3);
    assert!(
        matches!(reconnecting.last_error(), Some(Error::Transport(t)) if matches!(**t, TransportError::Io(_)))
    );
}

// Paused time: the one-second `Retry-After` passes at once, and no open timeout runs (it
// would fire spuriously while the clock jumps).
#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_headers_are_fresh() {
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let seen = tokens.clone();
    let server = serve(move |mut tcp| {
        let seen = seen.clone();
        async move {
            let head = read_head(&mut tcp).await;
            let token = header(&head, "x-token").unwrap_or("").to_owned();
            let first = {
                let mut seen = seen.lock().unwrap();
                seen.push(token);
                seen.len() == 1
            };
            if first {
                let _ = tcp
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n")
                    .await;
            } else {
                echo_after_head(tcp, &head, "").await;
            }
        }
    })
    .await;
    let counter = Arc::new(AtomicU32::new(0));
    let log: Log = Arc::default();
    let mut reconnecting = client()
        .with_open_timeout(None)
        .with_headers_fn(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static("x-token"), format!("token-{n}").parse().unwrap());
            h
        })
        .reconnecting(server.url("/"))
        .with_backoff(fast())
        .with_on_attempt(recorder(&log));
    let conn = reconnecting.next().await.unwrap();
    conn.send(Message::text("ok")).await.unwrap();
    assert_eq!(*tokens.lock().unwrap(), ["token-1", "token-2"]);
    assert_eq!(*log.lock().unwrap(), [(1, false, Some(Duration::from_secs(1))), (2, true, None)]);
}

#[tokio::test]
async fn an_end_that_retrying_cannot_fix_stops_reconnection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = serve_on(listener, |mut tcp| async move {
        let head = read_head(&mut tcp).await;
        echo_after_head(tcp, &head, "").await;
    });
    let mut reconnecting = client().reconnecting(format!("ws://{addr}/")).with_backoff(fast());
    let conn = reconnecting.next().await.unwrap();
    conn.close(palisade_error::CloseCode::NORMAL, "done").await.unwrap();
    let end = conn.recv().await.unwrap_err();
    assert!(!end.is_retryable(), "a normal close is final: {end:?}");
    reconnecting.connection_ended(end);
    assert!(reconnecting.next().await.is_none());
    assert_eq!(reconnecting.attempts(), 1);
    assert!(reconnecting.last_error().unwrap().connection_closed().is_some());
}

/// Without being told, `next()` sees how the last connection ended: a normal close by the
/// server is final, a 1011 or 1013 is reconnected.
#[tokio::test]
async fn how_a_connection_ended_is_noticed_without_being_told() {
    for (code, reconnects) in [(1000u16, false), (1008, false), (1011, true), (1013, true)] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = serve_on(listener, move |mut tcp| async move {
            let head = read_head(&mut tcp).await;
            tcp.write_all(switching(&head, "").as_bytes()).await.unwrap();
            // A close frame with `code`, then whatever the client answers.
            let [hi, lo] = code.to_be_bytes();
            tcp.write_all(&[0x88, 2, hi, lo]).await.unwrap();
            let mut sink = [0u8; 64];
            let _ = tokio::io::AsyncReadExt::read(&mut tcp, &mut sink).await;
        });
        let mut reconnecting = client().reconnecting(format!("ws://{addr}/")).with_backoff(fast());
        let conn = reconnecting.next().await.unwrap();
        let end = conn.recv().await.unwrap_err();
        assert_eq!(end.connection_closed().unwrap().code().0, code);
        let again = reconnecting.next().await;
        assert_eq!(again.is_some(), reconnects, "after {code}");
        assert_eq!(reconnecting.attempts(), 2 - u64::from(!reconnects), "after {code}");
        if !reconnects {
            let why = reconnecting.last_error().unwrap().connection_closed().unwrap().code();
            assert_eq!(why.0, code);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_server_that_drops_at_once_is_retried_ever_more_slowly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts the upgrade, then drops the connection: a 1006 each time.
    let _server = serve_on(listener, |mut tcp| async move {
        let head = read_head(&mut tcp).await;
        tcp.write_all(switching(&head, "").as_bytes()).await.unwrap();
    });
    let log: Log = Arc::default();
    let mut reconnecting = client()
        .reconnecting(format!("ws://{addr}/"))
        .with_backoff(fast())
        .with_on_attempt(recorder(&log));
    let mut waits = Vec::new();
    for _ in 0..4 {
        let before = tokio::time::Instant::now();
        let conn = reconnecting.next().await.unwrap();
        waits.push(before.elapsed());
        let end = conn.recv().await.unwrap_err();
        assert!(end.is_retryable());
        reconnecting.connection_ended(end);
    }
    // Every reconnection after a short-lived connection waits within a growing ceiling, and
    // the count of consecutive failures is what grows it.
    for (i, wait) in waits.iter().enumerate().skip(1) {
        assert!(*wait <= fast().ceiling(u32::try_from(i).unwrap()), "{i}: {wait:?}");
    }
    assert_eq!(reconnecting.attempts(), 4);
}
