//! The echo server: every message comes back as it arrived (text as text, binary as binary),
//! on every path. Conformance suites and benchmarks run against it.
//!
//! Run it:
//!
//! ```text
//! cargo run --release --example echo -- --addr 127.0.0.1:9001
//! ```
//!
//! It prints `listening on ws://ADDR` once it accepts connections, logs each connection's open
//! and close (set `RUST_LOG=debug` for more), and on Ctrl-C or SIGTERM shuts down gracefully:
//! every client receives 1001 Going Away. Options: `--threads N` (default 1: one core, as in
//! the benchmarks); `--deflate` accepts permessage-deflate (RFC 7692) from clients that offer
//! it, `--deflate-lean` the same with the memory-lean preset, `--deflate-retained` with zlib's
//! streams kept between messages (faster per message, about 370 KiB more per connection).

use std::time::Duration;

use palisade::server::{DeflateConfig, Server};
use palisade::{Config, WebSocket};

/// Large enough for the Autobahn|Testsuite's biggest messages (16 MiB).
const MAX_MESSAGE: usize = 16 << 20;

// ANCHOR: handler
async fn echo(ws: WebSocket) -> Result<(), palisade::Error> {
    loop {
        // `recv` answers pings and runs the close handshake; it returns the closure as an
        // error, which `?` hands back to the server (a clean close is not logged as a failure).
        let message = ws.recv().await?;
        ws.send(message).await?;
    }
}
// ANCHOR_END: handler

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: echo [--addr HOST:PORT] [--threads N] [--deflate | --deflate-lean | --deflate-retained]

The echo server: every message comes back as it arrived.

  --addr HOST:PORT   where to listen (default 127.0.0.1:9001)
  --threads N        worker threads (default 1)
  --deflate          accept permessage-deflate from clients that offer it
  --deflate-lean     the same, with the memory-lean preset
  --deflate-retained the same as --deflate, keeping zlib's streams between messages
  -h, --help         print this and exit
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:9001".to_owned();
    let mut threads = 1usize;
    let mut deflate = None;
    let mut args = args::Args::new("echo", USAGE);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.value("--addr"),
            "--threads" => threads = args.parsed("--threads"),
            "--deflate" => deflate = Some(DeflateConfig::default()),
            "--deflate-lean" => deflate = Some(DeflateConfig::lean()),
            "--deflate-retained" => {
                deflate = Some(DeflateConfig::default().with_retained_streams(true))
            }
            other => args.unknown(other),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours on a terminal only: a log file or a pipe gets plain text.
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
    let mut builder = Server::builder()
        .fallback(echo)
        .with_config(Config::default().with_max_message_size(MAX_MESSAGE))
        .with_max_connections(200_000)
        .with_max_connections_per_ip(200_000);
    if let Some(config) = deflate {
        builder = builder.with_compression(config);
    }
    let server = builder.build();
    let running = server.bind(&addr).await?;
    // ANCHOR_END: server
    println!("listening on ws://{}", running.local_addr());

    // ANCHOR: shutdown
    shutdown_signal().await?;
    let summary = running.shutdown(Duration::from_secs(5)).await;
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
