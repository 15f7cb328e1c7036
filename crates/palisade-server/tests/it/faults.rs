//! Faults under load (issue #17): a graceful shutdown while every client is sending, and
//! clients that die mid-message or reset their connection while others are being served.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_conn::WebSocket;
use palisade_error::{CloseCode, Error};
use palisade_proto::Message;
use palisade_server::{ConnectionInfo, Server};
use tokio::io::AsyncWriteExt;

use crate::hostile::{MEMORY_BOUND_KIB, peak_rss_kib, raw_upgraded, served};
use crate::{LOGS, LogBuffer, connect, echo, start};

/// What the server's handler did with one client's messages.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Handled {
    /// Messages its `recv` returned.
    received: u64,
    /// Echoes its `send` accepted (returned `Ok`).
    echoed: u64,
    /// Echoes its `send` refused with an error (the connection was closing).
    refused: u64,
}

type Ledger = Arc<Mutex<HashMap<u64, Handled>>>;

/// The echo handler with a ledger: each message is `CLIENT:SEQ`, and the handler records per
/// client what it received and what became of each echo.
async fn ledger_echo(ws: WebSocket, ledger: Ledger) -> Result<(), Error> {
    let mut client = None;
    let mut handled = Handled::default();
    let end = loop {
        let message = match ws.recv().await {
            Ok(message) => message,
            Err(end) => break end,
        };
        handled.received += 1;
        let text = message.as_text().unwrap_or_default();
        client = text.split(':').next().and_then(|c| c.parse::<u64>().ok());
        match ws.send(message).await {
            Ok(()) => handled.echoed += 1,
            Err(_) => handled.refused += 1,
        }
    };
    if let Some(client) = client {
        ledger.lock().unwrap().insert(client, handled);
    }
    Err(end)
}

/// Defence: `Running::shutdown` sends 1001 to every connection and waits for the close
/// handshakes, and a handler's `send` after the close has been sent fails instead of queueing a
/// frame that would never leave.
///
/// What is checked, per client, with every client sending as fast as it can when the shutdown
/// starts:
/// - the client's connection ends with the server's 1001 (a clean close, retryable);
/// - the echoes the client received are exactly the echoes whose `send` returned `Ok` on the
///   server (none accepted and then dropped), and they are the client's messages `0..n` in
///   order (none lost in between, duplicated or reordered);
/// - every message the handler received was either echoed or its echo's `send` returned an
///   error to the handler (none received and then ignored);
/// - the messages the client sent past those are the ones that reached the server after its
///   close frame had left, which RFC 6455 §5.5.1 lets it discard; the test prints how many.
#[tokio::test]
async fn graceful_shutdown_under_load_accounts_for_every_message() {
    const CLIENTS: u64 = 32;
    let _logs = LOGS.read().await;
    let ledger = Ledger::default();
    let handler_ledger = ledger.clone();
    let server =
        start(Server::builder().fallback(move |ws: WebSocket, _: ConnectionInfo| {
            ledger_echo(ws, handler_ledger.clone())
        }))
        .await;
    let addr = server.local_addr();

    let (echoed_tx, mut echoed_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let ws = connect(addr, "/", &[], &[]).await.open();
        let sender = ws.sender();
        let writer = tokio::spawn(async move {
            let mut sent = 0u64;
            while sender.send(Message::text(format!("{client}:{sent}"))).await.is_ok() {
                sent += 1;
                // Let the reader and the server run between sends.
                tokio::task::yield_now().await;
            }
            sent
        });
        let echoed_tx = echoed_tx.clone();
        let reader = tokio::spawn(async move {
            let mut received = 0u64;
            loop {
                match ws.recv().await {
                    Ok(message) => {
                        let expected = format!("{client}:{received}");
                        assert_eq!(message.as_text(), Some(expected.as_str()), "in order, once");
                        received += 1;
                        if received == 20 {
                            let _ = echoed_tx.send(client);
                        }
                    }
                    Err(end) => return (received, end),
                }
            }
        });
        clients.push((client, writer, reader));
    }
    // Everyone is in full flow.
    for _ in 0..CLIENTS {
        tokio::time::timeout(Duration::from_secs(10), echoed_rx.recv()).await.unwrap().unwrap();
    }

    let summary = server.shutdown(Duration::from_secs(10)).await;
    assert_eq!((summary.closed, summary.aborted), (CLIENTS as usize, 0));

    let ledger = ledger.lock().unwrap().clone();
    let mut discarded = 0;
    for (client, writer, reader) in clients {
        let (received, end) =
            tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
        let sent = tokio::time::timeout(Duration::from_secs(10), writer).await.unwrap().unwrap();
        let closed = end.connection_closed().unwrap_or_else(|| panic!("{client}: {end:?}"));
        assert_eq!(closed.code(), CloseCode::GOING_AWAY, "{client}: {end:?}");
        assert!(end.is_closed_ok() && end.is_retryable(), "{client}: {end:?}");
        let handled = ledger[&client];
        assert_eq!(received, handled.echoed, "{client}: every echo the server accepted arrived");
        assert_eq!(handled.received, handled.echoed + handled.refused, "{client}: {handled:?}");
        assert!(sent >= handled.received, "{client}: {sent} sent, {handled:?}");
        discarded += sent - handled.received;
    }
    println!("{CLIENTS} clients: {discarded} messages reached the server after its close frame");
}

