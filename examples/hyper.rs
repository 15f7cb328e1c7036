//! The echo server of `examples/echo.rs` mounted on plain hyper 1 (`palisade::hyper`): the
//! program owns the listener and hyper's HTTP/1 connections; inside hyper's `service_fn`,
//! `palisade::hyper::upgrade` answers WebSocket upgrades with palisade's decision.
//!
//! Run it:
//!
//! ```text
//! cargo run --release --example hyper -- --addr 127.0.0.1:9004
//! ```
//!
//! It prints `listening on http://ADDR`. `GET /health` is answered by the service itself (200
//! `ok`); every other request goes to palisade, which echoes on `/ws` and answers 404 elsewhere
//! (its routing), 426 to a plain `GET /ws`. On Ctrl-C or SIGTERM it stops accepting and every
//! WebSocket is closed with 1001 Going Away.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use palisade::server::Server;
use palisade::{Config, WebSocket};

/// As in `echo`: 16 MiB messages.
const MAX_MESSAGE: usize = 16 << 20;

async fn echo(ws: WebSocket) -> Result<(), palisade::Error> {
    loop {
        let message = ws.recv().await?;
        ws.send(message).await?;
    }
}

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: hyper [--addr HOST:PORT]

The echo server mounted on hyper 1: GET /health answers `ok`, /ws echoes every message.

  --addr HOST:PORT   where to listen (default 127.0.0.1:9004)
  -h, --help         print this and exit
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:9004".to_owned();
    let mut args = args::Args::new("hyper", USAGE);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.value("--addr"),
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
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(serve(addr))
}

// ANCHOR: service
/// One request: `/health` here, everything else through palisade's decision.
async fn route(
    server: Server,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() == "/health" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    }
    Ok(palisade::hyper::upgrade(&server, request, peer).await)
}
// ANCHOR_END: service

async fn serve(addr: String) -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder()
        .route("/ws", echo)
        .with_config(Config::default().with_max_message_size(MAX_MESSAGE))
        .build();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);

    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        // ANCHOR: accept
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    eprintln!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            stop = &mut signal => break stop?,
        };
        let server = server.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| route(server.clone(), request, peer));
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                // Lets hyper hand the stream over to palisade after the 101.
                .with_upgrades();
            let _ = connection.await;
        });
        // ANCHOR_END: accept
    }
    // The listener is no longer read; palisade closes its connections with 1001.
    let summary = server.shutdown(Duration::from_secs(5)).await;
    eprintln!("shut down: {} closed cleanly, {} aborted", summary.closed, summary.aborted);
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
