//! Idle memory: open N connections, complete each handshake, then send nothing, and read the
//! server's resident memory before and after. With [`Plan::deflate`], each connection agrees
//! to permessage-deflate and exchanges [`Plan::messages`] compressed messages (one by default)
//! before it goes quiet, so that the server holds whatever compression state it keeps between
//! messages: with 40 messages of 1 KiB, more than a 32 KiB window has passed each way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::{load, procfs};

/// Handshakes in progress at once: below the 1,024-connection listen backlog tokio uses.
const CONCURRENT_HANDSHAKES: usize = 256;

/// One idle-memory run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The echo server.
    pub addr: SocketAddr,
    /// The server's process id, whose `VmRSS` is read.
    pub server_pid: u32,
    /// N: connections to hold open.
    pub connections: usize,
    /// How long to wait, with every connection open, before reading the memory again.
    pub settle: Duration,
    /// The first loopback source address, as in [`load::Plan::first_source`].
    pub first_source: u32,
    /// Agree to permessage-deflate and exchange 1 KiB compressed messages first.
    pub deflate: bool,
    /// How many, one after the other, with [`Plan::deflate`].
    pub messages: usize,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Connections that completed the handshake and were held.
    pub opened: usize,
    /// Connections that failed.
    pub failed: usize,
    /// The first failure, for the log.
    pub first_error: Option<String>,
    /// The server's `VmRSS` before and after, in bytes.
    pub rss_before: u64,
    /// See `rss_before`.
    pub rss_after: u64,
    /// How long opening the connections took.
    pub connect_seconds: f64,
}

impl Outcome {
    /// Server memory per held connection, in bytes.
    pub fn per_connection(&self) -> f64 {
        if self.opened == 0 {
            return 0.0;
        }
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.opened as f64
    }

    /// The run as one JSON object, the line `palisade-load idle` prints.
    pub fn to_json(&self, plan: &Plan) -> Value {
        json!({
            "connections": plan.connections,
            "deflate": plan.deflate,
            "messages": if plan.deflate { plan.messages } else { 0 },
            "opened": self.opened,
            "failed": self.failed,
            "first_error": self.first_error,
            "rss_before": self.rss_before,
            "rss_after": self.rss_after,
            "bytes_per_connection": self.per_connection(),
            "connect_seconds": self.connect_seconds,
        })
    }
}

/// Runs `plan`; the connections are closed when it returns.
pub async fn run(plan: Plan) -> Result<Outcome, String> {
    let rss = || {
        procfs::rss_bytes(plan.server_pid)
            .ok_or_else(|| format!("cannot read /proc/{}/status", plan.server_pid))
    };
    let rss_before = rss()?;
    let started = Instant::now();
    let sources = load::sources_for(plan.addr, plan.connections, plan.first_source);
    let permits = Arc::new(Semaphore::new(CONCURRENT_HANDSHAKES));
    let frames = plan.deflate.then(|| load::Frames::new(1024, true));
    let mut tasks = Vec::with_capacity(plan.connections);
    for i in 0..plan.connections {
        let (permits, addr, source) = (permits.clone(), plan.addr, sources[i % sources.len()]);
        let frames = frames.as_ref().map(|f| f.starting_at(i));
        let messages = plan.messages;
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            let opening = async {
                let (mut stream, leftover) = load::connect(addr, source, frames.is_some()).await?;
                if let Some(mut frames) = frames {
                    let mut leftover = leftover;
                    for _ in 0..messages {
                        leftover = exchange(&mut stream, leftover, frames.next_frame()).await?;
                    }
                }
                Ok(stream)
            };
            match tokio::time::timeout(Duration::from_secs(20), opening).await {
                Ok(result) => result,
                Err(_) => Err("opening took over 20 s".to_owned()),
            }
        }));
    }
    let mut held: Vec<TcpStream> = Vec::with_capacity(plan.connections);
    let (mut failed, mut first_error) = (0, None);
    for task in tasks {
        match task.await {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(plan.settle).await;
    let rss_after = rss()?;
    let outcome =
        Outcome { opened: held.len(), failed, first_error, rss_before, rss_after, connect_seconds };
    drop(held);
    Ok(outcome)
}

/// Sends `frame` and reads until the echo of it has arrived whole; returns what was read
/// beyond it (nothing, as the server sends nothing else).
async fn exchange(
    stream: &mut TcpStream,
    leftover: Vec<u8>,
    frame: &[u8],
) -> Result<Vec<u8>, String> {
    stream.write_all(frame).await.map_err(|e| format!("write: {e}"))?;
    let mut buf = leftover;
    loop {
        if let Some(len) = load::complete_frame(&buf) {
            return if buf[0] & 0x0f == 0x2 && len == buf.len() {
                Ok(Vec::new())
            } else {
                Err(format!("unexpected reply: first byte {:#04x}, {} bytes", buf[0], buf.len()))
            };
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the TCP connection".to_owned());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