/// Defence: a connection whose peer goes away mid-frame — with a FIN (the process was
/// killed) or a reset (`SO_LINGER` 0) — ends with an I/O error: its task logs how it ended
/// (`connection closed`, the error) and leaves the registry, no partial message is kept, the
/// memory stays bounded, and clients being served meanwhile see nothing of it.
#[tokio::test]
async fn clients_killed_mid_message_or_reset_while_others_are_served() {
    let _alone = LOGS.write().await;
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = start(Server::builder().fallback(echo)).await;
    let addr = server.local_addr();
    let before = peak_rss_kib();

    // Well-behaved clients, echoing all along.
    const STEADY: usize = 8;
    let stop = Arc::new(AtomicBool::new(false));
    let mut steady = Vec::new();
    for n in 0..STEADY {
        let ws = connect(addr, "/", &[], &[]).await.open();
        let stop = stop.clone();
        steady.push(tokio::spawn(async move {
            let mut round_trips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let text = format!("{n}:{round_trips}");
                ws.send(Message::text(text.clone())).await.unwrap();
                let echo = tokio::time::timeout(Duration::from_secs(5), ws.recv()).await;
                assert_eq!(echo.unwrap().unwrap().as_text(), Some(text.as_str()));
                round_trips += 1;
            }
            ws.close(CloseCode::NORMAL, "").await.unwrap();
            round_trips
        }));
    }

    // 100 peers die mid-frame: half with a FIN, half with a reset.
    const DYING: usize = 100;
    for n in 0..DYING {
        let mut tcp = raw_upgraded(addr).await;
        // The header of a 64 KiB binary frame (masked with the zero key), and 1 KiB of it.
        let mut partial = vec![0x82, 0x80 | 127];
        partial.extend_from_slice(&(64u64 * 1024).to_be_bytes());
        partial.extend_from_slice(&[0; 4]);
        partial.extend_from_slice(&[7; 1024]);
        tcp.write_all(&partial).await.unwrap();
        if n % 2 == 1 {
            tcp.set_zero_linger().unwrap();
        }
        drop(tcp);
    }

    // Only the steady clients are left in the registry.
    tokio::time::timeout(Duration::from_secs(10), async {
        while server.connections() > STEADY {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the dead peers' connections leave the registry");
    stop.store(true, Ordering::Relaxed);
    for task in steady {
        let round_trips = tokio::time::timeout(Duration::from_secs(10), task).await.unwrap();
        assert!(round_trips.unwrap() > 0);
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while server.connections() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the registry is empty once everyone has gone");
    assert!(peak_rss_kib() - before < MEMORY_BOUND_KIB, "peak RSS grew past the bound");
    served(addr).await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let ended = |what: &str| text.lines().filter(|l| l.contains(what)).count();
    // Each end is logged once (`connection closed`), a reset as what it was.
    let resets = ended("transport failed error=Connection reset by peer");
    let ends = ended("connection closed duration_ms") + ended("connection closed sent_code");
    assert!(resets >= 1, "a reset is logged as one: {text}");
    assert!(ends >= DYING + STEADY, "every end is logged: {text}");
    // A reset is the connection's end, not the handler's failure: no 1011 is tried.
    assert!(!text.contains("handler failed"), "{text}");
    println!("{ends} ends logged, {resets} of them resets");
}
