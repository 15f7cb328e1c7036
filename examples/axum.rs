//! The echo server of `examples/echo.rs` mounted on axum 0.8 (`palisade::axum`): axum owns the
//! listener and the router, palisade decides the upgrades at `/ws` and runs their connections.
//!
//! Run it:
//!
//! ```text
//! cargo run --release --example axum -- --addr 127.0.0.1:9003
//! ```
//!
//! It prints `listening on http://ADDR` once it accepts connections. `GET /health` is axum's
//! and answers 200 `ok`; `/ws` is palisade's: the same echo handler, limits (16 MiB messages)
//! and policies as `echo`, its refusals answered with palisade's complete responses (try
//! `curl -i http://ADDR/ws`: 426 with `Upgrade: websocket`). On Ctrl-C or SIGTERM axum stops
//! accepting and palisade closes every WebSocket with 1001 Going Away. Options as for `echo`:
//! `--threads N`, `--deflate`, `--deflate-lean`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use palisade::server::{DeflateConfig, Server};
use palisade::{Config, WebSocket};

/// As in `echo`: large enough for the Autobahn|Testsuite's biggest messages (16 MiB).
const MAX_MESSAGE: usize = 16 << 20;

/// The handler of `echo`, unchanged: mounting does not change how a handler is written.
async fn echo(ws: WebSocket) -> Result<(), palisade::Error> {
    loop {
        let message = ws.recv().await?;
        ws.send(message).await?;
    }
}

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: axum [--addr HOST:PORT] [--threads N] [--deflate | --deflate-lean]

The echo server mounted on axum: GET /health answers `ok`, /ws echoes every message.

  --addr HOST:PORT   where to listen (default 127.0.0.1:9003)
  --threads N        worker threads (default 1)
  --deflate          accept permessage-deflate from clients that offer it
  --deflate-lean     the same, with the memory-lean preset
  -h, --help         print this and exit
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:9003".to_owned();
    let mut threads = 1usize;
    let mut deflate = None;
    let mut args = args::Args::new("axum", USAGE);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.value("--addr"),
            "--threads" => threads = args.parsed("--threads"),
            "--deflate" => deflate = Some(DeflateConfig::default()),
            "--deflate-lean" => deflate = Some(DeflateConfig::lean()),
            other => args.unknown(other),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    };
    runtime.block_on(serve(addr, deflate))
}

async fn serve(
    addr: String,
    deflate: Option<DeflateConfig>,
) -> Result<(), Box<dyn std::error::Error>> {
    // ANCHOR: server
    // The palisade server as `echo` builds it; it is mounted, never bound.
    let mut builder = Server::builder()
        .fallback(echo)
        .with_config(Config::default().with_max_message_size(MAX_MESSAGE))
        .with_max_connections(200_000)
        .with_max_connections_per_ip(200_000);
    if let Some(config) = deflate {
        builder = builder.with_compression(config);
    }
    let server = builder.build();
    // ANCHOR_END: server

    // ANCHOR: router
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ws", palisade::axum::mount(server.clone()));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    // `ConnectInfo` gives palisade the peer's address (per-IP limits, logs); without it the
    // mount answers 500.
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    // ANCHOR_END: router

    // ANCHOR: shutdown
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let http = axum::serve(listener, service).with_graceful_shutdown(async move {
        let _ = stopped.await;
    });
    let http = tokio::spawn(http.into_future());
    shutdown_signal().await?;
    // axum stops accepting; upgraded connections are no longer axum's, but palisade's:
    // its shutdown sends them 1001 and waits up to 5 s for their close handshakes.
    let _ = stop.send(());
    let summary = server.shutdown(Duration::from_secs(5)).await;
    http.await??;
    eprintln!("shut down: {} closed cleanly, {} aborted", summary.closed, summary.aborted);
    // ANCHOR_END: shutdown
    Ok(())
}

async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
