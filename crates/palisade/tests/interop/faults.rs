//! Faults across the whole stack (issue #17): palisade's reconnecting client riding through
//! restarts of a palisade server on the same port.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use palisade::client::{Backoff, Client, Gap, Reconnecting};
use palisade::server::{Running, Server};
use palisade::{CloseCode, Message, WebSocket};
use tokio::sync::{mpsc, oneshot};

async fn echo(ws: WebSocket) -> Result<(), palisade::Error> {
    loop {
        let message = ws.recv().await?;
        ws.send(message).await?;
    }
}

/// An echo server on a runtime of its own, so that it can be killed outright.
struct EchoServer {
    runtime: tokio::runtime::Runtime,
    running: Running,
}

impl EchoServer {
    async fn start(addr: SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let running = runtime
            .spawn(
                async move { Server::builder().fallback(echo).build().bind(addr).await.unwrap() },
            )
            .await
            .unwrap();
        Self { runtime, running }
    }

    /// Graceful: every client gets 1001.
    async fn shut_down(self) {
        let Self { runtime, running } = self;
        let summary = runtime
            .spawn(async move { running.shutdown(Duration::from_secs(5)).await })
            .await
            .unwrap();
        assert_eq!(summary.aborted, 0);
        runtime.shutdown_background();
    }

    /// Outright: the process dies as far as its clients can tell (no close frame).
    fn kill(self) {
        self.runtime.shutdown_background();
    }
}

/// What the client saw of one outage.
#[derive(Debug)]
struct Outage {
    /// How the connection ended.
    close_code: CloseCode,
    /// The error that said so.
    end: String,
    /// Messages sent on the old connection and never echoed: not delivered, sent again.
    resent: usize,
    /// What the reconnecting client reported.
    gap: Gap,
}

/// The application: numbered messages every millisecond, each kept until its echo comes back
/// and sent again on the next connection if the connection ends first. Stops after `total`
/// echoes; returns the outages it rode through.
async fn numbered_echo(
    mut reconnecting: Reconnecting,
    total: u64,
    progress: mpsc::UnboundedSender<u64>,
) -> Vec<Outage> {
    let mut unacked: VecDeque<u64> = VecDeque::new();
    let mut next = 0u64;
    let mut echoed = 0u64;
    let mut outages = Vec::new();
    let mut ended: Option<(CloseCode, String, usize)> = None;
    while let Some(conn) = reconnecting.next().await {
        if let Some((close_code, end, resent)) = ended.take() {
            let gap = reconnecting.gap().expect("a gap after each reconnection");
            outages.push(Outage { close_code, end, resent, gap });
        }
        // What the last connection left undelivered goes first, in order. A failed send stops
        // the sending; the connection's end is what `recv` then reports (a send can fail first,
        // with the close under way, and says less).
        let mut sending = true;
        for &n in &unacked {
            if conn.send(Message::text(n.to_string())).await.is_err() {
                sending = false;
                break;
            }
        }
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let end = loop {
            if echoed == total {
                conn.close(CloseCode::NORMAL, "done").await.unwrap();
                return outages;
            }
            tokio::select! {
                _ = tick.tick(), if sending => {
                    unacked.push_back(next);
                    next += 1;
                    if conn.send(Message::text((next - 1).to_string())).await.is_err() {
                        sending = false;
                    }
                }
                message = conn.recv() => match message {
                    Ok(message) => {
                        let n: u64 = message.as_text().unwrap().parse().unwrap();
                        // Every number once, in order, across connections.
                        assert_eq!(Some(n), unacked.pop_front(), "echo {n} out of order");
                        assert_eq!(n, echoed);
                        echoed += 1;
                        let _ = progress.send(echoed);
                    }
                    Err(e) => break e,
                },
            }
        };
        let code = end.connection_closed().map_or(CloseCode::ABNORMAL, |c| c.code());
        ended = Some((code, end.to_string(), unacked.len()));
        reconnecting.connection_ended(end);
    }
    panic!("the client gave up: {:?}", reconnecting.last_error());
}

/// Defence: the reconnecting client retries retryable ends (1001 from a graceful shutdown,
/// 1006 from a killed server) and refused connections with backoff, and reports each outage
/// ([`Reconnecting::gap`]): how long, how many attempts failed. The application's numbered
/// messages show what the outage cost: the ones sent and not echoed, sent again on the next
/// connection; every number comes back exactly once and in order across three restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconnecting_client_rides_through_three_server_restarts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut server = Some(EchoServer::start(addr).await);

    let (failed_tx, mut failed) = mpsc::unbounded_channel();
    let reconnecting = Client::new()
        .without_proxy()
        .reconnecting(format!("ws://{addr}/"))
        .with_backoff(
            Backoff::default()
                .with_initial(Duration::from_millis(20))
                .with_max(Duration::from_millis(100)),
        )
        .with_on_attempt(move |attempt| {
            if attempt.result.is_err() {
                let _ = failed_tx.send(());
            }
        });
    let (progress_tx, mut progress) = mpsc::unbounded_channel();
    const TOTAL: u64 = 2_000;
    let (done_tx, done) = oneshot::channel();
    tokio::spawn(async move {
        let _ = done_tx.send(numbered_echo(reconnecting, TOTAL, progress_tx).await);
    });

    let mut echoed = 0;
    for restart in 1..=3 {
        // Traffic flows before each restart.
        let target = echoed + 200;
        while echoed < target {
            echoed = tokio::time::timeout(Duration::from_secs(10), progress.recv())
                .await
                .expect("echoes within the wait")
                .unwrap();
        }
        // Failures of the last outage's attempts are old news.
        while failed.try_recv().is_ok() {}
        let down = server.take().unwrap();
        if restart == 2 {
            down.kill()
        } else {
            down.shut_down().await
        }
        // Down until the client has failed to connect at least once.
        tokio::time::timeout(Duration::from_secs(10), failed.recv()).await.unwrap().unwrap();
        server = Some(EchoServer::start(addr).await);
    }
    let outages = tokio::time::timeout(Duration::from_secs(30), done).await.unwrap().unwrap();

    assert_eq!(outages.len(), 3, "{outages:#?}");
    let codes: Vec<CloseCode> = outages.iter().map(|o| o.close_code).collect();
    let expected = [CloseCode::GOING_AWAY, CloseCode::ABNORMAL, CloseCode::GOING_AWAY];
    assert_eq!(codes, expected, "{outages:#?}");
    for (n, outage) in outages.iter().enumerate() {
        assert_eq!(outage.gap.reconnection, n as u64 + 1, "{outage:?}");
        assert!(outage.gap.failed_attempts >= 1, "{outage:?}");
        assert!(outage.gap.down_for > Duration::ZERO, "{outage:?}");
        println!(
            "restart {}: ended with {} ({}), down {:?}, {} attempts failed, {} messages sent again",
            n + 1,
            u16::from(outage.close_code),
            outage.end,
            outage.gap.down_for,
            outage.gap.failed_attempts,
            outage.resent
        );
    }
    server.unwrap().shut_down().await;
}
